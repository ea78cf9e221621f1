"""The rendered report in a real browser: headless Chromium driven by Playwright.

One fast demo report (shared with ``test_report.py``) is opened once; the
checks read what the page recorded while loading. A screenshot of the top of
the report is saved to ``reports/test-artifacts/browser-demo-report.png``
(``$HMLIB_TEST_ARTIFACTS`` to choose another folder).

Chromium comes from the distribution (``/usr/bin/chromium``; ``make test``
installs Debian's package when it is missing and it can), never from
``playwright install``; ``$HMLIB_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from test_report import rendered_demo

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("HMLIB_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("HMLIB_TEST_ARTIFACTS", REPO / "reports" / "test-artifacts"))


@pytest.fixture(scope="module")
def page_record(tmp_path_factory):
    """Load the demo report once; record dialogs, console errors, page errors and failed requests."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' package (make test does it as root "
                    "with apt-get) or set HMLIB_CHROMIUM")
    _, folder = rendered_demo(tmp_path_factory)
    record = {"dialogs": [], "console_errors": [], "page_errors": [], "failed_requests": []}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.on("dialog", lambda d: (record["dialogs"].append(f"{d.type}: {d.message}"), d.dismiss()))
            page.on("console", lambda m: m.type == "error" and record["console_errors"].append(m.text))
            page.on("pageerror", lambda e: record["page_errors"].append(str(e)))
            page.on("requestfailed", lambda r: record["failed_requests"].append(r.url[:200]))
            page.goto((folder / "report.html").as_uri(), wait_until="load")
            page.wait_for_timeout(300)  # late script errors and dialogs
            record["images"] = page.evaluate(
                "[...document.images].map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0}))")
            record["toc"] = page.evaluate("""() => {
                const heading = [...document.querySelectorAll('h2')].find(h => h.textContent.startsWith('Contents'));
                const list = heading.nextElementSibling;
                return [...list.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href').slice(1));
            }""")
            landed = {}
            for anchor in record["toc"]:
                page.evaluate("a => { location.hash = ''; location.hash = a; }", anchor)
                landed[anchor] = page.evaluate("""a => {
                    const el = document.getElementById(a);
                    if (!el) return 'missing';
                    const top = el.getBoundingClientRect().top;
                    return (top >= -2 && top < window.innerHeight) ? 'in view' : 'not in view: ' + top;
                }""", anchor)
            record["landed"] = landed
            page.evaluate("window.scrollTo(0, 0)")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = tmp_path_factory.getbasetemp() / "browser-demo-report.png"
            page.screenshot(path=str(shot))
            shutil.copy(shot, ARTIFACTS / "browser-demo-report.png")
            record["screenshot"] = ARTIFACTS / "browser-demo-report.png"
        finally:
            browser.close()
    return record


def test_browser_001_no_dialog(page_record):
    """BROWSER-001: opening the report fires no alert/confirm/prompt (escaping holds in a real DOM)."""
    assert page_record["dialogs"] == []


def test_browser_002_no_console_error(page_record):
    """BROWSER-002: no console error, no uncaught page error, no failed request (the report is
    self-contained: nothing is fetched from a CDN)."""
    assert page_record["console_errors"] == []
    assert page_record["page_errors"] == []
    assert page_record["failed_requests"] == []


def test_browser_003_every_image_loaded(page_record):
    """BROWSER-003: every image (the embedded figures) decoded with a non-zero natural width."""
    images = page_record["images"]
    assert len(images) >= 5
    assert [i for i in images if not i["ok"]] == []


def test_browser_004_contents_links_land(page_record):
    """BROWSER-004: every contents link scrolls to an element with that id."""
    assert len(page_record["toc"]) >= 8
    assert {"executive-summary", "methods", "limitations", "reproducibility"} & set(page_record["toc"]) == \
        {"methods", "limitations", "reproducibility"}
    assert {a: v for a, v in page_record["landed"].items() if v != "in view"} == {}


def test_browser_005_screenshot_saved(page_record):
    """BROWSER-005: a screenshot of the report's first screen is kept as a test artifact."""
    shot = page_record["screenshot"]
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
