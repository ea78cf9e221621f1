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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError
from hmlib.stats.imputation.problem import Notes, Problem, Variable, build_problem, model_description
from hmlib.stats.imputation.univariate import impute_variable, recorded_fallbacks

__all__ = ["METHODS", "CONTINUOUS_METHODS", "ImputationResult", "impute", "split_rhat"]

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
    completed : list of pandas.DataFrame
        The m completed data sets: the model columns of the input (cluster,
        higher levels, cluster covariates, outcome, predictors; in input
        order, input index), with only the missing cells filled.
        Categorical columns keep their dtype and levels; numeric columns
        that were imputed come back as float64.
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
    """

    method: str
    continuous: str
    m: int
    iterations: int
    completed: list = field(repr=False)
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


def _run_chain(problem: Problem, rng, iterations: int):
    current = {}
    for var in [*problem.level1, *problem.level2]:
        y = var.values.copy()
        if var.missing.any():
            pool = var.values[~var.missing]
            y[var.missing] = pool[rng.integers(pool.size, size=int(var.missing.sum()))]
        current[var.name] = y
    problem.state = {}
    visit = problem.visit
    trace = {v.name: np.empty(iterations) for v in visit}
    for it in range(iterations):
        for var in visit:
            impute_variable(problem, var, current, rng)
            trace[var.name][it] = _chain_mean(var, current[var.name])
    return current, trace


def _chain_task(task: tuple, shared: tuple) -> tuple:
    """Run chain ``k`` on ``shared = (problem, base, masks)``: its completed frame, trace and record.

    Works on a shallow copy of the problem with a fresh record (notes,
    fall-backs, dropped cluster means, extrapolation), so that a worker
    holding one copy of the problem for many chains keeps them independent.
    """
    k, seed_sequence, iterations = task
    problem, base, masks = shared
    problem = copy.copy(problem)
    problem.notes, problem.broken, problem.means_dropped, problem.extrapolated = Notes(), {}, {}, {}
    current, trace = _run_chain(problem, np.random.Generator(np.random.PCG64(seed_sequence)), iterations)
    record = (problem.notes.items(), problem.broken, problem.means_dropped, problem.extrapolated)
    return _completed_frame(base, problem, current, masks), trace, record


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


def _serial_map(fn, tasks, shared) -> list:
    return [fn(task, shared) for task in tasks]


def _completed_frame(base: pd.DataFrame, problem: Problem, current: dict, masks: dict) -> pd.DataFrame:
    out = base.copy()
    for var in problem.visit:
        rows = masks[var.name]
        if not rows.any():
            continue
        y = current[var.name]
        filled = y[problem.codes][rows] if var.level == 2 else y[rows]
        if var.categories:
            cats = np.empty(len(var.categories), dtype=object)
            cats[:] = list(var.categories)
            filled = cats[filled.astype(int)]
        col = out[var.name]
        if not var.categories:
            # imputed numbers need not be integers: numeric columns come back as float64
            col = pd.Series(pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan),
                            index=col.index, name=col.name)
            col[rows] = filled.astype(float)
        elif isinstance(col.dtype, pd.CategoricalDtype):
            col = col.copy()
            col[rows] = filled
        else:
            col = col.astype(object)
            col[rows] = filled
            try:
                col = col.astype(base[var.name].dtype)
            except (TypeError, ValueError):
                pass
        out[var.name] = col
    return out


# --------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------
def impute(frame: pd.DataFrame, *, method: str, cluster: str, outcome: str, outcome_family: str,
           predictors, kinds: dict | None = None, levels: dict | None = None, cluster_covariates=(),
           higher_levels=(), m: int = 20, iterations: int = 10, seed: int = 0, continuous: str = "norm",
           cluster_residual_variance: bool = False, cluster_means: bool = True, strata: str | None = None,
           donors: int = 5, map_tasks=None) -> ImputationResult:
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
        Columns of units above the cluster (complete, clusters nested);
        their indicators enter the multilevel models as fixed effects.
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
    map_tasks : callable, optional
        ``map_tasks(fn, tasks, shared)`` returning ``[fn(task, shared) for
        task in tasks]`` in order, e.g. :meth:`hmlib.parallel.TaskPool.map`:
        runs the m chains as tasks (``shared`` is the problem and the data,
        sent once per worker). Default: one after the other, here. The
        result does not depend on it.

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

    problem, strata_name = build_problem(
        base, method=method, cluster=cluster, outcome=outcome, outcome_family=outcome_family,
        predictors=predictors, kinds=kinds, levels=levels, cluster_covariates=cluster_covariates,
        higher_levels=higher_levels, continuous=continuous, hetero=cluster_residual_variance,
        cluster_means=cluster_means, strata=strata, donors=donors)

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
    chains = (map_tasks or _serial_map)(_chain_task, [(k, seeds[k], int(iterations)) for k in range(m)],
                                        (problem, base, masks))
    completed, traces = [], {v.name: np.empty((m, iterations)) for v in problem.visit}
    for k, (frame, trace, record) in enumerate(chains):
        for name, values in trace.items():
            traces[name][k] = values
        completed.append(frame)
        _merge_record(problem, record)

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
                            extrapolated=dict(problem.extrapolated))
