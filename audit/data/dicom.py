"""Read DICOM radiographs into the 8-bit grayscale images every later step uses.

The stored pixel values are turned into display values the way a viewer would: the
Modality LUT (rescale slope/intercept or LUT) first, then the VOI transform (the file's
first window centre/width as a linear window, or its VOI LUT), then MONOCHROME1 images
(where a high value means dark) are inverted so lungs are dark and bone is bright, as in
every PNG the models see. Images without any VOI information are scaled by their bit
depth when 8-bit and by their real value range otherwise (the same rule as 16-bit PNGs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from audit.data.pixels import ImageDecodeError, check_dimensions, scale_to_uint8

_METADATA_KEYWORDS = {
    "patient_id": "PatientID",
    "view_position": "ViewPosition",
    "manufacturer": "Manufacturer",
    "institution": "InstitutionName",
    "photometric": "PhotometricInterpretation",
    "bits_stored": "BitsStored",
}


def _open(path: str | Path, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise ImageDecodeError("not an image (not a DICOM file)") from None
    except Exception as error:  # a damaged file can fail anywhere in the parser
        raise ImageDecodeError(f"truncated or corrupt DICOM ({error})") from None


def _metadata(ds: pydicom.Dataset) -> dict:
    return {key: str(ds.get(keyword, "") or "").strip() for key, keyword in _METADATA_KEYWORDS.items()}


def read_dicom_metadata(path: str | Path) -> dict:
    """The manifest-relevant header fields of a DICOM file, without decoding its pixels.

    Returns:
        ``patient_id, view_position, manufacturer, institution, photometric, bits_stored``
        as strings ("" when absent).

    Raises:
        ImageDecodeError: not a DICOM file, or unreadable.
    """
    return _metadata(_open(path, stop_before_pixels=True))


def _window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The first (centre, width) window of the file, or None when absent or malformed."""
    try:
        center, width = ds.WindowCenter, ds.WindowWidth
        if isinstance(center, pydicom.multival.MultiValue):
            center, width = center[0], width[0]
        return float(center), max(float(width), 1.0)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _display_values(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored pixels -> uint8 display values (modality LUT, VOI, range scaling)."""
    values = apply_modality_lut(stored, ds).astype(np.float64)
    window = _window(ds)
    if window is not None:
        center, width = window
        return scale_to_uint8(values, low=center - width / 2, high=center + width / 2)
    if "VOILUTSequence" in ds:
        return scale_to_uint8(apply_voi_lut(values, ds).astype(np.float64))
    if int(ds.get("BitsStored", 16)) <= 8 and values.min() >= 0:
        return scale_to_uint8(values, low=0, high=255)
    return scale_to_uint8(values)


def _stored_pixels(ds: pydicom.Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as error:  # pixel handlers raise many types (missing codec, bad data)
        raise ImageDecodeError(f"truncated or undecodable DICOM pixel data ({error})") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour (secondary capture): luminance
        pixels = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return pixels


def read_dicom(path: str | Path) -> tuple[np.ndarray, dict]:
    """Decode a DICOM radiograph to uint8 grayscale (lungs dark, bone bright).

    Args:
        path: the DICOM file.

    Returns:
        ``(image, metadata)``: a 2-D uint8 array and the fields of
        ``read_dicom_metadata``.

    Raises:
        ImageDecodeError: not a DICOM, truncated, absurd dimensions or undecodable pixels.
    """
    ds = _open(path, stop_before_pixels=False)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageDecodeError("not an image (DICOM without pixel data)")
    check_dimensions(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)))
    stored = _stored_pixels(ds)
    try:
        image = _display_values(ds, stored)
    except Exception as error:  # malformed LUT or rescale attributes
        raise ImageDecodeError(f"cannot apply the DICOM LUTs ({error})") from None
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = 255 - image
    return image, _metadata(ds)
