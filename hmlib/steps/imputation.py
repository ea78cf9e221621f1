"""Step 3: flat vs hierarchical multiple imputation, side by side.

The same registry is imputed four ways (:mod:`hmlib.stats.imputation`), each
imputation is analysed with the report's random-intercept model and pooled
by Rubin's rules (:mod:`hmlib.stats.pooling`), and the results are set next to
the complete-case fit and, for simulated data, the truth.

This module is the step's orchestration: the methods compared, the choice
of residual variance, the registry adapters :func:`impute_registry` and
:func:`impute_by_stratum` (also used by step 5),
:func:`imputation_step` and ``STEP``. What the step found (its result,
tables, narrative and typed artifact) is :mod:`hmlib.steps.imputation_result`;
the transport check as the step runs and publishes it is
:mod:`hmlib.steps.imputation_transport`. Privacy (small-cell suppression) is
applied here and there, never in :mod:`hmlib.stats`.

Methods (labels as written to ``estimates.csv``)
-----------------------------------------------
``flat_mi``
    Single-level chained equations with predictive mean matching for
    continuous variables; the clusters are ignored. The comparator (R's
    ``mice`` with ``pmm``).
``stratified_mi``
    The flat models fitted separately within each cluster (``strata`` is
    the cluster by default: the classical "separate imputation per group").
    Where a cluster is too small for its model, the engine imputes it from
    the flat model instead. When that happens in at least
    ``max_fallback_share`` (default half) of the strata for some variable,
    the result is mostly flat imputation under another name, so the method
    is reported as **failed** with that reason (and no estimates are
    written for it); below that share, the fall-backs are listed in its
    notes.
``fixed_effects_mi``
    Single-level models with one intercept per cluster.
``multilevel_mi``
    Random-intercept chained equations (``2l.pan``; with
    ``cluster_residual_variance`` ``2l.norm``).

Any method whose imputation or analysis raises is reported as failed with
its reason; it is never dropped silently.

Common or cluster-specific residual variance
--------------------------------------------
``2l.norm`` (a residual variance per cluster, Kasim & Raudenbush 1998)
protects against clusters whose focus variable is noisier than others', at
the price of estimating one variance per cluster. With
``cluster_residual_variance="auto"`` (the default) the choice follows the
data (:func:`choose_residual_variance`):
:func:`hmlib.stats.imputation.residual_variance_check` tests whether the
within-cluster residual SD of the focus variable (given the other
predictors and the outcome, with cluster fixed effects) differs between
clusters, by the
Brown-Forsythe test, and estimates how much the log residual SD varies
between clusters beyond sampling noise (method of moments:
``var(log s_j) - mean(1 / (2 (n_j - 1)))``). ``2l.norm`` is used when the
test rejects at ``alpha = 0.01`` *and* that SD is at least 0.2 (residual
SDs of the middle 80 % of clusters spanning a factor of about 1.7);
otherwise ``2l.pan``. Measured (``bench/results/residual_variance.json``):
on six demo registries (common residual variance by construction; the
default demo gives p = 0.29 and an SD of 0.11) both choices were as close to
the full-data estimate of the lactate coefficient (RMSE 0.049 vs 0.048) but
2l.norm's intervals were wider (mean SE 0.110 vs 0.101; FMI 0.56 vs 0.45).
On the Brandsma schools data (p = 0.27) 2l.norm moved the ``lpr``
coefficient from 0.662 to 0.639 and its SE from 0.018 to 0.028: noise from
216 separately estimated variances, not a correction. Hence 2l.pan unless
the data show heterogeneity. The threshold is a rule of
thumb, not a theorem; the step reports the check so a reader can disagree.

Between-cluster variation by method
-----------------------------------
For each method, the focus variable's between-cluster variation is
measured in every completed data set by an intercept-only random-intercept
model (gaussian; latent-scale logistic for a 0/1 variable): its cluster SD
and intraclass correlation (ICC), averaged over the ``m`` data sets. The
reference is the same model fitted to the observed values only (which,
under missingness that depends on the cluster, is itself only an estimate
of the full-data ICC). The textbook expectation (Luedtke, Robitzsch &
Grund 2017; Drechsler 2015): flat imputation shrinks the ICC (imputed
values ignore the clusters), fixed-effects imputation inflates it (each
cluster's intercept is estimated without shrinkage, so small clusters'
noise is added), multilevel imputation keeps it. The narrative states what
this dataset's numbers actually show. The analysis model's own cluster SD
(``sd(<cluster>)``, pooled on the log scale) and ICC
(:attr:`hmlib.stats.pooling.PooledResult.icc`: gaussian from the pooled cluster
and residual SDs, binomial on the latent scale) are reported beside it.

Diagnostics: split R-hat of the chain means of every imputed variable
(:func:`hmlib.stats.imputation.split_rhat`), and the fraction of missing
information per coefficient (Rubin's rules, :mod:`hmlib.stats.pooling`).

References
----------
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., ch. 7.
Drechsler J (2015). Multiple imputation of multilevel missing data: rigor
versus simplicity. J Educ Behav Stat 40(1):69-95.
Luedtke O, Robitzsch A, Grund S (2017). Multiple imputation of missing data
in multilevel designs: a comparison of different strategies. Psychol
Methods 22(1):141-165.
Kasim RM, Raudenbush SW (1998). Application of Gibbs sampling to nested
variance components models with heterogeneous within-group variance.
J Educ Behav Stat 23(2):93-116.
Brown MB, Forsythe AB (1974). Robust tests for the equality of variances.
J Am Stat Assoc 69(346):364-367.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, FitError
from hmlib.parallel import TaskPool
from hmlib.privacy import suppress_counts
from hmlib.results import ESTIMATE_COLUMNS, estimate_rows, load_truth, read_estimates
from hmlib.settings import run_sizes
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.imputation import (ImputationResult, ResidualVarianceCheck, cluster_variation,
                                    completed_variation, impute, residual_variance_check)
from hmlib.stats.pooling import analyse_imputations
from hmlib.steps.base import Step, StepContext
from hmlib.steps.imputation_levels import LEVEL_DISTRIBUTION_COLUMNS, level_distributions
from hmlib.steps.imputation_locf import LOCF_LABEL, locf_spec, run_locf
from hmlib.steps.imputation_result import ImputationArtifact, ImputationStepResult, MethodRun, MethodSpec
from hmlib.steps.disclosure import hidden_counts
from hmlib.steps.handoff import hand_over
from hmlib.steps.imputation_transport import transport_check
from hmlib.methods import method_label

__all__ = ["CHUNKS_PER_WORKER", "MethodSpec", "default_methods", "impute_registry", "impute_by_stratum",
           "ResidualVarianceChoice", "choose_residual_variance", "MethodRun", "ImputationStepResult", "imputation_step",
           "ImputationArtifact", "run", "STEP", "TRANSPORTED_METHODS"]

#: Chains (and analyses) travel to the workers in this many chunks per worker: one chain of the demo takes
#: about 0.1-0.3 s, and one task per chain cost the Dask engine about as much again on a busy machine.
CHUNKS_PER_WORKER = 2
#: Methods whose imputation models the transport check examines.
TRANSPORTED_METHODS = ("flat_mi", "multilevel_mi")
#: Columns of the histogram table of observed and imputed values.
DISTRIBUTION_COLUMNS = ["cluster", "source", "bin_left", "bin_right", "density"]

_ERRORS = (FitError, DataError, np.linalg.LinAlgError, ValueError, FloatingPointError)


# --------------------------------------------------------------------------
# Methods and the registry adapter
# --------------------------------------------------------------------------
def default_methods(cluster: str, *, cluster_residual_variance: bool = False, random_slopes=(),
                    time_column: str | None = None, higher_levels=()) -> tuple:
    """The methods of the comparison (module docstring), as :class:`MethodSpec`.

    Parameters
    ----------
    cluster : str
        The cluster column (the strata of stratified imputation).
    cluster_residual_variance : bool
        Multilevel method: cluster-specific residual variances (2l.norm)
        instead of a common one (2l.pan).
    random_slopes : sequence of str
        The params' random slopes: the multilevel method's continuous models have them.
    time_column : str, optional
        The params' ``time``: LOCF is added as a fifth, named comparator
        (:mod:`hmlib.steps.imputation_locf`).
    higher_levels : sequence of str
        The params' levels above the cluster: the multilevel method's description names the random intercept of
        the level directly above the cluster (:mod:`hmlib.stats.imputation.three_level`).
    """
    model = "2l.norm" if cluster_residual_variance else "2l.pan"
    if random_slopes:
        multilevel = (f"chained equations with a random intercept and random slopes on {', '.join(random_slopes)} "
                      "(unstructured covariance; 2l.pan type 2 for continuous variables, a random-slope logistic "
                      "model sampled by Gibbs on its Polya-Gamma augmentation, 2l.bin type 2, for binary and "
                      "categorical ones; cluster means as predictors where enough clusters observe the variable)")
    else:
        multilevel = (f"random-intercept chained equations ({model}; cluster means as predictors where enough "
                      "clusters observe the variable)")
    if len(higher_levels) == 1:
        multilevel += (f", with a random intercept per {higher_levels[0]} too (three levels; {higher_levels[0]} "
                       "means of the other variables as predictors)")
    elif higher_levels:
        multilevel += (f", with a random intercept for the level directly above the {cluster} too (of "
                       f"{', '.join(higher_levels)}: the one with the most units; its means of the other variables "
                       "as predictors; the levels further up as fixed indicators)")
    locf = (locf_spec(cluster, time_column),) if time_column else ()
    return (
        MethodSpec("flat_mi", "flat", {"continuous": "pmm"},
                   "single-level chained equations, predictive mean matching; clusters ignored (mice pmm)"),
        MethodSpec("stratified_mi", "stratified", {"strata": cluster},
                   f"the flat models fitted separately within each {cluster}"),
        MethodSpec("fixed_effects_mi", "fixed_effects", {},
                   f"single-level models with one fixed intercept per {cluster}"),
        MethodSpec("multilevel_mi", "multilevel", {"cluster_residual_variance": bool(cluster_residual_variance)},
                   multilevel),
        *locf,
    )


def impute_registry(registry, *, method: str, m: int | None = None, iterations: int | None = None,
                    continuous: str = "norm", **options) -> ImputationResult:
    """:func:`hmlib.stats.imputation.impute` with the roles, kinds, levels and seed of a registry.

    Parameters
    ----------
    registry : hmlib.data.Registry
    method : str
        Engine method (:data:`hmlib.stats.imputation.METHODS`).
    m, iterations : int, optional
        Default: the run sizes of the params' ``fast``
        (:func:`hmlib.settings.run_sizes`: ``imputations``, ``iterations``).
    continuous : {"norm", "pmm"}
    **options
        Further keyword arguments of :func:`hmlib.stats.imputation.impute`.

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
    """
    p = registry.params
    sizes = run_sizes(bool(getattr(p, "fast", False)))
    return impute(registry.frame, method=method, cluster=p.cluster, outcome=p.outcome,
                  outcome_family=p.outcome_family, predictors=list(p.predictors), kinds=registry.kinds,
                  levels=registry.levels, cluster_covariates=list(p.cluster_covariates),
                  higher_levels=list(p.higher_levels), m=m or sizes.imputations,
                  iterations=iterations or sizes.iterations, seed=p.seed, continuous=continuous,
                  **{"random_slopes": list(p.random_slopes), **options})


def impute_by_stratum(registry, by: str, *, m: int, iterations: int, seed: int,
                      cluster_residual_variance: bool = False, start=None, start_states=None):
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
    cluster_residual_variance : bool
        Cluster-specific residual variances (2l.norm) instead of a common one.
    start, start_states : optional
        ``m`` completed data sets of the registry's rows, and the states of
        the chains that made them, to start each stratum's chains from
        (:func:`hmlib.stats.imputation.impute`'s ``start`` and ``start_states``).

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
        The strata's completed data sets put back in the registry's row order.

    Raises
    ------
    hmlib.exceptions.FitError
        A stratum has fewer than 2 clusters (no multilevel model can be fitted).
    """
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
                            higher_levels=list(p.higher_levels), random_slopes=list(p.random_slopes),
                            m=int(m), iterations=int(iterations),
                            seed=stratum_seed, cluster_residual_variance=bool(cluster_residual_variance),
                            start=None if start is None else [done.loc[rows] for done in start],
                            start_states=start_states))
    completed = [pd.concat([part.completed[i] for part in parts]).loc[frame.index] for i in range(int(m))]
    mask = pd.concat([part.imputed_mask for part in parts]).loc[frame.index]
    notes = [f"{by} stratum {i + 1}: {n}" for i, part in enumerate(parts) for n in part.notes]
    return ImputationResult(method="multilevel", continuous="norm", m=int(m), iterations=int(iterations),
                            completed=completed, imputed_mask=mask, chain_means={}, rhat={}, notes=notes,
                            seed=int(seed), strata=by)


