"""Shared statistics for the probes: confidence intervals and tests.

Thin, documented wrappers over statsmodels / scipy / scikit-learn so every probe computes
its intervals and p-values the same way. All randomness goes through an explicit ``seed``.

- ``wilson_ci``: a binomial proportion's interval (Wilson score).
- ``bootstrap_ci``: percentile bootstrap of any statistic over paired rows.
- ``permutation_p_value``: the add-one p-value from a null distribution.
- ``permutation_p_floor``: the smallest p-value that many permutations can give.
- ``permute_within_groups``: a label shuffle that keeps each group's composition.
- ``mcnemar_exact``: paired correctness of two models on the same rows.
- ``two_proportion_test``: two independent accuracies (Fisher exact).
- ``two_proportion_ztest``: the same by the two-proportion z-test, and the difference's
  Newcombe interval.
- ``wilcoxon_signed_rank``: a paired location test.
- ``balanced_accuracy``: mean per-class recall, a fast equivalent of scikit-learn's for
  resampling loops.
- ``chance_rescaled_skill``: balanced accuracy rescaled so 0 = chance and 1 = perfect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``.

    Args:
        successes: Number of successes.
        n: Number of trials; ``n == 0`` gives ``(nan, nan)``.
        confidence: Two-sided coverage. Defaults to 0.95.
    """
    if n == 0:
        return (float("nan"), float("nan"))
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return (float(low), float(high))


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling rows jointly.

    Args:
        statistic: Function of the resampled arrays returning a float (may be nan on a
            degenerate resample; those resamples are skipped).
        *arrays: Row-aligned arrays (same first dimension).
        n_bootstrap: Number of resamples. Defaults to 1000.
        seed: Seed of the resampling generator. Defaults to 0.
        confidence: Two-sided coverage. Defaults to 0.95.
        strata: Optional row labels; rows are resampled within each stratum so every
            resample keeps the strata sizes (e.g. per-class counts). Defaults to None.

    Returns:
        ``(low, high)``, or ``(nan, nan)`` when no resample gave a finite statistic.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_ci: arrays must have equal length, got {[len(a) for a in arrays]}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    values = []
    for _ in range(n_bootstrap):
        rows = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        value = statistic(*(np.asarray(a)[rows] for a in arrays))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return (float("nan"), float("nan"))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def permutation_p_value(observed: float, null_values: Sequence[float]) -> float:
    """One-sided (greater) permutation p-value with the add-one correction.

    ``(1 + #{null >= observed}) / (1 + n_null)``: never zero, exact under exchangeability.
    """
    null = np.asarray(null_values, dtype=float)
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def permutation_p_floor(n_permutations: int) -> float:
    """``1 / (n_permutations + 1)``: ``permutation_p_value`` never goes below it, however
    strong the effect."""
    return 1.0 / (n_permutations + 1)


