"""The linear-probe engine of the site checks: can a target be read off features linearly?

``linear_probe_skill`` cross-validates a logistic regression (patient-grouped folds) that
predicts a target (the source, or the label) from features reduced by ``reduce_features``;
``within_label_skill`` asks the same of the source inside each label, with a null that keeps
the label-source confounding. Skill is balanced accuracy rescaled to chance:
``(bacc - 1/k) / (1 - 1/k)``, 0 = chance, 1 = perfect. The logistic regressions of a
fold, for the observed target or all its permutations at once, are ``probes.logistic``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from probes.logistic import predict_many
from probes.stats import (
    balanced_accuracy,
    bootstrap_ci,
    chance_rescaled_skill,
    permutation_p_value,
    permute_within_groups,
)

MAX_FOLDS = 3
"""Cross-validation folds of each linear probe: 3 keeps the many permutation refits affordable
on a few CPU cores (each permutation refits once per fold, per label within labels)."""
PCA_COMPONENTS = 32
"""Features are reduced once, without labels, so each of the many permutation refits is
a small logistic regression (the reduction sees no labels, so it cannot leak them). The
linear algebra here runs with one BLAS thread: a run's other processes (a pool's workers,
a test worker beside it) share the cores, and there more threads only added contention
(measured before the refits were batched: a 160 x 256 SVD took seconds)."""


@dataclass(frozen=True)
class Skill:
    """A linear probe's cross-validated skill at predicting ``target`` (nan = not estimable)."""

    skill: float
    ci: tuple[float, float]
    p_value: float | None
    n: int
    n_classes: int
    reason: str = ""  # why not estimable

    @property
    def estimable(self) -> bool:
        return not self.reason


@threadpool_limits.wrap(limits=1)
def reduce_features(features: np.ndarray, seed: int) -> np.ndarray:
    """Standardise and project onto at most ``PCA_COMPONENTS`` principal axes (label-free).

    The axes keep their variance (no whitening): whitening gave every one of up to n - 1
    axes unit variance, so on a small set the noise axes weighed as much as the signal and
    the regularised probe collapsed to predicting one source. Unwhitened, an L2 logistic
    regression on the projection is the same model as on the standardised features
    whenever the rows span fewer than ``PCA_COMPONENTS`` axes (the penalty is rotation
    invariant), and a cap on the top-variance axes otherwise.
    """
    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    n_components = min(PCA_COMPONENTS, x.shape[0] - 1, x.shape[1])
    return PCA(n_components=n_components, random_state=seed).fit_transform(x)


def _folds(target: np.ndarray, patients: np.ndarray, seed: int) -> list[tuple]:
    """Patient-grouped stratified folds; as many as the rarest value allows (<= MAX_FOLDS)."""
    values = np.unique(target)
    fewest = min(len(np.unique(patients[target == v])) for v in values)
    n_splits = min(MAX_FOLDS, fewest)
    if n_splits < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(patients, target, groups=patients))


def _out_of_fold(x: np.ndarray, targets: np.ndarray, folds: list[tuple]) -> np.ndarray:
    """Out-of-fold predictions of a balanced L2 logistic regression, for each row of
    ``targets`` ``(t, n)`` at once (the observed target and its permutations)."""
    values, codes = np.unique(targets, return_inverse=True)
    codes = codes.reshape(targets.shape)
    predicted = np.empty_like(codes)
    for train, test in folds:
        predicted[:, test] = predict_many(x[train], codes[:, train], x[test])
    return values[predicted]


def _skill_of(truth: np.ndarray, predicted: np.ndarray) -> float:
    k = len(np.unique(truth))
    return chance_rescaled_skill(balanced_accuracy(truth, predicted), k) if k > 1 else np.nan


