"""Missing rates by visit and over calendar time, with Wilson intervals and a change-point screen.

:func:`missingness_by_visit` gives, per variable and scheduled visit (a time
value, or the visit's number within its patient), the share missing, split
into missing at a visit that was followed by an observed one (intermittent)
and missing in the trailing run (after dropout). :func:`missingness_over_calendar_time`
gives the share missing per calendar period (a month, quarter or year of a
date column; equal-width bins of a numeric one) and scans it for one
change in rate (:mod:`~hmlib.stats.longitudinal.change_point`), such as the
end of a pilot phase with poorer documentation. Its p-value permutes whole
patients in calendar time (each patient's first period exchanged with
another's, its visits and their missing values kept together), so that
missingness clustered in patients or sites, and the follow-up structure,
do not pass for a calendar effect (a row-level permutation found a change in
8 of 10 simulated registries without one). By default the visits after
a patient's dropout are left out of the calendar rates: that a patient has
left the study says nothing about how visits were documented in that month,
and dropout accumulates with follow-up, which would otherwise show as a
drift in calendar time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, ParamsError
from hmlib.stats.longitudinal.change_point import ChangePointResult, binomial_change_point
from hmlib.stats.longitudinal.visits import (blank_suppressed, check_min_cell, is_datetime, mark_small_cells,
                                             prepare_visits, trailing_run, visit_key)
from hmlib.stats.missingness.counts import check_level
from hmlib.stats.missingness.rates import wilson_interval

__all__ = ["VisitRatesResult", "missingness_by_visit", "CalendarRatesResult", "missingness_over_calendar_time"]

_RATE_COLUMNS = ["share_missing", "ci_lower", "ci_upper"]


@dataclass(frozen=True)
class VisitRatesResult:
    """Share missing per variable and visit.

    Attributes
    ----------
    table : pandas.DataFrame
        ``variable, visit, n_patients, n_missing, n_intermittent, n_after_dropout,
        n_observed, share_missing, ci_lower, ci_upper, suppressed``: ``visit``
        the time value (``by="time"``) or the visit number from 0
        (``by="order"``); ``n_after_dropout`` counts missing values in the
        patient's trailing run (never-observed patients included),
        ``n_intermittent`` the others. ``suppressed`` where a count of
        patients is from 1 to ``min_cell - 1``.
    by : str
    level : float
    n_patients : int
    n_duplicate_rows : int
    min_cell : int
    """

    table: pd.DataFrame
    by: str
    level: float
    n_patients: int
    n_duplicate_rows: int
    min_cell: int

    def to_frame(self) -> pd.DataFrame:
        """The table with counts, shares and limits of suppressed rows blanked (NaN)."""
        return blank_suppressed(self.table, ["n_patients", "n_missing", "n_intermittent", "n_after_dropout",
                                             "n_observed", *_RATE_COLUMNS])


def missingness_by_visit(frame: pd.DataFrame, variables: Sequence[str], patient: str, time: str, *,
                         by: str = "time", level: float = 0.95, min_cell: int = 11) -> VisitRatesResult:
    """Share of each variable missing at each visit, intermittent and after dropout.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, any order (not modified). Missed
        visits must be rows (a full grid of scheduled visits) to be counted.
    variables : sequence of str
    patient, time : str
        Patient column; visit time (numeric, or datetime with ``by="order"``).
    by : {"time", "order"}
        Group visits by their time value (scheduled weeks) or by their number
        within the patient (irregular times, dates).
    level : float, default 0.95
        Level of the Wilson intervals.
    min_cell : int, default 11

    Returns
    -------
    VisitRatesResult

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`; dates with ``by="time"``.
    ParamsError
        Unknown ``by``; bad ``level`` or ``min_cell``.
    """
    level = check_level(level)
    min_cell = check_min_cell(min_cell)
    variables = list(variables)
    visits = prepare_visits(frame, variables, patient, time, where="missingness_by_visit")
    keys, position = np.unique(visit_key(visits, by, time, "missingness_by_visit"), return_inverse=True)
    n = np.bincount(position, minlength=keys.size)
    parts = []
    for v in variables:
        missing = visits.missing[v]
        after = trailing_run(missing, visits.starts) & missing
        k = np.bincount(position, weights=missing, minlength=keys.size).astype(np.int64)
        k_after = np.bincount(position, weights=after, minlength=keys.size).astype(np.int64)
        lower, upper = wilson_interval(k, n, level)
        parts.append(pd.DataFrame({"variable": v, "visit": keys, "n_patients": n, "n_missing": k,
                                   "n_intermittent": k - k_after, "n_after_dropout": k_after,
                                   "n_observed": n - k, "share_missing": k / n, "ci_lower": lower,
                                   "ci_upper": upper}))
    table = mark_small_cells(pd.concat(parts, ignore_index=True),
                             ["n_patients", "n_missing", "n_intermittent", "n_after_dropout", "n_observed"],
                             min_cell)
    return VisitRatesResult(table=table, by=by, level=level, n_patients=visits.n_patients,
                            n_duplicate_rows=visits.n_duplicate_rows, min_cell=min_cell)


@dataclass(frozen=True)
class CalendarRatesResult:
    """Share missing per calendar period, and the one most likely change in it.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per period from the first to the last (empty periods
        included): ``period`` (start: a ``pandas.Period`` for dates, the bin's
        lower edge for numbers), ``n_visits, n_patients, n_missing,
        n_patients_missing, share_missing, ci_lower, ci_upper, suppressed``
        (Wilson intervals over visits; ``suppressed`` where a count of
        patients is from 1 to ``min_cell - 1``).
    change_point : ChangePointResult
        The scan over the periods (:func:`~hmlib.stats.longitudinal.change_point.binomial_change_point`).
    last_period_before_change, first_period_after_change : object
        Labels of the periods either side of the change (None without one).
    variable : str
    include_after_dropout : bool
    n_excluded_after_dropout : int
        Visits left out because they lie in the patient's trailing run of missing values.
    n_duplicate_rows : int
    level : float
    min_cell : int
    """

    table: pd.DataFrame
    change_point: ChangePointResult
    last_period_before_change: object
    first_period_after_change: object
    variable: str
    include_after_dropout: bool
    n_excluded_after_dropout: int
    n_duplicate_rows: int
    level: float
    min_cell: int

    def to_frame(self) -> pd.DataFrame:
        """The table with counts, shares and limits of suppressed rows blanked (NaN)."""
        return blank_suppressed(self.table, ["n_visits", "n_patients", "n_missing", "n_patients_missing",
                                             *_RATE_COLUMNS])


def _periods(values: pd.Series, freq: str | None, width: float | None, where: str):
    """Period index of each value and the label of every period from the first to the last."""
    if is_datetime(values):
        if width is not None:
            raise ParamsError(f"{where}: width is for a numeric calendar time; give freq for dates.")
        period = values.dt.tz_localize(None).dt.to_period(freq or "M") if values.dt.tz is not None \
            else values.dt.to_period(freq or "M")
        labels = pd.period_range(period.min(), period.max(), freq=period.dt.freq)
        return np.asarray((period - period.min()).apply(lambda off: off.n), dtype=np.int64), list(labels)
    if freq is not None or width is None or not width > 0:
        raise ParamsError(f"{where}: a numeric calendar time needs width > 0 (the length of a period in its "
                          "units) and no freq.")
    x = values.to_numpy(dtype=float)
    index = np.floor((x - x.min()) / width).astype(np.int64)
    return index, [float(x.min() + i * width) for i in range(int(index.max()) + 1)]


def _patient_shift_counts(index: np.ndarray, patient: np.ndarray, missing: np.ndarray, n_permutations: int,
                          seed) -> tuple[np.ndarray, np.ndarray]:
    """Period counts under the null "calendar time does not matter", by permuting patients' start periods.

    Each patient keeps its own visits, their spacing in periods and their
    missing values; only the period of its first visit is exchanged with
    another patient's. Visits of one patient stay together (and with their
    site), so the null distribution carries the within-patient correlation
    and the follow-up structure (late periods hold late visits).
    """
    if isinstance(n_permutations, bool) or int(n_permutations) < 1:
        raise ParamsError(f"n_permutations must be at least 1, got {n_permutations!r}.")
    codes, pos = np.unique(patient, return_inverse=True)
    first = np.full(codes.size, np.iinfo(np.int64).max)
    np.minimum.at(first, pos, index)
    delta = index - first[pos]
    rng = np.random.default_rng(seed)
    size = int(first.max() + delta.max() + 1)
    k_null = np.empty((int(n_permutations), size))
    n_null = np.empty((int(n_permutations), size))
    for b in range(int(n_permutations)):
        shifted = rng.permutation(first)[pos] + delta
        n_null[b] = np.bincount(shifted, minlength=size)
        k_null[b] = np.bincount(shifted, weights=missing, minlength=size)
    return k_null, n_null


def missingness_over_calendar_time(frame: pd.DataFrame, variable: str, patient: str, time: str, *,
                                   calendar: str | None = None, freq: str | None = None,
                                   width: float | None = None, include_after_dropout: bool = False,
                                   level: float = 0.95, min_cell: int = 11, n_permutations: int = 999,
                                   min_visits: int = 20, seed=None) -> CalendarRatesResult:
    """Share of a variable missing per calendar period, scanned for one change in rate.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, any order (not modified).
    variable, patient, time : str
        The variable; the patient column; the visit time (orders the visits within a patient).
    calendar : str, optional
        Calendar time of each visit (a date, or a number such as study day);
        default ``time``.
    freq : str, optional
        Period of a date column (pandas period alias: ``"M"`` month, default;
        ``"Q"`` quarter; ``"Y"`` year).
    width : float, optional
        Length of a period of a numeric calendar time, in its units (required for numbers).
    include_after_dropout : bool, default False
        Count visits in a patient's trailing run of missing values (see the module docstring).
    level : float, default 0.95
    min_cell : int, default 11
    n_permutations : int, default 999
    min_visits : int, default 20
        Fewest visits on either side of a change point.
    seed : int, numpy.random.Generator or None
        For the permutations.

    Returns
    -------
    CalendarRatesResult

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`; no visits left.
    ParamsError
        ``freq`` / ``width`` not matching the calendar column; bad ``level`` or ``min_cell``.
    """
    level = check_level(level)
    min_cell = check_min_cell(min_cell)
    where = "missingness_over_calendar_time"
    calendar = calendar or time
    visits = prepare_visits(frame, [variable], patient, time, where=where)
    if calendar != time:
        prepare_visits(frame, [], patient, calendar, where=where)  # the same checks for the calendar column
    missing = visits.missing[variable]
    keep = np.ones(missing.size, dtype=bool) if include_after_dropout else ~trailing_run(missing, visits.starts)
    if not keep.any():
        raise DataError(f"{where}: {variable} is never observed, so every visit lies after dropout.")
    values = frame[calendar].iloc[visits.rows[keep]].reset_index(drop=True)
    index, labels = _periods(values, freq, width, where)
    m, pat = missing[keep], visits.patient[keep]
    size = len(labels)
    n = np.bincount(index, minlength=size)
    k = np.bincount(index, weights=m, minlength=size).astype(np.int64)
    pairs = pd.DataFrame({"period": index, "patient": pat, "missing": m})
    per_patient = pairs.groupby(["period", "patient"])["missing"].any().groupby(level=0)
    n_patients = per_patient.size().reindex(range(size), fill_value=0).to_numpy()
    n_patients_missing = per_patient.sum().reindex(range(size), fill_value=0).to_numpy().astype(np.int64)
    lower, upper = wilson_interval(k, n, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
    table = mark_small_cells(pd.DataFrame({
        "period": labels, "n_visits": n, "n_patients": n_patients, "n_missing": k,
        "n_patients_missing": n_patients_missing, "share_missing": share, "ci_lower": lower, "ci_upper": upper}),
        ["n_patients", "n_patients_missing"], min_cell)
    null = _patient_shift_counts(index, pat, m, n_permutations, seed)
    change = binomial_change_point(k, n, min_visits=min_visits, null_counts=null)
    before = after = None
    if change.split is not None:
        before = labels[change.split]
        later = np.flatnonzero(n[change.split + 1:] > 0)
        after = labels[change.split + 1 + int(later[0])] if later.size else None
    return CalendarRatesResult(table=table, change_point=change, last_period_before_change=before,
                               first_period_after_change=after, variable=variable,
                               include_after_dropout=bool(include_after_dropout),
                               n_excluded_after_dropout=int((~keep).sum()), n_duplicate_rows=visits.n_duplicate_rows,
                               level=level, min_cell=min_cell)
