"""Logging and progress bars, quiet with ``--quiet``, JSON lines with ``--log-json``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("cxr_audit")


class _ConsoleHandler(logging.StreamHandler):
    """The handler ``configure`` installs; it says whether progress bars may be drawn."""

    def __init__(self, progress_bars: bool):
        super().__init__(sys.stderr)
        self.progress_bars = progress_bars


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": record.created, "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()})


def configure(quiet: bool = False, json_logs: bool = False) -> None:
    """Set up the ``cxr_audit`` logger once per process (the CLI calls this).

    JSON logs come without progress bars: a bar redrawn while a log line is written
    would cut that line in two, and a reader of JSON lines expects nothing else.
    """
    handler = _ConsoleHandler(progress_bars=not (quiet or json_logs))
    handler.setFormatter(_JsonFormatter() if json_logs else logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr, unless ``configure`` made the logger quiet or
    JSON (bars are drawn when it was never called: a library user's logging is theirs)."""
    bars = all(getattr(handler, "progress_bars", True) for handler in log.handlers)
    return iter(tqdm(items, desc=desc, total=total, disable=not bars, leave=False,
                     file=sys.stderr, dynamic_ncols=True))
