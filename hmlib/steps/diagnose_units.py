"""Step 1 by higher unit (params ``higher_levels``): the missingness heatmap and funnel plots by country.

The clusters' heatmap and funnels (:mod:`hmlib.steps.diagnose_tables`) say
which hospitals miss values; with hospitals in countries the same views by
country say whether whole countries do. For each higher level and each
variable step 1 breaks down by cluster:

- **the heatmap by unit**: each unit's share of patients with the variable
  missing (:func:`hmlib.stats.missingness.missingness_heatmap_table` with the
  level as the grouping), ordered on the published shares only;
- **the funnel by unit**: each unit's share missing against its number of
  patients, with the exact binomial limits around the overall rate that the
  clusters' funnel uses (:func:`hmlib.stats.missingness.missingness_funnel`).

Small cells across levels
    A unit's counts (patients, missing, recorded) are sums of its clusters'
    counts, which step 1 publishes or hides once
    (:func:`hmlib.steps.diagnose_tables.hidden_cells`). That decision is kept
    as it is (the later steps follow it, :mod:`hmlib.steps.disclosure`), and
    the unit table is suppressed around it
    (:func:`hmlib.privacy_levels.suppress_unit_counts`): a unit count is hidden
    when it would give back its clusters' hidden counts (country less its
    shown hospitals), small unit counts and their complements are hidden, and
    only complements that hide a cluster count count as protection. With two
    higher levels (hospital in region in country) the outer level is
    suppressed after the inner one and also around it: a country count is
    hidden when it would give back its regions' hidden counts. A variable
    whose unit counts cannot be protected is not broken down by that level
    (noted). Shares follow the counts as in the clusters' tables: a share is
    hidden when any count of its unit is and the share is neither 0 nor 1.
    As for clusters, a unit's funnel position (above or below the limits) is
    published even when its share is hidden, which bounds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from hmlib.artifacts import Record
from hmlib.figures import diagnose as figures
from hmlib.privacy_levels import UnitSuppression, exposed_by_totals, suppress_unit_counts
from hmlib.stats.missingness import missingness_funnel, missingness_heatmap_table
from hmlib.stats.missingness.counts import level_label
from hmlib.steps.diagnose_tables import (HiddenCells, display_names, mask_table, publish_funnel, publish_heatmap,
                                         rank_by_name)
from hmlib.wording import join_names, level_noun, plural

__all__ = ["HeatmapRecord", "FunnelRecord", "UnitMissingness", "UnitMissingnessRecord", "missingness_by_unit",
           "funnel_record", "unit_figures", "unit_sentences", "records"]


@dataclass(frozen=True)
class HeatmapRecord(Record):
    """Share missing, clusters (display names) x variables broken down; ``None``: suppressed."""

    clusters: tuple[str, ...]
    variables: tuple[str, ...]
    share_missing: tuple[tuple[float | None, ...], ...]


@dataclass(frozen=True)
class FunnelRecord(Record):
    """The published funnel of one variable."""

    overall_rate: float
    levels: tuple[float, ...]
    method: str
    n_total: int
    above: tuple[str, ...]
    below: tuple[str, ...]
    table: list  # displayed only; its limit columns are named by level (lower_95, upper_99.8)
    curve: list  # displayed only: the limits over a grid of sizes


@dataclass(frozen=True)
class UnitMissingnessRecord(Record):
    """One higher level's heatmap and funnels as recorded (``by_unit`` of the diagnose artifact).

    ``heatmap.clusters`` holds the units' display names.
    """

    level: str
    n_units: int
    variables: tuple[str, ...]
    heatmap: HeatmapRecord
    funnels: dict[str, FunnelRecord]


@dataclass(frozen=True)
class UnitMissingness:
    """Step 1's heatmap and funnels by the units of one higher level, as published.

    Attributes
    ----------
    level : str
        The column of the level (``country``).
    n_units : int
    variables : tuple of str
        The variables broken down by this level (those step 1 breaks down by cluster, less any whose unit
        counts cannot be protected).
    heatmap : pandas.DataFrame
        Share missing, units (display names) x ``variables``; NaN = suppressed.
    funnels : dict of str to FunnelResult
        Published funnels: display names, NaN for hidden counts, rates and the limits at a hidden size.
    counts : hmlib.privacy.SuppressedTable
        The unit counts behind both (``n``, and the missing and recorded count of each variable: the
        columns named in ``count_columns``), as suppressed; not published as a table.
    count_columns : dict
        Variable -> its (missing, recorded) columns in ``counts``.
    """

    level: str
    n_units: int
    variables: tuple
    heatmap: pd.DataFrame
    funnels: dict
    counts: object
    count_columns: dict

    def hidden_units(self, variable: str | None = None) -> frozenset:
        """Units (labels as text) whose size is hidden, or (with ``variable``) whose missing or recorded count
        of it is hidden (:mod:`hmlib.steps.disclosure`)."""
        mask = self.counts.mask
        hide = mask["n"] if variable is None else mask[list(self.count_columns[variable])].any(axis=1)
        return frozenset(str(u) for u in mask.index[hide.to_numpy(dtype=bool)])

    @property
    def noun(self) -> str:
        """The word for one unit (:func:`hmlib.wording.level_noun`)."""
        return level_noun(self.level)

    def to_dict(self) -> dict:
        """The fields of :class:`UnitMissingnessRecord` (JSON-ready after :func:`hmlib.results.to_jsonable`)."""
        return {"level": self.level, "n_units": self.n_units, "variables": list(self.variables),
                "heatmap": {"clusters": list(self.heatmap.index), "variables": list(self.heatmap.columns),
                            "share_missing": self.heatmap.to_numpy().tolist()},
                "funnels": {v: funnel_record(f) for v, f in self.funnels.items()}}


def funnel_record(funnel) -> dict:
    """The fields of :class:`FunnelRecord` for a published funnel."""
    return {"overall_rate": funnel.overall_rate, "levels": list(funnel.levels), "method": funnel.method,
            "n_total": funnel.n_total, "above": list(funnel.above), "below": list(funnel.below),
            "table": funnel.table, "curve": funnel.curve}


# --------------------------------------------------------------------------
# Counts by unit, suppressed around the clusters' decision
# --------------------------------------------------------------------------
def _members(decision: HiddenCells, variables: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The clusters' counts in one wide table (``n``, ``m<j>``, ``o<j>``) and which of them step 1 hides."""
    table = decision.table
    labels = pd.unique(table["cluster"])
    first = table.drop_duplicates("cluster").set_index("cluster")
    n_hidden = pd.Series(decision.n, index=table["cluster"].to_numpy()).groupby(level=0).any()
    values = pd.DataFrame({"n": first.loc[labels, "n"].to_numpy()}, index=labels)
    hidden = pd.DataFrame({"n": n_hidden.reindex(labels).to_numpy(dtype=bool)}, index=labels)
    for j, var in enumerate(variables):
        sel = (table["variable"] == var).to_numpy()
        rows = table.loc[sel].set_index("cluster")
        values[f"m{j}"] = rows["n_missing"].reindex(labels).to_numpy()
        values[f"o{j}"] = rows["n_observed"].reindex(labels).to_numpy()
        hidden[f"m{j}"] = pd.Series(decision.missing[sel], index=rows.index).reindex(labels).to_numpy(dtype=bool)
        hidden[f"o{j}"] = pd.Series(decision.observed[sel], index=rows.index).reindex(labels).to_numpy(dtype=bool)
    return values, hidden


