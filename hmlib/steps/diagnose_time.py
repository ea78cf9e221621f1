"""Step 1 over time (params ``time``): missingness by visit, over calendar time, by pattern, dropout and history.

When the clusters are patients seen at several visits, step 1 also runs the
diagnostics of :mod:`hmlib.stats.longitudinal` on the incomplete variables
(the outcome first) and publishes them with small-cell suppression:

- **by visit**: the share missing at each visit (the time value when the
  visits are scheduled; the visit's number within the patient for dates or
  irregular times), split into intermittent and after dropout, with Wilson
  intervals;
- **by calendar period** (a date time column only): the share missing per
  month (quarter, year for long spans) and the change-point screen's most
  likely change, stated as a screen;
- **patterns**: patients whose sequence is complete, intermittent, monotone
  (dropout), both, or never observed;
- **dropout curves**: the Kaplan-Meier share still observed by visit,
  overall and by the level directly above the patient (site) when there is
  one; sites with fewer than ``min_cell`` patients are pooled (with the
  next smallest sites until the pool reaches ``min_cell``), never drawn alone;
- **history screens**: dropout and intermittent missingness of each numeric
  variable on time, its last observed value and the last observed outcome
  (screens, not tests of MAR).

Disclosure control. The stats results mark rows with a count of patients
from 1 to ``min_cell - 1``; here the published tables are suppressed again
with :func:`hmlib.privacy.suppress_counts` *with* complements: the by-visit
counts per variable add up to the variable's total in step 1's overview,
so each variable's block is protected around its column totals, and a
visit's number of patients, the same in every variable's block, is hidden
in all blocks when it is hidden in one; the calendar counts likewise; the
pattern counts add up to the number of patients. A dropout curve point is
published only where the stats result did not mark its row (no count at
risk, of dropouts or of censored patients from 1 to ``min_cell - 1``), and
the curves carry no counts (numbers at risk at consecutive visits would
give back the patients lost in between). The change point is published as its periods, rates and p-value
(no visit counts, which would give back a hidden period by subtraction).
No table or figure describes one patient.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.exceptions import DataError, DataWarning, FitError
from hmlib.figures import diagnose as figures
from hmlib.privacy import SuppressedTable, suppress_counts
from hmlib.stats.longitudinal import (PATTERNS, missingness_by_visit, missingness_history_screen,
                                      missingness_over_calendar_time, missingness_patterns_over_time,
                                      prepare_visits, time_to_dropout)
from hmlib.stats.longitudinal.profiles import profiles_by_dropout

__all__ = ["TimeDiagnosis", "OverTimeRecord", "diagnose_over_time", "dropout_groups", "publish_by_visit",
           "publish_patterns", "publish_dropout", "time_sentences", "time_figures", "time_methods",
           "MAX_SCHEDULED_VISITS", "CHANGE_POINT_ALPHA"]

#: With more distinct numeric times than this, visits are grouped by their number within the patient.
MAX_SCHEDULED_VISITS = 30
#: A change-point or history screen below this p-value is named in the narrative.
CHANGE_POINT_ALPHA = 0.05
_PATTERN_COLUMNS = [p.replace(" ", "_") for p in PATTERNS]
_PROFILE_COLUMNS = ["variable", "group", "label", "visit", "mean"]


# --------------------------------------------------------------------------
# The record: the ``over_time`` field of artifacts/diagnose.json
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class VisitRateRow(Record):
    """One variable at one visit (``None``: suppressed, named in ``suppressed``)."""

    variable: str
    visit: float
    n_patients: float | None
    n_missing: float | None
    n_observed: float | None
    n_intermittent: float | None
    n_after_dropout: float | None
    share_missing: float | None
    ci_lower: float | None
    ci_upper: float | None
    suppressed: tuple[str, ...]


@dataclass(frozen=True)
class PeriodRateRow(Record):
    """One variable in one calendar period (visits after dropout left out)."""

    variable: str
    period: str
    n_visits: float | None
    n_patients: float | None
    n_missing: float | None
    n_observed: float | None
    share_missing: float | None
    ci_lower: float | None
    ci_upper: float | None
    suppressed: tuple[str, ...]


@dataclass(frozen=True)
class ChangePointRow(Record):
    """The change-point screen of one variable's calendar rates (a screen, not a test)."""

    variable: str
    last_period_before: str | None
    first_period_after: str | None
    rate_before: float | None
    rate_after: float | None
    statistic: float | None
    p_value: float | None
    n_permutations: int


