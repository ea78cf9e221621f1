"""Screens of missingness on the observed history: time, the last observed value, the outcome so far.

Missing at random in longitudinal data usually means *MAR on history*: the
probability that a value is missing at visit ``t`` may depend on what was
observed before (the last observed value of the same variable, the outcome
so far) but not on the unobserved value itself. These screens fit a
random-intercept logistic model of a missingness event at each visit on the
observed history:

``logit P(event_it) = b0 + b_time z(time_it) + b_last z(last_it) [+ b_outcome z(outcome_last_it)] + u_cluster``

``time_it`` is the time since the patient's first visit (days for dates),
``last_it`` the last observed value of the variable before visit ``t``,
``outcome_last_it`` the last observed outcome before ``t``; ``z`` standardises
over the model's rows, so each log odds ratio is per SD (the SD is in the
table, so per unit = estimate / SD). Wald intervals and p-values; the fit is
:func:`hmlib.stats.mixed.fit_random_intercept` (Laplace by default).

Two events:

``dropout``
    the first visit of the trailing run of missing values (a discrete-time
    hazard of dropout); rows are the visits at risk (after the first
    observed value, up to and including the dropout visit); the random
    intercept is the site's when a site column is given (a patient drops out
    once, so a patient intercept is hardly identified), else the patient's,
    which can be degenerate: pbcseq's chol gives a patient SD of 18.9 in lme4
    and here alike, with meaningless standard errors; give a site.
``intermittent``
    missing at a visit before dropout; rows are the visits after the first
    observed value and before the trailing run; the random intercept is the
    patient's.

These are screens, not tests of MAR: no test on the observed data can tell
MAR from missing not at random (the unobserved values are, by definition,
unobserved; Molenberghs et al. 2008). A dependence on the history says that
an analysis ignoring the history (complete cases, LOCF) is biased and that
the history must be in the imputation or likelihood model; its absence says
nothing about MNAR. The Wald p-values treat the model as right; rows are
not independent beyond the random intercept.

References
----------
Molenberghs G, Beunckens C, Sotto C, Kenward MG (2008). Every missingness
not at random model has a missingness at random counterpart with equal fit.
JRSS B 70(2):371-388. Little RJA (1995). Modeling the drop-out mechanism in
repeated-measures studies. JASA 90:1112-1121.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError, ParamsError
from hmlib.stats.longitudinal.visits import check_min_cell, prepare_visits, trailing_run
from hmlib.stats.missingness.counts import check_level, is_numeric
from hmlib.stats.mixed import fit_random_intercept

__all__ = ["HistoryScreenResult", "missingness_history_screen"]

KINDS = ("dropout", "intermittent")


@dataclass(frozen=True)
class HistoryScreenResult:
    """A random-intercept logistic model of a missingness event on the observed history (a screen).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per term: ``term, sd, log_odds_ratio, std_error, ci_lower, ci_upper, odds_ratio,
        p_value`` (per SD of the term; ``sd`` is that SD, NaN for the intercept).
    cluster_sd : float
        SD of the random intercept (logit scale).
    kind : str
    variable : str
    outcome : str or None
    cluster_name : str
    n_rows, n_events, n_patients, n_clusters : int
    n_rows_without_history : int
        Visits at risk left out because the outcome had not yet been observed.
    small_cell : bool
        Fewer than ``min_cell`` events or non-events: too few for a report (and too few for the model).
    converged : bool
    level : float
    formula : str
    """

    table: pd.DataFrame
    cluster_sd: float
    kind: str
    variable: str
    outcome: str | None
    cluster_name: str
    n_rows: int
    n_events: int
    n_patients: int
    n_clusters: int
    n_rows_without_history: int
    small_cell: bool
    converged: bool
    level: float
    formula: str

    def p_value(self, term: str) -> float:
        """The Wald p-value of a term (``"time"``, ``"last <variable>"``, ``"last <outcome>"``)."""
        return float(self.table.set_index("term").loc[term, "p_value"])


def _last_observed(values: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Per visit, the last non-missing value among the patient's earlier visits (NaN if none)."""
    s = pd.Series(values)
    return s.groupby(patient).shift(1).groupby(patient).ffill().to_numpy(dtype=float)


def _history_rows(visits, frame: pd.DataFrame, variable: str, outcome: str | None, kind: str):
    """Event, covariates and cluster labels of the model's rows, and the count left out for lack of history."""
    missing = visits.missing[variable]
    trailing = trailing_run(missing, visits.starts)
    values = np.where(missing, np.nan, frame[variable].iloc[visits.rows].to_numpy(dtype=float))
    last = _last_observed(values, visits.patient)
    started = ~np.isnan(last)
    run_start = trailing & np.r_[True, ~trailing[:-1]] & (visits.visit_number > 0)
    if kind == "dropout":
        rows, event = started & (~trailing | run_start), run_start
    else:
        rows, event = started & ~trailing, missing
    first_time = visits.time[visits.starts[:-1]][visits.patient]
    covariates = {"time": visits.time - first_time, f"last {variable}": last}
    if outcome is not None and outcome != variable:
        out_missing = frame[outcome].iloc[visits.rows].isna().to_numpy()
        out_values = np.where(out_missing, np.nan, frame[outcome].iloc[visits.rows].to_numpy(dtype=float))
        covariates[f"last {outcome}"] = _last_observed(out_values, visits.patient)
    has_history = np.all([~np.isnan(c) for c in covariates.values()], axis=0)
    n_without = int((rows & ~has_history).sum())
    rows &= has_history
    return event[rows].astype(float), {k: c[rows] for k, c in covariates.items()}, rows, n_without