def _focus_kind(registry) -> tuple[bool, bool]:
    """Whether the focus variable is numeric, and whether it is 0/1 (numeric with 0/1 observed values)."""
    focus = registry.params.focus
    numeric = registry.kinds.get(focus, "numeric") == "numeric"
    observed = registry.frame[focus].dropna()
    binary = numeric and len(observed) > 0 and set(pd.unique(observed.astype(float))) <= {0.0, 1.0}
    return numeric, bool(binary)


@dataclass(frozen=True)
class ResidualVarianceChoice:
    """Common or cluster-specific residual variance for the multilevel imputation, and why.

    Attributes
    ----------
    heterogeneous : bool
        Cluster-specific residual variances (2l.norm) rather than a common
        one (2l.pan): the ``cluster_residual_variance`` option of the
        multilevel method.
    check : hmlib.stats.imputation.ResidualVarianceCheck or None
        The check of the focus variable (None when it is not a continuous
        numeric variable or the check could not be run); when the caller
        chose, its ``heterogeneous`` is the caller's choice.
    notes : tuple of str
        Why the check is missing, or that the caller chose.
    """

    heterogeneous: bool
    check: ResidualVarianceCheck | None
    notes: tuple = ()


def choose_residual_variance(registry, setting="auto") -> ResidualVarianceChoice:
    """Decide the multilevel method's residual variance for a registry (module docstring).

    Parameters
    ----------
    registry : hmlib.data.Registry
        The focus variable is ``registry.params.focus``.
    setting : bool or "auto"
        "auto": cluster-specific when
        :func:`hmlib.stats.imputation.residual_variance_check` finds the
        focus variable's residual SD heterogeneous; True or False: the
        caller's choice (the check is still run and reported).

    Returns
    -------
    ResidualVarianceChoice
    """
    p = registry.params
    numeric, binary = _focus_kind(registry)
    notes = []
    check = None
    if numeric and not binary and registry.frame[p.focus].notna().any():
        try:
            check = residual_variance_check(registry.frame, variable=p.focus, cluster=p.cluster,
                                            covariates=[*p.predictors, p.outcome], levels=registry.levels)
        except _ERRORS as exc:
            notes.append(f"The residual-variance check of {p.focus} could not be run: {exc}")
    if setting == "auto":
        return ResidualVarianceChoice(bool(check is not None and check.heterogeneous), check, tuple(notes))
    hetero = bool(setting)
    check = None if check is None else ResidualVarianceCheck(**{**check.__dict__, "heterogeneous": hetero})
    notes.append(f"The multilevel imputation was set to "
                 f"{'cluster-specific' if hetero else 'a common'} residual variance by the caller.")
    return ResidualVarianceChoice(hetero, check, tuple(notes))


