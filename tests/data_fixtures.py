"""Small on-disk corpora for the data-layer tests (PNG files + manifests in tmp_path)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from audit.core.config import CLASSES
from audit.data.dataset import Dataset

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr-real"


def distinct_image(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random uint8 image; different seeds give clearly different pictures."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(6, 6)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` (a decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def write_manifest(folder: Path, rows: list[dict], name: str = "manifest.csv") -> Path:
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def good_corpus(folder: Path, n_per_class: int = 3, size: int = 48, seed: int = 0) -> Path:
    """A clean manifest: ``n_per_class`` distinct images per class, one patient each."""
    rows = []
    for k, label in enumerate(CLASSES):
        for i in range(n_per_class):
            number = k * n_per_class + i
            name = f"images/{label}_{i}.png"
            write_png(folder / name, distinct_image(seed * 1000 + number, size))
            rows.append({"path": name, "label": label, "source": f"site{k % 2}",
                         "patient_id": f"p{number}"})
    return write_manifest(folder, rows)


def table_dataset(labels: list[str], patients: list[str], size: int = 8) -> Dataset:
    """An in-memory Dataset (blank images) for tests that only need labels and groups."""
    manifest = pd.DataFrame({"path": [f"/x/{i}.png" for i in range(len(labels))],
                             "label": labels, "source": "s", "patient_id": patients,
                             "view": "", "mask_path": ""})
    return Dataset(manifest=manifest, images=np.zeros((len(labels), size, size), np.uint8))


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                bits_stored: int = 8, **header: str) -> Path:
    """A minimal CR DICOM file holding ``pixels`` (uint8 or uint16), plus header fields."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = DicomDataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
