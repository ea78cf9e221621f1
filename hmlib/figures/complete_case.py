"""Figures of step 2 (complete-case check).

Each function returns a matplotlib Figure built with
:func:`hmlib.figures.style.new_figure` (nothing is shown or saved as a side
effect), with its caption attached (:func:`hmlib.figures.style.caption`).
Figures show shares, size bands and model estimates only, never
patient-level values, and leave out clusters below the small-cell threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from hmlib.figures import style

__all__ = ["retention_plot", "smd_plot", "level_shares_plot", "indicator_effects_plot", "flow_diagram"]

# The report's two signal colours: red marks a problem (a cluster lost, a
# shift beyond the threshold), blue the rest.
_FLAGGED = style.CHANGED_COLOUR
_NEUTRAL = style.UNCHANGED_COLOUR


def retention_plot(retention: pd.DataFrame, *, overall_share: float, min_cell: int = 11, max_clusters: int = 60,
                   rows: str = "patients"):
    """Clusters ordered by complete-case retention, marker area by cluster size.

    Parameters
    ----------
    retention : pandas.DataFrame
        The published retention table (``CompleteCaseResult.retention_display``:
        suppressed cells labelled ``"suppressed"``). The plot shows shares and
        size bands only; a cluster whose share is suppressed (a count below
        ``min_cell`` could be recovered from it and the cluster's size) or
        whose size is under ``min_cell`` is left out and counted in the title.
    overall_share : float
        The share of all patients who are complete cases (the dashed line).
    min_cell : int
    max_clusters : int
        With more clusters, only the lowest and highest ``max_clusters // 2``.
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    retention = retention.assign(**{c: pd.to_numeric(retention[c], errors="coerce")
                                    for c in ("n_all", "n_complete", "retained")})
    shown = retention.loc[(retention["n_all"] >= min_cell) & retention["retained"].notna()]
    n_small = len(retention) - len(shown)
    table = shown.sort_values(["retained", "n_all"], ascending=[True, False]).reset_index(drop=True)
    heading = (f"Share of each cluster's {rows} kept by complete-case analysis, lowest first; red: a cluster lost "
               f"entirely; marker size: fewer than 50, 50-199, 200-999, 1000 or more {rows}; dashed line: overall")
    if len(table) > max_clusters:
        half = max_clusters // 2
        table = pd.concat([table.head(half), table.tail(half)], ignore_index=True)
        heading += f" (lowest and highest {half} of {len(shown)} clusters)"
    if n_small:
        heading += f". {n_small} cluster(s) not shown (fewer than {min_cell} {rows}, or a small count)"
    fig, ax = style.new_figure(6.2, max(2.4, style.ROW_IN * len(table) + 0.9))
    y = np.arange(len(table))
    # Marker area by size band, not exact size: exact sizes could reveal small counts.
    bands = np.array([min_cell, 50, 200, 1000])
    band = np.searchsorted(bands, table["n_all"].to_numpy(), side="right")
    ax.scatter(table["retained"], y, s=25 + 70 * band, c=np.where(table["lost"], _FLAGGED, _NEUTRAL),
               alpha=0.75, edgecolor="white")
    overall = overall_share
    ax.axvline(overall, color="grey", ls="--", lw=1)
    ax.text(overall, -0.6, f" overall {overall:.0%}", color="grey", va="bottom", fontsize=style.SMALL_FONT_PT)
    ax.set_yticks(y, [style.label(c) for c in table["cluster"]])
    ax.set_ylim(len(table) - 0.5, -1.0)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("share of the cluster's patients who are complete cases")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    return style.caption(fig, "retention", heading + ".")


def smd_plot(shift: pd.DataFrame, *, threshold: float, rows: str = "patients"):
    """Standardised mean differences, complete cases vs all patients, with the threshold lines.

    Parameters
    ----------
    shift : pandas.DataFrame
        :func:`hmlib.stats.complete_case.standardized_differences`.
    threshold : float
        ``|SMD|`` beyond which a row is flagged
        (:data:`hmlib.stats.complete_case.SMD_THRESHOLD`).
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = [style.plain(v + (f" = {lv}" if lv else "")) for v, lv in zip(shift["variable"], shift["level"])]
    table = shift.assign(label=labels).iloc[::-1]
    fig, ax = style.new_figure(6.2, max(2.0, 0.26 * len(table) + 0.9))
    y = np.arange(len(table))
    flagged = table["smd"].abs() > threshold
    ax.scatter(table["smd"], y, c=np.where(flagged, _FLAGGED, _NEUTRAL), zorder=3)
    ax.hlines(y, 0, table["smd"], color="lightgrey", zorder=2)
    for x in (-threshold, threshold):
        ax.axvline(x, color="grey", ls="--", lw=1)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, table["label"])
    lim = max(0.25, float(table["smd"].abs().max()) * 1.15)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(f"standardised difference, complete cases minus all {rows}")
    return style.caption(fig, "estimand-shift",
                         "How complete-case selection shifts the population: each variable's standardised "
                         f"difference between complete cases and all {rows}; beyond the dashed lines (±{threshold} "
                         "SD, red) the complete cases differ from the population the question is about.")


def level_shares_plot(shift: pd.DataFrame, levels: dict, *, rows: str = "patients"):
    """Level shares of categorical variables in all patients and among complete cases, one colour per level.

    Parameters
    ----------
    shift : pandas.DataFrame
        :func:`hmlib.stats.complete_case.standardized_differences` (one row per
        level of a categorical variable: shares of its recorded values).
    levels : dict
        ``{variable: levels in order}``, one panel per variable in this order
        (the focus first); colours follow the level order.
    rows : str, default "patients"
        What the extract's rows are, in the plural (``"visits"`` with a visit time:
        :func:`hmlib.wording.row_noun`).

    Returns
    -------
    matplotlib.figure.Figure
        Per variable two stacked bars (all patients with the variable
        recorded, complete cases), each level's share written in its segment
        and, among complete cases, its SMD.
    """
    groups = [(f"all {rows} (recorded values)", "all_patients"), ("complete cases", "complete_cases")]
    fig, axes = style.new_figure(6.8, 1.9 * len(levels) + 0.4, nrows=len(levels), squeeze=False)
    for ax, (variable, order) in zip(axes[:, 0], levels.items()):
        recorded = shift.loc[shift["variable"] == variable].set_index("level")
        order = [str(level) for level in order]
        colours = style.level_colours(order)
        for y, (_, column) in enumerate(groups):
            left = 0.0
            for level in order:
                share = float(recorded.loc[level, column]) if level in recorded.index else 0.0
                ax.barh(y, share, left=left, color=colours[level], edgecolor="white",
                        label=style.label(level) if y == 0 else None)
                if share >= 0.08:
                    text = f"{share:.0%}"
                    if y == 1 and level in recorded.index:
                        text += f"\nSMD {recorded.loc[level, 'smd']:+.2f}"
                    ax.text(left + share / 2, y, text, ha="center", va="center",
                            fontsize=style.SMALL_FONT_PT, color="white")
                left += share
        ax.set_yticks(range(len(groups)), [g[0] for g in groups])
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.invert_yaxis()
        ax.legend(ncols=min(len(order), 5), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
                  title=style.plain(variable))
    return style.caption(fig, "level-shares",
                         f"Levels of the categorical variables among all {rows} with the variable recorded and "
                         "among complete cases: each level's share written in its segment (shares under 8% "
                         f"unlabelled) and, for complete cases, its standardised difference (SMD) from all {rows}.")


def indicator_effects_plot(table: pd.DataFrame, *, focus: str, max_clusters: int = 60,
                           missing_level: bool = False):
    """Per-cluster effect of being unmeasured: raw estimate (with 95% CI) and partially pooled.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`hmlib.stats.complete_case.indicator_effects_by_cluster` (its
        ``attrs["mean"]`` is drawn as the common effect).
    focus : str
        The variable whose missingness the indicator codes.
    max_clusters : int
        With more estimable clusters, an evenly spaced selection by pooled effect.
    missing_level : bool
        The effect is the missing level's of a categorical focus (the
        missing-category model), against its reference level.

    Returns
    -------
    matplotlib.figure.Figure
    """
    est = table.loc[table["raw"].notna()].sort_values("pooled").reset_index(drop=True)
    if len(est) > max_clusters:
        est = est.iloc[np.linspace(0, len(est) - 1, max_clusters).round().astype(int)]
    fig, ax = style.new_figure(6.6, max(2.4, style.ROW_IN * len(est) + 1.0))
    y = np.arange(len(est))
    lo, hi = est["raw"] - 1.96 * est["raw_se"], est["raw"] + 1.96 * est["raw_se"]
    # Unstable single-cluster estimates would stretch the axis; clip them at a robust limit.
    lim = 1.3 * max(float(est["pooled"].abs().max()), float(est["raw"].abs().quantile(0.9)), 1e-6)
    ax.hlines(y, lo.clip(-lim, lim), hi.clip(-lim, lim), color="lightgrey")
    ax.scatter(est["raw"].clip(-lim, lim), y, marker="o", facecolor="white", edgecolor="#555555",
               label="this cluster alone (95% CI)", zorder=3)
    ax.scatter(est["pooled"], y, marker="D", color=_NEUTRAL, label="partially pooled", zorder=4)
    mean = table.attrs.get("mean", np.nan)
    ax.axvline(mean, color=_NEUTRAL, ls="--", lw=1, label="common effect")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [style.label(c) for c in est["cluster"]])
    name = style.plain(focus)
    what = (f"effect of the level '{name} missing' (against the reference level)" if missing_level
            else f"effect of {name} being unmeasured")
    ax.set_xlabel(f"{what} on the outcome (model scale)")
    ax.legend(loc="lower right")
    said = (f"the level '{focus} missing' (against the reference level)" if missing_level
            else f"{focus} being unmeasured")
    return style.caption(fig, "indicator-by-cluster",
                         f"Is missingness of {focus} informative in every cluster? The effect of {said} estimated "
                         "within each cluster (open circles, 95% CI; clipped at "
                         f"±{lim:.3g}) and partially pooled (diamonds); dashed line: the common effect.")


#: Text size of the flow diagram's boxes (points), and its width (inches: the report's text width).
FLOW_FONT_PT = 9
FLOW_WIDTH_IN = 7.2


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, (int, np.integer)) else str(value)


def _box(ax, x, y, text, *, ha="center", va="center", colour="#f2f2f2"):
    return ax.text(x, y, text, ha=ha, va=va, fontsize=FLOW_FONT_PT, linespacing=1.35, transform=ax.transAxes,
                   bbox={"boxstyle": "round,pad=0.5", "facecolor": colour, "edgecolor": "#404040", "linewidth": 0.8})


def _arrow(ax, start, end):
    ax.annotate("", xy=end, xytext=start, xycoords="axes fraction", textcoords="axes fraction",
                arrowprops={"arrowstyle": "-|>", "color": "#404040", "linewidth": 0.9, "shrinkA": 0, "shrinkB": 0})


def flow_diagram(flow, *, noun: str = "cluster", rows: str = "patients"):
    """A CONSORT-style flow of patients (or visits) and clusters from the extract to each analysis.

    Parameters
    ----------
    flow : hmlib.steps.complete_case_flow.FlowRecord
        The published flow (suppressed counts already shown as ranges).
    noun : str
        What a cluster is called (``site``, ``hospital``).
    rows : str
        What the extract's rows are, in the plural: ``"patients"``, or ``"visits"`` when the params give
        a visit time (the clusters are then patients).

    Returns
    -------
    matplotlib.figure.Figure
        7.2 in wide, 9-pt text; its caption (:func:`hmlib.figures.style.caption`) says what it shows.
    """
    lines = [f"Excluded: {_count(flow.n_excluded)} {rows} missing any model variable",
             "(each counted once, under the first missing in model order)"]
    lines += [f"  missing {style.label(e.variable)}: {_count(e.n_excluded)}" for e in flow.exclusions]
    height = 2.6 + 0.2 * len(flow.exclusions)
    fig, ax = style.new_figure(FLOW_WIDTH_IN, height)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    top, bottom = 1 - 0.45 / height, 0.45 / height
    main_x = 0.2
    _box(ax, main_x, top, f"Registry extract\n{flow.n_patients:,} {rows} in {flow.n_clusters:,} {noun}s")
    _box(ax, 0.76, top, f"Multilevel imputation and joint model\nall {flow.n_patients:,} {rows} in "
                        f"{flow.n_clusters:,} {noun}s", colour="#deebf7")
    _arrow(ax, (main_x + 0.175, top), (0.76 - 0.225, top))
    lost = (f"\n{flow.n_clusters_lost:,} {noun}(s) lost entirely" if flow.n_clusters_lost else "")
    _box(ax, main_x, bottom, f"Complete-case analysis\n{_count(flow.n_complete)} {rows} in "
                             f"{flow.n_clusters_complete:,} {noun}s{lost}",
         colour="#fddbc7" if flow.n_clusters_lost else "#f2f2f2")
    middle = (top + bottom) / 2
    ax.plot([main_x, main_x], [top - 0.4 / height, middle], color="#404040", lw=0.9, transform=ax.transAxes)
    _arrow(ax, (main_x, middle), (main_x, bottom + (0.42 if flow.n_clusters_lost else 0.32) / height))
    _arrow(ax, (main_x, middle), (0.33, middle))
    _box(ax, 0.345, middle, "\n".join(style.plain(line) for line in lines), ha="left")
    note = flow.note()
    text = (f"Flow of {rows} and {noun}s from the registry extract to the complete-case analysis and to the "
            f"analyses that impute. {note}")
    return style.caption(fig, "complete-case-flow", text)
