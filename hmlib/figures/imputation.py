"""Figures of step 3 (flat vs hierarchical multiple imputation).

Each function returns a matplotlib Figure made by
:func:`hmlib.figures.style.new_figure` (no pyplot state; nothing shown or
saved as a side effect) and takes the aggregated tables of
:class:`hmlib.steps.imputation.ImputationStepResult` or
:class:`hmlib.steps.imputation_transport.PublishedTransport`: estimates,
ICCs, chain means, histogram densities and per-cluster summaries, never
patient-level values. Cells suppressed for privacy (the label
``"suppressed"``) are left out and counted in the title. Methods are drawn
in the order and colours of :mod:`hmlib.methods` and named by their keys,
as in the step's tables and narrative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.figures.style import label, level_colours, new_figure, plain
from hmlib.methods import OBSERVED_COLOUR, method_colour, method_order

__all__ = ["forest_plot", "cluster_variation_plot", "trace_plot", "distribution_plot", "level_distribution_plot",
           "fmi_plot", "transport_plot"]

#: Colour of a method that failed, in the forest plot.
FAILED_COLOUR = "#b2182b"


def forest_plot(comparison: pd.DataFrame, terms, *, failed: dict | None = None, ncols: int = 2):
    """Estimates with intervals by method, one panel per term; truth as a vertical line.

    Parameters
    ----------
    comparison : pandas.DataFrame
        :meth:`hmlib.steps.imputation.ImputationStepResult.comparison` (the
        estimates contract plus ``truth``).
    terms : sequence of str
        Terms to show, first = the focus coefficient.
    failed : dict, optional
        ``{method: reason}``; failed methods get a row saying so.
    ncols : int
        Panels per row.
    """
    terms = [t for t in terms if (comparison["term"] == t).any()]
    failed = dict(failed or {})
    methods = method_order([*comparison["method"], *failed])
    nrows = max(1, int(np.ceil(len(terms) / ncols)))
    ncols = min(ncols, max(len(terms), 1))
    fig, axes = new_figure(4.6 * ncols, 0.45 * len(methods) * nrows + 1.6 * nrows, nrows=nrows, ncols=ncols,
                           squeeze=False)
    y = np.arange(len(methods))[::-1]
    for ax, term in zip(axes.ravel(), terms):
        sub = comparison.loc[comparison["term"] == term].set_index("method")
        for yi, method in zip(y, methods):
            if method in sub.index:
                row = sub.loc[method]
                ax.errorbar(row["estimate"], yi, xerr=[[row["estimate"] - row["ci_lower"]],
                                                       [row["ci_upper"] - row["estimate"]]],
                            fmt="o", color=method_colour(method), capsize=3)
            elif method in failed:
                ax.text(0.02, yi, "failed", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                        color=FAILED_COLOUR)
        truth = sub["truth"].dropna() if "truth" in sub.columns else pd.Series(dtype=float)
        if len(truth):
            ax.axvline(float(truth.iloc[0]), color="black", ls="--", lw=1)
            ax.text(float(truth.iloc[0]), y.max() + 0.45, " truth", fontsize=8, va="bottom")
        ax.set_yticks(y, [label(m) for m in methods], fontsize=8)
        ax.set_ylim(-0.7, len(methods) - 0.2)
        ax.set_title(plain(term), fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes.ravel()[len(terms):]:
        ax.set_visible(False)
    fig.suptitle("Pooled estimates (95% intervals) by method", fontsize=11)
    return fig


def cluster_variation_plot(table: pd.DataFrame, *, focus: str, cluster: str):
    """The analysis model's cluster SD and the focus variable's ICC, by method.

    Parameters
    ----------
    table : pandas.DataFrame
        :meth:`hmlib.steps.imputation.ImputationStepResult.cluster_variation_table`.
    focus, cluster : str
        Names for the labels.
    """
    fig, (left, right) = new_figure(10, 3.6, ncols=2)
    sds = table.dropna(subset=["outcome_sd"])
    sds = sds.loc[sds["method"] != "truth"]
    methods = method_order(sds["method"])
    sds = sds.set_index("method").loc[methods]
    y = np.arange(len(methods))[::-1]
    for yi, (method, row) in zip(y, sds.iterrows()):
        lo, hi = row["outcome_sd_lower"], row["outcome_sd_upper"]
        err = None if not np.isfinite(lo) else [[row["outcome_sd"] - lo], [hi - row["outcome_sd"]]]
        left.errorbar(row["outcome_sd"], yi, xerr=err, fmt="o", color=method_colour(method), capsize=3)
    truth = table.loc[table["method"] == "truth", "outcome_sd"]
    if len(truth) and np.isfinite(truth.iloc[0]):
        left.axvline(float(truth.iloc[0]), color="black", ls="--", lw=1, label="truth")
        left.legend(fontsize=8, loc="best")
    left.set_yticks(y, [label(m) for m in methods], fontsize=8)
    left.set_title(plain(f"Analysis model: sd({cluster}) (95% interval)"), fontsize=10)

    icc = table.loc[table["method"].str.endswith("_mi")].dropna(subset=["focus_icc"])
    methods = method_order(icc["method"])
    icc = icc.set_index("method").loc[methods] if len(icc) else icc
    y = np.arange(len(methods))[::-1]
    for yi, (method, row) in zip(y, icc.iterrows()):
        lo, hi = row["focus_icc_min"], row["focus_icc_max"]
        err = None if not np.isfinite(lo) else [[row["focus_icc"] - lo], [hi - row["focus_icc"]]]
        right.errorbar(row["focus_icc"], yi, xerr=err, fmt="s", color=method_colour(method), capsize=3)
    observed = table.loc[table["method"] == "observed values", "focus_icc"]
    if len(observed) and np.isfinite(observed.iloc[0]):
        right.axvline(float(observed.iloc[0]), color=OBSERVED_COLOUR, ls=":", lw=1.2,
                      label="observed values only")
        right.legend(fontsize=8, loc="best")
    right.set_yticks(y, [label(m) for m in methods], fontsize=8)
    right.set_title(plain(f"ICC of {focus} in the completed data\n(mean; bar: range over imputations)"), fontsize=10)
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=8)
    return fig


def trace_plot(traces: dict, *, variable: str):
    """Chain means of the imputed values over the iterations, one panel per method.

    Parameters
    ----------
    traces : dict
        ``{method: array (m, iterations)}``
        (:meth:`hmlib.steps.imputation.ImputationStepResult.traces`).
    variable : str
    """
    methods = method_order(traces)
    ncols = min(len(methods), 2) or 1
    nrows = max(1, int(np.ceil(len(methods) / ncols)))
    fig, axes = new_figure(5 * ncols, 2.8 * nrows, nrows=nrows, ncols=ncols, squeeze=False, sharey=True)
    for ax, method in zip(axes.ravel(), methods):
        values = np.asarray(traces[method], dtype=float)
        iterations = np.arange(1, values.shape[1] + 1)
        for chain in values:
            ax.plot(iterations, chain, color=method_colour(method), alpha=0.45, lw=1)
        ax.set_title(plain(method), fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[len(methods):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel(plain(f"mean of imputed {variable}"), fontsize=8)
    fig.suptitle(plain(f"Chains of the imputation of {variable} (one line per imputation)"), fontsize=11)
    return fig


def distribution_plot(distributions: pd.DataFrame, clusters: pd.DataFrame, *, focus: str,
                      methods=("flat_mi", "multilevel_mi"), min_cell: int = 11):
    """Observed vs imputed distributions in the clusters with most missing values.

    Parameters
    ----------
    distributions : pandas.DataFrame
        Histogram densities: ``cluster, source, bin_left, bin_right, density``.
    clusters : pandas.DataFrame
        ``cluster, n_missing, n_observed, never_observed`` (display version).
    focus : str
    methods : sequence of str
        Imputation methods drawn (each as a step line).
    min_cell : int
        For the caption: observed densities of clusters with fewer observed
        values are not drawn.
    """
    labels = list(clusters["cluster"])
    ncols = min(len(labels), 2) or 1
    nrows = max(1, int(np.ceil(len(labels) / ncols)))
    fig, axes = new_figure(5.2 * ncols, 2.9 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    for ax, (_, info) in zip(axes.ravel(), clusters.iterrows()):
        label = info["cluster"]
        sub = distributions.loc[distributions["cluster"] == label]
        for source in ["observed", *methods]:
            part = sub.loc[sub["source"] == source]
            if not len(part):
                continue
            edges = np.r_[part["bin_left"].to_numpy(), part["bin_right"].to_numpy()[-1]]
            dens = np.r_[part["density"].to_numpy(), 0.0]
            if source == "observed":
                ax.fill_between(edges, dens, step="post", color=OBSERVED_COLOUR, alpha=0.25,
                                label="observed")
            else:
                ax.step(edges, dens, where="post", color=method_colour(source), lw=1.5,
                        label=plain(f"imputed, {source}"))
        never = bool(info.get("never_observed", False))
        missing = info["n_missing"]
        title = f"{label}: {missing if isinstance(missing, str) else f'{int(missing):,}'} missing"
        if never:
            title += " (never measured)"
        elif not (sub["source"] == "observed").any():
            title += f"\n(observed values not drawn: fewer than {min_cell})"
        ax.set_title(plain(title), fontsize=9)
        ax.set_xlabel(plain(focus), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(labels):]:
        ax.set_visible(False)
    fig.suptitle(plain(f"Observed and imputed {focus} in the clusters with most missing values "
                       "(imputed: all m imputations together)"), fontsize=10)
    return fig


def level_distribution_plot(table: pd.DataFrame, clusters: pd.DataFrame, *, focus: str, levels,
                            min_cell: int = 11):
    """Observed and imputed level shares of a categorical focus in the clusters with most missing values.

    Parameters
    ----------
    table : pandas.DataFrame
        ``cluster, source, level, share``
        (:func:`hmlib.steps.imputation_levels.level_distributions`).
    clusters : pandas.DataFrame
        ``cluster, n_missing, never_observed`` (display version).
    focus : str
    levels : sequence of str
        Level order (colours follow it).
    min_cell : int
        For the caption: observed shares that would reveal a count below it are not drawn.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per cluster; in each a stacked bar per source (observed,
        then each method's imputed values), one colour per level.
    """
    levels = [str(level) for level in levels]
    colours = level_colours(levels)
    labels = list(clusters["cluster"])
    ncols = min(len(labels), 2) or 1
    nrows = max(1, int(np.ceil(len(labels) / ncols)))
    fig, axes = new_figure(5.2 * ncols, 0.8 + 2.4 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    for ax, (_, info) in zip(axes.ravel(), clusters.iterrows()):
        sub = table.loc[table["cluster"].astype(str) == str(info["cluster"])]
        methods = method_order([s for s in sub["source"].unique() if s != "observed"])
        sources = [s for s in ["observed", *methods] if (sub["source"] == s).any()]
        for y, source in enumerate(sources):
            shares = sub.loc[sub["source"] == source].set_index("level")["share"]
            left = 0.0
            for level in levels:
                width = float(shares.get(level, 0.0))
                ax.barh(y, width, left=left, color=colours[level], height=0.7,
                        label=label(level) if y == 0 else None)
                left += width
        ax.set_yticks(range(len(sources)), [plain(s if s == "observed" else f"imputed, {s}") for s in sources],
                      fontsize=7)
        ax.set_ylim(len(sources) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        missing = info["n_missing"]
        title = f"{label(info['cluster'])}: {missing if isinstance(missing, str) else f'{int(missing):,}'} missing"
        if bool(info.get("never_observed", False)):
            title += " (never recorded)"
        elif "observed" not in sources:
            title += f"\n(observed shares not drawn: a level count below {min_cell})"
        ax.set_title(plain(title), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes.ravel()[len(labels):]:
        ax.set_visible(False)
    handles, names = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(levels), 6), fontsize=8, frameon=False)
    fig.suptitle(plain(f"Levels of {focus}, observed and imputed, in the clusters with most missing values "
                       "(imputed: all m imputations together)"), fontsize=10)
    return fig


def fmi_plot(fmi: pd.DataFrame):
    """Fraction of missing information per coefficient and method (grouped bars).

    Parameters
    ----------
    fmi : pandas.DataFrame
        ``method, term, fmi``
        (:meth:`hmlib.steps.imputation.ImputationStepResult.fmi_table`).
    """
    terms = list(dict.fromkeys(fmi["term"]))
    methods = method_order(fmi["method"])
    fig, ax = new_figure(8, 0.16 * len(terms) * max(len(methods), 1) + 1.6)
    height = 0.8 / max(len(methods), 1)
    base = np.arange(len(terms))[::-1]
    for k, method in enumerate(methods):
        sub = fmi.loc[fmi["method"] == method].set_index("term").reindex(terms)
        ax.barh(base + 0.4 - (k + 0.5) * height, sub["fmi"].to_numpy(dtype=float), height=height,
                color=method_colour(method), label=plain(method))
    ax.set_yticks(base, [label(term) for term in terms], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of missing information", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("How much of each coefficient's uncertainty is due to the missing values", fontsize=10)
    return fig


def transport_plot(transport, *, max_clusters: int = 40):
    """Per-cluster bias (SD units) and coverage of masked-cluster imputations.

    Parameters
    ----------
    transport : hmlib.steps.imputation_transport.PublishedTransport
        Its published table (``display``) is drawn; suppressed clusters are
        left out and counted in the title.
    max_clusters : int
        At most this many clusters (those with largest |bias| in any method).
    """
    table = transport.display
    shown = table.loc[table["bias_sd"].map(lambda v: not isinstance(v, str))].copy()
    n_hidden = table.loc[~table.index.isin(shown.index), "cluster"].nunique()
    shown["bias_sd"] = shown["bias_sd"].astype(float)
    shown["coverage"] = shown["coverage"].astype(float)
    worst = shown.groupby("cluster")["bias_sd"].apply(lambda b: b.abs().max()).sort_values(ascending=False)
    clusters = worst.index[:max_clusters].tolist()[::-1]
    y = {c: i for i, c in enumerate(clusters)}
    fig, (left, right) = new_figure(10, 0.25 * len(clusters) + 2.0, ncols=2, sharey=True)
    offsets = np.linspace(-0.15, 0.15, max(len(transport.methods), 1))
    # x range of the bias panel: a model that extrapolates wildly must not squash the others
    limit = max(3.0, 3 * transport.bias_threshold)
    n_clipped = 0
    for off, method in zip(offsets, transport.methods):
        sub = shown.loc[(shown["method"] == method) & shown["cluster"].isin(clusters)]
        ys = sub["cluster"].map(y).to_numpy(dtype=float) + off
        flagged = sub["flagged"].to_numpy(dtype=bool)
        bias = sub["bias_sd"].to_numpy(dtype=float)
        clipped = np.abs(bias) > limit
        edges = np.where(flagged, "black", "none")
        left.scatter(np.clip(bias, -limit, limit)[~clipped], ys[~clipped], color=method_colour(method), s=22,
                     label=plain(method), edgecolor=edges[~clipped])
        if clipped.any():  # far-off clusters drawn at the edge with a cross
            left.scatter(np.sign(bias[clipped]) * limit, ys[clipped], color=method_colour(method), s=40,
                         marker="X", edgecolor=edges[clipped])
            n_clipped += int(clipped.sum())
        right.scatter(sub["coverage"], ys, color=method_colour(method), s=22, label=plain(method), edgecolor=edges)
    t = transport.bias_threshold
    left.set_xlim(-limit * 1.08, limit * 1.08)
    left.axvspan(-t, t, color="#eeeeee", zorder=0)
    left.axvline(0, color="grey", lw=0.8)
    left.set_xlabel(plain(f"mean imputed - mean observed (SD of {transport.focus})"), fontsize=8)
    right.axvline(transport.coverage_threshold, color=FAILED_COLOUR, ls="--", lw=1)
    right.axvline(transport.level, color="grey", ls=":", lw=1)
    right.set_xlim(-0.02, 1.02)
    right.set_xlabel(f"share of masked values inside their {transport.level:.0%} imputation interval", fontsize=8)
    left.set_yticks(range(len(clusters)), [label(c) for c in clusters], fontsize=7)
    left.legend(fontsize=8, loc="lower right")
    title = (f"Transport check of {transport.focus}: each cluster masked and imputed from the others "
             "(black edge: flagged)")
    if n_hidden:
        title += f"\n{n_hidden} cluster(s) not shown: fewer than {transport.min_cell} values (small cells)"
    if n_clipped:
        title += f"\n{n_clipped} bias(es) beyond +/-{limit:g} SD drawn at the edge (x)"
    fig.suptitle(plain(title), fontsize=10)
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=8)
    return fig
