"""Intermittent versus monotone (dropout) missingness: each patient's sequence of a variable classified.

A patient's visits, in time order, give a sequence of observed (``o``) and
missing (``m``) values of a variable. The *trailing run* is the missing
values from some visit to the patient's last visit; a *gap* is a missing
value followed later by an observed one. The classes:

``complete``
    nothing missing (``ooooo``);
``intermittent``
    gaps only, the last visit observed (``oomoo``, ``mooo``);
``monotone``
    observed, then missing to the end (``ooomm``, ``oooom``): dropout;
``intermittent and monotone``
    a gap and a trailing run (``omoom``);
``never observed``
    missing at every visit (``mmmm``).

A single missing value at the last visit counts as dropout: without a later
visit a missed last visit cannot be told from a dropout. The classification
sees only the rows there are: when the frame holds only the visits that took
place (no rows for missed or post-dropout visits), a dropout shows only in
variables missing at visits that did happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.stats.longitudinal.visits import (blank_suppressed, check_min_cell, mark_small_cells, prepare_visits,
                                             trailing_run)

__all__ = ["PATTERNS", "classify_sequences", "PatternResult", "missingness_patterns_over_time"]

#: The classes of a patient's sequence, in table order.
PATTERNS = ("complete", "intermittent", "monotone", "intermittent and monotone", "never observed")


def classify_sequences(missing: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Class of each patient's sequence of missing values (index into :data:`PATTERNS`).

    Parameters
    ----------
    missing : numpy.ndarray of bool
        Missingness per visit, visits sorted by patient and time.
    starts : numpy.ndarray of int
        Index of each patient's first visit, plus the number of visits.

    Returns
    -------
    numpy.ndarray of int64
        One code per patient: 0 complete, 1 intermittent, 2 monotone, 3
        intermittent and monotone, 4 never observed.

    Examples
    --------
    >>> m = np.array([0, 0, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    >>> [PATTERNS[c] for c in classify_sequences(m, np.array([0, 4, 7, 10]))]
    ['intermittent', 'never observed', 'intermittent and monotone']
    """
    sizes = np.diff(starts)
    trailing = trailing_run(missing, starts)
    n_missing = np.add.reduceat(missing.astype(np.int64), starts[:-1]) if missing.size else np.zeros(0, int)
    n_trailing = np.add.reduceat(trailing.astype(np.int64), starts[:-1]) if missing.size else np.zeros(0, int)
    gaps = n_missing - n_trailing
    codes = np.where(n_missing == 0, 0,
                     np.where(n_missing == sizes, 4,
                              np.where(n_trailing == 0, 1, np.where(gaps == 0, 2, 3))))
    return codes.astype(np.int64)


@dataclass(frozen=True)
class PatternResult:
    """Patients by class of their missingness sequence, per variable.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per variable and class (:data:`PATTERNS`, every class listed):
        ``variable, pattern, n_patients, share, suppressed`` (``share`` of the
        variable's patients; ``suppressed`` where ``n_patients`` is from 1 to
        ``min_cell - 1``).
    dropout_by_visit : pandas.DataFrame
        Per variable, the visit number at which monotone sequences start
        (``variable, dropout_visit_number, n_patients, suppressed``).
    n_patients : int
    n_duplicate_rows : int
        Rows collapsed as duplicates of a ``(patient, time)``.
    min_cell : int
    """

    table: pd.DataFrame
    dropout_by_visit: pd.DataFrame
    n_patients: int
    n_duplicate_rows: int
    min_cell: int

    def shares(self) -> pd.DataFrame:
        """Shares, variables x classes (unsuppressed; for checks, not for publishing)."""
        return self.table.pivot(index="variable", columns="pattern", values="share")[list(PATTERNS)]

    def to_frame(self) -> pd.DataFrame:
        """The table with the counts and shares of suppressed rows blanked (NaN), ready to publish."""
        return blank_suppressed(self.table, ["n_patients", "share"])


def missingness_patterns_over_time(frame: pd.DataFrame, variables: Sequence[str], patient: str, time: str, *,
                                   min_cell: int = 11) -> PatternResult:
    """Classify each patient's missingness over visits as intermittent, monotone (dropout) or both.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, any order (not modified).
    variables : sequence of str
    patient, time : str
        Patient column; visit time (numeric or datetime).
    min_cell : int, default 11
        Counts of patients from 1 to ``min_cell - 1`` are marked suppressed.

    Returns
    -------
    PatternResult

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`.

    Warns
    -----
    DataWarning
        Duplicate ``(patient, time)`` rows (collapsed, counted).

    See Also
    --------
    hmlib.stats.missingness.missingness_patterns : patterns across variables at one time.
    """
    min_cell = check_min_cell(min_cell)
    variables = list(variables)
    visits = prepare_visits(frame, variables, patient, time, where="missingness_patterns_over_time")
    n = visits.n_patients
    rows, dropout_rows = [], []
    for v in variables:
        codes = classify_sequences(visits.missing[v], visits.starts)
        counts = np.bincount(codes, minlength=len(PATTERNS))
        rows.append(pd.DataFrame({"variable": v, "pattern": PATTERNS, "n_patients": counts,
                                  "share": counts / n}))
        trailing = trailing_run(visits.missing[v], visits.starts)
        first = trailing & np.r_[True, ~trailing[:-1]] & (visits.visit_number > 0)
        start_numbers = visits.visit_number[first]
        values, counts = np.unique(start_numbers, return_counts=True)
        dropout_rows.append(pd.DataFrame({"variable": v, "dropout_visit_number": values, "n_patients": counts}))
    table = mark_small_cells(pd.concat(rows, ignore_index=True), ["n_patients"], min_cell)
    dropout = mark_small_cells(pd.concat(dropout_rows, ignore_index=True), ["n_patients"], min_cell)
    return PatternResult(table=table, dropout_by_visit=dropout, n_patients=n,
                         n_duplicate_rows=visits.n_duplicate_rows, min_cell=min_cell)
