"""Step 2 over time (params ``time``): which visits complete-case analysis keeps, and the outcome it keeps there.

With visits within patients, complete-case selection drops visits, not
only patients, and it drops more of them late in follow-up (dropout), so
the complete-case population at late visits is the patients who stayed. For
each visit (the time value when visits are scheduled, the visit's number
within the patient otherwise: the rule of step 1, :mod:`hmlib.steps.diagnose_time`)
step 2 publishes

- the share of visits that are complete cases (every model variable recorded);
- the baseline outcome (each patient's first recorded value) of the patients
  who are complete cases at that visit, against that of all patients, and
  their standardised difference: the estimand shift over time, on a
  measure every patient has whether or not they stayed.

Disclosure control. No count is published. A visit's row is blanked when
its complete cases or its dropped visits number from 1 to ``min_cell - 1``
(its share and means would describe, or with step 1's visit totals give
back, a handful of patients), and when step 1 hides the visit's number of
patients, or the number missing or observed of a variable at that visit
(its by-visit table is suppressed with complements; with one incomplete
variable the share and step 1's visit total would give that count back).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.exceptions import DataWarning
from hmlib.stats.longitudinal import missingness_by_visit, prepare_visits
from hmlib.stats.longitudinal.visits import visit_key
from hmlib.steps.diagnose_time import MAX_SCHEDULED_VISITS, publish_by_visit

__all__ = ["VisitRetentionRow", "OverTimeCheck", "check_over_time", "over_time_sentences"]


@dataclass(frozen=True)
class VisitRetentionRow(Record):
    """One visit: the complete cases' share, and the baseline outcome of all patients and of those who are
    complete cases at the visit (``None``: suppressed)."""

    visit: float
    share_complete: float | None
    baseline_all: float | None
    baseline_complete: float | None
    smd: float | None


@dataclass(frozen=True)
class OverTimeCheck(Record):
    """Step 2 over time, published (the ``over_time`` field of ``artifacts/complete_case.json``)."""

    time: str
    visit_by: str
    outcome: str
    rows: tuple[VisitRetentionRow, ...]

    def frame(self) -> pd.DataFrame:
        """The rows as a table (NaN where suppressed); the visit numbered from 1 when visits are by order."""
        table = pd.DataFrame([r.__dict__ for r in self.rows],
                             columns=["visit", "share_complete", "baseline_all", "baseline_complete", "smd"])
        table = table.astype(float)
        if self.visit_by == "order":
            table["visit"] = table["visit"] + 1
        return table


def _smd(all_values: np.ndarray, cc_values: np.ndarray) -> float:
    """Complete cases minus all recorded, over the pooled SD of the two (Austin 2009), NaN without spread."""
    if all_values.size < 2 or cc_values.size < 2:
        return float("nan")
    pooled = np.sqrt((all_values.var(ddof=1) + cc_values.var(ddof=1)) / 2.0)
    return float((cc_values.mean() - all_values.mean()) / pooled) if pooled > 0 else float("nan")


def _baseline(outcome: np.ndarray, patient: np.ndarray, visits) -> np.ndarray:
    """Each patient's first recorded outcome (in time order); NaN for a patient who never records it."""
    order = np.lexsort((visits.time[visits.row_visit], patient))
    recorded = order[~np.isnan(outcome[order])]
    first = np.full(visits.starts.size - 1, np.nan)
    patients, at = np.unique(patient[recorded], return_index=True)
    first[patients] = outcome[recorded[at]]
    return first


def _step1_hidden_visits(frame, variables, cluster, time, by, min_cell) -> set:
    """Visits at which step 1's published by-visit table hides the number of patients, missing or observed."""
    if not variables:
        return set()
    rates = missingness_by_visit(frame, variables, cluster, time, by=by, min_cell=min_cell)
    published = publish_by_visit(rates.table, min_cell)
    # a visit's complete-case share with step 1's visit total gives back the dropped visits, which are the
    # missing count of the variable when one variable alone is incomplete: those are the cells that matter
    columns = [c for c in ("n_patients", "n_missing", "n_observed") if c in published.mask.columns]
    hidden = published.mask[columns].any(axis=1).to_numpy()
    return set(published.values.loc[hidden, "visit"].astype(float))


