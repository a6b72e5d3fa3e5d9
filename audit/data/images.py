"""Decode images once and keep them in a content-addressed, memory-mapped image store.

``load_dataset`` reads a manifest, decodes every usable row to grayscale, resizes it to
the configured size (antialiased; lung masks with nearest neighbour, stored 0/1) and
writes the arrays into a ``StageCache`` stage keyed by the manifest content, each file's
size and modification time, and the image size. A second run on the same data reuses the
stage and decodes nothing; the returned arrays are memory-mapped from it. Rows whose
image or mask cannot be decoded are quarantined with the reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from PIL import Image

from audit.core.cache import StageCache
from audit.core.errors import InputError
from audit.core.io import restore_csv_cells, write_csv
from audit.core.progress import log, progress
from audit.data.dataset import Dataset
from audit.data.manifest import Manifest, quarantine_frame, read_manifest
from audit.data.pixels import ImageDecodeError, decode_raster

__all__ = ["ImageDecodeError", "decode_image", "load_dataset", "open_dataset"]

STAGE = "images"
DECODER_VERSION = "1"
"""Bumped when decoding or resizing changes, so stored images are not reused."""
_DICOM_SUFFIXES = (".dcm", ".dicom")
_COPY_CHUNK = 256


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def decode_image(path: str | Path) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF/DICOM file to a 2-D uint8 grayscale array.

    Header dimensions are checked before decoding (decompression-bomb guard).

    Raises:
        ImageDecodeError: with a short reason ("missing file", "empty file (0 bytes)",
            "not an image", "truncated image", "image dimensions WxH exceed the limit ...").
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        is_dicom = _is_dicom(path)
    except FileNotFoundError:
        raise ImageDecodeError("missing file") from None
    except OSError as error:
        raise ImageDecodeError(f"cannot read file ({error.strerror})") from None
    if not is_dicom:
        return decode_raster(path)
    from audit.data.dicom import read_dicom  # pydicom: only for a DICOM file

    return read_dicom(path)[0]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    binary = (mask > mask.max() / 2).astype(np.uint8) if mask.max() > 0 else mask * 0
    return np.asarray(Image.fromarray(binary).resize((size, size), Image.Resampling.NEAREST))


def _decode_into(rows: pd.DataFrame, size: int, images: np.ndarray,
                 masks: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Fill ``images``/``masks`` row by row; return ``has_mask`` and a reason per row."""
    has_mask = np.zeros(len(rows), dtype=bool)
    reasons = [""] * len(rows)
    for i, (path, mask_path) in enumerate(progress(
            zip(rows["path"], rows["mask_path"], strict=True), "decoding images", total=len(rows))):
        try:
            images[i] = _resize(decode_image(path), size)
        except ImageDecodeError as error:
            reasons[i] = str(error)
            continue
        if masks is not None and mask_path:
            try:
                masks[i] = _resize_mask(decode_image(mask_path), size)
                has_mask[i] = True
            except ImageDecodeError as error:
                reasons[i] = f"mask {mask_path}: {error}"
    return has_mask, reasons


def _copy_rows(source: np.ndarray, keep: np.ndarray, target_path: Path) -> None:
    """Write ``source[keep]`` to an .npy file chunk by chunk (never all in memory)."""
    positions = np.flatnonzero(keep)
    target = open_memmap(target_path, mode="w+", dtype=source.dtype,
                         shape=(len(positions),) + source.shape[1:])
    for start in range(0, len(positions), _COPY_CHUNK):
        chunk = positions[start:start + _COPY_CHUNK]
        target[start:start + len(chunk)] = source[chunk]
    target.flush()


def _write_store(manifest: Manifest, size: int, folder: Path) -> None:
    """Decode ``manifest`` into ``folder``: images.npy, masks.npy, has_mask.npy, tables."""
    rows = manifest.rows
    shape = (len(rows), size, size)
    images = open_memmap(folder / "all_images.npy", mode="w+", dtype=np.uint8, shape=shape)
    any_mask = bool((rows["mask_path"] != "").any())
    masks = open_memmap(folder / "all_masks.npy", mode="w+", dtype=np.uint8, shape=shape) if any_mask else None
    has_mask, reasons = _decode_into(rows, size, images, masks)
    keep = np.array([reason == "" for reason in reasons], dtype=bool)
    _copy_rows(images, keep, folder / "images.npy")
    if masks is not None and has_mask[keep].any():
        _copy_rows(masks, keep, folder / "masks.npy")
    del images, masks
    for name in ("all_images.npy", "all_masks.npy"):
        (folder / name).unlink(missing_ok=True)
    np.save(folder / "has_mask.npy", has_mask[keep])
    write_csv(rows[keep], folder / "manifest.csv")
    failed = rows[~keep].assign(reason=np.asarray(reasons, dtype=object)[~keep])
    quarantined = pd.concat([manifest.quarantined, quarantine_frame(failed)], ignore_index=True)
    write_csv(quarantined, folder / "quarantined.csv")
    log.info("decoded %d images into the image store, %d quarantined", int(keep.sum()), len(quarantined))