@threadpool_limits.wrap(limits=1)
def linear_probe_skill(
    x: np.ndarray,
    target: np.ndarray,
    patients: np.ndarray,
    *,
    n_permutations: int,
    n_bootstrap: int,
    seed: int,
) -> Skill:
    """Cross-validated skill of a logistic regression predicting ``target`` from ``x``.

    Args:
        x: ``(n, d)`` reduced features.
        target: ``(n,)`` values to predict (sources or labels).
        patients: ``(n,)`` patient ids: a patient's images never straddle train and test.
        n_permutations: Refits with ``target`` shuffled among patients (a patient's images
            move together), for the p-value; 0 skips it.
        n_bootstrap: Resamples of the out-of-fold predictions for the CI.
        seed: Seed of folds, permutations and bootstrap.
    """
    target = np.asarray(target).astype(str)
    n, k = len(target), len(np.unique(target))
    if k < 2:
        return Skill(np.nan, (np.nan, np.nan), None, n, k, f"only one value ({str(target[0])!r})")
    folds = _folds(target, patients, seed)
    if not folds:
        return Skill(np.nan, (np.nan, np.nan), None, n, k,
                     "a value has fewer than 2 patients, too few to cross-validate")
    predicted = _out_of_fold(x, target[None], folds)[0]
    if len(np.unique(predicted)) == 1:
        return Skill(np.nan, (np.nan, np.nan), None, n, k, _constant_reason(predicted))
    skill = _skill_of(target, predicted)
    ci = bootstrap_ci(_skill_of, target, predicted, n_bootstrap=n_bootstrap, seed=seed,
                      strata=target)
    p_value = None
    if n_permutations:
        rng = np.random.default_rng(seed)
        shuffles = np.stack([permute_within_groups(target, None, rng, units=patients)
                             for _ in range(n_permutations)])
        null = map(_skill_of, shuffles, _out_of_fold(x, shuffles, folds))
        p_value = permutation_p_value(skill, list(null))
    return Skill(skill, ci, p_value, n, k)


def _constant_reason(predicted: np.ndarray) -> str:
    return (f"the probe predicted {str(predicted[0])!r} for every row: a constant predictor "
            "scores 0 whatever the features hold, so its 0 says nothing")


def _pooled_skill(truth: np.ndarray, predicted: np.ndarray, label: np.ndarray) -> float:
    """Row-weighted mean over labels of the within-label skill."""
    values = [(np.sum(label == v), _skill_of(truth[label == v], predicted[label == v]))
              for v in np.unique(label)]
    weights, skills = np.array(values, dtype=float).T
    return float(np.sum(weights * skills) / np.sum(weights))


@dataclass(frozen=True)
class LabelPlan:
    """One label's within-label source probe: its rows and folds, or why it cannot be run."""

    label: str
    rows: np.ndarray  # rows of the label whose source has >= 2 patients under it
    folds: list[tuple]  # patient-grouped folds over ``rows``; empty when not estimable
    sources: list[str]  # the sources kept
    dropped: list[str]  # the label's sources with fewer than 2 patients
    reason: str  # why not estimable ("" when it is)


def _label_plans(source: np.ndarray, label: np.ndarray, patients: np.ndarray,
                 seed: int) -> list[LabelPlan]:
    """Per label: the rows usable for a within-label source probe, their folds, or why not.

    A source enters a label's probe only with at least 2 patients under that label (fewer
    cannot be cross-validated); a label with fewer than 2 such sources is not estimable.
    """
    plans = []
    for value in map(str, np.unique(label)):
        rows = np.flatnonzero(label == value)
        kept = [s for s in np.unique(source[rows])
                if len(np.unique(patients[rows][source[rows] == s])) >= 2]
        dropped = sorted(set(source[rows]) - set(kept))
        rows = rows[np.isin(source[rows], kept)]
        folds = _folds(source[rows], patients[rows], seed) if len(kept) >= 2 else []
        reason = "" if folds else (
            f"label {value!r} has a single usable source ({', '.join(kept) or 'none'}): "
            "site and label cannot be told apart here")
        plans.append(LabelPlan(value, rows, folds, kept, dropped, reason))
    return plans


