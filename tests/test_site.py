"""Known-answer tests of the site probes on synthetic phantoms (pixel features, fast)."""

import numpy as np
import pytest

from audit.data.phantoms import plant_marker
from audit.gate import load_policy
from probes.base import Status
from probes.checks import site_embedding, site_image
from probes.linear_probe import linear_probe_skill, within_label_skill
from tests.probe_fixtures import (
    default_threshold,
    fires,
    judged_status,
    make_context,
    mobilenet_features,
    synth_data,
    train_pair,
)


def test_site_image_fires_on_confounded_sources_with_lungs_removed(tmp_path):
    dataset, splits = synth_data(confounding=1.0, traits=True, seed=0)
    result = site_image.run(make_context(dataset, splits, tmp_path))
    assert result.status == Status.MEASURED
    assert result.details["headline_input"] == "lungs_removed"
    assert fires(result)
    assert result.metric > 0.8 and result.ci[0] > 0.5
    assert result.figures["source_skill_by_input"]["labels"] == [
        "lungs_removed", "border_only", "raw", "lung_masked"]
    within = [row for row in result.tables["source_within_label"] if row["input"] == "raw"]
    assert all(row["skill"] is None and "single usable source" in row["reason"] for row in within)
    assert "cannot be told apart" in result.explanation


@pytest.mark.parametrize("seed", [0, 1])
def test_site_image_quiet_on_clean_control(tmp_path, seed):
    dataset, splits = synth_data(confounding=0.0, traits=False, seed=seed)
    result = site_image.run(make_context(dataset, splits, tmp_path, n_permutations=39))
    assert judged_status(result) == Status.PASS
    assert result.metric < default_threshold("site.image")


@pytest.mark.slow
def test_site_image_on_real_mobilenet_features(tmp_path):
    features = mobilenet_features()
    if features is None:
        pytest.skip("ImageNet MobileNetV2 weights not found under ../shared/weights")
    dataset, splits = synth_data(confounding=1.0, traits=True, seed=0, n_per_class=6)
    result = site_image.run(make_context(dataset, splits, tmp_path, features=features))
    assert fires(result)


def test_site_image_not_run_without_features(tmp_path):
    dataset, splits = synth_data(confounding=1.0, traits=True, seed=0, n_per_class=3)
    result = site_image.run(make_context(dataset, splits, tmp_path, features=None))
    assert result.status == Status.NOT_RUN
    assert "no frozen ImageNet feature extractor" in result.reason


def test_site_image_leaves_out_rows_without_masks(tmp_path):
    dataset, splits = synth_data(confounding=0.0, traits=False, seed=0, n_per_class=4)
    has_mask = np.arange(len(dataset)) % 2 == 0
    dataset = dataset.with_masks(dataset.masks * has_mask[:, None, None], has_mask, "manifest")
    result = site_image.run(make_context(dataset, splits, tmp_path, n_permutations=9))
    assert any(f"{len(dataset) // 2} rows without a lung mask" in note for note in result.notes)
    counts = {r["input"]: r["n"] for r in result.tables["skill_by_input"] if r["target"] == "source"}
    assert counts == {"lungs_removed": 32, "border_only": 64, "raw": 64, "lung_masked": 32}


def _marker_as_source(seed: int):
    """Clean phantoms; a corner marker on every other image, and 'source' = marker or not.

    Alternate rows (not a draw from ``default_rng(seed)``, which shares the generator's
    seed and came out correlated with the phantoms' own noise) split every label in half.
    """
    dataset, splits = synth_data(confounding=0.0, traits=False, seed=seed)
    marked = np.arange(len(dataset)) % 2 == 0
    manifest = dataset.manifest.assign(source=np.where(marked, "marked", "plain"))
    images = plant_marker(dataset.images, np.flatnonzero(marked))
    return type(dataset)(manifest=manifest, images=images, masks=dataset.masks,
                         has_mask=dataset.has_mask, manifest_hash="marked"), splits


def test_site_checks_find_a_planted_marker(tmp_path):
    dataset, splits = _marker_as_source(seed=0)
    context = train_pair(make_context(dataset, splits, tmp_path))
    image = site_image.run(context)
    assert fires(image)
    lungs_only = next(row for row in image.tables["skill_by_input"]
                      if row["input"] == "lung_masked" and row["target"] == "source")
    assert lungs_only["skill"] < default_threshold("site.image")  # the marker is off the lungs
    embedding = site_embedding.run(context)
    assert fires(embedding)


def test_site_embedding_fires_within_class_and_stays_quiet_on_clean(tmp_path):
    planted = train_pair(make_context(*synth_data(0.5, True, seed=0), tmp_path,
                                      n_permutations=39))
    assert fires(site_embedding.run(planted))
    clean = train_pair(make_context(*synth_data(0.0, False, seed=0), tmp_path,
                                    n_permutations=39))
    assert judged_status(site_embedding.run(clean)) == Status.PASS


def test_site_embedding_not_run_when_each_label_has_one_source(tmp_path):
    context = train_pair(make_context(*synth_data(1.0, True, seed=0, n_per_class=3), tmp_path))
    result = site_embedding.run(context)
    assert result.status == Status.NOT_RUN
    assert "label 'covid' has a single usable source (site_a)" in result.reason


def test_within_label_permutation_ignores_label_source_confounding():
    """Features carrying only the label, sources confounded with it: no within-label skill."""
    rng = np.random.default_rng(0)
    label = np.repeat(["a", "b"], 60)
    source = np.where(rng.random(120) < 0.8, label, np.where(label == "a", "b", "a"))
    x = (label == "a")[:, None] * 3.0 + rng.normal(size=(120, 4))
    patients = np.arange(120).astype(str)
    whole = linear_probe_skill(x, source, patients, n_permutations=0, n_bootstrap=50, seed=0)
    within, _ = within_label_skill(x, source, label, patients, n_permutations=39,
                                   n_bootstrap=50, seed=0)
    assert whole.skill > 0.4  # source looks predictable overall, through the label
    assert within.skill < default_threshold("site.embedding")
    assert within.p_value > load_policy().alpha


def test_linear_probe_reports_why_not_estimable():
    x = np.zeros((4, 2))
    one = linear_probe_skill(x, np.array(["s"] * 4), np.arange(4), n_permutations=0,
                             n_bootstrap=10, seed=0)
    assert not one.estimable and "only one value ('s')" in one.reason
    few = linear_probe_skill(x, np.array(["s", "s", "t", "t"]), np.array(["p", "p", "q", "q"]),
                             n_permutations=0, n_bootstrap=10, seed=0)
    assert "fewer than 2 patients" in few.reason
    assert np.isnan(one.skill) and one.p_value is None


def test_site_image_can_use_the_audited_models_embedding(tmp_path):
    dataset, splits = synth_data(confounding=1.0, traits=True, seed=0, n_per_class=6)
    context = make_context(dataset, splits, tmp_path, features=None,
                           site_features_backbone="audited")
    missing = site_image.run(context)
    assert missing.status == Status.NOT_RUN and "no model 'pixels/raw'" in missing.reason
    result = site_image.run(train_pair(context))
    assert fires(result)
