"""Build manifests from a folder tree, another CSV, or a folder of DICOM files.

Folder layouts: ``<root>/<source>/<label>/<image>`` or, with ``source`` given,
``<root>/<label>/<image>``. Labels are written as the folder names; ``read_manifest``
maps them onto the four classes (through ``data.label_map`` when they differ). Paths are
written relative to the manifest's folder when the image lies under it, absolute
otherwise. Files that do not fit the layout are skipped with a warning that names them,
never silently.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from audit.core.errors import InputError
from audit.core.io import write_csv
from audit.core.progress import log, progress
from audit.data.dicom import read_dicom_metadata
from audit.data.manifest import REQUIRED_COLUMNS, read_table
from audit.data.pixels import ImageDecodeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_COLUMNS = {"patient_id": "patient_id", "view_position": "view",
                 "manufacturer": "manufacturer", "institution": "institution"}
_SHOWN_SKIPPED = 5


def _manifest_path(image: Path, manifest_folder: Path) -> str:
    image = Path(os.path.abspath(image))
    if image.is_relative_to(manifest_folder):
        return str(image.relative_to(manifest_folder))
    return str(image)


def _write(frame: pd.DataFrame, out_csv: str | Path) -> pd.DataFrame:
    write_csv(frame, out_csv)
    log.info("wrote %s (%d rows)", out_csv, len(frame))
    return frame


def _walk(root: Path, source: str | None, suffixes: tuple[str, ...]) -> list[tuple[Path, str, str]]:
    """(file, source, label) for every image at the layout's depth; warn about the rest."""
    if not root.is_dir():
        raise InputError(f"{root}: expected a folder of images, found no such folder")
    depth = 2 if source else 3
    found, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = path.relative_to(root).parts
        if len(parts) != depth or path.suffix.lower() not in suffixes:
            skipped.append(str(path.relative_to(root)))
            continue
        found.append((path, source or parts[0], parts[-2]))
    if skipped:
        log.warning("%s: skipped %d file(s) outside the %s layout or with another type: %s%s",
                    root, len(skipped), "<label>/<image>" if source else "<source>/<label>/<image>",
                    ", ".join(skipped[:_SHOWN_SKIPPED]), " ..." if len(skipped) > _SHOWN_SKIPPED else "")
    if not found:
        raise InputError(f"{root}: no images ({', '.join(suffixes)}) found in the expected layout")
    return found


def _folder_frame(found: list[tuple[Path, str, str]], out_csv: Path) -> pd.DataFrame:
    folder = Path(os.path.abspath(out_csv.parent))
    return pd.DataFrame({"path": [_manifest_path(path, folder) for path, _, _ in found],
                         "label": [label for _, _, label in found],
                         "source": [source for _, source, _ in found]})


def import_folder(root: str | Path, out_csv: str | Path, source: str | None = None,
                  masks: str | Path | None = None,
                  patient_id_regex: str | None = None) -> pd.DataFrame:
    """Write a manifest for a folder tree of images.

    Args:
        root: ``<root>/<source>/<label>/<image>``, or ``<root>/<label>/<image>`` with ``source``.
        out_csv: manifest to write (atomically).
        source: one source name for the whole tree. Defaults to None (first folder level).
        masks: a folder of lung masks, matched to the images by path relative to the two
            folders (any image suffix), else by a file stem unique among the masks.
            Defaults to None (no ``mask_path`` column).
        patient_id_regex: a regular expression searched in each image's file name whose
            first group (or group ``patient``) is the patient id. Defaults to None.

    Returns:
        The manifest table written.

    Raises:
        InputError: ``root`` is not a folder or holds no image in the layout, ``masks`` is
            not a folder, or the regex does not compile or has no group.
    """
    out_csv = Path(out_csv)
    found = _walk(Path(root), source, IMAGE_SUFFIXES)
    frame = _with_masks_and_patients(_folder_frame(found, out_csv), found, Path(root), out_csv,
                                     masks, patient_id_regex)
    return _write(frame, out_csv)


def import_dicom(root: str | Path, out_csv: str | Path, source: str | None = None,
                 masks: str | Path | None = None,
                 patient_id_regex: str | None = None) -> pd.DataFrame:
    """Like ``import_folder`` for DICOM files, adding header fields as columns.

    ``patient_id``, ``view`` (ViewPosition), ``manufacturer`` and ``institution`` come
    from each file's header ("" when absent; ``patient_id_regex`` fills the patient ids a
    header lacks). A file whose header cannot be read keeps empty fields and is logged;
    ``data validate`` reports it.
    """
    out_csv = Path(out_csv)
    found = _walk(Path(root), source, DICOM_SUFFIXES)
    frame = _folder_frame(found, out_csv)
    fields = {column: [] for column in DICOM_COLUMNS.values()}
    for path, _, _ in progress(found, "reading DICOM headers"):
        try:
            meta = read_dicom_metadata(path)
        except ImageDecodeError as error:
            log.warning("%s: DICOM header unreadable (%s); its fields are left empty", path, error)
            meta = {}
        for key, column in DICOM_COLUMNS.items():
            fields[column].append(meta.get(key, ""))
    frame = _with_masks_and_patients(frame.assign(**fields), found, Path(root), out_csv, masks,
                                     patient_id_regex)
    return _write(frame, out_csv)


