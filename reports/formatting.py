"""Numbers as the report shows them: significant digits, p-values, intervals, estimates."""

from __future__ import annotations

from typing import Any

NOT_AVAILABLE = "not available"


def format_number(value: Any, digits: int = 3) -> str:
    """A number for humans: ints as is, floats to ``digits`` significant digits.

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
    return f"{value:.{digits}g}"


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
    """A metric as written by the models layer (a number or ``{value, ci}``) with its CI."""
    if isinstance(value, dict):
        text = format_number(value.get("value"))
        interval = format_ci(value.get("ci"))
        return f"{text} {interval}" if interval else text
    return NOT_AVAILABLE if value is None else format_number(value)
