"""Importers: folder trees, CSV with renames, DICOM folders; their manifests read back."""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from audit.core.errors import InputError
from audit.data.importers import import_csv, import_dicom, import_folder
from audit.data.manifest import read_manifest
from tests.data_fixtures import distinct_image, write_dicom, write_png


@pytest.fixture
def warnings_seen(caplog):
    """Capture cxr_audit warnings even after the CLI turned its propagation off."""
    logger = logging.getLogger("cxr_audit")
    logger.addHandler(caplog.handler)
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def test_folder_tree_with_sources_reads_back_as_a_clean_manifest(tmp_path, warnings_seen):
    write_png(tmp_path / "data" / "siteA" / "covid" / "1.png", distinct_image(1))
    write_png(tmp_path / "data" / "siteB" / "normal" / "2.png", distinct_image(2))
    (tmp_path / "data" / "siteB" / "normal" / "notes.txt").write_text("x")
    out = tmp_path / "manifest.csv"
    frame = import_folder(tmp_path / "data", out)
    assert frame.values.tolist() == [["data/siteA/covid/1.png", "covid", "siteA"],
                                     ["data/siteB/normal/2.png", "normal", "siteB"]]
    assert "skipped 1 file(s)" in warnings_seen.text and "notes.txt" in warnings_seen.text
    manifest = read_manifest(out)
    assert manifest.quarantined.empty and len(manifest.rows) == 2


def test_flat_label_tree_takes_the_given_source_and_absolute_paths_outside(tmp_path):
    write_png(tmp_path / "imgs" / "opacity" / "a.png", distinct_image(3))
    out = tmp_path / "manifests" / "m.csv"
    out.parent.mkdir()
    frame = import_folder(tmp_path / "imgs", out, source="clinic")
    assert frame.values.tolist() == [[str(tmp_path / "imgs" / "opacity" / "a.png"), "opacity", "clinic"]]


def test_empty_folder_is_an_input_error(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match=r"none: no images .* found in the expected layout"):
        import_folder(tmp_path / "none", tmp_path / "m.csv")
    with pytest.raises(InputError, match=r"absent: expected a folder of images"):
        import_folder(tmp_path / "absent", tmp_path / "m.csv")


def test_csv_import_renames_columns_rebases_paths_and_keeps_extras(tmp_path):
    write_png(tmp_path / "src" / "img" / "a.png", distinct_image(4))
    pd.DataFrame({"file": ["img/a.png"], "finding": ["covid"], "hospital": ["h1"],
                  "age": ["40"]}).to_csv(tmp_path / "src" / "meta.csv", index=False)
    out = tmp_path / "m.csv"
    frame = import_csv(tmp_path / "src" / "meta.csv", out,
                       {"file": "path", "finding": "label", "hospital": "source"})
    assert frame.to_dict("records") == [{"path": "src/img/a.png", "label": "covid",
                                         "source": "h1", "age": "40"}]
    assert read_manifest(out).rows["path"].tolist() == [str(tmp_path / "src" / "img" / "a.png")]


