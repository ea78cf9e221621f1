"""The finished page: numbered figures and tables, cross-references, contents panel, page style.

nbconvert turns the (assembled) notebook into HTML; :func:`finish_page` then
works on that HTML once, in document order:

- every figure and table block (``data-hm-num="figure|table"``, written by
  :mod:`hmlib.report.display`) gets its number, "Figure 3." / "Table 5.",
  and a unique id;
- a link from the text to a block, ``[Figure](#fig-missingness-heatmap)`` in
  a notebook's markdown, reads "Figure 3"; a link to a group of figures
  (``#fig-funnel`` for ``fig-funnel-lactate``, ``fig-funnel-sbp``) reads
  "Figures 4 and 6" (Quarto-style cross-references, resolved without a
  kernel);
- headings get unique ids, and a contents panel lists the sections (``h2``)
  with their subsections (``h3``, ``h4``): fixed at the left of a wide
  screen, a plain list on a narrow one and in print. It replaces the
  ``<div id="hm-contents-slot">`` of the assembled report (or opens the
  page). Every section after the first ends with a "Back to top" link;
- the report's style sheet and script (``hmlib/report/assets``) are inlined:
  the page stays one self-contained file that fetches nothing.

The HTML is nbconvert's and this module's own markup, so regular
expressions over known tags suffice; text from the data was escaped before
it reached the page.
"""

from __future__ import annotations

import html
import re
from importlib import resources

__all__ = ["finish_page", "page_assets", "CONTENTS_SLOT"]

#: Placeholder the assembled report puts where the contents panel belongs.
CONTENTS_SLOT = '<div id="hm-contents-slot"></div>'

# nbconvert re-serialises HTML outputs (attributes in any order): find the tags, then read their attributes
_BLOCK = re.compile(r'<(?:figure|div|details)\b[^>]*\sdata-hm-num="(?:figure|table)"[^>]*>')
_ATTR_ID = re.compile(r'\sid="([^"]*)"')
_ATTR_KIND = re.compile(r'\sdata-hm-num="(figure|table)"')
_NUMBER = re.compile(r'<span\b[^>]*\sdata-hm-kind="(figure|table)"[^>]*>[^<]*</span>')
_REF = re.compile(r'<a href="#((?:fig|tbl)-[^"]+)">([^<]*)</a>')
_HEADING = re.compile(r"<h([1-4])((?:\s[^>]*)?)>(.*?)</h\1>", re.S)
_TAG = re.compile(r"<[^>]+>")
_KIND_WORD = {"figure": "Figure", "table": "Table"}


def page_assets() -> tuple:
    """``(css, js)``: the report's style sheet and script."""
    folder = resources.files("hmlib.report") / "assets"
    return (folder / "report.css").read_text(encoding="utf-8"), (folder / "report.js").read_text(encoding="utf-8")


def _number_blocks(page: str) -> tuple:
    """Number figure and table blocks; unique ids. Returns the page and ``{id: (kind, number)}``."""
    numbers: dict = {}
    counters = {"figure": 0, "table": 0}
    seen: dict = {}

    def block(match):
        tag = match.group(0)
        kind = _ATTR_KIND.search(tag).group(1)
        ident = _ATTR_ID.search(tag)
        counters[kind] += 1
        base = ident.group(1) if ident else f"{kind[:3]}-{counters[kind]}"
        seen[base] = seen.get(base, 0) + 1
        unique = base if seen[base] == 1 else f"{base}-{seen[base]}"
        numbers[unique] = (kind, counters[kind])
        tag = _ATTR_ID.sub("", tag)
        return f'{tag[:-1].rstrip("/")} id="{unique}" data-hm-n="{counters[kind]}">'

    page = _BLOCK.sub(block, page)
    order = {"figure": 0, "table": 0}

    def label(match):
        kind = match.group(1)
        order[kind] += 1
        return (f'<span class="hm-number" data-hm-kind="{kind}">'
                f"{_KIND_WORD[kind]} {order[kind]}.</span>")

    return _NUMBER.sub(label, page), numbers


