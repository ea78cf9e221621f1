"""Figures of step 5 (sensitivity): scenario heatmap, forest plot, tipping-point curve.

Each function takes a :class:`hmlib.steps.sensitivity.SensitivityResult` (its
aggregated tables: the grid of estimates, the primary analysis, the delta
curve and tipping points) and returns a :class:`matplotlib.figure.Figure` built
with :func:`hmlib.figures.style.new_figure`; nothing is shown or saved, and no
global pyplot state is touched. They draw model estimates only: no
patient-level values and no counts. A changed conclusion is drawn in
:data:`hmlib.figures.style.CHANGED_COLOUR`, an unchanged one in
:data:`~hmlib.figures.style.UNCHANGED_COLOUR`; a failed scenario has no value
to show and is filled like a suppressed cell.
"""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hmlib.figures.style import (CHANGED_COLOUR, SUPPRESSED_COLOUR, UNCHANGED_COLOUR, label, new_figure, plain,
                                 style_context, title)

__all__ = ["scenario_heatmap", "scenario_forest", "tipping_point_curve"]


def _scenario_order(result) -> list:
    return list(dict.fromkeys(result.grid["scenario"]))


def scenario_heatmap(result, *, terms=None, clip: float = 3.0) -> Figure:
    """Scenario x term: each estimate's shift from the primary, in primary standard errors.

    Parameters
    ----------
    result : hmlib.steps.sensitivity.SensitivityResult
    terms : sequence of str, optional
        Columns (default: every term of the primary analysis).
    clip : float
        Colour scale limits (+/- ``clip`` standard errors).

    Returns
    -------
    matplotlib.figure.Figure
        Cells are annotated with the estimate; a black frame marks a changed
        conclusion (against the scenario's reference); failed scenarios are
        grey and say so.
    """
    terms = list(terms) if terms is not None else result.primary["term"].tolist()
    scenarios = _scenario_order(result)
    prim = result.primary.set_index("term")
    shift = np.full((len(scenarios), len(terms)), np.nan)
    text = np.full(shift.shape, "", dtype=object)
    changed = np.zeros(shift.shape, dtype=bool)
    failed = np.zeros(len(scenarios), dtype=bool)
    grid = result.grid
    for i, name in enumerate(scenarios):
        rows = grid.loc[grid["scenario"] == name].set_index("term", drop=False)
        if (rows["status"] != "ok").any():
            failed[i] = True
            continue
        for k, term in enumerate(terms):
            if term not in rows.index or term not in prim.index:
                continue
            r = rows.loc[term]
            se = float(prim.loc[term, "std_error"])
            if np.isfinite(se) and se > 0:
                shift[i, k] = (float(r["estimate"]) - float(prim.loc[term, "estimate"])) / se
            text[i, k] = f"{float(r['estimate']):.3g}"
            changed[i, k] = bool(r["changed_conclusion"])
    fig, ax = new_figure(1.6 + 1.1 * len(terms), 1.4 + 0.3 * len(scenarios), style="white")
    with style_context():
        cmap = sns.color_palette("vlag", as_cmap=True).with_extremes(bad=SUPPRESSED_COLOUR)
        image = ax.imshow(np.clip(shift, -clip, clip), cmap=cmap, vmin=-clip, vmax=clip, aspect="auto")
        for i in range(len(scenarios)):
            if failed[i]:
                ax.text((len(terms) - 1) / 2, i, "failed", ha="center", va="center", fontsize=7, color="#555555")
                continue
            for k in range(len(terms)):
                ax.text(k, i, text[i, k], ha="center", va="center", fontsize=7,
                        fontweight="bold" if changed[i, k] else "normal")
                if changed[i, k]:
                    ax.add_patch(Rectangle((k - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
        ax.set_xticks(range(len(terms)), [label(t) for t in terms], rotation=30, ha="right")
        ax.set_yticks(range(len(scenarios)), [label(s) for s in scenarios])
        bar = fig.colorbar(image, ax=ax, shrink=0.6)
        bar.set_label("shift from primary (primary SEs)")
        ax.set_title(title(f"Estimates across sensitivity scenarios (primary: {result.primary_method}); "
                            "framed: conclusion changed"))
    return fig


def scenario_forest(result, *, term: str | None = None) -> Figure:
    """The focus coefficient (or ``term``) with its interval in every scenario.

    The primary estimate is the vertical line, its interval the band; red
    marks a changed conclusion; failed scenarios are listed with their reason.
    """
    term = term or result.focus_terms[0]
    scenarios = _scenario_order(result)
    grid = result.grid
    prim = result.primary.loc[result.primary["term"] == term].iloc[0]
    fig, ax = new_figure(7.5, 1.4 + 0.28 * len(scenarios), style="whitegrid")
    with style_context():
        ax.axvspan(prim["ci_lower"], prim["ci_upper"], color="grey", alpha=0.15, lw=0)
        ax.axvline(prim["estimate"], color="grey", lw=1.2, label=f"primary {prim['estimate']:.3g}")
        ax.axvline(result.settings.null_value, color="black", lw=0.8, ls=":")
        for i, name in enumerate(scenarios):
            rows = grid.loc[grid["scenario"] == name]
            if (rows["status"] != "ok").any():
                reason = str(rows["change_reason"].iloc[0])
                ax.text(prim["estimate"], i, plain(f"failed: {reason[:70]}"), va="center", ha="center",
                        fontsize=7, color="#777777")
                continue
            r = rows.loc[rows["term"] == term]
            if not len(r):
                continue
            r = r.iloc[0]
            colour = CHANGED_COLOUR if r["changed_conclusion"] else UNCHANGED_COLOUR
            ax.errorbar(r["estimate"], i, xerr=[[r["estimate"] - r["ci_lower"]], [r["ci_upper"] - r["estimate"]]],
                        fmt="o", color=colour, ms=4, capsize=2, lw=1)
        ax.set_yticks(range(len(scenarios)), [label(s) for s in scenarios])
        ax.set_ylim(len(scenarios) - 0.5, -0.5)
        ax.set_xlabel(plain(f"{term} coefficient (95% CI)"))
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        ax.set_title(title(f"{term} across sensitivity scenarios; red: conclusion changed against the "
                            "scenario's reference; band: primary 95% CI"))
    return fig


def tipping_point_curve(result) -> Figure:
    """Focus coefficient and 95% CI against the MNAR shift delta, one panel per delta mode.

    The lower axis is in SDs of the observed focus values, the upper in its
    own units; for a categorical focus the lower axis is the log odds ratio
    delta and the upper the odds ratio ``e^delta``, with one curve per level
    of the focus. The dashed vertical line is the tipping point (when found).
    """
    curve = result.delta_curve
    modes = [m for m in ("global", "cluster") if len(curve) and (curve["mode"] == m).any()]
    n_panels = max(1, len(modes))
    fig, axes = new_figure(5.2 * n_panels, 4.0, ncols=n_panels, squeeze=False, style="whitegrid")
    axes = axes[0]
    log_odds = getattr(result, "delta_scale", "SD") == "log odds"
    with style_context("whitegrid"):
        if not modes:
            axes[0].text(0.5, 0.5, "no delta adjustment was run", ha="center", va="center",
                         transform=axes[0].transAxes)
            axes[0].set_axis_off()
            return fig
        sd = result.observed_sd
        titles = {"global": "same shift in every cluster", "cluster": "shift proportional to cluster missingness"}
        terms = list(dict.fromkeys(curve["term"])) if "term" in curve.columns else [result.focus_terms[0]]
        shades = [UNCHANGED_COLOUR, "#6a51a3", "#238b45", "#d94801", "#525252"]
        for ax, mode in zip(axes, modes):
            for k, term in enumerate(terms):
                colour = shades[k % len(shades)]
                part = curve.loc[curve["mode"] == mode]
                if "term" in part.columns:
                    part = part.loc[part["term"] == term]
                part = part.sort_values("delta_sd")
                ax.fill_between(part["delta_sd"], part["ci_lower"], part["ci_upper"], color=colour, alpha=0.12,
                                lw=0)
                ax.plot(part["delta_sd"], part["estimate"], color=colour, lw=1.5,
                        label=plain(term) if len(terms) > 1 else None)
                grid_pts = part.loc[part["source"] != "bisection"]
                ax.scatter(grid_pts["delta_sd"], grid_pts["estimate"], s=18, zorder=3,
                           c=np.where(grid_pts["changed"], CHANGED_COLOUR, colour))
                prim = part.loc[part["source"] == "primary"]
                if len(prim):
                    ax.axhline(float(prim["estimate"].iloc[0]), color=colour, lw=0.6, alpha=0.6)
            ax.axhline(result.settings.null_value, color="black", lw=0.8, ls=":")
            for side, info in result.tipping.get(mode, {}).items():
                if info.get("found"):
                    label = f" OR {np.exp(info['delta_sd']):.2f}" if log_odds else f" {info['delta_sd']:+.2f} SD"
                    ax.axvline(info["delta_sd"], color=CHANGED_COLOUR, ls="--", lw=1)
                    ax.text(info["delta_sd"], ax.get_ylim()[1], label, color=CHANGED_COLOUR, fontsize=7, va="top",
                            ha="left" if side == "positive" else "right")
            if log_odds:
                ax.set_xlabel("delta (log odds ratio, unrecorded against recorded patients like them)")
                ax.set_ylabel(plain(f"{result.focus} coefficients (95% CI)"))
                top = ax.secondary_xaxis("top", functions=(np.exp, np.log))
                top.set_xlabel("odds ratio e^delta", fontsize=8)
                if len(terms) > 1:
                    ax.legend(fontsize=7, frameon=False, loc="best")
            else:
                ax.set_xlabel("delta (SDs of the observed values)")
                ax.set_ylabel(plain(f"{result.focus_terms[0]} coefficient (95% CI)"))
                if np.isfinite(sd) and sd > 0:
                    top = ax.secondary_xaxis("top", functions=(lambda x, s=sd: x * s, lambda u, s=sd: u / s))
                    top.set_xlabel(plain(f"delta ({result.focus} units)"), fontsize=8)
            ax.set_title(title(f"MNAR delta adjustment: {titles.get(mode, mode)}", 50))
    return fig