@dataclass(frozen=True)
class PatternCountRow(Record):
    """Patients by class of their sequence of one variable (counts and shares of all patients)."""

    variable: str
    n_patients: float | None
    complete: float | None
    intermittent: float | None
    monotone: float | None
    intermittent_and_monotone: float | None
    never_observed: float | None
    share_complete: float | None
    share_intermittent: float | None
    share_monotone: float | None
    share_intermittent_and_monotone: float | None
    share_never_observed: float | None
    suppressed: tuple[str, ...]


@dataclass(frozen=True)
class DropoutPoint(Record):
    """One point of a dropout curve (``None``: suppressed)."""

    variable: str
    group: str
    visit: float
    share_remaining: float | None
    ci_lower: float | None
    ci_upper: float | None


@dataclass(frozen=True)
class ProfilePoint(Record):
    """The mean of a variable at one visit among the patients of one dropout pattern (``None``: suppressed)."""

    variable: str
    group: int
    label: str
    visit: float
    mean: float | None


@dataclass(frozen=True)
class HistoryTermRow(Record):
    """One term of a history screen (per SD of the term)."""

    variable: str
    kind: str
    cluster: str
    n_rows: int
    n_events: int
    term: str
    sd: float | None
    log_odds_ratio: float | None
    std_error: float | None
    odds_ratio: float | None
    ci_lower: float | None
    ci_upper: float | None
    p_value: float | None


@dataclass(frozen=True)
class OverTimeRecord(Record):
    """:class:`TimeDiagnosis` as recorded (published aggregates only)."""

    time: str
    time_is_date: bool
    visit_by: str
    site: str | None
    period: str | None
    variables: tuple[str, ...]
    n_visits: int
    n_patients: int
    n_duplicate_rows: int
    by_visit: tuple[VisitRateRow, ...]
    by_period: tuple[PeriodRateRow, ...]
    change_points: tuple[ChangePointRow, ...]
    patterns: tuple[PatternCountRow, ...]
    dropout: tuple[DropoutPoint, ...]
    pooled_sites: dict[str, tuple[str, ...]]
    history: tuple[HistoryTermRow, ...]
    profiles: tuple[ProfilePoint, ...]
    level: float
    notes: tuple[str, ...]