def check_over_time(registry, complete: np.ndarray) -> OverTimeCheck | None:
    """Step 2's table over the visits (module docstring), or None without ``time``.

    Parameters
    ----------
    registry : hmlib.data.Registry
        With ``params.time``; its values in ``registry.time_values`` or among the model columns.
    complete : array of bool
        The complete-case mask over ``registry.frame``'s rows.

    Returns
    -------
    OverTimeCheck or None
    """
    p = registry.params
    if p.time is None:
        return None
    frame = registry.frame
    if p.time not in frame.columns:
        frame = frame.assign(**{p.time: registry.time_values.to_numpy()})
    min_cell = p.privacy.min_cell
    incomplete = [c for c in dict.fromkeys([p.outcome, *p.predictors]) if frame[c].isna().any()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        visits = prepare_visits(frame, incomplete, p.cluster, p.time, where="step 2 over time")
        by = ("order" if visits.time_is_datetime or np.unique(visits.time).size > MAX_SCHEDULED_VISITS
              else "time")
        key = visit_key(visits, by, p.time, "step 2 over time")[visits.row_visit]
        hidden_by_step1 = _step1_hidden_visits(frame, incomplete, p.cluster, p.time, by, min_cell)
    outcome = pd.to_numeric(frame[p.outcome], errors="coerce").to_numpy(dtype=float)
    complete = np.asarray(complete, dtype=bool)
    patient = visits.patient[visits.row_visit]
    baseline = _baseline(outcome, patient, visits)
    known = ~np.isnan(baseline)
    rows = []
    for visit in np.unique(key):
        at = key == visit
        n_complete, n_dropped = int((at & complete).sum()), int((at & ~complete).sum())
        small = any(0 < n < min_cell for n in (n_complete, n_dropped))
        if small or float(visit) in hidden_by_step1:
            rows.append(VisitRetentionRow(float(visit), None, None, None, None))
            continue
        all_values = baseline[known]
        stayed = np.unique(patient[at & complete])
        cc_values = baseline[stayed][known[stayed]]
        rows.append(VisitRetentionRow(
            float(visit), n_complete / (n_complete + n_dropped),
            float(all_values.mean()) if all_values.size else None,
            float(cc_values.mean()) if cc_values.size else None,
            None if np.isnan(s := _smd(all_values, cc_values)) else s))
    return OverTimeCheck(time=p.time, visit_by=by, outcome=p.outcome, rows=tuple(rows))


def over_time_sentences(check: OverTimeCheck | None) -> list[str]:
    """One or two sentences: how the complete cases' share moves from the first to the last visit, and the
    outcome's shift at the last visit with a published row."""
    if check is None:
        return []
    table = check.frame().dropna(subset=["share_complete"])
    if len(table) < 2:
        return ([f"Over the visits ({check.time}) the complete cases' share cannot be shown: the visits' counts "
                 "are small or hidden."] if check.rows else [])
    first, last = table.iloc[0], table.iloc[-1]
    where = "visit" if check.visit_by == "order" else check.time
    out = [f"Over the visits: complete cases are {100 * first['share_complete']:.0f}% of the visits at {where} "
           f"{first['visit']:g} and {100 * last['share_complete']:.0f}% at {where} {last['visit']:g}."]
    shifted = table.dropna(subset=["smd"])
    if len(shifted):
        row = shifted.iloc[-1]
        out.append(f"The patients who are complete cases at {where} {row['visit']:g} had a mean baseline "
                   f"{check.outcome} of {row['baseline_complete']:.3g} against {row['baseline_all']:.3g} in all "
                   f"patients (standardised difference {row['smd']:+.2f}): the complete-case population late in "
                   "follow-up is the patients who stayed and were fully documented.")
    return out
