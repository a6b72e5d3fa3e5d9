"""Classification metrics with confidence intervals (models.metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.metrics import classification_metrics, fold_summary, wilson

CLASSES = ("covid", "opacity", "other", "normal")


def _one_hot(labels, n=4, confidence=0.7):
    proba = np.full((len(labels), n), (1 - confidence) / (n - 1))
    proba[np.arange(len(labels)), labels] = confidence
    return proba


def test_perfect_predictions():
    y = np.repeat(np.arange(4), 5)
    result = classification_metrics(y, _one_hot(y), CLASSES, n_bootstrap=50)
    assert result["accuracy"] == 1.0 and result["macro_f1"] == 1.0 and result["auroc"] == 1.0
    assert result["confusion_matrix"] == (np.eye(4, dtype=int) * 5).tolist()
    low, high = result["accuracy_ci"]
    assert 0.8 < low < 1.0 and high == pytest.approx(1.0)
    json.dumps(result)  # plain JSON-able data


def test_counts_recall_and_wilson_interval():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    predicted = np.array([0, 0, 1, 3, 1, 1, 2, 3])
    result = classification_metrics(y, _one_hot(predicted), CLASSES, n_bootstrap=200, seed=1)
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["per_class"]["covid"] == {"recall": 0.5, "recall_ci": wilson(2, 4), "support": 4}
    assert result["confusion_matrix"][0] == [2, 1, 0, 1]
    low, high = result["macro_f1_ci"]
    assert low <= result["macro_f1"] <= high
    # statsmodels' Wilson interval for 2/4, checked by hand: 0.15 .. 0.85
    assert wilson(2, 4) == pytest.approx((0.1500, 0.8500), abs=1e-3)


def test_absent_class_gives_none_not_nan():
    y = np.array([0, 0, 1, 1])
    result = classification_metrics(y, _one_hot(y), CLASSES, n_bootstrap=20)
    assert result["per_class"]["other"] == {"recall": None, "recall_ci": None, "support": 0}
    assert result["auroc"] == 1.0


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"proba must have shape \(3, 4\).*got \(3, 2\)"):
        classification_metrics([0, 1, 2], np.zeros((3, 2)), CLASSES)


def test_vectorised_bootstrap_scores_equal_scikit_learn():
    """The resample scorers are closed forms of scikit-learn's metrics: same numbers."""
    from models.metrics import _resampled_macro_auroc, _resampled_macro_f1, macro_auroc, macro_f1

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=(20, 30))
    y[0] = 2  # a single-class resample: AUROC undefined
    proba = rng.dirichlet(np.ones(4), size=(20, 30)).round(1)  # rounding makes ties
    f1 = _resampled_macro_f1(y, proba.argmax(axis=2), 4)
    auroc = _resampled_macro_auroc(y, proba)
    for row in range(20):
        assert f1[row] == pytest.approx(macro_f1(y[row], proba[row]))
        expected = macro_auroc(y[row], proba[row])
        assert (np.isnan(auroc[row]) and np.isnan(expected)) or auroc[row] == pytest.approx(expected)
    assert np.isnan(auroc[0])


def _fold(correct: int, n: int, single_class: bool = False) -> dict:
    """Metrics of a fold of ``n`` images, ``correct`` of them right (one class only if
    ``single_class``, else two classes alternating)."""
    y = np.zeros(n, dtype=int) if single_class else np.arange(n) % 2
    predicted = np.where(np.arange(n) < correct, y, (y + 1) % 4)
    return classification_metrics(y, _one_hot(predicted), CLASSES, n_bootstrap=0)


def test_fold_summary_averages_folds_and_sums_their_confusion_matrices():
    folds = [_fold(3, 4), _fold(2, 4), _fold(4, 4, single_class=True)]
    summary = fold_summary(folds)
    assert summary["accuracy"] == pytest.approx(0.75)
    assert summary["accuracy_std"] == pytest.approx(np.std([0.75, 0.5, 1.0]))
    assert summary["macro_f1"] == pytest.approx(np.mean([f["macro_f1"] for f in folds]))
    # AUROC is undefined on the one-class fold: the mean is over the other two
    assert folds[2]["auroc"] is None
    assert summary["auroc"] == pytest.approx(np.mean([folds[0]["auroc"], folds[1]["auroc"]]))
    assert summary["per_class_recall"]["covid"] == pytest.approx(np.mean([1.0, 0.5, 1.0]))
    assert summary["per_class_recall"]["other"] is None  # never in any fold
    assert np.array(summary["confusion_matrix"]).sum() == 12
    assert summary["confusion_matrix"][0][0] == 2 + 1 + 4


def test_fold_summary_refuses_no_folds_and_mixed_classes():
    with pytest.raises(ValueError, match="at least one fold, got none"):
        fold_summary([])
    other = {**_fold(1, 2), "classes": ["a", "b", "c", "d"]}
    with pytest.raises(ValueError, match=r"every fold must have the classes \['covid'"):
        fold_summary([_fold(1, 2), other])
