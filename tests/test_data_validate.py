"""validate_manifest on a corpus of broken inputs, and on the real set when present."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
from PIL import Image

from audit.core.errors import InputError
from audit.data.images import decode_image, load_dataset
from audit.data.validate import validate_manifest
from tests.data_fixtures import (
    REAL_DATA,
    distinct_image,
    png_header_only,
    write_dicom,
    write_manifest,
    write_png,
)


def _jpeg_twin(image: np.ndarray, path):
    buffer = io.BytesIO()
    Image.fromarray(image).resize((80, 80)).save(buffer, "JPEG", quality=70)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def broken_corpus(tmp_path):
    """Good rows (8-bit, 16-bit, RGBA, MONOCHROME1 DICOM) mixed with every kind of bad row."""
    good = write_png(tmp_path / "good.png", distinct_image(1, 96))
    deep = (distinct_image(2, 96).astype(np.uint16) * 200 + 5000)
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    gray = distinct_image(3, 96)
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)]), "RGBA").save(tmp_path / "rgba.png")
    write_dicom(tmp_path / "mono1.dcm", distinct_image(4, 96).astype(np.uint16) * 16,
                "MONOCHROME1", bits_stored=12)
    (tmp_path / "truncated.png").write_bytes(write_png(tmp_path / "t.png", distinct_image(5, 96)).read_bytes()[:300])
    (tmp_path / "text.png").write_text("this is a note, not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    png_header_only(tmp_path / "bomb.png", 100000, 100000)
    (tmp_path / "copy.png").write_bytes(good.read_bytes())
    _jpeg_twin(distinct_image(6, 96), tmp_path / "twin.jpg")
    write_png(tmp_path / "original.png", distinct_image(6, 96))
    rows = [
        ("good.png", "covid", "a"), ("deep16.png", "normal", "a"), ("rgba.png", "opacity", "a"),
        ("mono1.dcm", "other", "b"), ("truncated.png", "covid", "a"), ("text.png", "covid", "a"),
        ("empty.png", "covid", "a"), ("bomb.png", "covid", "a"), ("missing.png", "covid", "a"),
        ("good.png", "flu", "a"), ("copy.png", "normal", "b"), ("original.png", "normal", "a"),
        ("twin.jpg", "normal", "c"),
    ]
    return write_manifest(tmp_path, [{"path": p, "label": lab, "source": src} for p, lab, src in rows])


EXPECTED_REASONS = {
    5: r"^truncated image$",
    6: r"^not an image$",
    7: r"^empty file \(0 bytes\)$",
    8: r"^image dimensions exceed the limit",
    9: r"^missing file$",
    10: r"^unknown label 'flu'",
    11: r"^same image under two labels: exact duplicate of row 1 \(covid\), here normal \(across sources a, b\)$",
    13: r"^near-duplicate \(dhash distance \d+\) of row 12 \(across sources a, c\)$",
}


def test_each_broken_row_is_reported_with_its_reason(broken_corpus):
    report = validate_manifest(broken_corpus)
    reasons = dict(zip(report.problems["row"], report.problems["reason"], strict=True))
    assert sorted(reasons) == sorted(EXPECTED_REASONS)
    for row, pattern in EXPECTED_REASONS.items():
        assert re.match(pattern, reasons[row]), (row, reasons[row])
    assert report.n_rows == 13 and report.n_ok == 13 - len(EXPECTED_REASONS)
    assert report.exit_code == 1
    text = report.to_text()
    assert "13 rows, 5 ok, 8 problem(s)" in text
    assert any(line.split()[:2] == ["7", "empty.png"] for line in text.splitlines())


def test_good_rows_survive_loading(broken_corpus):
    dataset = load_dataset(broken_corpus, 32)
    assert dataset.manifest["row"].tolist() == [1, 2, 3, 4, 11, 12, 13]
    assert set(dataset.quarantined["row"]) == {5, 6, 7, 8, 9, 10}
    deep = decode_image(broken_corpus.parent / "deep16.png")  # 16-bit: scaled by its range
    assert deep.min() == 0 and deep.max() == 255


def test_clean_manifest_has_exit_code_zero(tmp_path):
    write_png(tmp_path / "a.png", distinct_image(1, 64))
    write_png(tmp_path / "b.png", distinct_image(2, 64))
    path = write_manifest(tmp_path, [{"path": "a.png", "label": "covid", "source": "s"},
                                     {"path": "b.png", "label": "normal", "source": "s"}])
    report = validate_manifest(path)
    assert report.exit_code == 0 and report.problems.empty and report.n_ok == 2
    assert report.to_text().endswith("2 rows, 2 ok, 0 problem(s)\n")


def test_patients_split_across_test_and_train_are_reported(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", distinct_image(i, 64))
    path = write_manifest(tmp_path, [
        {"path": "0.png", "label": "covid", "source": "s", "patient_id": "p1", "split": "train"},
        {"path": "1.png", "label": "covid", "source": "s", "patient_id": "p1", "split": "test"},
        {"path": "2.png", "label": "normal", "source": "s", "patient_id": "p2", "split": "test"},
    ])
    problems = validate_manifest(path).problems
    assert problems[["row", "reason"]].values.tolist() == [[2, "patient p1 is in test and in train (rows 1)"]]


def test_unreadable_manifest_raises(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nx.png,covid\n")
    with pytest.raises(InputError, match=r"m.csv: manifest lacks required column\(s\) source"):
        validate_manifest(tmp_path / "m.csv")


@pytest.mark.real_data
def test_real_set_validates_without_crashing():
    manifest = REAL_DATA / "metadata.csv"
    if not manifest.exists():
        pytest.skip(f"real data not present at {REAL_DATA}")
    started = time.perf_counter()
    report = validate_manifest(manifest)
    assert report.n_rows == 1417
    assert report.n_ok == 1417 - report.problems["row"].nunique()
    assert time.perf_counter() - started < 300  # generous: the acceptance bar is 60 s unloaded


def test_bad_lung_masks_are_reported(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", distinct_image(i, 64))
    write_png(tmp_path / "empty_mask.png", np.zeros((64, 64), np.uint8))
    write_png(tmp_path / "wide_mask.png", np.full((64, 128), 255, np.uint8))
    write_png(tmp_path / "ok_mask.png", np.full((32, 32), 255, np.uint8))  # smaller, same shape
    path = write_manifest(tmp_path, [
        {"path": "0.png", "label": "covid", "source": "s", "mask_path": "empty_mask.png"},
        {"path": "1.png", "label": "covid", "source": "s", "mask_path": "wide_mask.png"},
        {"path": "2.png", "label": "covid", "source": "s", "mask_path": "ok_mask.png"},
    ])
    problems = validate_manifest(path).problems
    assert problems["row"].tolist() == [1, 2]
    assert problems["reason"][0].endswith("empty_mask.png: empty (no lung pixels)")
    assert problems["reason"][1].endswith("wide_mask.png: 128x64 does not fit the 64x64 image (aspect ratio)")


def test_header_only_manifest_is_a_problem(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,source\n")
    report = validate_manifest(tmp_path / "m.csv")
    assert (report.n_rows, report.n_ok, report.exit_code) == (0, 0, 1)
    assert report.problems["reason"].tolist() == ["no data rows: the manifest has a header only"]
