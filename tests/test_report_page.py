"""The finished page (issue #13, "Figures" and "Navigation"): numbering, cross-references, contents, assets.

REPORT-PAGE-001  figures and tables are numbered in document order, each kind on its own
REPORT-PAGE-002  a link to a figure reads "Figure N"; to a group "Figures N and M"; to nothing, "not drawn"
REPORT-PAGE-003  duplicate ids (headings, blocks) are made unique, and the heading's own anchor follows
REPORT-PAGE-004  the contents panel lists sections with their subsections and replaces the slot
REPORT-PAGE-005  a "Back to top" link precedes every section after the first; a top anchor exists
REPORT-PAGE-006  the page style and script are inlined, and fetch nothing
REPORT-PAGE-007  figure blocks: caption as numbered figcaption and alt text, PNG at 2x shown at its own size,
                 smallest font and tick overlaps recorded
"""

from __future__ import annotations

import base64
import re
import struct

from hmlib.figures import style
from hmlib.report.display import FIGURE_SCALE, figure_html
from hmlib.report.page import CONTENTS_SLOT, finish_page


def _block(kind: str, ident: str) -> str:
    tag = "figure" if kind == "figure" else "div"
    word = "Figure." if kind == "figure" else "Table."
    return (f'<{tag} class="x" id="{ident}" data-hm-num="{kind}"><span class="hm-number" data-hm-kind="{kind}">'
            f"{word}</span> caption</{tag}>")


def _page(body: str) -> str:
    return f"<html><head><title>t</title></head><body><main>{body}</main></body></html>"


PAGE = _page(
    '<h1 id="Title">Title<a class="anchor-link" href="#Title">¶</a></h1>'
    '<h2 id="Executive-summary">Executive summary</h2>' + CONTENTS_SLOT
    + '<h2 id="1.-Diagnose">1. Diagnose</h2><h3 id="Findings">Findings</h3>'
    '<p>See <a href="#fig-heat">Figure</a>, <a href="#fig-funnel">Figure</a>, <a href="#tbl-a">Table</a> and '
    '<a href="#fig-absent">Figure</a>.</p>'
    + _block("figure", "fig-heat") + _block("table", "tbl-a") + _block("figure", "fig-funnel-lactate")
    + _block("figure", "fig-funnel-sbp")
    + '<h2 id="2.-Complete">2. Complete</h2><h3 id="Findings">Findings<a class="anchor-link" href="#Findings">¶</a>'
    "</h3>" + _block("table", "tbl-a"))


def test_report_page_001_numbering():
    """REPORT-PAGE-001: three figures 1-3 and two tables 1-2, in document order."""
    page = finish_page(PAGE, title="Audit")
    assert re.findall(r'data-hm-kind="figure">([^<]*)<', page) == ["Figure 1.", "Figure 2.", "Figure 3."]
    assert re.findall(r'data-hm-kind="table">([^<]*)<', page) == ["Table 1.", "Table 2."]


def test_report_page_002_references():
    """REPORT-PAGE-002: 'Figure 1', 'Figures 2 and 3' (group fig-funnel), 'Table 1'; a figure that was not drawn
    is said to be so instead of a dead link."""
    page = finish_page(PAGE, title="Audit")
    text = re.sub(r"<[^>]+>", "", page.split("<p>See ")[1].split("</p>")[0])
    assert text == "Figure 1, Figures 2 and 3, Table 1 and not drawn."
    assert 'href="#fig-funnel-lactate">Figures 2 and 3</a>' in page


def test_report_page_003_unique_ids():
    """REPORT-PAGE-003: the second 'Findings' heading and the second 'tbl-a' block get '-2' ids; the heading's
    anchor link follows its new id."""
    page = finish_page(PAGE, title="Audit")
    assert page.count('id="Findings"') == 1 and page.count('id="Findings-2"') == 1
    assert 'href="#Findings-2">¶' in page
    assert page.count('id="tbl-a"') == 1 and page.count('id="tbl-a-2"') == 1
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_report_page_004_contents_panel():
    """REPORT-PAGE-004: the panel replaces the slot, lists the h2 sections (not the title) with their h3
    subsections, and every link has a target."""
    page = finish_page(PAGE, title="Audit")
    assert CONTENTS_SLOT not in page
    nav = page.split('<nav id="hm-contents"')[1].split("</nav>")[0]
    assert page.index('<nav id="hm-contents"') > page.index('id="Executive-summary"')
    links = re.findall(r'href="#([^"]+)">([^<]*)</a>', nav)
    assert [text for _, text in links] == ["Audit", "Executive summary", "1. Diagnose", "Findings", "2. Complete",
                                           "Findings"]
    ids = set(re.findall(r'\sid="([^"]+)"', page))
    assert {target for target, _ in links} <= ids
    assert nav.count('class="hm-nav-sub"') == 2


