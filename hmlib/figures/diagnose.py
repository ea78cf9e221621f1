"""Figures of step 1 (diagnose): heatmap, funnel plot, cluster bars, patterns, a categorical focus's levels,
and, with a time column, missingness by visit and calendar period and the dropout curves (aggregates only:
no figure draws one patient).

Each function takes a published (suppressed) table from
:class:`hmlib.steps.diagnose.DiagnoseResult` and returns a
:class:`matplotlib.figure.Figure`; nothing is shown or saved here, and no
global pyplot state is touched (figures are built with
:func:`hmlib.figures.style.new_figure`, in the report's one style). A NaN
share or count is a suppressed cell: it is drawn as
"suppressed" (hatched cell, or a note), never at its value.

Each figure carries its caption (:func:`hmlib.figures.style.caption`); the
report numbers it. Text from the data (cluster and variable names) is drawn as plain text:
``text.usetex`` is off and ``$`` is escaped, so mathtext never interprets a
name. At most ``max_clusters`` (default 60) clusters are labelled; with more,
the figures show the clusters with the most and the least missing values
and say so in the caption.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from hmlib.figures import style
from hmlib.stats.missingness.counts import level_label
from hmlib.stats.missingness.funnel import limit_tag
from hmlib.wording import plural

__all__ = ["missingness_heatmap", "funnel_plot", "cluster_missingness_bars", "pattern_plot", "level_mix_plot",
           "missingness_over_time_plot", "calendar_missingness_plot", "dropout_curves_plot"]


def _most_missing_first(heatmap: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by the share missing of the most incomplete variable, then the next, most missing first.

    The columns are taken in order of their mean published share; a suppressed (NaN) cell sorts after every
    published one of its column, so the order says nothing about its value.
    """
    if heatmap.empty:
        return heatmap
    columns = list(heatmap.mean(axis=0, skipna=True).sort_values(ascending=False, kind="stable").index)
    keys = [(-heatmap[c].to_numpy(dtype=float)) for c in reversed(columns)]
    keys = [np.nan_to_num(k, nan=np.inf) for k in keys]
    order = np.lexsort([np.arange(len(heatmap)), *keys])
    return heatmap.iloc[order][columns]