def _suppress_level(values: pd.DataFrame, hidden: pd.DataFrame, units: pd.Series, variables: Sequence[str],
                    min_cell: int, extra: pd.DataFrame | None, level: str, notes: list) -> tuple[UnitSuppression, list]:
    """The unit table of one level (columns of :func:`_members`), dropping the variables whose unit counts
    cannot be protected (noted); with none left the table has ``n`` alone and the list is empty."""
    every = list(variables)
    variables = list(variables)
    while True:
        parts = [[f"m{every.index(v)}", f"o{every.index(v)}"] for v in variables]
        columns = ["n", *[c for pair in parts for c in pair]]
        result = suppress_unit_counts(values[columns], hidden[columns], units, columns[1:], min_cell,
                                      total_column="n", parts=parts, hidden=extra)
        failed = sorted({every[int(c[1:])] for c in result.failed}, key=every.index)
        if not failed:
            return result, variables
        notes.append(f"{', '.join(failed)} {'is' if len(failed) == 1 else 'are'} not broken down by {level}: "
                     f"{'its' if len(failed) == 1 else 'their'} {level} counts cannot be shown without revealing counts "
                     f"below {min_cell}.")
        variables = [v for v in variables if v not in failed]


def _publish(frame: pd.DataFrame, level: str, variables: list, every: list, suppressed: UnitSuppression,
             raw: pd.DataFrame) -> UnitMissingness:
    """The heatmap and funnels of one level from its suppressed counts (``raw``: the counts unsuppressed)."""
    mask = suppressed.table.mask
    labels = list(raw.index)
    names = display_names(labels, None, level_noun(level))
    rank = rank_by_name(names)
    funnels, share_hidden = {}, []
    for var in variables:
        j = every.index(var)
        counts = pd.DataFrame({"n": raw["n"], "n_missing": raw[f"m{j}"]})
        _, hide, _ = mask_table(counts, *(mask[c].to_numpy(dtype=bool) for c in ("n", f"m{j}", f"o{j}")),
                                count_cols=[], share_cols=[], interval_cols=[])
        share_hidden.append(pd.Series(hide, index=raw.index, name=var))
        funnel = missingness_funnel(frame, var, level)
        order = funnel.table["cluster"]
        funnels[var] = publish_funnel(funnel, *(mask[c].reindex(order).to_numpy(dtype=bool)
                                                for c in ("n", f"m{j}", f"o{j}")), names, rank)
    hidden = pd.concat(share_hidden, axis=1).stack() if share_hidden else pd.Series(dtype=bool)
    heatmap = publish_heatmap(missingness_heatmap_table(frame, variables, level), hidden, variables, [], names,
                              rank, level) if variables else pd.DataFrame()
    return UnitMissingness(level=level, n_units=len(labels), variables=tuple(variables), heatmap=heatmap,
                           funnels=funnels, counts=suppressed.table,
                           count_columns={v: (f"m{every.index(v)}", f"o{every.index(v)}") for v in variables})


