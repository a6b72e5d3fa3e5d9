"""Classification metrics with 95% confidence intervals, as JSON-able plain data.

Proportions (accuracy, per-class recall) get Wilson score intervals (statsmodels); macro F1
and one-vs-rest AUROC get percentile bootstrap intervals over resampled images. The
metrics themselves come from scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
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


def macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Macro F1 of the arg-max predictions, over the classes present in truth or prediction."""
    return float(f1_score(y_true, proba.argmax(axis=1), average="macro", zero_division=0))


def bootstrap_ci(statistic, y_true: np.ndarray, proba: np.ndarray, n_bootstrap: int,
                 seed: int) -> tuple[float, float] | None:
    """Percentile interval of ``statistic(y_true, proba)`` over resampled rows."""
    if n_bootstrap == 0 or len(y_true) == 0:
        return None
    rng = np.random.default_rng(seed)
    values = np.array([statistic(y_true[rows], proba[rows])
                       for rows in rng.integers(0, len(y_true), size=(n_bootstrap, len(y_true)))])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


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

    return {
        "n": len(y_true),
        "classes": list(classes),
        "accuracy": n_correct / len(y_true) if len(y_true) else None,
        "accuracy_ci": wilson(n_correct, len(y_true)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "macro_f1": macro_f1(y_true, proba) if len(y_true) else None,
        "macro_f1_ci": bootstrap_ci(macro_f1, y_true, proba, n_bootstrap, seed),
        "auroc": auroc if np.isfinite(auroc) else None,
        "auroc_ci": bootstrap_ci(macro_auroc, y_true, proba, n_bootstrap, seed),
    }
