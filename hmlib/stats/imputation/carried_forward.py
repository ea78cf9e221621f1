"""Last observation carried forward (LOCF): the single imputation clinical teams often use, as a named comparator.

For repeated measures (visits within patients) LOCF fills a missing value
of a variable with the patient's most recent recorded value of that
variable at an earlier visit (Molenberghs & Kenward 2007, sec. 3.3). It is
deterministic: one completed data set, no between-imputation variance, so
an analysis of it treats carried values as measured. It is shown beside
multiple imputation so that a report can say what it does; it is not a
recommended method (National Research Council 2010, recommendation 10:
single imputation such as LOCF should not be used as the primary approach
unless its assumptions are scientifically justified). Under dropout it
assumes the value stays where it was last seen, which is neither MAR nor a
stated MNAR model, and it understates the variance.

Rules (those of :func:`hmlib.stats.longitudinal.visits.prepare_visits`)
    - Rows are put in time order within each patient here; the input's
      order never matters, and the completed frame has the input's rows in
      the input's order and index. The input frame is never modified.
    - ``time`` is numeric or datetime, with a value on every row, and varies
      within at least one patient (else DataError).
    - Duplicate ``(patient, time)`` rows are one visit (DataWarning, counted
      in ``n_duplicate_rows``). The visit's value of a variable is its first
      recorded value in the input's row order; a row of that visit that
      lacks the value is filled with it (counted as *filled within the
      visit*, not as carried), and later missing visits carry it.
    - Recorded values are never changed, not even when two rows of one
      visit disagree.

Left missing
    A value with no recorded value of the same variable at or before its
    visit (the patient's first visits, or a patient who never has the
    variable) stays missing: nothing is carried *backward*. An analysis of
    the completed frame then drops those rows, as complete-case analysis
    would; :attr:`CarriedForward.counts` says how many.

References
----------
Molenberghs G, Kenward MG (2007). Missing Data in Clinical Studies. Wiley, sec. 3.3.
National Research Council (2010). The Prevention and Treatment of Missing Data
in Clinical Trials. National Academies Press, recommendation 10.
Lachin JM (2016). Fallacies of last observation carried forward analyses.
Clin Trials 13(2):161-168.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError
from hmlib.stats.longitudinal.visits import prepare_visits

__all__ = ["CarriedForward", "last_observation_carried_forward"]


@dataclass(frozen=True, eq=False)
class CarriedForward:
    """A frame completed by last observation carried forward, with what was carried and what was left missing.

    Attributes
    ----------
    completed : pandas.DataFrame
        A copy of the input (same rows, order and index) with the columns filled where an earlier
        (or same-visit) recorded value exists; other cells still missing.
    carried : pandas.DataFrame of bool
        Per column, the cells filled (from an earlier visit or from a duplicate row of the same visit).
    left_missing : pandas.DataFrame of bool
        Per column, the missing cells that stayed missing (no recorded value at or before their visit).
    counts : pandas.DataFrame
        One row per column: ``variable, n_missing, n_carried, n_filled_within_visit, n_left_missing,
        median_time_carried`` (the median time, in the time column's units, or days for dates,
        between a carried value's visit and the visit it was recorded at; NaN when nothing was carried).
    columns : tuple of str
    cluster, time : str
    n_duplicate_rows : int
        Rows collapsed as duplicates of a ``(cluster, time)``.
    """

    completed: pd.DataFrame
    carried: pd.DataFrame
    left_missing: pd.DataFrame
    counts: pd.DataFrame
    columns: tuple
    cluster: str
    time: str
    n_duplicate_rows: int

    def to_frame(self) -> pd.DataFrame:
        """The counts table (aggregates only)."""
        return self.counts.copy()


def _check_roles(frame: pd.DataFrame, columns: list, cluster: str, time: str) -> None:
    """DataError for an empty list, repeated names, or the cluster or time among the columns."""
    if not columns:
        raise DataError("last_observation_carried_forward needs at least one column to carry forward.")
    if len(set(columns)) != len(columns):
        raise DataError(f"columns {columns} name a column twice.")
    if cluster == time:
        raise DataError(f"the cluster and the time cannot be the same column ({cluster!r}).")
    clash = [c for c in columns if c in (cluster, time)]
    if clash:
        raise DataError(f"{clash} cannot be carried forward: they are the cluster or the time column.")
    if isinstance(frame, pd.DataFrame) and not frame.columns.is_unique:
        raise DataError("the data have repeated column names; rename them first.")


def _source_rows(visits, observed_rows: np.ndarray) -> np.ndarray:
    """Per visit, the input row (``iloc``) of its first recorded value of one variable (-1 where none)."""
    source = np.full(visits.n_visits, -1, dtype=np.int64)
    recorded = np.flatnonzero(observed_rows)          # ascending: input order
    visit_of = visits.row_visit[recorded]
    # reversed assignment: the first recorded row of a visit is written last and wins
    source[visit_of[::-1]] = recorded[::-1]
    return source


def _last_recorded_visit(missing: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per visit (sorted by patient and time), the latest visit at or before it, same patient, that records
    the variable (-1 where none)."""
    index = np.where(~missing, np.arange(missing.size), -1)
    latest = np.maximum.accumulate(index) if index.size else index
    first_of_patient = np.repeat(starts[:-1], np.diff(starts))
    return np.where(latest >= first_of_patient, latest, -1)


def last_observation_carried_forward(frame: pd.DataFrame, *, columns: Sequence[str], cluster: str,
                                     time: str) -> CarriedForward:
    """Fill each missing value with the patient's last recorded value of the same variable (LOCF).

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, in any order (never modified).
    columns : sequence of str
        Variables to carry forward (any dtype).
    cluster : str
        The patient column.
    time : str
        Visit time, numeric or datetime.

    Returns
    -------
    CarriedForward

    Raises
    ------
    DataError
        Columns absent or repeated; the cluster or time among the columns;
        rows without cluster or time; a time that is neither numeric nor
        datetime, or that varies within no patient (as
        :func:`~hmlib.stats.longitudinal.visits.prepare_visits`).

    Warns
    -----
    DataWarning
        Duplicate ``(cluster, time)`` rows (one visit; module docstring).

    See Also
    --------
    hmlib.stats.imputation.random_slopes.impute_random_slopes : multiple imputation with random slopes.
    hmlib.stats.longitudinal.prepare_visits : the shared rules for visits.

    Examples
    --------
    >>> frame = pd.DataFrame({"patient": [1, 1, 1, 2, 2], "week": [8, 0, 4, 0, 4],
    ...                       "hb": [np.nan, 12.0, np.nan, np.nan, 11.0]})
    >>> res = last_observation_carried_forward(frame, columns=["hb"], cluster="patient", time="week")
    >>> res.completed["hb"].tolist()
    [12.0, 12.0, 12.0, nan, 11.0]
    >>> res.counts[["n_carried", "n_left_missing"]].values.tolist()
    [[2, 1]]
    """
    columns = list(columns)
    _check_roles(frame, columns, cluster, time)
    visits = prepare_visits(frame, columns, cluster, time, where="last_observation_carried_forward")
    completed = frame.copy()
    carried, left, rows = {}, {}, []
    visit = visits.row_visit
    for col in columns:
        observed_rows = frame[col].notna().to_numpy()
        source_of_visit = _source_rows(visits, observed_rows)
        last = _last_recorded_visit(visits.missing[col], visits.starts)
        source_visit = last[visit]
        fill = ~observed_rows & (source_visit >= 0)
        fill_rows = np.flatnonzero(fill)
        source_rows = source_of_visit[source_visit[fill_rows]]
        if fill_rows.size:
            position = completed.columns.get_loc(col)
            completed.iloc[fill_rows, position] = frame[col].iloc[source_rows].to_numpy()
        within = fill & (source_visit == visit)
        gaps = visits.time[visit[fill & ~within]] - visits.time[source_visit[fill & ~within]]
        carried[col] = fill
        left[col] = ~observed_rows & ~fill
        rows.append({"variable": col, "n_missing": int((~observed_rows).sum()),
                     "n_carried": int((fill & ~within).sum()), "n_filled_within_visit": int(within.sum()),
                     "n_left_missing": int(left[col].sum()),
                     "median_time_carried": float(np.median(gaps)) if gaps.size else float("nan")})
    return CarriedForward(completed=completed, carried=pd.DataFrame(carried, index=frame.index),
                          left_missing=pd.DataFrame(left, index=frame.index), counts=pd.DataFrame(rows),
                          columns=tuple(columns), cluster=cluster, time=time,
                          n_duplicate_rows=visits.n_duplicate_rows)
