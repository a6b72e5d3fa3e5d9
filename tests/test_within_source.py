"""``performance.within_source``: known answers from models that read only the source or
only the disease, the source-only baseline, and the cases it cannot measure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from probes.checks import performance_within_source as within_source
from tests.probe_fixtures import fires, probe_context, stratified_splits
from tests.source_fixtures import ReadsDisease, ReadsSource, audited_context, coded_dataset

TABLE_KEYS = {"source", "n", "labels", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
              "target_recall", "baseline_accuracy", "chance"}


def audited(model, dataset, splits, **params):
    return audited_context(model, dataset, splits, n_bootstrap=200, **params)


@pytest.fixture(scope="module")
def confounded():
    dataset = coded_dataset(n_per_source=60, confounding=0.7, seed=1)
    return dataset, stratified_splits(dataset, seed=1)


def test_a_model_that_reads_only_the_source_loses_all_its_skill_within_a_source(confounded):
    dataset, splits = confounded
    model = ReadsSource.fit(dataset, splits.train)
    result = within_source.run(audited(model, dataset, splits))
    assert result.metric >= 0.9, result.summary
    assert result.ci[0] >= 0.8
    assert fires(result)
    details = result.details
    # it is the source-only baseline, so it scores exactly what knowing the source scores
    assert details["overall_accuracy"] == details["baseline_accuracy"]
    assert details["pooled_skill"] > 0.4  # pooled over sources it looks skilled
    assert "Knowing only the source scores" in result.summary


def test_a_model_that_reads_the_disease_keeps_its_skill_within_a_source(confounded):
    dataset, splits = confounded
    result = within_source.run(audited(ReadsDisease(), dataset, splits))
    assert abs(result.metric) < 0.15, result.summary
    assert not fires(result)
    assert result.details["overall_accuracy"] > result.details["baseline_accuracy"]
    assert result.details["model_target_auroc"] > result.details["baseline_target_auroc"]


def test_the_per_source_table_and_its_numbers(confounded):
    dataset, splits = confounded
    model = ReadsDisease()
    result = within_source.run(audited(model, dataset, splits))
    table = result.tables["per_source"]
    assert [row["source"] for row in table] == sorted(set(dataset.sources[splits.test]))
    predicted = model.predict_proba(dataset, splits.test).argmax(1)
    for row in table:
        assert TABLE_KEYS <= set(row)
        own = splits.test[dataset.sources[splits.test] == row["source"]]
        truth = dataset.labels[own]
        assert row["n"] == len(own) and row["labels"] == len(set(truth))
        assert row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"] + 1e-9
        mine = predicted[np.isin(splits.test, own)]
        covid = truth == 0
        assert row["target_recall"] == (pytest.approx(np.mean(mine[covid] == 0))
                                        if covid.any() else None)


@dataclass
class CallsOneLabelAnother(ReadsDisease):
    """Reads the disease without error, but calls every ``wrong`` image ``instead``."""

    wrong: int = 1
    instead: int = 2

    def predict_proba(self, dataset, rows):
        proba = super().predict_proba(dataset, rows)
        wrong = proba.argmax(1) == self.wrong
        swapped = proba[wrong]
        swapped[:, [self.wrong, self.instead]] = swapped[:, [self.instead, self.wrong]]
        proba[wrong] = swapped
        return proba


def test_within_source_skill_has_its_known_values():
    """Per source, with the k labels it holds: a label always called another has recall 0
    and every other label recall 1, so balanced accuracy (k - 1) / k and, rescaled so that
    chance (1 / k) is 0, skill (k - 2) / (k - 1); a source without that label keeps skill 1."""
    dataset = coded_dataset(n_per_source=60, confounding=0.5, label_noise=0.0, seed=2)
    splits = stratified_splits(dataset, seed=2)
    model = CallsOneLabelAnother()
    result = within_source.run(audited(model, dataset, splits))
    checked = 0
    for row in result.tables["per_source"]:
        own = dataset.labels[splits.test][dataset.sources[splits.test] == row["source"]]
        k = len(set(own))
        if k < 2 or row.get("skill") is None:
            continue
        expected = (k - 2) / (k - 1) if model.wrong in own else 1.0
        assert row["skill"] == pytest.approx(expected), (row, k)
        checked += 1
    assert checked >= 3


def test_a_source_without_target_images_has_no_target_recall():
    dataset = coded_dataset(n_per_source=60, confounding=0.8, seed=1)
    splits = stratified_splits(dataset, seed=1)
    result = within_source.run(audited(ReadsDisease(), dataset, splits, target_class="other"))
    recalls = {}
    for row in result.tables["per_source"]:
        own = dataset.label_names[splits.test][dataset.sources[splits.test] == row["source"]]
        assert (row["target_recall"] is None) == ("other" not in own)
        recalls[row["source"]] = row["target_recall"]
    assert None in recalls.values() and set(recalls.values()) != {None}


def test_not_run_when_no_source_holds_two_labels():
    dataset = coded_dataset(n_per_source=40, confounding=1.0, seed=2)
    splits = stratified_splits(dataset, seed=2)
    result = within_source.run(audited(ReadsDisease(), dataset, splits))
    assert result.status == "not_run"
    assert "at least two labels" in result.reason and "site0: 10 images, 1 label" in result.reason


def test_not_run_when_the_test_rows_come_from_one_source():
    dataset = coded_dataset(n_per_source=80, n_sources=1, confounding=0.0, seed=3)
    splits = stratified_splits(dataset, seed=3)
    result = within_source.run(audited(ReadsDisease(), dataset, splits))
    assert result.status == "not_run" and "one source (site0)" in result.reason


def test_not_run_when_sources_have_fewer_test_images_than_the_minimum(confounded):
    dataset, splits = confounded
    result = within_source.run(audited(ReadsDisease(), dataset, splits,
                                       within_source_min_images=1000))
    assert result.status == "not_run" and "within_source_min_images" in result.reason


def test_not_run_without_the_audited_model(confounded):
    dataset, splits = confounded
    result = within_source.run(probe_context(dataset, splits, audited="absent/raw"))
    assert result.status == "not_run" and "absent/raw" in result.reason
