"""The scenario families of step 5: what each one changes, and how one scenario is run.

Each scenario changes one assumption of the primary analysis (multilevel
multiple imputation, then the random-intercept analysis model pooled by
Rubin's rules), within or across clusters, and re-runs that analysis.
:func:`plan_scenarios` lists the scenarios the settings ask for;
:func:`run_scenario_task` runs one (and :func:`run_bisection_task` one
tipping-point refinement). Both are module-level so that they can run in
worker processes (:mod:`hmlib.parallel`): what every task shares (the
registry, the primary imputation, the settings) reaches each worker once, as
a :class:`ScenarioContext` passed to each task (or set for this process by
:func:`set_scenario_context`).

Every re-imputation uses the primary's residual-variance choice (common,
``2l.pan``, or cluster-specific, ``2l.norm``; :attr:`ScenarioContext.cluster_residual_variance`)
and the primary's seed (common random numbers: a scenario differs from the
primary by its assumption, not by Monte Carlo noise).

Scenario families
-----------------
``exclusion``
    Clusters whose share of missing focus values is above a threshold
    (default 0.2, 0.4, 0.6; strictly above) are left out, and imputation and
    analysis are re-run on the rest. Asks: does the answer rest on the poorly
    documenting clusters, whose values are mostly imputed? With
    ``higher_levels`` the same is done at each level above the cluster
    (``exclude-missing>20%:country``: countries above the threshold left out,
    with all their clusters).
``stratified``
    The multilevel imputation model is fitted separately within each level
    of the cluster type (the first cluster covariate), so that every
    coefficient of the imputation model may differ between, e.g., major
    centres and units. (The *flat* stratified imputation of
    :mod:`hmlib.stats.imputation` is compared in step 3; here the clusters are
    kept and only the type-specific model is added.)
``prior``
    The joint Bayesian model (:mod:`hmlib.stats.joint`) with other
    priors on its cluster-level SDs: half-normal with scale 0.5, 1 (the
    default) and 2.5, and the heavy-tailed half-Cauchy(1) (a half-Student-t
    with 1 degree of freedom; Gelman 2006). Given step 4's posterior draws
    (``joint_reference``), each other prior reweights them by Pareto-smoothed
    importance sampling (:func:`hmlib.stats.joint.reweight_cluster_sd_prior`):
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
    ``delta`` after imputation (:func:`hmlib.stats.sensitivity.cluster_deltas`,
    :func:`hmlib.stats.sensitivity.shift_imputed`), the same in every cluster
    or in proportion to each cluster's share of missing values, and the
    analysis is re-run. ``delta`` is set on a grid in SDs of the observed
    focus values (default -1 to 1 by 0.25) and is also reported in the
    variable's own units. The primary imputations are made once and shifted:
    the imputation model is **not** re-run. A categorical focus is shifted on
    the log-odds scale instead (:func:`hmlib.stats.sensitivity.shift_imputed_categories`):
    its imputed values are redrawn with the odds of each non-reference level
    (nominal) or of a higher category (ordinal, ``ordinal:`` in the params)
    multiplied by ``e^delta``, ``delta`` on a grid of log odds ratios
    (default -2 to 2 by 0.5: odds ratios 0.14 to 7.4); the tipping point is
    reported as an odds ratio.
``delta-dropout`` and ``early-dropout`` (repeated measures, params ``time``)
    The MNAR delta applied after dropout and the exclusion of patients who
    dropped out early: :mod:`hmlib.steps.sensitivity_dropout`.
``leave-out``
    Each of the ``n_influential`` (default 5) best-documented clusters (most
    recorded focus values; ties by size) is left out in turn and imputation
    and analysis re-run. If leaving out one of them changes the conclusion,
    the verdict names it. With ``higher_levels``, also the
    ``min(n_influential, HIGHER_LEAVE_OUT)`` best-documented units of each
    level above the cluster (``leave-out:country=C03``), each with all its
    clusters.

References
----------
Gelman A (2006). Prior distributions for variance parameters in hierarchical
models. Bayesian Anal 1(3):515-534.
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin
Trials 7:177-188.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import FitError, ParamsError
from hmlib.results import ESTIMATE_COLUMNS, estimate_rows
from hmlib.stats.design import design_matrix, fit_design, outermost_first
from hmlib.stats.dropout_delta import SHIFT_FORMS
from hmlib.steps.imputation import impute_by_stratum, impute_registry
from hmlib.stats.joint import reweight_cluster_sd_prior
from hmlib.steps.joint_model import fit_registry
from hmlib.stats.pooling import analyse_imputations
from hmlib.stats.sensitivity import cluster_deltas, refine_tipping_point, shift_imputed, shift_imputed_categories
from hmlib.steps.complete_case import complete_case_check
from hmlib.steps.sensitivity_focus import (categorical_focus, category_model_for, delta_grid, focus_levels,
                                           focus_reference, focus_row, focus_terms, focus_value, term_list)
from hmlib.steps.sensitivity_rule import NEGLIGIBLE_SHARE

__all__ = ["FAMILIES", "DROPOUT_FAMILIES", "DELTA_MODES", "DELTA_FAMILIES", "SensitivitySettings", "Scenario",
           "ScenarioOutcome", "ScenarioContext",
           "plan_scenarios", "clusters_above_threshold", "best_documented_clusters",
           "joint_model_fitter", "joint_priors", "prior_label", "analyse", "set_scenario_context", "run_scenario_task",
           "run_bisection_task", "exclude_units", "contract_rows"]

#: At most this many best-documented units of each level above the cluster are left out in turn.
HIGHER_LEAVE_OUT = 3
FAMILIES = ("exclusion", "stratified", "prior", "indicator", "delta-global", "delta-cluster", "leave-out",
            "delta-dropout", "early-dropout")
#: The repeated-measures families (params ``time``), run by :mod:`hmlib.steps.sensitivity_dropout`.
DROPOUT_FAMILIES = ("delta-dropout", "early-dropout")
#: The delta-adjustment families and their mode (:func:`hmlib.stats.sensitivity.cluster_deltas`).
DELTA_MODES = {"delta-global": "global", "delta-cluster": "cluster"}
#: Every MNAR delta family: those of the focus and the delta after dropout (judged by tipping point, not one by one).
DELTA_FAMILIES = (*DELTA_MODES, "delta-dropout")
#: The families whose scenarios re-impute the registry (and may warm-start from the primary imputation).
REIMPUTING_FAMILIES = ("exclusion", "stratified", "leave-out")
#: Those that warm-start by default: all of them. ``bench/sensitivity_warm_start.py`` shows no change beyond
#: Monte Carlo error, measured against cold starts long enough to be independent reruns (for the trial shape's
#: leave-out, 30 iterations: two 10-iteration cold runs scatter less than independent reruns there, which once
#: made warm leave-outs look worse than they are; ``bench/results/sensitivity_warm_start_leave_out_it30.json``).
WARM_FAMILIES = REIMPUTING_FAMILIES


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
    deltas_log_odds : tuple of float
        Delta grid of a categorical focus, in log odds ratios (default -2 to
        2 by 0.5: odds ratios 0.14 to 7.4).
    bisection_steps : int
        Bisection steps refining each tipping point (0: grid only).
    dropout_form : {"constant", "growing"}
        Form of the delta after dropout (:mod:`hmlib.steps.sensitivity_dropout`).
    relevant_difference : float, optional
        The clinically relevant difference on the reported scale: a ratio of
        odds ratios > 1 (binomial outcome; default 1.25) or a difference in
        outcome units (gaussian; default 0.1 SD of the outcome), per reported
        unit of the predictor (:mod:`hmlib.steps.sensitivity_rule`).
    negligible_share : float
        A significance flip changes the conclusion only with a move of at
        least this share of the relevant difference (default 0.5).
    null_value : float
        The null of the coefficients (0 on the link scale).
    plausible_delta_sd : float
        Departures from MAR up to this many SDs count as plausible in the
        verdict: a tipping point within it makes the conclusion fragile.
    plausible_log_odds : float
        The same for a categorical focus, in log odds (default log 2: odds
        ratios from 1/2 to 2).
    n_influential : int
        Best-documented clusters left out one at a time.
    min_clusters : int
        A scenario left with fewer clusters fails.
    m, iterations : int, optional
        Imputations and iterations (default: as the params, 20/10 or 5/5 fast).
    warm_iterations : int, optional
        Iterations of a scenario of a family in ``warm_families`` that
        re-imputes, whose chain ``k`` starts from the primary imputation's
        completed data set ``k`` (restricted to the scenario's patients)
        instead of from random draws; None: every scenario starts cold with
        ``iterations``. The step uses
        :attr:`hmlib.settings.RunSizes.scenario_iterations` (what this
        changes, measured by simulation: ``bench/sensitivity_warm_start.py``).
    warm_families : tuple of str
        The re-imputing families that warm-start when ``warm_iterations`` is
        set (default all three: the simulation shows no change beyond Monte
        Carlo error for each, :data:`WARM_FAMILIES`). A family left out of
        it starts cold, with ``iterations``.
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
    deltas_log_odds: tuple = (-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0)
    bisection_steps: int = 6
    dropout_form: str = "constant"
    relevant_difference: float | None = None
    negligible_share: float = NEGLIGIBLE_SHARE
    null_value: float = 0.0
    plausible_delta_sd: float = 0.5
    plausible_log_odds: float = math.log(2.0)
    n_influential: int = 5
    min_clusters: int = 5
    m: int | None = None
    iterations: int | None = None
    warm_iterations: int | None = None
    warm_families: tuple = WARM_FAMILIES
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
        if not all(np.isfinite(self.deltas_sd)) or not all(np.isfinite(self.deltas_log_odds)):
            raise ParamsError("deltas_sd and deltas_log_odds must be finite numbers.")
        if self.relevant_difference is not None and (isinstance(self.relevant_difference, bool) or not (
                np.isfinite(self.relevant_difference) and self.relevant_difference > 0)):
            raise ParamsError(f"relevant_difference must be a number > 0, got {self.relevant_difference!r}.")
        if not 0 < self.negligible_share <= 1:
            raise ParamsError(f"negligible_share must be in (0, 1], got {self.negligible_share}.")
        if self.dropout_form not in SHIFT_FORMS:
            raise ParamsError(f"dropout_form must be one of {list(SHIFT_FORMS)}, got {self.dropout_form!r}.")
        if self.bisection_steps < 0 or self.n_influential < 0 or self.min_clusters < 2:
            raise ParamsError("bisection_steps and n_influential must be >= 0 and min_clusters >= 2.")
        if self.warm_iterations is not None and not (isinstance(self.warm_iterations, int)
                                                     and self.warm_iterations >= 1):
            raise ParamsError(f"warm_iterations must be a positive integer or None, got {self.warm_iterations!r}.")
        if not set(self.warm_families) <= set(REIMPUTING_FAMILIES):
            raise ParamsError(f"warm_families are re-imputing families {list(REIMPUTING_FAMILIES)}, "
                              f"got {list(self.warm_families)}.")
        if not 0 < self.level < 1:
            raise ParamsError(f"level must be between 0 and 1, got {self.level}.")


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


def prior_label(spec) -> str:
    """``("halfnormal", 1.0)`` -> ``"halfnormal(1)"`` (the scenario's name after ``prior:``)."""
    return f"{spec[0]}({float(spec[1]):g})"


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
            for level in outermost_first(registry.frame, p.higher_levels):
                for t in s.exclusion_thresholds:
                    plan.append(Scenario(f"exclude-missing>{t:.0%}:{level}", fam,
                                         options={"threshold": float(t), "level": level}))
        elif fam == "stratified":
            if p.cluster_covariates:
                ctype = p.cluster_covariates[0]
                plan.append(Scenario(f"stratified-imputation:{ctype}", fam, options={"by": ctype}))
        elif fam == "prior":
            ref = prior_label(s.reference_prior)
            for spec in s.cluster_sd_priors:
                label = prior_label(spec)
                plan.append(Scenario(f"prior:{label}", fam,
                                     reference="primary" if label == ref else f"prior:{ref}",
                                     options={"prior": tuple(spec)}))
        elif fam == "indicator":
            plan.append(Scenario("indicator:common", fam, options={"kind": "common"}))
            plan.append(Scenario("indicator:partially-pooled", fam, reference="indicator:common",
                                 options={"kind": "partially-pooled"}))
        elif fam in DELTA_MODES:
            mode = DELTA_MODES[fam]
            grid, unit = delta_grid(registry, s)
            for d in grid:     # options["delta_sd"]: delta on the focus's scale (SDs, or log odds if categorical)
                plan.append(Scenario(f"{fam}:{d:+g}{unit}", fam, options={"mode": mode, "delta_sd": d}))
        elif fam == "leave-out":
            for label in best_documented_clusters(registry.frame, p.cluster, p.focus, s.n_influential):
                plan.append(Scenario(f"leave-out:{label}", fam, options={"cluster": label}))
            for level in outermost_first(registry.frame, p.higher_levels):
                n = min(s.n_influential, HIGHER_LEAVE_OUT)
                for label in best_documented_clusters(registry.frame, level, p.focus, n):
                    plan.append(Scenario(f"leave-out:{level}={label}", fam,
                                         options={"cluster": label, "level": level}))
    return plan


# --------------------------------------------------------------------------
# Joint model (injected)
# --------------------------------------------------------------------------
def joint_model_fitter(registry, *, priors: dict, seed: int, fast: bool | None = None):
    """Fit :func:`hmlib.steps.joint_model.fit_registry` with ``priors`` (chains on one core, for a worker).

    The default ``joint_fitter`` of :func:`hmlib.steps.sensitivity.run_sensitivity`.
    Returns the :class:`hmlib.stats.joint.JointModelResult`.
    """
    return fit_registry(registry, priors=priors, seed=seed, fast=fast, cores=1)


def joint_priors(spec) -> dict:
    """The joint model's ``priors`` argument for a cluster-SD prior of the settings.

    ``("halfcauchy", s)`` is the half-Student-t with 1 degree of freedom.

    Examples
    --------
    >>> joint_priors(("halfcauchy", 1.0))
    {'cluster_sd': ('halfstudentt', 1.0, 1.0)}
    """
    family, scale = spec[0], float(spec[1])
    if family == "halfcauchy":  # half-Cauchy = half-Student-t with 1 df
        return {"cluster_sd": ("halfstudentt", 1.0, scale)}
    return {"cluster_sd": ("halfnormal", scale)}


# --------------------------------------------------------------------------
# What every task shares
# --------------------------------------------------------------------------
@dataclass(eq=False)
class ScenarioContext:
    """The inputs every scenario shares (sent once to each worker).

    Attributes
    ----------
    registry : hmlib.data.Registry
    settings : SensitivitySettings
        With ``m`` and ``iterations`` those of the primary imputation.
    seed : int
        Seed of every imputation.
    primary_imputation : hmlib.stats.imputation.ImputationResult
    primary_rows : pandas.DataFrame
        The primary analysis (contract columns without ``method``).
    joint_fitter : callable or None
    observed_sd : float
        SD of the observed focus values (the delta scale).
    joint_reference : object, optional
        Step 4's fit or draws (see :func:`hmlib.steps.sensitivity.run_sensitivity`).
    cluster_residual_variance : bool
        Every re-imputation uses cluster-specific residual variances (2l.norm)
        when True, a common one (2l.pan) when False: the primary's choice.
    category_model : CategoryImputationModel or str, optional
        A categorical focus: the imputation model's distribution of each
        imputed value (:func:`category_model_for`), or why it could not be
        built (the delta scenarios then fail with that reason).
    rule : hmlib.steps.sensitivity_rule.ConclusionRule, optional
        When a conclusion changes (set once the primary analysis is known).
    """

    registry: object
    settings: SensitivitySettings
    seed: int
    primary_imputation: object
    primary_rows: pd.DataFrame
    joint_fitter: object
    observed_sd: float
    joint_reference: object = None
    cluster_residual_variance: bool = False
    category_model: object = None
    rule: object = None


#: The context of the tasks run in this process (set by :func:`set_scenario_context`).
_CONTEXT: ScenarioContext | None = None


def set_scenario_context(context: ScenarioContext | None) -> ScenarioContext | None:
    """Make ``context`` the one the tasks of this process use; returns the previous one.

    The tasks use it when they are not given a context.
    """
    global _CONTEXT
    previous, _CONTEXT = _CONTEXT, context
    return previous


def contract_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The estimate columns of ``estimates.csv`` without ``method``: what a scenario returns."""
    cols = [c for c in ESTIMATE_COLUMNS if c != "method"]
    return frame.loc[:, cols].reset_index(drop=True)


def analyse(ctx: ScenarioContext, imputation, map_tasks=None) -> tuple[pd.DataFrame, list]:
    """The analysis model on ``imputation``, pooled by Rubin's rules: (contract rows, notes).

    ``map_tasks`` (:meth:`hmlib.parallel.TaskPool.map`) fits the m analyses as tasks.
    """
    p = ctx.registry.params
    pooled = analyse_imputations(imputation, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                 family=p.outcome_family, levels=ctx.registry.levels, level=ctx.settings.level,
                                 map_tasks=map_tasks, higher_levels=p.higher_levels, random_slopes=p.random_slopes)
    return contract_rows(pooled.to_frame()), list(pooled.notes)


def _warm_start(ctx: ScenarioContext, family: str, keep: np.ndarray | None = None, *,
                reset_index: bool = True) -> dict:
    """How a scenario's chains start: ``impute`` keywords (``iterations``, ``start``, ``start_states``).

    Warm (the settings' ``warm_iterations``, for a family in
    ``warm_families``): chain ``k`` from the primary's completed data set
    ``k`` (rows ``keep``) and the state its chain ended in. Cold
    (``warm_iterations`` None, or another family): random draws and
    ``iterations``.
    """
    s = ctx.settings
    if s.warm_iterations is None or family not in s.warm_families:
        return {"iterations": s.iterations}
    completed = ctx.primary_imputation.completed
    if keep is not None:
        completed = [done.loc[keep] for done in completed]
        if reset_index:
            completed = [done.reset_index(drop=True) for done in completed]
    states = getattr(ctx.primary_imputation, "chain_states", None) or None
    return {"iterations": s.warm_iterations, "start": completed, "start_states": states}


def _impute(ctx: ScenarioContext, registry, keep: np.ndarray, family: str):
    """Re-impute the registry's rows ``keep`` (a scenario of ``family``), warm-started from the primary when
    the settings say so."""
    registry = dataclasses.replace(_subset_registry(registry, keep),
                                   params=registry.params.with_overrides(seed=ctx.seed))
    return impute_registry(registry, method="multilevel", m=ctx.settings.m,
                           cluster_residual_variance=ctx.cluster_residual_variance,
                           **_warm_start(ctx, family, keep))


# --------------------------------------------------------------------------
# The families
# --------------------------------------------------------------------------
def _subset_registry(registry, keep: np.ndarray):
    return dataclasses.replace(registry, frame=registry.frame.loc[keep].reset_index(drop=True))


def exclude_units(ctx: ScenarioContext, scenario: Scenario, excluded: list) -> ScenarioOutcome:
    """Re-impute and re-analyse without the units ``excluded`` of the scenario's level (default: clusters).

    Parameters
    ----------
    ctx : ScenarioContext
    scenario : Scenario
        Its ``options["level"]`` names the level of ``excluded`` (default: the cluster).
    excluded : list
        Labels of the units left out (none: the primary analysis, with a note).

    Returns
    -------
    ScenarioOutcome
        ``excluded_clusters`` in the details are always clusters: those of the excluded units.
    """
    reg = ctx.registry
    cluster = reg.params.cluster
    level = scenario.options.get("level", cluster)
    drop = reg.frame[level].isin(excluded).to_numpy()
    labels = reg.frame[cluster]
    left = int(labels[~drop].nunique())
    clusters = excluded if level == cluster else sorted(labels[drop].unique().tolist(), key=str)
    details = {"excluded_clusters": list(clusters), "n_clusters_excluded": len(clusters),
               "n_patients_excluded": int(drop.sum()), "n_clusters_left": left}
    if not excluded:
        return ScenarioOutcome(scenario, "ok", estimates=ctx.primary_rows.copy(), details=details,
                               notes=["No cluster meets the condition: the analysis is the primary one."])
    if left < ctx.settings.min_clusters:
        return ScenarioOutcome(scenario, "failed", details=details,
                               reason=f"only {left} cluster(s) left after excluding {len(excluded)} "
                                      f"(at least {ctx.settings.min_clusters} needed)")
    rows, notes = analyse(ctx, _impute(ctx, reg, ~drop, scenario.family))
    return ScenarioOutcome(scenario, "ok", estimates=rows, details=details, notes=notes)


def _run_exclusion(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    p = ctx.registry.params
    level = scenario.options.get("level", p.cluster)
    excluded = clusters_above_threshold(ctx.registry.frame, level, p.focus, scenario.options["threshold"])
    return exclude_units(ctx, scenario, excluded)


def _run_leave_out(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    return exclude_units(ctx, scenario, [scenario.options["cluster"]])


def _run_stratified(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    by = scenario.options["by"]
    try:
        combined = impute_by_stratum(ctx.registry, by, m=ctx.primary_imputation.m, seed=ctx.seed,
                                     cluster_residual_variance=ctx.cluster_residual_variance,
                                     **_warm_start(ctx, "stratified"))
    except FitError as exc:
        return ScenarioOutcome(scenario, "failed", reason=str(exc))
    rows, more = analyse(ctx, combined)
    n_strata = int(ctx.registry.frame[by].astype(object).fillna("(not recorded)").nunique())
    return ScenarioOutcome(scenario, "ok", estimates=rows, details={"strata": n_strata},
                           notes=list(combined.notes) + more)


def _reference_draws(reference):
    """The reference fit's parameter draws, if it has them (a JointModelResult or PosteriorDraws)."""
    if reference is None or isinstance(reference, pd.DataFrame):
        return None
    if hasattr(reference, "posterior_draws"):
        return reference.posterior_draws()
    return reference if hasattr(reference, "cluster_sds") else None


def _reuse_reference(reference, draws, wanted) -> tuple[pd.DataFrame, dict]:
    """Estimates and details of step 4's own fit (the scenario with step 4's prior)."""
    if hasattr(reference, "to_estimates"):
        table = reference.to_estimates()
    elif draws is not None:          # saved draws: equal weights give the fit's own summary
        table = reweight_cluster_sd_prior(draws, wanted).estimates
    else:
        table = pd.DataFrame(reference)
    details = {"how": "step 4 fit"}
    if draws is not None:
        details["converged"] = bool(draws.converged)
    return table, details


def _run_prior(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    fitter = ctx.joint_fitter
    reference = ctx.joint_reference
    draws = _reference_draws(reference)
    wanted = joint_priors(scenario.options["prior"])["cluster_sd"]
    same_prior = (tuple(draws.cluster_sd_prior) == tuple(wanted)) if draws is not None else \
        prior_label(scenario.options["prior"]) == prior_label(ctx.settings.reference_prior)
    notes = []
    if reference is not None and same_prior:
        table, details = _reuse_reference(reference, draws, wanted)
        return ScenarioOutcome(scenario, "ok", estimates=contract_rows(table), details=details,
                               notes=["The joint model fitted in step 4 (this prior) is reused."])
    if draws is not None:
        weighted = reweight_cluster_sd_prior(draws, wanted)
        if weighted.reliable:
            note = f"Joint model: {weighted.message}"
            if not draws.converged:
                note += f" The reweighted fit had not converged: {draws.convergence_message}"
            return ScenarioOutcome(scenario, "ok", estimates=contract_rows(weighted.estimates),
                                   details={"converged": bool(draws.converged), "how": "importance reweighting",
                                            "pareto_k": weighted.pareto_k},
                                   notes=[note])
        notes.append(f"Joint model: {weighted.message.rstrip('.')}; too far from the step-4 posterior, so refitted.")
    if fitter is None:
        reason = "not available: joint model not built" if draws is None else \
            f"step 4's draws cannot be reweighted to this prior ({weighted.message.rstrip('.')}) and no joint-model " \
            "fitter is available to refit"
        return ScenarioOutcome(scenario, "failed", reason=reason)
    result = fitter(ctx.registry, priors=joint_priors(scenario.options["prior"]), seed=ctx.seed,
                    fast=True if ctx.settings.joint_fast else None)
    table = result.to_estimates() if hasattr(result, "to_estimates") else pd.DataFrame(result)
    message = getattr(result, "convergence_message", None)
    if message:
        notes.append(f"Joint model refitted: {message}")
    details = {"converged": bool(getattr(result, "converged", True)), "how": "refit"}
    return ScenarioOutcome(scenario, "ok", estimates=contract_rows(table), details=details, notes=notes)


def _run_indicator(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    reg = ctx.registry
    p = reg.params
    check = complete_case_check(reg)
    common = check.estimates.loc[check.estimates["method"] == "missing_indicator"]
    if not len(common):
        reason = "; ".join(check.notes) or "the missing-indicator model could not be fitted"
        return ScenarioOutcome(scenario, "failed", reason=reason)
    if scenario.options["kind"] == "common":
        return ScenarioOutcome(scenario, "ok", estimates=contract_rows(common))
    table = check.indicator_by_cluster
    if table is None or table.attrs.get("n_estimable", 0) < 2:
        return ScenarioOutcome(scenario, "failed",
                               reason="fewer than 2 clusters have both measured and unmeasured patients "
                                      "with an estimable indicator effect")
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
    fit = fit_design(work, design, outcome=p.outcome, cluster=p.cluster, family=p.outcome_family,
                     higher_levels=p.higher_levels, random_slopes=p.random_slopes)
    details = {"indicator_sd_between_clusters": float(table.attrs["tau"]),
               "heterogeneity_p": float(table.attrs["q_p"]),
               "n_clusters_estimable": int(table.attrs["n_estimable"])}
    return ScenarioOutcome(scenario, "ok", estimates=contract_rows(estimate_rows(fit, "x", ctx.settings.level)),
                           details=details, notes=notes)


def _delta_evaluate(ctx: ScenarioContext, mode: str, delta_sd: float) -> tuple[pd.DataFrame, dict]:
    reg = ctx.registry
    p = reg.params
    categorical = ctx.category_model is not None
    units = delta_sd if categorical else delta_sd * ctx.observed_sd     # log odds, or the focus's units
    per_cluster = cluster_deltas(reg.frame, p.cluster, p.focus, units, mode=mode)
    shift = reg.frame[p.cluster].map(per_cluster).to_numpy(dtype=float)
    shifted = (shift_imputed_categories(ctx.primary_imputation, ctx.category_model, shift) if categorical
               else shift_imputed(ctx.primary_imputation, p.focus, shift))
    rows, _ = analyse(ctx, shifted)
    missing_clusters = reg.frame.loc[reg.frame[p.focus].isna(), p.cluster].unique()
    used = per_cluster.loc[per_cluster.index.isin(missing_clusters)]
    details = {"delta_sd": float(delta_sd), "delta_units": float(units),
               "cluster_delta_min": float(used.min()) if len(used) else 0.0,
               "cluster_delta_max": float(used.max()) if len(used) else 0.0}
    return rows, details


def _run_delta(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    p = ctx.registry.params
    if not ctx.primary_imputation.imputed_mask[p.focus].any():
        return ScenarioOutcome(scenario, "failed", reason=f"{p.focus} has no imputed value to shift")
    if isinstance(ctx.category_model, str):
        return ScenarioOutcome(scenario, "failed", reason=ctx.category_model)
    if categorical_focus(ctx.registry) and ctx.category_model is None:
        return ScenarioOutcome(scenario, "failed", reason=f"no imputation model of the categorical {p.focus} was "
                                                          "built to shift")
    rows, details = _delta_evaluate(ctx, scenario.options["mode"], scenario.options["delta_sd"])
    return ScenarioOutcome(scenario, "ok", estimates=rows, details=details)


_RUNNERS = {"exclusion": _run_exclusion, "stratified": _run_stratified, "prior": _run_prior,
            "indicator": _run_indicator, "delta-global": _run_delta, "delta-cluster": _run_delta,
            "leave-out": _run_leave_out}


# --------------------------------------------------------------------------
# Tasks (module level: they run in worker processes)
# --------------------------------------------------------------------------
def run_scenario_task(scenario: Scenario, context: ScenarioContext | None = None, runner=None) -> ScenarioOutcome:
    """Run one scenario with ``context`` (default: this process's); an exception becomes a failed scenario.

    ``runner(context, scenario)`` runs a family defined elsewhere (:mod:`hmlib.steps.sensitivity_dropout`).
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        outcome = (runner or _RUNNERS[scenario.family])(_CONTEXT if context is None else context, scenario)
    except Exception as exc:  # noqa: BLE001 - kept as a failed scenario with its reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        outcome = ScenarioOutcome(scenario, "failed", reason=f"{type(exc).__name__}: {first}")
    outcome.seconds = time.perf_counter() - start
    outcome.cpu_seconds = time.process_time() - start_cpu
    return outcome


def run_bisection_task(task: tuple, context: ScenarioContext | None = None) -> dict:
    """Refine one tipping point (:func:`hmlib.stats.sensitivity.refine_tipping_point`) on the delta-adjusted primary.

    Parameters
    ----------
    task : tuple
        ``(mode, sign, lo, hi, reference)``: delta mode, side of 0, the grid
        bracket in ``|delta|`` and the primary's focus ``estimate, ci_lower,
        ci_upper`` (one per term for a categorical focus, :func:`focus_reference`).
    context : ScenarioContext, optional
        Default: this process's (:func:`set_scenario_context`).

    Returns
    -------
    dict
        ``mode, sign, lo, hi, evaluations``; on an error the grid bracket,
        no evaluations and ``error`` (the refinement is dropped, the grid
        result kept).
    """
    mode, sign, lo, hi, reference = task
    ctx = _CONTEXT if context is None else context
    try:
        terms, s = focus_terms(ctx.registry), ctx.settings

        def evaluate(delta_sd):
            return focus_value(_delta_evaluate(ctx, mode, delta_sd)[0], terms)

        refined = refine_tipping_point(evaluate, lo, hi, sign, reference, ctx.rule.focus_rule(terms),
                                       steps=s.bisection_steps)
        return {"mode": mode, "sign": sign, **refined}
    except Exception as exc:  # noqa: BLE001 - the grid bracket is kept, the refinement is not
        return {"mode": mode, "sign": sign, "lo": lo, "hi": hi, "evaluations": [],
                "error": f"{type(exc).__name__}: {exc}"}
