"""Figures of step 5 (sensitivity): scenario heatmap, forest plot, tipping-point curves (focus; after dropout).

Each function takes a :class:`hmlib.steps.sensitivity.SensitivityResult` (its
aggregated tables: the grid of estimates, the primary analysis, the delta
curve and tipping points) and returns a :class:`matplotlib.figure.Figure` built
with :func:`hmlib.figures.style.new_figure`; nothing is shown or saved, and no
global pyplot state is touched. They draw model estimates only: no
patient-level values and no counts. A changed conclusion is drawn in
:data:`hmlib.figures.style.CHANGED_COLOUR`, an unchanged one in
:data:`~hmlib.figures.style.UNCHANGED_COLOUR`; a failed scenario has no value
to show and is filled like a suppressed cell. Each figure carries its
caption (:func:`hmlib.figures.style.caption`).
"""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

from hmlib.figures.style import (CHANGED_COLOUR, MAX_WIDTH_IN, ROW_IN, SMALL_FONT_PT, SUPPRESSED_COLOUR,
                                 UNCHANGED_COLOUR, caption, label, new_figure, plain, style_context)
from hmlib.wording import plural, row_noun

__all__ = ["scenario_heatmap", "scenario_forest", "tipping_point_curve", "dropout_tipping_curve"]


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
    fig, ax = new_figure(min(MAX_WIDTH_IN, 2.6 + 0.72 * len(terms)), 1.0 + ROW_IN * len(scenarios), style="white")
    with style_context():
        cmap = sns.color_palette("vlag", as_cmap=True).with_extremes(bad=SUPPRESSED_COLOUR)
        image = ax.imshow(np.clip(shift, -clip, clip), cmap=cmap, vmin=-clip, vmax=clip, aspect="auto")
        for i in range(len(scenarios)):
            if failed[i]:
                ax.text((len(terms) - 1) / 2, i, "failed", ha="center", va="center", fontsize=SMALL_FONT_PT,
                        color="#555555")
                continue
            for k in range(len(terms)):
                ax.text(k, i, text[i, k], ha="center", va="center", fontsize=SMALL_FONT_PT,
                        fontweight="bold" if changed[i, k] else "normal")
                if changed[i, k]:
                    ax.add_patch(Rectangle((k - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
        ax.set_xticks(range(len(terms)), [label(t) for t in terms], rotation=30, ha="left")
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(scenarios)), [label(s) for s in scenarios])
        bar = fig.colorbar(image, ax=ax, shrink=0.4, aspect=30, pad=0.02)
        bar.set_label("shift from primary (primary SEs)")
    focus = ", ".join(result.focus_terms)
    return caption(fig, "scenario-heatmap",
                   f"Every coefficient in every sensitivity scenario: each cell gives the estimate, coloured by its "
                   f"shift from the primary analysis ({result.primary_method}) in primary standard errors. A framed "
                   "cell marks a coefficient whose own conclusion changes in that scenario (its interval now "
                   "crosses zero, or it moves by the set share); the report's sensitivity verdict is about the focus "
                   f"coefficient ({focus}) only, so a framed cell in another column does not change it. Grey: the "
                   "scenario failed.")


def scenario_forest(result, *, term: str | None = None) -> Figure:
    """The focus coefficient (or ``term``) with its interval in every scenario.

    The primary estimate is the vertical line, its interval the band; red
    marks a changed conclusion; failed scenarios are listed with their reason.
    """
    term = term or result.focus_terms[0]
    scenarios = _scenario_order(result)
    grid = result.grid
    prim = result.primary.loc[result.primary["term"] == term].iloc[0]
    fig, ax = new_figure(6.6, 0.9 + ROW_IN * len(scenarios), style="whitegrid")
    with style_context():
        ax.axvspan(prim["ci_lower"], prim["ci_upper"], color="grey", alpha=0.15, lw=0)
        ax.axvline(prim["estimate"], color="grey", lw=1.2, label=f"primary {prim['estimate']:.3g}")
        ax.axvline(result.settings.null_value, color="black", lw=0.8, ls=":")
        for i, name in enumerate(scenarios):
            rows = grid.loc[grid["scenario"] == name]
            if (rows["status"] != "ok").any():
                reason = str(rows["change_reason"].iloc[0])
                ax.text(prim["estimate"], i, plain(f"failed: {reason[:70]}"), va="center", ha="center",
                        fontsize=SMALL_FONT_PT, color="#777777")
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
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.legend(loc="lower right", frameon=False)
    return caption(fig, "scenario-forest",
                   f"The {term} coefficient with its 95% interval in every sensitivity scenario; red: the conclusion "
                   "changes against the scenario's reference; grey band and line: the primary analysis and its "
                   "95% interval; dotted line: no effect.")


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
    fig, axes = new_figure(min(MAX_WIDTH_IN, 3.6 * n_panels), 3.3, ncols=n_panels, squeeze=False,
                           style="whitegrid", sharey=True)
    axes = axes[0]
    log_odds = getattr(result, "delta_scale", "SD") == "log odds"
    terms = list(dict.fromkeys(curve["term"])) if "term" in curve.columns else [result.focus_terms[0]]
    if log_odds:
        rows = plural(row_noun(getattr(result, "clusters_are_patients", False)))
        what = (f"the {result.focus} coefficients (one line per level against the reference level, with 95% bands) "
                f"when the unrecorded {rows}' log odds of each level of {result.focus} are shifted by delta "
                f"against recorded {rows} like them (upper axis: the odds ratio e^delta)")
    else:
        what = (f"the {result.focus_terms[0]} coefficient (line, with 95% band) when the imputed values of "
                f"{result.focus} are shifted by delta SDs of its observed values (upper axis: in its own units)")
    text = (f"MNAR delta adjustment: {what}, the same in every cluster (left) or in proportion to each cluster's "
            "share missing (right); red points change the conclusion; a dashed red line marks a tipping point.")
    with style_context("whitegrid"):
        if not modes:
            return _nothing_run(fig, axes[0], "tipping-point", "delta adjustment")
        titles = {"global": "same shift in every cluster", "cluster": "shift proportional to missingness"}
        for ax, mode in zip(axes, modes):
            _delta_panel(ax, result, curve.loc[curve["mode"] == mode], terms, mode, log_odds)
            ax.set_title(f"MNAR: {titles.get(mode, mode)}")
            if ax is axes[0]:
                ax.set_ylabel(plain(f"{result.focus} coefficients (95% CI)" if log_odds
                                    else f"{result.focus_terms[0]} coefficient (95% CI)"))
        if len(terms) > 1:
            fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
                       ncols=min(len(terms), 3), frameon=False)
    return caption(fig, "tipping-point", text)


