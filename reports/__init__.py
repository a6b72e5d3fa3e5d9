"""Renderers of an ``AuditResult``: self-contained HTML, JSON summary, JUnit XML, model card.

Reports never compute statistics; they show what the probes, the models layer and the
gate wrote. One writer per format, each given an explicit path; files are replaced
atomically, never renamed aside.
"""

from __future__ import annotations

from pathlib import Path

from audit.core.result import AuditResult
from reports.html import write_html
from reports.junit import write_junit
from reports.model_card import write_model_card
from reports.summary import read_summary, validate_summary, write_summary

REPORT_FILES = {"html": "report.html", "json": "summary.json", "junit": "junit.xml",
                "model_card": "model_card.md"}

__all__ = ["REPORT_FILES", "read_summary", "validate_summary", "write_html", "write_junit",
           "write_model_card", "write_reports", "write_summary"]


def write_reports(result: AuditResult, run_dir: Path) -> dict[str, Path]:
    """Write ``report.html``, ``summary.json``, ``junit.xml`` and ``model_card.md`` into
    ``run_dir``.

    Args:
        result: The audit, normally judged by the gate.
        run_dir: The run folder (created if needed); figure npz paths are relative to it.

    Returns:
        Format name (``html``, ``json``, ``junit``, ``model_card``) -> the file written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Machine-readable files first: the gate's record survives even if rendering breaks.
    return {
        "json": write_summary(result, run_dir / REPORT_FILES["json"]),
        "junit": write_junit(result, run_dir / REPORT_FILES["junit"]),
        "model_card": write_model_card(result, run_dir / REPORT_FILES["model_card"]),
        "html": write_html(result, run_dir / REPORT_FILES["html"], run_dir=run_dir),
    }
