"""``cxr-audit data validate``: check every row of a manifest and list its problems.

One line per problem, each naming the row, the file and the reason: rows the manifest
reader quarantines (unknown label, missing source, missing file), files that do not
decode (not an image, truncated, zero-size or absurd dimensions), lung masks that do not
decode, are empty or do not fit their image, exact duplicates
(content hash), near-duplicates (perceptual hash, within and across sources), the same
image under two labels, and patients split across test and another part when the
manifest has a ``split`` column. Nothing here raises for a bad row; only a manifest that
cannot be read at all raises ``InputError``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.core.progress import progress
from audit.data.hashing import (
    NEAR_DUPLICATE_DISTANCE,
    NEAR_DUPLICATE_HASH_SIZE,
    confirmed_near_duplicates,
    content_hash,
    dhash,
    pack_hashes,
)
from audit.data.images import ImageDecodeError, decode_image
from audit.data.manifest import Manifest, read_manifest

PROBLEM_COLUMNS = ["path", "row", "reason"]
_SHOWN_ROWS = 5


@dataclass(frozen=True)
class ValidationReport:
    """The problems found in one manifest (one row of ``problems`` per problem)."""

    manifest: Path
    problems: pd.DataFrame
    """Columns ``path, row, reason``; ``row`` is the 1-based data row in the manifest."""
    n_rows: int
    n_ok: int
    """Rows with no problem at all."""

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 when any problem was found."""
        return 0 if self.problems.empty else 1

    def to_text(self) -> str:
        """A plain-text table, one line per problem, after a one-line summary."""
        head = (f"{self.manifest}: {self.n_rows} rows, {self.n_ok} ok, "
                f"{len(self.problems)} problem(s)")
        if self.problems.empty:
            return head + "\n"
        base = self.manifest.parent
        shown = [_relative(path, base) for path in self.problems["path"]]
        width = min(max(len(text) for text in shown), 70)
        lines = [head, f"{'row':>6}  {'file':<{width}}  reason"]
        for row, text, reason in zip(self.problems["row"], shown, self.problems["reason"], strict=True):
            lines.append(f"{row:>6}  {text:<{width}}  {reason}")
        return "\n".join(lines) + "\n"


def _relative(path: str, base: Path) -> str:
    candidate = Path(path)
    return str(candidate.relative_to(base)) if candidate.is_relative_to(base) else path


@dataclass
class _Scan:
    """Per-row results of reading every file once."""

    content: list[str]
    hashes: list[int | None]
    problems: list[tuple[int, str]]  # (position in rows, reason)


_ASPECT_TOLERANCE = 0.02


def _mask_problem(mask_path: str, image: np.ndarray | None) -> str:
    """Why a row's lung mask is unusable, or "" when it is fine."""
    try:
        mask = decode_image(mask_path)
    except ImageDecodeError as error:
        return f"mask {mask_path}: {error}"
    if not mask.any():
        return f"mask {mask_path}: empty (no lung pixels)"
    if image is not None:
        image_aspect, mask_aspect = image.shape[1] / image.shape[0], mask.shape[1] / mask.shape[0]
        if abs(mask_aspect / image_aspect - 1) > _ASPECT_TOLERANCE:
            return (f"mask {mask_path}: {mask.shape[1]}x{mask.shape[0]} does not fit the "
                    f"{image.shape[1]}x{image.shape[0]} image (aspect ratio)")
    return ""


def _scan_files(rows: pd.DataFrame) -> _Scan:
    scan = _Scan(content=[""] * len(rows), hashes=[None] * len(rows), problems=[])
    pairs = zip(rows["path"], rows["mask_path"], strict=True)
    for i, (path, mask_path) in enumerate(progress(pairs, "validating images", total=len(rows))):
        image = None
        try:
            image = decode_image(path)
            scan.content[i] = content_hash(path)
            scan.hashes[i] = dhash(image, NEAR_DUPLICATE_HASH_SIZE)
        except ImageDecodeError as error:
            scan.problems.append((i, str(error)))
        if mask_path and (problem := _mask_problem(mask_path, image)):
            scan.problems.append((i, problem))
    return scan


def _pair_reason(rows: pd.DataFrame, first: int, second: int, what: str) -> str:
    a, b = rows.iloc[first], rows.iloc[second]
    if a["label"] != b["label"]:
        reason = f"same image under two labels: {what} row {a['row']} ({a['label']}), here {b['label']}"
    else:
        reason = f"{what} row {a['row']}"
    if a["source"] != b["source"]:
        reason += f" (across sources {a['source']}, {b['source']})"
    return reason


