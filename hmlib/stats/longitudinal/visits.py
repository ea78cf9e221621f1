"""Visits within patients, checked and put in time order: the input every longitudinal diagnostic shares.

:func:`prepare_visits` turns a visit-level frame (one row per patient and
visit, in any order) into a :class:`Visits` record: rows sorted by patient
and time (never assumed sorted), duplicate ``(patient, time)`` rows
collapsed into one visit and counted, each visit's number within its patient,
the time as a number (a datetime column becomes days since the earliest
date) and each variable's missingness indicator. The input frame is never
modified. :func:`mark_small_cells` is the one place a table of this package
marks its small cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, DataWarning, ParamsError
from hmlib.stats.missingness.counts import check_columns

__all__ = ["Visits", "prepare_visits", "check_min_cell", "mark_small_cells", "blank_suppressed", "trailing_run",
           "is_datetime", "visit_key"]


@dataclass(frozen=True, eq=False)
class Visits:
    """Visits sorted by patient and time, one per ``(patient, time)``.

    Attributes
    ----------
    patient : numpy.ndarray of int64
        Patient code of each visit (``0 .. n_patients - 1``, in sorted label order), non-decreasing.
    time : numpy.ndarray of float
        Time of each visit: the column's value, or days since the earliest date for a datetime column.
    date : numpy.ndarray of datetime64 or None
        The visit dates when the time column is a datetime column.
    visit_number : numpy.ndarray of int64
        Position of the visit within its patient (0 for the first).
    starts : numpy.ndarray of int64
        Index of each patient's first visit (``n_patients + 1`` entries, the last being the number of visits).
    missing : dict of str to numpy.ndarray of bool
        Each variable's missingness indicator per visit (a collapsed duplicate is missing only if every
        one of its rows is).
    site : numpy.ndarray or None
        Site label of each visit when a site column was given (constant within a patient, checked).
    n_duplicate_rows : int
        Rows beyond the first for a ``(patient, time)`` (0 when every visit has one row).
    n_patients_with_duplicates : int
    time_is_datetime : bool
    rows : numpy.ndarray of int64
        Position (``iloc``) in the input frame of each visit's first row, to align other columns.
    row_visit : numpy.ndarray of int64
        The visit (index into the arrays above) of each row of the input frame, in the input's order:
        maps results per visit back to every row, duplicates included.
    """

    patient: np.ndarray
    time: np.ndarray
    date: np.ndarray | None
    visit_number: np.ndarray
    starts: np.ndarray
    missing: dict
    site: np.ndarray | None
    n_duplicate_rows: int
    n_patients_with_duplicates: int
    time_is_datetime: bool
    rows: np.ndarray
    row_visit: np.ndarray | None = None

    @property
    def n_patients(self) -> int:
        """Number of patients."""
        return int(self.starts.size - 1)

    @property
    def n_visits(self) -> int:
        """Number of visits (after collapsing duplicates)."""
        return int(self.patient.size)


def is_datetime(series: pd.Series) -> bool:
    """Whether a column holds dates (datetime64, with or without time zone)."""
    return bool(pd.api.types.is_datetime64_any_dtype(series))


def check_min_cell(min_cell) -> int:
    """``min_cell`` as an int >= 1 (ParamsError otherwise)."""
    if isinstance(min_cell, bool) or not isinstance(min_cell, (int, np.integer)) or min_cell < 1:
        raise ParamsError(f"min_cell must be a whole number >= 1, got {min_cell!r}.")
    return int(min_cell)


def _time_values(frame: pd.DataFrame, time: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The time column as floats (days since the earliest date for dates), and the dates themselves."""
    column = frame[time]
    if column.isna().any():
        raise DataError(f"{where}: {int(column.isna().sum())} row(s) have no {time}; every visit needs a time "
                        "(drop those rows or fill in the scheduled time first).")
    if is_datetime(column):
        dates = column.dt.tz_localize(None) if getattr(column.dt, "tz", None) is not None else column
        dates = dates.to_numpy(dtype="datetime64[ns]")
        days = (dates - dates.min()) / np.timedelta64(1, "D")
        return days.astype(float), dates
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise DataError(f"{where}: {time} must be numeric (e.g. weeks since enrolment) or a datetime column, "
                        f"got {column.dtype}; convert text dates with pandas.to_datetime first.")
    values = column.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise DataError(f"{where}: {time} has infinite values.")
    return values, None


