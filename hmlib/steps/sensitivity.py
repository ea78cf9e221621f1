"""Step 5: how far the conclusion rests on the missing-data assumptions.

The primary analysis is multilevel multiple imputation (:mod:`hmlib.stats.imputation`,
``method="multilevel"``) followed by the random-intercept analysis model pooled
by Rubin's rules (:func:`hmlib.stats.pooling.analyse_imputations`). Each *scenario*
changes one assumption, within or across clusters, re-runs that analysis and
reports every term (method ``sensitivity:<scenario>`` in ``estimates.csv``).

Scenario families
-----------------
``exclusion``
    Clusters whose share of missing focus values is above a threshold
    (default 0.2, 0.4, 0.6; strictly above) are left out, and imputation and
    analysis are re-run on the rest. Asks: does the answer rest on the poorly
    documenting clusters, whose values are mostly imputed?
``stratified``
    The multilevel imputation model is fitted separately within each level
    of the cluster type (the first cluster covariate), so that every
    coefficient of the imputation model may differ between, e.g., major
    centres and units. (The *flat* stratified imputation of
    :mod:`hmlib.stats.imputation` is compared in step 3; here the clusters are
    kept and only the type-specific model is added.)
``prior``
    The joint Bayesian model (:mod:`hmlib.stats.joint_model`) refitted with other
    priors on its cluster-level SDs: half-normal with scale 0.5, 1 (the
    default) and 2.5, and the heavy-tailed half-Cauchy(1) (a half-Student-t
    with 1 degree of freedom; Gelman 2006). Given step 4's posterior draws
    (``joint_reference``), each other prior reweights them by Pareto-smoothed
    importance sampling (:func:`hmlib.stats.joint_model.reweight_cluster_sd_prior`):
    no refit, and no Monte Carlo noise between prior and reference beyond
    the weights'. Only a prior whose weights are unreliable (Pareto k above
    its threshold, or fewer than 400 effective draws) is refitted, with the
    fitter passed in (``joint_fitter``, so that the scenario can be tested
    without PyMC); when no fitter is available such a scenario is kept as
    failed, with the reason.
    The default-prior fit is compared with the primary analysis; the other
    priors with the default-prior fit (so that a prior effect is not confused
    with the difference between the joint model and imputation).
``indicator``
    Missing-indicator models (focus variable filled with its observed mean,
    plus its missingness indicator ``R``; :mod:`hmlib.steps.complete_case`). *common*:
    one indicator effect for all clusters (compared with the primary).
    *partially-pooled*: the indicator effect varies by cluster. The fitter has
    random intercepts only, so the cluster-varying effect is approximated in
    two stages: the per-cluster effects ``d_j`` are estimated and shrunk by
    :func:`hmlib.steps.complete_case.indicator_effects_by_cluster` (DerSimonian-Laird
    partial pooling), then the outcome model is refitted with two columns,
    ``R`` and ``R (d_j - mean d)``; the model estimates the common level and
    how much of the partially pooled between-cluster pattern holds. Standard
    errors are conditional on the estimated ``d_j`` (slightly too small).
    Compared with the common-indicator model.
``delta-global`` and ``delta-cluster`` (MNAR delta adjustment)
    The imputed values of the focus variable (and only those) are shifted by
    ``delta`` after imputation, and the analysis is re-run (van Buuren 2018,
    sec. 3.9.1; Leacy et al. 2017; Cro et al. 2020). ``delta`` is set on a grid
    in SDs of the observed focus values (default -1 to 1 by 0.25) and is also
    reported in the variable's own units. Cluster-specific: cluster ``j``'s
    imputed values move by ``delta_j = delta s_j / s_bar``, where ``s_j`` is
    the cluster's share of missing focus values and ``s_bar`` the mean of
    ``s_j`` over the imputed cells, so that the average shift of an imputed
    value is ``delta`` in both modes and clusters that record less drift
    further (their unrecorded patients are the more selected). The primary
    imputations are made once and shifted: the imputation model is **not**
    re-run, so the outcome model's other imputed variables do not see the
    shift (the standard "delta adjustment" after imputation; re-imputing with
    an offset in the chained equations would propagate it to them too).
    ``delta = 0`` reproduces the primary analysis exactly.
``leave-out``
    Each of the ``n_influential`` (default 5) best-documented clusters (most
    recorded focus values; ties by size) is left out in turn and imputation
    and analysis re-run. If leaving out one of them changes the conclusion,
    the verdict names it.

Changed conclusion
------------------
A scenario changes the conclusion about a term when, compared with its
reference (the primary analysis unless stated above): the interval no longer
excludes the null value (default 0) or now excludes it; the estimate changes
sign with both intervals excluding the null; or the estimate moves by at
least ``change_share`` (default 50%) of the reference estimate. For the
cluster SD only the last criterion applies; the intercept is not judged.

Tipping point
-------------
For each delta mode and direction, the smallest ``|delta|`` on the grid at
which the focus coefficient's conclusion changes, refined by bisection between
it and the largest unchanged ``|delta|`` before it (``bisection_steps``, default
6: the bracket shrinks 64-fold). The reported tipping point is the smallest
``|delta|`` *found* to change the conclusion; the conclusion at every smaller
grid value is unchanged.

Execution
---------
Scenarios are independent and run in a :class:`concurrent.futures.ProcessPoolExecutor`
(``workers``, default 2; ``workers=1`` runs them in this process). Each scenario
uses the same seed as the primary analysis (common random numbers: a scenario
differs from the primary by its assumption, not by Monte Carlo noise), so the
results do not depend on ``workers`` or on the order of completion. A scenario
that raises is kept, as failed, with its reason.

References
----------
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., sec. 3.9
(sensitivity analysis, delta adjustment).
Leacy FP, Floyd S, Yates TA, White IR (2017). Analyses of sensitivity to the
missing-at-random assumption using multiple imputation with delta adjustment:
application to a tuberculosis/HIV prevalence survey with incomplete HIV-status
data. Am J Epidemiol 185(4):304-315.
Cro S, Morris TP, Kenward MG, Carpenter JR (2020). Sensitivity analysis for
clinical trials with missing continuous outcome data using controlled multiple
imputation: a practical guide. Stat Med 39:2815-2842.
Gelman A (2006). Prior distributions for variance parameters in hierarchical
models. Bayesian Anal 1(3):515-534.
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin
Trials 7:177-188.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact, artifact_path
from hmlib.exceptions import ParamsError
from hmlib.figures import sensitivity as figures
from hmlib.results import ESTIMATE_COLUMNS, to_jsonable
from hmlib.stats.joint import PosteriorDraws
from hmlib.steps.base import Step, StepContext

__all__ = ["FAMILIES", "SensitivitySettings", "Scenario", "ScenarioOutcome", "SensitivityResult",
           "plan_scenarios", "run_sensitivity", "shift_imputed", "cluster_deltas", "conclusion_change",
           "clusters_above_threshold", "best_documented_clusters", "joint_model_fitter", "impute_by_stratum",
           "first_change_on_grid", "refine_tipping_point", "find_tipping_point"]

FAMILIES = ("exclusion", "stratified", "prior", "indicator", "delta-global", "delta-cluster", "leave-out")
#: Plain-language name of each family, for the verdict.
FAMILY_TEXT = {
    "exclusion": "excluding clusters with many missing values",
    "stratified": "imputing separately by cluster type",
    "prior": "the prior on the cluster SDs of the joint model",
    "indicator": "a common vs cluster-varying effect of being unmeasured",
    "delta-global": "values missing not at random (same shift in every cluster)",
    "delta-cluster": "values missing not at random (larger shifts where more is missing)",
    "leave-out": "single well-documented clusters",
    "prior-vs-primary": "the joint Bayesian model instead of multiple imputation",
    "indicator-vs-primary": "the missing-indicator model instead of multiple imputation",
}
_DELTA_MODES = {"delta-global": "global", "delta-cluster": "cluster"}


# --------------------------------------------------------------------------
# Settings and scenarios
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivitySettings:
    """What to vary, and when a conclusion counts as changed.

    Attributes
    ----------
    families : tuple of str
        Scenario families to run (default all, :data:`FAMILIES`).
    exclusion_thresholds : tuple of float
        Leave out clusters whose share of missing focus values is above each.
    cluster_sd_priors : tuple of tuple
        Priors on the joint model's cluster SDs: ``("halfnormal", scale)`` or
        ``("halfcauchy", scale)``.
    reference_prior : tuple
        The joint model's default prior (the one the others are compared with).
    deltas_sd : tuple of float
        Delta grid in SDs of the observed focus values (0 is the primary and
        is added when absent).
    bisection_steps : int
        Bisection steps refining each tipping point (0: grid only).
    change_share : float
        A move of the estimate by this share of the reference estimate
        changes the conclusion (default 0.5).
    null_value : float
        The null of the coefficients (0 on the link scale).
    plausible_delta_sd : float
        Departures from MAR up to this many SDs count as plausible in the
        verdict: a tipping point within it makes the conclusion fragile.
    n_influential : int
        Best-documented clusters left out one at a time.
    min_clusters : int
        A scenario left with fewer clusters fails.
    m, iterations : int, optional
        Imputations and iterations (default: as the params, 20/10 or 5/5 fast).
    joint_fast : bool
        Where a prior scenario refits the joint model (no step-4 draws, or
        unreliable weights), refit with its fast settings (2 chains of 500 draws
        after 500 tuning steps) (default True: the
        scenarios compare posterior means and intervals across priors, for
        which that suffices, and each full fit costs minutes). Each
        scenario's convergence message is kept in its notes.
    level : float
        Confidence level.
    """

    families: tuple = FAMILIES
    exclusion_thresholds: tuple = (0.2, 0.4, 0.6)
    cluster_sd_priors: tuple = (("halfnormal", 0.5), ("halfnormal", 1.0), ("halfnormal", 2.5),
                                ("halfcauchy", 1.0))
    reference_prior: tuple = ("halfnormal", 1.0)
    deltas_sd: tuple = (-1.0, -0.75, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0)
    bisection_steps: int = 6
    change_share: float = 0.5
    null_value: float = 0.0
    plausible_delta_sd: float = 0.5
    n_influential: int = 5
    min_clusters: int = 5
    m: int | None = None
    iterations: int | None = None
    joint_fast: bool = True
    level: float = 0.95

    def __post_init__(self):
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ParamsError(f"unknown sensitivity families {unknown}; choose from {list(FAMILIES)}.")
        if any(not 0.0 <= t < 1.0 for t in self.exclusion_thresholds):
            raise ParamsError(f"exclusion thresholds are shares in [0, 1), got {self.exclusion_thresholds}.")
        for spec in self.cluster_sd_priors:
            if len(spec) != 2 or spec[0] not in ("halfnormal", "halfcauchy") or not float(spec[1]) > 0:
                raise ParamsError(f"a cluster-SD prior is ('halfnormal' | 'halfcauchy', scale > 0), got {spec!r}.")
        if not self.change_share > 0:
            raise ParamsError(f"change_share must be > 0, got {self.change_share}.")
        if not all(np.isfinite(self.deltas_sd)):
            raise ParamsError("deltas_sd must be finite numbers.")
        if self.bisection_steps < 0 or self.n_influential < 0 or self.min_clusters < 2:
            raise ParamsError("bisection_steps and n_influential must be >= 0 and min_clusters >= 2.")
        if not 0 < self.level < 1:
            raise ParamsError(f"level must be between 0 and 1, got {self.level}.")


def _prior_label(spec) -> str:
    return f"{spec[0]}({float(spec[1]):g})"


@dataclass(frozen=True)
class Scenario:
    """One planned scenario (picklable: it travels to a worker process).

    Attributes
    ----------
    name : str
        Shown and used as ``sensitivity:<name>`` in ``estimates.csv``.
    family : str
        One of :data:`FAMILIES`.
    reference : str
        ``"primary"`` or the name of the scenario it is compared with.
    options : dict
        What the runner needs (threshold, delta, cluster label, prior).
    """

    name: str
    family: str
    reference: str = "primary"
    options: dict = field(default_factory=dict)


@dataclass(eq=False)
class ScenarioOutcome:
    """What one scenario gave.

    Attributes
    ----------
    scenario : Scenario
    status : {"ok", "failed"}
    reason : str
        Why it failed ("" when ok).
    estimates : pandas.DataFrame or None
        ``term, estimate, std_error, ci_lower, ci_upper, n_patients, n_clusters``.
    details : dict
        Aggregates: excluded clusters, patients excluded, delta in units, ...
    notes : list of str
    seconds, cpu_seconds : float
        Wall and process CPU time (not part of the results' identity).
    """

    scenario: Scenario
    status: str
    reason: str = ""
    estimates: pd.DataFrame | None = None
    details: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def clusters_above_threshold(frame: pd.DataFrame, cluster: str, variable: str, threshold: float) -> list:
    """Clusters whose share of missing ``variable`` values is strictly above ``threshold``.

    Returns
    -------
    list
        Labels, sorted.
    """
    share = frame[variable].isna().groupby(frame[cluster], observed=True).mean()
    return sorted(share.index[share.to_numpy() > threshold].tolist(), key=str)


def best_documented_clusters(frame: pd.DataFrame, cluster: str, variable: str, n: int) -> list:
    """The ``n`` clusters with most recorded ``variable`` values (ties: larger first, then label)."""
    table = pd.DataFrame({"observed": frame[variable].notna().groupby(frame[cluster], observed=True).sum(),
                          "size": frame.groupby(cluster, observed=True).size()})
    table["label"] = table.index.astype(str)
    table = table.sort_values(["observed", "size", "label"], ascending=[False, False, True])
    return table.index[:n].tolist()


def plan_scenarios(registry, settings: SensitivitySettings | None = None) -> list[Scenario]:
    """The scenarios ``settings`` asks for on this registry, in report order.

    Parameters
    ----------
    registry : hmlib.data.Registry
    settings : SensitivitySettings, optional

    Returns
    -------
    list of Scenario
    """
    s = settings or SensitivitySettings()
    p = registry.params
    plan: list[Scenario] = []
    for fam in s.families:
        if fam == "exclusion":
            for t in s.exclusion_thresholds:
                plan.append(Scenario(f"exclude-missing>{t:.0%}", fam, options={"threshold": float(t)}))
        elif fam == "stratified":
            if p.cluster_covariates:
                ctype = p.cluster_covariates[0]
                plan.append(Scenario(f"stratified-imputation:{ctype}", fam, options={"by": ctype}))
        elif fam == "prior":
            ref = _prior_label(s.reference_prior)
            for spec in s.cluster_sd_priors:
                label = _prior_label(spec)
                plan.append(Scenario(f"prior:{label}", fam,
                                     reference="primary" if label == ref else f"prior:{ref}",
                                     options={"prior": tuple(spec)}))
        elif fam == "indicator":
            plan.append(Scenario("indicator:common", fam, options={"kind": "common"}))
            plan.append(Scenario("indicator:partially-pooled", fam, reference="indicator:common",
                                 options={"kind": "partially-pooled"}))
        elif fam in _DELTA_MODES:
            mode = _DELTA_MODES[fam]
            for d in sorted(set(float(x) for x in s.deltas_sd) - {0.0}):
                plan.append(Scenario(f"{fam}:{d:+g}sd", fam, options={"mode": mode, "delta_sd": d}))
        elif fam == "leave-out":
            for label in best_documented_clusters(registry.frame, p.cluster, p.focus, s.n_influential):
                plan.append(Scenario(f"leave-out:{label}", fam, options={"cluster": label}))
    return plan


# --------------------------------------------------------------------------
# Conclusions
# --------------------------------------------------------------------------
def conclusion_change(estimate, ci_lower, ci_upper, ref_estimate, ref_lower, ref_upper, *,
                      change_share: float = 0.5, null_value: float = 0.0, use_null: bool = True) -> str:
    """Why a result's conclusion differs from the reference's ("" if it does not).

    Parameters
    ----------
    estimate, ci_lower, ci_upper : float
        The scenario's estimate and interval.
    ref_estimate, ref_lower, ref_upper : float
        The reference's.
    change_share : float
        Relative move of the estimate that counts as a change.
    null_value : float
    use_null : bool
        Apply the interval criteria (False for an SD).

    Returns
    -------
    str
        ``""``, or e.g. ``"interval now includes 0"``, ``"estimate moved by 62%"``.
    """
    values = [estimate, ci_lower, ci_upper, ref_estimate, ref_lower, ref_upper]
    if not np.all(np.isfinite(np.asarray(values[:1] + values[3:4], dtype=float))):
        return ""
    if use_null and np.all(np.isfinite(np.asarray(values, dtype=float))):
        ref_excludes = not (ref_lower <= null_value <= ref_upper)
        excludes = not (ci_lower <= null_value <= ci_upper)
        if ref_excludes and not excludes:
            return f"interval now includes {null_value:g}"
        if excludes and not ref_excludes:
            return f"interval now excludes {null_value:g}"
        if excludes and np.sign(estimate - null_value) != np.sign(ref_estimate - null_value):
            return "estimate changed sign"
    if ref_estimate != 0:
        moved = abs(estimate - ref_estimate) / abs(ref_estimate)
        if moved >= change_share:
            return f"estimate moved by {moved:.0%}"
    return ""


# --------------------------------------------------------------------------
# Delta adjustment
# --------------------------------------------------------------------------
def cluster_deltas(frame: pd.DataFrame, cluster: str, variable: str, delta: float, *,
                   mode: str = "global") -> pd.Series:
    """The shift of each cluster's imputed values.

    Parameters
    ----------
    frame : pandas.DataFrame
        The incomplete data (missing cells = cells that are imputed).
    cluster, variable : str
    delta : float
        Shift in the variable's units.
    mode : {"global", "cluster"}
        ``"global"``: ``delta`` everywhere. ``"cluster"``: ``delta s_j / s_bar``
        with ``s_j`` the cluster's share of missing values and ``s_bar`` the
        mean of ``s_j`` over the missing cells (so the mean shift of an
        imputed value is ``delta``).

    Returns
    -------
    pandas.Series
        Indexed by cluster label.
    """
    missing = frame[variable].isna()
    share = missing.groupby(frame[cluster], observed=True).mean()
    if mode == "global":
        return pd.Series(float(delta), index=share.index)
    if mode != "cluster":
        raise ValueError(f"mode must be 'global' or 'cluster', got {mode!r}.")
    per_cell = frame.loc[missing, cluster].map(share)
    s_bar = float(per_cell.mean()) if len(per_cell) else 1.0
    return float(delta) * share / s_bar


def shift_imputed(result, variable: str, shift_by_row) -> object:
    """A copy of an imputation result with the imputed cells of ``variable`` shifted.

    Parameters
    ----------
    result : hmlib.stats.imputation.ImputationResult
    variable : str
        A numeric imputed column.
    shift_by_row : float or array_like
        Shift per row of the data (only rows imputed in ``variable`` move).

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
        Same imputations, ``completed`` replaced; observed cells untouched.
    """
    mask = result.imputed_mask[variable].to_numpy()
    shift = np.broadcast_to(np.asarray(shift_by_row, dtype=float), mask.shape)
    completed = []
    for frame in result.completed:
        out = frame.copy()
        values = out[variable].to_numpy(dtype=float, copy=True)
        values[mask] += shift[mask]
        out[variable] = values
        completed.append(out)
    return dataclasses.replace(result, completed=completed)


# --------------------------------------------------------------------------
# Joint model (injected)
# --------------------------------------------------------------------------
def joint_model_fitter(registry, *, priors: dict, seed: int, fast: bool | None = None):
    """Fit :func:`hmlib.stats.joint_model.fit_joint_model` with ``priors`` (chains on one core, for a worker).

    The default ``joint_fitter`` of :func:`run_sensitivity`. Returns the
    :class:`hmlib.stats.joint_model.JointModelResult`.
    """
    from hmlib.steps.joint_model import fit_registry as fit_joint_model

    return fit_joint_model(registry, priors=priors, seed=seed, fast=fast, cores=1)


def _joint_model_available() -> bool:
    try:
        spec = importlib.util.find_spec("hmlib.stats.joint")
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    try:
        import hmlib.stats.joint as jm
    except Exception:  # noqa: BLE001 - a half-written module counts as "not built"
        return False
    return callable(getattr(jm, "fit_joint_model", None))


def _joint_priors(spec) -> dict:
    family, scale = spec[0], float(spec[1])
    if family == "halfcauchy":  # half-Cauchy = half-Student-t with 1 df
        return {"cluster_sd": ("halfstudentt", 1.0, scale)}
    return {"cluster_sd": ("halfnormal", scale)}


# --------------------------------------------------------------------------
# Running scenarios (module level: they run in worker processes)
# --------------------------------------------------------------------------
@dataclass(eq=False)
class _Context:
    registry: object
    settings: SensitivitySettings
    seed: int
    primary_imputation: object
    primary_rows: pd.DataFrame
    joint_fitter: object
    observed_sd: float
    joint_reference: object = None


_CONTEXT: _Context | None = None


def _blas_one_thread():
    """One BLAS thread per process: two workers on two cores, and the same arithmetic serially."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the scientific stack
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker(context: _Context) -> None:
    global _CONTEXT
    _CONTEXT = context
    _blas_one_thread()  # not used as a context: the limit holds for the worker's life


def _contract_rows(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ESTIMATE_COLUMNS if c != "method"]
    return frame.loc[:, cols].reset_index(drop=True)


def _analyse(ctx: _Context, imputation) -> tuple[pd.DataFrame, list]:
    from hmlib.stats.pooling import analyse_imputations

    p = ctx.registry.params
    pooled = analyse_imputations(imputation, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                 family=p.outcome_family, levels=ctx.registry.levels, level=ctx.settings.level)
    return _contract_rows(pooled.to_frame()), list(pooled.notes)


def _impute(ctx: _Context, registry, **options):
    from hmlib.stats.imputation import impute_registry

    registry = dataclasses.replace(registry, params=registry.params.with_overrides(seed=ctx.seed))
    return impute_registry(registry, method="multilevel", m=ctx.settings.m, iterations=ctx.settings.iterations,
                           **options)


def _subset_registry(registry, keep: np.ndarray):
    return dataclasses.replace(registry, frame=registry.frame.loc[keep].reset_index(drop=True))


def _excluding(ctx: _Context, scenario: Scenario, excluded: list) -> ScenarioOutcome:
    reg = ctx.registry
    cluster = reg.params.cluster
    labels = reg.frame[cluster]
    drop = labels.isin(excluded).to_numpy()
    left = int(labels[~drop].nunique())
    details = {"excluded_clusters": list(excluded), "n_clusters_excluded": len(excluded),
               "n_patients_excluded": int(drop.sum()), "n_clusters_left": left}
    if not excluded:
        return ScenarioOutcome(scenario, "ok", estimates=ctx.primary_rows.copy(), details=details,
                               notes=["No cluster meets the condition: the analysis is the primary one."])
    if left < ctx.settings.min_clusters:
        return ScenarioOutcome(scenario, "failed", details=details,
                               reason=f"only {left} cluster(s) left after excluding {len(excluded)} "
                                      f"(at least {ctx.settings.min_clusters} needed)")
    rows, notes = _analyse(ctx, _impute(ctx, _subset_registry(reg, ~drop)))
    return ScenarioOutcome(scenario, "ok", estimates=rows, details=details, notes=notes)


def _run_exclusion(ctx: _Context, scenario: Scenario) -> list[ScenarioOutcome]:
    p = ctx.registry.params
    excluded = clusters_above_threshold(ctx.registry.frame, p.cluster, p.focus, scenario.options["threshold"])
    return [_excluding(ctx, scenario, excluded)]


def _run_leave_out(ctx: _Context, scenario: Scenario) -> list[ScenarioOutcome]:
    return [_excluding(ctx, scenario, [scenario.options["cluster"]])]


def impute_by_stratum(registry, by: str, *, m: int, iterations: int, seed: int):
    """Multilevel imputation fitted separately within each level of a cluster covariate.

    Parameters
    ----------
    registry : hmlib.data.Registry
    by : str
        A cluster covariate (clusters with it unrecorded form their own stratum).
    m, iterations : int
    seed : int
        Stratum ``k`` (levels sorted as text) uses the seed
        ``SeedSequence([seed, k]).generate_state(1)[0]``.

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
        The strata's completed data sets put back in the registry's row order.

    Raises
    ------
    hmlib.exceptions.FitError
        A stratum has fewer than 2 clusters (no multilevel model can be fitted).
    """
    from hmlib.exceptions import FitError
    from hmlib.stats.imputation import ImputationResult, impute

    p = registry.params
    frame = registry.frame
    strata = frame[by].astype(object).where(frame[by].notna(), "(not recorded)")
    parts = []
    for k, level in enumerate(sorted(strata.unique().tolist(), key=str)):
        rows = (strata == level).to_numpy()
        n_clusters = int(frame.loc[rows, p.cluster].nunique())
        if n_clusters < 2:
            raise FitError(f"{by} = {level!r} has {n_clusters} cluster; a multilevel imputation model needs "
                           "at least 2 clusters per stratum")
        stratum_seed = int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])
        parts.append(impute(frame.loc[rows], method="multilevel", cluster=p.cluster, outcome=p.outcome,
                            outcome_family=p.outcome_family, predictors=list(p.predictors), kinds=registry.kinds,
                            levels=registry.levels, cluster_covariates=list(p.cluster_covariates),
                            higher_levels=list(p.higher_levels), m=int(m), iterations=int(iterations),
                            seed=stratum_seed))
    completed = [pd.concat([part.completed[i] for part in parts]).loc[frame.index] for i in range(int(m))]
    mask = pd.concat([part.imputed_mask for part in parts]).loc[frame.index]
    notes = [f"{by} stratum {i + 1}: {n}" for i, part in enumerate(parts) for n in part.notes]
    return ImputationResult(method="multilevel", continuous="norm", m=int(m), iterations=int(iterations),
                            completed=completed, imputed_mask=mask, chain_means={}, rhat={}, notes=notes,
                            seed=int(seed), strata=by)