def _check_arguments(frame, variable, outcome, kind, nagq):
    if kind not in KINDS:
        raise ParamsError(f"missingness_history_screen: kind must be one of {KINDS}, got {kind!r}.")
    for column in [variable] + ([outcome] if outcome else []):
        if column in frame.columns and not is_numeric(frame[column]):
            raise DataError(f"missingness_history_screen: {column} must be numeric (its last observed value "
                            "enters the model).")
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 1:
        raise ParamsError(f"nagq must be a positive integer, got {nagq!r}.")


def missingness_history_screen(frame: pd.DataFrame, variable: str, patient: str, time: str, *,
                               outcome: str | None = None, site: str | None = None, kind: str = "dropout",
                               level: float = 0.95, min_cell: int = 11, nagq: int = 1) -> HistoryScreenResult:
    """Screen whether dropout or missed visits depend on time, the last observed value and the outcome so far.

    A screen, not a test of MAR (see the module docstring): a dependence on
    the observed history is evidence against MCAR and for conditioning on
    the history; it is not evidence for or against MNAR.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, any order (not modified).
    variable : str
        Numeric variable whose missingness is screened.
    patient, time : str
        Patient column; visit time (numeric or datetime).
    outcome : str, optional
        Numeric outcome whose last observed value enters too (ignored when it is ``variable``).
    site : str, optional
        Site column; the cluster of the dropout model.
    kind : {"dropout", "intermittent"}
    level : float, default 0.95
    min_cell : int, default 11
        Fewer events (or non-events) than this mark the result ``small_cell``.
    nagq : int, default 1
        Quadrature nodes (1: Laplace), as :func:`hmlib.stats.mixed.fit_random_intercept`.

    Returns
    -------
    HistoryScreenResult

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`; a non-numeric variable or outcome.
    FitError
        No events or no rows at risk, or a model that cannot be fitted.
    ParamsError
        Unknown ``kind``, bad ``nagq``, ``level`` or ``min_cell``.
    """
    level = check_level(level)
    min_cell = check_min_cell(min_cell)
    _check_arguments(frame, variable, outcome, kind, nagq)
    visits = prepare_visits(frame, [variable], patient, time, site=site, where="missingness_history_screen")
    event, covariates, rows, n_without = _history_rows(visits, frame, variable, outcome, kind)
    use_site = kind == "dropout" and site is not None
    cluster_name = site if use_site else patient
    groups = visits.site[rows] if use_site else visits.patient[rows]
    names = list(covariates)
    raw = np.column_stack([covariates[k] for k in names])
    sds = raw.std(axis=0)
    if not (sds > 0).all():
        flat = [k for k, s in zip(names, sds) if not s > 0]
        raise DataError(f"missingness_history_screen: {flat} do not vary over the visits at risk.")
    X = np.column_stack([np.ones(raw.shape[0]), (raw - raw.mean(axis=0)) / sds])
    fit = fit_random_intercept(event, X, groups, family="binomial", nagq=int(nagq),
                               term_names=["Intercept", *names], cluster_name=str(cluster_name))
    z = stats.norm.ppf(0.5 + level / 2.0)
    table = pd.DataFrame({"term": list(fit.term_names), "sd": np.r_[np.nan, sds],
                          "log_odds_ratio": fit.coef, "std_error": fit.std_error,
                          "ci_lower": fit.coef - z * fit.std_error, "ci_upper": fit.coef + z * fit.std_error})
    table["odds_ratio"] = np.exp(table["log_odds_ratio"])
    table["p_value"] = 2.0 * stats.norm.sf(np.abs(table["log_odds_ratio"] / table["std_error"]))
    n_events = int(event.sum())
    formula = f"{kind} event ~ " + " + ".join(f"z({k})" for k in names) + f" + (1 | {cluster_name})"
    return HistoryScreenResult(
        table=table, cluster_sd=float(fit.cluster_sd), kind=kind, variable=variable,
        outcome=outcome if outcome != variable else None, cluster_name=str(cluster_name), n_rows=int(event.size),
        n_events=n_events, n_patients=int(np.unique(visits.patient[rows]).size), n_clusters=int(fit.n_clusters),
        n_rows_without_history=n_without, small_cell=bool(min(n_events, event.size - n_events) < min_cell),
        converged=bool(fit.converged), level=level, formula=formula)
