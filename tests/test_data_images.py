"""decode_image on good and broken files; load_dataset's store, quarantine and cache reuse."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from audit.core.cache import StageCache
from audit.core.errors import InputError
from audit.data import images as images_module
from audit.data.images import ImageDecodeError, decode_image, load_dataset, open_dataset
from tests.data_fixtures import (
    distinct_image,
    good_corpus,
    png_header_only,
    write_manifest,
    write_png,
)


def test_sixteen_bit_png_is_scaled_by_its_real_range(tmp_path):
    ramp = np.tile(np.linspace(1000, 3000, 64), (32, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    decoded = decode_image(tmp_path / "deep.png")
    assert decoded.dtype == np.uint8 and decoded.shape == (32, 64)
    assert decoded.min() == 0 and decoded.max() == 255
    assert np.all(np.diff(decoded[0].astype(int)) >= 0)  # monotone, not clipped to a plateau
    assert len(np.unique(decoded[0])) > 50


def test_rgba_png_becomes_its_grayscale_luminance(tmp_path):
    gray = distinct_image(5, 32)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "rgba.png"), gray)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: p.write_bytes(b""), r"^empty file \(0 bytes\)$"),
    (lambda p: p.write_text("patient list, not a picture\n"), r"^not an image$"),
    (lambda p: p.write_bytes(_png_bytes(p)[:400]), r"^truncated image$"),
    (lambda p: png_header_only(p, 100000, 100000), r"^image dimensions exceed the limit \(10000000000 pixels"),
    (lambda p: png_header_only(p, 20000, 64), r"^image dimensions 20000x64 exceed the limit"),
    (lambda p: png_header_only(p, 4, 64), r"^image dimensions 4x64 below the minimum"),
    (lambda p: None, r"^missing file$"),
])
def test_broken_files_raise_short_reasons(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(path)


def _png_bytes(path):
    write_png(path, distinct_image(9, 96))
    return path.read_bytes()


def test_load_dataset_stores_resized_images_masks_and_quarantine(tmp_path):
    write_png(tmp_path / "a.png", distinct_image(1, 40))
    write_png(tmp_path / "b.png", distinct_image(2, 40))
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 5:20] = 255
    write_png(tmp_path / "mask.png", mask)
    (tmp_path / "broken.png").write_text("not an image")
    path = write_manifest(tmp_path, [
        {"path": "a.png", "label": "covid", "source": "s", "mask_path": "mask.png"},
        {"path": "b.png", "label": "normal", "source": "s", "mask_path": ""},
        {"path": "broken.png", "label": "other", "source": "s", "mask_path": ""},
        {"path": "a.png", "label": "bogus", "source": "s", "mask_path": ""},
    ])
    dataset = load_dataset(path, 20, StageCache(tmp_path / "cache"))
    assert isinstance(dataset.images, np.memmap) and dataset.images.shape == (2, 20, 20)
    assert dataset.manifest["row"].tolist() == [1, 2]
    assert dataset.has_mask.tolist() == [True, False]
    assert set(np.unique(dataset.masks)) == {0, 1}
    assert dataset.masks[0, 5:15, 3:10].all() and not dataset.masks[0, :, 12:].any()
    assert not dataset.masks[1].any()
    expected_first = np.asarray(Image.fromarray(distinct_image(1, 40)).resize((20, 20), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(dataset.images[0], expected_first)
    reasons = dict(zip(dataset.quarantined["row"], dataset.quarantined["reason"], strict=True))
    assert reasons[3] == "not an image" and reasons[4].startswith("unknown label")
    reopened = open_dataset(tmp_path / "cache" / "images" / dataset.manifest_hash)
    np.testing.assert_array_equal(reopened.images, dataset.images)
    assert reopened.manifest.equals(dataset.manifest)


def test_second_load_reuses_the_store_without_decoding(tmp_path, monkeypatch):
    path = good_corpus(tmp_path, n_per_class=2)
    cache = StageCache(tmp_path / "cache")
    first = load_dataset(path, 24, cache)

    def refuse(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(images_module, "decode_image", refuse)
    second = load_dataset(path, 24, cache)
    assert second.manifest_hash == first.manifest_hash
    np.testing.assert_array_equal(second.images, first.images)
    assert [event.action for event in cache.events] == ["computed", "reused"]


def test_changed_file_or_size_gives_a_new_store(tmp_path):
    path = good_corpus(tmp_path, n_per_class=1)
    cache = StageCache(tmp_path / "cache")
    first = load_dataset(path, 24, cache).manifest_hash
    assert load_dataset(path, 32, cache).manifest_hash != first
    write_png(tmp_path / "images" / "covid_0.png", distinct_image(77, 50))
    assert load_dataset(path, 24, cache).manifest_hash != first


def test_without_cache_arrays_are_in_memory(tmp_path):
    dataset = load_dataset(good_corpus(tmp_path, n_per_class=1), 16)
    assert type(dataset.images) is np.ndarray and dataset.masks is None and len(dataset) == 4


def test_no_usable_rows_is_an_input_error(tmp_path):
    (tmp_path / "x.png").write_text("text")
    path = write_manifest(tmp_path, [{"path": "x.png", "label": "covid", "source": "s"}])
    with pytest.raises(InputError, match=r"manifest.csv: no usable rows \(1 quarantined: 1x not an image\)"):
        load_dataset(path, 16)