def test_csv_import_names_missing_columns(tmp_path):
    pd.DataFrame({"file": ["a.png"], "finding": ["covid"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match=r"t.csv: cannot rename missing column\(s\) site"):
        import_csv(tmp_path / "t.csv", tmp_path / "m.csv", {"site": "source"})
    with pytest.raises(InputError, match=r"t.csv: no column source after renaming"):
        import_csv(tmp_path / "t.csv", tmp_path / "m.csv", {"file": "path", "finding": "label"})


def test_dicom_import_pulls_header_fields(tmp_path):
    write_dicom(tmp_path / "dcm" / "covid" / "a.dcm", distinct_image(5), PatientID="P1",
                ViewPosition="AP", Manufacturer="Acme", InstitutionName="General")
    write_dicom(tmp_path / "dcm" / "normal" / "b.dcm", distinct_image(6))
    (tmp_path / "dcm" / "normal" / "bad.dcm").write_text("not dicom")
    frame = import_dicom(tmp_path / "dcm", tmp_path / "m.csv", source="hospital")
    assert frame.to_dict("records")[0] == {
        "path": "dcm/covid/a.dcm", "label": "covid", "source": "hospital", "patient_id": "P1",
        "view": "AP", "manufacturer": "Acme", "institution": "General"}
    assert frame["patient_id"].tolist()[1:] == ["", ""]
    rows = read_manifest(tmp_path / "m.csv").rows
    assert rows["patient_id"].tolist()[0] == "P1" and rows["view"].tolist()[0] == "AP"


def test_formula_like_names_are_neutralised_in_the_csv_and_read_back_unchanged(tmp_path):
    sources = ["=HYPERLINK(evil)", "+site", "@site", "-site"]
    for number, source in enumerate(sources):
        write_png(tmp_path / "data" / source / "covid" / f"{number}.png", distinct_image(number))
    out = tmp_path / "manifest.csv"
    import_folder(tmp_path / "data", out)
    cells = [line.split(",")[2] for line in out.read_text().splitlines()[1:]]
    assert sorted(cells) == sorted(f"'{source}" for source in sources)
    assert sorted(read_manifest(out).rows["source"]) == sorted(sources)


def test_negative_numbers_are_not_neutralised(tmp_path):
    from audit.core.io import write_csv

    write_csv(pd.DataFrame({"delta": ["-0.5", "-1e-3"], "name": ["-x", "x"]}), tmp_path / "t.csv")
    assert tmp_path.joinpath("t.csv").read_text().splitlines()[1:] == ["-0.5,'-x", "-1e-3,x"]


def test_folder_import_attaches_masks_and_patient_ids_and_reports_gaps(tmp_path, warnings_seen):
    for name in ("P01_a.png", "P01_b.png", "P02_a.png", "scan.png"):
        write_png(tmp_path / "data" / "siteA" / "covid" / name, distinct_image(len(name)))
    write_png(tmp_path / "masks" / "siteA" / "covid" / "P01_a.png", distinct_image(1))  # same path
    write_png(tmp_path / "masks" / "flat" / "P02_a.png", distinct_image(2))  # unique stem
    write_png(tmp_path / "masks" / "orphan.png", distinct_image(3))
    out = tmp_path / "manifest.csv"
    frame = import_folder(tmp_path / "data", out, masks=tmp_path / "masks",
                          patient_id_regex=r"^(P\d+)_")
    by_name = {path.rsplit("/", 1)[1]: row for path, row in
               zip(frame["path"], frame.to_dict(orient="records"), strict=True)}
    assert by_name["P01_a.png"]["mask_path"] == "masks/siteA/covid/P01_a.png"
    assert by_name["P02_a.png"]["mask_path"] == "masks/flat/P02_a.png"
    assert by_name["P01_b.png"]["mask_path"] == by_name["scan.png"]["mask_path"] == ""
    assert [by_name[n]["patient_id"] for n in ("P01_a.png", "P01_b.png", "P02_a.png", "scan.png")] \
        == ["P01", "P01", "P02", ""]
    assert "2 of 4 image(s) have no mask" in warnings_seen.text
    assert "1 mask(s) match no image: orphan.png" in warnings_seen.text
    assert "matched no patient id in 1 of 4 file name(s), e.g. scan.png" in warnings_seen.text
    assert "1 of 4 image(s) have no patient id" in warnings_seen.text
    manifest = read_manifest(out)
    assert manifest.quarantined.empty
    patients = dict(zip(manifest.rows["path"].str.rsplit("/", n=1).str[1],
                        manifest.rows["patient_id"], strict=True))
    assert (patients["P01_b.png"], patients["P02_a.png"]) == ("P01", "P02")


def test_a_regex_without_a_group_is_an_input_error(tmp_path):
    write_png(tmp_path / "data" / "s" / "covid" / "P1.png", distinct_image(1))
    pattern = r"P\d"
    with pytest.raises(InputError, match=re.escape(f"--patient-id-regex {pattern!r}: needs a group")):
        import_folder(tmp_path / "data", tmp_path / "m.csv", patient_id_regex=pattern)


def test_import_without_patient_ids_warns_what_that_disables(tmp_path, warnings_seen):
    write_png(tmp_path / "data" / "s" / "covid" / "1.png", distinct_image(1))
    import_folder(tmp_path / "data", tmp_path / "m.csv")
    assert "1 of 1 image(s) have no patient id: each counts as its own patient" in \
        warnings_seen.text
