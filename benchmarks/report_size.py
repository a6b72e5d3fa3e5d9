"""A run's report.html against issue 13's budget: under 1.5 MB, under 12 screens at 1440x900.

Prints the file's size, and its height at 1440x900 and 390x844 twice: with every
``<details>`` folded (the budget's measure, as ``tests/test_reports_browser.py`` takes it)
and as it loads (a failing check's tables and numbers open). Saves full-page screenshots
in the run folder's ``screenshots/``. Needs Debian's Chromium (``/usr/bin/chromium``) and
Playwright; never downloads a browser.

Run: ``.venv/bin/python -m benchmarks.report_size RUN_DIR`` (e.g. after
``cxr-audit demo --out RUN_DIR``, or ``cxr-audit gate RUN_DIR --policy-from-run`` to redraw
an existing run's report with this checkout's code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
VIEWPORTS = ((1440, 900), (390, 844))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding report.html")
    html = parser.parse_args().run_dir / "report.html"
    print(f"{html}: {html.stat().st_size:,} bytes")
    shots = html.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--headless", "--no-sandbox"])
        for width, height in VIEWPORTS:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(html.as_uri(), wait_until="load")
            loaded = page.evaluate("document.documentElement.scrollHeight")
            page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = false; })")
            folded = page.evaluate("document.documentElement.scrollHeight")
            print(f"{width}x{height}: {folded:,} px folded ({folded / height:.1f} screens), "
                  f"{loaded:,} px as loaded ({loaded / height:.1f} screens)")
            page.screenshot(path=str(shots / f"report-{width}x{height}.png"), full_page=True)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