# --------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeDiagnosis:
    """Step 1's missingness over time, published (small cells suppressed).

    Attributes
    ----------
    time : str
        The time column.
    time_is_date : bool
    visit_by : {"time", "order"}
        Visits grouped by their time value, or by their number within the patient.
    site : str or None
        The level above the patient the dropout curves are drawn by.
    period : str or None
        Calendar period (``"M"``, ``"Q"``, ``"Y"``) when the time holds dates.
    variables : tuple of str
        The variables described (incomplete, outcome first).
    n_visits, n_patients, n_duplicate_rows : int
    by_visit : SuppressedTable
        ``variable, visit, n_patients, n_missing, n_intermittent, n_after_dropout, n_observed,
        share_missing, ci_lower, ci_upper``.
    by_period : SuppressedTable or None
        ``variable, period, n_visits, n_patients, n_missing, n_observed, share_missing, ci_lower,
        ci_upper`` (dates only; visits after dropout left out).
    change_points : pandas.DataFrame
        One row per variable: ``variable, last_period_before, first_period_after, rate_before,
        rate_after, statistic, p_value, n_permutations`` (dates only).
    patterns : SuppressedTable
        ``variable, n_patients`` and a count and share per class of :data:`~hmlib.stats.longitudinal.PATTERNS`.
    dropout : pandas.DataFrame
        ``variable, group, visit, share_remaining, ci_lower, ci_upper`` (NaN: suppressed; no counts);
        ``group`` is ``"all"``, a site, or the pooled small sites.
    pooled_sites : dict of str to tuple
        Per variable, the sites pooled into one curve (empty: none).
    history : pandas.DataFrame
        ``variable, kind, cluster, n_rows, n_events, term, sd, log_odds_ratio, std_error, odds_ratio,
        ci_lower, ci_upper, p_value`` (intercepts left out).
    profiles : pandas.DataFrame
        ``variable, group, label, visit, mean``: the outcome's mean at each visit among the patients of each
        dropout pattern (:func:`hmlib.stats.longitudinal.profiles.profiles_by_dropout`; every pattern with
        at least ``min_cell`` patients, points of fewer NaN, no counts); empty when the outcome is complete,
        not numeric, or when fewer than two patterns are left after merging the small ones.
    level : float
    min_cell : int
    notes : tuple of str
    """

    time: str
    time_is_date: bool
    visit_by: str
    site: str | None
    period: str | None
    variables: tuple
    n_visits: int
    n_patients: int
    n_duplicate_rows: int
    by_visit: SuppressedTable
    by_period: SuppressedTable | None
    change_points: pd.DataFrame
    patterns: SuppressedTable
    dropout: pd.DataFrame
    pooled_sites: dict
    history: pd.DataFrame
    level: float
    min_cell: int
    notes: tuple = field(default_factory=tuple)
    profiles: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_PROFILE_COLUMNS))

    def to_record(self) -> dict:
        """JSON-ready ``over_time`` field of step 1's artifact (suppressed values are None)."""
        return {
            "time": self.time, "time_is_date": self.time_is_date, "visit_by": self.visit_by, "site": self.site,
            "period": self.period, "variables": list(self.variables), "n_visits": self.n_visits,
            "n_patients": self.n_patients, "n_duplicate_rows": self.n_duplicate_rows,
            "by_visit": self.by_visit.to_records(),
            "by_period": self.by_period.to_records() if self.by_period is not None else [],
            "change_points": self.change_points.to_dict("records"),
            "patterns": self.patterns.to_records(),
            "dropout": self.dropout.to_dict("records"),
            "pooled_sites": {v: [str(s) for s in sites] for v, sites in self.pooled_sites.items()},
            "history": self.history.to_dict("records"),
            "profiles": self.profiles.to_dict("records"),
            "level": self.level, "notes": list(self.notes),
        }


