"""Atomic file writes (a reader sees the old content or the complete new one, never half),
CSV files that are safe to open in a spreadsheet, and text files read as UTF-8 with errors
that name the file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from audit.core.errors import InputError


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write a file so that readers see either the old content or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Private per process and thread: two threads writing one file must not share a temp.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_text(path: str | Path, kind: str) -> str:
    """The text of the file at ``path``, which must be UTF-8.

    Args:
        path: The file.
        kind: What the file is, for the message (``"config file"``, ``"policy file"``).

    Raises:
        InputError: naming the file when it cannot be read or, for text that is not UTF-8,
            the offset and value of the first byte that is not.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read {kind} ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: a {kind} must be UTF-8 text; byte {error.start} "
                         f"is not (0x{error.object[error.start]:02x}: {error.reason}); "
                         "save it as UTF-8") from None


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): a
# label or file name from an untrusted folder must not become one when a reviewer opens
# a CSV the tool wrote. Such cells are written behind a single quote, which spreadsheets
# show as text, and `restore_csv_cells` takes it off again when the tool reads its CSVs.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _neutralise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def _restore(value: Any) -> Any:
    if (isinstance(value, str) and value[:1] == "'" and value[1:].startswith(FORMULA_STARTS)
            and not _is_number(value[1:])):
        return value[1:]
    return value


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` as CSV atomically, formula-like text cells neutralised.

    Negative numbers ("-0.5") stay as they are: a spreadsheet reads them as numbers.
    """
    with atomic_write(path) as handle:
        frame.map(_neutralise).to_csv(handle, index=False)


def restore_csv_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` read from a CSV written by ``write_csv``, the neutralising quotes removed."""
    return frame.map(_restore)