def _run_stratified(ctx: _Context, scenario: Scenario) -> list[ScenarioOutcome]:
    from hmlib.exceptions import FitError

    by = scenario.options["by"]
    try:
        combined = impute_by_stratum(ctx.registry, by, m=ctx.primary_imputation.m,
                                     iterations=ctx.primary_imputation.iterations, seed=ctx.seed)
    except FitError as exc:
        return [ScenarioOutcome(scenario, "failed", reason=str(exc))]
    rows, more = _analyse(ctx, combined)
    n_strata = int(ctx.registry.frame[by].astype(object).fillna("(not recorded)").nunique())
    return [ScenarioOutcome(scenario, "ok", estimates=rows, details={"strata": n_strata},
                            notes=list(combined.notes) + more)]


def _reference_draws(reference):
    """The reference fit's parameter draws, if it has them (a JointModelResult or PosteriorDraws)."""
    if reference is None or isinstance(reference, pd.DataFrame):
        return None
    if hasattr(reference, "posterior_draws"):
        return reference.posterior_draws()
    return reference if hasattr(reference, "cluster_sds") else None


def _run_prior(ctx: _Context, scenario: Scenario) -> list[ScenarioOutcome]:
    fitter = ctx.joint_fitter
    reference = ctx.joint_reference
    draws = _reference_draws(reference)
    wanted = _joint_priors(scenario.options["prior"])["cluster_sd"]
    same_prior = (tuple(draws.cluster_sd_prior) == tuple(wanted)) if draws is not None else \
        _prior_label(scenario.options["prior"]) == _prior_label(ctx.settings.reference_prior)
    notes = []
    if reference is not None and same_prior:
        if hasattr(reference, "to_estimates"):
            table = reference.to_estimates()
        elif draws is not None:          # saved draws: equal weights give the fit's own summary
            from hmlib.stats.joint import reweight_cluster_sd_prior

            table = reweight_cluster_sd_prior(draws, wanted).estimates
        else:
            table = pd.DataFrame(reference)
        details = {"how": "step 4 fit"}
        if draws is not None:
            details["converged"] = bool(draws.converged)
        return [ScenarioOutcome(scenario, "ok", estimates=_contract_rows(table), details=details,
                                notes=["The joint model fitted in step 4 (this prior) is reused."])]
    if draws is not None:
        from hmlib.stats.joint import reweight_cluster_sd_prior

        weighted = reweight_cluster_sd_prior(draws, wanted)
        if weighted.reliable:
            note = f"Joint model: {weighted.message}"
            if not draws.converged:
                note += f" The reweighted fit had not converged: {draws.convergence_message}"
            return [ScenarioOutcome(scenario, "ok", estimates=_contract_rows(weighted.estimates),
                                    details={"converged": bool(draws.converged), "how": "importance reweighting",
                                             "pareto_k": weighted.pareto_k},
                                    notes=[note])]
        notes.append(f"Joint model: {weighted.message.rstrip('.')}; too far from the step-4 posterior, so refitted.")
    if fitter is None:
        reason = "not available: joint model not built" if draws is None else \
            f"step 4's draws cannot be reweighted to this prior ({weighted.message.rstrip('.')}) and no joint-model " \
            "fitter is available to refit"
        return [ScenarioOutcome(scenario, "failed", reason=reason)]
    result = fitter(ctx.registry, priors=_joint_priors(scenario.options["prior"]), seed=ctx.seed,
                    fast=True if ctx.settings.joint_fast else None)
    table = result.to_estimates() if hasattr(result, "to_estimates") else pd.DataFrame(result)
    message = getattr(result, "convergence_message", None)
    if message:
        notes.append(f"Joint model refitted: {message}")
    details = {"converged": bool(getattr(result, "converged", True)), "how": "refit"}
    return [ScenarioOutcome(scenario, "ok", estimates=_contract_rows(table), details=details, notes=notes)]


