"""Logging and progress, quiet with ``--quiet``, JSON lines with ``--log-json``.

Progress is a redrawn bar only where someone watches it: on a terminal (stderr a TTY)
and neither quiet nor JSON. Anywhere else (a log file, a pipe, CI) a bar's carriage
returns would glue its redraws onto the next log line, so progress is plain log lines
instead: one when a loop starts, one per tenth of it (when some seconds have passed since
the last line, so a quick loop is two lines) and one when it ends.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("cxr_audit")
PLAIN_STEPS = 10  # plain progress lines per loop of known length, besides the first
PLAIN_MIN_SECONDS = 5.0  # least time between two plain progress lines within a loop


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
    """Iterate with a progress bar on a terminal, else with plain progress log lines.

    A bar is drawn when stderr is a TTY and ``configure`` made the logger neither quiet nor
    JSON (also when it was never called: a library user's logging is theirs); otherwise
    ``desc`` and the count go to the logger at info level (silent when quiet).

    Args:
        items: What to iterate over.
        desc: What the loop does, e.g. ``"decoding images"``.
        total: The number of items when ``items`` has no ``len``. Defaults to None.
    """
    bars = all(getattr(handler, "progress_bars", True) for handler in log.handlers)
    if bars and sys.stderr.isatty():
        return iter(tqdm(items, desc=desc, total=total, leave=False, file=sys.stderr,
                         dynamic_ncols=True))
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    return _plain_progress(items, desc, total)


def _plain_progress(items: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    """``items``, logging ``desc: done/total`` at the start, after each tenth reached at
    least ``PLAIN_MIN_SECONDS`` after the previous line, and at the end."""
    started = last_line = time.perf_counter()
    log.info("%s: 0/%s", desc, total if total is not None else "?")
    # Item counts after which a line is due: each tenth of the way, rounded up (the
    # last one is the end line).
    tenths = {-(-total * step // PLAIN_STEPS) for step in range(1, PLAIN_STEPS)} if total else set()
    due = sorted(tenths - {total})
    done = 0
    for item in items:
        yield item
        done += 1
        if due and done == due[0]:
            due.pop(0)
            if time.perf_counter() - last_line >= PLAIN_MIN_SECONDS:
                last_line = time.perf_counter()
                log.info("%s: %d/%d", desc, done, total)
    log.info("%s: %d done in %.1f s", desc, done, time.perf_counter() - started)