def _resolve_refs(page: str, numbers: dict) -> str:
    """Links to figures and tables read "Figure 3" (or "Figures 4 and 6" for a group)."""

    def ref(match):
        target, text = match.groups()
        if target in numbers:
            kind, n = numbers[target]
            return f'<a class="hm-ref" href="#{target}">{_KIND_WORD[kind]} {n}</a>'
        group = [(ident, kn) for ident, kn in numbers.items() if ident.startswith(target + "-")]
        if not group:  # the step drew no such figure (nothing to show): say so rather than link nowhere
            return '<span class="hm-ref hm-ref-missing">not drawn</span>'
        kind = group[0][1][0]
        nums = [str(kn[1]) for _, kn in group]
        words = nums[0] if len(nums) == 1 else ", ".join(nums[:-1]) + " and " + nums[-1]
        plural = "" if len(nums) == 1 else "s"
        return f'<a class="hm-ref" href="#{group[0][0]}">{_KIND_WORD[kind]}{plural} {words}</a>'

    return _REF.sub(ref, page)


def _heading_text(inner: str) -> str:
    inner = re.sub(r'<a class="anchor-link"[^>]*>.*?</a>', "", inner, flags=re.S)
    return " ".join(html.unescape(_TAG.sub("", inner)).split())


def _headings(page: str) -> tuple:
    """Unique heading ids; returns the page and ``[(level, id, text)]`` in order."""
    found = []
    seen: dict = {}

    def heading(match):
        level, attrs, inner = match.groups()
        text = _heading_text(inner)
        existing = re.search(r'\sid="([^"]*)"', attrs or "")
        base = existing.group(1) if existing else re.sub(r"\s+", "-", text.strip()) or f"section-{len(found) + 1}"
        seen[base] = seen.get(base, 0) + 1
        unique = base if seen[base] == 1 else f"{base}-{seen[base]}"
        attrs = re.sub(r'\sid="[^"]*"', "", attrs or "")
        found.append((int(level), unique, text))
        inner = inner.replace(f'href="#{base}"', f'href="#{unique}"') if existing else inner
        return f'<h{level} id="{html.escape(unique)}"{attrs}>{inner}</h{level}>'

    return _HEADING.sub(heading, page), found


def _nav_html(found: list, title: str) -> str:
    esc = html.escape
    items, sub = [], []

    def close():
        if items and sub:
            items[-1] = items[-1].replace("</li>", f'<ol class="hm-nav-sub">{"".join(sub)}</ol></li>')
        sub.clear()

    for level, ident, text in found:
        if level == 1 or text.lower() == "contents":
            continue
        link = f'<a href="#{esc(ident)}">{esc(text)}</a>'
        if level == 2:
            close()
            items.append(f"<li>{link}</li>")
        elif items:
            sub.append(f'<li class="hm-nav-l{level}">{link}</li>')
    close()
    return (f'<nav id="hm-contents" class="hm-nav" aria-label="Contents">'
            f'<p class="hm-nav-title"><a href="#top">{esc(title)}</a></p>'
            f'<p class="hm-nav-heading">Contents</p><ol class="hm-nav-top">{"".join(items)}</ol></nav>')


def _back_to_top(page: str, found: list) -> str:
    """A "Back to top" link before every section heading after the first, and at the end."""
    sections = [ident for level, ident, text in found if level == 2 and text.lower() != "contents"]
    link = '<p class="hm-totop"><a href="#top">Back to top</a></p>'
    for ident in sections[1:]:
        page = page.replace(f'<h2 id="{html.escape(ident)}"', f'{link}<h2 id="{html.escape(ident)}"', 1)
    return page.replace("</main>", f'{link}<a class="hm-float-top" href="#top" title="Back to top">'
                                   "&#8593; Top</a></main>", 1)


def finish_page(page: str, *, title: str = "Contents") -> str:
    """Number, cross-reference and navigate an nbconvert page (module docstring).

    Parameters
    ----------
    page : str
        The HTML nbconvert wrote.
    title : str
        The report's title, at the head of the contents panel.

    Returns
    -------
    str
        The finished, self-contained page.
    """
    page, numbers = _number_blocks(page)
    page = _resolve_refs(page, numbers)
    page, found = _headings(page)
    nav = _nav_html(found, title)
    if CONTENTS_SLOT in page:
        page = page.replace(CONTENTS_SLOT, nav, 1)
    else:
        page = page.replace("<main>", f"<main>{nav}", 1)
    page = page.replace("<main>", '<main><a id="top"></a>', 1)
    page = _back_to_top(page, found)
    css, js = page_assets()
    page = page.replace("</head>", f'<style type="text/css">\n{css}\n</style>\n</head>', 1)
    return page.replace("</body>", f"<script>\n{js}\n</script>\n</body>", 1)