# --------------------------------------------------------------------------
# One method
# --------------------------------------------------------------------------
def _stratified_breakdown(run: MethodRun, max_fallback_share: float) -> str:
    """Why a stratified run counts as failed (fell back in too many strata for some variable), or ""."""
    worst = max(((v, f["strata"] / f["of"]) for v, f in run.fallbacks.items() if f["of"]),
                key=lambda x: x[1], default=None)
    if worst is None or worst[1] < max_fallback_share:
        return ""
    var = worst[0]
    broken, total = run.fallbacks[var]["strata"], run.fallbacks[var]["of"]
    return (f"the strata are too small: for {var} the stratified model could not be fitted in "
            f"{broken} of {total} strata (too few or no observed values), so most of its imputations "
            "would come from the flat model; it is reported as failed rather than as a stratified "
            "result.")


def _run_method(registry, spec: MethodSpec, *, m: int, iterations: int, max_fallback_share: float,
                map_tasks=None) -> MethodRun:
    """Impute by one method, pool its analyses, and measure the focus variable's between-cluster variation.

    ``map_tasks`` (:meth:`hmlib.parallel.TaskPool.map`) runs the m chains, then the m analyses, as tasks.
    """
    p = registry.params
    if spec.method == "locf":
        return run_locf(registry, spec, focus_binary=_focus_kind(registry)[1])
    run = MethodRun(spec=spec, status="ok")
    started = time.perf_counter()
    try:
        imputation = impute_registry(registry, method=spec.method, m=m, iterations=iterations, map_tasks=map_tasks,
                                     **spec.options)
    except _ERRORS as exc:
        run.status, run.reason = "failed", f"imputation failed: {exc}"
        run.seconds_impute = time.perf_counter() - started
        return run
    run.seconds_impute = time.perf_counter() - started
    run.notes, run.models, run.rhat = list(imputation.notes), dict(imputation.models), dict(imputation.rhat)
    run.fallbacks = {k: dict(v) for k, v in imputation.fallbacks.items()}
    run.cluster_means_dropped = {k: dict(v) for k, v in imputation.cluster_means_dropped.items()}
    run.extrapolated = dict(imputation.extrapolated)
    breakdown = _stratified_breakdown(run, max_fallback_share)
    if breakdown:
        run.status, run.reason = "failed", breakdown
        return run
    started = time.perf_counter()
    try:
        run.pooled = analyse_imputations(imputation, outcome=p.outcome, predictors=list(p.predictors),
                                         cluster=p.cluster, family=p.outcome_family, levels=registry.levels,
                                         method=spec.label, map_tasks=map_tasks, higher_levels=p.higher_levels,
                                         random_slopes=p.random_slopes)
    except _ERRORS as exc:
        run.status, run.reason = "failed", f"the analysis model could not be fitted to the imputed data: {exc}"
    run.seconds_analyse = time.perf_counter() - started
    if run.ok:
        run.imputation = imputation
        numeric, binary = _focus_kind(registry)
        if numeric:
            run.focus_variation = completed_variation(imputation.completed, p.focus, p.cluster, binary=binary)
    return run


