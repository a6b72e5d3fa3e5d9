"""Training: both paths agree, every backbone trains and reloads, caching, spec from config."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from audit.core.cache import StageCache
from audit.core.config import ModelsConfig, parse_config
from models.features import (
    FeatureSpec,
    extract,
    frozen_features,
    rotate_images,
    view_angles,
    view_features,
)
from models.inputs import INPUT_MODES, ModeImages, apply_input_mode
from models.saving import load_trained
from models.train import (
    ClassifierSpec,
    array_batches,
    attach_cached_rows,
    balanced_class_weights,
    classifier_stage_inputs,
    spec_from_config,
    train_and_score,
    train_classifier,
)
from tests.models_fixtures import MOBILENET_V2_035, WEIGHTS_DIR, tiny_dataset

pytest.importorskip("keras")

ROWS = np.arange(16)
TRAIN, VAL = ROWS[ROWS % 4 != 3], ROWS[ROWS % 4 == 3]
TINY = ClassifierSpec(
    settings=ModelsConfig(weights="none", alpha=0.35, dense_units=16, epochs=3, batch_size=4,
                          augmented_views=0, rotation_degrees=0.0),
    backbone="mobilenetv2", input_mode="raw", image_size=32, seed=0, border_fraction=0.1)


def _weights() -> tuple[str, tuple[str, ...]]:
    """Real ImageNet weights when ../shared is present (meaningful features), else none."""
    if MOBILENET_V2_035.is_file():
        return "imagenet", (str(WEIGHTS_DIR),)
    return "none", ()


def _both_paths(spec: ClassifierSpec, dataset) -> dict:
    return {path: train_classifier(dataset, TRAIN, VAL, spec.with_settings(training_path=path))
            for path in ("cached", "end_to_end")}


@pytest.mark.slow
def test_cached_features_path_equals_end_to_end_fit():
    """Same data, seed, batches and initial head: the two paths give the same model."""
    weights, dirs = _weights()
    dataset = tiny_dataset()
    models = _both_paths(TINY.with_settings(weights=weights, weights_dirs=dirs, dropout=0.0),
                         dataset)
    cached, end_to_end = models["cached"], models["end_to_end"]
    assert cached.metadata["training_path"] == "cached"
    assert end_to_end.metadata["training_path"] == "end_to_end"
    for name in ("loss", "val_accuracy"):
        np.testing.assert_allclose(cached.metadata["history"][name],
                                   end_to_end.metadata["history"][name], atol=1e-4)
    difference = np.abs(cached.predict_proba(dataset, ROWS) - end_to_end.predict_proba(dataset, ROWS))
    assert difference.max() < 1e-4


@pytest.mark.slow
def test_paths_stay_close_with_dropout_and_unfrozen_blocks():
    """Seeded dropout draws the same masks in both paths; unfrozen blocks are trained on
    cached activations at the cut. Float noise only: close, not bit-equal."""
    dataset = tiny_dataset()
    models = _both_paths(TINY.with_settings(dropout=0.3, unfreeze_blocks=1), dataset)
    assert models["cached"].metadata["cut_layer"] == "block_16_project_BN"
    difference = np.abs(models["cached"].predict_proba(dataset, ROWS)
                        - models["end_to_end"].predict_proba(dataset, ROWS))
    assert difference.max() < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "size"), [
    ("mobilenet", 32), ("mobilenetv2", 32), ("resnet50", 32), ("inceptionv3", 75),
    ("xception", 71)])
def test_every_backbone_trains_saves_and_reloads(backbone, size, tmp_path):
    dataset = tiny_dataset(n_per_class=2, size=size)
    rows = np.arange(len(dataset))
    spec = replace(TINY.with_settings(alpha=1.0, epochs=1, augmented_views=1,
                                      rotation_degrees=10.0), backbone=backbone, image_size=size)
    trained = train_classifier(dataset, rows[rows % 2 == 0], rows[rows % 2 == 1], spec,
                               out_dir=tmp_path)
    assert trained.key == f"{backbone}/raw" and trained.metadata["n_train_examples"] == 8
    loaded = load_trained(tmp_path)
    assert loaded.last_conv_layer == trained.last_conv_layer
    assert loaded.identity == trained.identity
    assert loaded.metadata["weights_origin"] == "none"
    np.testing.assert_allclose(loaded.predict_proba(dataset, rows),
                               trained.predict_proba(dataset, rows), atol=1e-5)
    assert loaded.embed(dataset, rows).shape == (len(rows), 16)


@pytest.mark.slow
def test_trained_model_is_cached_and_masks_change_the_key(tmp_path):
    cache = StageCache(tmp_path / "cache")
    dataset = tiny_dataset()
    spec = replace(TINY.with_settings(epochs=1), input_mode="lung_masked")
    first = train_classifier(dataset, TRAIN, VAL, spec, cache)
    again = train_classifier(dataset, TRAIN, VAL, spec, cache)
    np.testing.assert_allclose(again.predict_proba(dataset, VAL), first.predict_proba(dataset, VAL))
    other_masks = dataset.with_masks(1 - dataset.masks, dataset.has_mask, "manifest")
    train_classifier(other_masks, TRAIN, VAL, spec, cache)
    assert [event.action for event in cache.events if event.stage == "classifier"] == [
        "computed", "reused", "computed"]


@pytest.mark.slow
def test_scores_and_embeddings_from_cached_features_equal_the_whole_models(tmp_path):
    """The layers above the cut on the features training cached give what the whole model
    gives on the images (masked input mode: the features must be those of the masked
    images); a dataset with other masks is read from its images."""
    cache = StageCache(tmp_path / "cache")
    dataset = tiny_dataset()
    spec = replace(TINY.with_settings(epochs=2), input_mode="lung_masked")
    trained = train_classifier(dataset, TRAIN, VAL, spec, cache)
    rows = np.array([5, 0, 11, 3, 14])
    other_masks = dataset.with_masks(1 - dataset.masks, dataset.has_mask, "manifest")
    whole = (trained.predict_proba(dataset, rows), trained.embed(dataset, rows),
             trained.predict_proba(other_masks, rows))
    attached = attach_cached_rows(trained, dataset, spec, cache)
    assert attached.cached_rows is not None
    np.testing.assert_allclose(attached.predict_proba(dataset, rows), whole[0], atol=1e-5)
    np.testing.assert_allclose(attached.embed(dataset, rows), whole[1], atol=1e-4)
    assert [event.action for event in cache.events if event.stage == "features"] == [
        "computed", "reused"]
    assert not attached.cached_rows.covers(other_masks)
    np.testing.assert_allclose(attached.predict_proba(other_masks, rows), whole[2])


@pytest.mark.slow
def test_scores_are_a_stage_of_their_rows_that_a_rerun_reads_without_the_classifier(
        tmp_path, monkeypatch):
    cache = StageCache(tmp_path / "cache")
    dataset = tiny_dataset()
    spec = TINY.with_settings(epochs=1)
    rows = np.array([5, 0, 11])
    proba = train_and_score(dataset, TRAIN, VAL, rows, spec, cache)
    trained = train_classifier(dataset, TRAIN, VAL, spec, cache)  # loaded from its stage
    np.testing.assert_allclose(proba, trained.predict_proba(dataset, rows), atol=1e-5)

    def no_loading(path):
        raise AssertionError(f"loaded the classifier in {path}")

    monkeypatch.setattr("models.train.load_trained", no_loading)
    again = train_and_score(dataset, list(TRAIN), list(VAL), list(rows), spec, cache)
    np.testing.assert_array_equal(again, proba)
    monkeypatch.undo()
    other_rows = train_and_score(dataset, TRAIN, VAL, rows[:2], spec, cache)
    np.testing.assert_array_equal(other_rows, proba[:2])
    assert [(event.stage, event.action) for event in cache.events
            if event.stage.startswith("classifier")] == [
        ("classifier", "computed"), ("classifier_scores", "computed"),
        ("classifier", "reused"),  # train_classifier above
        ("classifier_scores", "reused"),
        ("classifier", "reused"), ("classifier_scores", "computed")]


def _epoch_orders(spec: ClassifierSpec, n_epochs: int) -> list[list[int]]:
    """The row order of each epoch of one training's shuffled batches."""
    rows = np.arange(10)
    batches = array_batches(rows[:, None].astype(np.float32), rows, spec, shuffle=True)
    return [[int(v) for _, y in batches for v in y.numpy()] for _ in range(n_epochs)]