#: Line colours of a categorical focus's level terms in the tipping-point figure (the first is the usual one).
_TERM_SHADES = (UNCHANGED_COLOUR, "#6a51a3", "#238b45", "#d94801", "#525252")


def _nothing_run(fig, ax, key: str, what: str):
    """An empty panel saying that no ``what`` was run, captioned under ``key``."""
    ax.text(0.5, 0.5, f"no {what} was run", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return caption(fig, key, f"No {what} was run.")


def _delta_panel(ax, result, curve, terms, mode: str, log_odds: bool) -> None:
    """One mode's panel of :func:`tipping_point_curve`: a line and band per term, the tipping points, the axes."""
    for k, term in enumerate(terms):
        part = curve.loc[curve["term"] == term] if "term" in curve.columns else curve
        colour = _term_line(ax, part, k, term if len(terms) > 1 else None)
        prim = part.loc[part["source"] == "primary"]
        if len(prim):
            ax.axhline(float(prim["estimate"].iloc[0]), color=colour, lw=0.6, alpha=0.6)
    ax.axhline(result.settings.null_value, color="black", lw=0.8, ls=":")
    _mark_tipping(ax, result.tipping.get(mode, {}),
                  (lambda d: f" OR {np.exp(d):.2f}") if log_odds else (lambda d: f" {d:+.2f} SD"))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    if log_odds:
        ax.set_xlabel("delta (log odds ratio)")
        top = ax.secondary_xaxis("top", functions=(np.exp, lambda v: np.log(np.maximum(v, 1e-300))))
        top.set_xlabel("odds ratio e^delta")
        top.xaxis.set_major_locator(FixedLocator([0.05, 0.1, 0.25, 0.5, 1, 2, 4, 10, 20]))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        return
    ax.set_xlabel("delta (SDs of the observed values)")
    _units_axis(ax, result.observed_sd, result.focus)


def _term_line(ax, part, k: int, label: str | None) -> str:
    """One term's estimate against delta: its 95% band, its line, its grid points (red where the conclusion
    changed); returns the term's colour."""
    colour = _TERM_SHADES[k % len(_TERM_SHADES)]
    part = part.sort_values("delta_sd").astype({c: float for c in ("delta_sd", "estimate", "ci_lower", "ci_upper")})
    ax.fill_between(part["delta_sd"], part["ci_lower"], part["ci_upper"], color=colour, alpha=0.12, lw=0)
    ax.plot(part["delta_sd"], part["estimate"], color=colour, lw=1.5, label=plain(label) if label else None)
    points = part.loc[part["source"] != "bisection"]
    ax.scatter(points["delta_sd"], points["estimate"], s=18, zorder=3,
               c=np.where(points["changed"], CHANGED_COLOUR, colour))
    return colour


def _mark_tipping(ax, tipping: dict, mark) -> None:
    """A dashed red line at each tipping point found (``{side: {"found", "delta_sd"}}``), labelled ``mark(delta)``."""
    for side, tip in tipping.items():
        if tip.get("found"):
            ax.axvline(tip["delta_sd"], color=CHANGED_COLOUR, ls="--", lw=1)
            ax.text(tip["delta_sd"], ax.get_ylim()[1], mark(tip["delta_sd"]), color=CHANGED_COLOUR,
                    fontsize=SMALL_FONT_PT, va="top", ha="left" if side == "positive" else "right")


def _units_axis(ax, scale: float, variable: str) -> None:
    """An upper axis in the variable's own units (``scale`` of them per SD), when the scale is known."""
    if np.isfinite(scale) and scale > 0:
        top = ax.secondary_xaxis("top", functions=(lambda x, s=scale: x * s, lambda u, s=scale: u / s))
        top.set_xlabel(plain(f"delta ({variable} units)"))
        top.xaxis.set_major_locator(MaxNLocator(5))


def dropout_tipping_curve(result) -> Figure:
    """Focus coefficient and 95% CI against the MNAR delta applied after dropout, one panel per shifted variable.

    The lower axis is in SDs of the shifted variable's recorded values, the
    upper in its own units; the reference (delta = 0) is the analysis with
    the imputed outcome rows kept (:mod:`hmlib.steps.sensitivity_dropout`).
    The dashed vertical line is the tipping point (when found).
    """
    curve = result.delta_curve
    modes = [m for m in dict.fromkeys(curve["mode"]) if str(m).startswith("dropout:")] if len(curve) else []
    fig, axes = new_figure(min(MAX_WIDTH_IN, 3.6 * max(1, len(modes))), 3.3, ncols=max(1, len(modes)),
                           squeeze=False, style="whitegrid", sharey=True)
    axes = axes[0]
    growing = result.dropout_interval_words()
    shift = ("delta SDs of the variable's recorded values" if growing is None else
             f"delta SDs of the variable's recorded values for every {growing} since that visit (a shift growing "
             "with the time away)")
    text = (f"MNAR delta after dropout: the {result.focus_terms[0]} coefficient"
            + (f" and the other levels of {result.focus}" if len(result.focus_terms) > 1 else "")
            + f" (line, with 95% band) when every imputed value after a patient's last recorded visit is shifted by "
            f"{shift} (upper axis: in its own units), against the analysis at "
            "delta = 0 with the imputed outcome rows kept; red points change the conclusion; a dashed red line marks "
            "a tipping point.")
    with style_context("whitegrid"):
        if not modes:
            return _nothing_run(fig, axes[0], "dropout-tipping-point", "delta after dropout")
        for ax, mode in zip(axes, modes):
            part = curve.loc[curve["mode"] == mode]
            terms = list(dict.fromkeys(part["term"]))
            for k, term in enumerate(terms):
                _term_line(ax, part.loc[part["term"] == term], k, term if len(terms) > 1 else None)
            ax.axhline(result.settings.null_value, color="black", lw=0.8, ls=":")
            variable = mode.split(":", 1)[1]
            info = result.dropout.get(variable, {})
            _mark_tipping(ax, info.get("tipping", {}), lambda d: f" {d:+.2f} SD")
            ax.set_title(plain(f"MNAR after dropout: {variable}"))
            ax.set_xlabel("delta (SDs of the recorded values" + (")" if growing is None else
                                                                 f" per {growing})"))
            ax.xaxis.set_major_locator(MaxNLocator(5))
            _units_axis(ax, float(info.get("scale", np.nan)), variable)
            if ax is axes[0]:
                ax.set_ylabel(plain(f"{result.focus_terms[0] if len(terms) == 1 else result.focus} "
                                    "coefficient (95% CI)"))
        if len(terms) > 1:
            fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
                       ncols=min(len(terms), 3), frameon=False)
    return caption(fig, "dropout-tipping-point", text)