# --------------------------------------------------------------------------
# Tables the step publishes (small counts suppressed here)
# --------------------------------------------------------------------------
def _complete_case_rows(registry, estimates_path) -> tuple[pd.DataFrame, str, list]:
    """Complete-case rows from ``estimates.csv`` (step 2), else fitted here; their source; notes."""
    if estimates_path is not None:
        table = read_estimates(estimates_path)
        rows = table.loc[table["method"] == "complete_case"]
        if len(rows):
            return rows.loc[:, list(ESTIMATE_COLUMNS)].reset_index(drop=True), "estimates.csv", []
    p = registry.params
    try:
        fit = fit_analysis_model(registry.frame, outcome=p.outcome, predictors=list(p.predictors),
                                 cluster=p.cluster, family=p.outcome_family, levels=registry.levels,
                                 higher_levels=p.higher_levels, random_slopes=p.random_slopes)
    except _ERRORS as exc:
        return (pd.DataFrame(columns=list(ESTIMATE_COLUMNS)), "unavailable",
                [f"The complete-case model could not be fitted for comparison: {exc}"])
    return estimate_rows(fit, "complete_case"), "fitted here", []


def _missing_counts(frame: pd.DataFrame, columns, min_cell: int) -> pd.DataFrame:
    """Missing and observed values per model variable, counts below ``min_cell`` suppressed."""
    table = pd.DataFrame({"variable": list(columns),
                          "n": len(frame),
                          "n_missing": [int(frame[c].isna().sum()) for c in columns]})
    table["n_observed"] = table["n"] - table["n_missing"]
    safe = suppress_counts(table, ["n_missing", "n_observed"], min_cell, total_column="n",
                           column_totals=False)
    return safe.display