def _run_indicator(ctx: _Context, scenario: Scenario) -> list[ScenarioOutcome]:
    from hmlib.steps.complete_case import complete_case_check
    from hmlib.stats.design import design_matrix, fit_design
    from hmlib.results import estimate_rows

    reg = ctx.registry
    p = reg.params
    check = complete_case_check(reg)
    common = check.estimates.loc[check.estimates["method"] == "missing_indicator"]
    if not len(common):
        reason = "; ".join(check.notes) or "the missing-indicator model could not be fitted"
        return [ScenarioOutcome(scenario, "failed", reason=reason)]
    if scenario.options["kind"] == "common":
        return [ScenarioOutcome(scenario, "ok", estimates=_contract_rows(common))]
    table = check.indicator_by_cluster
    if table is None or table.attrs.get("n_estimable", 0) < 2:
        return [ScenarioOutcome(scenario, "failed",
                                reason="fewer than 2 clusters have both measured and unmeasured patients "
                                       "with an estimable indicator effect")]
    work = reg.frame.copy()
    indicator, varying = f"{p.focus}_missing", f"{p.focus}_missing:cluster"
    work[indicator] = work[p.focus].isna().astype(float)
    work[p.focus] = work[p.focus].fillna(work[p.focus].mean())
    deviation = table.set_index("cluster")["pooled"] - table.attrs["mean"]
    work[varying] = work[indicator] * work[p.cluster].map(deviation).astype(float).fillna(0.0)
    predictors = [*p.predictors, indicator]
    notes = []
    if np.ptp(work[varying].to_numpy()) > 0:
        predictors.append(varying)
    else:
        notes.append("The partially pooled indicator effects do not vary between clusters "
                     f"(between-cluster SD {table.attrs['tau']:.2g}); the model equals the common one.")
    design = design_matrix(work, predictors, reg.levels, extra_rows_mask=work[p.outcome].notna())
    fit = fit_design(work, design, outcome=p.outcome, cluster=p.cluster, family=p.outcome_family)
    details = {"indicator_sd_between_clusters": float(table.attrs["tau"]),
               "heterogeneity_p": float(table.attrs["q_p"]),
               "n_clusters_estimable": int(table.attrs["n_estimable"])}
    return [ScenarioOutcome(scenario, "ok", estimates=_contract_rows(estimate_rows(fit, "x", ctx.settings.level)),
                            details=details, notes=notes)]


