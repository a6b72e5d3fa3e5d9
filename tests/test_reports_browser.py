"""The HTML report in a real headless Chromium (Debian's), driven by Playwright.

Skipped where ``/usr/bin/chromium`` or Playwright is absent; never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reports import write_reports
from reports.view import check_anchor
from tests.report_fixtures import build_audit_result

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOSTILE_SOURCE = "<script>window.__pwned = 'source'</script>"
HOSTILE_LABEL = "<script>window.__pwned = 'label'</script>"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no browser installed at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _open(browser, html: Path):
    """Load ``html`` recording every request, console error and uncaught page error."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"requests": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("console", lambda message: message.type == "error"
            and seen["errors"].append(message.text))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.goto(html.as_uri(), wait_until="load")
    return page, seen


def test_report_loads_offline_and_shows_every_check(browser, tmp_path):
    result = build_audit_result(tmp_path)
    html = write_reports(result, tmp_path)["html"]
    page, seen = _open(browser, html)
    try:
        assert seen["errors"] == []
        assert all(url == html.as_uri() or url.startswith("data:") for url in seen["requests"]), (
            seen["requests"])
        assert page.locator(".verdict-word").inner_text() == "FAIL"
        assert page.locator("#verdict").is_visible()
        for check in result.checks:
            section = page.locator(f"#{check_anchor(check.check_id)}")
            assert section.is_visible(), check.check_id
            assert check.title in section.inner_text()
        broken = page.evaluate("[...document.images].filter(i => !i.complete || "
                               "i.naturalWidth === 0).length")
        assert broken == 0 and page.locator("img").count() >= 10
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


def test_script_in_source_and_label_is_shown_as_text(browser, tmp_path):
    result = build_audit_result(tmp_path, source=HOSTILE_SOURCE, label=HOSTILE_LABEL)
    page, seen = _open(browser, write_reports(result, tmp_path)["html"])
    try:
        assert page.evaluate("window.__pwned") is None
        assert page.locator("script").count() == 0
        text = page.locator("body").inner_text()
        assert HOSTILE_SOURCE in text and HOSTILE_LABEL in text
        assert seen["errors"] == []
    finally:
        page.close()
