import numpy as np
import pytest

from probes.stats import (
    balanced_accuracy,
    bootstrap_ci,
    chance_rescaled_skill,
    mcnemar_exact,
    permutation_p_value,
    permute_within_groups,
    two_proportion_test,
    wilcoxon_signed_rank,
    wilson_ci,
)


def test_wilson_ci_known_value_and_empty():
    low, high = wilson_ci(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)
    assert all(np.isnan(wilson_ci(0, 0)))


def test_bootstrap_ci_covers_mean_and_is_seeded():
    x = np.random.default_rng(0).normal(2.0, 1.0, size=400)
    ci = bootstrap_ci(np.mean, x, n_bootstrap=300, seed=1)
    assert ci[0] < 2.0 < ci[1]
    assert ci[1] - ci[0] < 0.4
    assert ci == bootstrap_ci(np.mean, x, n_bootstrap=300, seed=1)


def test_bootstrap_ci_strata_keep_group_sizes():
    strata = np.array([0] * 5 + [1] * 95)
    seen = []
    bootstrap_ci(lambda s: seen.append(np.sum(s == 0)) or 0.0, strata, n_bootstrap=20,
                 strata=strata)
    assert set(seen) == {5}


def test_bootstrap_ci_rejects_misaligned_arrays():
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(np.mean, np.zeros(3), np.zeros(4))


def test_permutation_p_value_add_one():
    assert permutation_p_value(1.0, [0.0] * 99) == pytest.approx(0.01)
    assert permutation_p_value(0.0, [0.0] * 9) == pytest.approx(1.0)


def test_permute_within_groups_keeps_group_composition():
    values = np.array(["a", "b", "a", "b", "c", "c", "d", "e"])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    shuffled = permute_within_groups(values, groups, np.random.default_rng(3))
    for g in (0, 1):
        assert sorted(shuffled[groups == g]) == sorted(values[groups == g])


def test_permute_within_groups_moves_whole_units():
    values = np.array(["a", "a", "b", "c", "c", "c", "d"])
    units = np.array([1, 1, 2, 3, 3, 3, 4])
    for seed in range(5):
        shuffled = permute_within_groups(values, None, np.random.default_rng(seed), units=units)
        for unit in np.unique(units):
            assert len(set(shuffled[units == unit])) == 1
        assert sorted(set(shuffled)) == ["a", "b", "c", "d"]


def test_mcnemar_exact_detects_one_sided_disagreement():
    a = np.array([True] * 30 + [True] * 12)
    b = np.array([True] * 30 + [False] * 12)
    result = mcnemar_exact(a, b)
    assert result["a_only"] == 12 and result["b_only"] == 0
    assert result["p_value"] == pytest.approx(2 * 0.5**12)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_two_proportion_and_rank_tests_direction():
    assert two_proportion_test(90, 100, 60, 100) < 1e-4
    assert two_proportion_test(60, 100, 90, 100) > 0.99
    rng = np.random.default_rng(0)
    x = rng.normal(1, 1, 50)
    assert wilcoxon_signed_rank(x, x - 1) < 1e-6
    assert wilcoxon_signed_rank(x, x) == 1.0


def test_balanced_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    truth = rng.choice(["a", "b", "c"], size=200, p=[0.6, 0.3, 0.1])
    predicted = np.where(rng.random(200) < 0.7, truth, rng.choice(["a", "b", "c", "d"], size=200))
    assert balanced_accuracy(truth, predicted) == pytest.approx(
        balanced_accuracy_score(truth, predicted))


def test_chance_rescaled_skill():
    assert chance_rescaled_skill(0.25, 4) == pytest.approx(0.0)
    assert chance_rescaled_skill(1.0, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        chance_rescaled_skill(1.0, 1)
