"""Showing results in the notebooks: escaped text, tables and figures.

The step notebooks call these instead of printing. Every string that may come
from the data or the params (cluster names, column names, levels) is
HTML-escaped here, so a site named ``<script>...`` shows as text. Tables are
aggregated results (never patient-level rows), shown with human labels,
rounded, with a CSV download (:mod:`hmlib.report.tables`); figures are
embedded as 2x PNG at their own size, with their caption as a numbered
``<figcaption>`` and as alt text (:func:`figure`). Captions are numbered
when the page is assembled (:mod:`hmlib.report.page`).

:func:`set_context` (called by :func:`hmlib.report.notebook.open_step`)
tells the tables the report's word for a cluster ("site").
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import pandas as pd

from hmlib.figures.style import caption_of, overlapping_ticks, smallest_font
from hmlib.report.tables import COLLAPSE_ROWS, prepare_table, significant, slug, table_html
from hmlib.results import with_truth
from hmlib.wording import cluster_noun, few_clusters_caveat

__all__ = ["narrative", "table", "notices", "figure", "figures", "estimates", "heading", "format_number",
           "set_context", "figure_html", "FIGURE_SCALE"]

#: Pixels per CSS pixel of the embedded PNGs (2: sharp on high-density screens and in print).
FIGURE_SCALE = 2
#: CSS pixels per inch: a figure ``w`` inches wide is shown ``96 w`` pixels wide, so its text is at its point size.
_CSS_DPI = 96
_CONTEXT = {"noun": "cluster"}


def set_context(*, noun: str = "cluster") -> None:
    """The report's word for one cluster (``"site"``), for table labels; set once per notebook by ``open_step``."""
    _CONTEXT["noun"] = str(noun)


def _display(obj) -> None:
    from IPython.display import display

    display(obj)


def _html(text: str):
    from IPython.display import HTML

    return HTML(text)


def heading(text: str, level: int = 3) -> None:
    """Show an escaped heading (for headings that contain data-derived names)."""
    _display(_html(f"<h{level}>{html.escape(str(text))}</h{level}>"))