def _file_stamp(path: str) -> tuple[int, int]:
    """(size, mtime) of a file; (-1, -1) when absent (decoding then reports why)."""
    if not path:
        return (0, 0)
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def store_inputs(manifest: Manifest, size: int) -> dict:
    """What the image store depends on: manifest content, file size+mtime, image size."""
    table = hashlib.sha256(manifest.rows.to_csv(index=False).encode())
    table.update(manifest.quarantined.to_csv(index=False).encode())
    stamps = [(_file_stamp(p), _file_stamp(m))
              for p, m in zip(manifest.rows["path"], manifest.rows["mask_path"], strict=True)]
    return {"manifest": table.hexdigest()[:16], "files": np.asarray(stamps, dtype=np.int64),
            "image_size": int(size), "decoder": DECODER_VERSION}


def _read_table(path: Path) -> pd.DataFrame:
    table = restore_csv_cells(pd.read_csv(path, dtype=str, keep_default_na=False))
    if "row" in table.columns:
        table["row"] = table["row"].astype(np.int64)
    return table


def open_dataset(folder: str | Path, mmap: bool = True) -> Dataset:
    """Reopen a stored dataset from its image-store folder.

    Used by worker processes that receive only paths. The folder name is the stage key,
    i.e. the dataset's ``manifest_hash``.

    Args:
        folder: an ``images`` stage folder written by ``load_dataset``.
        mmap: memory-map the arrays (read-only) instead of reading them into memory.
            Defaults to True.

    Raises:
        InputError: the folder is not a complete image store.
    """
    folder = Path(folder)
    mode = "r" if mmap else None
    try:
        images = np.load(folder / "images.npy", mmap_mode=mode)
        has_mask = np.load(folder / "has_mask.npy")
        manifest = _read_table(folder / "manifest.csv")
        quarantined = _read_table(folder / "quarantined.csv")
    except OSError as error:
        raise InputError(f"{folder}: not a complete image store ({error})") from None
    mask_file = folder / "masks.npy"
    masks = np.load(mask_file, mmap_mode=mode) if mask_file.exists() else None
    return Dataset(manifest=manifest, images=images, masks=masks,
                   has_mask=has_mask if masks is not None else None,
                   mask_origin="manifest" if masks is not None else "none",
                   quarantined=quarantined, manifest_hash=folder.name)


def load_dataset(source: str | Path | Manifest, image_size: int, cache: StageCache | None = None,
                 label_map: dict[str, str] | None = None) -> Dataset:
    """Decode (or reuse) a manifest's images at ``image_size`` and return the ``Dataset``.

    Args:
        source: a manifest file or an already read ``Manifest``.
        image_size: side of the square images, in pixels.
        cache: the stage cache holding the image store. Defaults to None: decode into a
            temporary store and return in-memory arrays (nothing is kept on disk).
        label_map: raw label -> class, used when ``source`` is a path. Defaults to None.

    Returns:
        The dataset (arrays memory-mapped from the store when ``cache`` is given);
        ``manifest_hash`` is the store's stage key.

    Raises:
        InputError: unreadable manifest, or no row could be used.
    """
    manifest = source if isinstance(source, Manifest) else read_manifest(source, label_map)
    if manifest.rows.empty:
        raise _no_rows_error(manifest, manifest.quarantined)
    inputs = store_inputs(manifest, image_size)

    def compute(tmp: Path) -> None:
        _write_store(manifest, image_size, tmp)

    if cache is None:
        with tempfile.TemporaryDirectory(prefix="cxr-audit-images-") as tmp_root:
            dataset = open_dataset(StageCache(tmp_root).run(STAGE, inputs, compute), mmap=False)
    else:
        dataset = cache.run_and_load(STAGE, inputs, compute, open_dataset)
    if len(dataset) == 0:
        raise _no_rows_error(manifest, dataset.quarantined)
    if len(dataset.quarantined):
        log.warning("%s: %d row(s) quarantined (%s); run `cxr-audit data validate` for the list",
                    manifest.path, len(dataset.quarantined), _reason_summary(dataset.quarantined))
    return dataset


def _reason_summary(quarantined: pd.DataFrame) -> str:
    reasons = quarantined["reason"].value_counts().head(5)
    return "; ".join(f"{count}x {reason}" for reason, count in reasons.items())


def _no_rows_error(manifest: Manifest, quarantined: pd.DataFrame) -> InputError:
    return InputError(f"{manifest.path}: no usable rows "
                      f"({len(quarantined)} quarantined: {_reason_summary(quarantined)})")