def missingness_heatmap(heatmap: pd.DataFrame, *, title: str | None = None, max_clusters: int = 60,
                        cluster_noun: str = "cluster", key: str = "missingness-heatmap",
                        rows: str = "patients") -> Figure:
    """Share missing by cluster (rows) and variable (columns), most missing first.

    Rows are ordered by the share missing of the most incomplete variable (then of the next), so the order
    matches "most missing first"; suppressed cells are hatched and sort last.

    Parameters
    ----------
    heatmap : pandas.DataFrame
        :attr:`DiagnoseResult.heatmap`: index cluster names, columns variables, values shares
        (NaN = suppressed).
    title : str, optional
        Caption (default: says what is shown and in which order).
    max_clusters : int, default 60
        With more clusters, the half with the most and the half with the
        least missing values are shown, separated by a gap.
    cluster_noun : str
        Word for one row's unit (``hospital``, or ``country`` for a heatmap by higher unit).
    key : str, default "missingness-heatmap"
        The caption's key (another for a heatmap by higher unit, so each figure has its own anchor).
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
        Captioned (:func:`hmlib.figures.style.caption`, key ``key``).
    """
    n_rows, n_cols = heatmap.shape
    if n_rows == 0 or n_cols == 0:
        fig, ax = style.new_figure(5.0, 1.0, style="white")
        ax.set_axis_off()
        return style.caption(fig, key, f"No variable can be shown by {cluster_noun} without revealing small counts.")
    heatmap = _most_missing_first(heatmap)
    keep, cut = style.head_tail(n_rows, max_clusters)
    shown = heatmap.iloc[keep]
    values = shown.to_numpy(dtype=float)
    if cut:  # a blank row marks the cut
        half = max_clusters // 2
        values = np.vstack([values[:half], np.full((1, n_cols), np.nan), values[half:]])
        labels = [*shown.index[:half], "...", *shown.index[half:]]
    else:
        labels = list(shown.index)
    gap_row = max_clusters // 2 if cut else -1
    width = min(style.MAX_WIDTH_IN, max(4.2, 2.4 + 0.85 * n_cols))
    fig, ax = style.new_figure(width, 1.1 + style.ROW_IN * max(len(labels), 4), style="white")
    # hatched background shows through the masked (suppressed) cells
    ax.add_patch(Rectangle((-0.5, -0.5), n_cols, len(labels), facecolor=style.SUPPRESSED_COLOUR,
                           hatch="///", edgecolor="white", linewidth=0, zorder=0))
    masked = np.ma.masked_invalid(values)
    image = ax.imshow(masked, aspect="auto", cmap="rocket_r", vmin=0, vmax=1, interpolation="nearest", zorder=1)
    if gap_row >= 0:
        ax.add_patch(Rectangle((-0.5, gap_row - 0.5), n_cols, 1, facecolor="white", zorder=2))
    if values.size <= 300 and width / max(n_cols, 1) >= 0.5:
        for i in range(values.shape[0]):
            for j in range(n_cols):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=style.SMALL_FONT_PT,
                            color="white" if v > 0.55 else "black", zorder=3)
    ax.set_xticks(range(n_cols), [style.label(c) for c in heatmap.columns], rotation=30 if n_cols > 3 else 0,
                  ha="right" if n_cols > 3 else "center")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(labels)), [style.label(lb) for lb in labels])
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    fig.colorbar(image, ax=ax, label="share missing", shrink=0.5, aspect=25)
    fig.legend(handles=[Patch(facecolor=style.SUPPRESSED_COLOUR, hatch="///", label="suppressed (small count)")],
               loc="outside lower center", frameon=False)
    columns = [str(c) for c in heatmap.columns]
    order = columns[0] + (f" (then {', '.join(columns[1:])})" if len(columns) > 1 else "")
    units = plural(cluster_noun)
    text = title or (f"Share of {rows} with each variable missing, by {cluster_noun}; {units} ordered "
                     f"by the share missing of {order}, most missing first. Hatched cells are suppressed "
                     "(small counts).")
    if cut:
        text += (f" Showing the {max_clusters // 2} {units} with the most and "
                 f"{max_clusters - max_clusters // 2} with the least missing of {n_rows}.")
    return style.caption(fig, key, text)


