"""Last observation carried forward as a named comparator of step 3, for visits within patients (issue #16).

With ``time`` in the params (the clusters are patients seen at several
visits) step 3 adds ``locf`` beside the multiple imputations: every
incomplete model column that varies within patients (time-varying
predictors and the outcome) is filled with the patient's last recorded
value of it (:func:`hmlib.stats.imputation.carried_forward.last_observation_carried_forward`);
values with nothing recorded before them stay missing and their rows are
left out, as complete-case analysis does. The report's analysis model
(random slopes and higher levels included) is fitted once to the completed
frame. Rubin's rules with a single data set reduce to that fit: no
between-imputation variance, so the standard errors treat carried values as
measured (too small), which the notes say. Carried outcomes are analysed
(no deletion): that is what LOCF analyses do, and what the comparison is
meant to show.

LOCF is what clinical teams often do; it is shown so that the report can
say what it does, not recommended (National Research Council 2010,
recommendation 10).
"""

from __future__ import annotations

import time

from hmlib.exceptions import DataError, FitError
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.imputation.carried_forward import last_observation_carried_forward
from hmlib.stats.imputation.variation import completed_variation
from hmlib.stats.pooling import pool_fits
from hmlib.steps.imputation_result import MethodRun, MethodSpec
from hmlib.wording import count_text

__all__ = ["LOCF_LABEL", "locf_spec", "run_locf", "carried_columns"]

LOCF_LABEL = "locf"


def locf_spec(cluster: str, time_column: str) -> MethodSpec:
    """The LOCF comparator as a :class:`~hmlib.steps.imputation_result.MethodSpec` (engine method ``"locf"``)."""
    return MethodSpec(LOCF_LABEL, "locf", {},
                      f"last observation carried forward within each {cluster} over {time_column} (single "
                      "imputation: a named comparator, not a recommended method)")


def carried_columns(frame, params) -> list:
    """The incomplete model columns LOCF fills: predictors and the outcome that vary within clusters."""
    cluster = params.cluster
    out = []
    for col in dict.fromkeys([*params.predictors, params.outcome]):
        if not frame[col].isna().any():
            continue
        if (frame.groupby(cluster, observed=True)[col].nunique() > 1).any():
            out.append(col)
    return out


def run_locf(registry, spec: MethodSpec, *, focus_binary: bool = False) -> MethodRun:
    """Complete the registry by LOCF, fit the analysis model once, and report it as a method of step 3.

    Parameters
    ----------
    registry : hmlib.data.Registry
        With ``params.time`` (its values in ``registry.time_values`` or among the model columns).
    spec : MethodSpec
        :func:`locf_spec`.
    focus_binary : bool
        The focus is a 0/1 variable (latent-scale ICC of its between-cluster variation).

    Returns
    -------
    MethodRun
        ``pooled`` is the single fit as a :class:`~hmlib.stats.pooling.PooledResult` (between-imputation
        variance 0); ``imputation`` is None (no draws to diagnose or plot). Failed, with the reason, when
        the analysis cannot be fitted.
    """
    p = registry.params
    run = MethodRun(spec=spec, status="ok")
    started = time.perf_counter()
    frame = registry.frame
    added = p.time not in frame.columns
    if added:
        frame = frame.assign(**{p.time: registry.time_values.to_numpy()})
    columns = carried_columns(frame, p)
    min_cell = p.privacy.min_cell
    try:
        result = last_observation_carried_forward(frame, columns=columns, cluster=p.cluster, time=p.time)
    except DataError as exc:
        run.status, run.reason = "failed", f"last observation carried forward failed: {exc}"
        return run
    completed = result.completed.drop(columns=[p.time]) if added else result.completed
    run.seconds_impute = time.perf_counter() - started
    run.models = {col: f"last observation carried forward within each {p.cluster} over {p.time}" for col in columns}
    counts = result.counts.set_index("variable")
    for col in columns:
        run.notes.append(f"{col}: {count_text(int(counts.loc[col, 'n_carried']), min_cell)} value(s) carried "
                         f"forward, {count_text(int(counts.loc[col, 'n_left_missing']), min_cell)} left missing "
                         "(nothing recorded before them; their rows are left out of the analysis).")
    started = time.perf_counter()
    try:
        fit = fit_analysis_model(completed, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                 family=p.outcome_family, levels=registry.levels, higher_levels=p.higher_levels,
                                 random_slopes=p.random_slopes)
    except (FitError, DataError, ValueError) as exc:
        run.status, run.reason = "failed", f"the analysis model could not be fitted to the LOCF data: {exc}"
        return run
    # Rubin's rules over copies of one data set are that data set's analysis (between-imputation variance 0)
    pooled = pool_fits([fit, fit], method=spec.label, n_patients=fit.n_obs, n_clusters=fit.n_clusters)
    note = ("Single imputation (LOCF): one completed data set, analysed once; its standard errors treat carried "
            "values as measured, so they are too small, and carrying a value forward assumes it stayed where it "
            "was last seen (neither MAR nor a stated MNAR model).")
    run.pooled = type(pooled)(**{**pooled.__dict__, "per_imputation": pooled.per_imputation.query("imputation == 1"),
                                 "notes": (*pooled.notes, note), "m": 1})
    run.seconds_analyse = time.perf_counter() - started
    if registry.kinds.get(p.focus, "numeric") == "numeric" and p.focus in columns:
        run.focus_variation = completed_variation([completed], p.focus, p.cluster, binary=focus_binary)
    return run
