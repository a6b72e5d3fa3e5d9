"""The paper's experiments from a config (models.experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from audit.core.config import load_config, parse_config
from audit.data.dataset import Splits
from models.experiments import run_training, scaled_class_sizes, subsample_per_class
from tests.models_fixtures import tiny_dataset

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "experiments"


def _splits(n: int) -> Splits:
    """Every 6th row is test; the rest alternate between two folds."""
    rows = np.arange(n)
    test, dev = rows[rows % 6 == 5], rows[rows % 6 != 5]
    half = [dev[dev % 2 == 0], dev[dev % 2 == 1]]
    return Splits(train=dev, test=test, folds=((half[0], half[1]), (half[1], half[0])), seed=0)


def test_subsample_keeps_fixed_classes_and_draws_without_replacement():
    dataset = tiny_dataset(n_per_class=6)
    rows = np.arange(len(dataset))
    picked = subsample_per_class(dataset, rows, {"opacity": 2, "normal": 3}, seed=0)
    counts = np.bincount(dataset.labels[picked], minlength=4)
    assert counts.tolist() == [6, 2, 6, 3] and len(set(picked)) == len(picked)
    assert np.array_equal(picked, subsample_per_class(dataset, rows, {"opacity": 2, "normal": 3}, 0))
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['flu'\]; expected some of covid"):
        subsample_per_class(dataset, rows, {"flu": 1}, seed=0)


def test_class_sizes_are_scaled_down_with_a_note():
    dataset = tiny_dataset(n_per_class=6)
    assert scaled_class_sizes(dataset, np.arange(24), [2, 4], "covid") == ([2, 4], None)
    sizes, note = scaled_class_sizes(dataset, np.arange(24), [1000, 2000], "covid")
    assert sizes == [3, 6] and "scaled to [3, 6]" in note and "6 training images" in note


def test_class_sizes_on_two_class_data_follow_the_classes_it_holds():
    """Normal vs other: the absent covid and opacity classes do not shrink the sizes."""
    dataset = tiny_dataset(n_per_class=6)
    two_class = np.flatnonzero(np.isin(dataset.label_names, ["normal", "other"]))
    assert scaled_class_sizes(dataset, two_class, [2, 4], "other") == ([2, 4], None)
    sizes, note = scaled_class_sizes(dataset, two_class, [6, 12], "other")
    assert sizes == [3, 6] and "other than other" in note and "6 training images" in note


def test_example_configs_are_valid_and_follow_the_paper():
    exp2 = load_config(EXAMPLES / "exp2_backbones.yaml").models
    assert sorted(exp2.backbones) == ["inceptionv3", "mobilenet", "mobilenetv2", "resnet50", "xception"]
    assert (exp2.learning_rate, exp2.dropout, exp2.epochs, exp2.unfreeze_blocks) == (1e-3, 0.3, 60, 0)
    exp3 = load_config(EXAMPLES / "exp3_mobilenetv2.yaml").models
    assert [step.param for step in exp3.sweep] == ["learning_rate", "dropout", "unfreeze_blocks"]
    assert exp3.final_sizes == [1000, 2000]


@pytest.mark.slow
def test_run_training_gives_the_paper_table_shapes(tmp_path):
    dataset = tiny_dataset(n_per_class=6)
    config = parse_config({"models": {
        "backbones": ["mobilenetv2"], "alpha": 0.35, "weights": "none", "input_modes": ["raw"],
        "epochs": 1, "batch_size": 8, "dense_units": 8, "augmented_views": 0,
        "sweep": [{"param": "dropout", "values": [0.3, 0.2]}], "final_sizes": [1, 3]},
        "data": {"image_size": 32}})
    rows = run_training(config, dataset, _splits(len(dataset)), tmp_path, cache=None)
    assert [row["experiment"] for row in rows] == ["cv", "sweep", "sweep", "final", "final"]
    cv = rows[0]["cv"]
    assert len(cv["folds"]) == 2 and set(cv["mean"]["per_class_recall"]) == set(dataset.classes)
    assert np.array(cv["mean"]["confusion_matrix"]).sum() == 20
    assert sum(row.get("best", False) for row in rows[1:3]) == 1
    final = rows[3]
    assert final["metrics"]["n"] == 4 and final["note"] is None and final["size"] == 1
    assert (tmp_path / "models").is_dir() and any((tmp_path / "models").rglob("model.keras"))