def funnel_plot(funnel, *, title: str | None = None, label_outliers: bool = True, max_labels: int = 20,
                cluster_noun: str = "cluster", key: str | None = None, rows: str = "patients") -> Figure:
    """Funnel plot: cluster missing rate against cluster size, with control limits.

    Parameters
    ----------
    funnel : hmlib.stats.missingness.FunnelResult
        A published funnel (``DiagnoseResult.funnels[variable]``); clusters
        whose rate is suppressed (NaN) are not drawn and are counted in the
        legend.
    title : str, optional
    label_outliers : bool, default True
        Name the clusters beyond the outermost limits (the ``max_labels``
        farthest from the centre line).
    max_labels : int, default 20
    cluster_noun : str
        Word for one point's unit (``hospital``, or ``country`` for a funnel by higher unit).
    key : str, optional
        The caption's key (default ``funnel-<variable>``).
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    units = plural(cluster_noun)
    table = funnel.table
    curve = funnel.curve
    fig, ax = style.new_figure(6.8, 4.3, style="whitegrid")
    shown = table.loc[table["rate"].notna() & table["n"].notna()]
    n_hidden = len(table) - len(shown)
    styles = {0: ("--", 1.0), 1: ("-", 1.2)}
    for i, level in enumerate(funnel.levels):
        tag = limit_tag(level)
        ls, lw = styles.get(min(i, 1))
        colour = "#4c72b0" if i == 0 else "#c44e52"
        ax.plot(curve["n"], curve[f"upper_{tag}"], ls, color=colour, lw=lw, label=f"{tag}% limits")
        ax.plot(curve["n"], curve[f"lower_{tag}"], ls, color=colour, lw=lw)
    ax.axhline(funnel.overall_rate, color="0.3", lw=1, label=f"overall {100 * funnel.overall_rate:.1f}%")
    outer = level_label(max(funnel.levels))
    is_out = shown["position"].isin([f"above {outer}", f"below {outer}"])
    ax.scatter(shown.loc[~is_out, "n"], shown.loc[~is_out, "rate"], s=18, color="0.35", alpha=0.8,
               label=units, zorder=3)
    ax.scatter(shown.loc[is_out, "n"], shown.loc[is_out, "rate"], s=26, color="#c44e52", zorder=4,
               label=f"beyond {outer} limits")
    sizes = shown["n"].to_numpy(dtype=float)
    log_x = bool(sizes.size) and sizes.max() / max(sizes.min(), 1) > 20
    notes = []
    if label_outliers and is_out.any():
        out = shown.loc[is_out].copy()
        out["distance"] = (out["rate"] - funnel.overall_rate).abs()
        labelled = out.nlargest(max_labels, "distance").sort_values(["rate", "n"])
        for row in labelled.itertuples(index=False):
            above = row.rate >= funnel.overall_rate
            notes.append(ax.annotate(style.label(row.cluster), (row.n, row.rate), xytext=(5, 3 if above else -11),
                                     textcoords="offset points", fontsize=style.SMALL_FONT_PT, color="#8c1c1c",
                                     arrowprops={"arrowstyle": "-", "color": "#c44e52", "lw": 0.4,
                                                 "shrinkA": 0, "shrinkB": 3}))
    if n_hidden:
        ax.scatter([], [], s=0, label=textwrap.fill(f"{n_hidden} {cluster_noun}(s) with suppressed counts not "
                                                    "shown", 24))
    if sizes.size:
        if log_x:
            ax.set_xscale("log")
            low, high = sizes.min() / 1.5, sizes.max() * 1.3
            ax.set_xlim(low, high)
            # plain numbers at 1-2-5 steps: the default 2x10^1 3x10^1 minor labels run into each other
            steps = [m * 10 ** e for e in range(0, 8) for m in (1, 2, 5) if low <= m * 10 ** e <= high]
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(steps))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            ax.set_xlim(0, sizes.max() * 1.08)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{rows} in the {cluster_noun}")
    ax.set_ylabel(f"share with {style.plain(funnel.variable)} missing")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    style.separate_labels(fig, notes)  # clusters sharing a rate (e.g. 100%) keep readable names
    text = title or (f"Funnel plot of missing {funnel.variable}: each {cluster_noun}'s share of {rows} with "
                     f"{funnel.variable} missing against its number of {rows}, with exact binomial limits around "
                     f"the overall {100 * funnel.overall_rate:.1f}%; {units} beyond the outer limits are "
                     "named.")
    if n_hidden:
        text += f" {n_hidden} {cluster_noun}(s) with suppressed counts are not drawn."
    return style.caption(fig, key or f"funnel-{funnel.variable}", text)


def cluster_missingness_bars(by_cluster: pd.DataFrame, variable: str, *, overall_rate: float | None = None,
                             title: str | None = None, max_clusters: int = 60,
                             cluster_noun: str = "cluster", rows: str = "patients") -> Figure:
    """Share missing of one variable per cluster, with Wilson intervals.

    Parameters
    ----------
    by_cluster : pandas.DataFrame
        Published per-cluster table (``DiagnoseResult.by_cluster.values``):
        ``cluster, variable, share_missing, ci_lower, ci_upper``; NaN share =
        suppressed.
    variable : str
    overall_rate : float, optional
        Drawn as a reference line.
    title : str, optional
    max_clusters : int, default 60
        With more, the clusters with the highest and lowest shares are shown.
    cluster_noun : str
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    sub = by_cluster.loc[by_cluster["variable"] == variable]
    if sub.empty:
        raise ValueError(f"no rows for variable {variable!r} in the table.")
    published = sub.loc[sub["share_missing"].notna()].sort_values(
        ["share_missing", "cluster"], ascending=[False, True], kind="stable")
    hidden = sub.loc[sub["share_missing"].isna()]
    keep, cut = style.head_tail(len(published), max_clusters)
    shown = published.iloc[keep]
    y = np.arange(len(shown))
    fig, ax = style.new_figure(6.5, 1.0 + style.ROW_IN * max(len(shown), 4), style="whitegrid")
    share = shown["share_missing"].to_numpy(float)
    lo = shown["ci_lower"].to_numpy(float)
    hi = shown["ci_upper"].to_numpy(float)
    ax.barh(y, share, color="#4c72b0", alpha=0.8, height=0.7)
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(share[has_ci], y[has_ci], xerr=np.vstack([share[has_ci] - lo[has_ci], hi[has_ci] - share[has_ci]]),
                fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)
    if overall_rate is not None:
        ax.axvline(overall_rate, color="#c44e52", lw=1, ls="--", label=f"overall {100 * overall_rate:.1f}%")
        ax.legend(loc="lower right")
    ax.set_yticks(y, [style.label(c) for c in shown["cluster"]])
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel(f"share with {style.plain(variable)} missing (Wilson 95% CI)")
    if title is None:
        title = (f"Share of {rows} with {variable} missing in each {cluster_noun}, with Wilson 95% intervals, "
                 "highest first")
        if overall_rate is not None:
            title += f"; dashed line: overall {100 * overall_rate:.1f}%"
    notes = []
    if cut:
        notes.append(f"showing the {max_clusters // 2} highest and {max_clusters - max_clusters // 2} "
                     f"lowest of {len(published)} {cluster_noun}s")
    if len(hidden):
        notes.append(f"{len(hidden)} {cluster_noun}(s) with suppressed counts not shown")
    if notes:
        title += " (" + "; ".join(notes) + ")"
    return style.caption(fig, f"bars-{variable}", title + ".")


