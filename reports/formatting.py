"""Numbers as the report shows them: significant digits, p-values, intervals, estimates."""

from __future__ import annotations

from typing import Any

NOT_AVAILABLE = "not available"
VERDICT_WORDS = {"pass": "PASS", "fail": "FAIL", "unjudged": "NOT JUDGED"}


def format_number(value: Any, digits: int = 3) -> str:
    """A number for humans: ints with thousands separators, floats to ``digits``
    significant digits kept (``1.00``, ``0.500``), large floats rounded, tiny ones in
    scientific notation.

    Args:
        value: Number (or anything else, shown as text). None means missing.
        digits: Significant digits for floats. Defaults to 3.
    """
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) < 1e-12:
        value = 0.0  # residue (a difference of equal estimates) or -0.0: never "-0.00"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.{digits - 1}e}"
    return f"{value:#.{digits}g}".rstrip(".")  # '#' keeps 1.00 and 0.500 at 3 digits


def format_percent(value: Any) -> str:
    """A share as a whole percentage (``0.334`` as ``33%``); a dash when missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.0%}" if value == value else "–"  # nan: no share measured


def format_count(value: Any) -> str:
    """A count: an integral float (a count stored as 1.0) as an integer, else ``format_number``."""
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    return format_number(value)


def is_count_name(name: str) -> bool:
    """Whether a key or metric name names a count (``n``, ``n_test``, ``leaking test images``,
    ``zone_band_cells``), so an integral float is shown as an integer."""
    words = name.lower().replace("_", " ").split()
    return bool(words) and (words[0] in _COUNT_FIRST or words[-1] in _COUNT_LAST)


def status_words(status: Any) -> str:
    """A check status as words (``not_run`` as ``not run``)."""
    return str(status).replace("_", " ")


def format_p(value: float | None) -> str:
    """A p-value: ``<0.001`` below one in a thousand, else 2 significant digits."""
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.2g}"


def format_ci(ci: Any) -> str:
    """``[low, high]`` for a two-number interval, empty when there is none."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"[{format_number(ci[0])}, {format_number(ci[1])}]"


def format_estimate(value: Any) -> str:
    """A metric (a number, ``{value, ci}`` or ``{mean, ci_low, ci_high}``) with its CI."""
    if value is None:
        return NOT_AVAILABLE
    if not isinstance(value, dict):
        return format_number(value)
    text = format_number(metric_value(value))
    interval = format_ci(metric_ci(value))
    return f"{text} {interval}" if interval else text


def is_estimate(value: Any) -> bool:
    """Whether ``value`` is a metric dict: ``{value[, ci]}`` or ``{mean[, ci_low, ci_high]}``."""
    if not isinstance(value, dict):
        return False
    return ("value" in value and set(value) <= _VALUE_KEYS) or (
        "mean" in value and set(value) <= _MEAN_KEYS)


def metric_value(metric: Any) -> float | None:
    """The number of a metric written as a number or as an estimate dict (see ``is_estimate``)."""
    if isinstance(metric, dict):
        metric = metric.get("value", metric.get("mean"))
    if isinstance(metric, bool) or not isinstance(metric, (int, float)):
        return None
    return float(metric)


def metric_ci(metric: Any) -> tuple[float | None, float | None]:
    """The CI of an estimate dict, ``(None, None)`` when it has none."""
    if not isinstance(metric, dict):
        return None, None
    ci = metric.get("ci", (metric.get("ci_low"), metric.get("ci_high")))
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


_COUNT_FIRST = {"n", "hits", "dof", "seed", "seeds", "classes"}
_COUNT_LAST = {"n", "images", "rows", "cells", "count", "hits", "draws", "permutations", "dof",
               "tested", "support"}
_VALUE_KEYS = {"value", "ci", "support"}
_MEAN_KEYS = {"mean", "ci_low", "ci_high"}
