"""reports.html: the page shows the verdict, every check and escapes all metadata."""

from __future__ import annotations

import pytest
from markupsafe import escape

from audit.core.result import AuditResult
from probes.base import CheckResult, Status
from reports import REPORT_FILES, write_reports
from reports.html import render_html, write_html
from reports.view import check_anchor
from tests.report_fixtures import build_audit_result

HOSTILE_SOURCE = "<script>window.__pwned = 'source'</script>"
HOSTILE_LABEL = "<script>window.__pwned = 'label'</script>"
SMALL = AuditResult(checks=(CheckResult(check_id="data.leakage", title="Leakage",
                                        status=Status.PASS, metric=0.0, threshold=0.0,
                                        gate="fail", summary="No leaked images."),),
                    verdict="pass")


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    """The rich fixture result and its page, rendered once (drawing takes seconds)."""
    run_dir = tmp_path_factory.mktemp("run")
    result = build_audit_result(run_dir)
    return result, render_html(result, run_dir)


def test_page_has_verdict_reasons_and_every_check(rich):
    result, page = rich
    assert 'class="verdict-word">FAIL<' in page
    tally = page.split('<p class="tally">', 1)[1].split("</p>", 1)[0]
    assert tally.startswith("9 checks:") and "FAIL</span> 2," in tally and "ERROR</span> 1" in tally
    for check in result.checks:
        assert f'id="{check_anchor(check.check_id)}"' in page
        assert check.check_id in page
    for reason in result.verdict_reasons:
        assert str(escape(reason)) in page


def test_blocking_list_names_failed_and_required_unrun_checks_only(rich):
    _, page = rich
    blocking = page.split('<ul class="blocking">', 1)[1].split("</ul>", 1)[0]
    for check_id in ("data.confounding", "attention.border",
                     "generalization.leave_one_source_out", "site.embedding"):
        assert check_id in blocking
    # passed, warned and not-required checks do not explain the failure
    for check_id in ("data.leakage", "ablation.class_size", "attention.outside_lung"):
        assert check_id not in blocking


def test_blocking_list_names_the_required_checks_the_gate_found_absent(tmp_path):
    result = AuditResult(checks=SMALL.checks, verdict="fail", absent_required=("site.image",))
    page = render_html(result, tmp_path)
    blocking = page.split('<ul class="blocking">', 1)[1].split("</ul>", 1)[0]
    assert "<code>site.image</code>: absent from the run" in blocking
    assert "data.leakage" not in blocking


def test_not_run_and_error_reasons_are_prominent(rich):
    _, page = rich
    assert "This check did not run:</strong> needs at least two sources" in page
    assert "This check crashed:</strong> ValueError: embedding has NaN rows" in page


def test_figures_are_inline_and_problems_visible(rich):
    _, page = rich
    assert page.count('src="data:image/png;base64,') >= 10
    assert "Cannot draw figure of kind &#39;pie&#39;" in page
    assert "missing.npz&#39; is missing" in page
    assert "http://" not in page and "https://" not in page


def test_models_metrics_and_provenance_are_shown(rich):
    _, page = rich
    assert "mobilenetv2/lung_masked" in page
    assert "0.530 [0.433, 0.625]" in page  # accuracy + accuracy_ci, as models.metrics writes
    folds = page.split("Cross-validation folds", 1)[1].split("</table>", 1)[0]
    assert folds.count("<tr>") == 4 and "confusion" not in folds  # header + 3 scalar rows
    assert 'alt="Cross-validated accuracy per model"' in page
    assert "3f9a0c1d2e4b5a69" in page and "Resolved configuration" in page


def test_metadata_is_escaped(tmp_path):
    result = build_audit_result(tmp_path, source=HOSTILE_SOURCE, label=HOSTILE_LABEL)
    page = render_html(result, tmp_path)
    assert "<script" not in page
    assert "&lt;script&gt;window.__pwned = &#39;source&#39;&lt;/script&gt;" in page
    assert "&lt;script&gt;window.__pwned = &#39;label&#39;&lt;/script&gt;" in page


def test_partial_unjudged_result_renders_not_available(tmp_path):
    result = AuditResult(checks=(CheckResult(check_id="site.image", title="Site",
                                             metric=float("nan")),))
    page = render_html(result, tmp_path)
    assert "NOT JUDGED" in page
    assert "No trained models in this run" in page
    assert "Provenance not available" in page
    assert "Data summary not available" in page


def test_passing_verdict(tmp_path):
    page = render_html(SMALL, tmp_path)
    assert 'class="verdict-word">PASS<' in page and '<ul class="blocking">' not in page


def test_write_html_overwrites_in_place(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    assert write_html(SMALL, target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_write_reports_writes_the_three_files(tmp_path):
    written = write_reports(SMALL, tmp_path / "run")
    assert {name: path.name for name, path in written.items()} == REPORT_FILES
    assert all(path.stat().st_size > 0 for path in written.values())


def test_bidi_controls_in_metadata_are_shown_as_code_points(tmp_path):
    spoofed = "site\u202egnp.exe"  # renders as "siteexe.png" if left raw
    result = build_audit_result(tmp_path, source=spoofed, label="covid")
    page = render_html(result, tmp_path)
    assert "\u202e" not in page
    assert "site[U+202E]gnp.exe" in page
