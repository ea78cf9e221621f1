"""The rendered report in a real browser: headless Chromium driven by Playwright.

One fast demo report (shared with ``test_report.py``) is opened once; the
checks read what the page recorded while loading, then look at it as a
reviewer would: the first screen, the contents panel, the tables and figures
on screen and in print (A4), the CSV downloads, a site profile, and the
printed page count (and that of the full-settings demo, as ``make report``
writes it). A screenshot of the top of the report and the printed PDF are
saved to ``reports/test-artifacts/`` (``$HMLIB_TEST_ARTIFACTS`` to choose
another folder).

Chromium comes from the distribution (``/usr/bin/chromium``; ``make test``
installs Debian's package when it is missing and it can), never from
``playwright install``; ``$HMLIB_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from hmlib.cli import main
from test_report import rendered_demo

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("HMLIB_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("HMLIB_TEST_ARTIFACTS", REPO / "reports" / "test-artifacts"))
#: The reviewer's first screen (a laptop's browser window).
FIRST_SCREEN = {"width": 1280, "height": 800}
#: The printable width of an A4 page inside the report's print margins (210 mm - 2 x 11 mm), in CSS pixels.
A4_PRINT_WIDTH = round((210 - 22) / 25.4 * 96)
#: At most this many printed A4 pages (issue #13).
MAX_PRINTED_PAGES = 30


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """The demo report open in Chromium, with what it recorded while loading (dialogs, console errors, page
    errors, failed requests)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' package (make test does it as root "
                    "with apt-get) or set HMLIB_CHROMIUM")
    params, folder = rendered_demo(tmp_path_factory)
    record = {"dialogs": [], "console_errors": [], "page_errors": [], "failed_requests": [], "folder": folder,
              "params": params}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport=FIRST_SCREEN)
            page.on("dialog", lambda d: (record["dialogs"].append(f"{d.type}: {d.message}"), d.dismiss()))
            page.on("console", lambda m: m.type == "error" and record["console_errors"].append(m.text))
            page.on("pageerror", lambda e: record["page_errors"].append(str(e)))
            page.on("requestfailed", lambda r: record["failed_requests"].append(r.url[:200]))
            page.goto((folder / "report.html").as_uri(), wait_until="load")
            page.wait_for_timeout(300)  # late script errors and dialogs
            yield page, record, browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page_record(browser_page, tmp_path_factory):
    """What the page recorded while loading, the images, the contents links and where each lands."""
    page, record, _ = browser_page
    record["images"] = page.evaluate(
        "[...document.images].map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0}))")
    links = page.evaluate("[...document.querySelectorAll('nav.hm-nav a[href^=\"#\"]')]"
                          ".map(a => [a.getAttribute('href').slice(1), a.textContent])")
    record["toc"] = [href for href, _ in links]
    record["toc_text"] = [text for _, text in links]
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
    page.evaluate("() => { history.replaceState(null, '', location.pathname); window.scrollTo(0, 0); }")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = tmp_path_factory.getbasetemp() / "browser-demo-report.png"
    page.screenshot(path=str(shot))
    shutil.copy(shot, ARTIFACTS / "browser-demo-report.png")
    record["screenshot"] = ARTIFACTS / "browser-demo-report.png"
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
    """BROWSER-004: the contents panel links every section (methods, limitations, site profiles, glossary,
    reproducibility among them) and their subsections; every link scrolls to an element with that id."""
    assert len(page_record["toc"]) >= 30
    sections = {text.split(". ", 1)[-1] for text in page_record["toc_text"]}
    assert {"Methods", "Limitations and reporting checklist", "Site profiles", "Glossary",
            "Reproducibility"} <= sections
    assert {a: v for a, v in page_record["landed"].items() if v != "in view"} == {}