def pattern_plot(patterns: pd.DataFrame, variables: Sequence[str], *, title: str | None = None,
                 max_patterns: int = 30, rows: str = "patients") -> Figure:
    """Missing-data patterns: which variables are missing (left) and how many patients (right).

    Parameters
    ----------
    patterns : pandas.DataFrame
        :func:`hmlib.stats.missingness.missingness_patterns` output (``pattern,
        count, share``; the pooled row has NaN ``n_missing_variables``).
    variables : sequence of str
        The variables the patterns were built from (column order).
    title : str, optional
    max_patterns : int, default 30
        Most frequent patterns shown (the pooled row always).
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    variables = list(variables)
    pooled = patterns["n_missing_variables"].isna()
    named = patterns.loc[~pooled].head(max_patterns)
    table = pd.concat([named, patterns.loc[pooled]])
    n = len(table)
    fig, (left, right) = style.new_figure(
        min(style.MAX_WIDTH_IN, 2.3 + 0.45 * len(variables) + 3.6), 1.0 + 0.26 * max(n, 3), ncols=2,
        style="white", sharey=True,
        gridspec_kw={"width_ratios": [max(len(variables), 1) * 0.5 + 0.5, 4]})
    for i, row in enumerate(table.itertuples(index=False)):
        missing = set() if row.pattern == "complete" or pd.isna(row.n_missing_variables) \
            else set(str(row.pattern).split(", "))
        for j, var in enumerate(variables):
            filled = var in missing
            left.scatter(j, i, s=60, color="#c44e52" if filled else "0.85", zorder=2)
        if pd.isna(row.n_missing_variables):
            left.text((len(variables) - 1) / 2, i, "pooled", ha="center", va="center", fontsize=style.SMALL_FONT_PT,
                      color="0.3", zorder=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    left.set_xticks(range(len(variables)), [style.label(v) for v in variables], rotation=40, ha="right")
    left.set_yticks(range(n), [style.label(p) for p in table["pattern"]])
    left.set_xlim(-0.6, len(variables) - 0.4)
    left.set_ylim(n - 0.5, -0.5)
    left.set_title("missing (red)", fontsize=style.SMALL_FONT_PT)
    counts = table["count"].to_numpy(float)
    right.barh(range(n), counts, color="#4c72b0", height=0.7)
    for i, (c, s) in enumerate(zip(counts, table["share"])):
        right.text(c, i, f" {int(c):,} ({100 * s:.1f}%)", va="center", fontsize=style.SMALL_FONT_PT)
    right.set_xlim(0, counts.max() * 1.45 if n else 1)
    right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    right.set_xlabel(rows)
    sns.despine(fig=fig, left=True)
    heading = title or ("Missing-data patterns: the variables each pattern lacks (red, left) and the "
                        f"{rows} with that pattern (right)")
    hidden = len(patterns.loc[~pooled]) - len(named)
    if hidden > 0:
        heading += f" (the {len(named)} most frequent of {len(patterns.loc[~pooled])} patterns shown)"
    return style.caption(fig, "patterns", heading + ".")


def level_mix_plot(table: pd.DataFrame, levels: Sequence[str], *, variable: str, cluster_noun: str = "cluster",
                   max_clusters: int = 60, rows: str = "patients") -> Figure:
    """Each cluster's patients by the focus's recorded level, and missing: one colour per level.

    Parameters
    ----------
    table : pandas.DataFrame
        Published level shares (:attr:`hmlib.steps.diagnose_levels.FocusLevels.table`):
        ``cluster, n_recorded, share_missing`` and one column per level (its
        share of the recorded values); NaN = suppressed.
    levels : sequence of str
        Level order (colours follow it).
    variable : str
    cluster_noun : str
    max_clusters : int, default 60
        With more, the clusters with the highest and lowest shares missing.
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
        One stacked bar per cluster (ordered by share missing): the share
        missing (grey), then each level's share of all the cluster's patients;
        suppressed shares together as one hatched segment at the end (the
        whole bar when the share missing is suppressed).
    """
    levels = [str(level) for level in levels]
    colours = style.level_colours(levels)
    ordered = table.assign(_order=table["share_missing"].fillna(-1.0)).sort_values(
        ["_order", "cluster"], ascending=[False, True], kind="stable")
    keep, cut = style.head_tail(len(ordered), max_clusters)
    shown = ordered.iloc[keep].reset_index(drop=True)
    fig, ax = style.new_figure(6.8, 1.6 + style.ROW_IN * max(len(shown), 4))
    for y, row in shown.iterrows():
        missing = row["share_missing"]
        if not np.isfinite(missing):
            ax.barh(y, 1.0, color="white", edgecolor=style.SUPPRESSED_COLOUR, hatch="///", height=0.75)
            continue
        ax.barh(y, missing, color=style.MISSING_LEVEL_COLOUR, height=0.75)
        left = missing
        # the published levels in order; the hidden ones together, hatched, at the end
        for level in levels:
            share = row[level]
            if np.isfinite(share):
                ax.barh(y, share * (1 - missing), left=left, color=colours[level], height=0.75)
                left += share * (1 - missing)
        if left < 1 - 1e-9:
            ax.barh(y, 1 - left, left=left, color="white", edgecolor=style.SUPPRESSED_COLOUR, hatch="///",
                    height=0.75)
    handles = [Patch(color=style.MISSING_LEVEL_COLOUR, label="missing")]
    handles += [Patch(color=colours[level], label=style.label(level)) for level in levels]
    handles.append(Patch(facecolor="white", edgecolor=style.SUPPRESSED_COLOUR, hatch="///", label="suppressed"))
    # one row when the labels fit the width (about 70 characters at 9 points), else three columns
    one_row = sum(len(h.get_label()) + 6 for h in handles) <= 70
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles) if one_row else 3, frameon=False)
    ax.set_yticks(np.arange(len(shown)), [style.label(c) for c in shown["cluster"]])
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel(f"share of the {cluster_noun}'s {rows}: {style.plain(variable)} missing, or recorded as each level")
    text = (f"Recorded levels of {variable} by {cluster_noun}, highest share missing first: each bar is the "
            f"{cluster_noun}'s {rows}, {variable} missing (grey) or recorded as each level; hatched: suppressed "
            "shares (a count below the smallest cell shown)")
    if cut:
        text += (f" (the {max_clusters // 2} {cluster_noun}s with most and {max_clusters - max_clusters // 2} "
                 f"with fewest missing of {len(ordered)})")
    return style.caption(fig, f"level-mix-{variable}", text + ".")


def _rate_line(ax, x, share, lower, upper, *, colour: str, label: str) -> None:
    """A share with its interval as a band; suppressed (NaN) points break the line and the band."""
    ax.fill_between(x, lower, upper, color=colour, alpha=0.18, linewidth=0)
    ax.plot(x, share, color=colour, marker="o", markersize=3.5, label=label)


def missingness_over_time_plot(by_visit: pd.DataFrame, *, variable: str, x_label: str,
                               title: str | None = None) -> Figure:
    """Share of a variable missing at each visit with its interval (band), and the share after dropout.

    Parameters
    ----------
    by_visit : pandas.DataFrame
        Published by-visit rows of one variable (:attr:`hmlib.steps.diagnose_time.TimeDiagnosis.by_visit`
        ``values``): ``visit, n_patients, n_after_dropout, share_missing, ci_lower, ci_upper``; NaN = suppressed.
    variable, x_label : str
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = by_visit.sort_values("visit")
    x = rows["visit"].to_numpy(float)
    fig, ax = style.new_figure(6.4, 3.4)
    _rate_line(ax, x, rows["share_missing"].to_numpy(float), rows["ci_lower"].to_numpy(float),
               rows["ci_upper"].to_numpy(float), colour="#4c72b0", label="missing (95% CI)")
    with np.errstate(divide="ignore", invalid="ignore"):
        after = rows["n_after_dropout"].to_numpy(float) / rows["n_patients"].to_numpy(float)
    ax.plot(x, after, color="#c44e52", linestyle="--", marker="s", markersize=3, label="of which after dropout")
    ax.set_ylim(0, max(0.05, float(np.nanmax(np.r_[rows["ci_upper"].to_numpy(float), 0.0])) * 1.1))
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel(style.plain(x_label))
    ax.set_ylabel(f"share of visits, {style.plain(variable)} missing")
    ax.legend(frameon=False, fontsize=style.SMALL_FONT_PT)
    sns.despine(fig=fig)
    text = title or (f"Share of {variable} missing at each visit, with its 95% interval (band), and the part "
                     "missing after the patient's dropout (dashed)")
    if rows["share_missing"].isna().any() or np.isnan(after).any():
        text += "; points with small counts are suppressed (gaps in the lines)"
    return style.caption(fig, f"over-time-{variable}", text + ".")