def _exact_duplicates(rows: pd.DataFrame, content: list[str]) -> tuple[list[tuple[int, str]], set]:
    """Problems for every copy after the first; also the pairs already explained."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(content):
        if digest:
            groups[digest].append(i)
    problems, same = [], set()
    for members in groups.values():
        for other in members[1:]:
            problems.append((other, _pair_reason(rows, members[0], other, "exact duplicate of")))
        same.update((a, b) for a in members for b in members if a < b)
    return problems, same


def _near_duplicates(rows: pd.DataFrame, hashes: list[int | None], max_distance: int,
                     exact: set) -> list[tuple[int, str]]:
    positions = [i for i, value in enumerate(hashes) if value is not None]
    packed = pack_hashes([hashes[i] for i in positions], NEAR_DUPLICATE_HASH_SIZE)
    problems = []
    for a, b, distance, _ in confirmed_near_duplicates(
            packed, lambda i: decode_image(rows["path"].iloc[positions[i]]), max_distance,
            wanted=lambda i, j: (positions[i], positions[j]) not in exact):
        first, second = positions[a], positions[b]
        what = f"near-duplicate (dhash distance {distance}) of"
        problems.append((second, _pair_reason(rows, first, second, what)))
    return problems


def _split_leaks(rows: pd.DataFrame) -> list[tuple[int, str]]:
    """Test rows of patients who also appear in another split."""
    if "split" not in rows.columns:
        return []
    split = rows["split"].astype(str).str.strip().str.lower()
    problems = []
    for patient, members in rows.groupby("patient_id").groups.items():
        parts = set(split[members])
        if "test" in parts and len(parts) > 1:
            others = rows.loc[[m for m in members if split[m] != "test"], "row"].tolist()
            listed = ", ".join(map(str, others[:_SHOWN_ROWS])) + (" ..." if len(others) > _SHOWN_ROWS else "")
            where = "/".join(sorted(parts - {"test"}))
            problems += [(m, f"patient {patient} is in test and in {where} (rows {listed})")
                         for m in members if split[m] == "test"]
    return problems


def _problem_frame(manifest: Manifest, found: list[tuple[int, str]]) -> pd.DataFrame:
    rows = manifest.rows
    scanned = pd.DataFrame({"path": [rows.iloc[i]["path"] for i, _ in found],
                            "row": [int(rows.iloc[i]["row"]) for i, _ in found],
                            "reason": [reason for _, reason in found]})
    frame = pd.concat([manifest.quarantined[PROBLEM_COLUMNS], scanned], ignore_index=True)
    return frame.astype({"row": np.int64}).sort_values("row", kind="stable").reset_index(drop=True)


def validate_manifest(path: str | Path, label_map: dict[str, str] | None = None,
                      near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE) -> ValidationReport:
    """Check every row of a manifest; return all problems found.

    Args:
        path: CSV or Parquet manifest.
        label_map: raw label -> class, as for ``read_manifest``. Defaults to None.
        near_duplicate_distance: largest distance between two 256-bit difference hashes
            reported as a near-duplicate. Defaults to ``NEAR_DUPLICATE_DISTANCE`` (10).

    Returns:
        The ``ValidationReport``.

    Raises:
        InputError: the manifest itself cannot be read or lacks required columns.
    """
    manifest = read_manifest(path, label_map)
    rows = manifest.rows
    scan = _scan_files(rows)
    exact_problems, exact_pairs = _exact_duplicates(rows, scan.content)
    found = (scan.problems + exact_problems
             + _near_duplicates(rows, scan.hashes, near_duplicate_distance, exact_pairs)
             + _split_leaks(rows))
    problems = _problem_frame(manifest, found)
    n_rows = len(rows) + len(manifest.quarantined)
    if n_rows == 0:  # a header alone is not a clean data set
        problems = pd.DataFrame({"path": [str(manifest.path)], "row": [0],
                                 "reason": ["no data rows: the manifest has a header only"]})
        return ValidationReport(manifest=manifest.path, problems=problems, n_rows=0, n_ok=0)
    return ValidationReport(manifest=manifest.path, problems=problems, n_rows=n_rows,
                            n_ok=n_rows - problems["row"].nunique())