def _patient_codes(frame: pd.DataFrame, patient: str, where: str) -> np.ndarray:
    values = frame[patient]
    if values.isna().any():
        raise DataError(f"{where}: {int(values.isna().sum())} row(s) have no {patient}; every visit needs "
                        "its patient's label.")
    try:
        codes, _ = pd.factorize(values, sort=True)
    except TypeError:
        codes, _ = pd.factorize(values.astype(str), sort=True)
    return np.asarray(codes, dtype=np.int64)


def _site_per_visit(frame: pd.DataFrame, site: str, order: np.ndarray, keep: np.ndarray, patient: np.ndarray,
                    where: str) -> np.ndarray:
    values = frame[site].to_numpy()[order]
    if pd.isna(values).any():
        raise DataError(f"{where}: {int(pd.isna(values).sum())} row(s) have no {site}.")
    codes, _ = pd.factorize(pd.Series(values).astype(str))
    changes = np.flatnonzero((np.diff(patient) == 0) & (np.diff(codes) != 0))
    if changes.size:
        raise DataError(f"{where}: {site} changes within a patient ({np.unique(patient[changes]).size} "
                        f"patient(s)); a patient must belong to one {site}.")
    return values[keep]


def prepare_visits(frame: pd.DataFrame, variables: Sequence[str], patient: str, time: str, *,
                   site: str | None = None, where: str = "longitudinal") -> Visits:
    """Check a visit-level frame and sort it by patient and time.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, in any order (not modified).
    variables : sequence of str
        Variables whose missingness is examined.
    patient : str
        Patient (cluster) column.
    time : str
        Visit time: numeric (weeks, days since enrolment, visit number) or datetime.
    site : str, optional
        Site column (constant within a patient).
    where : str
        The analysis, named in messages.

    Returns
    -------
    Visits

    Raises
    ------
    DataError
        Unknown columns; no rows; rows without patient, time or site; a
        time column that is neither numeric nor datetime; a site that changes
        within a patient; a time that varies within no patient (a
        patient-level column given as time).

    Warns
    -----
    DataWarning
        Duplicate ``(patient, time)`` rows: they are collapsed into one
        visit (a variable counts as observed at that visit if any of the rows
        has it) and counted in ``n_duplicate_rows``.
    """
    variables = list(variables)
    check_columns(frame, [patient, time, *variables, *([site] if site else [])], where)
    if len(frame) == 0:
        raise DataError(f"{where}: the data have no rows.")
    codes = _patient_codes(frame, patient, where)
    times, dates = _time_values(frame, time, where)
    order = np.lexsort((times, codes))
    codes, times = codes[order], times[order]
    new_visit = np.r_[True, (np.diff(codes) != 0) | (np.diff(times) != 0)]
    visit_id = np.cumsum(new_visit) - 1
    keep = np.flatnonzero(new_visit)
    n_duplicates = int(codes.size - keep.size)
    n_dup_patients = int(np.unique(codes[~new_visit]).size)
    if n_duplicates:
        warnings.warn(f"{where}: {n_duplicates} row(s) repeat a ({patient}, {time}) of another row "
                      f"({n_dup_patients} patient(s)); each such visit is counted once, a variable as observed "
                      "if any of its rows has it.", DataWarning, stacklevel=3)
    patient_codes = codes[keep]
    starts = np.r_[np.flatnonzero(np.r_[True, np.diff(patient_codes) != 0]), patient_codes.size]
    if np.all(np.diff(starts) == 1) or not (np.diff(times[keep])[np.diff(patient_codes) == 0] > 0).any():
        raise DataError(f"{where}: {time} does not vary within any {patient}; it must be the time of each "
                        f"visit (a patient-level column such as an enrolment date cannot be the time).")
    missing = {}
    for v in variables:
        observed_rows = frame[v].notna().to_numpy()[order]
        observed = np.zeros(keep.size, dtype=bool)
        np.logical_or.at(observed, visit_id, observed_rows)
        missing[v] = ~observed
    visit_number = np.arange(keep.size) - np.repeat(starts[:-1], np.diff(starts))
    row_visit = np.empty(codes.size, dtype=np.int64)
    row_visit[order] = visit_id
    return Visits(patient=patient_codes, time=times[keep], date=None if dates is None else dates[order][keep],
                  visit_number=visit_number.astype(np.int64), starts=starts.astype(np.int64), missing=missing,
                  site=None if site is None else _site_per_visit(frame, site, order, keep, codes, where),
                  n_duplicate_rows=n_duplicates, n_patients_with_duplicates=n_dup_patients,
                  time_is_datetime=dates is not None, rows=order[keep].astype(np.int64), row_visit=row_visit)


