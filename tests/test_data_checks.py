"""data.confounding and data.leakage: planted cases fire, clean ones do not, odd data never crashes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from audit.core.config import CLASSES, SynthConfig
from audit.data.dataset import Dataset, Splits
from audit.data.phantoms import synthetic_dataset
from audit.data.splits import make_splits
from probes.base import ProbeContext, Status
from probes.checks import data_confounding, data_leakage
from probes.registry import get_check
from tests.probe_fixtures import probe_context


def context_for(dataset: Dataset, splits: Splits, tmp_path) -> ProbeContext:
    return probe_context(dataset, splits)


def phantoms(confounding: float, seed: int = 0, n_per_class: int = 4) -> Dataset:
    return synthetic_dataset(SynthConfig(n_per_class=n_per_class, image_size=64,
                                         confounding=confounding, seed=seed))


def table_only(labels, sources) -> Dataset:
    """A dataset whose images do not matter: blank 8 px squares."""
    manifest = pd.DataFrame({"path": [f"img{i}.png" for i in range(len(labels))], "label": labels,
                             "source": sources, "patient_id": [f"p{i}" for i in range(len(labels))],
                             "view": "PA"})
    return Dataset(manifest=manifest, images=np.zeros((len(labels), 8, 8), np.uint8))


def no_splits(n: int) -> Splits:
    rows = np.arange(n)
    return Splits(train=rows, test=rows[:0], folds=((rows, rows[:0]),), seed=0)


def confounding(dataset: Dataset, tmp_path):
    return data_confounding.run(context_for(dataset, no_splits(len(dataset)), tmp_path))


def test_registry_finds_both_checks():
    assert get_check("data.confounding") is data_confounding
    assert get_check("data.leakage") is data_leakage


def test_fully_confounded_phantoms_give_cramers_v_one(tmp_path):
    result = confounding(phantoms(1.0), tmp_path)
    assert result.status == Status.MEASURED and result.metric_name == "Cramér's V"
    assert result.metric == pytest.approx(1.0)
    assert result.p_value < 1e-20
    assert len(result.notes) == 4 and all("not estimable" in note for note in result.notes)
    assert {row["per_source_metrics"] for row in result.tables["per_source"]} == {
        "not estimable (single label)"}
    figure = result.figures["label_by_source"]
    assert figure["kind"] == "heatmap" and np.trace(np.array(figure["values"])) == 4 * 16
    assert "Cramér's V = 1.00" in result.summary
    json.dumps(result.to_dict())


def test_balanced_phantoms_give_cramers_v_zero(tmp_path):
    result = confounding(phantoms(0.0), tmp_path)
    assert result.metric == pytest.approx(0.0, abs=1e-12)
    assert result.p_value == pytest.approx(1.0)
    assert result.notes == []
    assert result.tables["label_by_source"][0] == {"label": "covid", "site_a": 4, "site_b": 4,
                                                  "site_c": 4, "site_d": 4}


def test_partial_confounding_lies_between(tmp_path):
    result = confounding(phantoms(0.5), tmp_path)
    assert 0.3 < result.metric < 0.8 and result.p_value < 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_independent_labels_and_sources_are_not_flagged(tmp_path, seed):
    rng = np.random.default_rng(seed)
    dataset = table_only(rng.choice(CLASSES, 400), rng.choice(["a", "b", "c", "d"], 400))
    result = confounding(dataset, tmp_path)
    assert result.metric < 0.15
    assert result.p_value > 0.05


def test_a_single_label_source_is_flagged_not_estimable(tmp_path):
    labels = ["covid"] * 10 + ["normal"] * 5 + ["covid"] * 5
    sources = ["hospital"] * 10 + ["public"] * 10
    result = confounding(table_only(labels, sources), tmp_path)
    assert np.isfinite(result.metric) and result.metric > 0
    assert result.notes == ["Source 'hospital' holds a single label: per-source metrics (accuracy "
                            "within the source, leave-one-source-out scores) are not estimable "
                            "for it."]
    by_source = {row["source"]: row for row in result.tables["per_source"]}
    assert by_source["public"]["per_source_metrics"] == "estimable"
    assert by_source["hospital"]["majority_share"] == 1.0


@pytest.mark.parametrize(("labels", "sources", "reason"), [
    (["covid", "normal"] * 5, ["only"] * 10, "single source"),
    (["covid"] * 10, ["a", "b"] * 5, "single label"),
])
def test_degenerate_tables_are_not_run_rather_than_crashing(tmp_path, labels, sources, reason):
    result = confounding(table_only(labels, sources), tmp_path)
    assert result.status == Status.NOT_RUN
    assert reason in result.reason and result.metric is None


def leakage(dataset: Dataset, splits: Splits, tmp_path):
    return data_leakage.run(context_for(dataset, splits, tmp_path))


@pytest.fixture(scope="module")
def clean():
    dataset = phantoms(0.0, n_per_class=3)
    return dataset, make_splits(dataset, test_fraction=0.25, n_folds=3, seed=0)


@pytest.mark.parametrize("seed", range(3))
def test_grouped_splits_of_distinct_phantoms_do_not_leak(tmp_path, seed):
    dataset = phantoms(0.0, seed=seed, n_per_class=3)
    splits = make_splits(dataset, test_fraction=0.25, n_folds=3, seed=seed)
    result = leakage(dataset, splits, tmp_path)
    assert result.metric == 0 and result.p_value is None
    assert result.tables["leaking_pairs"] == []
    assert result.summary.startswith("0 of ")


def test_an_image_copied_from_train_into_test_is_counted(tmp_path, clean):
    dataset, splits = clean
    source, target = splits.train[0], splits.test[0]
    images = dataset.images.copy()
    images[target] = np.clip(dataset.images[source].astype(int) + 4, 0, 255)  # re-exposed copy
    result = leakage(replace(dataset, images=images), splits, tmp_path)
    assert result.metric == 1
    (pair,) = result.tables["leaking_pairs"]
    assert (pair["test_row"], pair["train_row"]) == (target, source)
    assert pair["reason"].startswith("near-duplicate")
    assert result.details["near_duplicate"] == 1 and result.details["same_patient"] == 0


def test_a_patient_in_both_parts_is_counted(tmp_path, clean):
    dataset, splits = clean
    manifest = dataset.manifest.copy()
    manifest.loc[splits.test[:2], "patient_id"] = manifest.loc[splits.train[0], "patient_id"]
    result = leakage(replace(dataset, manifest=manifest), splits, tmp_path)
    assert result.metric == 2
    assert {row["reason"] for row in result.tables["leaking_pairs"]} == {"same patient"}
    assert {row["train_row"] for row in result.tables["leaking_pairs"]} == {splits.train[0]}
    assert "2 share a patient" in result.summary


def test_duplicates_within_one_part_are_not_leakage(tmp_path, clean):
    dataset, splits = clean
    images = dataset.images.copy()
    images[splits.train[1]] = images[splits.train[0]]
    images[splits.test[1]] = images[splits.test[0]]
    assert leakage(replace(dataset, images=images), splits, tmp_path).metric == 0
