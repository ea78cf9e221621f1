"""Step 2 by level: retention of the clusters and of the units above them as published, and the shift by unit.

With ``higher_levels`` (hospitals in countries, perhaps in regions too),
complete-case selection can lose whole countries, and the question it
answers can move differently in each. For each higher level, outermost first
(:func:`hmlib.stats.design.outermost_first`), step 2 publishes

- retention by unit (:func:`hmlib.stats.complete_case.retention_by_unit`):
  patients, complete cases, share retained, the unit's clusters and those
  lost, and whether the whole unit is lost;
- the estimand shift within each unit
  (:func:`hmlib.stats.complete_case.standardized_differences_by`).

Small cells across levels
    Each retention table is suppressed as the cluster table is
    (:func:`suppressed_retention`), and the tables are made consistent,
    because a unit's counts are the sums of its clusters' (or its subunits')
    counts:

    * a level's table is suppressed with the units of the level above as
      blocks (``group_columns``), whose column totals that level publishes;
      the cluster table likewise with the innermost level's units. Without
      higher levels the cluster table is suppressed exactly as before;
    * a count a level hides must not be the sum of counts the level below
      shows: where none of the unit's cells below is hidden in that column,
      the largest is hidden from the start (``hidden=``), and complementary
      suppression protects it;
    * a count a level shows must not expose the unit's hidden counts below
      (one hidden, or a hidden sum too small, as when suppression hid a
      whole block it could not protect): it is then hidden from the start
      too, and the tables are suppressed again until no such count is left;
    * step 1 publishes the cluster sizes (and, where one variable alone is
      incomplete, the dropped counts) with its own suppression, protected
      against the registry total only. A unit whose clusters' hidden sizes
      are not protected within the unit (one hidden, or too small a hidden
      sum) gets its own size hidden from the start
      (:func:`hmlib.privacy_levels.exposed_by_totals`);
    * step 1 also publishes sizes (and missing counts) by unit, suppressed
      around its cluster decision (:mod:`hmlib.steps.diagnose_units`): a unit
      size it hides, and a unit's dropped count that is the missing count of
      its one incomplete variable when step 1 hides that, are hidden from the
      start too (:func:`retention_hidden_by_step1` with ``level``).

    As in :mod:`hmlib.privacy`, this prevents recovery by subtraction along
    each published relation; it does not solve the full linear-programming
    problem.

Small units in the shift table
    A unit's shift compares its complete cases with all its patients; with
    fewer than ``min_cell`` complete cases, or from 1 to ``min_cell - 1``
    dropped patients, the means describe (or their difference gives back) a
    handful of patients, so the unit's rows are suppressed
    (:func:`suppressed_shift`). So are the rows of a unit whose counts the
    retention table hides as complements: the shares among its complete
    cases are fractions over its number of complete cases and would give it
    back. A unit without a complete case has no complete-case values and
    no SMD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.privacy import SUPPRESSED_LABEL, suppress_counts
from hmlib.privacy_levels import exposed_by_totals
from hmlib.stats.complete_case import retention_by_unit, standardized_differences_by
from hmlib.stats.design import outermost_first
from hmlib.steps.disclosure import hidden_counts
from hmlib.wording import join_names, level_noun, plural

__all__ = ["LevelCheck", "LevelRecord", "level_noun", "suppressed_retention", "retention_hidden_by_step1",
           "suppressed_shift", "published_retention", "check_levels"]

_COUNTS = ["n_all", "n_complete", "n_dropped"]
_SHIFT_VALUES = ["all_patients", "complete_cases", "smd"]


def suppressed_retention(table: pd.DataFrame, min_cell: int, hidden: pd.DataFrame | None = None,
                         group_columns=None) -> pd.DataFrame:
    """A retention table as published: counts below ``min_cell`` suppressed.

    Complementary suppression (:func:`hmlib.privacy.suppress_counts`): no
    hidden count can be recovered from ``n_all = n_complete + n_dropped`` or
    from a column total, and the shares derived from a hidden count are
    hidden with it.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_cluster` or
        :func:`~hmlib.stats.complete_case.retention_by_unit`.
    min_cell : int
    hidden : pandas.DataFrame of bool, optional
        Cells hidden from the start (``n_all``, ``n_complete``,
        ``n_dropped``): step 1's decision (:mod:`hmlib.steps.disclosure`), or
        what a level above hides (module docstring).
    group_columns : sequence of str, optional
        Rows of one unit of the level above: their column totals are
        published (in that level's table).

    Returns
    -------
    pandas.DataFrame
        The same columns; suppressed cells hold ``"suppressed"``.
    """
    safe = suppress_counts(
        table, ["n_complete", "n_dropped"], min_cell, total_column="n_all",
        parts=[["n_complete", "n_dropped"]],
        derived_columns={"retained": ["n_complete", "n_dropped"], "share_after": ["n_complete"],
                         "share_before": ["n_all"]},
        hidden=hidden, group_columns=group_columns,
    )
    return safe.display


def retention_hidden_by_step1(registry, retention: pd.DataFrame, level: str | None = None) -> pd.DataFrame:
    """Step 1's hidden cells for a retention table: a cluster (unit) size step 1 hides, and the dropped count of a
    cluster (unit) where one variable alone is incomplete (it is that variable's missing count) when step 1 hides
    it.

    Parameters
    ----------
    registry : hmlib.data.Registry
    retention : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_cluster`, or with ``level``
        :func:`~hmlib.stats.complete_case.retention_by_unit` of that level.
    level : str, optional
        A higher level: step 1's counts by its units (:mod:`hmlib.steps.diagnose_units`).

    Returns
    -------
    pandas.DataFrame of bool
        ``n_all``, ``n_dropped``; the index of ``retention``.
    """
    p, frame = registry.params, registry.frame
    hidden = hidden_counts(registry)
    group, label_column = (p.cluster, "cluster") if level is None else (level, level)
    columns = [p.outcome, *p.predictors]
    incomplete = frame[columns].isna().groupby(frame[group].to_numpy()).any()
    dropped = []
    for label in retention[label_column]:
        only = [v for v in columns if bool(incomplete.loc[label, v])]
        dropped.append(len(only) == 1 and bool(hidden.count_hidden([label], only[0], level)[0]))
    return pd.DataFrame({"n_all": hidden.size_hidden(retention[label_column], level), "n_dropped": dropped},
                        index=retention.index)


def _below(table: pd.DataFrame, parent: pd.Series, shown_above: pd.DataFrame, given: pd.DataFrame,
           min_cell: int) -> pd.DataFrame:
    """Cells to hide from the start in a table below a level: for each count the level hides in a unit, the
    largest of the unit's counts below, unless one of them is hidden already (small, or given)."""
    given = given.reindex(columns=_COUNTS, fill_value=False).astype(bool)
    for column in _COUNTS:
        values = table[column].to_numpy(dtype=float)
        hidden_now = given[column].to_numpy() | ((values >= 1) & (values < min_cell))
        for unit in shown_above.index[shown_above[column] == SUPPRESSED_LABEL]:
            rows = np.flatnonzero((parent == unit).to_numpy())
            if len(rows) and not hidden_now[rows].any():
                largest = rows[np.argmax(values[rows])]
                if values[largest] >= 1:
                    given.iloc[largest, given.columns.get_loc(column)] = True
    return given


