"""Figures of step 4, the joint Bayesian model (:mod:`hmlib.stats.joint`).

Each function takes aggregated tables of a fit (per term, per cluster, or
pooled distributions; never a patient row) and returns a
:class:`matplotlib.figure.Figure` built with :func:`hmlib.figures.style.new_figure`:
nothing is shown or saved, and no global pyplot state is touched. Method
colours and labels come from :mod:`hmlib.methods`.

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

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from hmlib.figures.style import label, new_figure, plain
from hmlib.methods import OBSERVED_COLOUR, method_colour, method_label, method_order

__all__ = ["coefficient_forest", "shrinkage_plot", "ppc_by_cluster", "imputed_distribution",
           "correlation_posterior"]

#: The joint model's colour, for its own quantities (pooled effects, replications, posteriors).
_JOINT_COLOUR = method_colour("joint_bayes")
#: Its light shade, for intervals and the lines joining raw to pooled effects.
_JOINT_LIGHT = "#9ecae1"
#: Truth, and values the figure marks as outside or unmeasured.
_ALERT_COLOUR = "#c0392b"
_PRIOR_COLOUR = "#7f7f7f"


def coefficient_forest(estimates: pd.DataFrame, *, truth: dict | None = None, terms=None,
                       title: str | None = None) -> Figure:
    """Point estimates and 95% intervals by term and method.

    Parameters
    ----------
    estimates : pandas.DataFrame
        Rows of the estimates contract (``method, term, estimate, ci_lower,
        ci_upper``), e.g. ``result.to_estimates()`` concatenated with other
        methods' rows. Methods in the order, colour and label of :mod:`hmlib.methods`.
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
    methods = method_order(table["method"])
    fig, ax = new_figure(7.0, 0.6 + 0.28 * len(terms) * max(len(methods), 1))
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
                        fmt="o", color=method_colour(method), ms=4, capsize=2,
                        label=plain(method_label(method)) if term == terms[0] else None)
            position += 1.0
        if truth and term in truth:
            ax.plot([truth[term]] * 2, [start - 0.4, position - 0.6], color=_ALERT_COLOUR, lw=2,
                    label="truth" if term == terms[0] else None)
        y_ticks.append((start + position - 1) / 2)
        y_labels.append(plain(term))
        position += 0.8
    ax.set_yticks(y_ticks, y_labels)
    ax.invert_yaxis()
    ax.set_xlabel("estimate (95% interval), original scale")
    ax.axvline(0.0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.set_title(plain(title or "Coefficients by method"))
    return fig


def shrinkage_plot(pooling: pd.DataFrame, *, focus: str, min_cell: int = 11, title: str | None = None) -> Figure:
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

    Parameters
    ----------
    pooling : pandas.DataFrame
        :meth:`hmlib.stats.joint.JointModelResult.partial_pooling` (one row per cluster).
    focus : str
        The focus variable's name, for the labels.
    min_cell : int
    title : str, optional
    """
    table = pooling
    fig, (left, right) = new_figure(10.0, 4.5, ncols=2)
    if table.empty:
        left.text(0.5, 0.5, "focus variable complete: nothing pooled", ha="center", transform=left.transAxes)
        return fig
    bands = np.searchsorted(np.array([min_cell, 50, 200, 1000]), table["n_observed"].to_numpy(), side="right")
    size = pd.Series(20 + 45 * bands, index=table.index)
    measured = table["n_observed"] >= min_cell
    for row, s in zip(table.loc[measured].itertuples(index=False), size[measured]):
        left.plot([0, 1], [row.raw_effect, row.pooled_effect], color=_JOINT_LIGHT, lw=0.8, zorder=1)
    left.scatter(np.zeros(measured.sum()), table.loc[measured, "raw_effect"], s=size[measured],
                 color=OBSERVED_COLOUR, zorder=2, label="raw (own observed values)")
    left.scatter(np.ones(measured.sum()), table.loc[measured, "pooled_effect"], s=size[measured],
                 color=_JOINT_COLOUR, zorder=2, label="partially pooled")
    if (~measured).any():
        left.scatter(np.ones((~measured).sum()), table.loc[~measured, "pooled_effect"], s=40,
                     facecolors="none", edgecolors=_ALERT_COLOUR, zorder=3,
                     label=f"never or rarely measured (< {min_cell} values, or count suppressed)")
    left.set_xticks([0, 1], ["raw", "pooled"])
    left.set_xlim(-0.4, 1.4)
    left.set_ylabel(f"cluster effect on {plain(focus)} (submodel scale)")
    left.legend(fontsize=8, frameon=False, loc="best")
    left.set_title("Shrinkage of cluster effects")
    n_obs = table["n_observed"].to_numpy(dtype=float)
    low = min_cell / 2.0
    right.scatter(np.where(n_obs >= min_cell, n_obs, low), table["pooled_mean_sd"], s=size,
                  color=_JOINT_COLOUR, alpha=0.8)
    right.set_xscale("log")
    right.axvline(np.sqrt(low * min_cell), color="lightgrey", lw=0.8)
    right.set_xlabel(f"observed values in cluster (fewer than {min_cell}, none, or suppressed: drawn together "
                     "at the left)")
    right.set_ylabel(f"posterior SD of cluster mean {plain(focus)}")
    right.set_title("Uncertainty by observed values")
    if title:
        fig.suptitle(plain(title))
    return fig


def ppc_by_cluster(ppc: pd.DataFrame, *, focus: str, max_clusters: int = 60, title: str | None = None) -> Figure:
    """Observed vs replicated mean (and SD) of the focus variable per cluster.

    Clusters sorted by number of observed values; with more than
    ``max_clusters`` the ones with the smallest posterior predictive
    p-values (most extreme, two-sided) are shown and the title says so.

    Parameters
    ----------
    ppc : pandas.DataFrame
        The published check (``JointStepResult.posterior_predictive_table``: one row per measuring
        cluster, counts below the small-cell threshold and what they reveal labelled ``"suppressed"``);
        a suppressed observed value is not drawn and the label says ``n suppressed``.
    focus : str
        The focus variable's name, for the labels.
    max_clusters : int
    title : str, optional
    """
    has_sd = "observed_sd" in ppc.columns
    fig, axes = new_figure(10.0 if has_sd else 6.0, 0.8 + 0.16 * min(len(ppc), max_clusters) + 1.0,
                           ncols=2 if has_sd else 1, squeeze=False)
    axes = list(axes[0])
    if ppc.empty:
        axes[0].text(0.5, 0.5, "no posterior predictive check (focus complete)", ha="center",
                     transform=axes[0].transAxes)
        return fig
    shown = ppc
    note = ""
    if len(ppc) > max_clusters:
        p_mean = pd.to_numeric(ppc["p_mean"], errors="coerce")
        extremity = np.minimum(p_mean, 1 - p_mean)
        shown = ppc.loc[extremity.sort_values().index[:max_clusters]]
        note = f" ({max_clusters} most extreme of {len(ppc)} clusters)"
    # the published table: counts below min_cell and the values derived from them read "suppressed"
    numeric = {c: pd.to_numeric(shown[c], errors="coerce") for c in shown.columns
               if c == "n_observed" or c.startswith(("observed_", "replicated_", "p_"))}
    shown = shown.assign(**numeric).sort_values("n_observed", na_position="first")
    y = np.arange(len(shown))
    panels = [("mean", axes[0])] + ([("sd", axes[1])] if has_sd else [])
    for stat, ax in panels:
        lower, upper = shown[f"replicated_{stat}_lower"], shown[f"replicated_{stat}_upper"]
        ax.hlines(y, lower, upper, color=_JOINT_LIGHT, lw=3, label="replicated, 95% interval")
        ax.scatter(shown[f"replicated_{stat}"], y, color=_JOINT_COLOUR, s=10, zorder=3,
                   label="replicated, mean")
        observed = shown[f"observed_{stat}"]
        outside = (observed < lower) | (observed > upper)
        ax.scatter(observed, y, color=np.where(outside, _ALERT_COLOUR, OBSERVED_COLOUR), marker="x", s=18,
                   zorder=4, label="observed")
        ax.set_yticks(y, [f"{label(c)} (n={int(n)})" if np.isfinite(n) else f"{label(c)} (n suppressed)"
                          for c, n in zip(shown["cluster"], shown["n_observed"])])
        ax.set_xlabel(f"{stat.upper() if stat == 'sd' else stat} of {plain(focus)}")
    axes[0].legend(fontsize=7, frameon=False, loc="best")
    fig.suptitle(plain(title or f"Posterior predictive check by cluster{note}"))
    return fig


def imputed_distribution(unmeasured: dict, *, focus: str, title: str | None = None) -> Figure:
    """Imputed focus values in never-measured clusters against the observed values elsewhere.

    A categorical focus (``unmeasured["levels"]``) has one bin per level,
    labelled, whose height is the level's share.

    Parameters
    ----------
    unmeasured : dict
        :meth:`hmlib.stats.joint.JointModelResult.imputed_in_unmeasured` (histogram and summaries).
    focus : str
        The focus variable's name, for the labels.
    title : str, optional
    """
    fig, ax = new_figure(6.5, 4.0)
    if not unmeasured.get("clusters"):
        ax.text(0.5, 0.5, "every cluster measured the focus variable", ha="center", transform=ax.transAxes)
        return fig
    hist = unmeasured["histogram"]
    edges = np.asarray(hist["edges"])
    ax.stairs(hist["observed_density"], edges, color=OBSERVED_COLOUR, lw=1.5, label="observed, measuring clusters")
    ax.stairs(hist["imputed_density"], edges, color=_JOINT_COLOUR, lw=1.5, fill=False,
              label=f"imputed, {len(unmeasured['clusters'])} never-measuring cluster(s)")
    for stats_, colour in ((unmeasured["observed"], OBSERVED_COLOUR), (unmeasured["imputed"], _JOINT_COLOUR)):
        if not unmeasured.get("levels"):   # a mean level index would mean nothing
            ax.axvline(stats_["mean"], color=colour, ls="--", lw=1)
    if unmeasured.get("levels"):          # a categorical focus: one bar per level, shares not densities
        ax.set_xticks(np.arange(len(unmeasured["levels"])), [plain(level) for level in unmeasured["levels"]])
    ax.set_xlabel(plain(focus))
    ax.set_ylabel("share" if unmeasured.get("levels") else "density")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(plain(title or f"Imputed {focus} where it was never measured "
                                f"({unmeasured['n_patients']} patients)"))
    return fig


def correlation_posterior(draws, correlation: dict | None, *, lkj_eta: float, title: str | None = None) -> Figure:
    """Posterior of the missingness/outcome cluster-effect correlation, with its LKJ prior.

    Parameters
    ----------
    draws : numpy.ndarray or None
        Posterior draws of the correlation
        (:meth:`hmlib.stats.joint.JointModelResult.correlation_draws`); None
        without a missingness submodel.
    correlation : dict or None
        Its summary (``estimate, ci_lower, ci_upper``).
    lkj_eta : float
        The LKJ prior's ``eta``.
    title : str, optional
    """
    fig, ax = new_figure(6.0, 3.8)
    if draws is None or correlation is None:
        ax.text(0.5, 0.5, "no missingness submodel in this fit", ha="center", transform=ax.transAxes)
        return fig
    draws = np.asarray(draws).reshape(-1)
    ax.hist(draws, bins=40, range=(-1, 1), density=True, color=_JOINT_LIGHT, label="posterior")
    eta = float(lkj_eta)
    grid = np.linspace(-0.999, 0.999, 400)
    ax.plot(grid, stats.beta.pdf((grid + 1) / 2, eta, eta) / 2, color=_PRIOR_COLOUR, lw=1.2,
            label=f"prior LKJ({eta:g})")
    c = correlation
    ax.axvspan(c["ci_lower"], c["ci_upper"], color=_JOINT_COLOUR, alpha=0.12, label="95% interval")
    ax.axvline(c["estimate"], color=_JOINT_COLOUR, lw=1.5)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("correlation of missingness and outcome cluster effects")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.set_title(plain(title or f"corr = {c['estimate']:.2f} (95% interval {c['ci_lower']:.2f} to "
                                f"{c['ci_upper']:.2f})"))
    return fig
