"""DICOM decoding: real CR chest radiographs (pydicom-data), inversion, windowing, round trip."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from audit.data.dicom import read_dicom, read_dicom_metadata
from audit.data.images import ImageDecodeError, decode_image, load_dataset
from audit.data.importers import import_dicom
from tests.data_fixtures import distinct_image, write_dicom, write_png

pydicom_data = pytest.importorskip("pydicom.data")


def _real_chest(name: str) -> str:
    path = pydicom_data.get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom-data does not ship {name}")
    return path


def _region_mean(image: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    h, w = image.shape
    return float(image[int(rows[0] * h):int(rows[1] * h), int(cols[0] * w):int(cols[1] * w)].mean())


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm"])
def test_real_chest_radiograph_has_dark_lungs_and_bright_spine(name):
    image, meta = read_dicom(_real_chest(name))
    assert image.dtype == np.uint8 and image.shape == (1955, 1841)
    # Regions read off the PA film: mid-lung fields either side, spine/mediastinum between.
    right_lung = _region_mean(image, (0.25, 0.45), (0.20, 0.33))
    left_lung = _region_mean(image, (0.25, 0.45), (0.62, 0.75))
    spine = _region_mean(image, (0.25, 0.60), (0.46, 0.54))
    assert right_lung < spine - 40 and left_lung < spine - 40
    assert meta == {"patient_id": "9RG1", "view_position": "PA",
                    "manufacturer": "Philips Medical Systems",
                    "institution": "Philips Medical Systems Hamburg",
                    "photometric": "MONOCHROME1", "bits_stored": "15"}


def test_lossless_jpeg2000_decodes_to_the_same_pixels_as_uncompressed():
    uncompressed, _ = read_dicom(_real_chest("RG1_UNCR.dcm"))
    jpeg2000, _ = read_dicom(_real_chest("RG1_J2KR.dcm"))
    np.testing.assert_array_equal(uncompressed, jpeg2000)


def test_dicom_round_trips_to_the_pixels_of_its_png_twin(tmp_path):
    image = distinct_image(11, 64)
    png = write_png(tmp_path / "twin.png", image)
    dicom = write_dicom(tmp_path / "twin.dcm", image)
    np.testing.assert_array_equal(decode_image(dicom), decode_image(png))
    np.testing.assert_array_equal(decode_image(dicom), image)


def test_monochrome1_twelve_bit_is_inverted_and_scaled_by_its_range(tmp_path):
    image = distinct_image(12, 64)
    stored = (image.astype(np.uint16) * 15 + 100)  # 12-bit values 100..3925
    decoded = decode_image(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", bits_stored=12))
    expected = 255 - np.rint((stored - stored.min()) * 255.0 / (stored.max() - stored.min()))
    np.testing.assert_allclose(decoded, expected, atol=1)


def test_window_centre_and_width_are_applied(tmp_path):
    stored = np.tile(np.linspace(0, 4000, 64), (32, 1)).astype(np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, WindowCenter="1000",
                       WindowWidth="1000")
    decoded = decode_image(path)
    assert decoded[0, stored[0] <= 500].max() == 0
    assert decoded[0, stored[0] >= 1500].min() == 255
    assert 100 < decoded[0, np.argmin(abs(stored[0].astype(int) - 1000))] < 155


def test_header_fields_are_read_without_pixels(tmp_path):
    path = write_dicom(tmp_path / "h.dcm", distinct_image(1, 32), PatientID="p7",
                       ViewPosition="AP", Manufacturer="Acme", InstitutionName="Uni")
    meta = read_dicom_metadata(path)
    assert meta["patient_id"] == "p7" and meta["view_position"] == "AP"
    assert meta["manufacturer"] == "Acme" and meta["institution"] == "Uni"


def test_broken_dicoms_raise_short_reasons(tmp_path):
    (tmp_path / "text.dcm").write_text("not a dicom at all")
    with pytest.raises(ImageDecodeError, match=r"^not an image \(not a DICOM file\)$"):
        decode_image(tmp_path / "text.dcm")
    whole = write_dicom(tmp_path / "whole.dcm", distinct_image(2, 64)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(whole[:-2000])
    with pytest.raises(ImageDecodeError, match=r"^truncated"):
        decode_image(tmp_path / "cut.dcm")


def test_real_dicom_imports_and_loads_through_the_image_store(tmp_path):
    folder = tmp_path / "dicom" / "normal"
    folder.mkdir(parents=True)
    shutil.copy(_real_chest("RG1_UNCR.dcm"), folder)
    frame = import_dicom(tmp_path / "dicom", tmp_path / "m.csv", source="philips")
    assert frame[["label", "source", "patient_id", "view", "manufacturer"]].values.tolist() == [
        ["normal", "philips", "9RG1", "PA", "Philips Medical Systems"]]
    dataset = load_dataset(tmp_path / "m.csv", 64)
    image = dataset.images[0]
    assert dataset.manifest["institution"].tolist() == ["Philips Medical Systems Hamburg"]
    lung = _region_mean(image, (0.25, 0.45), (0.20, 0.33))
    assert lung < _region_mean(image, (0.25, 0.60), (0.46, 0.54)) - 40
