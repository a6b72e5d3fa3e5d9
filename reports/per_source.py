"""Accuracy per image source, from the checks that measured it, as one table.

Three checks measure it (each optional; the table holds whichever ran):

- ``performance.within_source``, ``tables["per_source"]``: the audited model on each
  source's internal test images, rows ``{source, n, labels, accuracy, accuracy_ci_low,
  accuracy_ci_high, target_recall, baseline_accuracy, chance, note}``;
- ``generalization.leave_one_source_out``, ``tables["by_held_out_source"]``: a model
  retrained without each source, rows ``{held_out, n_external, accuracy_external,
  accuracy_internal, p_value, reason, ...}``;
- ``generalization.external``, ``tables["per_source"]``: sources outside the training
  data, rows ``{source, n, accuracy, accuracy_ci_low, accuracy_ci_high,
  internal_accuracy, p_value}``.

Rows are copied, never recomputed; a missing value is None (shown as a dash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.core.result import AuditResult
from probes.base import CheckResult
from reports.narrative import EXTERNAL, LEAVE_ONE_OUT, WITHIN_SOURCE


@dataclass(frozen=True)
class SourceRow:
    """One source under one evaluation, as the report's per-source table shows it."""

    source: str
    evaluation: str  # "internal test", "held out of training", "external"
    check_id: str
    n: int | None
    accuracy: dict[str, Any] | None  # {"value", "ci"} for ``reports.formatting.format_estimate``
    internal_accuracy: float | None = None  # what the source is compared with
    baseline_accuracy: float | None = None  # the source-only baseline
    chance: float | None = None
    target_recall: float | None = None
    labels: int | None = None  # distinct labels among the source's images
    p_value: float | None = None  # the source against the internal accuracy
    note: str = ""  # why a source was not (fully) evaluated; without accuracy, not at all


def per_source_rows(result: AuditResult) -> list[SourceRow]:
    """The per-source rows of the checks that ran: internal test, then held-out, then
    external sources."""
    checks = {check.check_id: check for check in result.checks if check.ran}
    rows: list[SourceRow] = []
    if WITHIN_SOURCE in checks:
        rows += _within(checks[WITHIN_SOURCE])
    if LEAVE_ONE_OUT in checks:
        rows += _held_out(checks[LEAVE_ONE_OUT])
    if EXTERNAL in checks:
        rows += _external(checks[EXTERNAL])
    return rows


def _estimate(row: dict[str, Any], key: str) -> dict[str, Any] | None:
    if row.get(key) is None:
        return None
    return {"value": row[key], "ci": [row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")]}


def _within(check: CheckResult) -> list[SourceRow]:
    return [SourceRow(source=str(row.get("source")), evaluation="internal test",
                      check_id=check.check_id, n=row.get("n"),
                      accuracy=_estimate(row, "accuracy"),
                      baseline_accuracy=row.get("baseline_accuracy"), chance=row.get("chance"),
                      target_recall=row.get("target_recall"), labels=row.get("labels"),
                      note=row.get("note") or "")
            for row in check.tables.get("per_source", [])]


def _held_out(check: CheckResult) -> list[SourceRow]:
    return [SourceRow(source=str(row.get("held_out")), evaluation="held out of training",
                      check_id=check.check_id, n=row.get("n_external"),
                      accuracy=({"value": row["accuracy_external"]}
                                if row.get("accuracy_external") is not None else None),
                      internal_accuracy=row.get("accuracy_internal"),
                      p_value=row.get("p_value"), note=row.get("reason") or "")
            for row in check.tables.get("by_held_out_source", [])]


def _external(check: CheckResult) -> list[SourceRow]:
    return [SourceRow(source=str(row.get("source")), evaluation="external",
                      check_id=check.check_id, n=row.get("n"),
                      accuracy=_estimate(row, "accuracy"),
                      internal_accuracy=row.get("internal_accuracy"),
                      p_value=row.get("p_value"))
            for row in check.tables.get("per_source", [])]
