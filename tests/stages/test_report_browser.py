"""The report in a real browser: Debian's Chromium, headless, driven by Playwright, with the network cut off.

Every page opens from disk with no request leaving file://, logs no console error, draws every chart, lists the
rollout browser's rows and filters them, and shows a model output holding <script> as text without running it.
A screenshot of each page is left in the test's temp folder for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from report_testkit import EVIL, EXPECTED_ROWS, build_report, build_sample_run

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium as root in a container: no sandbox, no GPU, and nothing in the background that phones home.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# page -> its charts (an objective's page draws its pass-rate bands too)
PAGES = {"index": 0, "rl": 7, "sft": 7, "dpo": 8, "rl-loop": 3}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return build_report(build_sample_run(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh temporary profile (user data dir) of its own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


class OfflinePage:
    """A page in an offline context that records console errors, page errors and every request off file://."""

    def __init__(self, browser, screenshots: Path) -> None:
        self.context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.off_disk: list[str] = []
        self.failed: list[str] = []

        def route(request_route):
            if request_route.request.url.startswith("file://"):
                request_route.continue_()
            else:
                self.off_disk.append(request_route.request.url)
                request_route.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("requestfailed", lambda request: self.failed.append(request.url))
        self.screenshots = screenshots

    def open(self, path: Path):
        self.page.goto(path.as_uri(), wait_until="load")
        self.page.screenshot(path=str(self.screenshots / f"{path.stem}.png"), full_page=True)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_page_opens_offline_with_no_error_and_every_chart_drawn(browser, reports, tmp_path, name):
    viewer = OfflinePage(browser, tmp_path)
    try:
        page = viewer.open(reports / f"{name}.html")
        charts = page.eval_on_selector_all(
            "figure.chart",
            "figures => figures.map(f => { const svg = f.querySelector('svg');"
            " if (!svg) return null; const box = svg.getBoundingClientRect();"
            " return [box.width, box.height, svg.querySelectorAll('path, rect, line, text').length]; })",
        )
        assert len(charts) == PAGES[name]
        for chart in charts:
            assert chart is not None and chart[0] > 100 and chart[1] > 100 and chart[2] > 10, chart
        assert viewer.errors == [] and viewer.failed == [] and viewer.off_disk == []
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    finally:
        viewer.close()


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_the_rollout_browser_lists_its_rows_and_the_filter_box_narrows_them(browser, reports, tmp_path, name):
    viewer = OfflinePage(browser, tmp_path)
    try:
        page = viewer.open(reports / f"{name}.html")
        rows = EXPECTED_ROWS[name]
        assert page.locator("#browser tbody tr").count() == rows
        assert page.inner_text("#shown") == f"{rows} of {rows} rollouts shown"
        worst = page.locator('#browser tbody tr[data-kind="worst"]').count()
        page.fill("#filter", "worst")
        assert page.locator("#browser tbody tr:not([hidden])").count() == worst
        assert page.inner_text("#shown") == f"{worst} of {rows} rollouts shown"
        page.fill("#filter", "")
        assert page.locator("#browser tbody tr:not([hidden])").count() == rows
        assert viewer.errors == []
    finally:
        viewer.close()


def test_a_model_output_with_a_script_tag_is_shown_as_text_and_never_runs(browser, reports, tmp_path):
    viewer = OfflinePage(browser, tmp_path)
    try:
        page = viewer.open(reports / "rl.html")
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert EVIL in page.inner_text("#browser")
        assert page.locator("#browser script, #browser img").count() == 0
        page.fill("#filter", "__pwned")
        assert page.locator("#browser tbody tr:not([hidden])").count() == 1
        assert page.evaluate("typeof window.__pwned") == "undefined" and viewer.errors == []
    finally:
        viewer.close()