def permute_within_groups(
    values: np.ndarray,
    groups: np.ndarray | None,
    rng: np.random.Generator,
    units: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``values`` shuffled only among rows sharing a group (all rows when None).

    Used to test "source beyond class": permuting sources within each label keeps the
    label-source confounding intact under the null, so confounding alone cannot fire.

    Args:
        values: ``(n,)`` values to shuffle.
        groups: ``(n,)`` group per row, or None for one group.
        rng: the random generator.
        units: ``(n,)`` exchangeable unit per row (e.g. patient), or None for rows. With
            units, whole units swap values: a unit's rows get another unit's value (its
            first row's), so images of one patient stay together as they do under the
            null. ``values`` and ``groups`` should be constant within a unit. Defaults to
            None.
    """
    values = np.asarray(values)
    if units is None:
        units = np.arange(len(values))
    first, inverse = np.unique(units, return_index=True, return_inverse=True)[1:]
    unit_groups = np.zeros(len(first)) if groups is None else np.asarray(groups)[first]
    unit_values = values[first].copy()
    for group in np.unique(unit_groups):
        members = np.flatnonzero(unit_groups == group)
        unit_values[members] = unit_values[rng.permutation(members)]
    return unit_values[inverse]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on the paired correctness of two models on the same rows.

    Returns:
        ``{"p_value", "a_only", "b_only", "n"}``: ``a_only`` rows only model A got right,
        ``b_only`` only model B; ``p_value`` is 1.0 when the models never disagree.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_exact: shapes differ, {a.shape} vs {b.shape}")
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    a_only, b_only = int(table[0][1]), int(table[1][0])
    p_value = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"p_value": p_value, "a_only": a_only, "b_only": b_only, "n": int(a.size)}


def two_proportion_test(
    successes_a: int, n_a: int, successes_b: int, n_b: int, alternative: str = "greater"
) -> float:
    """Fisher exact p-value that proportion A exceeds B (``alternative`` as in scipy).

    Args:
        successes_a: Successes in sample A.
        n_a: Size of sample A.
        successes_b: Successes in sample B.
        n_b: Size of sample B.
        alternative: ``"greater"`` (A > B), ``"less"`` or ``"two-sided"``. Defaults to
            ``"greater"``.
    """
    table = [[successes_a, n_a - successes_a], [successes_b, n_b - successes_b]]
    return float(scipy_stats.fisher_exact(table, alternative=alternative).pvalue)


def difference_ci(successes_a: int, n_a: int, successes_b: int,
                  n_b: int) -> tuple[float, float]:
    """95% Newcombe (Wilson-score hybrid) interval of proportion A minus proportion B."""
    low, high = confint_proportions_2indep(successes_a, n_a, successes_b, n_b,
                                           method="newcomb", compare="diff")
    return float(low), float(high)


def two_proportion_ztest(successes_a: int, n_a: int, successes_b: int,
                         n_b: int) -> dict[str, float]:
    """Two-proportion z-test that proportion A exceeds B, with the difference's interval.

    Args:
        successes_a: Successes in sample A.
        n_a: Size of sample A (at least 1).
        successes_b: Successes in sample B.
        n_b: Size of sample B (at least 1).

    Returns:
        ``{"difference", "ci_low", "ci_high", "p_value"}``: A's proportion minus B's, its
        95% Newcombe (Wilson-score hybrid) interval and the one-sided p-value of
        ``statsmodels.stats.proportion.proportions_ztest``; 1.0 when the pooled proportion
        is 0 or 1, where both samples agree entirely and the z statistic is undefined.
    """
    difference = successes_a / n_a - successes_b / n_b
    low, high = difference_ci(successes_a, n_a, successes_b, n_b)
    pooled = (successes_a + successes_b) / (n_a + n_b)
    p_value = 1.0 if pooled in (0.0, 1.0) else float(proportions_ztest(
        [successes_a, successes_b], [n_a, n_b], alternative="larger")[1])
    return {"difference": float(difference), "ci_low": low, "ci_high": high,
            "p_value": p_value}


def wilcoxon_signed_rank(x: np.ndarray, y: np.ndarray, alternative: str = "greater") -> float:
    """Wilcoxon signed-rank p-value for paired ``x - y`` (1.0 when all differences are 0)."""
    diff = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if np.all(diff == 0):
        return 1.0
    return float(scipy_stats.wilcoxon(diff, alternative=alternative).pvalue)


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``truth``.

    Equals ``sklearn.metrics.balanced_accuracy_score`` (tested) at a fraction of its cost,
    which matters inside bootstrap and permutation loops that call it thousands of times.
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    codes = np.unique(truth, return_inverse=True)[1]
    hits = np.bincount(codes, weights=truth == predicted)
    return float(np.mean(hits / np.bincount(codes)))


def chance_rescaled_skill(balanced_accuracy: float, n_classes: int) -> float:
    """``(bacc - 1/k) / (1 - 1/k)``: 0 at chance, 1 when perfect, negative below chance."""
    if n_classes < 2:
        raise ValueError(f"chance_rescaled_skill needs at least 2 classes, got {n_classes}")
    chance = 1.0 / n_classes
    return float((balanced_accuracy - chance) / (1 - chance))

