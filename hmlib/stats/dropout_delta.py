"""MNAR delta adjustment after dropout, and its tipping point, for repeated measures (#16).

Under MAR the values a patient would have had after dropping out are
predicted from what was recorded before. A clinical team often fears the
opposite: patients leave because they are doing worse, so their unrecorded
values are *lower* than any MAR model predicts. The delta adjustment
states that fear as a number (a pattern-mixture model; Carpenter & Kenward
2013, ch. 10; Cro et al. 2020): after imputation, every imputed value of the
variable that lies *after the patient's last recorded visit of that
variable* is shifted by ``delta``, and the analysis is re-run.

Terms
-----
Post-dropout cell (:func:`dropout_cells`)
    A missing value of the variable in the patient's trailing run (missing
    from that visit to the patient's last row) when the patient recorded the
    variable at some earlier visit. Intermittent gaps (a missing value
    followed later by a recorded one) are *not* shifted: they are missed
    visits, not dropout. A patient who never records the variable has no
    last recorded visit and is not shifted either (counted in
    ``n_never_observed_patients``; their values are imputed from other
    patients, which is what their own missingness mechanism governs).
    Visits are those of :func:`hmlib.stats.longitudinal.visits.prepare_visits`
    (any row order, duplicates one visit). Dropout is seen only where the
    frame has rows after it (a full grid of scheduled visits); with only
    the visits that took place there is nothing after dropout to shift.
Form of the shift (``form``)
    ``"constant"`` (default, the issue's "values after the last observed
    visit shifted by delta", and the usual delta-based MI for continuous
    outcomes, Cro et al. 2020 sec. 4): every post-dropout value moves by
    ``delta``, in the variable's units. ``"growing"``: the shift is ``delta
    x`` (time since the last recorded visit), ``delta`` in the variable's
    units per unit of time (days for a datetime column): a patient who
    deteriorates after leaving drifts further the longer they are away,
    which is what sequential delta adjustment (a shift at each visit carried
    into the next one's regression) produces for a declining outcome. The
    constant form is the default because it is the one a reader can check
    by hand and the one the tipping point is usually quoted in.
Tipping point (:func:`dropout_tipping_point`)
    Exactly the definition of step 5 (:mod:`hmlib.stats.sensitivity`):
    the conclusion about the focus coefficient at ``delta`` is judged
    against the conclusion at ``delta = 0`` by a
    :class:`~hmlib.stats.sensitivity.ChangeRule`; on each side of 0 the
    smallest ``|delta|`` on a grid at which the conclusion changes, refined
    by bisection (:func:`~hmlib.stats.sensitivity.find_tipping_point`). As
    in step 5 the grid is in SDs of the recorded values of the variable
    (``delta_sd``), reported also in its units (``delta_units``). The
    analysis model at each ``delta`` is ``outcome ~ predictors + time + (1 +
    time | cluster)`` (:func:`hmlib.stats.mixed.fit_mixed`, ML) on every
    completed data set, pooled by Rubin's rules
    (:func:`hmlib.stats.pooling.rubin_arrays`). The imputations are not
    redrawn: the same completed sets are shifted at every delta (the
    standard delta adjustment after imputation; common random numbers make
    the pooled estimate move smoothly with delta). ``delta = 0`` reproduces
    the unshifted analysis exactly.

References
----------
Carpenter JR, Kenward MG (2013). Multiple Imputation and its Application. Wiley, ch. 10.
Cro S, Morris TP, Kenward MG, Carpenter JR (2020). Sensitivity analysis for clinical
trials with missing continuous outcome data using controlled multiple imputation: a
practical guide. Stat Med 39:2815-2842.
Ratitch B, O'Kelly M, Tosiello R (2013). Missing data in clinical trials: from clinical
assumptions to statistical analysis using pattern mixture models. Pharm Stat 12:337-347.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, ParamsError
from hmlib.stats.longitudinal.patterns import classify_sequences
from hmlib.stats.longitudinal.visits import prepare_visits, trailing_run
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed
from hmlib.stats.pooling import rubin_arrays
from hmlib.stats.sensitivity import ChangeRule, find_tipping_point

__all__ = ["DropoutCells", "dropout_cells", "visit_interval", "shift_after_dropout", "pooled_random_slope_coefficient",
           "DropoutTippingPoint", "dropout_tipping_point", "recorded_sd", "SHIFT_FORMS", "DEFAULT_GRID_SD"]

#: The forms of the shift (module docstring).
SHIFT_FORMS = ("constant", "growing")
#: The default grid of ``delta`` in SDs of the recorded values (both sides of 0).
DEFAULT_GRID_SD = (-2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass(frozen=True, eq=False)
class DropoutCells:
    """Which missing values of a variable lie after the patient's last recorded visit of it.

    Attributes
    ----------
    variable : str
    mask : numpy.ndarray of bool
        Per input row (input order): missing and after dropout.
    time_since_last : numpy.ndarray of float
        Per input row: time from the patient's last recorded visit of the variable (NaN outside ``mask``).
    n_cells : int
        Rows in ``mask``.
    n_patients_dropped_out : int
        Patients with at least one post-dropout row.
    n_intermittent_cells : int
        Missing rows followed later by a recorded value (not shifted).
    n_never_observed_patients : int
        Patients who never record the variable (not shifted).
    """

    variable: str
    mask: np.ndarray
    time_since_last: np.ndarray
    n_cells: int
    n_patients_dropped_out: int
    n_intermittent_cells: int
    n_never_observed_patients: int


def dropout_cells(frame: pd.DataFrame, variable: str, *, cluster: str, time: str) -> DropoutCells:
    """The missing values of ``variable`` after each patient's last recorded visit of it (module docstring).

    Parameters
    ----------
    frame : pandas.DataFrame
        The incomplete data, one row per patient and visit, any order (not modified).
    variable, cluster, time : str

    Returns
    -------
    DropoutCells

    Raises
    ------
    DataError
        As :func:`~hmlib.stats.longitudinal.visits.prepare_visits`.

    Examples
    --------
    >>> frame = pd.DataFrame({"id": [1] * 5, "week": [0, 1, 2, 3, 4], "y": [5.0, None, 6.0, None, None]})
    >>> dropout_cells(frame, "y", cluster="id", time="week").mask.tolist()
    [False, False, False, True, True]
    """
    visits = prepare_visits(frame, [variable], cluster, time, where="dropout_cells")
    missing = visits.missing[variable]
    trailing = trailing_run(missing, visits.starts)
    never = classify_sequences(missing, visits.starts) == 4
    never_visit = np.repeat(never, np.diff(visits.starts))
    after = trailing & ~never_visit
    index = np.where(~missing, np.arange(missing.size), 0)
    last_time = visits.time[np.maximum.accumulate(index)] if index.size else visits.time
    row_missing = frame[variable].isna().to_numpy()
    row_visit = visits.row_visit
    mask = after[row_visit] & row_missing
    since = np.where(mask, visits.time[row_visit] - last_time[row_visit], np.nan)
    intermittent = row_missing & missing[row_visit] & ~trailing[row_visit]
    return DropoutCells(variable=variable, mask=mask, time_since_last=since, n_cells=int(mask.sum()),
                        n_patients_dropped_out=int(np.unique(visits.patient[row_visit[mask]]).size),
                        n_intermittent_cells=int(intermittent.sum()), n_never_observed_patients=int(never.sum()))


def visit_interval(frame: pd.DataFrame, *, cluster: str, time: str) -> float:
    """The registry's typical time between a patient's consecutive visits: the median of those gaps.

    The time unit in which step 5 states the growing delta (``delta`` SDs
    per visit interval, :mod:`hmlib.steps.sensitivity_dropout`), so that a
    grid in SDs means the same whether the time column counts days, weeks
    or visits.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient and visit, any order (duplicate ``(patient, time)`` rows are one visit).
    cluster, time : str

    Returns
    -------
    float
        In the time column's units (days for a datetime column); NaN when no patient has two visits.

    Examples
    --------
    >>> frame = pd.DataFrame({"id": [1, 1, 1, 2, 2], "week": [4, 0, 2, 0, 4]})
    >>> visit_interval(frame, cluster="id", time="week")
    2.0
    """
    visits = prepare_visits(frame, [], cluster, time, where="visit_interval")
    gaps = np.diff(visits.time)[np.diff(visits.patient) == 0]
    return float(np.median(gaps)) if gaps.size else float("nan")


def _check_completed(completed, frame: pd.DataFrame, variable: str) -> list:
    frames = list(completed)
    if not frames:
        raise DataError("no completed data sets were given.")
    for k, done in enumerate(frames):
        if variable not in done.columns:
            raise DataError(f"completed data set {k + 1} has no column {variable!r}.")
        if not done.index.equals(frame.index):
            raise DataError(f"completed data set {k + 1} does not have the rows of the incomplete frame (its index "
                            "differs); pass the frame that was imputed.")
    return frames


def shift_after_dropout(completed, frame: pd.DataFrame, variable: str, delta: float, *, cluster: str, time: str,
                        form: str = "constant", cells: DropoutCells | None = None) -> list:
    """Copies of the completed data sets with the post-dropout imputed values of ``variable`` shifted.

    Parameters
    ----------
    completed : sequence of pandas.DataFrame
        Completed data sets (e.g. ``impute_random_slopes(...).completed(frame)``), each with the
        incomplete frame's index; not modified.
    frame : pandas.DataFrame
        The incomplete data: its missing cells of ``variable`` are the imputed ones.
    variable : str
        A numeric variable.
    delta : float
        The shift, in the variable's units (``form="constant"``) or units per unit of time
        (``form="growing"``).
    cluster, time : str
    form : {"constant", "growing"}
        Module docstring.
    cells : DropoutCells, optional
        :func:`dropout_cells`' answer for these data (computed when absent).

    Returns
    -------
    list of pandas.DataFrame
        Recorded values and intermittent gaps untouched; ``delta = 0`` returns equal copies.

    Raises
    ------
    ParamsError
        Unknown ``form`` or non-finite ``delta``.
    DataError
        A completed set without the variable or with other rows.
    """
    if form not in SHIFT_FORMS:
        raise ParamsError(f"form must be one of {SHIFT_FORMS}, got {form!r}.")
    if not np.isfinite(delta):
        raise ParamsError(f"delta must be a finite number, got {delta!r}.")
    frames = _check_completed(completed, frame, variable)
    cells = cells if cells is not None else dropout_cells(frame, variable, cluster=cluster, time=time)
    shift = np.zeros(len(frame))
    shift[cells.mask] = delta if form == "constant" else delta * cells.time_since_last[cells.mask]
    out = []
    for done in frames:
        copy = done.copy()
        values = pd.to_numeric(copy[variable], errors="raise").to_numpy(dtype=float, copy=True)
        copy[variable] = values + shift
        out.append(copy)
    return out


def _numeric(done: pd.DataFrame, name: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(done[name]):
        raise DataError(f"{name!r} holds dates; the analysis model needs a numeric time (e.g. years since entry).")
    return pd.to_numeric(done[name], errors="raise").to_numpy(dtype=float)


def pooled_random_slope_coefficient(frames, *, outcome: str, predictors: Sequence[str], cluster: str, time: str,
                                    focus: str, level: float = 0.95) -> dict:
    """Rubin-pooled coefficient of ``focus`` in ``outcome ~ predictors + time + (1 + time | cluster)``.

    Parameters
    ----------
    frames : sequence of pandas.DataFrame
        Completed data sets (at least 2); rows still missing an analysis column are dropped.
    outcome, cluster, time : str
    predictors : sequence of str
        Fixed effects besides the intercept (``time`` is added when absent).
    focus : str
        One of the fixed effects.
    level : float

    Returns
    -------
    dict
        ``estimate, std_error, ci_lower, ci_upper, fmi, m`` (:func:`~hmlib.stats.pooling.rubin_arrays`;
        complete-data df ``n - p - 4``, the model's parameters: ``p`` fixed effects, 3 for the
        patients' covariance and the residual variance).
    """
    terms = list(dict.fromkeys([*predictors, time]))
    if focus not in terms:
        raise DataError(f"focus {focus!r} is not a term of the analysis model ({terms}).")
    est, var, n_rows = [], [], []
    for done in frames:
        used = done.dropna(subset=[outcome, cluster, *terms])
        X = np.column_stack([np.ones(len(used)), *(_numeric(used, c) for c in terms)])
        level_ = RandomLevel(cluster, used[cluster].to_numpy(), slopes={time: _numeric(used, time)})
        fit = fit_mixed(_numeric(used, outcome), X, RandomEffects((level_,)), term_names=["Intercept", *terms])
        k = 1 + terms.index(focus)
        est.append(fit.coef[k])
        var.append(fit.std_error[k] ** 2)
        n_rows.append(len(used))
    pooled = rubin_arrays(est, var, max(min(n_rows) - len(terms) - 5, 1), level=level)
    return {"estimate": float(pooled["estimate"]), "std_error": float(pooled["std_error"]),
            "ci_lower": float(pooled["ci_lower"]), "ci_upper": float(pooled["ci_upper"]),
            "fmi": float(pooled["fmi"]), "m": int(pooled["m"])}


@dataclass(frozen=True, eq=False)
class DropoutTippingPoint:
    """The delta-after-dropout sensitivity analysis of one coefficient.

    Attributes
    ----------
    variable, focus, form : str
    scale : float
        SD of the recorded values of ``variable`` (units per ``delta_sd``).
    reference : dict
        The pooled ``estimate, ci_lower, ci_upper`` at ``delta = 0``.
    evaluations : pandas.DataFrame
        Every delta evaluated (grid and bisection), sorted: ``delta_sd, delta_units, estimate,
        ci_lower, ci_upper, change``.
    tipping : dict
        :func:`~hmlib.stats.sensitivity.find_tipping_point`'s answer (``positive`` and ``negative``).
    cells : DropoutCells
    """

    variable: str
    focus: str
    form: str
    scale: float
    reference: dict
    evaluations: pd.DataFrame
    tipping: dict
    cells: DropoutCells

    def to_frame(self) -> pd.DataFrame:
        """One row per side: ``side, found, delta_sd, delta_units, estimate, ci_lower, ci_upper, change``."""
        keys = ("found", "delta_sd", "delta_units", "estimate", "ci_lower", "ci_upper", "change", "grid_max_sd")
        return pd.DataFrame([{"side": side, **{k: self.tipping[side][k] for k in keys}}
                             for side in ("negative", "positive")])


def recorded_sd(values: pd.Series) -> float:
    """SD of the recorded values (``ddof=1``; 1 when it is 0 or undefined): the unit of ``delta_sd``.

    Raises
    ------
    ValueError
        Values that are not numbers.
    """
    recorded = pd.to_numeric(values, errors="raise").dropna().to_numpy(dtype=float)
    sd = float(np.std(recorded, ddof=1)) if recorded.size > 1 else 1.0
    return sd if np.isfinite(sd) and sd > 0 else 1.0


def dropout_tipping_point(completed, frame: pd.DataFrame, *, variable: str, outcome: str, predictors, cluster: str,
                          time: str, focus: str, rule: ChangeRule, deltas_sd=DEFAULT_GRID_SD,
                          form: str = "constant", bisection_steps: int = 6, analyse=None) -> DropoutTippingPoint:
    """Tipping point of the conclusion about ``focus`` over the delta applied after dropout.

    Parameters
    ----------
    completed : sequence of pandas.DataFrame
        Completed data sets of ``frame`` (at least 2 for Rubin's rules).
    frame : pandas.DataFrame
        The incomplete data.
    variable : str
        The variable whose post-dropout imputed values are shifted (the outcome or a covariate).
    outcome, predictors, cluster, time, focus
        The analysis model (:func:`pooled_random_slope_coefficient`).
    rule : hmlib.stats.sensitivity.ChangeRule
        When a conclusion has changed (step 5's rule, with ``R`` on the focus coefficient's scale).
    deltas_sd : sequence of float
        The grid, in SDs of the recorded values of ``variable`` (0 is the reference).
    form : {"constant", "growing"}
    bisection_steps : int
    analyse : callable, optional
        ``analyse(frames) -> dict`` with ``estimate, ci_lower, ci_upper``, replacing the
        random-slope analysis model (for another model, or for tests).

    Returns
    -------
    DropoutTippingPoint

    Raises
    ------
    DataError
        No recorded value of ``variable`` or no post-dropout cell (nothing to shift); as
        :func:`shift_after_dropout`.
    """
    cells = dropout_cells(frame, variable, cluster=cluster, time=time)
    if cells.n_cells == 0:
        raise DataError(f"{variable!r} has no missing values after a patient's last recorded visit of it: there "
                        "is no dropout to shift (is there a row for every scheduled visit?).")
    scale = recorded_sd(frame[variable])
    frames = _check_completed(completed, frame, variable)
    if analyse is None:
        def analyse(shifted):
            return pooled_random_slope_coefficient(shifted, outcome=outcome, predictors=predictors,
                                                   cluster=cluster, time=time, focus=focus)
    seen: dict = {}

    def evaluate(delta_sd: float):
        key = round(float(delta_sd), 12)
        if key not in seen:
            shifted = shift_after_dropout(frames, frame, variable, delta_sd * scale, cluster=cluster, time=time,
                                          form=form, cells=cells)
            res = analyse(shifted)
            seen[key] = (res["estimate"], res["ci_lower"], res["ci_upper"])
        return seen[key]

    reference = dict(zip(("estimate", "ci_lower", "ci_upper"), evaluate(0.0)))
    tipping = find_tipping_point(evaluate, [d for d in deltas_sd if d != 0], reference, rule,
                                 bisection_steps=bisection_steps, scale=scale)
    rows = [{"delta_sd": d, "delta_units": d * scale, "estimate": e, "ci_lower": lo, "ci_upper": hi,
             "change": rule(e, lo, hi, reference["estimate"], reference["ci_lower"], reference["ci_upper"])}
            for d, (e, lo, hi) in sorted(seen.items())]
    return DropoutTippingPoint(variable=variable, focus=focus, form=form, scale=scale, reference=reference,
                               evaluations=pd.DataFrame(rows), tipping=tipping, cells=cells)
