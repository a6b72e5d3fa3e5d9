"""``report.html``: one self-contained page a reviewer can sign a model off from.

CSS is inlined and figures are embedded as ``data:`` URIs, so the file opens anywhere with
no network and no side files. Jinja2 autoescaping is on: every string that came from data
or metadata (source names, labels, captions, reasons) is shown as text, never as markup.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from audit.core.io import atomic_write
from audit.core.result import SCHEMA_VERSION, AuditResult
from reports.figures import prune_figure_memo
from reports.formatting import (
    VERDICT_WORDS,
    format_estimate,
    format_number,
    format_p,
    is_estimate,
)
from reports.review import build_review
from reports.view import build_view

TEMPLATE = "report.html"
STYLESHEET = "report.css"

VERDICT_TEXTS = {
    "pass": "No gating check found evidence that the model relies on a shortcut.",
    "fail": "Do not release: the checks below found evidence of shortcut learning, or "
            "could not show its absence.",
    "unjudged": "No policy has been applied yet; run `cxr-audit gate` on this run folder.",
}


def render_html(result: AuditResult, run_dir: Path) -> str:
    """The report page for ``result`` as one HTML string.

    Args:
        result: The audit to show (normally judged by the gate).
        run_dir: The run folder that figure specs' npz paths are relative to.
    """
    environment = _environment()
    template = environment.get_template(TEMPLATE)
    return template.render(
        view=build_view(result, Path(run_dir)),
        review=build_review(result),
        css=Markup(_stylesheet()),  # our own packaged file, not data: safe to inline raw
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        schema_version=SCHEMA_VERSION,
        verdict_words=VERDICT_WORDS,
        verdict_texts=VERDICT_TEXTS,
    )


def write_html(result: AuditResult, path: str | Path, run_dir: str | Path | None = None) -> Path:
    """Write the report page to ``path`` atomically, replacing any previous file.

    Args:
        result: The audit to show.
        path: Where to write, e.g. ``<run>/report.html``.
        run_dir: The run folder for figure data. Defaults to None (``path``'s folder).

    Returns:
        ``path``.
    """
    path = Path(path)
    run_dir = Path(run_dir) if run_dir is not None else path.parent
    started = time.time()
    page = render_html(result, run_dir)
    with atomic_write(path, "wb") as handle:  # bytes: UTF-8 whatever the locale
        handle.write(page.encode("utf-8"))
    prune_figure_memo(run_dir, started)
    return path


# Bidirectional-text controls (U+202A-202E, U+2066-2069, the marks U+200E/200F/061C) in a
# file name or label can make the report show text in another order than it has ("Trojan
# Source"). Every value the template prints shows them as their code point instead.
BIDI_CONTROLS = {code: f"[U+{code:04X}]" for code in
                 (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def _visible_bidi(value: Any) -> Any:
    if isinstance(value, Markup):  # already escaped: the replacements hold no markup
        return Markup(str(value).translate(BIDI_CONTROLS))
    if isinstance(value, str):
        return value.translate(BIDI_CONTROLS)
    return value


def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("reports", "templates"), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True, finalize=_visible_bidi)
    environment.filters.update(num=format_number, pval=format_p, estimate=format_estimate,
                               columns=_columns, pretty_json=_pretty_json)
    environment.filters["as_rows"] = _as_rows
    environment.tests.update(estimate=is_estimate, record_map=_is_record_map)
    return environment


def _stylesheet() -> str:
    return (resources.files("reports") / "templates" / STYLESHEET).read_text(encoding="utf-8")


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of a list of row dicts, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _is_record_map(value: Any) -> bool:
    """A mapping of names to flat records (e.g. per-source quality): shown as one table."""
    return (isinstance(value, dict) and bool(value) and all(
        isinstance(row, dict) and not is_estimate(row)
        and not any(isinstance(cell, (dict, list)) and not is_estimate(cell)
                    for cell in row.values())
        for row in value.values()))


def _as_rows(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": name, **row} for name, row in records.items()]


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)
