"""generalization.leave_one_source_out on phantoms: site-confounded, clean, and not estimable."""

import numpy as np
import pytest

from probes.base import Status
from probes.checks import generalization_leave_one_source_out as leave_one_source_out
from tests.probe_fixtures import (
    default_threshold,
    fires,
    judged_status,
    make_context,
    synth_data,
)


def test_fires_when_the_model_leans_on_site_traits(tmp_path):
    dataset, splits = synth_data(0.5, True, seed=0, signal_strength=0.5)
    result = leave_one_source_out.run(make_context(dataset, splits, tmp_path))
    assert fires(result)
    threshold = default_threshold("generalization.leave_one_source_out")
    assert result.metric > 0.3 and result.ci[0] > threshold
    table = result.tables["by_held_out_source"]
    assert [row["held_out"] for row in table] == ["site_a", "site_b", "site_c", "site_d"]
    assert all(row["n_external"] == 40 for row in table)
    # the chart of accuracies carries chance (a random one of the shared labels) as its line
    shared = [len(row["shared_labels"].split(", ")) for row in table]
    assert [row["chance"] for row in table] == [1 / n for n in shared]
    figure = result.figures["accuracy_by_held_out_source"]
    assert figure["reference"] == table[0]["chance"] and figure["metric_scale"] is False


@pytest.mark.parametrize("seed", [0, 1])
def test_quiet_on_clean_phantoms(tmp_path, seed):
    dataset, splits = synth_data(0.0, False, seed=seed, signal_strength=0.5)
    result = leave_one_source_out.run(make_context(dataset, splits, tmp_path))
    assert result.status == Status.MEASURED
    assert judged_status(result) == Status.PASS


def test_not_run_when_every_source_holds_one_label(tmp_path):
    context = make_context(*synth_data(1.0, True, seed=0, n_per_class=3), tmp_path)
    result = leave_one_source_out.run(context)
    assert result.status == Status.NOT_RUN
    assert "site_a: holds labels ['covid'], of which none also occur" in result.reason


def test_lists_a_single_label_source_as_not_estimable(tmp_path):
    dataset, splits = synth_data(0.0, False, seed=0, n_per_class=5)
    covid = dataset.manifest["label"] == "covid"
    manifest = dataset.manifest.assign(source=np.where(covid, "covid_only", dataset.sources))
    dataset = type(dataset)(manifest=manifest, images=dataset.images, masks=dataset.masks,
                            has_mask=dataset.has_mask, manifest_hash="covid_only")
    result = leave_one_source_out.run(make_context(dataset, splits, tmp_path))
    assert result.status == Status.MEASURED
    assert "Source 'covid_only' not estimable: holds labels ['covid']" in result.notes[0]
    row = result.tables["by_held_out_source"][0]
    assert row["held_out"] == "covid_only" and "accuracy_external" not in row