def _with_masks_and_patients(frame: pd.DataFrame, found: list[tuple[Path, str, str]],
                             root: Path, out_csv: Path, masks: str | Path | None,
                             patient_id_regex: str | None) -> pd.DataFrame:
    """``frame`` with ``mask_path`` matched from ``masks`` and patient ids from the regex,
    each gap reported with its count."""
    images = [path for path, _, _ in found]
    if masks is not None:
        folder = Path(os.path.abspath(out_csv.parent))
        matched = match_masks(images, root, Path(masks))
        frame = frame.assign(mask_path=[_manifest_path(m, folder) if m else "" for m in matched])
    if patient_id_regex is not None:
        from_names = patient_ids_from_names(images, patient_id_regex)
        given = frame["patient_id"] if "patient_id" in frame.columns else pd.Series([""] * len(frame))
        frame = frame.assign(patient_id=[old or new for old, new in
                                         zip(given.tolist(), from_names, strict=True)])
    warn_missing_patient_ids(frame)
    return frame


def match_masks(images: list[Path], image_root: Path, mask_root: Path) -> list[Path | None]:
    """Each image's mask in ``mask_root``: same relative path (any image suffix), else the
    only mask with the image's file stem; None when neither exists. Unmatched images and
    masks matching no image are logged with their counts and first names."""
    if not mask_root.is_dir():
        raise InputError(f"--masks {mask_root}: expected a folder of lung masks, found no "
                         "such folder")
    candidates = sorted(p for p in mask_root.rglob("*")
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    by_relative = {p.relative_to(mask_root).with_suffix(""): p for p in candidates}
    by_stem: dict[str, list[Path]] = {}
    for mask in candidates:
        by_stem.setdefault(mask.stem, []).append(mask)
    matched = []
    for image in images:
        relative = image.relative_to(image_root).with_suffix("")
        same_stem = by_stem.get(image.stem, [])
        matched.append(by_relative.get(relative) or (same_stem[0] if len(same_stem) == 1 else None))
    unmatched = [str(image.relative_to(image_root)) for image, mask in zip(images, matched, strict=True)
                 if mask is None]
    unused = sorted(set(candidates) - set(m for m in matched if m is not None))
    if unmatched:
        log.warning("%s: %d of %d image(s) have no mask in %s (they get U-Net masks where the "
                    "config segments): %s%s", image_root, len(unmatched), len(images), mask_root,
                    ", ".join(unmatched[:_SHOWN_SKIPPED]), " ..." if len(unmatched) > _SHOWN_SKIPPED else "")
    if unused:
        log.warning("%s: %d mask(s) match no image: %s%s", mask_root, len(unused),
                    ", ".join(str(m.relative_to(mask_root)) for m in unused[:_SHOWN_SKIPPED]),
                    " ..." if len(unused) > _SHOWN_SKIPPED else "")
    return matched


def patient_ids_from_names(images: list[Path], pattern: str) -> list[str]:
    """The patient id in each file name: group ``patient`` of ``pattern``, else its first
    group; "" (and a warning with the count) where the pattern does not match."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InputError(f"--patient-id-regex {pattern!r}: not a valid regular expression "
                         f"({error})") from None
    if regex.groups == 0:
        raise InputError(f"--patient-id-regex {pattern!r}: needs a group around the patient "
                         "id, e.g. '^(P\\d+)_' or '(?P<patient>\\d+)'")
    group = "patient" if "patient" in regex.groupindex else 1
    ids = []
    for image in images:
        found = regex.search(image.name)
        ids.append(found.group(group) or "" if found else "")
    misses = ids.count("")
    if misses:
        log.warning("--patient-id-regex %r matched no patient id in %d of %d file name(s), "
                    "e.g. %s", pattern, misses, len(ids),
                    next(image.name for image, pid in zip(images, ids, strict=True) if not pid))
    return ids


def warn_missing_patient_ids(frame: pd.DataFrame) -> None:
    """Say how many rows lack a patient id and what that disables."""
    ids = frame["patient_id"] if "patient_id" in frame.columns else pd.Series([""] * len(frame))
    missing = int((ids.astype(str).str.strip() == "").sum())
    if missing:
        log.warning("%d of %d image(s) have no patient id: each counts as its own patient, so "
                    "the patient half of data.leakage and the patient-grouped splits cannot "
                    "keep one patient's images together (give --patient-id-regex, a "
                    "patient_id column, or DICOM headers with PatientID)", missing, len(frame))


def _rebase(value: str, old_folder: Path, new_folder: Path) -> str:
    if not value or os.path.isabs(value):
        return value
    return _manifest_path(old_folder / value, new_folder)


def import_csv(csv_path: str | Path, out_csv: str | Path, renames: dict[str, str]) -> pd.DataFrame:
    """Rewrite an existing table as a manifest: rename columns, rebase relative paths.

    Args:
        csv_path: the table (paths in it relative to its own folder, or absolute).
        out_csv: manifest to write (atomically); other columns are kept.
        renames: old column name -> manifest column name (e.g. ``{"file": "path"}``).

    Raises:
        InputError: unreadable table, a rename of a column it lacks, or a required
            column still missing after renaming.
    """
    csv_path, out_csv = Path(csv_path), Path(out_csv)
    table = read_table(csv_path)
    unknown = [old for old in renames if old not in table.columns]
    if unknown:
        raise InputError(f"{csv_path}: cannot rename missing column(s) {', '.join(unknown)} "
                         f"(columns: {', '.join(table.columns)})")
    table = table.rename(columns=renames)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"{csv_path}: no column {', '.join(missing)} after renaming "
                         f"(columns: {', '.join(table.columns)}); map one with a rename")
    old_folder, new_folder = (Path(os.path.abspath(p.parent)) for p in (csv_path, out_csv))
    for column in ("path", "mask_path"):
        if column in table.columns:
            table[column] = [_rebase(value, old_folder, new_folder) for value in table[column]]
    warn_missing_patient_ids(table)
    return _write(table, out_csv)
