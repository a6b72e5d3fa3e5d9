"""Read a dataset manifest: a CSV or Parquet table with one row per image.

Required columns: ``path`` (relative to the manifest's folder, or absolute), ``label`` and
``source``. Optional: ``patient_id``, ``view``, ``mask_path``; any other column is kept
unchanged. Labels are mapped onto the paper's four classes (``CLASSES``) through a
configurable mapping, so a manifest may say ``COVID-19`` or ``pneumonia``.

Problems with the file itself (unreadable, missing required columns) raise ``InputError``.
Problems with single rows (unknown label, missing source, missing file) never raise: the
row moves to ``Manifest.quarantined`` with its reason, so a run goes on with the good rows
and the bad ones stay visible.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from audit.core.config import CLASSES
from audit.core.errors import InputError
from audit.core.io import restore_csv_cells

REQUIRED_COLUMNS = ("path", "label", "source")
OPTIONAL_COLUMNS = ("patient_id", "view", "mask_path")
QUARANTINE_COLUMNS = ("path", "row", "reason")


@dataclass(frozen=True)
class Manifest:
    """A read manifest, split into usable rows and quarantined rows.

    ``rows`` (index ``0..N-1``) has absolute ``path`` and ``mask_path`` (empty string when
    none), a canonical ``label`` in ``CLASSES``, a never-empty ``patient_id`` (falls back
    to the image path), ``view`` ("" when unknown), a ``row`` column (1-based position of
    the row in the manifest file, header not counted) and every other original column.
    ``quarantined`` has ``path, row, reason`` first, then the original columns.
    """

    rows: pd.DataFrame
    quarantined: pd.DataFrame
    path: Path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file with every cell as a string (empty cells as "").

    Raises:
        InputError: the file is missing, unreadable or not a table.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path).fillna("").astype(str)
        else:
            table = restore_csv_cells(pd.read_csv(path, dtype=str, keep_default_na=False))
    except (OSError, ValueError, ImportError, pd.errors.ParserError) as error:
        raise InputError(f"{path}: cannot read manifest table ({error})") from None
    return table.fillna("")


def canonical_label_lookup(label_map: dict[str, str] | None) -> dict[str, str]:
    """Lower-cased raw label -> class name: the class names themselves plus ``label_map``.

    Raises:
        InputError: a ``label_map`` value is not one of ``CLASSES``.
    """
    lookup = {name: name for name in CLASSES}
    for raw, target in (label_map or {}).items():
        if target not in CLASSES:
            raise InputError(
                f"label_map: {raw!r} maps to {target!r}, expected one of {', '.join(CLASSES)}"
            )
        lookup[str(raw).strip().lower()] = target
    return lookup


def _absolute(base: Path, value: str) -> str:
    if not value:
        return ""
    return os.path.normpath(os.path.join(base, value))


def _row_problems(row: pd.Series, lookup: dict[str, str]) -> list[str]:
    problems = []
    label = row["label"].strip().lower()
    if label not in lookup:
        problems.append(f"unknown label {row['label']!r} "
                        f"(expected one of {', '.join(CLASSES)} or a data.label_map key)")
    if not row["source"].strip():
        problems.append("missing source")
    if not row["path"]:
        problems.append("missing path")
    elif (problem := file_problem(row["path"])) is not None:
        problems.append(problem)
    if row["mask_path"] and (problem := file_problem(row["mask_path"])) is not None:
        problems.append(f"{problem.replace('file', 'mask file', 1)} {row['mask_path']}")
    return problems


def file_problem(path: str) -> str | None:
    """Why ``path`` is not a readable regular file, in a few words; None when it is one."""
    if os.path.isfile(path):
        return None
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "file is a symbolic link loop"
        if os.path.islink(path):
            return "file is a broken symbolic link (its target does not exist)"
        return "missing file"
    return "file is not a regular file (a folder or device)"


def read_manifest(path: str | Path, label_map: dict[str, str] | None = None) -> Manifest:
    """Read and check a manifest; bad rows are quarantined with their reasons.

    Args:
        path: CSV or Parquet manifest.
        label_map: raw label -> one of ``CLASSES`` (case-insensitive keys), on top of the
            class names themselves. Defaults to None (only the four class names).

    Returns:
        The ``Manifest`` (usable rows and quarantined rows).

    Raises:
        InputError: the manifest cannot be read or lacks a required column.
    """
    path = Path(os.path.abspath(path))
    table = read_table(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(
            f"{path}: manifest lacks required column(s) {', '.join(missing)} "
            f"(expected {', '.join(REQUIRED_COLUMNS)}; found {', '.join(map(str, table.columns))})"
        )
    reserved = [column for column in ("row", "reason") if column in table.columns]
    if reserved:
        raise InputError(f"{path}: column(s) {', '.join(reserved)} are reserved for the "
                         "quarantine report; rename them in the manifest")
    lookup = canonical_label_lookup(label_map)
    rows = table.copy()
    for column in OPTIONAL_COLUMNS:
        if column not in rows.columns:
            rows[column] = ""
    rows.insert(0, "row", range(1, len(rows) + 1))
    base = path.parent
    rows["path"] = [_absolute(base, value.strip()) for value in rows["path"]]
    rows["mask_path"] = [_absolute(base, value.strip()) for value in rows["mask_path"]]
    reasons = ["; ".join(_row_problems(row, lookup)) for _, row in rows.iterrows()]
    bad = pd.Series(reasons, index=rows.index) != ""
    good = rows[~bad].reset_index(drop=True)
    good["label"] = [lookup[value.strip().lower()] for value in good["label"]]
    good["source"] = good["source"].str.strip()
    patients = good["patient_id"].str.strip()
    good["patient_id"] = patients.where(patients != "", good["path"])
    quarantined = rows[bad].assign(reason=pd.Series(reasons, index=rows.index)[bad])
    return Manifest(rows=good, quarantined=quarantine_frame(quarantined), path=path)


def quarantine_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Reorder a frame of bad rows to ``path, row, reason`` first; index ``0..K-1``."""
    if frame.empty and not len(frame.columns):
        return pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    rest = [column for column in frame.columns if column not in QUARANTINE_COLUMNS]
    return frame[list(QUARANTINE_COLUMNS) + rest].reset_index(drop=True)
