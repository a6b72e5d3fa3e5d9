"""The model-performance part of the report, from ``AuditResult.models`` dicts.

The pipeline writes, per trained model, ``key``, ``backbone``, ``input_mode``,
``weights_origin``, ``training_path`` and ``metrics`` as ``models.metrics.
classification_metrics`` returns them (``accuracy`` + ``accuracy_ci``, ``macro_f1``,
``auroc`` likewise, ``per_class`` ``{class: {recall, recall_ci, support}}``,
``confusion_matrix``, ``classes``, ``n``), optionally ``cv`` (``{"folds": [metrics...],
"mean": models.metrics.fold_summary}``) and ``history`` (``{series name: [per-epoch
values]}``). This module only reads them and puts each metric next to its interval for
display. Everything is optional: what is present is shown, the rest reads "not
available".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.figures import RenderedFigure, render_figure
from reports.formatting import metric_ci, metric_value

_HEADLINE_METRICS = (("accuracy", "Accuracy"), ("macro_f1", "Macro F1"), ("auroc", "AUROC"))
_IDENTITY_KEYS = ("backbone", "input_mode", "weights_origin", "training_path")
_SHOWN_KEYS = {"accuracy", "macro_f1", "auroc", "per_class", "confusion_matrix", "classes"}


@dataclass(frozen=True)
class ModelView:
    """One trained model as the template shows it."""

    key: str
    identity: dict[str, Any]
    headline: dict[str, Any]
    """Metric label -> the metric as shown (number or ``{value, ci}``) or None."""
    cv_mean: dict[str, Any]
    cv_folds: list[dict[str, Any]]
    other_metrics: dict[str, Any]
    figures: list[RenderedFigure] = field(default_factory=list)


def model_views(models: tuple[dict[str, Any], ...], run_dir: Path,
                classes: list[str] | None = None) -> list[ModelView]:
    """One ``ModelView`` per model dict, with its confusion matrix and per-class recall.

    Args:
        models: ``AuditResult.models``.
        run_dir: The run folder (for figure rendering).
        classes: Class names in confusion-matrix order, used when a model's metrics do not
            carry their own ``classes``. Defaults to None (numbered classes).
    """
    return [_model_view(model, run_dir, classes) for model in models]


def model_overview_figures(models: tuple[dict[str, Any], ...],
                           run_dir: Path) -> list[RenderedFigure]:
    """Bars comparing the models: cross-validated accuracy (like the paper's Fig. 11) and
    test accuracy, each with its CI where the models layer gave one."""
    specs = [
        _accuracy_bars(models, "Cross-validated accuracy per model",
                       lambda m: (m.get("cv") or {}).get("mean", {}).get("accuracy")),
        _accuracy_bars(models, "Test accuracy per model",
                       lambda m: shown_metrics(m.get("metrics") or {})["accuracy"]),
    ]
    return [render_figure(spec, run_dir) for spec in specs if spec is not None]


def shown_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``classification_metrics`` as the report shows them: each metric with its interval.

    Returns:
        ``accuracy``, ``macro_f1``, ``auroc`` (each ``{"value", "ci"}``, a bare number when
        it has no interval, or None), ``per_class_recall`` (``{class: {"value", "ci",
        "support"}}`` or None), ``confusion`` (rows true) and ``classes`` (or None),
        ``other`` (the remaining metrics, ``*_ci`` intervals left out).
    """
    shown: dict[str, Any] = {}
    for name, _ in _HEADLINE_METRICS:
        value, ci = metrics.get(name), metrics.get(f"{name}_ci")
        shown[name] = {"value": value, "ci": ci} if value is not None and ci is not None else value
    per_class = metrics.get("per_class")
    shown["per_class_recall"] = {
        name: {"value": row.get("recall"), "ci": row.get("recall_ci"),
               "support": row.get("support")}
        for name, row in per_class.items()} if isinstance(per_class, dict) else None
    shown["confusion"] = metrics.get("confusion_matrix")
    shown["classes"] = metrics.get("classes")
    shown["other"] = {k: v for k, v in metrics.items()
                      if k not in _SHOWN_KEYS and not k.endswith("_ci")}
    return shown


def _model_view(model: dict[str, Any], run_dir: Path, classes: list[str] | None) -> ModelView:
    metrics = shown_metrics(model.get("metrics") or {})
    cv = model.get("cv") or {}
    figures = [_confusion_spec(metrics, classes), _per_class_spec(metrics),
               _history_spec(model.get("history"))]
    return ModelView(
        key=str(model.get("key") or "/".join(str(model.get(k, "?")) for k in _IDENTITY_KEYS[:2])),
        identity={k: model.get(k) for k in _IDENTITY_KEYS},
        headline={label: metrics[name] for name, label in _HEADLINE_METRICS},
        cv_mean=_scalars(cv.get("mean") or {}),
        cv_folds=_fold_rows(cv.get("folds") or []),
        other_metrics=metrics["other"],
        figures=[render_figure(spec, run_dir) for spec in figures if spec is not None],
    )


def _scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a fold summary (its per-class means and summed matrix stay in
    summary.json)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) or v is None}


