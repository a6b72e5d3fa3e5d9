"""The U-Net lung segmenter: post-processing, flags, weights, training, caching, modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.core.cache import StageCache
from audit.core.config import AuditConfig, SegmentationConfig
from audit.core.errors import InputError, WeightsUnavailableError
from models import segment, unet, unet_training
from models._sm import import_segmentation_models
from models.segment import (
    build_unet,
    dice_iou,
    mask_quality_flags,
    postprocess_mask,
    predict_masks,
    segment_dataset,
    segment_manifest,
    train_unet,
)
from tests.unet_fixtures import MOBILENET_V2_FILE, lung_phantoms, phantom_dataset

TINY = SegmentationConfig(image_size=64, epochs=1, batch_size=4, patience=1)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: the tiny U-Net is trained once, later tests reuse it."""
    return StageCache(tmp_path_factory.mktemp("unet-cache"))


# --------------------------------------------------------------------------- pure helpers


def test_postprocess_keeps_two_largest_components_and_fills_holes():
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:28, 3:13] = 1  # left lung
    mask[10:14, 6:9] = 0  # a hole in it
    mask[4:28, 18:29] = 1  # right lung
    mask[1, 15] = 1  # speck
    cleaned = postprocess_mask(mask)
    assert cleaned.dtype == np.uint8
    assert cleaned[1, 15] == 0
    assert cleaned[12, 7] == 1
    assert cleaned.sum() == 24 * 10 + 24 * 11


def test_postprocess_empty_mask_stays_empty():
    assert postprocess_mask(np.zeros((8, 8))).sum() == 0


def test_mask_quality_flags_name_the_reason():
    masks = np.zeros((3, 10, 10), dtype=np.uint8)
    masks[1, :5] = 1  # 50%
    masks[2, :9] = 1  # 90%
    assert mask_quality_flags(masks, 0.08, 0.65) == ["lung area 0% < 8%", "", "lung area 90% > 65%"]


def test_dice_iou_known_values():
    truth = np.zeros((2, 4, 4), dtype=np.uint8)
    truth[:, :2] = 1  # 8 pixels
    predicted = truth.copy()
    predicted[1] = 0
    predicted[1, :1] = 1  # 4 pixels, all inside
    dice, iou = dice_iou(predicted, truth)
    np.testing.assert_allclose(dice, [1.0, 2 * 4 / 12])
    np.testing.assert_allclose(iou, [1.0, 4 / 8])


# --------------------------------------------------------------------------- model and weights


def test_build_unet_maps_gray_images_to_probabilities():
    model = build_unet("mobilenetv2", "none", 64)
    images = lung_phantoms(2, 64)[0].astype(np.float32)[..., None]
    output = np.asarray(model(images))
    assert output.shape == (2, 64, 64, 1)
    assert np.all((output >= 0) & (output <= 1))


def test_build_unet_rejects_size_not_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32, got 100"):
        build_unet(image_size=100)


def test_imagenet_download_failure_says_how_to_supply_a_file(monkeypatch):
    sm = import_segmentation_models()

    def offline_unet(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/weights.h5")

    monkeypatch.setattr(sm, "Unet", offline_unet)
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded.*URL fetch failure"
                       ".*path of a local Keras weights file"):
        build_unet("mobilenetv2", "imagenet", 64)