def _delta_evaluate(ctx: _Context, mode: str, delta_sd: float) -> tuple[pd.DataFrame, dict]:
    reg = ctx.registry
    p = reg.params
    units = delta_sd * ctx.observed_sd
    per_cluster = cluster_deltas(reg.frame, p.cluster, p.focus, units, mode=mode)
    shift = reg.frame[p.cluster].map(per_cluster).to_numpy(dtype=float)
    rows, _ = _analyse(ctx, shift_imputed(ctx.primary_imputation, p.focus, shift))
    missing_clusters = reg.frame.loc[reg.frame[p.focus].isna(), p.cluster].unique()
    used = per_cluster.loc[per_cluster.index.isin(missing_clusters)]
    details = {"delta_sd": float(delta_sd), "delta_units": float(units),
               "cluster_delta_min": float(used.min()) if len(used) else 0.0,
               "cluster_delta_max": float(used.max()) if len(used) else 0.0}
    return rows, details


def _run_delta(ctx: _Context, scenario: Scenario) -> list[ScenarioOutcome]:
    p = ctx.registry.params
    if ctx.registry.kinds.get(p.focus) != "numeric":
        return [ScenarioOutcome(scenario, "failed",
                                reason=f"delta adjustment shifts numeric values; {p.focus} is categorical")]
    if not ctx.primary_imputation.imputed_mask[p.focus].any():
        return [ScenarioOutcome(scenario, "failed", reason=f"{p.focus} has no imputed value to shift")]
    rows, details = _delta_evaluate(ctx, scenario.options["mode"], scenario.options["delta_sd"])
    return [ScenarioOutcome(scenario, "ok", estimates=rows, details=details)]


_RUNNERS = {"exclusion": _run_exclusion, "stratified": _run_stratified, "prior": _run_prior,
            "indicator": _run_indicator, "delta-global": _run_delta, "delta-cluster": _run_delta,
            "leave-out": _run_leave_out}


def _run_task(task) -> list[ScenarioOutcome]:
    """Run one task in the current process; every exception becomes a failed scenario."""
    kind, payload = task
    ctx = _CONTEXT
    if kind == "bisect":
        try:
            return _bisect(ctx, *payload)
        except Exception as exc:  # noqa: BLE001 - the grid bracket is kept, the refinement is not
            mode, sign, lo, hi, _ = payload
            return [{"mode": mode, "sign": sign, "lo": lo, "hi": hi, "evaluations": [],
                     "error": f"{type(exc).__name__}: {exc}"}]
    scenarios = payload
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        outcomes = _RUNNERS[scenarios[0].family](ctx, scenarios[0])
    except Exception as exc:  # noqa: BLE001 - kept as a failed scenario with its reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        outcomes = [ScenarioOutcome(scenarios[0], "failed", reason=f"{type(exc).__name__}: {first}")]
    for outcome in outcomes:
        outcome.seconds = time.perf_counter() - start
        outcome.cpu_seconds = time.process_time() - start_cpu
    return outcomes