def test_batch_order_follows_the_spec_seed_not_tensorflows_global_seed():
    """A resumed run or a Ray worker trains in a fresh process; another test, the U-Net
    trainer or the user may have set TensorFlow's global seed in this one."""
    import tensorflow as tf

    tf.random.set_seed(1)
    first = _epoch_orders(TINY, 3)
    tf.random.set_seed(2)
    assert _epoch_orders(TINY, 3) == first
    assert len({tuple(order) for order in first}) == 3  # a new order every epoch
    assert all(sorted(order) == list(range(10)) for order in first)
    assert _epoch_orders(replace(TINY, seed=1), 3) != first


def test_balanced_class_weights_give_absent_classes_one():
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]), 4)
    assert weights == pytest.approx({0: 1.5, 1: 0.75, 2: 1.0, 3: 1.0})


def test_spec_from_config_holds_the_models_section_and_the_classifier_fields():
    config = parse_config({"data": {"image_size": 299}, "probes": {"border_fraction": 0.2},
                           "models": {"dropout": 0.5}})
    spec = spec_from_config(config, "xception", "lung_masked", 3)
    assert spec.settings is config.models
    assert (spec.backbone, spec.input_mode, spec.image_size, spec.seed, spec.border_fraction) == (
        "xception", "lung_masked", 299, 3, 0.2)
    assert spec.path == "cached" and spec.with_settings(training_path="end_to_end").path == "end_to_end"
    assert spec.with_settings(dropout=0.1).settings.dropout == 0.1 and spec.settings.dropout == 0.5
    with pytest.raises(ValueError, match="dropout"):
        spec.with_settings(dropout=1.5)


