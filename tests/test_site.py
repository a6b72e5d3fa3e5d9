"""Known-answer tests of the site probes on synthetic phantoms (pixel features, fast)."""

import numpy as np
import pytest

from audit.core.cache import hash_array
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


def test_within_label_permutations_survive_a_fold_left_with_one_source():
    """A label whose second source has two images: the folds hold one of them on each
    side, and a permutation can put both in one fold's test rows, leaving its training rows
    one source (it crashed site.embedding on a small confounded set). The p-value is still
    computed, and a source that the features name is still found."""
    label = np.repeat(["a", "b"], 24)
    source = np.array(["home"] * 22 + ["away"] * 2 + ["home"] * 12 + ["away"] * 12)
    x = (source == "away")[:, None] * 4.0 + np.random.default_rng(1).normal(size=(48, 3))
    patients = np.arange(48).astype(str)
    within, rows = within_label_skill(x, source, label, patients, n_permutations=99,
                                      n_bootstrap=20, seed=0)
    assert within.estimable and within.p_value is not None
    assert within.skill > 0.8 and within.p_value < 0.05
    assert [row["label"] for row in rows if row["skill"] is not None] == ["a", "b"]


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


def test_the_audited_model_is_shown_the_modified_pixels_under_their_own_identity(tmp_path):
    """The images shown in a mode are no manifest rows: a model that scores the manifest's
    rows from cached features (``CachedRows.covers``) must not take them for those rows."""
    dataset, splits = synth_data(confounding=1.0, traits=True, seed=0, n_per_class=6)
    context = make_context(dataset, splits, tmp_path, features=None,
                           site_features_backbone="audited")
    shown = []

    class Recorder:
        def embed(self, data, rows):
            shown.append(data)
            return np.zeros((len(rows), 2))

    context.models = {context.audited: Recorder()}
    rows = np.arange(0, len(dataset), 2)
    site_image._features(context, "lungs_removed", rows)
    assert len(shown[0]) == len(rows) and shown[0].data_key != dataset.data_key
    assert shown[0].data_key == hash_array(shown[0].images)


SMALL_UNBALANCED = {"site_a": 20, "site_b": 4, "site_c": 4, "site_d": 4}
"""The issue's small set: 32 images, one large source and three of 4 images each."""
MINORITY_CORNERS = {"site_b": "top_left", "site_c": "top_right", "site_d": "bottom_right"}


def _small_unbalanced(planted: bool, marker_value: int):
    """32 clean phantoms relabelled to sources 20/4/4/4 (interleaved over the labels); with
    ``planted``, each minority source's images carry a faint square in its own corner."""
    dataset, splits = synth_data(confounding=0.0, traits=False, seed=0, n_per_class=2)
    assert len(dataset) == sum(SMALL_UNBALANCED.values())
    order = np.argsort(np.arange(len(dataset)) % 8, kind="stable")  # spread labels over sources
    source = np.empty(len(dataset), dtype=object)
    source[order] = np.repeat(list(SMALL_UNBALANCED), list(SMALL_UNBALANCED.values()))
    images = dataset.images
    if planted:
        for name, corner in MINORITY_CORNERS.items():
            images = plant_marker(images, np.flatnonzero(source == name), corner=corner,
                                  value=marker_value)
    manifest = dataset.manifest.assign(source=source.astype(str))
    return type(dataset)(manifest=manifest, images=images, masks=dataset.masks,
                         has_mask=dataset.has_mask, manifest_hash=f"small-{planted}"), splits


def test_site_image_finds_a_source_signal_on_a_small_unbalanced_set(tmp_path):
    """Sources 20/4/4/4: the probe must not collapse to the large source (it once reported
    skill 0.00, CI 0.00-0.00, p = 1 here and passed)."""
    dataset, splits = _small_unbalanced(planted=True, marker_value=150)
    result = site_image.run(make_context(dataset, splits, tmp_path))
    assert result.status == Status.MEASURED
    assert fires(result)


def test_site_image_quiet_on_the_small_unbalanced_set_without_a_signal(tmp_path):
    dataset, splits = _small_unbalanced(planted=False, marker_value=150)
    result = site_image.run(make_context(dataset, splits, tmp_path))
    assert not fires(result)


def test_linear_probe_constant_predictor_is_not_estimable():
    """Features that carry nothing and a probe that answers one value: not a skill of 0."""
    x = np.zeros((12, 3))
    source = np.array(["a"] * 6 + ["b"] * 6)
    skill = linear_probe_skill(x, source, np.arange(12).astype(str), n_permutations=9,
                               n_bootstrap=10, seed=0)
    assert not skill.estimable and "constant predictor" in skill.reason
    assert skill.p_value is None
