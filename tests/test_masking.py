"""masking.raw_vs_lung on phantoms: a corner marker on COVID images only, and clean data."""

import numpy as np
import pytest

from probes.base import Status
from probes.checks import masking_raw_vs_lung
from tests.probe_fixtures import (
    default_threshold,
    fires,
    judged_status,
    make_context,
    synth_data,
    train_pair,
    train_pixel_model,
    with_marker,
)


def _covid_marked(seed: int):
    """Clean, faint-signal phantoms with a marker burned into every COVID image."""
    dataset, splits = synth_data(0.0, False, seed=seed, n_per_class=15, signal_strength=0.3)
    return with_marker(dataset, np.flatnonzero(dataset.manifest["label"] == "covid")), splits


def test_fires_when_raw_model_reads_a_marker_outside_the_lungs(tmp_path):
    context = train_pair(make_context(*_covid_marked(seed=0), tmp_path))
    result = masking_raw_vs_lung.run(context)
    assert result.status == Status.MEASURED
    assert result.details["covid_recall_raw"] == 1.0
    assert fires(result)
    assert result.metric > 0.3 and result.ci[0] > default_threshold("masking.raw_vs_lung")


def test_lung_masked_model_ignores_the_marker(tmp_path):
    """Burn the marker into non-COVID test images: the raw model calls them COVID, the
    lung-masked model's predictions do not change at all (the marker is off the lungs)."""
    dataset, splits = _covid_marked(seed=0)
    context = train_pair(make_context(dataset, splits, tmp_path))
    others = splits.test[dataset.labels[splits.test] != 0]
    fooled = with_marker(dataset, others)
    def covid_calls(key, data):
        return context.models[key].predict_proba(data, others).argmax(1) == 0

    raw_before, raw_after = covid_calls("pixels/raw", dataset), covid_calls("pixels/raw", fooled)
    assert raw_after.mean() > raw_before.mean() + 0.5
    masked = "pixels/lung_masked"
    assert np.array_equal(covid_calls(masked, dataset), covid_calls(masked, fooled))


@pytest.mark.parametrize("seed", [0, 1])
def test_quiet_on_clean_data(tmp_path, seed):
    context = train_pair(make_context(*synth_data(0.0, False, seed=seed, n_per_class=15),
                                      tmp_path))
    result = masking_raw_vs_lung.run(context)
    assert judged_status(result) == Status.PASS


def test_not_run_without_the_lung_masked_model(tmp_path):
    context = make_context(*synth_data(0.0, False, seed=0, n_per_class=3), tmp_path)
    context.models["pixels/raw"] = train_pixel_model(context.dataset, context.splits.train)
    result = masking_raw_vs_lung.run(context)
    assert result.status == Status.NOT_RUN
    assert "missing pixels/lung_masked (loaded: pixels/raw)" in result.reason


def test_leaves_out_test_rows_without_masks(tmp_path):
    dataset, splits = synth_data(0.0, False, seed=0, n_per_class=6)
    has_mask = np.ones(len(dataset), dtype=bool)
    has_mask[splits.test[:3]] = False
    dataset = dataset.with_masks(dataset.masks * has_mask[:, None, None], has_mask, "manifest")
    result = masking_raw_vs_lung.run(train_pair(make_context(dataset, splits, tmp_path)))
    assert result.details["n_test_rows"] == len(splits.test) - 3
    assert f"3 of {len(splits.test)} test rows have no lung mask" in result.notes[0]