def _focus_terms(registry) -> list[str]:
    p = registry.params
    if registry.kinds.get(p.focus) == "categorical":
        return [f"{p.focus}[{level}]" for level in registry.levels[p.focus][1:]]
    return [p.focus]


def _focus_row(rows: pd.DataFrame, term: str) -> pd.Series:
    return rows.loc[rows["term"] == term].iloc[0]


def _point(estimate: float, ci_lower: float, ci_upper: float, reference: dict, change_share: float,
           null_value: float) -> dict:
    why = conclusion_change(estimate, ci_lower, ci_upper, reference["estimate"], reference["ci_lower"],
                            reference["ci_upper"], change_share=change_share, null_value=null_value)
    return {"estimate": float(estimate), "ci_lower": float(ci_lower), "ci_upper": float(ci_upper), "change": why}


def first_change_on_grid(points, reference: dict, *, change_share: float = 0.5, null_value: float = 0.0):
    """The first grid point, by increasing ``|delta|``, whose conclusion differs from the reference.

    Parameters
    ----------
    points : sequence of (float, (float, float, float) or None)
        ``(delta, (estimate, ci_lower, ci_upper))`` on one side of 0; None
        for a failed evaluation (the search stops there).
    reference : dict
        ``estimate, ci_lower, ci_upper`` at ``delta = 0``.

    Returns
    -------
    tuple or None
        ``(lo, hi, point)``: the largest unchanged ``|delta|`` before the
        change (0 if none), the ``|delta|`` of the change and its evaluation
        (``estimate, ci_lower, ci_upper, change``); None when no grid point
        changes the conclusion.
    """
    lo = 0.0
    for delta, value in sorted(points, key=lambda item: abs(item[0])):
        if value is None:
            return None
        point = _point(*value, reference, change_share, null_value)
        if point["change"]:
            return lo, abs(delta), point
        lo = abs(delta)
    return None


def refine_tipping_point(evaluate, lo: float, hi: float, sign: float, reference: dict, *, steps: int = 6,
                         change_share: float = 0.5, null_value: float = 0.0) -> dict:
    """Bisect between ``|delta| = lo`` (conclusion unchanged) and ``hi`` (changed).

    Parameters
    ----------
    evaluate : callable
        ``evaluate(delta) -> (estimate, ci_lower, ci_upper)``.
    lo, hi : float
        The bracket in ``|delta|``.
    sign : {1.0, -1.0}
        The side of 0.
    reference : dict
    steps : int
        Halvings of the bracket.

    Returns
    -------
    dict
        ``lo, hi`` (the final bracket, in ``|delta|``) and ``evaluations`` (one
        dict per midpoint: ``delta, estimate, ci_lower, ci_upper, change``).
    """
    evaluations = []
    for _ in range(int(steps)):
        mid = (lo + hi) / 2
        point = _point(*evaluate(sign * mid), reference, change_share, null_value)
        evaluations.append({"delta": sign * mid, **point})
        if point["change"]:
            hi = mid
        else:
            lo = mid
    return {"lo": lo, "hi": hi, "evaluations": evaluations}


def _tipping_summary(sign: float, grid_max: float, found, refined: dict | None, scale: float) -> dict:
    """The smallest |delta| found to change the conclusion, from a grid hit and its bisection."""
    if found is None:
        return {"found": False, "delta_sd": np.nan, "delta_units": np.nan, "bracket_sd": None, "estimate": np.nan,
                "ci_lower": np.nan, "ci_upper": np.nan, "change": "", "grid_max_sd": grid_max}
    lo, hi, point = found
    best = {"delta": sign * hi, **point}
    refined = refined or {"lo": lo, "hi": hi, "evaluations": []}
    for ev in refined["evaluations"]:
        if ev["change"] and abs(ev["delta"]) <= abs(best["delta"]):
            best = ev
    return {"found": True, "delta_sd": float(best["delta"]), "delta_units": float(best["delta"] * scale),
            "bracket_sd": [float(sign * refined["lo"]), float(sign * refined["hi"])],
            "estimate": best["estimate"], "ci_lower": best["ci_lower"], "ci_upper": best["ci_upper"],
            "change": best["change"], "grid_max_sd": grid_max}


def find_tipping_point(evaluate, deltas, reference: dict, *, change_share: float = 0.5, null_value: float = 0.0,
                       bisection_steps: int = 6, scale: float = 1.0) -> dict:
    """Tipping points on both sides of 0: grid search, then bisection (sequential version).

    :func:`run_sensitivity` does the same with the grid and the bisections
    spread over worker processes.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(delta) -> (estimate, ci_lower, ci_upper)``.
    deltas : sequence of float
        The grid (0 is the reference and is skipped).
    reference : dict
        ``estimate, ci_lower, ci_upper`` at ``delta = 0``.
    scale : float
        Units per delta unit (the observed SD), for ``delta_units``.

    Returns
    -------
    dict
        ``{"positive" | "negative": {found, delta_sd, delta_units, bracket_sd,
        estimate, ci_lower, ci_upper, change, grid_max_sd}}``.

    Examples
    --------
    >>> line = lambda d: (1 - 0.8 * d, 0.7 - 0.8 * d, 1.3 - 0.8 * d)
    >>> tp = find_tipping_point(line, [0.25, 0.5, 0.75, 1.0], dict(zip(["estimate", "ci_lower", "ci_upper"], line(0))))
    >>> round(tp["positive"]["delta_sd"], 3), tp["positive"]["change"]
    (0.625, 'estimate moved by 50%')
    """
    out = {}
    for sign, side in ((1.0, "positive"), (-1.0, "negative")):
        side_grid = [float(d) for d in deltas if np.sign(d) == sign]
        found = first_change_on_grid([(d, evaluate(d)) for d in side_grid], reference,
                                     change_share=change_share, null_value=null_value)
        refined = None
        if found is not None:
            refined = refine_tipping_point(evaluate, found[0], found[1], sign, reference, steps=bisection_steps,
                                           change_share=change_share, null_value=null_value)
        out[side] = _tipping_summary(sign, max((abs(d) for d in side_grid), default=0.0), found, refined, scale)
    return out


def _bisect(ctx: _Context, mode: str, sign: float, lo: float, hi: float, reference: dict) -> list:
    """Worker task: :func:`refine_tipping_point` on the delta-adjusted primary analysis."""
    term, s = _focus_terms(ctx.registry)[0], ctx.settings

    def evaluate(delta_sd):
        r = _focus_row(_delta_evaluate(ctx, mode, delta_sd)[0], term)
        return float(r.estimate), float(r.ci_lower), float(r.ci_upper)

    refined = refine_tipping_point(evaluate, lo, hi, sign, reference, steps=s.bisection_steps,
                                   change_share=s.change_share, null_value=s.null_value)
    return [{"mode": mode, "sign": sign, **refined}]


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.3g}"