def test_browser_005_screenshot_saved(page_record):
    """BROWSER-005: a screenshot of the report's first screen is kept as a test artifact."""
    shot = page_record["screenshot"]
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_006_first_screen(browser_page, page_record):
    """BROWSER-006: on a 1280 x 800 window, without scrolling, the title and the key messages (or, without
    them, the executive summary) are wholly visible, beside the contents panel."""
    page, _, _ = browser_page
    page.set_viewport_size(FIRST_SCREEN)
    page.evaluate("window.scrollTo(0, 0)")
    box = page.evaluate("""() => {
        const rect = el => { const r = el.getBoundingClientRect(); return {top: r.top, bottom: r.bottom,
                                                                          left: r.left, right: r.right}; };
        const title = document.querySelector('h1');
        const key = document.querySelector('.hm-key-messages') || document.querySelector('.hm-summary');
        const nav = document.querySelector('nav.hm-nav');
        return {title: rect(title), key: rect(key), nav: rect(nav), height: window.innerHeight,
                width: window.innerWidth};
    }""")
    assert 0 <= box["title"]["top"] and box["title"]["bottom"] < box["height"]
    assert box["key"]["top"] > box["title"]["top"] and box["key"]["bottom"] <= box["height"], box
    assert box["nav"]["right"] <= box["key"]["left"] and box["nav"]["top"] <= 0 < box["nav"]["bottom"]


def _table_overflow(page) -> list:
    """Tables (and the page) wider than their container in the current layout."""
    return page.evaluate("""() => {
        const out = [];
        document.querySelectorAll('main table').forEach((t, k) => {
            const box = t.closest('.hm-table-scroll, .jp-OutputArea-output, .jp-RenderedMarkdown') || t.parentElement;
            if (t.offsetParent === null) return;  // folded (closed <details>): not laid out
            if (t.getBoundingClientRect().width > box.clientWidth + 1)
                out.push({table: k, width: t.getBoundingClientRect().width, room: box.clientWidth,
                          head: t.querySelector('th') ? t.querySelector('th').textContent : ''});
        });
        if (document.documentElement.scrollWidth > window.innerWidth + 1)
            out.push({page: document.documentElement.scrollWidth, room: window.innerWidth});
        return out;
    }""")


def test_browser_007_no_table_wider_than_the_page(browser_page, page_record):
    """BROWSER-007: with every folded table opened, no table is wider than its column of the page, on a 1280 px
    screen and in print layout at the width of an A4 page (nothing cut off, no horizontal scrolling)."""
    page, _, _ = browser_page
    page.set_viewport_size(FIRST_SCREEN)
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert _table_overflow(page) == []
    page.emulate_media(media="print")
    page.set_viewport_size({"width": A4_PRINT_WIDTH, "height": 1100})
    try:
        assert _table_overflow(page) == []
    finally:
        page.emulate_media(media="no-override")
        page.set_viewport_size(FIRST_SCREEN)
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = false)")


def _figures(page) -> list:
    return page.evaluate("""() => [...document.querySelectorAll('figure.hm-figure')].map(f => {
        const img = f.querySelector('img');
        return {id: f.id, caption: f.querySelector('figcaption').textContent.trim(), alt: img.alt,
                shown: img.getBoundingClientRect().width, natural: parseFloat(f.dataset.naturalWidth),
                font: parseFloat(f.dataset.minFontPt), overlaps: parseInt(f.dataset.textOverlaps),
                folded: f.closest('details.hm-figure-fold') !== null,
                summary: f.closest('details.hm-figure-fold') ?
                    f.closest('details.hm-figure-fold').querySelector('summary').textContent : ''};
    })""")