# --------------------------------------------------------------------------
# Running the diagnostics
# --------------------------------------------------------------------------
def diagnose_over_time(frame: pd.DataFrame, variables: Sequence[str], cluster: str, time: str, *,
                       site: str | None = None, outcome: str | None = None, min_cell: int = 11,
                       level: float = 0.95, n_permutations: int = 999, seed=None,
                       cluster_noun: str = "patient") -> TimeDiagnosis:
    """Missingness over time of ``variables``, published with small cells suppressed.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient (``cluster``) and visit, any order (not modified).
    variables : sequence of str
        Incomplete variables, the outcome first.
    cluster, time : str
        Patient column; visit time (numeric or datetime64).
    site : str, optional
        The level directly above the patient: dropout curves and the dropout screen by it.
    outcome : str, optional
        Its last observed value enters the history screens.
    min_cell : int, default 11
    level : float, default 0.95
    n_permutations : int, default 999
        Permutations of the change-point screen.
    seed : int, optional
        For the permutations.
    cluster_noun : str
        Word for a cluster in notes.

    Returns
    -------
    TimeDiagnosis

    Raises
    ------
    DataError
        As :func:`hmlib.stats.longitudinal.prepare_visits` (a time that never varies within a patient, a
        site that changes within one).

    Notes
    -----
    Duplicate ``(cluster, time)`` rows are counted (``n_duplicate_rows``) and collapsed by the stats layer
    into one visit; their warnings are not repeated here (step 1 states the count once).
    """
    variables = list(variables)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        visits = prepare_visits(frame, variables, cluster, time, site=site, where="step 1 over time")
        n_times = np.unique(visits.time).size
        visit_by = "order" if visits.time_is_datetime or n_times > MAX_SCHEDULED_VISITS else "time"
        rates = missingness_by_visit(frame, variables, cluster, time, by=visit_by, level=level, min_cell=min_cell)
        by_visit = publish_by_visit(rates.table, min_cell)
        patterns = publish_patterns(missingness_patterns_over_time(frame, variables, cluster, time,
                                                                   min_cell=min_cell).table, visits.n_patients,
                                    min_cell)
        period = by_period = None
        change_points = pd.DataFrame(columns=_CHANGE_COLUMNS)
        if visits.time_is_datetime:
            period = calendar_period(visits.date)
            by_period, change_points = _calendar(frame, variables, cluster, time, period=period, level=level,
                                                 min_cell=min_cell, n_permutations=n_permutations, seed=seed,
                                                 notes=notes)
        dropout, pooled = _dropout(frame, variables, cluster, time, site=site, by=visit_by, level=level,
                                   min_cell=min_cell, notes=notes)
        history = _history(frame, variables, cluster, time, site=site, outcome=outcome, level=level,
                           min_cell=min_cell, notes=notes)
        profiles = _profiles(frame, outcome if outcome in variables else None, cluster, time, by=visit_by,
                             min_cell=min_cell, cluster_noun=cluster_noun, notes=notes)
    if visits.n_duplicate_rows:
        notes.append(f"{visits.n_duplicate_rows:,} row(s) repeat the ({cluster}, {time}) of another row; each "
                     "such visit is counted once over time (a variable as recorded if any of its rows has it).")
    return TimeDiagnosis(time=time, time_is_date=bool(visits.time_is_datetime), visit_by=visit_by, site=site,
                         period=period, variables=tuple(variables), n_visits=visits.n_visits,
                         n_patients=visits.n_patients, n_duplicate_rows=visits.n_duplicate_rows, by_visit=by_visit,
                         by_period=by_period, change_points=change_points, patterns=patterns, dropout=dropout,
                         pooled_sites=pooled, history=history, level=float(level), min_cell=int(min_cell),
                         notes=tuple(notes), profiles=profiles)


def _profiles(frame, variable, cluster, time, *, by, min_cell, cluster_noun, notes) -> pd.DataFrame:
    """The published profiles by dropout pattern of ``variable`` (the outcome), or an empty table with a note."""
    empty = pd.DataFrame(columns=_PROFILE_COLUMNS)
    if variable is None or not pd.api.types.is_numeric_dtype(frame[variable]):
        return empty
    result = profiles_by_dropout(frame, variable, cluster, time, by=by, min_cell=min_cell,
                                 unit=time if by == "time" else "")
    if len(result.groups) < 2:
        notes.append(f"Mean {variable} by dropout pattern is not drawn: fewer than {min_cell} {cluster_noun}s "
                     f"stop having {variable} recorded before the others, so no early-dropout group could be "
                     "shown without describing a handful of them.")
        return empty
    table = result.to_frame()
    return table.assign(variable=variable).loc[:, _PROFILE_COLUMNS]


def calendar_period(dates: np.ndarray) -> str:
    """Month (``"M"``) for spans up to five years, quarter (``"Q"``) up to twenty, else year (``"Y"``)."""
    span_days = float((dates.max() - dates.min()) / np.timedelta64(1, "D"))
    return "M" if span_days <= 5 * 366 else "Q" if span_days <= 20 * 366 else "Y"


_RATE_DERIVED = ("share_missing", "ci_lower", "ci_upper")


def publish_by_visit(table: pd.DataFrame, min_cell: int) -> SuppressedTable:
    """The by-visit table suppressed per variable around its column totals (published in the overview).

    A visit's number of patients is the same in every variable's block: hidden in one, it is hidden in all
    (the blocks are suppressed again with it given as hidden until no block hides more).
    """
    table = table.drop(columns=["suppressed"]).reset_index(drop=True)
    counts = ["n_missing", "n_observed", "n_intermittent", "n_after_dropout"]
    derived = {d: ["n_missing", "n_patients"] for d in _RATE_DERIVED}
    hidden = pd.DataFrame(False, index=table.index, columns=["n_patients"])
    while True:
        published = suppress_counts(table, counts, min_cell, total_column="n_patients",
                                    parts=[["n_missing", "n_observed"],
                                           ["n_intermittent", "n_after_dropout", "n_observed"]],
                                    group_columns=["variable"], derived_columns=derived, hidden=hidden)
        visit_hidden = published.mask["n_patients"].groupby(table["visit"]).transform("any")
        if (visit_hidden == hidden["n_patients"]).all():
            return published
        hidden["n_patients"] = visit_hidden.to_numpy()