@dataclass(eq=False)
class SensitivityResult:
    """The scenario x estimate grid, the tipping points and the verdict.

    Attributes
    ----------
    focus : str
    focus_terms : list of str
        Terms of the focus variable (one per non-reference level if categorical).
    primary : pandas.DataFrame
        The primary analysis (contract columns without ``method``).
    primary_method : str
    grid : pandas.DataFrame
        Tidy: ``scenario, family, reference, status, term, estimate, std_error,
        ci_lower, ci_upper, n_patients, n_clusters, changed_conclusion,
        change_reason`` (one row per scenario and term; failed scenarios one row
        with NaN estimates and the reason).
    scenarios : pandas.DataFrame
        One row per scenario: ``scenario, family, reference, status, reason,
        n_clusters_excluded, n_patients_excluded, excluded_clusters,
        delta_sd, delta_units, joint_fit, changed_conclusion, change_reason, notes,
        seconds, cpu_seconds``; ``joint_fit`` says how a prior scenario's joint
        model was obtained (``"step 4 fit"``, ``"importance reweighting"`` or
        ``"refit"``; empty for the other families).
        Holds raw counts; :meth:`scenario_table` is what the report shows.
    tipping : dict
        ``{mode: {"positive" | "negative": {...}}}`` (see :meth:`tipping_table`).
    delta_curve : pandas.DataFrame
        ``mode, delta_sd, delta_units, estimate, ci_lower, ci_upper, changed, source``.
    observed_sd : float
        SD of the observed focus values (the delta scale).
    settings : SensitivitySettings
    min_cell : int
    n_patients_primary : int
        Patients in the primary analysis.
    n_patients_all : int
        Patients in the registry's analysis frame.
    workers : int
    elapsed : float
    notes : list of str
    """

    focus: str
    focus_terms: list
    primary: pd.DataFrame
    primary_method: str
    grid: pd.DataFrame
    scenarios: pd.DataFrame
    tipping: dict
    delta_curve: pd.DataFrame
    observed_sd: float
    settings: SensitivitySettings
    min_cell: int
    n_patients_primary: int
    n_patients_all: int
    workers: int = 1
    elapsed: float = 0.0
    notes: list = field(default_factory=list)

    # -- tables ---------------------------------------------------------------
    def _suppression(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Scenario table with patient counts, and which rows hide them."""
        from hmlib.privacy import suppress_counts

        table = self.scenarios.drop(columns=["seconds", "cpu_seconds"]).copy()
        focus = self.grid.loc[self.grid["term"] == self.focus_terms[0], ["scenario", "n_patients"]]
        table = table.merge(focus, on="scenario", how="left")
        excluded = table["n_patients_excluded"].fillna(0).astype(int)
        counts = pd.DataFrame({"n_kept": self.n_patients_all - excluded, "n_excluded": excluded,
                               "n_total": self.n_patients_all})
        safe = suppress_counts(counts, ["n_kept", "n_excluded"], self.min_cell, total_column="n_total",
                               parts=[["n_kept", "n_excluded"]], column_totals=False)
        # The analysed counts differ from the primary's by the excluded clusters' analysed patients.
        analysed_gap = self.n_patients_primary - table["n_patients"].astype(float)
        small_gap = ((analysed_gap > 0) & (analysed_gap < self.min_cell)).to_numpy()
        hidden = (safe.mask["n_excluded"].to_numpy() | small_gap) & (excluded.to_numpy() > 0)
        return table, hidden

    def scenario_table(self) -> pd.DataFrame:
        """The scenarios as the report shows them: small patient counts suppressed.

        ``n_patients_excluded`` from 1 to ``min_cell - 1`` is suppressed, and
        with it the scenario's analysed ``n_patients`` (the two add up to
        published totals); so is a scenario whose analysed count differs from
        the primary's by fewer than ``min_cell`` patients.
        """
        from hmlib.privacy import SUPPRESSED_LABEL

        table, hidden = self._suppression()
        for col in ("n_patients_excluded", "n_patients"):
            table[col] = table[col].astype(object)
            table.loc[hidden, col] = SUPPRESSED_LABEL
        return table

    def _hidden_scenarios(self) -> set:
        table, hidden = self._suppression()
        return set(table.loc[hidden, "scenario"])

    def tipping_table(self) -> pd.DataFrame:
        """One row per delta mode and direction.

        Columns ``mode, direction, found, delta_sd, delta_units, bracket_sd``
        (the unchanged and changed ends after bisection), ``estimate,
        ci_lower, ci_upper`` at the tipping point and ``change`` (why).
        """
        rows = []
        for mode, sides in self.tipping.items():
            for direction, info in sides.items():
                rows.append({"mode": mode, "direction": direction, **info})
        return pd.DataFrame(rows)

    def _published_grid(self) -> pd.DataFrame:
        grid = self.grid.copy()
        grid["n_patients"] = grid["n_patients"].astype(float)
        grid.loc[grid["scenario"].isin(self._hidden_scenarios()), "n_patients"] = np.nan
        return grid

    def estimate_rows(self) -> pd.DataFrame:
        """Rows of ``estimates.csv``: method ``sensitivity:<scenario>``, successful scenarios only.

        ``n_patients`` is NaN where the scenario's excluded count is suppressed.
        """
        grid = self._published_grid()
        ok = grid.loc[grid["status"] == "ok"].copy()
        ok["method"] = "sensitivity:" + ok["scenario"]
        ok["n_patients"] = ok["n_patients"].astype("Int64")
        ok["n_clusters"] = ok["n_clusters"].astype("Int64")
        return ok.loc[:, list(ESTIMATE_COLUMNS)].reset_index(drop=True)

    # -- findings -------------------------------------------------------------
    def _primary_focus(self) -> pd.Series:
        return _focus_row(self.primary, self.focus_terms[0])

    def changed(self) -> pd.DataFrame:
        """Scenarios (not delta) whose conclusion about a focus term changed."""
        g = self.grid
        sel = g["term"].isin(self.focus_terms) & g["changed_conclusion"] & ~g["family"].isin(list(_DELTA_MODES))
        return g.loc[sel].reset_index(drop=True)

    def _tipping_sentence(self, mode: str) -> tuple[str, bool]:
        sides = self.tipping.get(mode, {})
        found = [(d, i) for d, i in sides.items() if i.get("found")]
        grid_max = max((abs(x) for x in self.settings.deltas_sd), default=0.0)
        label = "the same shift in every cluster" if mode == "global" else "shifts proportional to clusters' missingness"
        if not sides:
            return "", False
        if not found:
            return (f"MNAR ({label}): no delta within +/-{grid_max:g} SD "
                    f"(+/-{_fmt(grid_max * self.observed_sd)} units) changes the conclusion."), False
        direction, info = min(found, key=lambda item: abs(item[1]["delta_sd"]))
        fragile = abs(info["delta_sd"]) <= self.settings.plausible_delta_sd
        text = (f"MNAR ({label}): the conclusion changes ({info['change']}) when unrecorded {self.focus} "
                f"values are {'higher' if info['delta_sd'] > 0 else 'lower'} than imputed by "
                f"{_fmt(abs(info['delta_units']))} units ({abs(info['delta_sd']):.2f} SD of the observed values); "
                f"there the {self.focus_terms[0]} coefficient is {_fmt(info['estimate'])} "
                f"(95% CI {_fmt(info['ci_lower'])} to {_fmt(info['ci_upper'])}).")
        return text, fragile

    def verdict(self) -> str:
        """"robust", or which assumptions the conclusion depends on, with numbers."""
        prim = self._primary_focus()
        head = (f"Primary ({self.primary_method}): {self.focus_terms[0]} {_fmt(prim.estimate)} "
                f"(95% CI {_fmt(prim.ci_lower)} to {_fmt(prim.ci_upper)}).")
        parts = []
        changed = self.changed()
        # A joint-model or indicator scenario compared with the primary is a change of method, not of
        # the prior or of the pooling of the indicator effect: said separately.
        key = np.where(changed["family"].isin(["prior", "indicator"]) & (changed["reference"] == "primary"),
                       changed["family"] + "-vs-primary", changed["family"])
        for fam, rows in changed.groupby(key, sort=False):
            items = [f"{r.scenario}: {_fmt(r.estimate)} ({_fmt(r.ci_lower)} to {_fmt(r.ci_upper)}; "
                     f"{r.change_reason}{'' if r.reference == 'primary' else ' vs ' + r.reference})"
                     for r in rows.itertuples()]
            if fam == "leave-out":
                names = ", ".join(str(r.scenario).split(":", 1)[1] for r in rows.itertuples())
                parts.append(f"single well-documented clusters ({names}): " + "; ".join(items))
            else:
                parts.append(f"{FAMILY_TEXT[fam]}: " + "; ".join(items))
        fragile_mnar = []
        for mode in ("global", "cluster"):
            text, fragile = self._tipping_sentence(mode)
            if fragile:
                fragile_mnar.append(text)
        failed = self.scenarios.loc[self.scenarios["status"] == "failed", "scenario"].tolist()
        tail = f" {len(failed)} scenario(s) failed and are not counted: {', '.join(failed)}." if failed else ""
        if not parts and not fragile_mnar:
            n_ok = int((self.scenarios["status"] == "ok").sum())
            return (f"robust: {head} No scenario changes the conclusion ({n_ok} scenarios run), and no departure "
                    f"from MAR within +/-{self.settings.plausible_delta_sd:g} SD does.{tail}")
        if fragile_mnar:
            parts.append(f"the MAR assumption (tipping point within +/-{self.settings.plausible_delta_sd:g} SD): "
                         + " ".join(fragile_mnar))
        return f"not robust: {head} The conclusion depends on " + "; and on ".join(parts) + f".{tail}"

    def narrative(self) -> list[str]:
        """Generated sentences, each stating a finding with its numbers."""
        prim = self._primary_focus()
        g = self.grid.loc[(self.grid["term"] == self.focus_terms[0]) & (self.grid["status"] == "ok")]
        out = [self.verdict()]
        if len(g):
            lo, hi = g.loc[g["estimate"].idxmin()], g.loc[g["estimate"].idxmax()]
            out.append(f"Across {len(g)} successful scenarios the {self.focus_terms[0]} coefficient ranges from "
                       f"{_fmt(lo.estimate)} ({lo.scenario}) to {_fmt(hi.estimate)} ({hi.scenario}); "
                       f"the primary estimate is {_fmt(prim.estimate)}.")
        for mode in ("global", "cluster"):
            text, _ = self._tipping_sentence(mode)
            if text:
                out.append(text)
        ex = self.scenarios.loc[(self.scenarios["family"] == "exclusion") & (self.scenarios["status"] == "ok")]
        for r in ex.itertuples():
            out.append(f"{r.scenario}: {int(r.n_clusters_excluded)} cluster(s) excluded.")
        for r in self.scenarios.loc[self.scenarios["status"] == "failed"].itertuples():
            out.append(f"Scenario {r.scenario} failed: {r.reason}.")
        return out + list(self.notes)

    def summary(self) -> str:
        """Plain text: verdict, the focus coefficient per scenario, tipping points (returned)."""
        lines = [self.verdict(), ""]
        g = self.grid.loc[self.grid["term"] == self.focus_terms[0]]
        width = max([len(s) for s in g["scenario"]] + [8])
        for r in g.itertuples():
            if r.status != "ok":
                lines.append(f"{r.scenario:<{width}}  failed: {r.change_reason}")
                continue
            flag = "  <- " + r.change_reason if r.changed_conclusion else ""
            lines.append(f"{r.scenario:<{width}}  {r.estimate:>9.4g}  ({r.ci_lower:>8.4g}, {r.ci_upper:>8.4g}){flag}")
        return "\n".join(lines)

    @property
    def estimates(self) -> pd.DataFrame:
        """Rows of ``estimates.csv`` (:meth:`estimate_rows`)."""
        return self.estimate_rows()

    def to_artifact(self) -> "SensitivityArtifact":
        """The typed record of step 5."""
        return SensitivityArtifact.from_json(to_jsonable(self.to_dict()))

    def figures(self) -> dict:
        """Step 5's figures by section: scenarios, tipping."""
        return {"scenarios": [figures.scenario_heatmap(self), figures.scenario_forest(self)],
                "tipping": [figures.tipping_point_curve(self)]}

    def to_dict(self) -> dict:
        """JSON-ready aggregates for ``artifacts/sensitivity.json`` (no patient-level rows)."""
        table = self.scenario_table()
        table["excluded_clusters"] = table["excluded_clusters"].map(lambda v: [str(x) for x in v])
        return {
            "focus": self.focus, "focus_terms": list(self.focus_terms), "primary_method": self.primary_method,
            "primary": self.primary.to_dict(orient="records"),
            "settings": dataclasses.asdict(self.settings),
            "observed_sd": self.observed_sd,
            "grid": self._published_grid().to_dict(orient="records"),
            "scenarios": table.to_dict(orient="records"),
            "tipping": self.tipping_table().to_dict(orient="records"),
            "delta_curve": self.delta_curve.to_dict(orient="records"),
            "verdict": self.verdict(), "narrative": self.narrative(), "notes": list(self.notes),
            "workers": self.workers, "elapsed_s": self.elapsed,
        }


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------
def _task_cost(scenario: Scenario) -> int:
    # Longest first (LPT scheduling): joint-model fits dwarf the rest.
    return {"prior": 0, "stratified": 1, "exclusion": 2, "leave-out": 2, "indicator": 3}.get(scenario.family, 4)