@threadpool_limits.wrap(limits=1)
def within_label_skill(
    x: np.ndarray,
    source: np.ndarray,
    label: np.ndarray,
    patients: np.ndarray,
    *,
    n_permutations: int,
    n_bootstrap: int,
    seed: int,
) -> tuple[Skill, list[dict]]:
    """Source skill inside each label, pooled over the labels where it is estimable.

    Sources are permuted only within a label (among patients) for the p-value, so the null
    keeps the label-source confounding: skill that comes from disease information alone
    stays null.

    Returns:
        The pooled ``Skill`` (not estimable when no label has two usable sources) and one
        table row per label (``skill`` None with a ``reason`` where not estimable, never 0).
    """
    source, label = np.asarray(source).astype(str), np.asarray(label).astype(str)
    plans = _label_plans(source, label, patients, seed)
    usable = [plan for plan in plans if not plan.reason]
    if not usable:
        reason = "; ".join(plan.reason for plan in plans)
        return Skill(np.nan, (np.nan, np.nan), None, 0, 0, reason), [
            _label_row(plan, None, (None, None)) for plan in plans]

    rows = np.concatenate([plan.rows for plan in usable])
    ends = np.cumsum([len(plan.rows) for plan in usable])
    parts = [slice(end - len(plan.rows), end) for plan, end in zip(usable, ends, strict=True)]

    def predict(targets: np.ndarray) -> np.ndarray:
        """``(t, len(rows))`` out-of-fold predictions, each label's rows on their own."""
        predicted = np.empty_like(targets)
        for plan, part in zip(usable, parts, strict=True):
            predicted[:, part] = _out_of_fold(x[plan.rows], targets[:, part], plan.folds)
        return predicted

    truth, groups = source[rows], label[rows]
    units = np.char.add(np.char.add(np.asarray(patients)[rows].astype(str), "|"), groups)
    predicted = predict(truth[None])[0]
    if all(len(np.unique(predicted[groups == plan.label])) == 1 for plan in usable):
        return Skill(np.nan, (np.nan, np.nan), None, len(rows), len(np.unique(truth)),
                     f"within every label, {_constant_reason(predicted)}"), [
            _label_row(plan, None, (None, None)) for plan in plans]
    table = []
    for plan in plans:
        if plan.reason:
            table.append(_label_row(plan, None, (None, None)))
            continue
        part = groups == plan.label
        table.append(_label_row(plan, _skill_of(truth[part], predicted[part]), bootstrap_ci(
            _skill_of, truth[part], predicted[part], n_bootstrap=n_bootstrap, seed=seed,
            strata=truth[part])))
    pooled = _pooled_skill(truth, predicted, groups)
    ci = bootstrap_ci(_pooled_skill, truth, predicted, groups, n_bootstrap=n_bootstrap,
                      seed=seed, strata=np.char.add(np.char.add(groups, "|"), truth))
    p_value = None
    if n_permutations:
        rng = np.random.default_rng(seed)
        shuffles = np.stack([permute_within_groups(truth, groups, rng, units=units)
                             for _ in range(n_permutations)])
        null = [_pooled_skill(shuffled, guessed, groups)
                for shuffled, guessed in zip(shuffles, predict(shuffles), strict=True)]
        p_value = permutation_p_value(pooled, null)
    return Skill(pooled, ci, p_value, len(rows), len(np.unique(truth))), table


def _label_row(plan: LabelPlan, skill: float | None, ci: tuple) -> dict:
    return {"label": plan.label, "n": int(len(plan.rows)), "sources": ", ".join(plan.sources),
            "excluded_sources": ", ".join(plan.dropped), "skill": skill, "ci_low": ci[0],
            "ci_high": ci[1], "reason": plan.reason}


def format_skill(skill: Skill) -> str:
    """``"0.42 (95% CI 0.30 to 0.55)"``, or ``"not estimable"``."""
    if not skill.estimable:
        return "not estimable"
    return f"{skill.skill:.2f} (95% CI {skill.ci[0]:.2f} to {skill.ci[1]:.2f})"
