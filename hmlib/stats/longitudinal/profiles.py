"""Mean profiles of a variable by dropout pattern: the privacy-safe form of a spaghetti plot (#16).

A spaghetti plot draws each patient's trajectory; a reader sees whether
patients who leave early were already doing worse (the classic sign that
dropout depends on the values, Molenberghs & Kenward 2007, sec. 3.5; Hogan,
Roy & Korkontzelou 2004). Individual lines are patient-level data, which
the report never publishes, so the same question is answered with
aggregates: patients are grouped by the visit of their last recorded value
of the variable (their dropout pattern) and each group's mean at each visit
is drawn, one line per group.

Rules
-----
- Visits are those of :func:`~hmlib.stats.longitudinal.visits.prepare_visits`
  (any row order; duplicate ``(patient, time)`` rows are one visit, whose
  value is the mean of its rows' recorded values). ``by="time"`` groups
  visits by their time value (scheduled visits), ``by="order"`` by their
  number within the patient (dates, irregular times).
- A patient's pattern is the visit of their last recorded value. Patients
  who never record the variable have no pattern (counted in
  ``n_never_recorded``).
- Groups: patterns in visit order, consecutive patterns merged until each
  group holds at least ``min_cell`` patients (a small last group joins the
  one before it). So no group describes fewer than ``min_cell`` patients.
- A point (group, visit) is the mean of the recorded values of the group's
  patients at that visit; it is marked ``suppressed`` when from 1 to
  ``min_cell - 1`` patients contribute (the primary suppression of
  :mod:`hmlib.privacy`), and blanked by :meth:`DropoutProfiles.to_frame`.
  Group sizes are kept for the step (which publishes no count).

References
----------
Hogan JW, Roy J, Korkontzelou C (2004). Handling drop-out in longitudinal
studies. Stat Med 23:1455-1497.
Molenberghs G, Kenward MG (2007). Missing Data in Clinical Studies. Wiley.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.stats.longitudinal.visits import check_min_cell, prepare_visits, visit_key

__all__ = ["DropoutProfiles", "profiles_by_dropout", "PROFILE_COLUMNS"]

#: Columns of :attr:`DropoutProfiles.table`.
PROFILE_COLUMNS = ["group", "label", "visit", "mean", "sd", "n_patients", "suppressed"]


@dataclass(frozen=True, eq=False)
class DropoutProfiles:
    """Mean of a variable at each visit within groups of patients by their last recorded visit of it.

    Attributes
    ----------
    variable : str
    by : str
        ``"time"`` or ``"order"`` (how visits are matched across patients).
    table : pandas.DataFrame
        :data:`PROFILE_COLUMNS`: ``group`` (0 = earliest dropout), its ``label`` ("last recorded at
        week 2-4"), ``visit``, the ``mean`` and ``sd`` of the recorded values and their number of
        ``n_patients``; ``suppressed`` where that number is from 1 to ``min_cell - 1``.
    groups : pandas.DataFrame
        ``group, label, first_visit, last_visit, n_patients``: the patterns each group merges.
    n_never_recorded : int
        Patients without any recorded value (no pattern).
    min_cell : int
    """

    variable: str
    by: str
    table: pd.DataFrame
    groups: pd.DataFrame
    n_never_recorded: int
    min_cell: int

    def to_frame(self) -> pd.DataFrame:
        """The table with ``mean``, ``sd`` and ``n_patients`` blanked in suppressed rows."""
        out = self.table.copy()
        out.loc[out["suppressed"], ["mean", "sd", "n_patients"]] = np.nan
        return out


def _visit_values(frame: pd.DataFrame, variable: str, visits) -> np.ndarray:
    """The variable's value at each visit: the mean of its rows' recorded values (NaN when none)."""
    values = pd.to_numeric(frame[variable], errors="raise").to_numpy(dtype=float)
    sums = np.bincount(visits.row_visit, weights=np.nan_to_num(values), minlength=visits.patient.size)
    counts = np.bincount(visits.row_visit, weights=~np.isnan(values), minlength=visits.patient.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _merge_patterns(last: np.ndarray, min_cell: int) -> tuple[np.ndarray, list]:
    """Group label per patient (by its last recorded visit key) and the groups' (first, last) keys."""
    keys, counts = np.unique(last, return_counts=True)
    bounds, start, size = [], 0, 0
    for i, c in enumerate(counts):
        size += c
        if size >= min_cell:
            bounds.append((start, i))
            start, size = i + 1, 0
    if start < keys.size:                       # a small last group joins the one before it
        if bounds:
            bounds[-1] = (bounds[-1][0], keys.size - 1)
        else:
            bounds.append((start, keys.size - 1))
    group_of_key = np.empty(keys.size, dtype=np.int64)
    for g, (a, b) in enumerate(bounds):
        group_of_key[a:b + 1] = g
    return group_of_key[np.searchsorted(keys, last)], [(keys[a], keys[b]) for a, b in bounds]


def profiles_by_dropout(frame: pd.DataFrame, variable: str, patient: str, time: str, *, by: str = "time",
                        min_cell: int = 11, unit: str = "") -> DropoutProfiles:
    """Mean profiles of ``variable`` by dropout pattern (module docstring).

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, in any order (never modified).
    variable : str
        A numeric variable (the outcome, usually).
    patient, time : str
        The patient column and the visit time (numeric or datetime).
    by : {"time", "order"}
        Visits matched by their time value or by their number within the patient (dates: "order").
    min_cell : int
        Smallest count of patients published.
    unit : str
        Word before the visit in the labels ("week"); empty for none.

    Returns
    -------
    DropoutProfiles

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`; a variable that is not numeric.

    Examples
    --------
    >>> frame = pd.DataFrame({"p": np.repeat(np.arange(30), 3), "week": np.tile([0, 4, 8], 30),
    ...                       "y": np.tile([10.0, 12.0, 14.0], 30)})
    >>> frame.loc[(frame["p"] < 12) & (frame["week"] == 8), "y"] = np.nan
    >>> res = profiles_by_dropout(frame, "y", "p", "week", unit="week")
    >>> res.groups[["label", "n_patients"]].values.tolist()
    [['last recorded at week 4', 12], ['last recorded at week 8', 18]]
    """
    min_cell = check_min_cell(min_cell)
    visits = prepare_visits(frame, [variable], patient, time, where="profiles_by_dropout")
    key = visit_key(visits, by, time, "profiles_by_dropout")
    values = _visit_values(frame, variable, visits)
    recorded = ~np.isnan(values)
    n_patients = visits.starts.size - 1
    # each patient's last recorded visit key (NaN when never recorded)
    last = np.full(n_patients, np.nan)
    rec_idx = np.flatnonzero(recorded)
    last[visits.patient[rec_idx]] = key[rec_idx]  # visits are sorted by time within patient: the last one wins
    has = ~np.isnan(last)
    n_never = int((~has).sum())
    columns = ["group", "label", "first_visit", "last_visit", "n_patients"]
    if not has.any():
        return DropoutProfiles(variable, by, pd.DataFrame(columns=PROFILE_COLUMNS), pd.DataFrame(columns=columns),
                               n_never, min_cell)
    group_of_patient = np.full(n_patients, -1, dtype=np.int64)
    group_of_patient[has], spans = _merge_patterns(last[has], min_cell)
    prefix = f"{unit} " if unit else ("visit " if by == "order" else "")

    def fmt(v):
        v = v + 1 if by == "order" else v
        return f"{v:g}"

    labels = [f"last recorded at {prefix}{fmt(a)}" if a == b else f"last recorded at {prefix}{fmt(a)}-{fmt(b)}"
              for a, b in spans]
    sizes = np.bincount(group_of_patient[has], minlength=len(spans))
    groups = pd.DataFrame({"group": np.arange(len(spans)), "label": labels,
                           "first_visit": [a for a, _ in spans], "last_visit": [b for _, b in spans],
                           "n_patients": sizes})
    g = group_of_patient[visits.patient]
    use = recorded & (g >= 0)
    points = pd.DataFrame({"group": g[use], "visit": key[use], "value": values[use]})
    stats = points.groupby(["group", "visit"], sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    table = pd.DataFrame({"group": stats["group"].to_numpy(), "label": [labels[i] for i in stats["group"]],
                          "visit": stats["visit"].to_numpy(dtype=float), "mean": stats["mean"].to_numpy(),
                          "sd": stats["std"].to_numpy(), "n_patients": stats["count"].to_numpy()})
    table["suppressed"] = (table["n_patients"] >= 1) & (table["n_patients"] < min_cell)
    return DropoutProfiles(variable, by, table.loc[:, PROFILE_COLUMNS], groups, n_never, min_cell)