def missingness_by_unit(frame: pd.DataFrame, decision: HiddenCells | None, variables: Sequence[str], cluster: str,
                        higher_levels: Sequence[str], *, min_cell: int, notes: list) -> dict:
    """The heatmap and funnels by the units of each higher level, suppressed around step 1's decision.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    decision : HiddenCells or None
        Step 1's hidden cluster counts (:attr:`hmlib.steps.diagnose_tables.PublishedTables.hidden`).
    variables : sequence of str
        The variables step 1 breaks down by cluster (incomplete, overall count published, cluster counts
        protected).
    cluster : str
    higher_levels : sequence of str
        Outermost first (:func:`hmlib.stats.design.outermost_first`).
    min_cell : int
    notes : list
        Variables not broken down by a level, and why, are appended.

    Returns
    -------
    dict of str to UnitMissingness
        By level, outermost first; empty without higher levels or variables.
    """
    every = list(variables)
    if not higher_levels or not every or decision is None:
        return {}
    values, hidden = _members(decision, every)
    unit_of = frame.groupby(cluster, observed=True)[list(higher_levels)].first().reindex(values.index)
    out, inner = {}, None
    for level in reversed(list(higher_levels)):  # innermost first: an outer level is suppressed around it
        units = unit_of[level]
        extra = None
        if inner is not None:
            inner_level, inner_raw, inner_done = inner
            parent = unit_of.drop_duplicates(inner_level).set_index(inner_level)[level].reindex(inner_raw.index)
            effective = inner_done.table.mask[inner_raw.columns] & ~inner_done.public[inner_raw.columns]
            extra = exposed_by_totals(parent, inner_raw, effective, min_cell)
        suppressed, kept = _suppress_level(values, hidden, units, every, min_cell, extra, level, notes)
        raw = values[suppressed.table.mask.columns.intersection(values.columns, sort=False)].groupby(
            units.to_numpy(), observed=True).sum()
        out[level] = _publish(frame, level, kept, every, suppressed, raw)
        inner = (level, raw, suppressed)
    return {level: out[level] for level in higher_levels}


# --------------------------------------------------------------------------
# Figures, sentences and records
# --------------------------------------------------------------------------
def unit_figures(by_unit: dict, *, rows: str = "patients") -> list:
    """Each level's heatmap, then its funnel per variable; empty without higher levels.

    Caption keys start with ``level-`` (``level-heatmap-country``, ``level-funnel-country-<variable>``): the
    notebook's ``#fig-level`` names them all, and ``#fig-funnel`` still names the clusters' funnels alone.
    ``rows``: what the extract's rows are, in the plural (``"visits"`` with a visit time).
    """
    out = []
    for level, res in by_unit.items():
        if not res.variables:
            continue
        out.append(figures.missingness_heatmap(res.heatmap, cluster_noun=res.noun, key=f"level-heatmap-{level}",
                                               rows=rows))
        for var, funnel in res.funnels.items():
            out.append(figures.funnel_plot(funnel, cluster_noun=res.noun, key=f"level-funnel-{level}-{var}",
                                           rows=rows))
    return out


def unit_sentences(by_unit: dict) -> list[str]:
    """One sentence per level and variable: the units beyond the funnel's outer limits (or none)."""
    lines = []
    for res in by_unit.values():
        units = plural(res.noun)
        for var, funnel in res.funnels.items():
            outer = level_label(funnel.outer_level)
            m = len(funnel.table)
            side = [f"above them in {join_names(funnel.above)}" if funnel.above else "",
                    f"below them in {join_names(funnel.below)}" if funnel.below else ""]
            side = [s for s in side if s]
            if side:
                lines.append(f"By {res.noun}, the share missing of {var} lies beyond the {outer} exact binomial "
                             f"limits around the overall {100 * funnel.overall_rate:.1f}% in "
                             f"{len(funnel.above) + len(funnel.below)} of {m} {units}: " + "; ".join(side) + ".")
            else:
                lines.append(f"By {res.noun}, the share missing of {var} lies within the {outer} exact binomial "
                             f"limits in all {m} {units}.")
    return lines


def records(by_unit: dict) -> dict:
    """The JSON-ready ``by_unit`` field of the artifact."""
    return {"by_unit": {level: res.to_dict() for level, res in by_unit.items()}}