def _distribution_clusters(frame, focus, cluster, n_clusters: int) -> list:
    """The clusters with most missing values of ``focus``, one never observing it if there is one."""
    missing = frame[focus].isna().groupby(frame[cluster].to_numpy()).agg(["sum", "size"])
    missing = missing.loc[missing["sum"] > 0]
    order = sorted(missing.index.tolist(), key=lambda c: (-int(missing.loc[c, "sum"]), str(c)))
    chosen = order[:n_clusters]
    never = [c for c in order if missing.loc[c, "sum"] == missing.loc[c, "size"]]
    if never and not any(c in chosen for c in never):
        chosen = chosen[:max(n_clusters - 1, 0)] + [never[0]]
    return chosen


def _distributions(frame, runs, focus, cluster, chosen, min_cell: int, bins: int = 30):
    """Histogram densities of observed and imputed values in the chosen clusters.

    A cluster's observed density is left out when it has fewer than
    ``min_cell`` observed values; the bins span the 1st to 99th percentile
    of all values, so no bin edge is an individual's extreme value.
    """
    values = frame[focus].to_numpy(dtype=float)
    labels = frame[cluster].to_numpy()
    missing = np.isnan(values)
    # {method: array (m, n_missing)} of the imputed values
    imputed = {r.label: np.vstack([done[focus].to_numpy(dtype=float)[missing] for done in r.imputation.completed])
               for r in runs if r.imputation is not None}
    pooled = np.concatenate([values[~missing], *(v.ravel() for v in imputed.values())])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0 or not chosen:
        return pd.DataFrame(columns=DISTRIBUTION_COLUMNS)
    lo, hi = np.quantile(pooled, [0.01, 0.99])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    rows = []
    missing_labels = labels[missing]

    def add(label, source, x):
        x = np.clip(x[np.isfinite(x)], lo, hi)
        if x.size == 0:
            return
        dens, _ = np.histogram(x, bins=edges, density=True)
        rows.extend({"cluster": label, "source": source, "bin_left": a, "bin_right": b, "density": d}
                    for a, b, d in zip(edges[:-1], edges[1:], dens))

    for label in chosen:
        in_cluster = labels == label
        obs = values[in_cluster & ~missing]
        if obs.size >= min_cell:
            add(label, "observed", obs)
        for source, draws in imputed.items():
            add(label, source, draws[:, missing_labels == label].ravel())
    return pd.DataFrame(rows, columns=DISTRIBUTION_COLUMNS)


