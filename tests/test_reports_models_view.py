"""reports.models_view: the models layer's metrics shown with their intervals; missing parts tolerated."""

from __future__ import annotations

import numpy as np

from models.metrics import classification_metrics, fold_summary
from reports.formatting import format_estimate, format_number, format_p
from reports.models_view import model_overview_figures, model_views, shown_metrics

CLASSES = ["covid", "opacity", "other", "normal"]


def _flat_metrics() -> dict:
    y_true = np.repeat(np.arange(4), 5)
    proba = np.eye(4)[y_true] * 0.7 + 0.075
    proba[0] = [0.1, 0.7, 0.1, 0.1]  # one covid image called opacity
    return classification_metrics(y_true, proba, CLASSES, n_bootstrap=0)


def test_metrics_of_the_models_layer_are_shown_with_their_intervals():
    metrics = _flat_metrics()
    shown = shown_metrics(metrics)
    assert shown["accuracy"] == {"value": 0.95, "ci": metrics["accuracy_ci"]}
    assert shown["per_class_recall"]["covid"]["value"] == 0.8
    assert shown["per_class_recall"]["covid"]["support"] == 5
    assert shown["confusion"][0] == [4, 1, 0, 0] and shown["classes"] == CLASSES
    assert shown["macro_f1"] == metrics["macro_f1"]  # no interval without bootstrap
    assert shown["other"] == {"n": 20}  # *_ci companions are folded into their metric


def test_model_without_metrics_shows_identity_and_nothing_else(tmp_path):
    (view,) = model_views(({"key": "ext/raw", "backbone": "ext", "input_mode": "raw",
                            "external": True},), tmp_path)
    assert view.key == "ext/raw" and view.identity["weights_origin"] is None
    assert set(view.headline.values()) == {None} and view.figures == [] and view.cv_folds == []
    assert model_overview_figures(({"key": "ext/raw"},), tmp_path) == []


def test_model_with_flat_metrics_draws_confusion_and_per_class(tmp_path):
    folds = [_flat_metrics(), _flat_metrics()]
    model = {"key": "m/raw", "metrics": _flat_metrics(),
             "cv": {"folds": folds, "mean": fold_summary(folds)}}
    (view,) = model_views((model,), tmp_path)
    assert [figure.title for figure in view.figures] == [
        "Confusion matrix (test set)", "Per-class accuracy (recall) with 95% CI"]
    assert all(figure.data_uri for figure in view.figures)
    assert view.cv_folds[1] == {"fold": 2, "n": 20, "accuracy": 0.95, "macro_f1": folds[1]["macro_f1"],
                                "auroc": folds[1]["auroc"]}
    # the summary's numbers; its per-class means and summed matrix stay in summary.json
    assert set(view.cv_mean) == {"accuracy", "accuracy_std", "macro_f1", "auroc"}
    titles = [figure.title for figure in model_overview_figures((model,), tmp_path)]
    assert titles == ["Cross-validated accuracy per model", "Test accuracy per model"]


def test_numbers_keep_their_significant_digits():
    assert [format_number(v) for v in (1.0, 0.5, 0.8391, 240.0, 12345.6, 0.0001234, 3, 1417)] == [
        "1.00", "0.500", "0.839", "240", "12,346", "1.23e-04", "3", "1,417"]
    assert format_number(-1.1102230246251565e-16) == "0.00" == format_number(0.0)  # round-off, not a tiny value
    assert format_p(0.0004) == "<0.001" and format_p(0.0312) == "0.031" and format_p(None) == "–"
    assert format_estimate({"mean": 0.9, "ci_low": 0.85, "ci_high": 0.95}) == "0.900 [0.850, 0.950]"
    assert format_estimate({"value": 0.9}) == "0.900" and format_estimate(None) == "not available"