def _key(cache: StageCache, mode: str, **sections) -> dict:
    spec = spec_from_config(parse_config(sections), "mobilenetv2", mode, 0)
    rows = np.arange(4)
    return classifier_stage_inputs(tiny_dataset(), rows, rows, spec, cache)


@pytest.mark.parametrize("mode", ["raw", "lung_masked", "lungs_removed"])
def test_probe_settings_and_the_grid_do_not_change_a_classifiers_key(mode, tmp_path):
    cache = StageCache(tmp_path)
    base = _key(cache, mode)
    assert _key(cache, mode, probes={"border_fraction": 0.3, "n_bootstrap": 7}) == base
    assert _key(cache, mode, models={"seeds": [0, 1], "cross_validate": False,
                                     "backbones": ["resnet50"], "final_sizes": [10]}) == base
    assert _key(cache, mode, models={"dropout": 0.1}) != base


def test_the_border_band_is_in_the_key_of_border_only_classifiers_only(tmp_path):
    cache = StageCache(tmp_path)
    base = _key(cache, "border_only")
    assert _key(cache, "border_only", probes={"border_fraction": 0.3}) != base
    assert _key(cache, "border_only", probes={"n_bootstrap": 7}) == base


def test_empty_validation_rows_are_refused():
    with pytest.raises(ValueError, match="needs training and validation rows, got 12 and 0"):
        train_classifier(tiny_dataset(), TRAIN, np.array([], dtype=int), TINY)


