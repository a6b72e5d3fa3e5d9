"""read_manifest: path resolution, label mapping, quarantine reasons, file-level errors."""

from __future__ import annotations

import os

import pytest

from audit.core.errors import InputError
from audit.data.manifest import read_manifest
from tests.data_fixtures import distinct_image, write_manifest, write_png


@pytest.fixture
def corpus(tmp_path):
    write_png(tmp_path / "a.png", distinct_image(1))
    write_png(tmp_path / "sub" / "b.png", distinct_image(2))
    write_png(tmp_path / "m.png", distinct_image(3))
    return tmp_path


def test_rows_get_absolute_paths_defaults_and_keep_extra_columns(corpus):
    path = write_manifest(corpus, [
        {"path": "a.png", "label": "covid", "source": "s1", "patient_id": "p1",
         "mask_path": "m.png", "license": "CC BY"},
        {"path": "sub/b.png", "label": "Normal", "source": "s2", "patient_id": "",
         "mask_path": "", "license": "x"},
    ])
    rows = read_manifest(path).rows
    assert rows["path"].tolist() == [str(corpus / "a.png"), str(corpus / "sub" / "b.png")]
    assert rows["mask_path"].tolist() == [str(corpus / "m.png"), ""]
    assert rows["label"].tolist() == ["covid", "normal"]
    assert rows["patient_id"].tolist() == ["p1", str(corpus / "sub" / "b.png")]
    assert rows["view"].tolist() == ["", ""]
    assert rows["license"].tolist() == ["CC BY", "x"]
    assert rows["row"].tolist() == [1, 2]


def test_label_map_maps_raw_labels_case_insensitively(corpus):
    path = write_manifest(corpus, [{"path": "a.png", "label": "COVID-19", "source": "s"},
                                   {"path": "sub/b.png", "label": "Pneumonia", "source": "s"}])
    manifest = read_manifest(path, label_map={"covid-19": "covid", "pneumonia": "opacity"})
    assert manifest.rows["label"].tolist() == ["covid", "opacity"]
    assert manifest.quarantined.empty


def test_bad_rows_are_quarantined_with_reasons_and_good_rows_survive(corpus):
    path = write_manifest(corpus, [
        {"path": "a.png", "label": "covid", "source": "s", "mask_path": ""},
        {"path": "sub/b.png", "label": "flu", "source": "s", "mask_path": ""},
        {"path": "a.png", "label": "normal", "source": " ", "mask_path": ""},
        {"path": "gone.png", "label": "other", "source": "s", "mask_path": ""},
        {"path": "a.png", "label": "other", "source": "s", "mask_path": "nomask.png"},
    ])
    manifest = read_manifest(path)
    assert manifest.rows["row"].tolist() == [1]
    reasons = dict(zip(manifest.quarantined["row"], manifest.quarantined["reason"], strict=True))
    assert reasons[2].startswith("unknown label 'flu'")
    assert reasons[3] == "missing source"
    assert reasons[4] == "missing file"
    assert reasons[5] == f"missing mask file {corpus / 'nomask.png'}"
    assert list(manifest.quarantined.columns[:3]) == ["path", "row", "reason"]
    assert manifest.quarantined.loc[2, "path"] == str(corpus / "gone.png")


def test_absolute_paths_are_kept(corpus, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    path = write_manifest(other, [{"path": str(corpus / "a.png"), "label": "other", "source": "s"}])
    assert read_manifest(path).rows["path"].tolist() == [os.path.normpath(corpus / "a.png")]


def test_missing_required_columns_name_the_file_and_columns(corpus):
    path = write_manifest(corpus, [{"path": "a.png", "diagnosis": "covid"}])
    with pytest.raises(InputError, match=r"manifest.csv: manifest lacks required column\(s\) label, source"):
        read_manifest(path)


def test_unreadable_manifest_raises_input_error(tmp_path):
    with pytest.raises(InputError, match=r"nothere.csv: cannot read manifest table"):
        read_manifest(tmp_path / "nothere.csv")


def test_label_map_to_unknown_class_is_rejected(corpus):
    path = write_manifest(corpus, [{"path": "a.png", "label": "covid", "source": "s"}])
    with pytest.raises(InputError, match=r"label_map: 'flu' maps to 'influenza', expected one of"):
        read_manifest(path, label_map={"flu": "influenza"})


def test_reserved_column_names_are_rejected(corpus):
    path = write_manifest(corpus, [{"path": "a.png", "label": "covid", "source": "s", "row": "1"}])
    with pytest.raises(InputError, match=r"column\(s\) row are reserved"):
        read_manifest(path)
