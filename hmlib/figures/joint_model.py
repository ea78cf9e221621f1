"""Figures of the joint Bayesian model (:mod:`hmlib.stats.joint_model`).

Each function takes a :class:`hmlib.stats.joint_model.JointModelResult` (or an
estimates table) and returns a :class:`matplotlib.figure.Figure`; nothing is
shown or saved, and no global pyplot state is touched. Only aggregated
quantities are drawn (per term, per cluster, or pooled distributions).

- :func:`coefficient_forest`: joint_bayes against other methods (and truth);
- :func:`shrinkage_plot`: raw vs partially pooled cluster effects of the focus
  variable, and the posterior SD of each cluster's mean against its number
  of observed values;
- :func:`ppc_by_cluster`: observed vs replicated mean (and SD) per cluster;
- :func:`imputed_distribution`: imputed values in never-measured clusters
  against the observed values elsewhere;
- :func:`correlation_posterior`: the missingness/outcome random-effect
  correlation, posterior against prior.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

__all__ = ["coefficient_forest", "shrinkage_plot", "ppc_by_cluster", "imputed_distribution",
           "correlation_posterior"]

_RC = {"text.usetex": False, "axes.titlesize": 11, "axes.labelsize": 10,
       "xtick.labelsize": 8, "ytick.labelsize": 8}
_JOINT_COLOUR = "#1b6ca8"
_OTHER_COLOURS = ["#7f7f7f", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]


def _text(value) -> str:
    """Data text as literal text (no mathtext)."""
    return str(value).replace("$", r"\$")


def _figure(width: float, height: float, ncols: int = 1) -> Figure:
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        for k in range(ncols):
            fig.add_subplot(1, ncols, k + 1)
    return fig


def coefficient_forest(estimates: pd.DataFrame, *, truth: dict | None = None, terms=None,
                       title: str | None = None) -> Figure:
    """Point estimates and 95% intervals by term and method.

    Parameters
    ----------
    estimates : pandas.DataFrame
        Rows of the estimates contract (``method, term, estimate, ci_lower,
        ci_upper``), e.g. ``result.to_estimates()`` concatenated with other
        methods' rows. ``joint_bayes`` is drawn in blue, others in grey tones.
    truth : dict, optional
        ``{term: true value}`` drawn as a red tick.
    terms : sequence of str, optional
        Terms to show (default: all but ``Intercept``), one panel row each.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    table = estimates.copy()
    if terms is None:
        terms = [t for t in dict.fromkeys(table["term"]) if t != "Intercept"]
    terms = list(terms)
    methods = list(dict.fromkeys(table["method"]))
    fig = _figure(7.0, 0.6 + 0.28 * len(terms) * max(len(methods), 1))
    ax = fig.axes[0]
    colours = {m: (_JOINT_COLOUR if m == "joint_bayes" else _OTHER_COLOURS[k % len(_OTHER_COLOURS)])
               for k, m in enumerate(methods)}
    y_ticks, y_labels = [], []
    position = 0.0
    for term in terms:
        block = table.loc[table["term"] == term]
        start = position
        for method in methods:
            row = block.loc[block["method"] == method]
            if row.empty:
                continue
            r = row.iloc[0]
            ax.errorbar(r["estimate"], position,
                        xerr=[[r["estimate"] - r["ci_lower"]], [r["ci_upper"] - r["estimate"]]],
                        fmt="o", color=colours[method], ms=4, capsize=2,
                        label=_text(method) if term == terms[0] else None)
            position += 1.0
        if truth and term in truth:
            ax.plot([truth[term]] * 2, [start - 0.4, position - 0.6], color="#c0392b", lw=2,
                    label="truth" if term == terms[0] else None)
        y_ticks.append((start + position - 1) / 2)
        y_labels.append(_text(term))
        position += 0.8
    ax.set_yticks(y_ticks, y_labels)
    ax.invert_yaxis()
    ax.set_xlabel("estimate (95% interval), original scale")
    ax.axvline(0.0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.set_title(_text(title or "Coefficients by method"))
    return fig


def _focus_label(result) -> str:
    return _text(result.data.focus)


def shrinkage_plot(result, *, title: str | None = None, min_cell: int = 11) -> Figure:
    """Raw vs partially pooled cluster effects of the focus variable.

    Left: each cluster's own estimate (``raw_effect``) joined to its
    partially pooled posterior mean (``pooled_effect``), marker area
    proportional to the number of observed values; clusters that never
    measured the focus variable have no raw estimate and are drawn at the
    pooled side only (open markers). Right: posterior SD of each cluster's
    mean of the completed focus values against its number of observed
    values (uncertainty widens where fewer values were observed).

    Small cells: marker areas show size bands, not exact counts; clusters
    with fewer than ``min_cell`` observed values have no raw estimate drawn
    (it would rest on a handful of patients) and sit together at the
    "< min_cell" position of the right panel.
    """
    table = result.partial_pooling()
    fig = _figure(10.0, 4.5, ncols=2)
    left, right = fig.axes
    if table.empty:
        left.text(0.5, 0.5, "focus variable complete: nothing pooled", ha="center", transform=left.transAxes)
        return fig
    bands = np.searchsorted(np.array([min_cell, 50, 200, 1000]), table["n_observed"].to_numpy(), side="right")
    size = pd.Series(20 + 45 * bands, index=table.index)
    measured = table["n_observed"] >= min_cell
    for row, s in zip(table.loc[measured].itertuples(index=False), size[measured]):
        left.plot([0, 1], [row.raw_effect, row.pooled_effect], color="#9ecae1", lw=0.8, zorder=1)
    left.scatter(np.zeros(measured.sum()), table.loc[measured, "raw_effect"], s=size[measured],
                 color="#7f7f7f", zorder=2, label="raw (own observed values)")
    left.scatter(np.ones(measured.sum()), table.loc[measured, "pooled_effect"], s=size[measured],
                 color=_JOINT_COLOUR, zorder=2, label="partially pooled")
    if (~measured).any():
        left.scatter(np.ones((~measured).sum()), table.loc[~measured, "pooled_effect"], s=40,
                     facecolors="none", edgecolors="#c0392b", zorder=3,
                     label=f"never or rarely measured (< {min_cell} values)")
    left.set_xticks([0, 1], ["raw", "pooled"])
    left.set_xlim(-0.4, 1.4)
    left.set_ylabel(f"cluster effect on {_focus_label(result)} (submodel scale)")
    left.legend(fontsize=8, frameon=False, loc="best")
    left.set_title("Shrinkage of cluster effects")
    n_obs = table["n_observed"].to_numpy(dtype=float)
    low = min_cell / 2.0
    right.scatter(np.where(n_obs >= min_cell, n_obs, low), table["pooled_mean_sd"], s=size,
                  color=_JOINT_COLOUR, alpha=0.8)
    right.set_xscale("log")
    right.axvline(np.sqrt(low * min_cell), color="lightgrey", lw=0.8)
    right.set_xlabel(f"observed values in cluster (fewer than {min_cell}, including none, drawn together "
                     "at the left)")
    right.set_ylabel(f"posterior SD of cluster mean {_focus_label(result)}")
    right.set_title("Uncertainty by observed values")
    if title:
        fig.suptitle(_text(title))
    return fig


def ppc_by_cluster(result, *, max_clusters: int = 60, title: str | None = None) -> Figure:
    """Observed vs replicated mean (and SD) of the focus variable per cluster.

    Clusters sorted by number of observed values; with more than
    ``max_clusters`` the ones with the smallest posterior predictive
    p-values (most extreme, two-sided) are shown and the title says so.
    """
    ppc = result.posterior_predictive()
    has_sd = "observed_sd" in ppc.columns
    fig = _figure(10.0 if has_sd else 6.0, 0.8 + 0.16 * min(len(ppc), max_clusters) + 1.0,
                  ncols=2 if has_sd else 1)
    if ppc.empty:
        fig.axes[0].text(0.5, 0.5, "no posterior predictive check (focus complete)", ha="center",
                         transform=fig.axes[0].transAxes)
        return fig
    shown = ppc
    note = ""
    if len(ppc) > max_clusters:
        extremity = np.minimum(ppc["p_mean"], 1 - ppc["p_mean"])
        shown = ppc.loc[extremity.sort_values().index[:max_clusters]]
        note = f" ({max_clusters} most extreme of {len(ppc)} clusters)"
    shown = shown.sort_values("n_observed")
    y = np.arange(len(shown))
    panels = [("mean", fig.axes[0])] + ([("sd", fig.axes[1])] if has_sd else [])
    for stat, ax in panels:
        lower, upper = shown[f"replicated_{stat}_lower"], shown[f"replicated_{stat}_upper"]
        ax.hlines(y, lower, upper, color="#9ecae1", lw=3, label="replicated, 95% interval")
        ax.scatter(shown[f"replicated_{stat}"], y, color=_JOINT_COLOUR, s=10, zorder=3,
                   label="replicated, mean")
        observed = shown[f"observed_{stat}"]
        outside = (observed < lower) | (observed > upper)
        ax.scatter(observed, y, color=np.where(outside, "#c0392b", "black"), marker="x", s=18, zorder=4,
                   label="observed")
        ax.set_yticks(y, [f"{_text(c)} (n={n})" for c, n in zip(shown["cluster"], shown["n_observed"])])
        ax.set_xlabel(f"{stat.upper() if stat == 'sd' else stat} of {_focus_label(result)}")
    fig.axes[0].legend(fontsize=7, frameon=False, loc="best")
    fig.suptitle(_text(title or f"Posterior predictive check by cluster{note}"))
    return fig


def imputed_distribution(result, *, title: str | None = None) -> Figure:
    """Imputed focus values in never-measured clusters against the observed values elsewhere."""
    unmeasured = result.imputed_in_unmeasured()
    fig = _figure(6.5, 4.0)
    ax = fig.axes[0]
    if not unmeasured.get("clusters"):
        ax.text(0.5, 0.5, "every cluster measured the focus variable", ha="center", transform=ax.transAxes)
        return fig
    hist = unmeasured["histogram"]
    edges = np.asarray(hist["edges"])
    ax.stairs(hist["observed_density"], edges, color="#7f7f7f", lw=1.5, label="observed, measuring clusters")
    ax.stairs(hist["imputed_density"], edges, color=_JOINT_COLOUR, lw=1.5, fill=False,
              label=f"imputed, {len(unmeasured['clusters'])} never-measuring cluster(s)")
    for stats_, colour in ((unmeasured["observed"], "#7f7f7f"), (unmeasured["imputed"], _JOINT_COLOUR)):
        ax.axvline(stats_["mean"], color=colour, ls="--", lw=1)
    ax.set_xlabel(_focus_label(result))
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(_text(title or f"Imputed {result.data.focus} where it was never measured "
                                f"({unmeasured['n_patients']} patients)"))
    return fig


def correlation_posterior(result, *, title: str | None = None) -> Figure:
    """Posterior of the missingness/outcome cluster-effect correlation, with its LKJ prior."""
    fig = _figure(6.0, 3.8)
    ax = fig.axes[0]
    if "re_corr" not in result.draws:
        ax.text(0.5, 0.5, "no missingness submodel in this fit", ha="center", transform=ax.transAxes)
        return fig
    draws = np.asarray(result.draws["re_corr"]).reshape(-1)
    ax.hist(draws, bins=40, range=(-1, 1), density=True, color="#9ecae1", label="posterior")
    eta = float(result.settings["priors"]["lkj_eta"])
    grid = np.linspace(-0.999, 0.999, 400)
    ax.plot(grid, stats.beta.pdf((grid + 1) / 2, eta, eta) / 2, color="#7f7f7f", lw=1.2,
            label=f"prior LKJ({eta:g})")
    c = result.correlation
    ax.axvspan(c["ci_lower"], c["ci_upper"], color=_JOINT_COLOUR, alpha=0.12, label="95% interval")
    ax.axvline(c["estimate"], color=_JOINT_COLOUR, lw=1.5)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("correlation of missingness and outcome cluster effects")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.set_title(_text(title or f"corr = {c['estimate']:.2f} (95% interval {c['ci_lower']:.2f} to "
                                f"{c['ci_upper']:.2f})"))
    return fig