def calendar_missingness_plot(by_period: pd.DataFrame, *, variable: str, change: dict | None = None,
                              alpha: float = 0.05, title: str | None = None) -> Figure:
    """Share of a variable missing per calendar period with its interval, and the screened change point.

    Parameters
    ----------
    by_period : pandas.DataFrame
        Published rows of one variable: ``period`` (text), ``share_missing, ci_lower, ci_upper``; NaN = suppressed.
    variable : str
    change : dict, optional
        The change-point row (``last_period_before, rate_before, rate_after, p_value``); drawn when its
        p-value is below ``alpha``.
    alpha : float
    title : str, optional
    """
    rows = by_period.reset_index(drop=True)
    x = np.arange(len(rows), dtype=float)
    fig, ax = style.new_figure(style.MAX_WIDTH_IN, 3.4)
    _rate_line(ax, x, rows["share_missing"].to_numpy(float), rows["ci_lower"].to_numpy(float),
               rows["ci_upper"].to_numpy(float), colour="#4c72b0", label="missing (95% CI)")
    step = max(1, len(rows) // 12)
    ax.set_xticks(x[::step], [str(p) for p in rows["period"]][::step], rotation=40, ha="right")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylim(0, max(0.05, float(np.nanmax(np.r_[rows["ci_upper"].to_numpy(float), 0.0])) * 1.1))
    ax.set_ylabel(f"share of visits, {style.plain(variable)} missing")
    text = title or (f"Share of {variable} missing per calendar period (visits after dropout left out), with its "
                     "95% interval (band)")
    if change and change.get("last_period_before") is not None and change["p_value"] < alpha:
        split = float(np.flatnonzero(rows["period"].astype(str) == change["last_period_before"])[0]) + 0.5
        ax.axvline(split, color=style.CHANGED_COLOUR, linestyle=":")
        text += (f"; dotted: the change-point screen's split after {change['last_period_before']} "
                 f"({100 * change['rate_before']:.0f}% before, {100 * change['rate_after']:.0f}% after; a screen)")
    if rows["share_missing"].isna().any():
        text += "; periods with small counts are suppressed (gaps)"
    sns.despine(fig=fig)
    return style.caption(fig, f"calendar-{variable}", text + ".")


def dropout_curves_plot(curves: pd.DataFrame, *, variable: str, x_label: str, site: str | None = None,
                        pooled: Sequence[str] = (), title: str | None = None) -> Figure:
    """Kaplan-Meier share of patients still observed, overall (with its interval) and by site.

    Parameters
    ----------
    curves : pandas.DataFrame
        Published points of one variable: ``group, visit, share_remaining, ci_lower, ci_upper`` (``group``
        ``"all"`` or a site or the pooled small sites); NaN = suppressed, not drawn.
    variable, x_label : str
    site : str, optional
        The level of the groups.
    pooled : sequence of str
        Sites pooled into one curve (said in the caption).
    title : str, optional
    """
    fig, ax = style.new_figure(6.4, 3.6)
    groups = [g for g in dict.fromkeys(curves["group"]) if g != "all"]
    palette = sns.color_palette("husl", max(len(groups), 1))
    for colour, group in zip(palette, groups):
        part = curves.loc[curves["group"] == group].sort_values("visit")
        ax.step(part["visit"], part["share_remaining"], where="post", color=colour, alpha=0.55, linewidth=1,
                marker=".", markersize=4)
    overall = curves.loc[curves["group"] == "all"].sort_values("visit")
    ax.fill_between(overall["visit"].to_numpy(float), overall["ci_lower"].to_numpy(float),
                    overall["ci_upper"].to_numpy(float), step="post", color="0.3", alpha=0.15, linewidth=0)
    ax.step(overall["visit"], overall["share_remaining"], where="post", color="black", linewidth=2,
            label="all (95% CI)")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel(style.plain(x_label))
    ax.set_ylabel(f"share still observed ({style.plain(variable)})")
    ax.legend(frameon=False, fontsize=style.SMALL_FONT_PT, loc="lower left")
    sns.despine(fig=fig)
    text = title or (f"Dropout from {variable}: Kaplan-Meier share of patients still observed at each visit, "
                     "all patients (black, 95% interval)")
    if groups:
        text += f" and each {site} (thin lines, {len(groups)} curves)"
        if pooled:
            text += (f"; {len(pooled)} {site} units with fewer patients than the smallest cell shown are pooled "
                     "into one curve, never drawn alone")
    text += "; points with small counts are suppressed and not drawn"
    return style.caption(fig, f"dropout-{variable}", text + ".")


def dropout_profiles_plot(profiles: pd.DataFrame, *, variable: str, x_label: str, title: str | None = None) -> Figure:
    """Mean of a variable at each visit, one line per dropout pattern (the aggregate form of a spaghetti plot).

    Parameters
    ----------
    profiles : pandas.DataFrame
        Published points of one variable: ``group, label, visit, mean`` (NaN = suppressed, not drawn;
        :attr:`hmlib.steps.diagnose_time.TimeDiagnosis.profiles`).
    variable, x_label : str
    title : str, optional
    """
    fig, ax = style.new_figure(6.4, 3.6)
    groups = list(dict.fromkeys(profiles.sort_values("group")["label"]))
    palette = sns.color_palette("viridis", max(len(groups), 2))
    for colour, label in zip(palette, groups):
        part = profiles.loc[profiles["label"] == label].sort_values("visit")
        ax.plot(part["visit"].to_numpy(float), part["mean"].to_numpy(float), color=colour, marker="o",
                markersize=3, linewidth=1.4, label=style.plain(label))
    ax.set_xlabel(style.plain(x_label))
    ax.set_ylabel(f"mean {style.plain(variable)}")
    ax.legend(frameon=False, fontsize=style.SMALL_FONT_PT, loc="best")
    sns.despine(fig=fig)
    text = title or (f"Mean {variable} at each visit by dropout pattern: patients grouped by the visit of their "
                     f"last recorded {variable} (each group at least the smallest cell shown; single patients' "
                     "lines are never drawn)")
    if profiles["mean"].isna().any():
        text += "; means of fewer patients than the smallest cell shown are suppressed and not drawn"
    return style.caption(fig, f"profiles-{variable}", text + ".")
