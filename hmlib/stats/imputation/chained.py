"""The chained-equations driver: :func:`impute`, its chains and its result.

:func:`impute` checks its arguments, builds the problem
(:mod:`hmlib.stats.imputation.problem`), runs ``m`` independent chains of
``iterations`` rounds of univariate updates
(:func:`hmlib.stats.imputation.univariate.impute_variable`), each chain on its
own child of ``SeedSequence(seed)``, and returns the completed data sets with
their chain means, split R-hat, models and notes as an
:class:`ImputationResult`. The methods and models are stated in the package
docstring (:mod:`hmlib.stats.imputation`).

The chains are independent tasks: ``map_tasks`` (e.g.
:meth:`hmlib.parallel.TaskPool.map`) may run them in other processes. Each
chain starts from a fresh record of what it met (notes, strata that fell
back, extrapolation), and the records are merged in chain order into the
problem's, so the result is the same, notes included, however the chains
were run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError
from hmlib.parallel import blas_one_thread, serial_map
from hmlib.progress import reporter
from hmlib.stats.imputation.completed import CompletedData, ImputedColumn
from hmlib.stats.imputation.problem import Notes, Problem, Variable, build_problem, model_description
from hmlib.stats.imputation.univariate import impute_variable, recorded_fallbacks

__all__ = ["METHODS", "CONTINUOUS_METHODS", "ImputationResult", "impute", "split_rhat", "fit_starts"]

#: How the clusters enter the imputation models (package docstring).
METHODS = ("flat", "stratified", "fixed_effects", "multilevel")
#: How continuous variables are drawn: normal-model draws or predictive mean matching.
CONTINUOUS_METHODS = ("norm", "pmm")


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImputationResult:
    """m completed data sets and what happened while making them.

    Attributes
    ----------
    method : str
        ``"flat"``, ``"stratified"``, ``"fixed_effects"`` or ``"multilevel"``.
    continuous : str
        ``"norm"`` or ``"pmm"``: how continuous variables were imputed.
    m, iterations : int
        Imputations (chains) and chained-equations iterations per chain.
    completed : sequence of pandas.DataFrame
        The m completed data sets: the model columns of the input (cluster,
        higher levels, cluster covariates, outcome, predictors; in input
        order, input index), with only the missing cells filled.
        Categorical columns keep their dtype and levels; numeric columns
        that were imputed come back as float64. A
        :class:`~hmlib.stats.imputation.completed.CompletedData`: the data
        once and the imputed cells, each frame built when it is read.
    imputed_mask : pandas.DataFrame
        True where a cell was missing and has been filled.
    chain_means : dict
        ``{variable: array (m, iterations)}``: mean of the imputed values
        (binary: share of the second level; categorical with more levels:
        mean level code; cluster covariates: mean over imputed clusters).
    rhat : dict
        ``{variable: split R-hat of chain_means over the last half}``.
    notes : list of str
        Fall-backs and other remarks in plain language.
    seed : int
    models : dict
        ``{variable: description of its imputation model}``.
    strata : str or None
        Column that defined the strata (``stratified`` only).
    fallbacks : dict
        Stratified only: ``{variable: {"strata": k, "of": n, "reasons":
        {reason: count}}}`` for each variable whose stratified model could
        not be fitted in ``k`` of the ``n`` strata (those strata were imputed
        from the flat model). Empty when no stratum fell back.
    cluster_means_dropped : dict
        Multilevel only: ``{variable: {"clusters": J_obs, "cluster_columns":
        q, "needed": k}}`` for each variable whose model left out the
        cluster means because only ``J_obs`` clusters observe it, fewer
        than the ``k`` needed for its ``q`` cluster-level columns (module
        docstring).
    extrapolated : dict
        ``{variable: largest distance, in observed SDs, of an imputed value
        beyond the observed range}`` for continuous variables where it
        exceeded ``EXTRAPOLATION_SDS`` (a sign of an extrapolating model).
    chain_states : list of dict
        The samplers' state at the end of each chain (Gibbs variance
        components, the last 2l.bin fit by model), for continuing the chains
        on related data (``impute(..., start_states=...)``).
    """

    method: str
    continuous: str
    m: int
    iterations: int
    completed: Sequence = field(repr=False)
    imputed_mask: pd.DataFrame = field(repr=False)
    chain_means: dict = field(repr=False)
    rhat: dict
    notes: list
    seed: int
    models: dict = field(default_factory=dict)
    strata: str | None = None
    fallbacks: dict = field(default_factory=dict)
    cluster_means_dropped: dict = field(default_factory=dict)
    extrapolated: dict = field(default_factory=dict)
    chain_states: list = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """Method label for ``estimates.csv``, e.g. ``"multilevel_mi"``, ``"flat_pmm_mi"``."""
        return f"{self.method}{'_pmm' if self.continuous == 'pmm' else ''}_mi"

    @property
    def imputed_variables(self) -> tuple:
        """Variables that had missing values, in the order they were visited."""
        return tuple(self.chain_means)

    def summary(self) -> str:
        """Plain text: method, variables, models, R-hat, notes (returned, not printed)."""
        lines = [f"{self.method} imputation ({self.continuous} for continuous variables), m = {self.m}, "
                 f"{self.iterations} iterations, seed {self.seed}"]
        for var in self.chain_means:
            n_missing = int(self.imputed_mask[var].sum())
            lines.append(f"  {var}: {n_missing} missing; {self.models.get(var, '')}; "
                         f"R-hat {self.rhat.get(var, float('nan')):.3f}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def fit_starts(chain_states) -> list:
    """The part of chains' states that only warm-starts maximum-likelihood fits (2l.bin).

    Continuing from it changes no result beyond the optimiser's tolerance
    (the fit converges to the same maximum, :mod:`hmlib.stats.imputation.ri_logistic`);
    the Gibbs sampler's variance components, which would change the draws,
    are left out.

    Parameters
    ----------
    chain_states : sequence of dict
        :attr:`ImputationResult.chain_states`.

    Returns
    -------
    list of dict
        One per chain, for ``impute(..., start_states=...)``.
    """
    return [{key: {"start": value["start"]} for key, value in state.items() if "start" in value}
            for state in chain_states]


def split_rhat(draws) -> float:
    """Split R-hat of m chains (Gelman et al. 2013, BDA3 section 11.4).

    Parameters
    ----------
    draws : array_like, shape (m, n)
        One row per chain.

    Returns
    -------
    float
        Each chain is split in two halves (the middle draw dropped when
        ``n`` is odd); NaN when the halves are shorter than 2 draws; 1 when
        every draw is the same; inf when the chains are constant but differ.
    """
    x = np.asarray(draws, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"draws must be 2-dimensional (chains x draws), got shape {x.shape}.")
    half = x.shape[1] // 2
    if half < 2 or x.shape[0] < 1:
        return float("nan")
    chains = np.vstack([x[:, :half], x[:, x.shape[1] - half:]])
    within = chains.var(axis=1, ddof=1).mean()
    between = half * chains.mean(axis=1).var(ddof=1)
    if within <= 0:
        return 1.0 if between <= 0 else float("inf")
    var_plus = (half - 1) / half * within + between / half
    return float(np.sqrt(var_plus / within))


def _chain_mean(var: Variable, y: np.ndarray) -> float:
    # binary: share of code 1; categorical: mean level code
    return float(y[var.missing].mean())


def _start_values(problem: Problem, var: Variable, start: pd.DataFrame) -> np.ndarray:
    """The missing cells of ``var`` as completed in ``start`` (a completed data set), coded."""
    column = start[var.name]
    if var.level == 2:
        # a cluster covariate is constant within a cluster: take each cluster's first row
        first = np.unique(problem.codes, return_index=True)[1]
        column = column.iloc[first[np.flatnonzero(var.missing)]]
    else:
        column = column.iloc[np.flatnonzero(var.missing)]
    if var.categories:
        index = {label: code for code, label in enumerate(var.categories)}
        index.update({str(label): code for code, label in enumerate(var.categories)})
        coded = np.array([index.get(v, index.get(str(v), np.nan)) for v in column], dtype=float)
    else:
        coded = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(coded).any():
        raise ValueError(f"the start data set has no usable value for {int(np.isnan(coded).sum())} missing "
                         f"cell(s) of '{var.name}'; start from completed data sets of the same rows.")
    return coded


def _run_chain(problem: Problem, rng, iterations: int, start: dict | None = None, state: dict | None = None):
    """One chain; ``start``: ``{variable: coded values of its missing cells}`` to begin from."""
    current = {}
    for var in [*problem.level1, *problem.level2]:
        y = var.values.copy()
        if var.missing.any():
            if start is not None:
                y[var.missing] = start[var.name]
            else:
                pool = var.values[~var.missing]
                y[var.missing] = pool[rng.integers(pool.size, size=int(var.missing.sum()))]
        current[var.name] = y
    problem.state = {key: dict(value) for key, value in (state or {}).items()}
    visit = problem.visit
    trace = {v.name: np.empty(iterations) for v in visit}
    for it in range(iterations):
        for var in visit:
            impute_variable(problem, var, current, rng)
            trace[var.name][it] = _chain_mean(var, current[var.name])
    return current, trace, problem.state


def _chain_task(task: tuple, shared: tuple) -> tuple:
    """Run chain ``k`` on ``shared = (problem, masks)``: its imputed cells, trace, record and end state.

    ``task = (k, seed sequence, iterations, start cells or None, start state
    or None)``. Works on a shallow copy of the problem with a fresh record
    (notes, fall-backs, dropped cluster means, extrapolation) and its own
    sampler state, so that a worker holding one copy of the problem for many
    chains keeps them independent (the store of what every chain computes
    alike, ``Problem.fixed``, stays shared: the same numbers either way).
    """
    k, seed_sequence, iterations, start, state = task
    problem, masks = shared
    problem = copy.copy(problem)
    problem.notes, problem.broken, problem.means_dropped, problem.extrapolated = Notes(), {}, {}, {}
    current, trace, end_state = _run_chain(problem, np.random.Generator(np.random.PCG64(seed_sequence)),
                                           iterations, start, state)
    record = (problem.notes.items(), problem.broken, problem.means_dropped, problem.extrapolated)
    return _filled_cells(problem, current, masks), trace, record, end_state


def _merge_record(problem: Problem, record: tuple) -> None:
    """Add one chain's record to the problem's, as if the chain had run on it."""
    notes, broken, means_dropped, extrapolated = record
    for note in notes:
        problem.notes.add(note)
    for name, strata in broken.items():
        problem.broken.setdefault(name, {}).update(strata)
    for name, info in means_dropped.items():
        previous = problem.means_dropped.get(name)
        if previous is None or info["clusters"] < previous["clusters"]:
            problem.means_dropped[name] = info
    for name, excess in extrapolated.items():
        problem.extrapolated[name] = max(problem.extrapolated.get(name, 0.0), excess)


def _filled_cells(problem: Problem, current: dict, masks: dict) -> dict:
    """The imputed cells of one chain: ``{variable: values at its missing rows}`` (coded)."""
    out = {}
    for var in problem.visit:
        rows = masks[var.name]
        if rows.any():
            y = current[var.name]
            out[var.name] = y[problem.codes][rows] if var.level == 2 else y[rows]
    return out


# --------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------
def impute(frame: pd.DataFrame, *, method: str, cluster: str, outcome: str, outcome_family: str,
           predictors, kinds: dict | None = None, levels: dict | None = None, cluster_covariates=(),
           higher_levels=(), m: int = 20, iterations: int = 10, seed: int = 0, continuous: str = "norm",
           cluster_residual_variance: bool = False, cluster_means: bool = True, strata: str | None = None,
           donors: int = 5, start=None, start_states=None, map_tasks=None,
           higher_effects: str = "random", random_slopes=()) -> ImputationResult:
    """Impute the missing values of a clustered data set m times.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patients in rows; never modified.
    method : {"flat", "stratified", "fixed_effects", "multilevel"}
        How the clusters enter the imputation models (module docstring).
    cluster, outcome : str
        Cluster id column (no missing values) and outcome column.
    outcome_family : {"binomial", "gaussian"}
        Binomial outcomes (0/1) are imputed as binary, gaussian as continuous.
    predictors : sequence of str
        Patient-level predictors of the analysis model.
    kinds : dict, optional
        ``{column: "numeric" | "categorical"}``; inferred from the dtype when
        absent. Numeric columns whose observed values are all 0 or 1 are
        imputed as binary; other numeric columns as continuous.
    levels : dict, optional
        ``{column: [levels]}`` of categorical columns (first = reference).
    cluster_covariates : sequence of str
        Cluster-level columns (constant within a cluster), used as
        predictors and imputed at the cluster level when missing.
    higher_levels : sequence of str
        Columns of units above the cluster (complete, clusters nested). For
        ``multilevel`` the one directly above the cluster (the most units)
        gets a random intercept in every patient-level imputation model and
        its unit means of the other variables join the predictors (three
        levels, :mod:`hmlib.stats.imputation.three_level`); any level above
        that, and every higher level of the other methods and of the
        cluster-level models, enters as fixed indicator columns.
    m : int
        Number of imputations (independent chains).
    iterations : int
        Chained-equations iterations per chain.
    seed : int
        Seed of ``numpy.random.SeedSequence``; chain k uses child k.
    continuous : {"norm", "pmm"}
        Normal-model draws or predictive mean matching for continuous
        variables.
    cluster_residual_variance : bool
        Multilevel only: cluster-specific residual variances (2l.norm)
        instead of a common one (2l.pan).
    cluster_means : bool
        Multilevel only: add the cluster means of the other patient-level
        variables to each model (default True; Grund et al. 2018), for each
        target observed in enough clusters to estimate their coefficients
        (module docstring, "Few clusters").
    strata : str, optional
        Stratified only: the cluster column or a cluster covariate. Default:
        the first complete categorical cluster covariate, else the cluster.
    donors : int
        Donor pool size of predictive mean matching.
    start : sequence of pandas.DataFrame, optional
        ``m`` completed data sets of the same rows (same index) to start the
        chains from: chain ``k`` begins with the missing cells filled as in
        ``start[k]`` instead of random draws from the observed values (a
        warm start, e.g. a sensitivity scenario's re-imputation starting
        from the primary imputation; fewer ``iterations`` then suffice, as
        measured in ``bench/sensitivity_warm_start.py``).
    start_states : sequence of dict, optional
        The samplers' state at the end of earlier chains
        (:attr:`ImputationResult.chain_states`, or only their fits,
        :func:`fit_starts`), so that chain ``k`` continues from their
        variance components and fits (a state that does not fit this data,
        e.g. cluster-specific variances of other clusters, is started
        afresh). Without it the samplers start afresh (the Gibbs sampler
        with its burn-in).
    map_tasks : callable, optional
        ``map_tasks(fn, tasks, shared, progress=...)`` returning
        ``[fn(task, shared) for task in tasks]`` in order and reporting each
        task done to ``progress`` (:mod:`hmlib.progress`), e.g.
        :meth:`hmlib.parallel.TaskPool.map`: runs the m chains as tasks
        (``shared`` is the problem, sent once per worker; a task carries its
        chain's start cells and state). Default: one after the other, here.
        The result does not depend on it.
    higher_effects : {"random", "fixed"}
        Multilevel with ``higher_levels``: ``"random"`` (default) is the
        three-level model above; ``"fixed"`` gives every higher level fixed
        indicator columns (two-level models, hmlib's earlier behaviour).
    random_slopes : sequence of str
        Multilevel only: complete patient-level predictors (the visit time)
        with a random slope per cluster in the imputation model of each
        continuous variable, correlated with its random intercept (mice's
        2l.pan "type 2" set-up, :mod:`hmlib.stats.imputation.random_slopes`),
        and of each binary and categorical one (a random-slope logistic
        model, :mod:`hmlib.stats.imputation.slopes_logistic`). With
        ``higher_levels`` the level directly above keeps its random intercept
        beside the slopes (visits in patients in sites,
        :mod:`hmlib.stats.imputation.slopes_kernel` and
        :mod:`~hmlib.stats.imputation.slopes_logistic`).

    Returns
    -------
    ImputationResult

    Raises
    ------
    DataError
        A column is absent, missing everywhere, has text in a numeric
        column, a cluster covariate varies within a cluster, clusters are
        not nested in a higher level, the cluster id is missing.
    ValueError
        Unknown method, ``continuous`` or bad ``m``/``iterations``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> site = np.repeat(np.arange(10), 30)
    >>> x = rng.normal(size=300) + rng.normal(size=10)[site]
    >>> y = (rng.random(300) < 1 / (1 + np.exp(-x))).astype(float)
    >>> x[rng.random(300) < 0.3] = np.nan
    >>> data = pd.DataFrame({"site": site, "y": y, "x": x})
    >>> res = impute(data, method="multilevel", cluster="site", outcome="y",
    ...              outcome_family="binomial", predictors=["x"], m=3, iterations=4, seed=1)
    >>> len(res.completed), bool(res.completed[0]["x"].notna().all())
    (3, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if higher_effects not in ("random", "fixed"):
        raise ValueError(f"higher_effects must be 'random' or 'fixed', got {higher_effects!r}.")
    if continuous not in CONTINUOUS_METHODS:
        raise ValueError(f"continuous must be one of {CONTINUOUS_METHODS}, got {continuous!r}.")
    for name, value in (("m", m), ("iterations", iterations), ("donors", donors)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    predictors = list(predictors)
    cluster_covariates = list(cluster_covariates)
    higher_levels = list(higher_levels)
    wanted = [cluster, *higher_levels, *cluster_covariates, outcome, *predictors]
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise DataError(f"column(s) {absent} are not in the data; check the roles passed to impute().")
    if len(set(wanted)) != len(wanted):
        raise DataError(f"a column has two roles among {wanted}; each column may appear once.")
    columns = [c for c in frame.columns if c in set(wanted)]
    base = frame.loc[:, columns].copy()
    if start is not None:
        start = list(start)
        if len(start) != m or not all(isinstance(s, pd.DataFrame) and s.index.equals(frame.index) for s in start):
            raise ValueError(f"start must hold m = {m} completed data sets with the rows (index) of the data.")
    if start_states is not None and len(start_states) != m:
        raise ValueError(f"start_states must hold m = {m} chain states.")

    problem, strata_name = build_problem(
        base, method=method, cluster=cluster, outcome=outcome, outcome_family=outcome_family,
        predictors=predictors, kinds=kinds, levels=levels, cluster_covariates=cluster_covariates,
        higher_levels=higher_levels, continuous=continuous, hetero=cluster_residual_variance,
        cluster_means=cluster_means, strata=strata, donors=donors, higher_effects=higher_effects,
        random_slopes=random_slopes)

    mask_frame = pd.DataFrame(False, index=base.index, columns=columns)
    masks = {}
    for var in problem.visit:
        rows = base[var.name].isna().to_numpy()
        masks[var.name] = rows
        mask_frame[var.name] = rows
    for var in [*problem.level1, *problem.level2]:
        if var.kind == "binary" and var.missing.any() and np.unique(var.values[~var.missing]).size < 2:
            problem.notes.add(f"'{var.name}' takes a single observed value; its missing values were set to it.")
    if not problem.visit:
        problem.notes.add("No model variable has missing values; the m data sets are copies of the data.")

    seeds = np.random.SeedSequence(int(seed)).spawn(int(m))
    starts = [None] * m if start is None else [{v.name: _start_values(problem, v, s) for v in problem.visit}
                                                 for s in start]
    tasks = [(k, seeds[k], int(iterations), starts[k], None if start_states is None else start_states[k])
             for k in range(m)]
    # BLAS on one thread: the solves are small or tall and thin, and on a busy machine
    # threaded BLAS made them several times slower (hmlib.parallel; its tasks hold it too)
    with blas_one_thread():
        chains = (map_tasks or serial_map)(_chain_task, tasks, (problem, masks),
                                            progress=reporter(f"imputation ({method.replace('_', '-')})",
                                                              unit="imputed data sets"))
    cells, states, traces = [], [], {v.name: np.empty((m, iterations)) for v in problem.visit}
    for k, (filled, trace, record, state) in enumerate(chains):
        for name, values in trace.items():
            traces[name][k] = values
        cells.append(filled)
        states.append(state)
        _merge_record(problem, record)

    completed = CompletedData(base, [ImputedColumn(var.name, masks[var.name], np.vstack([c[var.name] for c in cells]),
                                                   var.categories)
                                     for var in problem.visit if masks[var.name].any()], m)
    fallbacks, recorded = recorded_fallbacks(problem, strata_name)
    notes = problem.notes.items() + recorded
    half = iterations // 2
    rhat = {name: split_rhat(values[:, iterations - half:]) if m > 1 else float("nan")
            for name, values in traces.items()}
    models = {v.name: model_description(problem, v) for v in problem.visit}
    return ImputationResult(method=method, continuous=continuous, m=int(m), iterations=int(iterations),
                            completed=completed, imputed_mask=mask_frame, chain_means=traces, rhat=rhat,
                            notes=notes, seed=int(seed), models=models,
                            strata=strata_name if method == "stratified" else None, fallbacks=fallbacks,
                            cluster_means_dropped=dict(problem.means_dropped),
                            extrapolated=dict(problem.extrapolated), chain_states=states)