def publish_patterns(table: pd.DataFrame, n_patients: int, min_cell: int) -> SuppressedTable:
    """Patients per class of sequence, one row per variable (the row adds up to the number of patients)."""
    wide = table.pivot(index="variable", columns="pattern", values="n_patients")[list(PATTERNS)]
    wide.columns = _PATTERN_COLUMNS
    order = list(dict.fromkeys(table["variable"]))
    wide = wide.loc[order].reset_index()
    wide.insert(1, "n_patients", int(n_patients))
    for c in _PATTERN_COLUMNS:
        wide[f"share_{c}"] = wide[c] / n_patients
    return suppress_counts(wide, _PATTERN_COLUMNS, min_cell, total_column="n_patients", parts=[_PATTERN_COLUMNS],
                           column_totals=False, derived_columns={f"share_{c}": [c] for c in _PATTERN_COLUMNS})


_CHANGE_COLUMNS = ["variable", "last_period_before", "first_period_after", "rate_before", "rate_after",
                   "statistic", "p_value", "n_permutations"]


def _calendar(frame, variables, cluster, time, *, period, level, min_cell, n_permutations, seed, notes):
    """Rates per calendar period (published) and one change-point row per variable."""
    tables, changes = [], []
    for var in variables:
        try:
            res = missingness_over_calendar_time(frame, var, cluster, time, freq=period, level=level,
                                                 min_cell=min_cell, n_permutations=n_permutations, seed=seed)
        except DataError as err:
            notes.append(f"Missingness of {var} over calendar time was not described: {err}")
            continue
        t = res.table.assign(variable=var, period=res.table["period"].astype(str))
        tables.append(t)
        cp = res.change_point
        changes.append({"variable": var,
                        "last_period_before": None if cp.split is None else str(res.last_period_before_change),
                        "first_period_after": None if res.first_period_after_change is None
                        else str(res.first_period_after_change),
                        "rate_before": cp.rate_before, "rate_after": cp.rate_after, "statistic": cp.statistic,
                        "p_value": cp.p_value, "n_permutations": cp.n_permutations})
    if not tables:
        return None, pd.DataFrame(columns=_CHANGE_COLUMNS)
    table = pd.concat(tables, ignore_index=True)
    table["n_observed"] = table["n_visits"] - table["n_missing"]
    # the stats layer's marks (a count of patients missing from 1 to min_cell - 1) are hidden from the start
    hidden = pd.DataFrame({"n_missing": table["suppressed"].to_numpy(dtype=bool)}, index=table.index)
    table = table[["variable", "period", "n_visits", "n_patients", "n_missing", "n_observed", *_RATE_DERIVED]]
    published = suppress_counts(table, ["n_missing", "n_observed", "n_patients"], min_cell, total_column="n_visits",
                                parts=[["n_missing", "n_observed"]], group_columns=["variable"],
                                derived_columns={d: ["n_missing", "n_visits"] for d in _RATE_DERIVED}, hidden=hidden)
    return published, pd.DataFrame(changes, columns=_CHANGE_COLUMNS)


