"""The one figure style of the report, and the helpers every figure module uses.

Every figure is built with :func:`new_figure` (a ``matplotlib.figure.Figure``
made directly: no pyplot state, nothing shown or saved as a side effect) under
:data:`RC`. Text from the data (cluster, variable and level names) goes
through :func:`plain` or :func:`title`, so ``$`` never starts mathtext.
Method colours come from :mod:`hmlib.methods`.
"""

from __future__ import annotations

import textwrap

import matplotlib
from matplotlib import font_manager
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

__all__ = ["RC", "FALLBACK_FONTS", "MAX_LABEL_CHARS", "SUPPRESSED_COLOUR", "CHANGED_COLOUR", "UNCHANGED_COLOUR",
           "MISSING_LEVEL_COLOUR", "new_figure", "plain", "label", "title", "head_tail", "style_context",
           "level_colours", "caption", "caption_of"]

#: Fonts tried after DejaVu Sans for characters it lacks (Chinese, Japanese, Korean names in the data):
#: matplotlib falls back through the list glyph by glyph. Those installed are used (Debian:
#: fonts-droid-fallback, fonts-noto-cjk or fonts-wqy-zenhei; ``make test`` installs the first when it can).
FALLBACK_FONTS = ("Droid Sans Fallback", "Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei")
#: Labels longer than this (a 470-character site name) are shortened with an ellipsis in figures.
MAX_LABEL_CHARS = 40


_FALLBACK_FILES = ("DroidSansFallbackFull.ttf", "NotoSansCJK", "wqy-zenhei")


def _font_family() -> list:
    """DejaVu Sans and the installed fallback fonts (registered with matplotlib if its font cache predates them)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not set(FALLBACK_FONTS) & installed:
        for path in font_manager.findSystemFonts():
            if any(part in path for part in _FALLBACK_FILES):
                font_manager.fontManager.addfont(path)
        installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(f for f in FALLBACK_FONTS if f in installed)]


#: Matplotlib settings of every figure.
RC = {"text.usetex": False, "axes.titlesize": 11, "axes.labelsize": 10,
      "xtick.labelsize": 8, "ytick.labelsize": 8, "font.family": _font_family()}
#: Fill of a suppressed (small-count) cell.
SUPPRESSED_COLOUR = "#d9d9d9"
#: A scenario that changes the conclusion, and one that does not.
CHANGED_COLOUR = "#b2182b"
UNCHANGED_COLOUR = "#2166ac"
#: Fill of "not recorded" beside the levels of a categorical variable.
MISSING_LEVEL_COLOUR = "#bdbdbd"


def style_context(style: str | None = None):
    """The report's rc settings (and a seaborn axes style, if named) as a context manager."""
    rc = dict(RC)
    if style is not None:
        rc.update(sns.axes_style(style))
        rc.update(RC)
    return matplotlib.rc_context(rc)


def new_figure(width: float, height: float, *, nrows: int = 1, ncols: int = 1, style: str | None = None,
               squeeze: bool = True, **subplots_kw):
    """A new figure with a grid of axes, in the report's style.

    Parameters
    ----------
    width, height : float
        Size in inches.
    nrows, ncols : int
        Grid of axes (``Figure.subplots``).
    style : str, optional
        A seaborn axes style (``"whitegrid"``, ``"white"``); default plain matplotlib.
    squeeze : bool
        As ``Figure.subplots``.
    **subplots_kw
        Passed to ``Figure.subplots`` (``sharey=True``, ...).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : matplotlib.axes.Axes or numpy.ndarray of Axes
    """
    with style_context(style):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplots_kw)
    return fig, axes


def plain(text) -> str:
    """Data text as literal text: no mathtext."""
    return str(text).replace("$", r"\$")


def label(text, max_chars: int = MAX_LABEL_CHARS) -> str:
    """A name from the data for a tick or an annotation: literal, and at most ``max_chars`` long (an ellipsis
    marks a shortened one, so a 470-character site name does not squeeze the plot)."""
    text = str(text)
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return plain(text)


def title(text: str, width: int = 60) -> str:
    """Plain text wrapped to the figure (each paragraph separately); titles are not shortened."""
    return "\n".join(textwrap.fill(part, width) for part in plain(text).split("\n"))


def head_tail(n_rows: int, max_rows: int) -> tuple[np.ndarray, bool]:
    """Positions to show: all, or the first and last ``max_rows // 2``; and whether rows were left out."""
    if n_rows <= max_rows:
        return np.arange(n_rows), False
    half = max_rows // 2
    return np.r_[np.arange(half), np.arange(n_rows - (max_rows - half), n_rows)], True


def caption(fig, key: str, text: str):
    """Attach the report caption to ``fig``: ``key`` a stable id (``"missingness-heatmap"``), ``text`` the caption
    (plain text, no number: the report numbers figures). Returns ``fig``.

    Stored as the figure's ``gid`` and ``label`` (matplotlib's own artist properties), so it travels with the
    figure object to :func:`hmlib.report.display.figure`.
    """
    fig.set_gid(str(key))
    fig.set_label(" ".join(str(text).split()))
    return fig


def caption_of(fig) -> tuple:
    """``(key, caption text)`` attached by :func:`caption`; ``("", "")`` when none is."""
    return (fig.get_gid() or "", fig.get_label() or "")


def level_colours(levels) -> dict:
    """One colour per level of a categorical variable, in level order (``{level: colour}``).

    A sequential palette (light to dark), so that an ordered variable reads in
    its order; "missing" is never among them (:data:`MISSING_LEVEL_COLOUR`).
    """
    levels = [str(level) for level in levels]
    palette = sns.color_palette("viridis", max(len(levels), 2))
    return {level: matplotlib.colors.to_hex(colour) for level, colour in zip(levels, palette)}
