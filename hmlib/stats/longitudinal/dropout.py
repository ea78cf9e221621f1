"""Time to dropout: the share of patients still observed at each visit (Kaplan-Meier), overall and by site.

A patient *drops out* of a variable at the first visit of its trailing run
of missing values (:func:`~hmlib.stats.longitudinal.visits.trailing_run`)
when that run starts after the patient's first visit; the patient is
*censored* at the last visit when the variable is observed there (follow-up
ended without dropout). Patients who never have the variable observed are
not in the risk set (counted apart). At visit ``g`` the risk set holds the
patients whose first visit is before ``g`` and who have neither dropped out
before ``g`` nor been censored before it; the Kaplan-Meier estimate is
``S(g) = prod_{g' <= g} (1 - d_g' / r_g')`` with Greenwood's variance
``S^2 sum d / (r (r - d))`` and a log(-log) interval (Kalbfleisch &
Prentice 2002, section 1.4).

References
----------
Kaplan EL, Meier P (1958). JASA 53:457-481. Kalbfleisch JD, Prentice RL
(2002). The Statistical Analysis of Failure Time Data, 2nd ed. Wiley.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError
from hmlib.stats.longitudinal.visits import (blank_suppressed, check_min_cell, mark_small_cells, prepare_visits,
                                             trailing_run, visit_key)
from hmlib.stats.missingness.counts import check_level

__all__ = ["DropoutResult", "time_to_dropout", "kaplan_meier"]


def kaplan_meier(entry, exit_, event, grid, level: float = 0.95) -> pd.DataFrame:
    """Kaplan-Meier share without the event at each grid point, with Greenwood log(-log) limits.

    Parameters
    ----------
    entry, exit_ : numpy.ndarray of float
        Each patient's first visit and the visit of dropout or censoring (grid values).
    event : numpy.ndarray of bool
        Dropout (True) or censoring at ``exit_``.
    grid : numpy.ndarray of float
        The visits, sorted.
    level : float

    Returns
    -------
    pandas.DataFrame
        ``visit, n_at_risk, n_dropout, n_censored, share_remaining, ci_lower, ci_upper``; at the first
        grid point the share is 1 (nobody can drop out at a first visit).
    """
    at_risk = ((entry[None, :] < grid[:, None]) & (exit_[None, :] >= grid[:, None])).sum(axis=1)
    dropouts = ((exit_[None, :] == grid[:, None]) & event[None, :]).sum(axis=1)
    censored = ((exit_[None, :] == grid[:, None]) & ~event[None, :]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - dropouts / np.where(at_risk > 0, at_risk, 1), 1.0)
        share = np.cumprod(factor)
        terms = np.where((at_risk > dropouts) & (at_risk > 0),
                         dropouts / (at_risk * (at_risk - dropouts).clip(min=1)), 0.0)
        cum = np.cumsum(terms)
        z = stats.norm.ppf(0.5 + level / 2.0)
        # log(-log S) interval: S^exp(+-z se), se = sqrt(cum) / |log S|
        log_s = np.log(share)
        se = np.sqrt(cum) / np.abs(log_s)
        lower = np.where(cum > 0, share ** np.exp(z * se), np.nan)
        upper = np.where(cum > 0, share ** np.exp(-z * se), np.nan)
    return pd.DataFrame({"visit": grid, "n_at_risk": at_risk, "n_dropout": dropouts, "n_censored": censored,
                         "share_remaining": share, "ci_lower": lower, "ci_upper": upper})


@dataclass(frozen=True)
class DropoutResult:
    """Share of patients with a variable still observed, by visit, overall and per site.

    Attributes
    ----------
    table : pandas.DataFrame
        ``site, visit, n_at_risk, n_dropout, n_censored, share_remaining, ci_lower, ci_upper,
        suppressed`` (``site`` is ``"all"`` for the whole registry, then one block per site in sorted
        order; ``suppressed`` where a count of patients is from 1 to ``min_cell - 1``).
    variable : str
    by : str
    n_patients : int
        Patients in the risk set (observed at least once).
    n_never_observed : int
    n_dropouts : int
    n_duplicate_rows : int
    level : float
    min_cell : int
    """

    table: pd.DataFrame
    variable: str
    by: str
    n_patients: int
    n_never_observed: int
    n_dropouts: int
    n_duplicate_rows: int
    level: float
    min_cell: int

    def to_frame(self) -> pd.DataFrame:
        """The table with counts, shares and limits of suppressed rows blanked (NaN)."""
        return blank_suppressed(self.table, ["n_at_risk", "n_dropout", "n_censored", "share_remaining",
                                             "ci_lower", "ci_upper"])


def time_to_dropout(frame: pd.DataFrame, variable: str, patient: str, time: str, *, site: str | None = None,
                    by: str = "time", level: float = 0.95, min_cell: int = 11) -> DropoutResult:
    """Kaplan-Meier share of patients who have not dropped out of ``variable``, by visit and site.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, any order (not modified).
    variable, patient, time : str
        The variable; the patient column; the visit time.
    site : str, optional
        Site column: a curve per site besides the overall one.
    by : {"time", "order"}
        Visits by their time value or by their number within the patient.
    level : float, default 0.95
    min_cell : int, default 11

    Returns
    -------
    DropoutResult

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`; the variable never observed.
    """
    level = check_level(level)
    min_cell = check_min_cell(min_cell)
    visits = prepare_visits(frame, [variable], patient, time, site=site, where="time_to_dropout")
    key = visit_key(visits, by, time, "time_to_dropout")
    missing = visits.missing[variable]
    trailing = trailing_run(missing, visits.starts)
    firsts, lasts = visits.starts[:-1], visits.starts[1:] - 1
    never = trailing[firsts]
    if never.all():
        raise DataError(f"time_to_dropout: {variable} is never observed.")
    # the first visit of the trailing run, or the last visit when there is none
    starts_run = np.flatnonzero(trailing & np.r_[True, ~trailing[:-1]])
    run_start = np.full(visits.n_patients, -1)
    run_start[visits.patient[starts_run]] = starts_run
    event = (run_start >= 0) & ~never
    exit_ = np.where(event, key[np.maximum(run_start, 0)], key[lasts])
    entry = key[firsts]
    grid = np.unique(key)
    keep = ~never
    blocks = [kaplan_meier(entry[keep], exit_[keep], event[keep], grid, level).assign(site="all")]
    if site is not None:
        site_of_patient = visits.site[firsts]
        labels = pd.unique(pd.Series(site_of_patient[keep])).tolist()
        try:
            labels = sorted(labels)
        except TypeError:
            labels = sorted(labels, key=str)
        for label in labels:
            sel = keep & (site_of_patient == label)
            blocks.append(kaplan_meier(entry[sel], exit_[sel], event[sel], grid, level).assign(site=label))
    table = pd.concat(blocks, ignore_index=True)
    table = table[["site"] + [c for c in table.columns if c != "site"]]
    table = mark_small_cells(table, ["n_at_risk", "n_dropout", "n_censored"], min_cell)
    return DropoutResult(table=table, variable=variable, by=by, n_patients=int(keep.sum()),
                         n_never_observed=int(never.sum()), n_dropouts=int(event.sum()),
                         n_duplicate_rows=visits.n_duplicate_rows, level=level, min_cell=min_cell)
