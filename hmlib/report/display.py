"""Showing results in the notebooks: escaped text, tables and figures.

The step notebooks call these instead of printing. Every string that may come
from the data or the params (cluster names, column names, levels) is
HTML-escaped here, so a site named ``<script>...`` shows as text. Tables are
aggregated results (never patient-level rows) rendered by pandas with
escaping on.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import numpy as np
import pandas as pd

from hmlib.results import with_truth
from hmlib.wording import cluster_noun, few_clusters_caveat

__all__ = ["narrative", "table", "notices", "figure", "figures", "estimates", "heading", "format_number"]


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
    significant digits (scientific only for very small or very large values)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    v = float(value)
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    if abs(v) < 1e-3:
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}g}"


def table(frame: pd.DataFrame, *, caption: str | None = None, digits: int = 3,
          max_rows: int = 60, index: bool = False) -> None:
    """Show an aggregated table with escaping on.

    Parameters
    ----------
    frame : pandas.DataFrame
        Aggregated results only (counts, shares, estimates).
    caption : str, optional
    digits : int
        Significant digits for floats.
    max_rows : int
        Longer tables are cut, and the caption says how many rows are hidden.
    index : bool
        Show the index.
    """
    shown = frame.head(max_rows)
    note = ""
    if len(frame) > max_rows:
        note = f" (first {max_rows} of {len(frame)} rows; the full table is in the artifacts)"
    body = shown.to_html(index=index, escape=True, na_rep="", border=0,
                         float_format=lambda v: format_number(v, digits), classes="hm-table")
    cap = f"<p><em>{html.escape(caption or '')}{html.escape(note)}</em></p>" if (caption or note) else ""
    _display(_html(cap + body))


def notices(items) -> None:
    """Show input-check notices (``hmlib.data.Notice``) as an escaped list."""
    items = list(items)
    if not items:
        _display(_html("<p>All input checks passed without remarks.</p>"))
        return
    rows = "".join(f"<li>{html.escape(n.message)}</li>" for n in items)
    _display(_html(f"<ul>{rows}</ul>"))


def figure(fig, *, dpi: int = 100) -> None:
    """Show a matplotlib figure as an embedded PNG and release it.

    Rendering to PNG here (rather than relying on the notebook backend)
    works for figures made with or without pyplot, and the report embeds
    the image.
    """
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    _display(Image(data=buffer.getvalue(), format="png"))


def figures(items, *, empty: str | None = None, dpi: int = 100) -> None:
    """Show a section's figures in order (``result.figures()[section]``).

    Parameters
    ----------
    items : list of matplotlib.figure.Figure
    empty : str, optional
        Sentence shown when the section has no figure.
    dpi : int
    """
    items = list(items)
    if not items and empty:
        narrative(empty)
    for fig in items:
        figure(fig, dpi=dpi)


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
    table(rows, caption=caption)
