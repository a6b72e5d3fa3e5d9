"""The report's reviewer-facing frame: summary, what was audited, per-source table, sign-off,
standards crosswalk. One ``ReviewView`` for the HTML template and the model card.

Every value is read from the result (``AuditResult.audited`` is computed by the
application before the reports); missing pieces read "not recorded".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.core.result import AuditResult
from probes.registry import specs
from reports.crosswalk import CrosswalkRow, crosswalk
from reports.formatting import format_number, status_words
from reports.narrative import WITHIN_SOURCE, executive_summary, headline_caveat
from reports.per_source import SourceRow, per_source_rows

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Override:
    """A check the policy relaxed from its default: ignored, or not required."""

    check_id: str
    title: str
    rule: str  # "ignored" or "not required"
    status: str  # the check's status in this run
    reason: str  # the policy's reason, or that it gives none


@dataclass(frozen=True)
class ReviewView:
    summary: list[str]
    caveat: str | None
    audited: dict[str, list[tuple[str, str]]]
    """Section ("Model", "Data", "Tool", "Policy") -> (label, value) rows."""
    date: str
    per_source: list[SourceRow]
    target_class: str
    overrides: list[Override]
    crosswalk: list[CrosswalkRow]


def build_review(result: AuditResult) -> ReviewView:
    """The reviewer-facing parts of the report for ``result``."""
    return ReviewView(
        summary=executive_summary(result),
        caveat=headline_caveat(result),
        audited=audited_rows(result.audited),
        date=str(result.audited.get("date") or NOT_RECORDED),
        per_source=per_source_rows(result),
        target_class=_target_class(result),
        overrides=accepted_overrides(result),
        crosswalk=crosswalk(result),
    )


def _target_class(result: AuditResult) -> str:
    """The class the per-source recall column follows: the within-source check's, else the
    run config's ``probes.target_class``."""
    for check in result.checks:
        if check.check_id == WITHIN_SOURCE and check.details.get("target_class"):
            return str(check.details["target_class"])
    config = result.provenance.get("config") or {}
    return str((config.get("probes") or {}).get("target_class", "target class"))


def audited_rows(audited: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """``AuditResult.audited`` as labelled rows, in the order a reviewer reads them."""
    model, data = audited.get("model") or {}, audited.get("data") or {}
    tool, policy = audited.get("tool") or {}, audited.get("policy") or {}
    rows = {
        "Model": [("file", model.get("file")), ("file SHA-256", model.get("sha256")),
                  ("identity hash (weights and preprocessing)", model.get("identity")),
                  ("backbone", model.get("backbone")), ("input mode", model.get("input_mode")),
                  ("origin", None if not model else
                   "trained by this audit" if model.get("trained_here") else "external model")],
        "Data": [("manifest", data.get("manifest")), ("manifest SHA-256", data.get("sha256")),
                 ("rows", None if not data else
                  f"{format_number(data.get('rows'))} ({format_number(data.get('rows_used'))} "
                  f"used, {format_number(data.get('rows_excluded'))} excluded)"),
                 ("sources", ", ".join(data["sources"]) if data.get("sources") else None),
                 ("synthetic", data.get("synthetic") or (None if not data else "no"))],
        "Tool": [("version", None if not tool else
                  f"{tool.get('name')} {tool.get('version') or '(version unknown)'}"),
                 ("git commit", None if not tool else
                  tool.get("git_commit") or "not a git checkout")],
        "Policy": [("name", policy.get("name")), ("SHA-256 of its JSON", policy.get("sha256"))],
    }
    if model.get("spec_file"):
        rows["Model"][1:1] = [("preprocessing spec", model["spec_file"]),
                              ("spec SHA-256", model.get("spec_sha256"))]
    return {section: [(label, NOT_RECORDED if value is None else str(value))
                      for label, value in items] for section, items in rows.items()}


def accepted_overrides(result: AuditResult) -> list[Override]:
    """The checks the judging policy ignores or does not require although the check's
    default rule gates or requires it, with the policy's reason."""
    defaults = {spec.id: spec.default for spec in specs()}
    statuses = {check.check_id: (check.title, str(check.status)) for check in result.checks}
    overrides = []
    for check_id, rule in (result.policy.get("checks") or {}).items():
        default = defaults.get(check_id)
        ignored = rule.get("gate") == "ignore" and (default is None or default.level != "ignore")
        relaxed = (not rule.get("required", True)
                   and (default is None or default.required))
        if not (ignored or relaxed):
            continue
        title, status = statuses.get(check_id, (check_id, "absent"))
        overrides.append(Override(
            check_id=check_id, title=title, rule="ignored" if ignored else "not required",
            status=status_words(status),
            reason=rule.get("reason") or "the policy gives no reason"))
    return overrides