def test_local_weights_missing_file_and_wrong_encoder(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_unet("mobilenetv2", str(tmp_path / "nope.h5"), 64)
    with pytest.raises(InputError, match="'mobilenetv2' only, got encoder 'resnet18'"):
        build_unet("resnet18", str(tmp_path / "nope.h5"), 64)


@pytest.mark.skipif(not MOBILENET_V2_FILE.is_file(), reason="../shared weights absent")
def test_local_mobilenetv2_file_fills_all_104_encoder_layers():
    import keras

    filled = unet._copy_encoder_weights(
        unet._sm_unet("mobilenetv2", "none", 64, unet.DECODER_FILTERS), "mobilenetv2", MOBILENET_V2_FILE, 64)
    assert filled == 104
    model = build_unet("mobilenetv2", str(MOBILENET_V2_FILE), 64)
    source = keras.applications.MobileNetV2(include_top=False, weights=str(MOBILENET_V2_FILE),
                                            input_shape=(64, 64, 3))
    inner = model.get_layer(index=-1)
    for name in ("Conv1", "block_16_project", "Conv_1_bn"):
        for ours, theirs in zip(inner.get_layer(name).get_weights(),
                                source.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(ours, theirs)


# --------------------------------------------------------------------------- training and cache


def test_train_unet_splits_by_patient_and_reports_quality(shared_cache):
    dataset = phantom_dataset()
    result = train_unet(dataset, TINY, shared_cache)
    val_patients = set(dataset.groups[result.val_rows])
    train_patients = set(dataset.groups) - val_patients
    assert val_patients and train_patients and not val_patients & train_patients
    quality = result.quality
    assert quality["n_val"] == result.val_rows.size
    assert quality["n_train"] + quality["n_val"] == len(dataset)
    assert set(quality["per_source"]) <= {"site_a", "site_b"}
    assert 0 <= quality["dice"]["ci_low"] <= quality["dice"]["mean"] <= quality["dice"]["ci_high"] <= 1
    assert quality["measured_at"] == 64


def test_train_unet_rerun_reuses_the_cached_stage(shared_cache, monkeypatch):
    dataset = phantom_dataset()
    first = train_unet(dataset, TINY, shared_cache)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached U-Net should have been reused")

    monkeypatch.setattr(unet_training, "_fit", no_training)
    again = train_unet(dataset, TINY, shared_cache)
    assert again.quality == first.quality
    assert shared_cache.events[-1].action == "reused"
    weights = [np.asarray(w) for w in again.model.weights[:3]]
    for ours, theirs in zip(weights, first.model.weights[:3], strict=True):
        np.testing.assert_array_equal(ours, np.asarray(theirs))


def test_train_unet_writes_weights_and_quality_to_out_dir(shared_cache, tmp_path):
    train_unet(phantom_dataset(), TINY, shared_cache, out_dir=tmp_path)
    assert (tmp_path / "unet.weights.h5").is_file()
    assert (tmp_path / "quality.json").is_file()


def test_predict_masks_resizes_to_the_images_side(shared_cache):
    model = train_unet(phantom_dataset(), TINY, shared_cache).model
    images = lung_phantoms(3, 96, seed=5)[0]
    masks = predict_masks(model, images, batch_size=2)
    assert masks.shape == (3, 96, 96) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}


@pytest.mark.slow
def test_a_few_epochs_segment_phantoms_well(tmp_path):
    config = SegmentationConfig(image_size=64, epochs=8, batch_size=4, patience=8)
    result = train_unet(phantom_dataset(n=48), config, StageCache(tmp_path))
    # Predicting every pixel as lung scores Dice ~0.4 here. A random encoder, 8 epochs of 7
    # steps: 0.985 and 0.986 at seeds 0 and 1 (0.51-0.77 before batch-norm momentum 0.9,
    # when inference statistics lagged), so 0.9 tests learning with a margin.
    assert result.quality["dice"]["mean"] > 0.9


# --------------------------------------------------------------------------- modes


def _config(source: str) -> SegmentationConfig:
    return SegmentationConfig.model_validate({**TINY.model_dump(), "source": source})


def test_manifest_mode_reports_rows_without_mask():
    with_mask = np.arange(24) % 3 != 0
    dataset, report = segment_dataset(phantom_dataset(with_mask=with_mask), _config("manifest"), None)
    np.testing.assert_array_equal(dataset.has_mask, with_mask)
    assert dataset.mask_origin == "manifest"
    assert report["quality"] is None and report["predicted_rows"] == []
    missing = [item["row"] for item in report["rows_without_mask"]]
    assert missing == np.flatnonzero(~with_mask).tolist()
    assert "segmentation.source is 'manifest'" in report["rows_without_mask"][0]["reason"]


def test_auto_mode_with_every_mask_present_does_not_train(monkeypatch):
    monkeypatch.setattr(segment, "train_unet", lambda *a, **k: pytest.fail("trained"))
    source = phantom_dataset()
    dataset, report = segment_dataset(source, _config("auto"), None)
    np.testing.assert_array_equal(dataset.masks, source.masks)
    assert report["origin"] == "manifest" and report["row_origin"] == {"manifest": 24}


def test_unet_mode_predicts_every_row_and_caches_masks(shared_cache):
    dataset, report = segment_dataset(phantom_dataset(), _config("unet"), shared_cache)
    assert report["predicted_rows"] == list(range(24)) and dataset.mask_origin == "unet"
    segment_dataset(phantom_dataset(), _config("unet"), shared_cache)
    assert shared_cache.events[-1].stage == "unet_masks"
    assert shared_cache.events[-1].action == "reused"


def test_unet_without_any_mask_to_train_on_is_an_input_error():
    dataset = phantom_dataset(with_mask=np.zeros(24, dtype=bool))
    with pytest.raises(InputError, match="no manifest row has a lung mask"):
        segment_dataset(dataset, _config("unet"), None)


# --------------------------------------------------------------------------- CLI entry


def test_segment_manifest_writes_masks_manifest_and_quality(tmp_path, shared_cache):
    images, masks = lung_phantoms(24, 64)
    rows = []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(tmp_path / f"img{i}.png")
        mask_path = ""
        if i % 6:
            Image.fromarray(mask * np.uint8(255)).save(tmp_path / f"mask{i}.png")
            mask_path = f"mask{i}.png"
        rows.append({"path": f"img{i}.png", "label": "normal", "source": f"s{i % 2}",
                     "patient_id": f"p{i // 2}", "mask_path": mask_path})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    config = AuditConfig.model_validate({
        "data": {"image_size": 64}, "segmentation": TINY.model_dump(),
        "runtime": {"cache_dir": str(shared_cache.root)}})
    written = segment_manifest(tmp_path / "manifest.csv", tmp_path / "out", config)
    manifest = pd.read_csv(written, keep_default_na=False)
    assert len(manifest) == 24 and (manifest["mask_path"] != "").all()
    assert manifest["mask_from"].tolist().count("pretrained") == 4  # auto: shipped segmenter
    mask = np.asarray(Image.open(manifest["mask_path"][0]))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    quality = pd.read_csv(tmp_path / "out" / "mask_quality.csv", keep_default_na=False)
    assert list(quality.columns) == ["path", "source", "mask_from", "lung_fraction", "flag"]
    assert (tmp_path / "out" / "segmentation.json").is_file()