def _grid_rows(outcome: ScenarioOutcome, reference_rows: pd.DataFrame | None,
               s: SensitivitySettings) -> pd.DataFrame:
    sc = outcome.scenario
    base = {"scenario": sc.name, "family": sc.family, "reference": sc.reference, "status": outcome.status}
    if outcome.status != "ok":
        return pd.DataFrame([{**base, "term": None, "estimate": np.nan, "std_error": np.nan, "ci_lower": np.nan,
                              "ci_upper": np.nan, "n_patients": np.nan, "n_clusters": np.nan,
                              "changed_conclusion": False, "change_reason": outcome.reason}])
    rows = outcome.estimates.copy()
    reasons = []
    for r in rows.itertuples():
        ref = None
        if reference_rows is not None and r.term != "Intercept":  # the intercept states no conclusion
            match = reference_rows.loc[reference_rows["term"] == r.term]
            ref = match.iloc[0] if len(match) else None
        if ref is None:
            reasons.append("")
            continue
        reasons.append(conclusion_change(r.estimate, r.ci_lower, r.ci_upper, ref.estimate, ref.ci_lower,
                                         ref.ci_upper, change_share=s.change_share, null_value=s.null_value,
                                         use_null=not str(r.term).startswith("sd(")))
    rows["changed_conclusion"] = [bool(x) for x in reasons]
    rows["change_reason"] = reasons
    for key, value in reversed(list(base.items())):
        rows.insert(0, key, value)
    return rows