def dropout_groups(frame: pd.DataFrame, variable: str, cluster: str, site: str, min_cell: int):
    """Each row's dropout-curve group: its site, or the pool of small sites; None when no site curve is safe.

    A site with fewer than ``min_cell`` patients in the risk set (the variable observed at least once) is
    pooled with the other small sites, and the pool takes the next smallest sites until it holds
    ``min_cell`` patients. When every site ends up in the pool, no site curve is drawn (it would be the
    overall curve).

    Returns
    -------
    labels : pandas.Series or None
        Group label per row (aligned with ``frame``).
    pooled : tuple
        The sites in the pool (sorted by size, then label).
    """
    observed = frame.loc[frame[variable].notna()]
    sizes = observed.groupby(frame[site], observed=True)[cluster].nunique()
    sizes = sizes.reindex(pd.unique(frame[site].dropna()), fill_value=0)
    ordered = sorted(sizes.index, key=lambda s: (int(sizes[s]), str(s)))
    pool = [s for s in ordered if sizes[s] < min_cell]
    if not pool:
        return frame[site].astype(str), ()
    rest = [s for s in ordered if s not in pool]
    while sizes[pool].sum() < min_cell and rest:
        pool.append(rest.pop(0))
    if not rest or sizes[pool].sum() < min_cell:
        return None, tuple(pool)
    label = f"{len(pool)} smaller {site} units pooled"
    return frame[site].astype(str).where(~frame[site].isin(pool), label), tuple(pool)


def _dropout(frame, variables, cluster, time, *, site, by, level, min_cell, notes):
    """Published dropout curves of every variable, and the sites pooled per variable."""
    curves, pooled = [], {}
    for var in variables:
        groups, pool = (None, ()) if site is None else dropout_groups(frame, var, cluster, site, min_cell)
        if site is not None and groups is None:
            notes.append(f"The dropout curves of {var} are not drawn by {site}: no {site} can be shown apart "
                         f"from the others with at least {min_cell} patients.")
        column = None if groups is None else "__dropout_group__"
        data = frame if groups is None else frame.assign(**{column: groups})
        try:
            res = time_to_dropout(data, var, cluster, time, site=column, by=by, level=level, min_cell=min_cell)
        except DataError as err:
            notes.append(f"The dropout curve of {var} was not drawn: {err}")
            continue
        pooled[var] = tuple(pool) if groups is not None else ()
        curves.append(publish_dropout(res.table).assign(variable=var))
    if not curves:
        return pd.DataFrame(columns=["variable", "group", "visit", "share_remaining", "ci_lower", "ci_upper"]), pooled
    table = pd.concat(curves, ignore_index=True)
    return table[["variable", "group", "visit", "share_remaining", "ci_lower", "ci_upper"]], pooled


def publish_dropout(table: pd.DataFrame) -> pd.DataFrame:
    """One variable's curves without the points whose row the stats result marked (a count at risk, of
    dropouts or of censored patients from 1 to ``min_cell - 1``).

    Returns ``group, visit, share_remaining, ci_lower, ci_upper`` (NaN: suppressed). No counts are
    published: numbers at risk at consecutive visits would give back, by subtraction, the patients who
    dropped out or were censored in between, however small.
    """
    out = table.assign(group=table["site"].astype(str))[["group", "visit", "share_remaining", "ci_lower",
                                                          "ci_upper"]].copy()
    hidden = table["suppressed"].to_numpy(dtype=bool)
    for c in ("share_remaining", "ci_lower", "ci_upper"):
        out[c] = out[c].astype(float).where(~hidden)
    return out


_HISTORY_COLUMNS = ["variable", "kind", "cluster", "n_rows", "n_events", "term", "sd", "log_odds_ratio",
                    "std_error", "odds_ratio", "ci_lower", "ci_upper", "p_value"]


def _history(frame, variables, cluster, time, *, site, outcome, level, min_cell, notes) -> pd.DataFrame:
    """The history screens (dropout, intermittent) of each numeric variable; too few events: noted, not shown."""
    rows = []
    for var in variables:
        if not pd.api.types.is_numeric_dtype(frame[var]):
            notes.append(f"{var} is categorical: its missingness is not screened on its last observed value.")
            continue
        for kind in ("dropout", "intermittent"):
            try:
                res = missingness_history_screen(frame, var, cluster, time, outcome=outcome, site=site, kind=kind,
                                                 level=level, min_cell=min_cell)
            except (DataError, FitError) as err:
                notes.append(f"The {kind} screen of {var} on its history was not fitted: {err}")
                continue
            if res.small_cell:
                notes.append(f"The {kind} screen of {var} is not shown: fewer than {min_cell} visits with (or "
                             "without) the event.")
                continue
            terms = res.table.loc[res.table["term"] != "Intercept"]
            rows.append(terms.assign(variable=var, kind=kind, cluster=res.cluster_name, n_rows=res.n_rows,
                                     n_events=res.n_events))
    if not rows:
        return pd.DataFrame(columns=_HISTORY_COLUMNS)
    return pd.concat(rows, ignore_index=True)[_HISTORY_COLUMNS]