def published_retention(retention: pd.DataFrame, unit_tables: dict, cluster_units: pd.DataFrame, min_cell: int,
                        hidden: pd.DataFrame | None = None,
                        unit_hidden: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """The cluster retention table and each level's as published, consistent across levels (module docstring).

    Parameters
    ----------
    retention : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_cluster`.
    unit_tables : dict
        ``{level: retention_by_unit(...)}``, outermost first; empty without higher levels.
    cluster_units : pandas.DataFrame
        The unit of each level (one column per level) for each row of ``retention`` (same index).
    min_cell : int
    hidden : pandas.DataFrame of bool, optional
        Step 1's cells of ``retention`` (:func:`retention_hidden_by_step1`).
    unit_hidden : dict, optional
        ``{level: step 1's cells of unit_tables[level]}`` (:func:`retention_hidden_by_step1` with ``level``),
        hidden from the start.

    Returns
    -------
    (pandas.DataFrame, dict)
        The cluster table and ``{level: table}``, suppressed cells ``"suppressed"``. Without higher
        levels the cluster table is :func:`suppressed_retention` of ``retention`` and ``hidden``.
    """
    levels = list(unit_tables)
    if not levels:
        return suppressed_retention(retention, min_cell, hidden=hidden), {}
    cluster_hidden = (hidden if hidden is not None
                      else pd.DataFrame(False, index=retention.index, columns=["n_all", "n_dropped"]))
    exposed = {level: pd.DataFrame(False, index=unit_tables[level][level].to_numpy(), columns=_COUNTS)
               for level in levels}
    for level, given in (unit_hidden or {}).items():  # step 1's cells by unit: hidden from the start
        exposed[level] |= given.reindex(columns=_COUNTS, fill_value=False).set_axis(exposed[level].index)
    while True:  # each pass hides more of the levels above, so it ends
        shown, displays = _publish_once(retention, unit_tables, cluster_units, min_cell, cluster_hidden, exposed)
        rows = [(unit_tables[level], unit_tables[level][level], displays[level]) for level in levels]
        rows.append((retention, retention["cluster"], shown))
        more = False
        for k, level in enumerate(levels):
            child, child_labels, child_shown = rows[k + 1]
            parent_of = cluster_units.assign(_label=retention["cluster"].to_numpy()).drop_duplicates(
                levels[k + 1] if k + 1 < len(levels) else "_label")
            parent_of = parent_of.set_index(levels[k + 1] if k + 1 < len(levels) else "_label")[level]
            found = _exposed_totals(child, parent_of.reindex(child_labels.to_numpy()).to_numpy(), child_shown,
                                    displays[level].set_axis(unit_tables[level][level].to_numpy()), min_cell)
            if (found & ~exposed[level]).any().any():
                exposed[level] |= found
                more = True
        if not more:
            return shown, displays


def _exposed_totals(child: pd.DataFrame, parents: np.ndarray, child_shown: pd.DataFrame, shown_above: pd.DataFrame,
                    min_cell: int) -> pd.DataFrame:
    """Counts a level shows whose unit's hidden counts below are not protected by them (one hidden, or too small
    a hidden sum: e.g. a block that suppression hid entirely because it could not protect it)."""
    hidden = (child_shown[_COUNTS] == SUPPRESSED_LABEL).reset_index(drop=True)
    found = exposed_by_totals(pd.Series(parents), child[_COUNTS].reset_index(drop=True), hidden, min_cell)
    return found.reindex(shown_above.index, fill_value=False) & (shown_above[_COUNTS] != SUPPRESSED_LABEL)


def _publish_once(retention, unit_tables, cluster_units, min_cell, cluster_hidden, exposed):
    """One pass of :func:`published_retention`: the levels outermost first, then the clusters, each with the
    cells hidden from the start (step 1's, the level above's, and ``exposed`` totals)."""
    levels = list(unit_tables)
    displays, above = {}, None
    for k, level in enumerate(levels):
        table = unit_tables[level]
        labels = table[level].to_numpy()
        given = exposed_by_totals(cluster_units[level], retention, cluster_hidden, min_cell)
        given = given.reindex(columns=_COUNTS, fill_value=False).reindex(labels, fill_value=False)
        given = (given | exposed[level].reindex(labels, fill_value=False)).set_axis(table.index)
        group = None
        if k:
            parent = cluster_units.drop_duplicates(level).set_index(level)[levels[k - 1]].reindex(labels)
            given = _below(table, parent, above, given, min_cell)
            table = table.assign(_unit=parent.to_numpy())
            group = ["_unit"]
        displays[level] = suppressed_retention(table, min_cell, hidden=given, group_columns=group).drop(
            columns=["_unit"], errors="ignore")
        above = displays[level].set_axis(labels)
    innermost = cluster_units[levels[-1]]
    given = _below(retention, innermost, above, cluster_hidden, min_cell)
    shown = suppressed_retention(retention.assign(_unit=innermost.to_numpy()), min_cell, hidden=given,
                                 group_columns=["_unit"])
    return shown.drop(columns=["_unit"]), displays


def suppressed_shift(shift: pd.DataFrame, retention: pd.DataFrame, level: str, min_cell: int,
                     retention_display: pd.DataFrame | None = None) -> pd.DataFrame:
    """The shift table by unit as published (module docstring).

    Parameters
    ----------
    shift : pandas.DataFrame
        :func:`hmlib.stats.complete_case.standardized_differences_by` with ``by=level``.
    retention : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_unit` of the same level (its counts decide).
    level : str
    min_cell : int
    retention_display : pandas.DataFrame, optional
        The published ``retention`` (same rows): a unit with a hidden count there is suppressed here too.

    Returns
    -------
    pandas.DataFrame
        The same rows; ``all_patients``, ``complete_cases`` and ``smd`` hold ``"suppressed"`` for a unit
        with fewer than ``min_cell`` complete cases, 1 to ``min_cell - 1`` dropped patients, or a count
        hidden in ``retention_display``; a unit without a complete case has no ``complete_cases`` value
        and no ``smd`` (NaN).
    """
    counts = retention.set_index(level)
    n_complete = shift[level].map(counts["n_complete"]).to_numpy()
    n_dropped = shift[level].map(counts["n_dropped"]).to_numpy()
    lost = n_complete == 0
    small = ((n_complete >= 1) & (n_complete < min_cell)) | ((n_dropped >= 1) & (n_dropped < min_cell))
    if retention_display is not None:
        hidden = (retention_display[_COUNTS] == SUPPRESSED_LABEL).any(axis=1).set_axis(retention[level].to_numpy())
        small |= shift[level].map(hidden).fillna(False).to_numpy(dtype=bool)
    shown = shift.copy()
    shown.loc[lost, ["complete_cases", "smd"]] = np.nan
    shown[_SHIFT_VALUES] = shown[_SHIFT_VALUES].astype(object)
    shown.loc[small, _SHIFT_VALUES] = SUPPRESSED_LABEL
    return shown


@dataclass(frozen=True)
class LevelRecord(Record):
    """One higher level in step 2's record (``by_level`` of :class:`~hmlib.steps.complete_case.CompleteCaseArtifact`).

    Attributes
    ----------
    level : str
        The column of the level.
    n_units : int
    units_lost : tuple of str
        Units without a complete case.
    retention : list
        The published retention table by unit (free JSON, only displayed).
    shift : list
        The published shift table by unit (free JSON, only displayed).
    """

    level: str
    n_units: int
    units_lost: tuple[str, ...]
    retention: list
    shift: list


@dataclass(frozen=True, eq=False)
class LevelCheck:
    """Step 2 for one level above the cluster. Aggregated only: no patient-level rows.

    Attributes
    ----------
    level : str
        The column of the level (``country``).
    retention : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_unit` (not suppressed).
    retention_display : pandas.DataFrame
        As published (:func:`published_retention`).
    shift : pandas.DataFrame
        :func:`hmlib.stats.complete_case.standardized_differences_by` the level (not suppressed).
    shift_display : pandas.DataFrame
        As published (:func:`suppressed_shift`).
    min_cell : int
    """

    level: str
    retention: pd.DataFrame
    retention_display: pd.DataFrame
    shift: pd.DataFrame
    shift_display: pd.DataFrame
    min_cell: int

    @property
    def noun(self) -> str:
        """The word for one unit (:func:`level_noun`)."""
        return level_noun(self.level)

    @property
    def units_lost(self) -> list:
        """Labels of the units without a complete case."""
        return self.retention.loc[self.retention["lost"], self.level].tolist()

    def largest_shift(self, variables) -> pd.Series | None:
        """The published row of ``variables`` with the largest absolute SMD over the units (None when none is
        shown)."""
        rows = self.shift_display.loc[self.shift_display["variable"].isin(list(variables))]
        smd = pd.to_numeric(rows["smd"].where(rows["smd"] != SUPPRESSED_LABEL), errors="coerce").abs()
        if smd.notna().sum() == 0:
            return None
        return rows.loc[smd.idxmax()]

    def sentences(self, outcome: str, focus: str) -> list:
        """The units lost and the unit whose outcome or focus shifts most, with their numbers."""
        plural_noun, out = plural(self.noun), []
        lost, n_units = self.units_lost, len(self.retention)
        if lost:
            out.append(f"{len(lost)} of {n_units} {plural_noun} have no complete case: {join_names(lost)}; the "
                       "complete-case analysis says nothing about them.")
        row = self.largest_shift([outcome, focus])
        if row is not None and round(abs(float(row["smd"])), 2) == 0:
            out.append(f"Within the {plural_noun} shown, neither {outcome} nor {focus} shifts among complete cases "
                       "(every SMD rounds to 0.00).")
        elif row is not None:
            what = row["variable"] + (f" = {row['level']}" if row["level"] else "")
            if row["summary"] == "share":
                values = f"{row['complete_cases']:.1%} among its complete cases vs {row['all_patients']:.1%}"
            else:
                values = f"{row['complete_cases']:.3g} among its complete cases vs {row['all_patients']:.3g}"
            out.append(f"Within {plural_noun}, {what} shifts most in {self.noun} {row[self.level]}: "
                       f"{values} in all its patients (SMD {row['smd']:+.2f}).")
        return out

    def to_dict(self) -> dict:
        """The published tables as records (the fields of :class:`LevelRecord`; JSON-ready after
        :func:`hmlib.results.to_jsonable`)."""
        def records(table):
            return table.assign(**{self.level: table[self.level].astype(str)}).to_dict(orient="records")

        return {"level": self.level, "n_units": int(len(self.retention)),
                "units_lost": [str(u) for u in self.units_lost],
                "retention": records(self.retention_display.drop(columns=["lost"])),
                "shift": records(self.shift_display)}


def check_levels(registry, complete: np.ndarray, columns, retention: pd.DataFrame,
                 hidden: pd.DataFrame | None, binary_outcome: str | None) -> tuple[pd.DataFrame, tuple]:
    """Step 2's tables for every level above the cluster, and the cluster retention table as published.

    Parameters
    ----------
    registry : hmlib.data.Registry
    complete : array of bool
        Complete-case mask over the registry's rows.
    columns : sequence of str
        The model variables (outcome first).
    retention : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_cluster`.
    hidden : pandas.DataFrame of bool or None
        Step 1's cells of ``retention`` (:func:`retention_hidden_by_step1`).
    binary_outcome : str or None

    Returns
    -------
    (pandas.DataFrame, tuple of LevelCheck)
        The published cluster retention table, and one check per level, outermost first (empty without
        higher levels; the cluster table is then suppressed exactly as without this module).
    """
    p, frame = registry.params, registry.frame
    min_cell = int(p.privacy.min_cell)
    levels = outermost_first(frame, p.higher_levels)
    unit_tables = {level: retention_by_unit(frame, level, p.cluster, complete) for level in levels}
    cluster_units = (frame.groupby(p.cluster, observed=True)[levels].first().reindex(retention["cluster"])
                     .set_axis(retention.index) if levels else pd.DataFrame(index=retention.index))
    unit_hidden = ({level: retention_hidden_by_step1(registry, unit_tables[level], level) for level in levels}
                   if hidden is not None else None)
    cluster_display, displays = published_retention(retention, unit_tables, cluster_units, min_cell, hidden,
                                                    unit_hidden)
    checks = []
    for level in levels:
        shift = standardized_differences_by(frame, complete, columns, registry.kinds, level,
                                            binary_outcome=binary_outcome)
        checks.append(LevelCheck(level=level, retention=unit_tables[level], retention_display=displays[level],
                                 shift=shift, shift_display=suppressed_shift(shift, unit_tables[level], level, min_cell,
                                                                displays[level]),
                                 min_cell=min_cell))
    return cluster_display, tuple(checks)
