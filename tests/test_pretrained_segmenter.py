"""The lung U-Net shipped with the package: it loads from the installed package, segments
held-out real radiographs, and serves ``segmentation.source: pretrained`` and ``auto``."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.core.cache import StageCache
from audit.core.config import AuditConfig, SegmentationConfig
from models import pretrained, segment
from models.segment import dice_iou, predict_masks, segment_dataset, segment_manifest
from tests.conftest import REAL_DATA
from tests.unet_fixtures import lung_phantoms, phantom_dataset

IMAGES_PER_SOURCE = 3


@pytest.fixture(scope="module")
def shipped_model():
    return pretrained.load_pretrained_unet()


def test_shipped_files_are_package_data_and_small():
    package = resources.files("models.pretrained")
    weights = package / pretrained.WEIGHTS_FILE
    assert weights.is_file() and (package / pretrained.RECORD_FILE).is_file()
    with resources.as_file(weights) as path:
        assert path.stat().st_size < 10_000_000
    record = pretrained.pretrained_record()
    assert record["weights"]["sha256_16"] == pretrained.pretrained_key()
    assert "CC BY 4.0" in record["licence"] and "Shenzhen" in record["licence"]


@pytest.mark.real_data
def test_shipped_segmenter_segments_held_out_real_images(shipped_model):
    """A few images per source of patients the record holds out, at the set's 256 px."""
    record = pretrained.pretrained_record()
    metadata = pd.read_csv(REAL_DATA, keep_default_na=False)
    held_out = metadata[metadata["patient_id"].isin(record["split"]["held_out_patients"])
                        & (metadata["mask_path"] != "")]
    assert sorted(held_out["source"].unique()) == record["data"]["sources"]
    picked = held_out.groupby("source").head(IMAGES_PER_SOURCE)
    root = REAL_DATA.parent
    images = np.stack([np.asarray(Image.open(root / p).convert("L")) for p in picked["path"]])
    truth = np.stack([np.asarray(Image.open(root / p).convert("L")) > 127
                      for p in picked["mask_path"]])
    dice, _ = dice_iou(predict_masks(shipped_model, images), truth)
    per_source = pd.Series(dice).groupby(picked["source"].to_numpy()).mean()
    assert (per_source >= 0.85).all(), per_source.to_dict()


def _config(source: str) -> SegmentationConfig:
    return SegmentationConfig(source=source, batch_size=8)


def _no_training(*args, **kwargs):
    pytest.fail("a U-Net was trained")


def test_pretrained_source_masks_every_row_and_says_so(monkeypatch):
    monkeypatch.setattr(segment, "train_unet", _no_training)
    source = phantom_dataset(n=8)
    dataset, report = segment_dataset(source, _config("pretrained"), None)
    assert dataset.masks.shape == source.images.shape and dataset.has_mask.all()
    assert set(np.unique(dataset.masks)) <= {0, 1}
    assert dataset.mask_origin == "pretrained" and report["predicted_by"] == "pretrained"
    assert report["row_origin"] == {"pretrained": 8} and report["predicted_rows"] == list(range(8))
    assert "not this data set" in report["quality"]["measured_on"]
    assert set(report["quality"]["per_source"]) == set(
        pretrained.pretrained_record()["data"]["sources"])
    assert report["flags"]["n_checked"] == 8


def test_auto_without_any_mask_uses_the_shipped_segmenter(monkeypatch, tmp_path):
    monkeypatch.setattr(segment, "train_unet", _no_training)
    source = phantom_dataset(n=8, with_mask=np.zeros(8, dtype=bool))
    cache = StageCache(tmp_path)
    dataset, report = segment_dataset(source, _config("auto"), cache)
    assert dataset.masks.shape == source.images.shape and dataset.has_mask.all()
    assert dataset.mask_origin == "pretrained" and report["row_origin"] == {"pretrained": 8}
    assert report["rows_without_mask"] == []
    assert cache.events[-1].stage == "pretrained_masks"
    segment_dataset(source, _config("auto"), cache)
    assert cache.events[-1].action == "reused"
    monkeypatch.setattr(segment, "pretrained_key", lambda: "other-weights")
    segment_dataset(source, _config("auto"), cache)
    assert cache.events[-1].action == "computed"  # the key holds the shipped file's hash


def test_auto_keeps_manifest_masks_and_fills_the_rest(monkeypatch):
    monkeypatch.setattr(segment, "train_unet", _no_training)
    with_mask = np.ones(8, dtype=bool)
    with_mask[[2, 5]] = False
    source = phantom_dataset(n=8, with_mask=with_mask)
    dataset, report = segment_dataset(source, _config("auto"), None)
    np.testing.assert_array_equal(dataset.masks[with_mask], source.masks[with_mask])
    assert report["predicted_rows"] == [2, 5] and dataset.has_mask.all()
    assert dataset.mask_origin == "manifest+pretrained"
    assert report["row_origin"] == {"manifest": 6, "pretrained": 2}


@pytest.mark.parametrize("source", ["auto", "pretrained"])
def test_manifest_without_masks_gets_shipped_masks(tmp_path, monkeypatch, source):
    """``cxr-audit segment`` of a manifest with no mask at all (it used to exit 2 under auto)."""
    monkeypatch.setattr(segment, "train_unet", _no_training)
    images, _ = lung_phantoms(6, 64)
    rows = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"img{i}.png")
        rows.append({"path": f"img{i}.png", "label": "normal", "source": f"s{i % 2}",
                     "patient_id": f"p{i}", "mask_path": ""})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    config = AuditConfig.model_validate({"data": {"image_size": 64},
                                         "segmentation": {"source": source}})
    written = segment_manifest(tmp_path / "manifest.csv", tmp_path / "out", config)
    manifest = pd.read_csv(written, keep_default_na=False)
    assert manifest["mask_from"].tolist() == ["pretrained"] * 6
    mask = np.asarray(Image.open(manifest["mask_path"][0]))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