# --------------------------------------------------------------------------
# Sentences, methods and figures
# --------------------------------------------------------------------------
def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _pct(share) -> str | None:
    return None if share is None or not np.isfinite(share) else f"{100 * share:.0f}%"


def _pattern_phrase(td: TimeDiagnosis, var: str, cluster_noun: str) -> str:
    """``for 25% of patients intermittently, for 34% from some visit to their last``: published shares only."""
    row = td.patterns.values.set_index("variable").loc[var]
    gaps = _pct(row["share_intermittent"] + row["share_intermittent_and_monotone"])
    dropout = _pct(row["share_monotone"] + row["share_intermittent_and_monotone"])
    if gaps is None and dropout is None:
        return f"the counts of {var}'s patterns (intermittent, dropout) are suppressed (small cells)"
    parts = []
    if gaps is not None:
        parts.append(f"intermittently (a gap followed by a recorded visit) for {gaps} of {cluster_noun}s")
    if dropout is not None:
        parts.append(f"from some visit to the last (dropout) for {dropout}")
    return f"{var} is missing " + ", and ".join(parts)


def _last_share_remaining(td: TimeDiagnosis, var: str):
    curve = td.dropout.loc[(td.dropout["variable"] == var) & (td.dropout["group"] == "all")].dropna(
        subset=["share_remaining"])
    return (None, None) if curve.empty else (curve.iloc[-1]["share_remaining"], curve.iloc[-1]["visit"])


def _screen_phrases(td: TimeDiagnosis, var: str) -> list[str]:
    """The change point and history dependences of ``var``'s dropout below :data:`CHANGE_POINT_ALPHA`."""
    phrases = []
    for row in td.change_points.loc[td.change_points["variable"] == var].itertuples(index=False):
        if row.last_period_before is not None and row.p_value < CHANGE_POINT_ALPHA:
            phrases.append(f"the share of {row.variable} missing changes after {row.last_period_before} "
                           f"({100 * row.rate_before:.0f}% before, {100 * row.rate_after:.0f}% after; permutation "
                           f"{_p(row.p_value)})")
    history = td.history
    chosen = (history["variable"] == var) & (history["kind"] == "dropout") & (history["term"] != "time")
    for row in history.loc[chosen].itertuples(index=False):
        if row.p_value < CHANGE_POINT_ALPHA:
            direction = "higher" if row.log_odds_ratio > 0 else "lower"
            phrases.append(f"dropout from {row.variable} is more likely after a {direction} {row.term} (odds ratio "
                           f"{row.odds_ratio:.2f} per SD, {_p(row.p_value)})")
    return phrases


def time_sentences(td: TimeDiagnosis | None, *, focus: str | None, cluster_noun: str = "patient") -> list[str]:
    """One or two sentences: how the focus variable (else the first) goes missing over the visits, and what
    the screens point to (change in calendar time, dependence of dropout on the observed history)."""
    if td is None or not td.variables:
        return []
    var = focus if focus in td.variables else td.variables[0]
    first = f"Over the visits ({td.time}), " + _pattern_phrase(td, var, cluster_noun)
    share, visit = _last_share_remaining(td, var)
    if share is not None:
        where = f"visit {visit:g}" if td.visit_by == "time" else f"visit number {visit + 1:g}"
        first += f"; {100 * share:.0f}% of {cluster_noun}s are still observed at {where} (Kaplan-Meier)"
    lines = [first + "."]
    lines += _profile_sentence(td, cluster_noun)
    phrases = _screen_phrases(td, var)
    if phrases:
        lines.append("Screens, not tests (they cannot tell missing at random from not at random): "
                     + "; ".join(phrases) + ".")
    else:
        screened = []
        if (td.change_points["variable"] == var).any():
            screened.append("calendar time")
        if ((td.history["variable"] == var) & (td.history["kind"] == "dropout")).any():
            screened.append("dropout on the observed history")
        if screened:
            lines.append(f"The screens of {var}'s missingness over {' and of '.join(screened)} point to no clear "
                         "dependence (screens, not tests: they cannot tell missing at random from not at random).")
    return lines