def run_sensitivity(registry, settings: SensitivitySettings | None = None, *, workers: int = 2,
                    joint_fitter="auto", primary_imputation=None, joint_reference=None,
                    seed: int | None = None) -> SensitivityResult:
    """Run every scenario of ``settings`` on a checked registry.

    Parameters
    ----------
    registry : hmlib.data.Registry
    settings : SensitivitySettings, optional
        Defaults as documented there.
    workers : int
        Worker processes (default 2, the local cores); 1 runs everything in
        this process. The results do not depend on it. Workers are started
        with ``spawn``, so a *script* that calls this with ``workers > 1``
        needs the usual ``if __name__ == "__main__":`` guard (notebooks do
        not).
    joint_fitter : callable, "auto" or None
        ``joint_fitter(registry, *, priors, seed, fast)`` returning an object with
        ``to_estimates()`` (a :class:`hmlib.stats.joint_model.JointModelResult`) or
        a frame of contract rows. Must be picklable (a module-level function)
        when ``workers > 1``. ``"auto"``: :func:`joint_model_fitter` if
        :mod:`hmlib.stats.joint_model` provides ``fit_joint_model``, else None. None:
        the prior scenarios fail with "not available: joint model not built".
    primary_imputation : hmlib.stats.imputation.ImputationResult, optional
        The primary multilevel imputation, if already made (step 3); else it is
        made here with ``m``/``iterations`` of the settings and ``seed``.
    joint_reference : JointModelResult, PosteriorDraws or pandas.DataFrame, optional
        The joint model already fitted (step 4; :class:`hmlib.stats.joint_model.PosteriorDraws`
        as saved by notebook 04). Its prior's scenario reuses it; with draws,
        the other priors reweight them instead of refitting. A frame of
        contract rows (no draws) only saves the reference prior's fit.
    seed : int, optional
        Seed of every imputation (default: the params' seed).

    Returns
    -------
    SensitivityResult

    Examples
    --------
    >>> result = run_sensitivity(registry, SensitivitySettings(families=("delta-global",)))  # doctest: +SKIP
    >>> result.verdict()                                                                      # doctest: +SKIP
    """
    from hmlib.stats.imputation import impute_registry

    start = time.perf_counter()
    s = settings or SensitivitySettings()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ParamsError(f"workers must be a positive integer, got {workers!r}.")
    p = registry.params
    seed = int(p.seed if seed is None else seed)
    notes: list[str] = []
    if isinstance(joint_fitter, str):
        if joint_fitter != "auto":
            raise ParamsError(f"joint_fitter must be a callable, 'auto' or None, got {joint_fitter!r}.")
        joint_fitter = joint_model_fitter if _joint_model_available() else None
    if primary_imputation is None:
        reg = dataclasses.replace(registry, params=p.with_overrides(seed=seed))
        primary_imputation = impute_registry(reg, method="multilevel", m=s.m, iterations=s.iterations)
    # Every scenario imputes with the primary's m and iterations.
    s = dataclasses.replace(s, m=primary_imputation.m, iterations=primary_imputation.iterations)
    observed = registry.frame[p.focus]
    observed_sd = float(observed.dropna().std(ddof=1)) if registry.kinds.get(p.focus) == "numeric" else float("nan")
    ctx = _Context(registry=registry, settings=s, seed=seed, primary_imputation=primary_imputation,
                   primary_rows=None, joint_fitter=joint_fitter, observed_sd=observed_sd,
                   joint_reference=joint_reference)
    primary_rows, primary_notes = _analyse(ctx, primary_imputation)
    ctx.primary_rows = primary_rows
    notes.extend(primary_notes)

    plan = plan_scenarios(registry, s)
    order = sorted(range(len(plan)), key=lambda i: _task_cost(plan[i]))
    focus_term = _focus_terms(registry)[0]
    reference = _focus_row(primary_rows, focus_term)
    ref = {"estimate": float(reference.estimate), "ci_lower": float(reference.ci_lower),
           "ci_upper": float(reference.ci_upper)}

    def grid_points(outcomes_by_name, fam, sign):
        points = []
        for sc in plan:
            if sc.family == fam and np.sign(sc.options["delta_sd"]) == sign:
                out = outcomes_by_name[sc.name]
                r = _focus_row(out.estimates, focus_term) if out.status == "ok" else None
                points.append((sc.options["delta_sd"], None if r is None else
                               (float(r.estimate), float(r.ci_lower), float(r.ci_upper))))
        return points

    def bisection_tasks(outcomes_by_name):
        tasks = []
        for fam, mode in _DELTA_MODES.items():
            for sign in (1.0, -1.0):
                found = first_change_on_grid(grid_points(outcomes_by_name, fam, sign), ref,
                                             change_share=s.change_share, null_value=s.null_value)
                if found is not None and s.bisection_steps > 0:
                    tasks.append(((mode, sign), ("bisect", (mode, sign, found[0], found[1], ref))))
        return tasks

    outcomes: dict[str, ScenarioOutcome] = {}
    bisections: dict = {}
    delta_names = {sc.name for sc in plan if sc.family in _DELTA_MODES}
    if workers == 1:
        global _CONTEXT
        saved, _CONTEXT = _CONTEXT, ctx
        try:
            with _blas_one_thread():
                for i in order:
                    for out in _run_task(("scenario", [plan[i]])):
                        outcomes[out.scenario.name] = out
                for key, task in bisection_tasks(outcomes):
                    bisections[key] = _run_task(task)[0]
        finally:
            _CONTEXT = saved
    else:
        from concurrent.futures import FIRST_COMPLETED, wait

        # spawn: safe with the threads numpy/BLAS and the samplers start (fork is not).
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(ctx,)) as pool:
            pending = {pool.submit(_run_task, ("scenario", [plan[i]])): plan[i].name for i in order}
            bisect_pending = {}
            submitted = False
            while pending or bisect_pending:
                done, _ = wait(list(pending) + list(bisect_pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut in pending:
                        pending.pop(fut)
                        for out in fut.result():
                            outcomes[out.scenario.name] = out
                    else:
                        bisections[bisect_pending.pop(fut)] = fut.result()[0]
                if not submitted and delta_names <= set(outcomes):
                    submitted = True
                    for key, task in bisection_tasks(outcomes):
                        bisect_pending[pool.submit(_run_task, task)] = key

    # --- assemble, in plan order
    grid_parts, scenario_rows = [], []
    for sc in plan:
        out = outcomes[sc.name]
        if sc.reference == "primary":
            ref_rows = primary_rows
        else:
            ref_out = outcomes.get(sc.reference)
            ref_rows = ref_out.estimates if ref_out is not None and ref_out.status == "ok" else None
        rows = _grid_rows(out, ref_rows, s)
        if sc.reference != "primary" and ref_rows is None and out.status == "ok":
            out.notes.append(f"Its reference {sc.reference} failed, so no conclusion is compared.")
        grid_parts.append(rows)
        focus = rows.loc[rows["term"] == focus_term]
        d = out.details
        scenario_rows.append({
            "scenario": sc.name, "family": sc.family, "reference": sc.reference, "status": out.status,
            "reason": out.reason, "n_clusters_excluded": d.get("n_clusters_excluded", 0),
            "n_patients_excluded": d.get("n_patients_excluded", 0),
            "excluded_clusters": list(d.get("excluded_clusters", [])),
            "delta_sd": d.get("delta_sd", np.nan), "delta_units": d.get("delta_units", np.nan),
            "joint_fit": d.get("how", ""),
            "changed_conclusion": bool(len(focus) and focus["changed_conclusion"].iloc[0]),
            "change_reason": focus["change_reason"].iloc[0] if len(focus) else "",
            "notes": list(out.notes), "seconds": out.seconds, "cpu_seconds": out.cpu_seconds})
    grid = pd.concat(grid_parts, ignore_index=True) if grid_parts else pd.DataFrame(
        columns=["scenario", "family", "reference", "status", "term", "estimate", "std_error", "ci_lower",
                 "ci_upper", "n_patients", "n_clusters", "changed_conclusion", "change_reason"])
    scenarios = pd.DataFrame(scenario_rows, columns=[
        "scenario", "family", "reference", "status", "reason", "n_clusters_excluded", "n_patients_excluded",
        "excluded_clusters", "delta_sd", "delta_units", "joint_fit", "changed_conclusion", "change_reason", "notes",
        "seconds", "cpu_seconds"])

    tipping, curve = {}, []
    for fam, mode in _DELTA_MODES.items():
        if fam not in s.families:
            continue
        deltas = [sc.options["delta_sd"] for sc in plan if sc.family == fam]
        curve.append({"mode": mode, "delta_sd": 0.0, "delta_units": 0.0, **ref, "changed": False,
                      "source": "primary"})
        for sc in plan:
            if sc.family == fam and outcomes[sc.name].status == "ok":
                r = _focus_row(outcomes[sc.name].estimates, focus_term)
                why = grid.loc[(grid["scenario"] == sc.name) & (grid["term"] == focus_term), "change_reason"].iloc[0]
                curve.append({"mode": mode, "delta_sd": sc.options["delta_sd"],
                              "delta_units": sc.options["delta_sd"] * observed_sd, "estimate": float(r.estimate),
                              "ci_lower": float(r.ci_lower), "ci_upper": float(r.ci_upper), "changed": bool(why),
                              "source": "grid"})
        tipping[mode] = {}
        for sign, side in ((1.0, "positive"), (-1.0, "negative")):
            b = bisections.get((mode, sign))
            if b is not None and b.get("error"):
                notes.append(f"The tipping point ({mode}, {side} delta) could not be refined: {b['error']}; "
                             "the grid bracket is reported.")
            found = first_change_on_grid(grid_points(outcomes, fam, sign), ref, change_share=s.change_share,
                                         null_value=s.null_value)
            grid_max = max((abs(d) for d in deltas if np.sign(d) == sign), default=0.0)
            tipping[mode][side] = _tipping_summary(sign, grid_max, found, b, observed_sd)
            for ev in (b or {}).get("evaluations", []):
                curve.append({"mode": mode, "delta_sd": ev["delta"], "delta_units": ev["delta"] * observed_sd,
                              "estimate": ev["estimate"], "ci_lower": ev["ci_lower"], "ci_upper": ev["ci_upper"],
                              "changed": bool(ev["change"]), "source": "bisection"})
    delta_curve = (pd.DataFrame(curve).sort_values(["mode", "delta_sd"], kind="stable").reset_index(drop=True)
                   if curve else pd.DataFrame(columns=["mode", "delta_sd", "delta_units", "estimate", "ci_lower",
                                                       "ci_upper", "changed", "source"]))
    primary_n = int(primary_rows["n_patients"].iloc[0])
    return SensitivityResult(
        focus=p.focus, focus_terms=_focus_terms(registry), primary=primary_rows,
        primary_method=primary_imputation.label, grid=grid, scenarios=scenarios, tipping=tipping,
        delta_curve=delta_curve, observed_sd=observed_sd, settings=s, min_cell=p.privacy.min_cell,
        n_patients_primary=primary_n, n_patients_all=registry.n_patients, workers=int(workers), elapsed=time.perf_counter() - start, notes=notes)


@dataclass(frozen=True)
class SensitivityArtifact(Artifact):
    """The record of step 5 (``artifacts/sensitivity.json``)."""

    KEY: ClassVar[str] = "sensitivity"
    VERSION: ClassVar[int] = 1

    delta_curve: list
    elapsed_s: float
    focus: str
    focus_terms: list
    grid: list
    narrative: list
    notes: list
    observed_sd: float | None
    primary: list
    primary_method: str
    scenarios: list
    settings: dict
    tipping: list
    verdict: str
    workers: int


def run(ctx: StepContext) -> SensitivityResult:
    """Run the scenario grid around the primary analysis and write the artifact and estimates.

    The prior scenarios reweight step 4's posterior draws (refitting only
    where the weights say so). Without those draws they refit the joint
    model per prior, which fast mode skips (the result's notes say so).
    """
    joint_reference = PosteriorDraws.load_matching(
        artifact_path(ctx.output_dir, "joint_posterior").with_name("joint_posterior.npz"), ctx.registry)
    families = tuple(f for f in FAMILIES if not (ctx.params.fast and f == "prior" and joint_reference is None))
    result = run_sensitivity(ctx.registry, SensitivitySettings(families=families, m=ctx.sizes.imputations,
                                                               iterations=ctx.sizes.iterations),
                             joint_reference=joint_reference)
    if "prior" not in families:
        result.notes.append("Fast mode without step 4's draws: the prior scenarios of the joint model were not run.")
    ctx.write(STEP, result)
    return result


STEP = Step(key="sensitivity", number=5, title="Group-aware sensitivity analysis",
            notebook="05_sensitivity.ipynb", artifact=SensitivityArtifact, run=run,
            needs=("diagnose", "imputation", "joint_model"), methods=("sensitivity",),
            summary_name="step 5 (sensitivity analysis)")