def test_view_features_rotate_each_view_as_the_whole_array_would(tmp_path):
    import keras

    # More images than one extraction chunk, so views are rotated chunk by chunk.
    images = np.random.default_rng(0).integers(0, 256, (150, 24, 24), dtype=np.uint8)
    inputs = keras.Input((24, 24, 3))
    extractor = keras.Model(inputs, keras.layers.Flatten()(
        keras.layers.AveragePooling2D(4)(inputs)))  # coarse pixels: rotation shows
    spec = FeatureSpec("mobilenetv2", weights="none", input_size=24, build=lambda: extractor)
    features = view_features(images, n_views=2, degrees=20.0, seed=3, spec=spec,
                             cache=StageCache(tmp_path))
    angles = view_angles(2, len(images), 20.0, seed=3)
    expected = np.stack([extract(extractor, rotate_images(images, angles[view]), 24)
                         for view in range(2)])
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    assert not np.allclose(features[0], features[1])
    assert not np.allclose(features[0], extract(extractor, images, 24))


@pytest.mark.parametrize("mode", INPUT_MODES)
def test_mode_images_mask_the_rows_they_are_asked_for(mode):
    dataset = tiny_dataset()
    shown = ModeImages(dataset, mode, border_fraction=0.2)
    rows = np.array([3, 0, 7])
    expected = apply_input_mode(dataset.images, mode, dataset.masks, 0.2)
    np.testing.assert_array_equal(shown[rows], expected[rows])
    np.testing.assert_array_equal(shown[2:6], expected[2:6])
    assert (len(shown), shown.shape) == (len(dataset), dataset.images.shape)


def test_mode_images_key_follows_what_the_mode_shows():
    dataset = tiny_dataset()
    other_masks = dataset.with_masks(1 - dataset.masks, dataset.has_mask, "manifest")
    assert ModeImages(other_masks, "raw").key == ModeImages(dataset, "raw").key
    assert ModeImages(other_masks, "lung_masked").key != ModeImages(dataset, "lung_masked").key
    assert ModeImages(dataset, "lung_masked").key != ModeImages(dataset, "lungs_removed").key
    assert (ModeImages(dataset, "border_only", 0.1).key
            != ModeImages(dataset, "border_only", 0.2).key)
    assert ModeImages(dataset, "raw", 0.1).key == ModeImages(dataset, "raw", 0.2).key


@pytest.mark.slow
def test_the_site_probes_read_the_features_a_cached_classifier_trained_on(tmp_path):
    """``audit.pipeline.mode_feature_service`` keys a mode's features as the cached
    classifiers' training features of the run's first backbone: a mode the grid trained on
    is read back (no forward pass), another is computed, and both are the frozen
    backbone's pooled output of every row shown in that mode."""
    from audit.pipeline import mode_feature_service

    cache = StageCache(tmp_path / "cache")
    dataset = tiny_dataset()
    config = parse_config({"data": {"image_size": TINY.image_size},
                           "models": {"weights": "none", "alpha": TINY.settings.alpha}})
    spec = replace(spec_from_config(config, "mobilenetv2", "lung_masked", 0),
                   settings=TINY.settings)
    train_classifier(dataset, TRAIN, VAL, spec, cache)
    mode_features = mode_feature_service(config, dataset, cache)
    events = len(cache.events)
    shown = {mode: mode_features(mode) for mode in ("lung_masked", "lungs_removed")}
    assert [(event.stage, event.action) for event in cache.events[events:]] == [
        ("features", "reused"), ("features", "computed")]
    frozen = FeatureSpec("mobilenetv2", "none", TINY.settings.alpha, TINY.image_size)
    for mode, features in shown.items():
        expected = frozen_features(ModeImages(dataset, mode, spec.border_fraction), frozen)
        np.testing.assert_allclose(features, expected, atol=1e-5)
