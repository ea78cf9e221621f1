"""The one figure style of the report, and the helpers every figure module uses.

Every figure is built with :func:`new_figure` (a ``matplotlib.figure.Figure``
made directly: no pyplot state, nothing shown or saved as a side effect) under
:data:`RC`. Text from the data (cluster, variable and level names) goes
through :func:`plain` or :func:`title`, so ``$`` never starts mathtext.
Method colours come from :mod:`hmlib.methods`.

Every figure also carries its caption (:func:`caption`): the report numbers
it ("Figure 3. ...") and uses it as the image's alt text, so a figure draws
no title of its own (panel titles stay). Sizes are chosen for reading on
the page: no text below :data:`MIN_FONT_PT` points, and no figure wider than
:data:`MAX_WIDTH_IN` inches, the width of an A4 page inside its margins, so
the report shows and prints each figure at its own size (text at its point
size). :func:`smallest_font` and :func:`overlapping_ticks` check a drawn
figure; the report records both beside the image and the browser test reads
them.
"""

from __future__ import annotations

import textwrap

import matplotlib
from matplotlib import font_manager
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

__all__ = ["RC", "FALLBACK_FONTS", "MAX_LABEL_CHARS", "SUPPRESSED_COLOUR", "CHANGED_COLOUR", "UNCHANGED_COLOUR",
           "MISSING_LEVEL_COLOUR", "MIN_FONT_PT", "SMALL_FONT_PT", "MAX_WIDTH_IN", "ROW_IN", "new_figure", "plain",
           "label", "title", "head_tail", "style_context", "level_colours", "caption", "caption_of", "smallest_font",
           "overlapping_ticks", "separate_labels"]

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


#: The smallest text of any figure, in points at the size the report shows and prints it.
MIN_FONT_PT = 9.0
#: Legends, annotations and cell labels: the smallest size used.
SMALL_FONT_PT = MIN_FONT_PT
#: Widest figure, in inches: an A4 page (210 mm) less 2 x 11 mm margins, so print shows it at its own size.
MAX_WIDTH_IN = 7.2
#: Height of one labelled row (a cluster, a scenario, a method) in inches: a 9-point label and a little air.
ROW_IN = 0.17

#: Matplotlib settings of every figure.
RC = {"text.usetex": False, "font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5,
      "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": SMALL_FONT_PT,
      "legend.title_fontsize": SMALL_FONT_PT, "figure.titlesize": 10.5, "font.family": _font_family()}
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


def _texts(fig):
    """The visible, non-empty texts of ``fig`` (in visible axes)."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        if not (text.get_visible() and text.get_text().strip()):
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        yield text


def smallest_font(fig) -> float:
    """The smallest font size (points) of the visible, non-empty text of ``fig``."""
    sizes = [t.get_fontsize() for t in _texts(fig)]
    return float(min(sizes)) if sizes else float("nan")


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def text_extent(text, renderer):
    """The window box of a text's own characters; for an annotation without its leader line (a line that runs
    past other labels is not an overlap a reader sees, and measuring the arrow costs milliseconds a call)."""
    if isinstance(text, Annotation):
        text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def _overlap(a, b, margin: float = 0.5) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > margin) and (min(a.y1, b.y1) - max(a.y0, b.y0) > margin)


def _tick_overlaps(axis, name: str, renderer, dpi: float) -> int:
    """Overlapping neighbours among one axis's tick labels. Upright labels: their boxes. Slanted labels (30 degrees):
    their boxes overlap anyway, so two neighbours clash when the gap between their anchors, across the slant, is
    less than a line of text."""
    texts = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text().strip()]
    slanted = [t for t in texts if t.get_rotation() % 90 > 1e-6]
    if not slanted:
        boxes = sorted((t.get_window_extent(renderer) for t in texts), key=lambda b: b.x0 if name == "x" else b.y0)
        return sum(_overlap(a, b) for a, b in zip(boxes, boxes[1:]))
    low, high = sorted(axis.get_view_interval())
    locs = [v for v in axis.get_majorticklocs() if low <= v <= high]
    column = 0 if name == "x" else 1
    points = sorted(axis.axes.transData.transform([(v, 0) if name == "x" else (0, v) for v in locs])[:, column])
    angle = np.deg2rad(slanted[0].get_rotation() % 180)
    across = np.abs(np.sin(angle) if name == "x" else np.cos(angle))
    line = max(t.get_fontsize() for t in slanted) * dpi / 72.0
    return int(sum((b - a) * across < line for a, b in zip(points, points[1:])))


def overlapping_ticks(fig) -> int:
    """Overlapping text of a drawn ``fig``: neighbouring tick labels on any axis (secondary axes included) whose
    boxes overlap, plus pairs of overlapping annotations (``ax.texts``) within an axes."""
    renderer = _renderer(fig)
    pairs = 0
    every = [*fig.axes, *(child for ax in fig.axes for child in ax.child_axes)]
    for ax in every:
        if not ax.get_visible():
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            pairs += _tick_overlaps(axis, name, renderer, fig.dpi)
        notes = [text_extent(t, renderer) for t in ax.texts if t.get_visible() and t.get_text().strip()]
        pairs += sum(_overlap(a, b) for k, a in enumerate(notes) for b in notes[k + 1:])
    return pairs


def separate_labels(fig, labels, *, rounds: int = 80) -> None:
    """Move annotations (``ax.annotate`` with ``textcoords="offset points"``) apart vertically until their text
    boxes (:func:`text_extent`, leader lines left out) no longer overlap: each overlapping pair is pushed apart by
    half the overlap (the upper one up, the lower one down); give the annotations ``arrowprops`` so a label moved
    away from its point keeps a leader line."""
    labels = [a for a in labels if a.get_visible() and a.get_text().strip()]
    if len(labels) < 2:
        return
    renderer = _renderer(fig)
    to_points = 72.0 / fig.dpi
    for _ in range(rounds):
        boxes = [text_extent(a, renderer) for a in labels]
        clash = False
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                a, b = boxes[i], boxes[j]
                if not _overlap(a, b):
                    continue
                clash = True
                lower, upper = (i, j) if a.y0 <= b.y0 else (j, i)
                push = (min(a.y1, b.y1) - max(a.y0, b.y0)) / 2 + 1.0
                for k, sign in ((upper, 1.0), (lower, -1.0)):
                    dx, dy = labels[k].xyann
                    labels[k].xyann = (dx, dy + sign * push * to_points)
                    boxes[k] = text_extent(labels[k], renderer)  # only the two moved labels' boxes change
        if not clash:
            break
