"""Figures of step 4, the joint Bayesian model (:mod:`hmlib.stats.joint`).

Each function takes aggregated tables of a fit (per term, per cluster, or
pooled distributions; never a patient row) and returns a
:class:`matplotlib.figure.Figure` built with :func:`hmlib.figures.style.new_figure`:
nothing is shown or saved, and no global pyplot state is touched; each
carries its caption (:func:`hmlib.figures.style.caption`). Method colours
and labels come from :mod:`hmlib.methods`.

- :func:`coefficient_forest`: joint_bayes against other methods (and truth);
- :func:`shrinkage_plot`: raw vs partially pooled cluster effects of the focus
  variable, and the posterior SD of each cluster's mean against its number
  of observed values;
- :func:`pooling_by_unit`: with levels above the cluster, each cluster's raw
  and pooled effects beside its unit's (country's): who borrows from whom;
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
from matplotlib.ticker import FuncFormatter, MaxNLocator
from scipy import stats

from hmlib.figures.style import MAX_WIDTH_IN, ROW_IN, caption, label, new_figure, plain
from hmlib.methods import OBSERVED_COLOUR, method_colour, method_label, method_order

__all__ = ["coefficient_forest", "shrinkage_plot", "pooling_by_unit", "ppc_by_cluster", "imputed_distribution",
           "correlation_posterior"]

#: The joint model's colour, for its own quantities (pooled effects, replications, posteriors).
_JOINT_COLOUR = method_colour("joint_bayes")
#: Its light shade, for intervals and the lines joining raw to pooled effects.
_JOINT_LIGHT = "#9ecae1"
#: Truth, and values the figure marks as outside or unmeasured.
_ALERT_COLOUR = "#c0392b"
_PRIOR_COLOUR = "#7f7f7f"


def _short_label(method: str) -> str:
    """A method's label for a tick: the flag kept, in short (``joint Bayesian model (not converged)``)."""
    base, _, flag = str(method).partition(":")
    return label(method_label(base) + (f" ({flag.replace('_', ' ')})" if flag else ""))


