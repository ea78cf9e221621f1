"""Step 1's tables as published: small-cell suppression decided once and applied everywhere.

The statistics of :mod:`hmlib.stats.missingness` know nothing of privacy;
this module turns their tables into what step 1 publishes:

- the per-cluster counts (cluster size, missing, recorded) of every
  incomplete variable are suppressed once, on one wide table (one row per
  cluster), by :func:`hmlib.privacy.suppress_counts` (column totals treated
  as published), and the by-cluster table, the heatmap, the gap summary and
  the funnels all follow that one decision (:func:`publish_tables`);
- a share is hidden when it would give back a hidden count, an interval
  whenever any count of its row is hidden (:func:`mask_table`);
- a variable whose overall count is suppressed, or whose cluster counts
  cannot be protected, is not broken down by cluster at all;
- a categorical focus's level counts by cluster are suppressed around that
  decision, with the recorded count as their total (:func:`level_count_mask`);
- the counts the missingness models report follow the same decisions
  (:func:`publish_sporadic_variation`, :func:`publish_predictors`), and
  per-cluster empirical-Bayes effects carry display names only
  (:func:`publish_outcome_correlation`).

Clusters are named by their display names (a pseudonym, the label, or
``"<noun> <label>"`` for a numeric label) and published tables are sorted by
that name, so pseudonyms do not reveal the original order.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from hmlib.exceptions import ParamsError
from hmlib.privacy import SUPPRESSED_LABEL, SuppressedTable, suppress_counts
from hmlib.stats.missingness import (ClusterVariationResult, FunnelResult, GapResult,
                                     MissingnessPredictorsResult, OutcomeCorrelationResult, classify_gaps,
                                     level_counts_by_cluster, missingness_by_cluster, missingness_funnel,
                                     missingness_heatmap_table)

__all__ = [
    "natural_key",
    "display_names",
    "rank_by_name",
    "publish_overview",
    "PublishedTables",
    "publish_tables",
    "cluster_count_masks",
    "HiddenCells",
    "hidden_cells",
    "level_count_mask",
    "mask_table",
    "hide_overview_cluster_counts",
    "publish_heatmap",
    "publish_funnel",
    "publish_sporadic_variation",
    "publish_predictors",
    "publish_outcome_correlation",
]


# --------------------------------------------------------------------------
# Display names
# --------------------------------------------------------------------------
def natural_key(text: str) -> list:
    """Sort key that orders ``"site 2"`` before ``"site 10"`` (digits as numbers, text case-blind)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def _default_name(label, noun: str) -> str:
    """``"site 5"`` for a numeric label; a text label ("Site 05", "NY") as it is."""
    text = str(label)
    return f"{noun} {text}" if re.fullmatch(r"[0-9.+-]+", text) else text


def display_names(labels: Sequence[Hashable], cluster_names: Mapping[Hashable, str] | None,
                  noun: str) -> dict:
    """Label -> the name a published table shows.

    Parameters
    ----------
    labels : sequence
        Cluster labels of the data.
    cluster_names : mapping, optional
        Label -> display name (e.g. pseudonyms); must name every label.
    noun : str
        Word for a cluster, for numeric labels without a given name.

    Raises
    ------
    ParamsError
        ``cluster_names`` misses a label, or two clusters would share a name.
    """
    names = {label: str((cluster_names or {}).get(label, _default_name(label, noun))) for label in labels}
    if cluster_names is not None:
        unnamed = [lb for lb in labels if lb not in cluster_names]
        if unnamed:
            raise ParamsError(f"cluster_names has no name for {len(unnamed)} cluster(s), e.g. {unnamed[0]!r}.")
    if len(set(names.values())) != len(names):
        raise ParamsError("cluster display names are not unique.")
    return names


def rank_by_name(names: dict) -> dict:
    """Label -> position in the natural order of the display names."""
    return {lb: i for i, lb in enumerate(sorted(names, key=lambda lb: natural_key(names[lb])))}


# --------------------------------------------------------------------------
# Suppression helpers
# --------------------------------------------------------------------------
def publish_overview(overview: pd.DataFrame, min_cell: int) -> SuppressedTable:
    """:func:`hmlib.stats.missingness.missingness_overview` with its small counts suppressed
    (and the share and interval derived from them)."""
    derived = ["n_missing", "n_observed"]
    return suppress_counts(overview, ["n_missing", "n_observed"], min_cell, total_column="n",
                           column_totals=False,
                           derived_columns={"share_missing": derived, "ci_lower": derived, "ci_upper": derived})


