"""Transport check: can the pooled imputation model reproduce each cluster?

An imputation model fitted to all clusters imputes a cluster's missing values
from what the *other* information says about that cluster. Where a cluster
differs from what the rest predict (a different assay, another case mix, a
local protocol), its imputations carry the pooled model's view rather than
the cluster's own. This check measures that directly, one cluster at a time,
on values whose truth is known.

Algorithm
---------
For each checked cluster ``j`` (clusters with observed values of the focus
variable; the ``max_clusters`` with most observed values, 30 by default):

1. Mask every observed value of the focus variable in cluster ``j`` (set it
   missing in a copy; the input is never modified). Cluster ``j`` now looks
   like a cluster that never measured the variable.
2. Impute the masked values ``m`` times with each method, by the same
   engine and options as the main imputation
   (:func:`hmlib.stats.imputation.impute`), with models fitted without cluster
   ``j``'s observed values. For the flat method the cluster plays no role
   anyway; for the multilevel method the cluster's own random intercept is
   unknown and is drawn from the cluster-effect distribution ``N(0, tau^2)``
   (the cluster means of the other variables still inform it through the
   fixed part). To keep this fast, the draws re-impute only the focus
   variable: the other variables are taken as completed by the method's
   main run (``backgrounds``; made here when not given), 4 draws from each
   of ``ceil(m / 4)`` completed data sets, so that a draw is one fit of the
   focus model (one chained-equations iteration with every other variable
   complete) rather than a full run of the chains. The price is a small leak: values of *other* variables that
   were missing in cluster ``j`` were imputed, in the main run, with cluster
   ``j``'s focus values in view. It can only make a cluster look more
   reproducible than it is, so a flag is never caused by it.
3. Compare the ``m`` draws ``d_i1..d_im`` of each masked value with the
   observed value ``y_i``:

   - bias ``= mean_i(mean_k d_ik) - mean_i(y_i)`` (mean imputed minus mean
     observed in the cluster), also in units of the SD of all observed
     values of the variable (``bias_sd``);
   - coverage: share of masked values inside their imputation interval
     ``dbar_i +/- t_{m-1, (1+level)/2} s_i sqrt(1 + 1/m)``, where ``dbar_i``
     and ``s_i`` are the mean and SD of the ``m`` draws. That is the
     prediction interval of one more draw from the same normal predictive
     distribution, so it keeps its nominal level with a small ``m`` (an
     interval from the empirical quantiles of 5 draws would not). For a
     0/1 focus variable coverage is not defined (NaN) and only the bias
     counts.

A cluster is flagged ("the pooled imputation model cannot reproduce it")
when ``|bias_sd| - t_{m-1, 0.975} mcse > bias_threshold`` (default 0.5 SD) or
``coverage < coverage_threshold`` (default 0.8), or when the imputations
are unstable: the cluster's mean imputed value varies between draws by more
than ``spread_threshold`` (default 2) SDs of the variable. A coherent model
cannot be that unsure of one cluster's level (the cluster effects' SD is at
most the variable's SD), but a model extrapolating from very few clusters
can: its enormous intervals then cover everything and its bias drowns in
Monte Carlo error, so neither of the other two rules would see it. All
thresholds are arguments. ``mcse`` is the Monte Carlo standard error of the bias: the SD of
the cluster's mean imputed value across the ``m`` draws over ``sqrt(m)``.
It matters for the multilevel method, where each draw carries its own
cluster effect from ``N(0, tau^2)``, so that the mean of ``m`` draws is off
by about ``tau / sqrt(m)`` by chance alone; without it a small ``m`` would
flag clusters the model reproduces on average.

Under a correct model a masked cluster's values are covered at about the
nominal level and its bias is of the order ``SD / sqrt(n_j)`` (plus the
cluster effect for flat imputation), so flags in a large cluster point to
a cluster the model does not transport to, not to chance.

Privacy: :class:`TransportResult` holds the internal per-cluster table
(with each cluster's number of masked values and mean observed value); it is
not for publication. The step publishes it with small counts suppressed
(:func:`hmlib.steps.imputation_transport.publish_transport`); nothing here
applies privacy rules.

References
----------
Resche-Rigon M, White IR (2018). Multiple imputation by chained equations
for systematically and sporadically missing multilevel data. Stat Methods
Med Res 27(6):1634-1649 (systematically missing clusters).
Jolani S (2018). Hierarchical imputation of systematically and sporadically
missing data: an approximate Bayesian approach using chained equations.
Biom J 60(2):333-351.
Abayomi K, Gelman A, Levy M (2008). Diagnostics for multivariate
imputations. J R Stat Soc C 57(3):273-291 (comparing imputed and observed
values by masking).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError, FitError
from hmlib.parallel import serial_map
from hmlib.progress import muted, reporter
from hmlib.stats.imputation import fit_starts, impute

__all__ = ["DEFAULT_TRANSPORT_METHODS", "interval_coverage", "masked_cluster_summary", "TransportResult",
           "transport_check_frame"]

#: Draws made from one background (one completed data set of the main run): fewer calls of the
#: engine (each has a fixed cost) while the other variables' uncertainty still enters through
#: ceil(m / DRAWS_PER_BACKGROUND) different backgrounds.
DRAWS_PER_BACKGROUND = 4
#: A bias counts only when it exceeds the threshold by more than its Monte Carlo error: this
#: quantile of t with m - 1 degrees of freedom times the Monte Carlo standard error.
MC_LEVEL = 0.975

#: Methods checked by default: label -> (engine method, engine options). The
#: flat comparator uses predictive mean matching, as in the main step.
DEFAULT_TRANSPORT_METHODS: dict = {
    "flat_mi": ("flat", {"continuous": "pmm"}),
    "multilevel_mi": ("multilevel", {}),
}


# --------------------------------------------------------------------------
# numpy core
# --------------------------------------------------------------------------
def interval_coverage(observed, draws, level: float = 0.95) -> np.ndarray:
    """Whether each observed value lies in the normal prediction interval of its draws.

    Parameters
    ----------
    observed : array_like, shape (n,)
        The true (masked) values.
    draws : array_like, shape (m, n)
        ``m`` imputations of each value.
    level : float
        Interval level.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        ``|y_i - dbar_i| <= t_{m-1, (1+level)/2} s_i sqrt(1 + 1/m)``.

    Raises
    ------
    ValueError
        Fewer than 2 draws, or shapes that do not match.

    Examples
    --------
    >>> draws = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    >>> interval_coverage([1.0, 10.0], draws).tolist()
    [True, False]
    """
    y = np.asarray(observed, dtype=float)
    d = np.asarray(draws, dtype=float)
    if d.ndim != 2 or d.shape[1] != y.size:
        raise ValueError(f"draws must have shape (m, {y.size}), got {d.shape}.")
    m = d.shape[0]
    if m < 2:
        raise ValueError("coverage needs at least 2 draws per value.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level!r}.")
    centre = d.mean(axis=0)
    spread = d.std(axis=0, ddof=1)
    half = stats.t.ppf(0.5 + level / 2.0, m - 1) * spread * np.sqrt(1.0 + 1.0 / m)
    return np.abs(y - centre) <= half


def masked_cluster_summary(observed, draws, scale: float, *, level: float = 0.95,
                           binary: bool = False) -> dict:
    """Bias and coverage of the imputations of one masked cluster.

    Parameters
    ----------
    observed : array_like, shape (n,)
        The cluster's masked values.
    draws : array_like, shape (m, n)
        Their imputations.
    scale : float
        SD used to express the bias in SD units (the SD of all observed
        values of the variable).
    level : float
        Level of the imputation intervals.
    binary : bool
        0/1 variable: coverage is not defined (NaN).

    Returns
    -------
    dict
        ``n_observed, mean_observed, mean_imputed, bias, bias_sd,
        bias_mc_se, draw_sd, coverage``. ``draw_sd`` is the SD of the
        cluster's mean imputed value across the ``m`` draws, and
        ``bias_mc_se = draw_sd / sqrt(m)`` the Monte Carlo standard error of
        ``bias`` (both in SD units).
    """
    y = np.asarray(observed, dtype=float)
    d = np.asarray(draws, dtype=float)
    mean_observed = float(y.mean())
    mean_imputed = float(d.mean())
    bias = mean_imputed - mean_observed
    coverage = float("nan") if binary else float(interval_coverage(y, d, level).mean())
    per_draw = d.mean(axis=1)
    draw_sd = float(per_draw.std(ddof=1)) if per_draw.size > 1 else float("nan")
    unit = scale if scale > 0 else float("nan")
    return {"n_observed": int(y.size), "mean_observed": mean_observed, "mean_imputed": mean_imputed,
            "bias": bias, "bias_sd": bias / unit, "bias_mc_se": draw_sd / np.sqrt(per_draw.size) / unit,
            "draw_sd": draw_sd / unit, "coverage": coverage}


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------
@dataclass(eq=False)
class TransportResult:
    """Per-cluster bias and coverage of imputations of masked clusters.

    Attributes
    ----------
    focus : str
        The variable checked.
    methods : tuple of str
        Method labels (as in ``estimates.csv``).
    table : pandas.DataFrame
        One row per checked cluster and method: ``cluster, method,
        n_observed, mean_observed, mean_imputed, bias, bias_sd, bias_mc_se,
        draw_sd, coverage, flagged, reason``. Internal (unsuppressed); not
        for display (the step publishes it with small counts suppressed).
    failures : dict
        ``{(cluster, method): reason}`` for imputations that failed.
    scale : float
        SD of the observed values (the unit of ``bias_sd``).
    bias_threshold, coverage_threshold, spread_threshold, level : float
    m, iterations, max_clusters : int
    n_eligible : int
        Clusters with at least ``min_observed`` observed values.
    seconds : float
    notes : list of str
    """

    focus: str
    methods: tuple
    table: pd.DataFrame = field(repr=False)
    failures: dict
    scale: float
    bias_threshold: float
    coverage_threshold: float
    spread_threshold: float
    level: float
    m: int
    iterations: int
    max_clusters: int
    n_eligible: int
    seconds: float
    notes: list = field(default_factory=list)

    @property
    def n_checked(self) -> int:
        """Clusters checked."""
        return int(self.table["cluster"].nunique()) if len(self.table) else 0

    def flagged(self, method: str) -> list:
        """Labels of the clusters flagged for ``method``, largest |bias| first."""
        sub = self.table.loc[(self.table["method"] == method) & self.table["flagged"]]
        return sub.reindex(sub["bias_sd"].abs().sort_values(ascending=False).index)["cluster"].tolist()

    def narrative(self) -> list[str]:
        """Generated sentences stating what the check found, with its numbers."""
        if not len(self.table):
            return [f"The transport check could not be run for {self.focus}: "
                    + (self.notes[0] if self.notes else "no cluster qualified.")]
        out = [
            f"Transport check: the observed {self.focus} values of each of the {self.n_checked} clusters "
            f"with most observed values (of {self.n_eligible} clusters that observe {self.focus}"
            f"{'; capped at ' + str(self.max_clusters) if self.n_eligible > self.max_clusters else ''}) "
            f"were masked and imputed from models fitted without them ({self.m} draws per masked value). "
            f"A cluster is flagged when its mean imputed value is off by more than "
            f"{self.bias_threshold:g} SD ({self.bias_threshold * self.scale:.3g}) beyond Monte Carlo error, "
            f"if fewer than {self.coverage_threshold:.0%} of its values fall in their {self.level:.0%} "
            f"imputation intervals, or if its mean imputed value varies by more than {self.spread_threshold:g} SD "
            "between draws (unstable imputations)."]
        for method in self.methods:
            sub = self.table.loc[self.table["method"] == method]
            if not len(sub):
                continue
            flagged = self.flagged(method)
            cov = sub["coverage"].dropna()
            spread = (f"median coverage {cov.median():.0%}, " if len(cov) else "")
            summary = (f"{spread}median |bias| {sub['bias_sd'].abs().median():.2f} SD")
            if flagged:
                shown = ", ".join(map(str, flagged[:8])) + (" ..." if len(flagged) > 8 else "")
                out.append(f"{method}: {len(flagged)} of {len(sub)} clusters cannot be reproduced by the pooled "
                           f"model ({summary}): {shown}.")
            else:
                out.append(f"{method}: every checked cluster is reproduced within the thresholds ({summary}).")
        if len(self.methods) > 1 and len(self.table):
            cover = self.table.groupby("method")["coverage"].median()
            bias = self.table.groupby("method")["bias_sd"].apply(lambda b: b.abs().median())
            if "multilevel_mi" in cover.index and "flat_mi" in cover.index and np.isfinite(cover["flat_mi"]):
                b_ml, b_flat = bias["multilevel_mi"], bias["flat_mi"]
                c_ml, c_flat = cover["multilevel_mi"], cover["flat_mi"]
                closeness = ("about as far off as" if abs(b_ml - b_flat) <= 0.1 * max(b_flat, 1e-12)
                             else "further off than" if b_ml > b_flat else "closer than")
                width = ("wider intervals, which cover more of the masked values" if c_ml > c_flat
                         else "intervals that cover no more of the masked values")
                out.append(
                    "For the multilevel method a masked cluster's own effect is unknown and is drawn from the "
                    f"distribution of cluster effects. Here its imputations are {closeness} the flat ones "
                    f"(median |bias| {b_ml:.2f} vs {b_flat:.2f} SD), with {width} (median coverage "
                    f"{c_ml:.0%} vs {c_flat:.0%}). A cluster flagged by bias alone is one whose level the other "
                    "clusters do not predict; one flagged by coverage is one whose imputations are confidently "
                    "wrong.")
        if self.failures:
            out.append(f"{len(self.failures)} masked imputations failed and are missing from the table "
                       f"(first: {next(iter(self.failures.values()))}).")
        return out + list(self.notes)

    def to_dict(self) -> dict:
        """JSON-ready aggregates: settings, thresholds, flagged clusters, failures (not the table)."""
        return {
            "focus": self.focus, "methods": list(self.methods), "m": self.m, "iterations": self.iterations,
            "max_clusters": self.max_clusters, "n_eligible": self.n_eligible, "n_checked": self.n_checked,
            "bias_threshold_sd": self.bias_threshold, "coverage_threshold": self.coverage_threshold,
            "spread_threshold_sd": self.spread_threshold,
            "level": self.level, "scale_sd": self.scale,
            "flagged": {method: [str(c) for c in self.flagged(method)] for method in self.methods},
            "failures": [{"cluster": str(c), "method": meth, "reason": r} for (c, meth), r in self.failures.items()],
            "seconds": self.seconds, "narrative": self.narrative(), "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _MaskShared:
    """What every masked cluster's task needs (sent once to each worker, not with every task)."""

    focus: str
    values: np.ndarray
    labels: np.ndarray
    observed: np.ndarray
    scale: float
    binary: bool
    m: int
    level: float
    roles: dict
    methods: dict
    backgrounds: dict
    states: dict
    thresholds: tuple
    mc_quantile: float