def test_report_page_005_back_to_top():
    """REPORT-PAGE-005: a top anchor opens main; 'Back to top' precedes sections 1 and 2 (not the first section)
    and ends the page."""
    page = finish_page(PAGE, title="Audit")
    assert '<main><a id="top"></a>' in page
    before = [m.start() for m in re.finditer('<p class="hm-totop">', page)]
    assert len(before) == 3
    assert page.index('<h2 id="1.-Diagnose"') - before[0] < 80
    assert page.index('<h2 id="Executive-summary"') < before[0]


def test_report_page_006_assets_inlined():
    """REPORT-PAGE-006: one inline style and one inline script; no src= or @import that would fetch."""
    page = finish_page(PAGE, title="Audit")
    assert page.count("<style") == 1 and page.count("<script>") == 1
    assert "@media print" in page and "@page" in page
    assert not re.search(r"<script[^>]+src=|@import|url\(http", page)


def test_report_page_007_figure_block():
    """REPORT-PAGE-007: a 4 x 2 inch figure becomes a PNG of 768 x 384 pixels shown at 384 x 192 CSS pixels,
    with its caption escaped in the figcaption and the alt text, its smallest font (9 pt) and no tick overlap."""
    fig, ax = style.new_figure(4, 2)
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x")
    style.caption(fig, "line", "A line <b>& more</b>")
    block = figure_html(fig)
    assert 'id="fig-line"' in block and 'alt="A line &lt;b&gt;&amp; more&lt;/b&gt;"' in block
    assert "<figcaption><span class=\"hm-number\" data-hm-kind=\"figure\">Figure.</span> A line &lt;b&gt;" in block
    png = base64.b64decode(re.search(r'base64,([^"]+)"', block).group(1))
    width, height = struct.unpack(">II", png[16:24])
    shown = int(re.search(r' width="(\d+)"', block.split("<img")[1]).group(1))
    assert abs(width - FIGURE_SCALE * shown) <= FIGURE_SCALE and abs(shown - 4 * 96) < 12
    assert float(re.search(r'data-min-font-pt="([\d.]+)"', block).group(1)) >= style.MIN_FONT_PT
    assert 'data-text-overlaps="0"' in block


def test_report_page_008_reserialised_markup():
    """REPORT-PAGE-008: nbconvert re-serialises HTML outputs (attributes sorted, void tags closed); blocks are
    numbered and referenced all the same."""
    block = ('<figure class="hm-figure" data-hm-num="figure" data-min-font-pt="9.0" id="fig-heat">'
             '<img alt="x" src="data:image/png;base64,AA"/><figcaption><span class="hm-number" '
             'data-hm-kind="figure">Figure.</span> x</figcaption></figure>')
    page = finish_page(_page('<h2 id="A">A</h2><p><a href="#fig-heat">Figure</a></p>' + block), title="t")
    assert "Figure 1.</span>" in page and '<a class="hm-ref" href="#fig-heat">Figure 1</a>' in page
    assert page.count('id="fig-heat"') == 1 and 'data-hm-n="1"' in page


def test_report_page_009_folded_figure():
    """REPORT-PAGE-009: a folded (diagnostic) figure sits in <details> whose summary names it 'Figure N.' with the
    caption's first clause; the figure inside keeps its numbered caption."""
    fig, ax = style.new_figure(3, 2)
    ax.plot([0, 1], [0, 1])
    style.caption(fig, "chains", "Chains of the imputation of lab: one line per imputation.")
    first = figure_html(*style.new_figure(3, 2)[:1], caption="First figure.", key="first")
    page = finish_page(_page('<h2 id="A">A</h2>' + first + figure_html(fig, fold=True)), title="t")
    folded = page.split('<details class="hm-figure-fold">')[1].split("</details>")[0]
    summary = re.sub(r"<[^>]+>", "", folded.split("</summary>")[0])
    assert summary.startswith("Figure 2. Chains of the imputation of lab") and "click to show" in summary
    assert "Figure 2.</span> Chains of the imputation of lab" in folded
