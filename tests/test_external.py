"""``generalization.external`` and the ``data.external`` manifests it reads: known answers,
the cases it cannot run, and bad manifests named before any work."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import yaml

from audit import pipeline
from audit.core.cache import StageCache
from audit.core.config import SynthConfig, load_config, parse_config
from audit.core.errors import InputError
from audit.core.result import CheckResult
from audit.data.phantoms import generate_phantoms
from audit.gate import check_permutations, load_policy
from probes.checks import generalization_external as external_check
from tests.probe_fixtures import fires, probe_context, stratified_splits
from tests.source_fixtures import ReadsDisease, ReadsSource, audited_context, coded_dataset

TABLE_KEYS = {"source", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
              "internal_accuracy", "p_value"}


@pytest.fixture(scope="module")
def internal():
    dataset = coded_dataset(n_per_source=60, confounding=0.7, seed=1)
    return dataset, stratified_splits(dataset, seed=1)


def other_hospitals(n_sources: int = 2, seed: int = 5):
    """Sources the internal set lacks: corners it never saw, the same disease patch."""
    return coded_dataset(n_per_source=50, n_sources=n_sources, confounding=0.0, seed=seed,
                         source_prefix="ext", first_source=4)


def audited(model, internal, external, **params):
    return audited_context(model, *internal, external=external, **params)


def test_a_model_that_reads_the_hospital_loses_accuracy_on_new_ones_and_fires(internal):
    model = ReadsSource.fit(internal[0], internal[1].train)
    result = external_check.run(audited(model, internal, [other_hospitals()]))
    assert result.metric > 0.3 and result.ci[0] > 0.1, result.summary
    assert result.p_value < 0.01
    assert fires(result)
    table = result.tables["per_source"]
    assert [row["source"] for row in table] == ["ext0", "ext1"]
    for row in table:
        assert TABLE_KEYS <= set(row)
        assert row["accuracy"] < row["internal_accuracy"] and row["p_value"] < 0.05


def test_a_model_that_reads_the_disease_keeps_its_accuracy_and_passes(internal):
    result = external_check.run(audited(ReadsDisease(), internal, [other_hospitals()]))
    assert abs(result.metric) < 0.1 and result.p_value > 0.05, result.summary
    assert not fires(result)


def test_several_manifests_are_pooled_and_each_source_gets_a_row(internal):
    sets = [other_hospitals(1, seed=6), coded_dataset(n_per_source=30, n_sources=1, seed=7,
                                                      source_prefix="far", first_source=5)]
    result = external_check.run(audited(ReadsDisease(), internal, sets))
    assert [row["source"] for row in result.tables["per_source"]] == ["ext0", "far0"]
    assert result.details["n_external"] == sum(len(s) for s in sets)
    assert [m["key"] for m in result.details["manifests"]] == ["data.external[0]",
                                                               "data.external[1]"]


def test_labels_the_internal_test_rows_lack_are_left_out_with_a_note(internal):
    dataset, splits = internal
    test = splits.test[dataset.label_names[splits.test] != "covid"]  # no covid test rows
    splits = replace(splits, test=test)
    outside = other_hospitals()
    result = external_check.run(audited(ReadsDisease(), (dataset, splits), [outside]))
    assert "covid" not in result.details["shared_labels"]
    assert result.details["n_external"] == int((outside.label_names != "covid").sum())
    assert any("left out" in note for note in result.notes)


def test_a_source_the_audited_data_also_holds_is_noted(internal):
    same_name = coded_dataset(n_per_source=20, n_sources=1, seed=8, first_source=4)
    result = external_check.run(audited(ReadsDisease(), internal, [same_name]))
    assert any("site0" in note and "may not be external" in note for note in result.notes)


def test_not_run_without_an_external_manifest(internal):
    result = external_check.run(audited(ReadsDisease(), internal, []))
    assert result.status == "not_run" and "data.external" in result.reason


def write_manifest(tmp_path, seed: int = 3, bad_row: bool = False):
    manifest = generate_phantoms(SynthConfig(n_per_class=2, n_sources=2, image_size=64,
                                             confounding=0.0, seed=seed), tmp_path / "ext")
    if bad_row:
        table = pd.read_csv(manifest)
        extra = table.iloc[:1].assign(path="missing.png")
        pd.concat([table, extra]).to_csv(manifest, index=False)
    return manifest


def test_external_manifests_are_read_validated_and_quarantined_like_the_main_one(tmp_path):
    manifest = write_manifest(tmp_path, bad_row=True)
    config = parse_config({"data": {"external": [str(manifest)], "image_size": 32}})
    (loaded,) = pipeline.load_external(config, StageCache(tmp_path / "cache"))
    assert len(loaded) == 16 and loaded.image_size == 32
    assert list(loaded.quarantined["reason"]) == ["missing file"]


def test_external_paths_resolve_against_the_config_folder(tmp_path):
    manifest = write_manifest(tmp_path)
    config_file = tmp_path / "audit.yaml"
    config_file.write_text(yaml.safe_dump({"data": {"external": ["ext/manifest.csv"]}}))
    assert load_config(config_file).data.external == [manifest]


@pytest.mark.parametrize("problem", ["missing", "no_columns"])
def test_a_bad_external_manifest_is_an_input_error_naming_it(tmp_path, problem):
    manifest = tmp_path / "other.csv"
    if problem == "no_columns":
        manifest.write_text("path,label\nimg.png,covid\n")
    config = parse_config({"data": {"external": [str(manifest)]}})
    with pytest.raises(InputError, match=rf"data.external: .*{manifest}"):
        pipeline.load_external(config, StageCache(tmp_path / "cache"))
    if problem == "missing":  # refused before any work
        with pytest.raises(InputError, match=rf"data.external: {manifest}: missing file"):
            pipeline._start_run(config, tmp_path / "run", None)


def fewest_permutations(policy, checks) -> int:
    with pytest.raises(InputError) as refused:
        check_permutations(policy, checks, 1)
    return int(str(refused.value).split("use at least ")[1].split()[0])


def test_without_external_data_the_check_joins_no_permutation_family():
    """A run without data.external is not asked for more permutations because of a check
    that cannot run; with external manifests the check joins the Holm family."""
    policy = load_policy()
    without = pipeline.runnable_checks(parse_config({}))
    with_external = pipeline.runnable_checks(parse_config({"data": {"external": ["x.csv"]}}))
    assert "generalization.external" not in without
    assert "generalization.external" in with_external
    assert fewest_permutations(policy, with_external) > fewest_permutations(policy, without)


@pytest.mark.parametrize(("a", "b", "significant"), [
    ((90, 100), (60, 100), True), ((60, 100), (90, 100), False),  # one-sided: A above B
    ((10, 10), (5, 5), False), ((0, 10), (0, 5), False),  # all agree: no z, p = 1
])
def test_the_two_proportion_z_test_is_one_sided_and_survives_agreement(a, b, significant):
    from probes.stats import two_proportion_ztest

    test = two_proportion_ztest(*a, *b)
    assert test["difference"] == pytest.approx(a[0] / a[1] - b[0] / b[1])
    assert test["ci_low"] <= test["difference"] <= test["ci_high"]
    assert (test["p_value"] < 0.05) == significant
    if a[0] / a[1] == b[0] / b[1] in (0.0, 1.0):
        assert test["p_value"] == 1.0


def test_another_external_manifest_recomputes_only_the_checks_that_read_it(tmp_path,
                                                                           monkeypatch):
    """The probe stages are keyed on the external data only where a check needs it."""
    calls = []

    class Counting:
        def __init__(self, check_id):
            self.check_id = check_id

        def run(self, context):
            calls.append(self.check_id)
            return CheckResult(check_id=self.check_id, title=self.check_id, metric=0.0)

    monkeypatch.setattr(pipeline, "get_check", Counting)
    dataset = coded_dataset(n_per_source=8, n_sources=2, seed=9)
    splits = stratified_splits(dataset, seed=9)
    cache = StageCache(tmp_path / "cache")
    enabled = ["data.confounding", "generalization.external"]
    for external in ([other_hospitals(1, seed=1)], [other_hospitals(1, seed=2)]):
        context = probe_context(dataset, splits, external=tuple(external))
        pipeline.run_checks(context, enabled, cache, tmp_path / "run")
    assert calls == ["data.confounding", "generalization.external", "generalization.external"]