def cluster_count_masks(by_cluster: pd.DataFrame, variables: Sequence[str],
                        min_cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Suppress the per-cluster counts once, on a wide table (one row per cluster).

    Every per-cluster table of the report shows the same counts (n, missing,
    observed), so one decision is made here and applied to all of them.

    Parameters
    ----------
    by_cluster : pandas.DataFrame
        :func:`hmlib.stats.missingness.missingness_by_cluster` of ``variables``.
    variables : sequence of str
    min_cell : int

    Returns
    -------
    n, missing, observed : numpy.ndarray of bool
        For each row of ``by_cluster``: whether its cluster size, its missing
        count and its recorded count are hidden.
    """
    wide = by_cluster.pivot(index="cluster", columns="variable", values="n_missing")
    sizes = by_cluster.drop_duplicates("cluster").set_index("cluster")["n"]
    table = pd.DataFrame({"n": sizes.loc[wide.index].to_numpy()}, index=wide.index)
    parts = []
    for j, var in enumerate(variables):
        table[f"m{j}"] = wide[var].to_numpy()
        table[f"o{j}"] = table["n"] - table[f"m{j}"]
        parts.append([f"m{j}", f"o{j}"])
    counts = [c for pair in parts for c in pair]
    suppressed = suppress_counts(table.reset_index(drop=True), counts, min_cell, total_column="n",
                                 parts=parts)
    mask = suppressed.mask.set_axis(wide.index)
    index = {var: j for j, var in enumerate(variables)}
    j = np.array([index[v] for v in by_cluster["variable"]])
    sub = mask.loc[list(by_cluster["cluster"])]
    n_mask = sub["n"].to_numpy()
    m_mask = np.array([sub[f"m{jj}"].iat[i] for i, jj in enumerate(j)], dtype=bool)
    o_mask = np.array([sub[f"o{jj}"].iat[i] for i, jj in enumerate(j)], dtype=bool)
    return n_mask, m_mask, o_mask


def level_count_mask(level_counts: pd.DataFrame, recorded_hidden: pd.Series, min_cell: int) -> pd.DataFrame:
    """Suppress a categorical variable's level counts by cluster, around its already hidden recorded counts.

    The level counts of a cluster add up to its recorded count, which the
    by-cluster table publishes or hides (:func:`cluster_count_masks`); that
    decision is kept as it is (the missingness table must not lose cells
    for the sake of a breakdown), and the level counts are protected around
    it: :func:`hmlib.privacy.suppress_counts` with the recorded count as the
    row total (hidden where it is hidden) and column totals treated as
    published.

    Parameters
    ----------
    level_counts : pandas.DataFrame
        :func:`hmlib.stats.missingness.level_counts_by_cluster` (index:
        cluster labels).
    recorded_hidden : pandas.Series of bool
        By cluster label: the recorded count is hidden in the by-cluster table.
    min_cell : int

    Returns
    -------
    pandas.DataFrame of bool
        Like the level columns of ``level_counts``: True where a level count
        is hidden.
    """
    levels = [c for c in level_counts.columns if c not in ("n", "n_missing", "n_recorded")]
    names = [f"l{k}" for k in range(len(levels))]
    table = pd.DataFrame({"o": level_counts["n_recorded"].to_numpy()}, index=range(len(level_counts)))
    for name, level in zip(names, levels):
        table[name] = level_counts[level].to_numpy()
    given = pd.DataFrame({"o": recorded_hidden.reindex(level_counts.index, fill_value=False).to_numpy(dtype=bool)},
                         index=table.index)
    suppressed = suppress_counts(table, names, min_cell, total_column="o", parts=[names], hidden=given)
    return suppressed.mask[names].set_axis(level_counts.index).set_axis(levels, axis=1)


def mask_table(table: pd.DataFrame, n_mask, m_mask, o_mask, *, count_cols, share_cols, interval_cols):
    """NaN-out suppressed counts; shares when they would reveal a count; intervals when any count is hidden.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows with ``n`` and ``n_missing`` (not modified).
    n_mask, m_mask, o_mask : numpy.ndarray of bool
        Hidden cluster size, missing and recorded count of each row.
    count_cols, share_cols, interval_cols : list of str
        Columns to treat as counts (``n``, ``n_missing``, ``n_observed``),
        shares and interval limits.

    Returns
    -------
    published : pandas.DataFrame
    share_hidden, any_hidden : numpy.ndarray of bool
        Rows whose share, and whose interval, is hidden.
    """
    out = table.copy()
    k = table["n_missing"].to_numpy()
    n = table["n"].to_numpy()
    any_hidden = n_mask | m_mask | o_mask
    # a share of 0 or 1 reveals no count (both zeros are published anyway)
    share_hidden = any_hidden & (k > 0) & (k < n)
    hidden = {"n": n_mask, "n_missing": m_mask, "n_observed": o_mask}
    for col in count_cols:
        out[col] = out[col].astype(float).where(~hidden[col])
    for col in share_cols:
        out[col] = out[col].astype(float).where(~share_hidden)
    for col in interval_cols:
        out[col] = out[col].astype(float).where(~any_hidden)
    return out, share_hidden, any_hidden


def hide_overview_cluster_counts(overview: SuppressedTable, variables: Sequence[str]) -> SuppressedTable:
    """Suppress the numbers of clusters with any / all missing for ``variables``."""
    hide = overview.values["variable"].isin(list(variables)).to_numpy()
    values = overview.values.copy()
    display = overview.display.copy()
    mask = overview.mask.copy()
    for col in ("n_clusters_any_missing", "n_clusters_all_missing"):
        values[col] = values[col].astype(float).where(~hide)
        display[col] = display[col].astype(object).where(~hide, overview.label)
        mask[col] = hide
    return replace(overview, values=values, display=display, mask=mask)


# --------------------------------------------------------------------------
# The per-cluster tables
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cells:
    """The raw by-cluster table and which of its cells are hidden (one entry per row)."""

    table: pd.DataFrame
    n: np.ndarray
    missing: np.ndarray
    observed: np.ndarray
    no_breakdown: np.ndarray

    def by_label(self, values: np.ndarray) -> pd.Series:
        """``values`` indexed by (cluster label, variable)."""
        return pd.Series(values, index=pd.MultiIndex.from_arrays([self.table["cluster"], self.table["variable"]]))


@dataclass(frozen=True)
class PublishedTables:
    """Step 1's per-cluster tables as published, and what the models must respect.

    Attributes
    ----------
    overview : SuppressedTable
        The overview with the cluster counts of ``no_breakdown`` hidden too.
    by_cluster : SuppressedTable
        Per cluster and incomplete variable, joined with gap type and funnel
        position; display names; sorted by variable, then name.
    heatmap : pandas.DataFrame
        Shares, clusters (display names) x variables broken down; NaN = hidden.
    gap_summary : pandas.DataFrame
        :class:`hmlib.stats.missingness.GapResult` summary with display names.
    funnels : dict of str to FunnelResult
        Published funnels of the variables modelled and broken down.
    hidden_overall : tuple of str
        Variables whose overall missing count is suppressed (neither broken
        down nor modelled).
    no_breakdown : tuple of str
        Variables not broken down by cluster.
    structural_clusters : dict
        Variable -> labels (not display names) of its clusters with structural gaps.
    cells_hidden : pandas.Series of bool
        By (cluster label, variable): the cluster's size or missing count is hidden.
    notes : tuple of str
        What is not shown, and why.
    level_counts : pandas.DataFrame or None
        A categorical focus's level counts by cluster (raw, for the
        statistics; :func:`hmlib.stats.missingness.level_counts_by_cluster`),
        None when it is not broken down.
    level_shares : pandas.DataFrame or None
        The same as published: ``cluster`` (display name), ``n_recorded``,
        ``share_missing`` and one column per level (its share of the
        recorded values); NaN = hidden. Sorted by display name.
    hidden : HiddenCells or None
        The one decision behind these tables (:func:`hidden_cells`), which the tables by higher unit
        are suppressed around (:mod:`hmlib.steps.diagnose_units`).
    """

    overview: SuppressedTable
    by_cluster: SuppressedTable
    heatmap: pd.DataFrame
    gap_summary: pd.DataFrame
    funnels: dict
    hidden_overall: tuple
    no_breakdown: tuple
    structural_clusters: dict
    cells_hidden: pd.Series
    notes: tuple
    level_counts: pd.DataFrame | None = None
    level_shares: pd.DataFrame | None = None
    hidden: HiddenCells | None = None

    def modelled(self, incomplete: Sequence[str]) -> list:
        """The incomplete variables whose missingness may be modelled (overall count published)."""
        return [v for v in incomplete if v not in self.hidden_overall]


@dataclass(frozen=True)
class HiddenCells:
    """Step 1's one decision on which per-cluster counts are hidden (:func:`hidden_cells`).

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`hmlib.stats.missingness.missingness_by_cluster` of the incomplete variables (unsuppressed).
    n, missing, observed : numpy.ndarray of bool
        For each row of ``table``: its cluster size, missing count and
        recorded count are hidden (primary or complementary suppression).
    hidden_overall : tuple of str
        Incomplete variables whose overall missing count is suppressed.
    no_breakdown : tuple of str
        Incomplete variables not broken down by cluster at all (their
        total is suppressed, or their cluster counts cannot be protected).
    """

    table: pd.DataFrame
    n: np.ndarray
    missing: np.ndarray
    observed: np.ndarray
    hidden_overall: tuple
    no_breakdown: tuple


def hidden_cells(frame: pd.DataFrame, incomplete: Sequence[str], cluster: str, *, overview: SuppressedTable,
                 min_cell: int, level: float = 0.95) -> HiddenCells:
    """Decide once which per-cluster counts of the incomplete variables are hidden.

    Step 1 publishes its per-cluster tables by this decision, and the later
    steps hide at least the same cells (:mod:`hmlib.steps.disclosure`), so a
    count hidden in one section is never printed in another.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    incomplete : sequence of str
        Variables with at least one missing value.
    cluster : str
    overview : SuppressedTable
        :func:`publish_overview` of the analysis variables.
    min_cell : int
    level : float
        Confidence level of the table's intervals (no effect on the decision).

    Returns
    -------
    HiddenCells
    """
    incomplete = list(incomplete)
    overview_hidden = overview.mask.set_axis(overview.values["variable"])["n_missing"]
    # A variable whose overall missing count is suppressed gets no funnel and no model: the
    # funnel's centre line and an intercept-only logistic fit would give the count back.
    hidden_overall = [v for v in incomplete if bool(overview_hidden.loc[v])]
    table = missingness_by_cluster(frame, incomplete, cluster, level=level)
    n_mask, m_mask, o_mask = cluster_count_masks(table, incomplete, min_cell)
    row_var = table["variable"].to_numpy()
    # No breakdown by cluster for a variable whose total is suppressed or whose cluster counts
    # could not be protected: with zeros shown, the number of hidden cells bounds the total.
    no_breakdown = [v for v in incomplete if v in hidden_overall or m_mask[row_var == v].all()]
    return HiddenCells(table=table, n=n_mask, missing=m_mask, observed=o_mask, hidden_overall=tuple(hidden_overall),
                       no_breakdown=tuple(no_breakdown))


def publish_tables(frame: pd.DataFrame, incomplete: Sequence[str], cluster: str, *,
                   overview: SuppressedTable, min_cell: int, structural_share: float, level: float,
                   names: dict, cluster_noun: str, focus_levels: tuple | None = None) -> PublishedTables:
    """Compute the per-cluster tables of the incomplete variables and publish them.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    incomplete : sequence of str
        Variables with at least one missing value.
    cluster : str
    overview : SuppressedTable
        :func:`publish_overview` of all analysis variables.
    min_cell : int
    structural_share, level : float
    names : dict
        Label -> display name (:func:`display_names`).
    cluster_noun : str
    focus_levels : tuple, optional
        ``(variable, levels)`` of a categorical focus: its level counts are
        suppressed around the by-cluster decision (:func:`level_count_mask`)
        and published as shares by cluster.

    Returns
    -------
    PublishedTables
    """
    incomplete = list(incomplete)
    notes: list[str] = []
    rank = rank_by_name(names)
    overview_hidden = overview.mask.set_axis(overview.values["variable"])["n_missing"]
    decision = cells = hidden_cells(frame, incomplete, cluster, overview=overview, min_cell=min_cell, level=level)
    by_cluster_raw, n_mask, m_mask, o_mask = cells.table, cells.n, cells.missing, cells.observed
    hidden_overall, no_breakdown = list(cells.hidden_overall), list(cells.no_breakdown)
    row_var = by_cluster_raw["variable"].to_numpy()
    for var in no_breakdown:
        if var not in hidden_overall:
            notes.append(f"{var} is not broken down by {cluster_noun}: its {cluster_noun} counts cannot be "
                         f"shown without revealing counts below {min_cell}.")
    nb_rows = np.isin(row_var, no_breakdown)
    cells = _Cells(table=by_cluster_raw, n=n_mask, missing=m_mask | nb_rows, observed=o_mask | nb_rows,
                   no_breakdown=nb_rows)
    gaps = classify_gaps(frame, incomplete, cluster, structural_share=structural_share)
    funnels_raw = {v: missingness_funnel(frame, v, cluster) for v in incomplete}
    by_cluster, share_hidden = _publish_by_cluster(cells, gaps, funnels_raw, incomplete, names, rank, min_cell)
    heatmap = publish_heatmap(missingness_heatmap_table(frame, incomplete, cluster), cells.by_label(share_hidden),
                               incomplete, no_breakdown, names, rank, cluster)
    gap_summary = _publish_gap_summary(gaps, cells.by_label(cells.missing), overview_hidden, no_breakdown,
                                       names, min_cell)
    # the overview's cluster counts bound the hidden total from below: hide them too
    overview = hide_overview_cluster_counts(overview, no_breakdown)
    for var in hidden_overall:
        notes.append(f"{var} is missing for fewer than {min_cell} patients (or recorded for fewer than "
                     f"{min_cell}): its breakdown by {cluster_noun}, funnel plot and missingness models are "
                     "not shown, as they would reveal the suppressed count.")
    funnels = {}
    for var in incomplete:
        if var in hidden_overall or var in no_breakdown:
            continue
        sel = row_var == var
        funnels[var] = publish_funnel(funnels_raw[var], cells.n[sel], cells.missing[sel], cells.observed[sel],
                                       names, rank)
    level_counts, level_shares = None, None
    if focus_levels is not None and focus_levels[0] not in no_breakdown:
        level_counts = _focus_level_counts(frame, focus_levels, incomplete, hidden_overall, cluster, min_cell,
                                           notes)
    if level_counts is not None:
        sel = row_var == focus_levels[0]
        labels = by_cluster_raw.loc[sel, "cluster"]
        hidden_levels = level_count_mask(level_counts, pd.Series(cells.observed[sel], index=labels.to_numpy()),
                                         min_cell)
        level_shares = _publish_level_shares(level_counts, hidden_levels, labels,
                                             cells.n[sel] | cells.missing[sel] | cells.observed[sel],
                                             cells.observed[sel], names, rank)
    return PublishedTables(
        overview=overview, by_cluster=by_cluster, heatmap=heatmap, gap_summary=gap_summary, funnels=funnels,
        hidden_overall=tuple(hidden_overall), no_breakdown=tuple(no_breakdown),
        structural_clusters=dict(zip(gaps.summary["variable"], gaps.summary["structural_clusters"])),
        cells_hidden=cells.by_label(cells.n | cells.missing), notes=tuple(notes), level_counts=level_counts,
        level_shares=level_shares, hidden=decision)


def _focus_level_counts(frame, focus_levels, incomplete, hidden_overall, cluster, min_cell, notes):
    """The categorical focus's level counts by cluster, or None (not categorical, not broken down, or a
    level recorded for fewer than ``min_cell`` patients overall: its share would reveal the count)."""
    if focus_levels is None:
        return None
    variable, levels = focus_levels
    if variable not in incomplete or variable in hidden_overall:
        return None
    counts = level_counts_by_cluster(frame, variable, cluster, levels)
    totals = counts[list(levels)].sum()
    rare = [str(level) for level, total in totals.items() if 0 < total < min_cell]
    if rare:
        notes.append(f"The levels of {variable} are not broken down by cluster: level(s) {', '.join(rare)} are "
                     f"recorded for fewer than {min_cell} patients.")
        return None
    return counts


def _publish_level_shares(counts: pd.DataFrame, hidden_levels: pd.DataFrame, labels, row_hidden, recorded_hidden,
                          names: dict, rank: dict) -> pd.DataFrame:
    """Per cluster: recorded count, share missing and each level's share of the recorded values, as published.

    A level's share is hidden when its count is, or when the recorded count is hidden and the share
    would give a count back (neither 0 nor all recorded values); the share missing as in the
    by-cluster table (hidden with any count of its row, unless 0 or 1).
    """
    labels = list(labels)
    counts = counts.loc[labels]
    levels = list(hidden_levels.columns)
    n, k, recorded = (counts[c].to_numpy(dtype=float) for c in ("n", "n_missing", "n_recorded"))
    out = pd.DataFrame({"cluster": [names[c] for c in labels],
                        "n_recorded": np.where(recorded_hidden, np.nan, recorded)})
    with np.errstate(divide="ignore", invalid="ignore"):
        out["share_missing"] = np.where(row_hidden & (k > 0) & (k < n), np.nan, k / n)
        hidden = hidden_levels.loc[labels].to_numpy(dtype=bool)
        for i, level in enumerate(levels):
            c = counts[level].to_numpy(dtype=float)
            reveals = recorded_hidden & (c > 0) & (c < recorded)
            out[level] = np.where(hidden[:, i] | reveals | (recorded == 0), np.nan, c / recorded)
    order = np.argsort([rank[c] for c in labels], kind="stable")
    return out.iloc[order].reset_index(drop=True)


def _publish_by_cluster(cells: _Cells, gaps: GapResult, funnels_raw: dict, variables: list, names: dict,
                        rank: dict, min_cell: int) -> tuple[SuppressedTable, np.ndarray]:
    """The by-cluster table joined with gap type and funnel position, suppressed; and the hidden shares."""
    raw, nb_rows = cells.table, cells.no_breakdown
    joined = raw.copy()
    joined["gap_type"] = gaps.table["gap_type"].to_numpy().astype(object)
    joined["funnel_position"] = np.concatenate(
        [funnels_raw[v].table["position"].to_numpy() for v in variables]).astype(object)
    joined.loc[nb_rows, ["gap_type", "funnel_position"]] = None
    published, share_hidden, any_hidden = mask_table(
        joined, cells.n, cells.missing, cells.observed, count_cols=["n", "n_missing", "n_observed"],
        share_cols=["share_missing"], interval_cols=["ci_lower", "ci_upper"])
    share_hidden = share_hidden | nb_rows
    published.loc[nb_rows, "share_missing"] = np.nan
    published["cluster"] = [names[c] for c in raw["cluster"]]
    mask_frame = pd.DataFrame({
        "n": cells.n, "n_missing": cells.missing, "n_observed": cells.observed, "share_missing": share_hidden,
        "ci_lower": any_hidden, "ci_upper": any_hidden, "gap_type": nb_rows, "funnel_position": nb_rows},
        index=published.index)
    sort_key = np.array([rank[c] for c in raw["cluster"]])
    var_key = np.array([variables.index(v) for v in raw["variable"]])
    new_order = np.lexsort((sort_key, var_key))
    display = published.copy()
    for col in mask_frame.columns:
        display[col] = display[col].astype(object).where(~mask_frame[col].to_numpy(), SUPPRESSED_LABEL)
    primary_frame = pd.DataFrame({
        col: (raw[col] >= 1) & (raw[col] < min_cell) for col in ("n", "n_missing", "n_observed")})

    def reorder(frame):
        return frame.iloc[new_order].reset_index(drop=True)

    table = SuppressedTable(display=reorder(display), values=reorder(published), mask=reorder(mask_frame),
                            primary=reorder(primary_frame), min_cell=int(min_cell))
    return table, share_hidden


def publish_heatmap(heat_raw: pd.DataFrame, share_hidden: pd.Series, variables: list, no_breakdown: list,
                     names: dict, rank: dict, cluster: str) -> pd.DataFrame:
    """Shares by cluster and variable, NaN where hidden, re-ordered on the published shares only."""
    heat = heat_raw.copy()
    for var in variables:
        hide = share_hidden.xs(var, level=1).reindex(heat.index).to_numpy()
        heat[var] = heat[var].where(~hide)
    heat = heat.drop(columns=no_breakdown)
    heat.index = pd.Index([names[c] for c in heat_raw.index], name=cluster)
    # re-order on the published shares only: the raw order would place a suppressed cell
    # between two published ones and so bound it
    key = heat.mean(axis=1, skipna=True).to_numpy()
    name_rank = np.array([rank[c] for c in heat_raw.index])
    return heat.iloc[np.lexsort((name_rank, -np.nan_to_num(key, nan=-1.0)))]


def _publish_gap_summary(gaps: GapResult, missing_hidden: pd.Series, overview_hidden: pd.Series,
                         no_breakdown: list, names: dict, min_cell: int) -> pd.DataFrame:
    """Gap summary with display names; the structural patient count only when no part of it is hidden."""
    gap_summary = gaps.summary.copy()
    gap_summary["structural_clusters"] = [
        tuple(sorted((names[c] for c in cl), key=natural_key)) for cl in gaps.summary["structural_clusters"]]
    safe_structural = []
    for row in gaps.summary.itertuples(index=False):
        hidden_any = any(missing_hidden[(c, row.variable)] for c in row.structural_clusters)
        small = 0 < row.n_missing_structural < min_cell
        safe_structural.append(not hidden_any and not small)
    safe_structural = np.array(safe_structural, dtype=bool)
    gap_summary["n_missing_structural"] = gap_summary["n_missing_structural"].astype(float).where(safe_structural)
    gap_summary["share_of_missing_structural"] = gap_summary["share_of_missing_structural"].where(safe_structural)
    gap_summary["n_missing"] = gap_summary["n_missing"].astype(float).where(
        ~overview_hidden.loc[gap_summary["variable"]].to_numpy())
    nb_summary = gap_summary["variable"].isin(no_breakdown).to_numpy()
    for col in ("n_complete", "n_sporadic", "n_structural", "n_missing_structural",
                "share_of_missing_structural"):
        gap_summary[col] = gap_summary[col].astype(float).where(~nb_summary)
    gap_summary["structural_clusters"] = [None if hide else cl for hide, cl in
                                          zip(nb_summary, gap_summary["structural_clusters"])]
    return gap_summary


def publish_funnel(funnel: FunnelResult, n_mask, m_mask, o_mask, names: dict, rank: dict) -> FunnelResult:
    """A funnel with display names and NaN for hidden counts, rates and the limits at a hidden size."""
    table, _, _ = mask_table(funnel.table, n_mask, m_mask, o_mask, count_cols=["n", "n_missing"],
                             share_cols=["rate"], interval_cols=[])
    for col in [c for c in table.columns if c.startswith(("lower_", "upper_"))]:
        table[col] = table[col].where(~n_mask)  # the limits at a hidden n would reveal n
    table["cluster"] = [names[c] for c in funnel.table["cluster"]]
    order = np.argsort([rank[c] for c in funnel.table["cluster"]], kind="stable")
    return replace(funnel, table=table.iloc[order].reset_index(drop=True),
                   above=tuple(names[c] for c in funnel.above), below=tuple(names[c] for c in funnel.below))


# --------------------------------------------------------------------------
# Counts of the models
# --------------------------------------------------------------------------
def publish_sporadic_variation(result: ClusterVariationResult, tables: PublishedTables,
                               structural: Sequence[Hashable]) -> ClusterVariationResult:
    """The model without the clusters with structural gaps, without its counts where a structural
    cluster's size or missing count is hidden (totals minus this model's counts would give it)."""
    if any(tables.cells_hidden[(c, result.variable)] for c in structural):
        return replace(result, n_used=None, n_missing=None)
    return result


def publish_predictors(result: MissingnessPredictorsResult, hidden_overall: Sequence[str],
                       min_cell: int) -> MissingnessPredictorsResult:
    """A predictor model whose rows-left-out counts follow the overview's suppression.

    The rows left out per covariate are that covariate's missing count:
    published only where the overview publishes it. The total left out (and
    so the rows used) is hidden when from 1 to ``min_cell - 1``.
    """
    dropped = {c: None if c in hidden_overall or 0 < k < min_cell else k
               for c, k in result.dropped_by_covariate.items()}
    small = 0 < result.n_dropped < min_cell
    return replace(result, dropped_by_covariate=dropped, n_dropped=None if small else result.n_dropped,
                   n_used=None if small else result.n_used)


def publish_outcome_correlation(result: OutcomeCorrelationResult, names: dict) -> OutcomeCorrelationResult:
    """The correlation with its per-cluster effects named by display name and sorted by it."""
    rank = rank_by_name(names)
    effects = result.effects.copy()
    effects["cluster"] = [names[c] for c in effects["cluster"]]
    effects = effects.iloc[np.argsort([rank[c] for c in result.effects["cluster"]], kind="stable")]
    return replace(result, effects=effects.reset_index(drop=True))