def narrative(sentences: Iterable[str] | str, *, title: str | None = None) -> None:
    """Show generated sentences as escaped paragraphs (one per sentence group).

    Parameters
    ----------
    sentences : str or iterable of str
    title : str, optional
        Bold lead-in shown before the text.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    parts = []
    if title:
        parts.append(f"<p><strong>{html.escape(title)}</strong></p>")
    parts.extend(f"<p>{html.escape(s)}</p>" for s in sentences if s)
    _display(_html("\n".join(parts) or "<p></p>"))


def format_number(value, digits: int = 3) -> str:
    """Readable number: whole numbers with thousands separators, others to ``digits``
    significant digits in plain decimals (:func:`hmlib.report.tables.significant`)."""
    return significant(value, digits)


def table(frame: pd.DataFrame, *, caption: str | None = None, digits: int = 3,
          max_rows: int = 500, index: bool = False, key: str | None = None, fold: bool = True,
          labels: dict | None = None) -> None:
    """Show an aggregated table: human labels, rounded numbers, a CSV download; folded when long.

    Parameters
    ----------
    frame : pandas.DataFrame
        Aggregated results only (counts, shares, estimates).
    caption : str, optional
        The table's caption (numbered "Table N." in the report).
    digits : int
        Significant digits of numbers.
    max_rows : int
        Rows shown in the page (the CSV holds every row).
    index : bool
        Show the index.
    key : str, optional
        Id of the table (``tbl-<key>``, for links from the text); default from the caption.
    fold : bool
        Fold a table of more than :data:`hmlib.report.tables.COLLAPSE_ROWS` rows (per-cluster tables, long
        diagnostics); False keeps it open (a step's estimates).
    labels : dict, optional
        ``{code name: ColumnLabel}`` for this table only, before the label table
        (:data:`hmlib.report.labels.DELTA_SCALE_LABELS`).
    """
    prepared = prepare_table(frame, noun=_CONTEXT["noun"], digits=digits, index=index, labels=labels)
    caption = caption or "Table"
    _display(_html(table_html(prepared, caption=caption, key=key or slug(caption), max_rows=max_rows,
                              collapse_rows=COLLAPSE_ROWS if fold else None)))


def notices(items) -> None:
    """Show input-check notices (``hmlib.data.Notice``) as an escaped list."""
    items = list(items)
    if not items:
        _display(_html("<p>All input checks passed without remarks.</p>"))
        return
    rows = "".join(f"<li>{html.escape(n.message)}</li>" for n in items)
    _display(_html(f"<ul>{rows}</ul>"))


def figure_html(fig, *, caption: str | None = None, key: str | None = None, scale: int = FIGURE_SCALE,
                fold: bool = False) -> str:
    """``fig`` as a captioned ``<figure>`` block: PNG at ``scale`` x its size, shown at its own size (96 CSS px per
    inch), the caption as numbered ``<figcaption>`` and as alt text; the smallest font and any overlapping tick
    labels or annotations recorded as ``data-`` attributes. The figure is closed.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    caption, key : str, optional
        Default: those attached with :func:`hmlib.figures.style.caption`.
    scale : int
    fold : bool
        Fold the figure in ``<details>`` (a secondary or diagnostic figure: its summary names it, a click shows
        it; print keeps the summary line).
    """
    import base64
    import io
    import struct

    import matplotlib.pyplot as plt

    own_key, own_caption = caption_of(fig)
    caption = caption or own_caption
    key = key or own_key or slug(caption or "figure")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_CSS_DPI * scale, bbox_inches="tight", pad_inches=0.04)
    font = smallest_font(fig)
    overlaps = overlapping_ticks(fig)
    plt.close(fig)
    png = buffer.getvalue()
    width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR size
    esc = html.escape
    text = esc(caption or "")
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    ident = f"fig-{esc(slug(key))}"
    block = (f'<figure class="hm-figure" id="{ident}" data-hm-num="figure" '
             f'data-min-font-pt="{font:.1f}" data-text-overlaps="{overlaps}" data-natural-width="{width / scale:.0f}">'
             f'<img src="{src}" width="{width / scale:.0f}" height="{height / scale:.0f}" alt="{text}">'
             f'<figcaption><span class="hm-number" data-hm-kind="figure">Figure.</span> {text}</figcaption></figure>')
    if not fold:
        return block
    gist = esc((caption or "").split(": ")[0].split(". ")[0])
    return (f'<details class="hm-figure-fold"><summary class="hm-caption"><a href="#{ident}">Figure</a>. {gist} '
            f'<span class="hm-rows">(click to show)</span></summary>{block}</details>')


def figure(fig, *, caption: str | None = None, key: str | None = None, dpi: int | None = None,
           fold: bool = False) -> None:
    """Show a matplotlib figure with its numbered caption (:func:`figure_html`) and release it.

    ``dpi`` is kept for old notebooks and ignored: figures are embedded at twice their size.
    """
    _display(_html(figure_html(fig, caption=caption, key=key, fold=fold)))


def figures(items, *, empty: str | None = None, dpi: int | None = None, fold=False) -> None:
    """Show a section's figures in order (``result.figures()[section]``).

    Parameters
    ----------
    items : list of matplotlib.figure.Figure
    empty : str, optional
        Sentence shown when the section has no figure.
    dpi : int, optional
        Ignored (see :func:`figure`).
    fold : bool or tuple of str
        Fold every figure (True), or those whose key starts with one of the given prefixes (``("bars-",)``):
        secondary and diagnostic figures, one click away (:func:`figure_html`).
    """
    items = list(items)
    if not items and empty:
        narrative(empty)
    for fig in items:
        key = caption_of(fig)[0]
        folded = fold is True or (isinstance(fold, tuple) and key.startswith(fold))
        figure(fig, fold=folded)


def estimates(rows: pd.DataFrame, ctx, *, caption: str) -> None:
    """Show estimate rows; on simulated data with the truth and the fit before values went missing.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of the estimates contract.
    ctx : hmlib.steps.base.StepContext
        Supplies the truth file of simulated data (if any).
    caption : str
    """
    caveat = few_clusters_caveat(ctx.registry.n_clusters, cluster_noun(ctx.params.cluster))
    if caveat and rows["term"].astype(str).str.startswith("sd(").any():
        narrative(caveat)
    if ctx.truth:
        rows = with_truth(rows, ctx.truth, ctx.complete_data)
        caption += ("; truth from the simulation, and what this registry gave before values went missing "
                    "(before_missing: sampling error of one registry, not a missing-data effect)")
    table(rows, caption=caption, fold=False)