def _check_cluster(task: tuple, shared: _MaskShared) -> tuple[list, dict]:
    """Mask one cluster's observed focus values and impute them ``m`` times by each method.

    ``task = (label, seed sequences, one per method)``. Returns the cluster's
    table rows and its failures ``{(label, method): reason}``; the numbers
    depend only on the task and ``shared`` (not on where it runs).
    """
    label, method_seeds = task
    sh = shared
    bias_threshold, coverage_threshold, spread_threshold = sh.thresholds
    rows_j = (sh.labels == label) & sh.observed
    truth = sh.values[rows_j]
    rows, failures = [], {}
    for k_index, (method_label, (method, options)) in enumerate(sh.methods.items()):
        if method_label not in sh.backgrounds:
            continue
        draw_seeds = method_seeds[k_index].generate_state(sh.m)
        completed = sh.backgrounds[method_label]
        draws = np.empty((sh.m, truth.size))
        try:
            done = 0
            for call, seed_k in enumerate(draw_seeds[:int(np.ceil(sh.m / DRAWS_PER_BACKGROUND))]):
                n_draws = min(DRAWS_PER_BACKGROUND, sh.m - done)
                background = completed[call % len(completed)].copy()
                # the other variables as completed by one imputation of the main run; the focus as
                # recorded, with cluster j's observed values masked
                background[sh.focus] = np.where(rows_j, np.nan, sh.values)
                chain_states = sh.states.get(method_label)
                warm = fit_starts([chain_states[call % len(chain_states)]]) * n_draws if chain_states else None
                with muted():  # the check's own re-imputations: one line per cluster, from the caller
                    single = impute(background, method=method, m=n_draws, iterations=1, seed=int(seed_k),
                                    start_states=warm, **sh.roles, **dict(options))
                cells = getattr(single.completed, "imputed", lambda name: None)(sh.focus)
                for k in range(n_draws):
                    if cells is not None:       # the imputed cells only (no frame is built)
                        draws[done + k] = cells.values[k][rows_j[cells.rows]]
                    else:
                        draws[done + k] = single.completed[k][sh.focus].to_numpy(dtype=float)[rows_j]
                done += n_draws
        except (FitError, DataError, np.linalg.LinAlgError, ValueError) as exc:
            failures[(label, method_label)] = f"{type(exc).__name__}: {exc}"
            continue
        summary = masked_cluster_summary(truth, draws, sh.scale, level=sh.level, binary=sh.binary)
        reasons = []
        # beyond the threshold by more than the Monte Carlo error of m draws (for the multilevel
        # method each draw has its own cluster effect, so the mean of m draws is noisy)
        if abs(summary["bias_sd"]) - sh.mc_quantile * summary["bias_mc_se"] > bias_threshold:
            reasons.append(f"bias {summary['bias_sd']:+.2f} SD (Monte Carlo SE {summary['bias_mc_se']:.2f})")
        if np.isfinite(summary["coverage"]) and summary["coverage"] < coverage_threshold:
            reasons.append(f"coverage {summary['coverage']:.0%}")
        if summary["draw_sd"] > spread_threshold:
            reasons.append(f"unstable: its mean imputed value varies by {summary['draw_sd']:.3g} SD between draws")
        rows.append({"cluster": label, "method": method_label, **summary, "flagged": bool(reasons),
                     "reason": "; ".join(reasons)})
    return rows, failures


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------
def transport_check_frame(frame: pd.DataFrame, *, focus: str, cluster: str, outcome: str,
                          outcome_family: str, predictors, kinds: dict | None = None,
                          levels: dict | None = None, cluster_covariates=(), higher_levels=(), random_slopes=(),
                          methods: Mapping | None = None, backgrounds: Mapping | None = None,
                          background_states: Mapping | None = None, max_clusters: int = 30, min_observed: int = 2,
                          m: int = 10, iterations: int = 5, seed: int = 0, bias_threshold: float = 0.5,
                          coverage_threshold: float = 0.8, spread_threshold: float = 2.0,
                          level: float = 0.95, map_tasks=None) -> TransportResult:
    """Mask each cluster's observed focus values in turn and impute them (module docstring).

    Parameters
    ----------
    frame : pandas.DataFrame
        Patients in rows; never modified.
    focus : str
        The variable checked (numeric; 0/1 variables get bias only).
    cluster, outcome, outcome_family, predictors, kinds, levels, cluster_covariates, higher_levels, random_slopes
        Roles, as :func:`hmlib.stats.imputation.impute`.
    methods : mapping, optional
        ``{label: (engine method, engine options)}``; default
        :data:`DEFAULT_TRANSPORT_METHODS` (flat with pmm, multilevel).
    backgrounds : mapping, optional
        ``{label: list of completed data frames}`` from the main imputation
        of each method (``ImputationResult.completed``, same rows as
        ``frame``); made here (``m`` imputations, ``iterations`` iterations)
        for the methods not given.
    background_states : mapping, optional
        ``{label: chain states}`` of the runs that made the backgrounds
        (``ImputationResult.chain_states``): the masked imputations start
        their maximum-likelihood fits (2l.bin) from the fit of the chain that
        made their background (:func:`hmlib.stats.imputation.fit_starts`:
        the same maximum, reached in a few Newton steps; nothing else of the
        state is carried over).
    max_clusters : int
        Check at most this many clusters: those with most observed values.
    min_observed : int
        Clusters with fewer observed values are not checked (at least 1).
    m : int
        Draws per masked value (``m >= 2``).
    iterations : int
        Chained-equations iterations of the main imputations made here when
        ``backgrounds`` lacks a method.
    seed : int
        Seed of ``numpy.random.SeedSequence``; each cluster and method gets
        its own child, so results depend only on the seed.
    bias_threshold : float
        Flag when ``|bias| > bias_threshold`` SDs of the observed values.
    coverage_threshold : float
        Flag when the coverage of the imputation intervals is below this.
    spread_threshold : float
        Flag when the cluster's mean imputed value varies between draws by
        more than this many SDs of the variable (module docstring).
    level : float
        Level of the imputation intervals.
    map_tasks : callable, optional
        ``map_tasks(fn, tasks, shared, progress=...)`` returning
        ``[fn(task, shared) for task in tasks]`` (e.g.
        :meth:`hmlib.parallel.TaskPool.map`): the masked clusters are
        independent tasks, each with its own seeds, so the table is the same
        on every engine. Default: one after the other, here.

    Returns
    -------
    TransportResult

    Raises
    ------
    DataError
        The focus variable is absent, not numeric, or never observed.
    ValueError
        ``m < 2`` or a bad threshold.
    """
    if focus not in frame.columns:
        raise DataError(f"the focus variable {focus!r} is not in the data.")
    if m < 2:
        raise ValueError(f"the transport check needs m >= 2 imputations, got {m}.")
    if not 0 < coverage_threshold <= 1 or bias_threshold <= 0:
        raise ValueError("coverage_threshold must be in (0, 1] and bias_threshold positive.")
    if (kinds or {}).get(focus) == "categorical" or not pd.api.types.is_numeric_dtype(frame[focus]):
        raise DataError(f"the transport check needs a numeric focus variable; {focus!r} is categorical.")
    methods = dict(DEFAULT_TRANSPORT_METHODS if methods is None else methods)
    started = time.perf_counter()
    values = frame[focus].to_numpy(dtype=float)
    observed = ~np.isnan(values)
    if not observed.any():
        raise DataError(f"{focus!r} is never observed; there is nothing to mask.")
    binary = set(np.unique(values[observed])) <= {0.0, 1.0}
    scale = float(np.std(values[observed], ddof=1)) if observed.sum() > 1 else float("nan")
    labels = frame[cluster].to_numpy()
    counts = pd.Series(observed).groupby(labels).sum()
    eligible = counts.loc[counts >= max(int(min_observed), 1)]
    # most observed values first; ties by label so that the order is stable
    order = sorted(eligible.index.tolist(), key=lambda c: (-int(eligible[c]), str(c)))
    chosen = order[:max_clusters]
    notes: list[str] = []
    if len(order) > max_clusters:
        notes.append(f"Only the {max_clusters} clusters with most observed {focus} values were checked "
                     f"(of {len(order)}); the others are not in the table.")
    roles = dict(cluster=cluster, outcome=outcome, outcome_family=outcome_family, predictors=list(predictors),
                 kinds=kinds, levels=levels, cluster_covariates=list(cluster_covariates),
                 higher_levels=list(higher_levels), random_slopes=list(random_slopes))
    backgrounds = dict(backgrounds or {})
    states = {label: list(value) for label, value in dict(background_states or {}).items()}
    rows, failures = [], {}
    for k_index, (method_label, (method, options)) in enumerate(methods.items()):
        if method_label not in backgrounds:
            try:
                base = impute(frame, method=method, m=int(m), iterations=int(iterations),
                              seed=int(np.random.SeedSequence([int(seed), k_index]).generate_state(1)[0]),
                              **roles, **dict(options))
            except (FitError, DataError, np.linalg.LinAlgError, ValueError) as exc:
                failures[("all", method_label)] = f"{type(exc).__name__}: {exc}"
                continue
            backgrounds[method_label] = base.completed
            states[method_label] = base.chain_states
    seeds = np.random.SeedSequence(int(seed)).spawn(len(chosen) * len(methods))
    n_calls = int(np.ceil(m / DRAWS_PER_BACKGROUND))
    shared = _MaskShared(
        focus=focus, values=values, labels=labels, observed=observed, scale=scale, binary=binary, m=int(m),
        level=float(level), roles=roles, methods=methods,
        # only the completed data sets the draws use travel to the workers
        backgrounds={k: [v[call % len(v)] for call in range(min(n_calls, len(v)))] for k, v in backgrounds.items()},
        states=states, thresholds=(float(bias_threshold), float(coverage_threshold), float(spread_threshold)),
        mc_quantile=float(stats.t.ppf(MC_LEVEL, int(m) - 1)))
    tasks = [(label, seeds[c_index * len(methods):(c_index + 1) * len(methods)])
             for c_index, label in enumerate(chosen)]
    for cluster_rows, cluster_failures in (map_tasks or serial_map)(
            _check_cluster, tasks, shared, progress=reporter("transport check", unit="clusters")):
        rows.extend(cluster_rows)
        failures.update(cluster_failures)
    columns = ["cluster", "method", "n_observed", "mean_observed", "mean_imputed", "bias", "bias_sd",
               "bias_mc_se", "draw_sd", "coverage", "flagged", "reason"]
    table = pd.DataFrame(rows, columns=columns)
    if not chosen:
        notes.append(f"No cluster has at least {min_observed} observed {focus} values.")
    if binary:
        notes.append(f"{focus} is 0/1: coverage of imputation intervals is not defined; clusters are "
                     "flagged by bias only.")
    return TransportResult(
        focus=focus, methods=tuple(methods), table=table, failures=failures,
        scale=scale, bias_threshold=float(bias_threshold), coverage_threshold=float(coverage_threshold),
        spread_threshold=float(spread_threshold),
        level=float(level), m=int(m), iterations=int(iterations), max_clusters=int(max_clusters),
        n_eligible=len(order), seconds=time.perf_counter() - started, notes=notes)
