"""Classification metrics with 95% confidence intervals, as JSON-able plain data.

Proportions (accuracy, per-class recall) get Wilson score intervals (statsmodels); macro F1
and one-vs-rest AUROC get percentile bootstrap intervals over resampled images. The
metrics themselves come from scikit-learn. ``fold_summary`` turns the metrics of
cross-validation folds into their means (the one fold aggregation of the tool).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95


def wilson(successes: int, total: int) -> tuple[float, float] | None:
    """95% Wilson score interval of ``successes / total``; ``None`` when ``total`` is 0."""
    if total == 0:
        return None
    low, high = proportion_confint(successes, total, alpha=1 - CONFIDENCE, method="wilson")
    return float(low), float(high)


def macro_auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the classes that have both positives and negatives.

    ``nan`` when no class qualifies (e.g. a single-class sample).
    """
    scores = [roc_auc_score(y_true == k, proba[:, k]) for k in range(proba.shape[1])
              if 0 < np.sum(y_true == k) < len(y_true)]
    return float(np.mean(scores)) if scores else float("nan")


def _resampled_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro F1 of each row of ``(B, n)`` label arrays, as scikit-learn's ``f1_score(average=
    "macro")`` computes it (classes absent from both truth and prediction left out)."""
    scores = []
    for k in range(n_classes):
        true_k, pred_k = y_true == k, y_pred == k
        tp = np.sum(true_k & pred_k, axis=1)
        denominator = 2 * tp + np.sum(true_k ^ pred_k, axis=1)  # 2 TP + FP + FN
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(denominator > 0, 2 * tp / denominator, np.nan))
    return _mean_of_defined(np.stack(scores))


def _mean_of_defined(scores: np.ndarray) -> np.ndarray:
    """Column means over the finite entries of ``(K, B)``; ``nan`` where none is finite."""
    defined = np.isfinite(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, scores, 0.0).sum(axis=0) / defined.sum(axis=0)


def _resampled_macro_auroc(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """One-vs-rest macro AUROC of each resample (rows of ``(B, n)`` and ``(B, n, K)``) by the
    Mann-Whitney rank formula with average ranks for ties, which equals ``roc_auc_score``."""
    n = y_true.shape[1]
    scores = []
    for k in range(proba.shape[2]):
        positive = y_true == k
        n_pos = positive.sum(axis=1)
        ranks = rankdata(proba[:, :, k], axis=1)
        rank_sum = np.sum(ranks * positive, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
        scores.append(np.where((n_pos > 0) & (n_pos < n), auc, np.nan))
    return _mean_of_defined(np.stack(scores))


def macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Macro F1 of the arg-max predictions, over the classes present in truth or prediction."""
    return float(f1_score(y_true, proba.argmax(axis=1), average="macro", zero_division=0))


def bootstrap_cis(y_true: np.ndarray, proba: np.ndarray, n_bootstrap: int,
                  seed: int) -> dict[str, tuple[float, float] | None]:
    """95% percentile-bootstrap intervals of macro F1 and macro AUROC over resampled rows.

    The resamples are scored with vectorised closed forms equal to scikit-learn's metrics
    (checked in the tests): calling scikit-learn a thousand times costs minutes here.
    """
    if n_bootstrap == 0 or len(y_true) == 0:
        return {"macro_f1": None, "auroc": None}
    rows = np.random.default_rng(seed).integers(0, len(y_true), size=(n_bootstrap, len(y_true)))
    samples = {"macro_f1": _resampled_macro_f1(y_true[rows], proba[rows].argmax(axis=2),
                                               proba.shape[1]),
               "auroc": _resampled_macro_auroc(y_true[rows], proba[rows])}
    tail = (1 - CONFIDENCE) / 2 * 100
    intervals = {}
    for name, values in samples.items():
        values = values[np.isfinite(values)]
        intervals[name] = ((float(np.percentile(values, tail)),
                            float(np.percentile(values, 100 - tail))) if len(values) else None)
    return intervals


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, per-class recall, confusion matrix, macro F1 and AUROC with 95% CIs.

    Args:
        y_true: true class indices, ``(n,)``.
        proba: predicted class probabilities, ``(n, len(classes))``.
        classes: class names, in column order of ``proba``.
        n_bootstrap: bootstrap resamples for the F1 and AUROC intervals (0: no interval).
            Defaults to 1000.
        seed: seeds the bootstrap. Defaults to 0.

    Returns:
        ``{"n", "accuracy", "accuracy_ci", "per_class": {name: {"recall", "recall_ci",
        "support"}}, "confusion_matrix" (rows true, columns predicted), "classes",
        "macro_f1", "macro_f1_ci", "auroc", "auroc_ci"}``; undefined values are ``None``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = len(classes)
    if proba.shape != (len(y_true), n_classes):
        raise ValueError(f"proba must have shape ({len(y_true)}, {n_classes}) to match y_true "
                         f"and classes, got {proba.shape}")
    y_pred = proba.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    per_class = {}
    for k, name in enumerate(classes):
        support = int(matrix[k].sum())
        per_class[name] = {"recall": float(matrix[k, k] / support) if support else None,
                           "recall_ci": wilson(int(matrix[k, k]), support), "support": support}
    n_correct = int(np.trace(matrix))
    auroc = macro_auroc(y_true, proba)
    intervals = bootstrap_cis(y_true, proba, n_bootstrap, seed)

    return {
        "n": len(y_true),
        "classes": list(classes),
        "accuracy": n_correct / len(y_true) if len(y_true) else None,
        "accuracy_ci": wilson(n_correct, len(y_true)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "macro_f1": macro_f1(y_true, proba) if len(y_true) else None,
        "macro_f1_ci": intervals["macro_f1"],
        "auroc": auroc if np.isfinite(auroc) else None,
        "auroc_ci": intervals["auroc"],
    }


def _mean_of_known(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are defined; ``None`` when none is."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def fold_summary(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The cross-validation summary of per-fold ``classification_metrics``, as in the
    paper's tables: the one fold aggregation of the tool (``cxr-audit train``, the audit's
    model records and the report all read it).

    A metric undefined in a fold (``None``, e.g. AUROC of a one-class fold) is left out of
    that metric's mean rather than failing the summary.

    Args:
        folds: ``classification_metrics`` of each fold, on the same classes.

    Returns:
        ``{"accuracy", "accuracy_std", "macro_f1", "auroc" (means over folds),
        "per_class_recall" ({class: mean recall}), "confusion_matrix" (summed over folds)}``.

    Raises:
        ValueError: no folds, or folds on different classes.
    """
    if not folds:
        raise ValueError("fold_summary needs the metrics of at least one fold, got none")
    classes = folds[0]["classes"]
    if any(fold["classes"] != classes for fold in folds):
        raise ValueError(f"fold_summary: every fold must have the classes {classes}, got "
                         f"{[fold['classes'] for fold in folds]}")
    accuracies = [fold["accuracy"] for fold in folds if fold["accuracy"] is not None]
    return {
        "accuracy": _mean_of_known(accuracies),
        "accuracy_std": float(np.std(accuracies)) if accuracies else None,
        "macro_f1": _mean_of_known([fold["macro_f1"] for fold in folds]),
        "auroc": _mean_of_known([fold["auroc"] for fold in folds]),
        "per_class_recall": {name: _mean_of_known([fold["per_class"][name]["recall"]
                                                   for fold in folds]) for name in classes},
        "confusion_matrix": np.sum([fold["confusion_matrix"] for fold in folds],
                                   axis=0).tolist(),
    }