def test_browser_008_figures_numbered_captioned_readable(browser_page, page_record):
    """BROWSER-008: every figure has a caption 'Figure N. ...' numbered 1, 2, ... in order, its caption as alt
    text (not nbconvert's default), text of at least 9 pt at the size it is shown on screen and in print at A4
    width (never scaled down), and no overlapping tick labels or annotations; a folded (diagnostic) figure's
    summary names it by its number; at least 80% of the figures are referenced from the text ('Figure N'
    outside captions)."""
    page, _, _ = browser_page
    page.set_viewport_size(FIRST_SCREEN)
    page.evaluate("document.querySelectorAll('details.hm-figure-fold').forEach(d => d.open = true)")
    shown = _figures(page)
    page.evaluate("document.querySelectorAll('details.hm-figure-fold').forEach(d => d.open = false)")
    assert len(shown) >= 15
    for k, fig in enumerate(shown, start=1):
        assert fig["caption"].startswith(f"Figure {k}. ") and len(fig["caption"]) > 40, fig["caption"]
        assert fig["alt"] and fig["alt"] == fig["caption"].split(". ", 1)[1], fig["id"]
        assert "No description" not in fig["alt"]
        assert fig["font"] >= 9 and fig["font"] * fig["shown"] / fig["natural"] >= 8.95, fig
        assert fig["overlaps"] == 0, fig
        if fig["folded"]:  # a folded figure's summary names it with its number
            assert fig["summary"].startswith(f"Figure {k}. "), fig["summary"]
    page.emulate_media(media="print")
    page.set_viewport_size({"width": A4_PRINT_WIDTH, "height": 1100})
    try:
        printed = _figures(page)
    finally:
        page.emulate_media(media="no-override")
        page.set_viewport_size(FIRST_SCREEN)
    assert [f for f in printed if not f["folded"] and f["font"] * f["shown"] / f["natural"] < 8.95] == []
    body = page.evaluate("""() => { const c = document.querySelector('main').cloneNode(true);
        c.querySelectorAll('figcaption, nav').forEach(e => e.remove()); return c.textContent; }""")
    referenced = set(int(n) for n in re.findall(r"Figures? ([\d, and]+)", body)
                     for n in re.findall(r"\d+", n))
    assert len(referenced & set(range(1, len(shown) + 1))) >= 0.8 * len(shown), sorted(referenced)


def test_browser_009_csv_links_decode_to_the_tables(browser_page, page_record):
    """BROWSER-009: every table block has a CSV link; the CSV has one row per table row, the same first column,
    and one column per shown column (two for an interval); estimates.csv is linked and decodes to the file."""
    page, record, _ = browser_page
    blocks = page.evaluate("""() => [...document.querySelectorAll('.hm-table-block')].map(b => ({
        id: b.id, href: b.querySelector('.hm-download a').getAttribute('href'),
        download: b.querySelector('.hm-download a').getAttribute('download'),
        heads: [...b.querySelectorAll('thead th')].map(th => th.textContent),
        first: [...b.querySelectorAll('tbody tr')].map(tr => tr.children[0].textContent)}))""")
    assert len(blocks) >= 20
    for b in blocks:
        assert b["href"].startswith("data:text/csv;charset=utf-8;base64,") and b["download"].endswith(".csv")
        rows = list(csv.reader(io.StringIO(base64.b64decode(b["href"].split(",", 1)[1]).decode("utf-8"))))
        assert len(rows) - 1 == len(b["first"]), b["id"]
        assert [r[0] for r in rows[1:]] == b["first"], b["id"]
        expected = sum(2 if h in ("95% CI", "Range over imputations") else 1 for h in b["heads"])
        assert len(rows[0]) >= expected, (b["id"], rows[0], b["heads"])
    link = page.evaluate("document.querySelector('a.hm-estimates-link').getAttribute('href')")
    assert base64.b64decode(link.split(",", 1)[1]) == (record["folder"] / "estimates.csv").read_bytes()


