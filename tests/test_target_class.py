"""``probes.target_class``: the one-class checks follow it on two-class data, and a run
refuses a target class its data holds no image of before any expensive step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from audit import pipeline
from audit.core.config import parse_config
from audit.core.errors import InputError
from audit.data.dataset import Dataset
from probes.base import Status
from probes.checks import ablation_class_size, masking_raw_vs_lung
from tests.data_fixtures import distinct_image, write_manifest, write_png
from tests.probe_fixtures import (
    fires,
    make_context,
    stratified_splits,
    synth_data,
    train_pair,
    with_marker,
)

TWO_CLASSES = ("normal", "other")


def _two_class_phantoms(seed: int = 0):
    """Phantoms of two classes only, normal and other, a marker on every 'other' image."""
    dataset, _ = synth_data(0.0, False, seed=seed, n_per_class=15, signal_strength=0.3)
    rows = np.flatnonzero(dataset.manifest["label"].isin(TWO_CLASSES))
    dataset = Dataset(manifest=dataset.manifest.iloc[rows].reset_index(drop=True),
                      images=dataset.images[rows], masks=dataset.masks[rows],
                      has_mask=dataset.has_mask[rows], mask_origin="manifest",
                      manifest_hash=f"{dataset.manifest_hash}-two-classes")
    dataset = with_marker(dataset, np.flatnonzero(dataset.manifest["label"] == "other"))
    return dataset, stratified_splits(dataset, seed)


def test_masking_follows_the_target_class_on_two_class_data(tmp_path):
    dataset, splits = _two_class_phantoms()
    result = masking_raw_vs_lung.run(train_pair(make_context(dataset, splits, tmp_path,
                                                             target_class="other")))
    assert result.status == Status.MEASURED
    n_other = int(np.sum(dataset.label_names[splits.test] == "other"))
    assert result.details["target_class"] == "other" and result.details["n_other"] == n_other
    assert result.details["other_recall_raw"] == 1.0  # the marker gives every one away
    assert fires(result)
    assert result.summary.startswith(f"On {n_other} 'other' test images, recall is 1.00")
    assert "'other' detections relied on what lies outside the lungs" in result.explanation
    assert "COVID" not in result.summary + result.explanation + result.metric_name


def test_masking_says_why_it_cannot_follow_a_class_the_data_lacks(tmp_path):
    dataset, splits = _two_class_phantoms()
    result = masking_raw_vs_lung.run(train_pair(make_context(dataset, splits, tmp_path)))
    assert result.status == Status.NOT_RUN
    assert result.reason == "no COVID image (probes.target_class) among the masked test rows"


def test_ablation_grows_only_the_classes_the_data_holds(tmp_path):
    dataset, splits = _two_class_phantoms()
    context = make_context(dataset, splits, tmp_path, target_class="other",
                           ablation_sizes=[5, 10], ablation_seeds=[0, 1])
    result = ablation_class_size.run(context)
    assert result.status == Status.MEASURED, result.reason
    # the absent covid and opacity are not planned (they made the check not_run before)
    assert result.details["sizes_per_class"] == [{"normal": 5}, {"normal": 10}]
    assert len(result.tables["runs"]) == 4 and "other_recall" in result.tables["runs"][0]
    assert result.details["n_other_test"] == int(np.sum(dataset.label_names[splits.test]
                                                        == "other"))
    assert "'other' fixed" in result.summary and "COVID" not in result.summary


def test_ablation_without_another_class_says_so(tmp_path):
    dataset, splits = _two_class_phantoms()
    only_other = replace(dataset, manifest=dataset.manifest.assign(label="other"))
    result = ablation_class_size.run(make_context(only_other, splits, tmp_path,
                                                  target_class="other"))
    assert result.status == Status.NOT_RUN
    assert "needs another class than 'other' (probes.target_class)" in result.reason


def _tb_manifest(folder):
    rows = [{"path": f"{label}_{i}.png", "label": label, "source": f"s{i % 2}"}
            for label in ("normal", "TB") for i in range(2)]
    for k, row in enumerate(rows):
        write_png(folder / row["path"], distinct_image(k, 32))
    return write_manifest(folder, rows)


def _config(manifest, **probes):
    return parse_config({"data": {"manifest": str(manifest), "label_map": {"TB": "opacity"}},
                         "probes": probes})


def test_a_run_refuses_a_target_class_the_data_lacks(tmp_path):
    manifest = _tb_manifest(tmp_path)
    with pytest.raises(InputError) as error:
        pipeline.check_target_class(_config(manifest))
    assert str(error.value) == (
        f"probes.target_class: 'covid' is not a class of {manifest}, whose labels map (through "
        "data.label_map) to opacity, normal; set probes.target_class to one of those: the "
        "class intervention.surround_swap, intervention.border_swap, masking.raw_vs_lung and "
        "ablation.class_size follow")


def test_a_run_refuses_it_before_writing_anything(tmp_path):
    config = _config(_tb_manifest(tmp_path), checks=["masking.raw_vs_lung"])
    with pytest.raises(InputError, match=r"^probes\.target_class: 'covid' is not a class .*"
                                         r"the class masking\.raw_vs_lung follows$"):
        pipeline.run_audit(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("probes", [
    {"target_class": "opacity"},  # TB, through data.label_map
    {"checks": ["data.confounding", "data.leakage"]},  # no enabled check follows a class
])
def test_a_target_class_the_data_holds_or_no_check_following_one_passes(tmp_path, probes):
    pipeline.check_target_class(_config(_tb_manifest(tmp_path), **probes))


def test_the_target_class_is_one_of_the_four_classes():
    assert parse_config({}).probes.target_class == "covid"
    with pytest.raises(InputError, match=r"probes\.target_class: Input should be 'covid', "
                                         r"'opacity', 'other' or 'normal' \(got 'TB'\)"):
        parse_config({"probes": {"target_class": "TB"}})
