"""The report in a real browser: headless Chromium (the system package, driven by playwright)
loads it offline without console errors, sorts and filters its tables, never runs a script that
came in with the data, and leaves a screenshot in build/test-artifacts/ (or $INFSCOPE_ARTIFACTS).

Skipped only where no Chromium is installed; CI sets INFSCOPE_REQUIRE_BROWSER=1 (``.ci/run``),
which turns the skip into a failure (``make test`` installs Chromium first where it can).
"""

import os
import shutil
from pathlib import Path

import pytest

from infscope.report import build_report
from tests.report.conftest import IMG, INJECTED

CHROMIUM = os.environ.get("INFSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
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
ARTIFACTS = Path(
    os.environ.get("INFSCOPE_ARTIFACTS", Path(__file__).parents[2] / "build" / "test-artifacts")
)


def _browser_or_skip():
    reason = None
    if not Path(CHROMIUM).is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set INFSCOPE_CHROMIUM)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright; never `playwright install`)"
    if reason is not None:
        if os.environ.get("INFSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test is required here: {reason}")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def page_in_browser(run_dir, tmp_path_factory):
    sync_playwright = _browser_or_skip()
    root, data = run_dir
    path = build_report(root, tmp_path_factory.mktemp("html") / "report.html", data=[data])
    profile = tmp_path_factory.mktemp("chromium-profile")
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh profile: --user-data-dir
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            yield page, problems, requests
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()


def test_loads_offline_without_console_errors(page_in_browser):
    page, problems, requests = page_in_browser
    assert problems == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert page.title().startswith("infscope report")
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(images) >= 4 and min(images) > 0  # inline figures decoded


def test_injected_markup_shows_as_text_and_never_runs(page_in_browser):
    page, problems, _ = page_in_browser
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 1
    body = page.inner_text("body")
    assert INJECTED in body and IMG in body and "<b>beta</b>" in body
    assert page.locator("section img[src='x']").count() == 0
    assert problems == []


def test_tables_sort_by_clicking_a_header(page_in_browser):
    page, _, _ = page_in_browser
    table = page.locator("table[id$='-suspects']")
    column = ["rank", "id", "given", "suggested", "suspicion"].index("suspicion")
    header = table.locator("thead th").nth(column)

    def values():
        return table.locator("tbody tr").evaluate_all(
            f"rows => rows.map(r => parseFloat(r.cells[{column}].getAttribute('data-value')))"
        )

    assert values() == sorted(values(), reverse=True)  # the audit's own order
    header.click()
    assert header.get_attribute("data-order") == "asc" and values() == sorted(values())
    header.click()
    assert header.get_attribute("data-order") == "desc" and values() == sorted(
        values(), reverse=True
    )
    ids = table.locator("thead th").nth(1)
    ids.click()
    shown = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert shown == sorted(shown)


def test_tables_filter_rows_by_the_words_typed(page_in_browser):
    page, problems, _ = page_in_browser
    table = page.locator("table[id$='-suspects']")
    rows = table.locator("tbody tr")
    total = rows.count()
    box = page.locator(f"input[data-filter='{table.get_attribute('id')}']")
    box.fill("ZEBRA only")  # every word, any case
    visible = table.locator("tbody tr:not([hidden])")
    assert 0 < visible.count() < total
    assert all("only zebra" in t for t in visible.all_inner_texts())
    count = page.locator(".filter .count").first.inner_text()
    assert count == f"{visible.count()} of {total} rows"
    box.fill("")
    assert table.locator("tbody tr:not([hidden])").count() == total
    assert problems == []