def test_browser_010_sticky_contents_panel(browser_page, page_record):
    """BROWSER-010: scrolled to the end of the report the contents panel is still on screen; a subsection link in
    it takes the reader to that subsection."""
    page, _, _ = browser_page
    page.set_viewport_size(FIRST_SCREEN)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    nav = page.evaluate("""() => { const r = document.querySelector('nav.hm-nav').getBoundingClientRect();
        return {top: r.top, bottom: r.bottom, width: r.width,
                subs: document.querySelectorAll('nav.hm-nav .hm-nav-sub a').length}; }""")
    assert nav["top"] <= 0 < nav["bottom"] and nav["width"] > 150 and nav["subs"] >= 20
    target = page.evaluate("document.querySelectorAll('nav.hm-nav .hm-nav-sub a')[5].getAttribute('href')")
    page.click(f"nav.hm-nav .hm-nav-sub a[href='{target}']")
    top = page.evaluate("t => document.getElementById(decodeURIComponent(t.slice(1))).getBoundingClientRect().top",
                        target)
    assert 0 <= top < 200
    assert page.evaluate("document.querySelector('a.hm-float-top') !== null")


def test_browser_011_site_profile(browser_page, page_record):
    """BROWSER-011: choosing a site in the picker opens its profile, in view, with its five parts (missing
    values, complete-case analysis, transport check, partial pooling, sensitivity); the overview table lists
    every site."""
    page, _, _ = browser_page
    page.set_viewport_size(FIRST_SCREEN)
    options = page.evaluate("[...document.querySelectorAll('#hm-site-picker option')].map(o => o.value)")
    assert len(options) == 31  # 30 sites and the prompt
    site = "site-site-04"
    page.select_option("#hm-site-picker", site)
    state = page.evaluate("""s => { const d = document.getElementById(s); const r = d.getBoundingClientRect();
        return {open: d.open, top: r.top, text: d.textContent,
                others: document.querySelectorAll('details.hm-site[open]').length}; }""", site)
    assert state["open"] and -2 <= state["top"] < 200 and state["others"] == 1
    for part in ("Missing values", "Complete-case analysis", "transport check", "partial pooling",
                 "Sensitivity analysis", "Leaving it out"):
        assert part in state["text"], part
    rows = page.evaluate("document.querySelectorAll('#tbl-site-overview tbody tr').length")
    assert rows == 30


def _printed_pages(page, artifact: str) -> int:
    """Chromium's own A4 PDF of the open page (print media, CSS page size), kept as a test artifact; its pages."""
    pdf = page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / artifact).write_bytes(pdf)
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


def test_browser_012_printed_pages(browser_page, page_record):
    """BROWSER-012: the fast demo report prints to at most 30 A4 pages (Chromium's own PDF, print media); the PDF is
    kept as a test artifact."""
    _, record, browser = browser_page
    page = browser.new_page()  # a fresh page: the other tests opened and folded parts of theirs
    page.goto((record["folder"] / "report.html").as_uri(), wait_until="load")
    pages = _printed_pages(page, "browser-demo-report.pdf")
    page.close()
    assert 10 <= pages <= MAX_PRINTED_PAGES, pages


def test_browser_013_full_settings_demo_prints_within_30_pages(browser_page, tmp_path_factory):
    """BROWSER-013: the demo report as ``make report`` writes it (full settings: m = 20, the joint model's full
    chains, every sensitivity scenario) prints to at most 30 A4 pages (issue #13), and with every folded part
    opened no table is wider than an A4 page's printable width (nothing cut off in print). The PDF is kept as a
    test artifact. (It uses the module's Chromium: Playwright's sync API cannot be started twice at once.)"""
    _, _, browser = browser_page
    root = tmp_path_factory.mktemp("full-demo")
    assert main(["demo", "--root", str(root)]) == 0
    assert main(["run", str(root / "params" / "demo.yaml"), "--out", str(root / "reports")]) == 0
    report = root / "reports" / "demo" / "report.html"
    page = browser.new_page()
    try:
        page.goto(report.as_uri(), wait_until="load")
        pages = _printed_pages(page, "browser-demo-report-full.pdf")
        page.emulate_media(media="print")
        page.set_viewport_size({"width": A4_PRINT_WIDTH, "height": 1100})
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        overflow = _table_overflow(page)
    finally:
        page.close()
    assert 10 <= pages <= MAX_PRINTED_PAGES, pages
    assert overflow == []