def _fold_rows(folds: list[Any]) -> list[dict[str, Any]]:
    """One table row per fold with its scalar metrics (intervals, matrices and per-class
    rows stay in summary.json)."""
    return [{"fold": number, **{k: v for k, v in fold.items() if not k.endswith("_ci")
                                and (isinstance(v, (int, float, str)) or v is None)}}
            for number, fold in enumerate(folds, start=1) if isinstance(fold, dict)]


def _accuracy_bars(models: tuple[dict[str, Any], ...], title: str,
                   pick: Any) -> dict[str, Any] | None:
    rows = {str(m.get("key", "?")): pick(m) for m in models}
    return bars_spec(title, rows, ylabel="accuracy")


def bars_spec(title: str, metrics: dict[str, Any], ylabel: str) -> dict[str, Any] | None:
    """Bars of the metrics that have a value, with CIs where any metric has one."""
    present = {name: m for name, m in metrics.items() if metric_value(m) is not None}
    if not present:
        return None
    spec = {"kind": "bars", "title": title, "labels": list(present), "ylabel": ylabel,
            "values": [metric_value(m) for m in present.values()]}
    cis = [metric_ci(m) for m in present.values()]
    if any(low is not None for low, _ in cis):
        spec["ci_low"] = [low for low, _ in cis]
        spec["ci_high"] = [high for _, high in cis]
    return spec


def _confusion_spec(metrics: dict[str, Any], classes: list[str] | None) -> dict[str, Any] | None:
    matrix = metrics["confusion"]
    if not matrix:
        return None
    labels = metrics["classes"] or classes or list(metrics["per_class_recall"] or [])
    if len(labels) != len(matrix):
        labels = [str(i) for i in range(len(matrix))]
    return {"kind": "confusion", "title": "Confusion matrix (test set)", "labels": list(labels),
            "values": matrix}


def _per_class_spec(metrics: dict[str, Any]) -> dict[str, Any] | None:
    recall = metrics["per_class_recall"]
    if not isinstance(recall, dict):
        return None
    labelled = {_with_support(name, value): value for name, value in recall.items()}
    return bars_spec("Per-class accuracy (recall) with 95% CI", labelled, ylabel="recall")


def _with_support(name: str, metric: Any) -> str:
    support = metric.get("support") if isinstance(metric, dict) else None
    return f"{name}\n(n={support})" if support is not None else str(name)


def _history_spec(history: Any) -> dict[str, Any] | None:
    if not isinstance(history, dict) or not history:
        return None
    length = max(len(values) for values in history.values())
    return {"kind": "lines", "title": "Training curves", "x": list(range(1, length + 1)),
            "series": history, "xlabel": "epoch", "ylabel": "value"}