def visit_key(visits: Visits, by: str, time: str, where: str) -> np.ndarray:
    """What makes visits "the same visit" across patients: the time value (``by="time"``) or the number within the patient (``by="order"``).

    Raises
    ------
    ParamsError
        Unknown ``by``.
    DataError
        ``by="time"`` with dates (calendar dates are not scheduled visits).
    """
    if by == "order":
        return visits.visit_number.astype(float)
    if by != "time":
        raise ParamsError(f"{where}: by must be 'time' or 'order', got {by!r}.")
    if visits.time_is_datetime:
        raise DataError(f"{where}: {time} holds dates, which are not scheduled visits; use by='order' (the "
                        "visit's number within the patient) or a numeric visit time.")
    return visits.time


def trailing_run(missing: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Visits in each patient's trailing run of missing values (missing from there to the patient's last visit).

    Parameters
    ----------
    missing : numpy.ndarray of bool
        Missingness per visit, visits sorted by patient and time.
    starts : numpy.ndarray of int
        Index of each patient's first visit, plus the number of visits.

    Returns
    -------
    numpy.ndarray of bool
    """
    # count observed values from the end of each patient: zero means only missing values follow
    observed = (~missing).astype(np.int64)
    reverse_cumsum = np.cumsum(observed[::-1])[::-1]
    ends = np.repeat(starts[1:], np.diff(starts))
    after_end = np.r_[reverse_cumsum, 0][ends]
    return (reverse_cumsum - after_end) == 0


def mark_small_cells(table: pd.DataFrame, count_columns: Sequence[str], min_cell: int,
                     derived_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The table with a ``suppressed`` column: True where a count of patients is from 1 to ``min_cell - 1``.

    The primary suppression of :mod:`hmlib.privacy` (zero is not sensitive);
    the counts and ``derived_columns`` of such rows are kept in the table
    (it holds aggregates only) and blanked by the result's ``to_frame()``.
    Complementary suppression (totals published elsewhere) is the
    publishing step's work, with :func:`hmlib.privacy.suppress_counts`.
    """
    counts = table[list(count_columns)].to_numpy(dtype=float)
    out = table.copy()
    out["suppressed"] = ((counts >= 1) & (counts < min_cell)).any(axis=1)
    return out


def blank_suppressed(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of ``table`` with ``columns`` set to NaN in the rows marked ``suppressed``."""
    out = table.copy()
    hide = out["suppressed"].to_numpy(dtype=bool)
    for c in columns:
        out[c] = out[c].astype(float).where(~hide)
    return out