def coefficient_forest(estimates: pd.DataFrame, *, truth: dict | None = None, terms=None,
                       title: str | None = None, ncols: int = 2) -> Figure:
    """Point estimates and 95% intervals by method, one panel per term (each on its own scale).

    Parameters
    ----------
    estimates : pandas.DataFrame
        Rows of the estimates contract (``method, term, estimate, ci_lower,
        ci_upper``), e.g. ``result.to_estimates()`` concatenated with other
        methods' rows. Methods in the order, colour and label of :mod:`hmlib.methods`.
    truth : dict, optional
        ``{term: true value}`` drawn as a red line.
    terms : sequence of str, optional
        Terms to show (default: all but ``Intercept``), one panel each.
    title : str, optional
        Caption.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    table = estimates.copy()
    if terms is None:  # every term two methods or more estimate (one method alone compares with nothing)
        counts = table.groupby("term", sort=False)["method"].nunique()
        terms = [t for t in dict.fromkeys(table["term"]) if t != "Intercept" and counts.get(t, 0) >= 2]
    terms = list(terms)
    methods = method_order(table["method"])
    ncols = max(1, min(ncols, len(terms)))
    nrows = max(1, int(np.ceil(len(terms) / ncols)))
    fig, axes = new_figure(MAX_WIDTH_IN if ncols > 1 else 5.0, (ROW_IN * len(methods) + 0.75) * nrows + 0.3,
                           nrows=nrows, ncols=ncols, squeeze=False, sharey=True)
    y = np.arange(len(methods))[::-1]
    for ax, term in zip(axes.ravel(), terms):
        block = table.loc[table["term"] == term]
        for yi, method in zip(y, methods):
            row = block.loc[block["method"] == method]
            if row.empty:
                continue
            r = row.iloc[0]
            ax.errorbar(r["estimate"], yi, xerr=[[r["estimate"] - r["ci_lower"]], [r["ci_upper"] - r["estimate"]]],
                        fmt="o", color=method_colour(method), ms=4, capsize=2)
        if truth and term in truth:
            ax.axvline(truth[term], color=_ALERT_COLOUR, lw=1.5)
        ax.set_title(plain(term))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_yticks(y, [_short_label(m) for m in methods])
        ax.set_ylim(-0.6, len(methods) - 0.4)
    for ax in axes.ravel()[len(terms):]:
        ax.set_visible(False)
    text = title or ("Coefficients by method: estimate and 95% interval of each coefficient (one panel each, on its "
                     "own scale, original units) under every method of the report")
    if truth:
        text += "; red line: the value the data were simulated with"
    return caption(fig, "coefficients-by-method", text + ".")


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
    fig, (left, right) = new_figure(MAX_WIDTH_IN, 3.6, ncols=2)
    text = title or (f"Partial pooling of the {focus} submodel's cluster effects. Left: each cluster's own estimate "
                     "(grey) joined to its partially pooled estimate (blue); marker size: observed values (fewer "
                     f"than 50, 50-199, 200-999, 1000 or more). Right: posterior SD of each cluster's mean {focus} "
                     f"against its number of observed values (fewer than {min_cell}, including none, or a suppressed "
                     "count: drawn together at the left, and as open red circles in the left panel).")
    if table.empty:
        left.text(0.5, 0.5, "focus variable complete: nothing pooled", ha="center", transform=left.transAxes)
        return caption(fig, "shrinkage", text)
    bands = np.searchsorted(np.array([min_cell, 50, 200, 1000]), table["n_observed"].to_numpy(), side="right")
    size = pd.Series(20 + 45 * bands, index=table.index)
    measured = table["n_observed"] >= min_cell
    for row, s in zip(table.loc[measured].itertuples(index=False), size[measured]):
        left.plot([0, 1], [row.raw_effect, row.pooled_effect], color=_JOINT_LIGHT, lw=0.8, zorder=1)
    left.scatter(np.zeros(measured.sum()), table.loc[measured, "raw_effect"], s=size[measured],
                 color=OBSERVED_COLOUR, zorder=2, label="raw (own values)")
    left.scatter(np.ones(measured.sum()), table.loc[measured, "pooled_effect"], s=size[measured],
                 color=_JOINT_COLOUR, zorder=2, label="partially pooled")
    if (~measured).any():
        left.scatter(np.ones((~measured).sum()), table.loc[~measured, "pooled_effect"], s=40,
                     facecolors="none", edgecolors=_ALERT_COLOUR, zorder=3,
                     label="rarely or never measured, or suppressed")
    left.set_xticks([0, 1], ["raw", "pooled"])
    left.set_xlim(-0.4, 1.4)
    left.set_ylabel(f"cluster effect on {plain(focus)}")
    legend = fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False,
                        columnspacing=1.2, handletextpad=0.3)
    for handle in legend.legend_handles:  # one small marker each: the largest band's marker widened the figure
        handle.set_sizes([30])
    left.set_title("shrinkage of cluster effects")
    n_obs = table["n_observed"].to_numpy(dtype=float)
    low = min_cell / 2.0
    right.scatter(np.where(n_obs >= min_cell, n_obs, low), table["pooled_mean_sd"], s=size,
                  color=_JOINT_COLOUR, alpha=0.8)
    right.set_xscale("log")
    right.axvline(np.sqrt(low * min_cell), color="lightgrey", lw=0.8)
    right.set_xlabel("observed values in the cluster")
    right.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    right.set_ylabel(f"posterior SD of mean {plain(focus)}")
    right.set_title("uncertainty by observed values")
    return caption(fig, "shrinkage", text)


def pooling_by_unit(pooling: pd.DataFrame, *, focus: str, unit_name: str, min_cell: int,
                    cluster_noun: str = "cluster", max_units: int = 40, title: str | None = None) -> Figure:
    """Who borrows from whom: each cluster's effect pooled towards its unit's (country's), the unit's towards 0.

    One column per unit of the innermost level above the cluster, units
    ordered by their pooled effect: the unit's effect (a bar: what its
    clusters are pooled towards; 0, the dashed line, is what the units are
    pooled towards), each cluster's pooled effect (blue) and, for clusters
    with at least ``min_cell`` observed values, its own raw estimate (grey)
    joined to it. With more than ``max_units`` units, those with the most
    clusters are shown and the caption says so.

    Parameters
    ----------
    pooling : pandas.DataFrame
        :meth:`hmlib.stats.joint.JointModelResult.partial_pooling` with its
        ``unit`` and ``unit_effect`` columns (levels above the cluster).
    focus : str
    unit_name : str
        The level's column label (``country``).
    min_cell : int
    cluster_noun : str, default "cluster"
    max_units : int, default 40
    title : str, optional
    """
    table = pooling.dropna(subset=["unit_effect"]) if "unit_effect" in pooling else pooling.iloc[:0]
    fig, ax = new_figure(MAX_WIDTH_IN, 3.8)
    if table.empty:
        ax.text(0.5, 0.5, f"no effects by {unit_name}", ha="center", transform=ax.transAxes)
        return caption(fig, "pooling-by-unit", title or f"No partial pooling by {unit_name} to show.")
    units = table.groupby("unit", sort=False).agg(effect=("unit_effect", "first"), n=("cluster", "size"))
    note = ""
    if len(units) > max_units:
        units = units.sort_values("n", ascending=False).iloc[:max_units]
        note = f" ({max_units} of {len(table['unit'].unique())} {unit_name} units: those with the most clusters)"
    units = units.sort_values("effect")
    position = pd.Series(np.arange(len(units)), index=units.index)
    shown = table.loc[table["unit"].isin(units.index)]
    x = position.loc[shown["unit"]].to_numpy(dtype=float)
    offsets = np.random.default_rng(0).uniform(-0.28, 0.28, x.size)  # fixed jitter: the figure is reproducible
    measured = (shown["n_observed"] >= min_cell).to_numpy()
    for xi, raw, pooled in zip(x[measured] + offsets[measured], shown.loc[measured, "raw_effect"],
                               shown.loc[measured, "pooled_effect"]):
        ax.plot([xi, xi], [raw, pooled], color=_JOINT_LIGHT, lw=0.6, zorder=1)
    ax.scatter(x[measured] + offsets[measured], shown.loc[measured, "raw_effect"], s=9, color=OBSERVED_COLOUR,
               zorder=2, label=f"{plain(cluster_noun)}: own estimate")
    ax.scatter(x + offsets, shown["pooled_effect"], s=9, color=_JOINT_COLOUR, zorder=3,
               label=f"{plain(cluster_noun)}: pooled")
    ax.hlines(units["effect"], position - 0.38, position + 0.38, color=_ALERT_COLOUR, lw=2.2, zorder=4,
              label=f"{plain(unit_name)} effect")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--", zorder=0)
    ax.set_xticks(position.to_numpy(), [label(u) for u in units.index], rotation=90, fontsize=7)
    ax.set_xlim(-0.7, len(units) - 0.3)
    ax.set_ylabel(f"effect on {plain(focus)}")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False)
    text = title or (f"Who borrows from whom{note}: each {unit_name}'s effect on {focus} (red bar) is pooled towards "
                     f"0, the average {unit_name} (dashed line); each {cluster_noun}'s pooled effect (blue) is pooled "
                     f"towards its {unit_name}'s, from its own estimate (grey; drawn only with at least {min_cell} "
                     f"observed values). {unit_name.capitalize()} units ordered by their effect.")
    return caption(fig, "pooling-by-unit", text)


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
    fig, axes = new_figure(MAX_WIDTH_IN if has_sd else 5.0, 1.2 + ROW_IN * min(len(ppc), max_clusters),
                           ncols=2 if has_sd else 1, squeeze=False, sharey=True)
    axes = list(axes[0])
    if ppc.empty:
        axes[0].text(0.5, 0.5, "no posterior predictive check (focus complete)", ha="center",
                     transform=axes[0].transAxes)
        return caption(fig, "posterior-predictive", "No posterior predictive check: the focus variable is complete.")
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
        ax.set_ylim(len(shown) - 0.5, -0.5 - max(1.5, 0.06 * len(shown)))
        ax.set_xlabel(f"{stat.upper() if stat == 'sd' else stat} of {plain(focus)}")
        ax.xaxis.set_major_locator(MaxNLocator(5))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False)
    text = title or (f"Posterior predictive check by cluster{note}: the observed mean"
                     f"{' and SD' if has_sd else ''} of {focus} (crosses; red: outside the interval) against "
                     "their replications under the joint model (dots, with 95% intervals); n: observed values.")
    return caption(fig, "posterior-predictive", text)


def imputed_distribution(unmeasured: dict, *, focus: str, rows: str = "patients", title: str | None = None) -> Figure:
    """Imputed focus values in never-measured clusters against the observed values elsewhere.

    A categorical focus (``unmeasured["levels"]``) has one bin per level,
    labelled, whose height is the level's share.

    Parameters
    ----------
    unmeasured : dict
        :meth:`hmlib.stats.joint.JointModelResult.imputed_in_unmeasured` (histogram and summaries).
    focus : str
        The focus variable's name, for the labels.
    rows : str
        The word for the rows counted in the caption ("visits" with a visit
        time: :func:`hmlib.wording.row_noun`).
    title : str, optional
    """
    fig, ax = new_figure(5.6, 3.0)
    if not unmeasured.get("clusters"):
        ax.text(0.5, 0.5, "every cluster measured the focus variable", ha="center", transform=ax.transAxes)
        return caption(fig, "imputed-unmeasured", "Every cluster measured the focus variable.")
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
    levels = unmeasured.get("levels")
    ax.set_ylabel("share" if levels else "density")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    how = "one bar per level, its height the level's share" if levels else "dashed lines: means"
    return caption(fig, "imputed-unmeasured",
                   title or (f"Imputed {focus} where it was never measured ({unmeasured['n_patients']} {rows} in "
                             f"{len(unmeasured['clusters'])} cluster(s)) against the observed values of the measuring "
                             f"clusters; {how}."))


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
    fig, ax = new_figure(5.4, 2.9)
    if draws is None or correlation is None:
        ax.text(0.5, 0.5, "no missingness submodel in this fit", ha="center", transform=ax.transAxes)
        return caption(fig, "missingness-correlation", "No missingness submodel in this fit.")
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
    ax.legend(frameon=False, loc="upper left")
    return caption(fig, "missingness-correlation",
                   title or (f"Correlation of the clusters' missingness propensities with their outcome effects: "
                             f"posterior (bars), prior LKJ({eta:g}) (line); corr = {c['estimate']:.2f} (95% interval "
                             f"{c['ci_lower']:.2f} to {c['ci_upper']:.2f})."))