def _distribution_tables(registry, ok_runs, n_clusters: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The histogram table (numeric focus), the level-share table (categorical focus,
    :func:`hmlib.steps.imputation_levels.level_distributions`) and their clusters (``cluster, n,
    n_observed, n_missing, never_observed``, counts suppressed)."""
    p, frame = registry.params, registry.frame
    numeric, _ = _focus_kind(registry)
    min_cell = p.privacy.min_cell
    chosen = _distribution_clusters(frame, p.focus, p.cluster, n_clusters) if frame[p.focus].isna().any() else []
    distributions = (_distributions(frame, ok_runs, p.focus, p.cluster, chosen, min_cell) if numeric
                     else pd.DataFrame(columns=DISTRIBUTION_COLUMNS))
    levels = (level_distributions(frame, ok_runs, p.focus, p.cluster, chosen, registry.levels[p.focus], min_cell)
              if not numeric else pd.DataFrame(columns=LEVEL_DISTRIBUTION_COLUMNS))
    per_cluster = frame.groupby(p.cluster, observed=True)[p.focus].agg(n="size", n_observed="count")
    clusters = (per_cluster.loc[chosen].reset_index().rename(columns={p.cluster: "cluster"}) if chosen
                else pd.DataFrame(columns=["cluster", "n", "n_observed"]))
    clusters["n_missing"] = clusters["n"] - clusters["n_observed"]
    clusters["never_observed"] = clusters["n_observed"] == 0
    if len(clusters):
        given = hidden_counts(registry).mask(clusters, {"n": None, "n_missing": p.focus, "n_observed": p.focus})
        clusters = suppress_counts(clusters, ["n_missing", "n_observed"], min_cell, total_column="n",
                                   hidden=given).display
    return distributions, levels, clusters


def _step_transport(registry, ok_runs, *, iterations: int, transport_options: dict | None, map_tasks=None):
    """The transport check of the flat and multilevel runs (their completed data as backgrounds), and notes.

    ``map_tasks`` runs the masked clusters as tasks (:meth:`hmlib.parallel.TaskPool.map`)."""
    numeric, _ = _focus_kind(registry)
    if not numeric:
        return None, [f"The transport check needs a numeric focus variable; {registry.params.focus} is "
                      "categorical."]
    checked = [r for r in ok_runs if r.label in TRANSPORTED_METHODS]
    if not checked:
        return None, ["The transport check needs the flat or the multilevel imputation, and both failed."]
    backgrounds = {r.label: r.imputation.completed for r in checked}
    states = {r.label: r.imputation.chain_states for r in checked}
    methods = {r.label: (r.spec.method, r.spec.options) for r in checked}
    try:
        options = {"iterations": iterations, **dict(transport_options or {})}
        return transport_check(registry, methods=methods, backgrounds=backgrounds, background_states=states,
                               map_tasks=map_tasks, **options), []
    except _ERRORS as exc:
        return None, [f"The transport check could not be run: {exc}"]


# --------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------
def imputation_step(registry, *, methods=None, m: int | None = None, iterations: int | None = None,
                    estimates_path: str | Path | None = None, cluster_residual_variance="auto",
                    max_fallback_share: float = 0.5, transport: bool = True, transport_options: dict | None = None,
                    n_distribution_clusters: int = 4, pool: TaskPool | None = None) -> ImputationStepResult:
    """Run step 3 on a checked registry.

    Parameters
    ----------
    registry : hmlib.data.Registry
    methods : sequence of MethodSpec, optional
        Default :func:`default_methods`.
    m, iterations : int, optional
        Imputations and iterations per chain; default: the run sizes of the
        params' ``fast`` (:func:`hmlib.settings.run_sizes`).
    estimates_path : path, optional
        ``estimates.csv`` to read the ``complete_case`` rows from (fitted
        here when absent).
    cluster_residual_variance : bool or "auto"
        Multilevel method: common (False, 2l.pan) or cluster-specific (True,
        2l.norm) residual variances; "auto" decides by
        :func:`choose_residual_variance` (module docstring).
    max_fallback_share : float
        A stratified run that fell back to the flat model in at least this
        share of the strata for some variable is reported as failed.
    transport : bool
        Run the transport check (:func:`hmlib.steps.imputation_transport.transport_check`)
        for the flat and multilevel methods.
    transport_options : dict, optional
        Keyword arguments for the transport check (thresholds,
        ``max_clusters``, ``m``, ``iterations``; ``iterations`` defaults to
        the main imputation's).
    n_distribution_clusters : int
        Clusters shown in the observed-vs-imputed distributions.
    pool : hmlib.parallel.TaskPool, optional
        An open pool: each method's m chains, then its m analyses, then the
        transport check's masked clusters, run as its tasks (the results do
        not depend on it). Default: a new pool (Dask:
        the cluster of ``$HMLIB_SCHEDULER``, else local processes, one per core).

    Returns
    -------
    ImputationStepResult
    """
    p = registry.params
    frame = registry.frame
    sizes = run_sizes(bool(getattr(p, "fast", False)))
    m = int(m or sizes.imputations)
    iterations = int(iterations or sizes.iterations)
    numeric_focus, binary_focus = _focus_kind(registry)
    choice = choose_residual_variance(registry, cluster_residual_variance)
    notes = list(choice.notes)
    specs = (tuple(methods) if methods is not None
             else default_methods(p.cluster, cluster_residual_variance=choice.heterogeneous,
                                  random_slopes=p.random_slopes, time_column=p.time,
                                  higher_levels=tuple(p.higher_levels)))
    with contextlib.nullcontext(pool) if pool is not None else TaskPool() as tasks:
        map_tasks = functools.partial(tasks.map, chunks_per_worker=CHUNKS_PER_WORKER)
        runs = [_run_method(registry, spec, m=m, iterations=iterations, max_fallback_share=max_fallback_share,
                            map_tasks=map_tasks) for spec in specs]
        ok_runs = [r for r in runs if r.ok]
        transport_result, transport_notes = None, []
        if transport:
            # the masked clusters are tasks of the same pool (one per cluster, both methods)
            transport_result, transport_notes = _step_transport(registry, ok_runs, iterations=iterations,
                                                                transport_options=transport_options,
                                                                map_tasks=tasks.map)
    focus_observed = (cluster_variation(frame[p.focus].to_numpy(dtype=float), frame[p.cluster].to_numpy(),
                                        binary=binary_focus)
                      if numeric_focus else {"cluster_sd": float("nan"), "icc": float("nan")})
    complete_case, cc_source, cc_notes = _complete_case_rows(registry, estimates_path)
    notes.extend(cc_notes)
    min_cell = p.privacy.min_cell
    model_columns = [c for c in [p.outcome, *p.predictors, *p.cluster_covariates] if c in frame.columns]
    distributions, level_shares, distribution_clusters = _distribution_tables(registry, ok_runs,
                                                                              n_distribution_clusters)
    notes.extend(transport_notes)
    return ImputationStepResult(
        outcome=p.outcome, outcome_family=p.outcome_family, cluster=p.cluster, focus=p.focus,
        n_patients=int(len(frame)), n_clusters=int(frame[p.cluster].nunique()), m=m, iterations=iterations,
        runs=runs, complete_case=complete_case, complete_case_source=cc_source, truth=load_truth(p.truth),
        residual_variance=choice.check, focus_observed=focus_observed,
        missing_counts=_missing_counts(frame, model_columns, min_cell), distributions=distributions,
        distribution_clusters=distribution_clusters, min_cell=min_cell, transport=transport_result, notes=notes,
        level_distributions=level_shares,
        focus_levels=tuple(registry.levels[p.focus]) if not numeric_focus else (),
        time=p.time, random_slopes=tuple(p.random_slopes))


def run(ctx: StepContext) -> ImputationStepResult:
    """Run step 3 on the checked inputs and write its artifact and estimates.

    Inside ``hmreport run``, the ``multilevel_mi`` imputation is also left for step 5
    (:mod:`hmlib.steps.handoff`).

    Sizes from ``ctx.sizes`` (:mod:`hmlib.settings`): ``imputations`` and
    ``iterations`` for the four methods, ``transport_imputations`` and
    ``transport_iterations`` for the transport check.
    """
    sizes = ctx.sizes
    result = imputation_step(ctx.registry, m=sizes.imputations, iterations=sizes.iterations,
                             estimates_path=ctx.estimates_path,
                             transport_options={"m": sizes.transport_imputations,
                                                "iterations": sizes.transport_iterations})
    ctx.write(STEP, result)
    for run_ in result.runs:     # step 5's primary imputation, handed over within a run (hmlib.steps.handoff)
        if run_.ok and run_.spec.method == "multilevel" and run_.imputation is not None:
            hand_over(ctx, run_.imputation,
                      cluster_specific=bool(run_.spec.options.get("cluster_residual_variance", False)))
    return result


def methods_text(record, ev) -> list:
    """This step's paragraph(s) of the report's methods section, from its record.

    ``ev`` is the report's wording context (:class:`hmlib.report.evidence.ReportEvidence`: ``noun``,
    ``min_cell``, ``versions``).
    """
    multiple = [m for m in record.methods if m.method != LOCF_LABEL]
    descs = "; ".join(f"{method_label(m.method)}: {m.description}" for m in multiple)
    out = [f"Multiple imputation: {len(multiple)} imputation models ({descs}), each with "
           f"m = {record.m} imputed data sets and {record.iterations} iterations, the outcome included as a "
           "predictor of the missing values. Each completed data set was analysed with the analysis model and "
           "the estimates pooled by Rubin's rules with Barnard-Rubin degrees of freedom (the cluster SD on the "
           "log scale)."]
    if len(multiple) < len(record.methods):
        out.append("Last observation carried forward (LOCF), shown as a named comparator because clinical teams "
                   "often use it, not as a recommended method: each incomplete variable that varies within "
                   f"{ev.noun}s (time-varying predictors and the outcome) was filled with the {ev.noun}'s last "
                   "recorded value of it; values with nothing recorded before them stayed missing and their rows "
                   "were left out. The analysis model was fitted once to that single completed data set, so its "
                   "standard errors treat carried values as measured (too small), and carried outcomes were "
                   "analysed (National Research Council 2010, recommendation 10).")
    return out


STEP = Step(key="imputation", number=3, title="Flat vs hierarchical multiple imputation",
            notebook="03_imputation.ipynb", artifact=ImputationArtifact, run=run, needs=("diagnose",),
            methods=("flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi", "locf"),
            summary_name="step 3 (flat vs hierarchical multiple imputation)",
            methods_text=methods_text,
            absent_methods_text="Step 3 (multiple imputation) is absent from this report.",
            uses_workers=True)