def _profile_sentence(td: TimeDiagnosis, cluster_noun: str) -> list[str]:
    """The outcome's mean at the first visit in the earliest and in the latest dropout pattern, if published."""
    prof = td.profiles
    if prof.empty:
        return []
    first_visit = prof["visit"].min()
    start = prof.loc[prof["visit"] == first_visit].dropna(subset=["mean"]).sort_values("group")
    if len(start) < 2:
        return []
    early, late = start.iloc[0], start.iloc[-1]
    return [f"Mean {early['variable']} at the first visit was {early['mean']:.3g} among {cluster_noun}s "
            f"{early['label']} and {late['mean']:.3g} among those {late['label']} (profiles by dropout pattern; "
            "a difference means dropout is related to the values, which missing at random allows only through "
            "what was recorded)."]


def time_methods(record: OverTimeRecord | None) -> str:
    """The methods sentences for missingness over time (empty without a time column)."""
    if record is None:
        return ""
    by = "visit time" if record.visit_by == "time" else "visit number within the patient"
    text = (f" Over the visits ({record.time}, by {by}), each incomplete variable's share missing was described "
            "as intermittent or after dropout (Wilson intervals), each patient's sequence classed as intermittent "
            "or monotone, and the share still observed estimated by Kaplan-Meier")
    text += f", overall and by {record.site} (smaller units pooled)" if record.site else ""
    if record.time_is_date:
        text += ("; the share missing per calendar period (visits after dropout left out) was scanned for one "
                 "change point (binomial likelihood ratio, permutation p-value over whole patients; a screen)")
    text += ("; dropout and intermittent missingness were screened on time, the last observed value and "
             "the outcome so far with random-intercept logistic models (screens of missingness at random "
             "on the history, which cannot rule out missingness not at random)")
    if record.profiles:
        text += ("; instead of a spaghetti plot of single patients, the outcome's mean at each visit was drawn "
                 "per dropout pattern (the visit of the last recorded outcome; patterns merged until each holds "
                 "at least min_cell patients, points of fewer suppressed)")
    return text + "."


def time_figures(td: TimeDiagnosis) -> list:
    """Per variable: the share missing by visit (CI band), by calendar period (dates), the dropout curves."""
    out = []
    x_label = td.time if td.visit_by == "time" else "visit number"
    by_visit = td.by_visit.values
    for var in td.variables:
        rows = by_visit.loc[by_visit["variable"] == var]
        if td.visit_by == "order":
            rows = rows.assign(visit=rows["visit"] + 1)
        out.append(figures.missingness_over_time_plot(rows, variable=var, x_label=x_label))
        if td.by_period is not None:
            periods = td.by_period.values
            change = td.change_points.loc[td.change_points["variable"] == var]
            if (periods["variable"] == var).any():
                out.append(figures.calendar_missingness_plot(
                    periods.loc[periods["variable"] == var], variable=var,
                    change=None if change.empty else change.iloc[0].to_dict(), alpha=CHANGE_POINT_ALPHA))
        curves = td.dropout.loc[td.dropout["variable"] == var]
        if len(curves):
            if td.visit_by == "order":
                curves = curves.assign(visit=curves["visit"] + 1)
            out.append(figures.dropout_curves_plot(curves, variable=var, x_label=x_label, site=td.site,
                                                   pooled=td.pooled_sites.get(var, ())))
        profiles = td.profiles.loc[td.profiles["variable"] == var]
        if len(profiles):
            if td.visit_by == "order":
                profiles = profiles.assign(visit=profiles["visit"] + 1)
            out.append(figures.dropout_profiles_plot(profiles, variable=var, x_label=x_label))
    return out
