"""Step 1 of the report (diagnose): where, how and why data are missing, by cluster.

Every function takes a patient-level frame plus column names and returns an
aggregated table (by cluster, by variable or by pattern) or a result object;
:func:`diagnose` runs them all and applies small-cell suppression
(:mod:`hmlib.privacy`) to everything it publishes.

Terms and algorithms
--------------------
Missingness indicator
    ``R_ij = 1`` when variable ``v`` is missing for patient ``i`` of cluster
    ``j``. Shares are ``sum_i R_ij / n_j``.
Wilson interval
    The score interval for a binomial proportion (Wilson 1927; Newcombe 1998
    method 3), without continuity correction; ``k = 3, n = 10`` gives
    (0.1078, 0.6032).
Funnel plot
    Cluster missing rates against cluster size, with control limits around the
    pooled rate ``p0`` (total missing over total rows). The limits are *exact
    binomial* quantiles with Spiegelhalter's interpolation between the integer
    steps (Spiegelhalter 2005, appendix A.1.1): for tail probability ``q``,
    ``r = F^-1(q)``, ``a = (F(r) - q) / (F(r) - F(r - 1))`` and the limit is
    ``(r - a) / n``. Limits at 95% and 99.8% by default; a cluster beyond the
    99.8% limits is called an outlier. No overdispersion adjustment is made:
    when missingness varies between clusters (see below) many clusters fall
    outside, which is itself the finding.
Between-cluster variation
    Random-intercept logistic model ``logit P(R_ij = 1) = x_ij' b + u_j``,
    ``u_j ~ N(0, s^2)`` (:func:`hmlib.stats.mixed.fit_random_intercept`), reported as
    the cluster SD ``s`` on the logit scale, the latent-scale ICC
    ``s^2 / (s^2 + pi^2 / 3)`` (Snijders & Bosker 2012, section 17.3) and the
    likelihood-ratio test of ``s = 0`` referred to the 50:50 mixture of
    chi2_0 and chi2_1 (Self & Liang 1987). The likelihood is integrated by
    10-point adaptive Gauss-Hermite quadrature (as lme4's ``nAGQ = 10``)
    when the model has at most ``AGHQ_MAX_ROWS`` (50,000) rows, and by the
    Laplace approximation above that. Quadrature costs about three times as
    much (the whole diagnosis of 20,000 patients in 500 clusters takes about
    3 s with it, 1 s with Laplace, on a 2-core machine) and matters most for
    small clusters; above 50,000 rows the diagnosis would otherwise take
    tens of seconds, and such registries usually have clusters large enough
    for Laplace. ``nagq`` overrides the choice.
Predictors of missingness, within and between clusters
    Each numeric covariate ``x`` is split into its cluster mean
    ``m_j`` (over the patients of the cluster with ``x`` recorded) and the
    within-cluster deviation ``x_ij - m_j`` (Neuhaus & Kalbfleisch 1998;
    the "within-between" or hybrid model). Both parts are standardised: the
    between part by the SD of the cluster means over clusters, the within part
    by the SD of the deviations over patients, so the odds ratios are per SD of
    each part. Categorical covariates enter as treatment-coded 0/1 columns
    (reference: the alphabetically first level; term ``name[level]``). All
    covariates enter one random-intercept logistic model of ``R``; patients
    with any covariate missing are left out of that model and counted
    (``n_dropped`` and per covariate ``dropped_by_covariate``).
Structural and sporadic gaps
    Per cluster and variable: *complete* (nothing missing), *structural*
    (missing for every patient of the cluster, or share missing above
    ``structural_share``, default 0.9), otherwise *sporadic*.
Missing-data patterns
    The set of variables missing for a patient, written as their names in the
    order given (``"lactate, sbp"``) or ``"complete"``. Patterns of fewer than
    ``min_cell`` patients are pooled into one row; if the pooled count is
    itself from 1 to ``min_cell - 1``, the next smallest patterns are pooled
    too until it is not (else it could be recovered from the total).
Missingness propensity and outcome
    The empirical-Bayes (conditional mode) cluster effects of the missingness
    model of the focus variable are correlated over clusters with those of a
    random-intercept model of the outcome on the predictors observed for every
    patient. Pearson and Spearman correlations with Fisher-z intervals (for
    Spearman with the variance ``1.06 / (m - 3)`` of Fieller, Hartley &
    Pearson 1957). Conditional modes are shrunk towards zero, more in small
    clusters, and carry estimation error, so this correlation is a screening
    number; the joint model of step 4 estimates the correlation properly.

References
----------
Wilson EB (1927). Probable inference, the law of succession, and statistical
inference. JASA 22:209-212. Newcombe RG (1998). Two-sided confidence intervals
for the single proportion. Stat Med 17:857-872.
Spiegelhalter DJ (2005). Funnel plots for comparing institutional
performance. Stat Med 24:1185-1202.
Self SG, Liang KY (1987). JASA 82:605-610.
Snijders TAB, Bosker RJ (2012). Multilevel Analysis, 2nd ed. Sage.
Neuhaus JM, Kalbfleisch JD (1998). Between- and within-cluster covariate
effects in the analysis of clustered data. Biometrics 54:638-645.
Fieller EC, Hartley HO, Pearson ES (1957). Tests for rank correlation
coefficients I. Biometrika 44:470-481.
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., ch. 4
(missing-data patterns) and ch. 7 (multilevel data). CRC.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError, FitError, ParamsError
from hmlib.privacy import SuppressedTable, suppress_counts

__all__ = [
    "AGHQ_MAX_ROWS",
    "wilson_interval",
    "missingness_by_cluster",
    "missingness_overview",
    "missingness_heatmap_table",
    "binomial_control_limits",
    "FunnelResult",
    "missingness_funnel",
    "ClusterVariationResult",
    "missingness_cluster_variation",
    "MissingnessPredictorsResult",
    "missingness_predictors",
    "GapResult",
    "classify_gaps",
    "missingness_patterns",
    "OutcomeCorrelationResult",
    "missingness_outcome_correlation",
    "DiagnoseResult",
    "diagnose",
]

#: Models of at most this many rows use 10-point adaptive Gauss-Hermite
#: quadrature; larger ones the Laplace approximation (see the module docstring).
AGHQ_MAX_ROWS = 50_000
_AGHQ_NODES = 10

_EB_CAVEAT = (
    "These are empirical-Bayes cluster effects: they are shrunk towards zero, more so in "
    "small clusters, and carry estimation error, so the correlation is attenuated and only "
    "screens for a link; the joint Bayesian model of step 4 estimates it properly."
)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
def _check_columns(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: column(s) {missing} not in the data "
                        f"(columns: {list(frame.columns)[:20]}).")


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ParamsError(f"level must be between 0 and 1, got {level!r}.")
    return float(level)


def _cluster_index(frame: pd.DataFrame, cluster: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique cluster labels and each row's position among them."""
    values = frame[cluster]
    if values.isna().any():
        raise DataError(f"{where}: {int(values.isna().sum())} row(s) have no {cluster}; "
                        "every patient needs a cluster label (drop or label those rows first).")
    try:
        codes, labels = pd.factorize(values, sort=True)
    except TypeError:
        codes, labels = pd.factorize(values.astype(str), sort=True)
    return np.asarray(labels, dtype=object), np.asarray(codes, dtype=np.int64)


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def _default_name(label, noun: str) -> str:
    """``"site 5"`` for a numeric label; a text label ("Site 05", "NY") as it is."""
    text = str(label)
    return f"{noun} {text}" if re.fullmatch(r"[0-9.+-]+", text) else text


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def _auto_nagq(n_rows: int, nagq: int | None) -> int:
    if nagq is not None:
        return int(nagq)
    return _AGHQ_NODES if n_rows <= AGHQ_MAX_ROWS else 1


def _fmt_level(level: float) -> str:
    return f"{100 * level:.10g}%"


# --------------------------------------------------------------------------
# 1. Wilson interval
# --------------------------------------------------------------------------
def wilson_interval(k, n, level: float = 0.95):
    """Wilson score interval for a binomial proportion ``k / n`` (vectorised).

    Parameters
    ----------
    k, n : array_like
        Successes and trials (broadcast together); ``0 <= k <= n``.
    level : float, default 0.95
        Confidence level.

    Returns
    -------
    lower, upper : float or numpy.ndarray
        Interval limits (NaN where ``n`` is 0). Scalars for scalar input.

    Raises
    ------
    DataError
        ``k`` outside ``[0, n]`` or negative ``n``.

    References
    ----------
    Wilson (1927); Newcombe (1998), method 3.

    Examples
    --------
    >>> lo, hi = wilson_interval(3, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.1078, 0.6032)
    """
    level = _check_level(level)
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    if (n_arr < 0).any() or (k_arr < 0).any() or (k_arr > n_arr).any():
        raise DataError("wilson_interval: need 0 <= k <= n.")
    z = stats.norm.ppf(0.5 + level / 2.0)
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        denom = 1.0 + z2 / n_arr
        centre = (p + z2 / (2.0 * n_arr)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n_arr + z2 / (4.0 * n_arr * n_arr)) / denom
        lower = np.where(k_arr == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
        upper = np.where(k_arr == n_arr, 1.0, np.clip(centre + half, 0.0, 1.0))
    lower = np.where(n_arr > 0, lower, np.nan)
    upper = np.where(n_arr > 0, upper, np.nan)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


# --------------------------------------------------------------------------
# 2-4. Tables by cluster and by variable
# --------------------------------------------------------------------------
def _missing_counts(frame, variables, cluster, where):
    """Rows and missing counts per cluster (m x v), labels and cluster sizes."""
    _check_columns(frame, [cluster, *variables], where)
    labels, codes = _cluster_index(frame, cluster, where)
    m = labels.size
    sizes = np.bincount(codes, minlength=m)
    missing = np.column_stack([
        np.bincount(codes, weights=frame[v].isna().to_numpy(dtype=float), minlength=m)
        for v in variables
    ]).astype(np.int64) if len(variables) else np.zeros((m, 0), dtype=np.int64)
    return labels, sizes, missing


def missingness_by_cluster(frame: pd.DataFrame, variables: Sequence[str], cluster: str, *,
                           level: float = 0.95) -> pd.DataFrame:
    """Missing values per cluster and variable, with Wilson intervals.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    variables : sequence of str
        Variables to count missing values of.
    cluster : str
        Cluster column (no missing labels).
    level : float, default 0.95
        Level of the Wilson interval of the share missing.

    Returns
    -------
    pandas.DataFrame
        One row per variable and cluster (variables in the order given,
        clusters sorted): ``cluster, variable, n, n_missing, n_observed,
        share_missing, ci_lower, ci_upper``.

    Raises
    ------
    DataError
        Unknown columns or rows without a cluster label.
    """
    variables = list(variables)
    labels, sizes, missing = _missing_counts(frame, variables, cluster, "missingness_by_cluster")
    m, v = missing.shape
    n = np.tile(sizes, v)
    k = missing.T.ravel()
    lower, upper = wilson_interval(k, n, level)
    return pd.DataFrame({
        "cluster": np.tile(labels, v),
        "variable": np.repeat(np.array(variables, dtype=object), m),
        "n": n,
        "n_missing": k,
        "n_observed": n - k,
        "share_missing": k / n,
        "ci_lower": lower,
        "ci_upper": upper,
    })


def missingness_overview(frame: pd.DataFrame, variables: Sequence[str], cluster: str, *,
                         level: float = 0.95) -> pd.DataFrame:
    """Missing values per variable, and in how many clusters.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str
    level : float, default 0.95

    Returns
    -------
    pandas.DataFrame
        One row per variable, in the order given: ``variable, n, n_missing,
        n_observed, share_missing, ci_lower, ci_upper, n_clusters,
        n_clusters_any_missing, n_clusters_all_missing``.
    """
    variables = list(variables)
    labels, sizes, missing = _missing_counts(frame, variables, cluster, "missingness_overview")
    n_total = int(sizes.sum())
    k = missing.sum(axis=0)
    lower, upper = wilson_interval(k, np.full(k.shape, n_total), level)
    return pd.DataFrame({
        "variable": variables,
        "n": np.full(len(variables), n_total, dtype=np.int64),
        "n_missing": k,
        "n_observed": n_total - k,
        "share_missing": k / n_total if n_total else np.full(len(variables), np.nan),
        "ci_lower": lower,
        "ci_upper": upper,
        "n_clusters": np.full(len(variables), labels.size, dtype=np.int64),
        "n_clusters_any_missing": (missing > 0).sum(axis=0),
        "n_clusters_all_missing": (missing == sizes[:, None]).sum(axis=0),
    })


def missingness_heatmap_table(frame: pd.DataFrame, variables: Sequence[str], cluster: str) -> pd.DataFrame:
    """Share missing, clusters x variables, for a heatmap.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str

    Returns
    -------
    pandas.DataFrame
        Index: cluster labels (named after ``cluster``), ordered by overall
        missingness over the variables (missing cells / (n x variables)),
        most missing first, ties by label; columns: the variables.
    """
    variables = list(variables)
    labels, sizes, missing = _missing_counts(frame, variables, cluster, "missingness_heatmap_table")
    share = missing / sizes[:, None]
    overall = missing.sum(axis=1) / (sizes * max(len(variables), 1))
    order = np.lexsort((np.arange(labels.size), -overall))
    table = pd.DataFrame(share[order], index=pd.Index(labels[order], name=cluster), columns=variables)
    return table


# --------------------------------------------------------------------------
# 5. Funnel plot
# --------------------------------------------------------------------------
def binomial_control_limits(p0: float, n, level: float):
    """Exact binomial funnel limits for a proportion, interpolated (Spiegelhalter 2005).

    Parameters
    ----------
    p0 : float
        Target (pooled) proportion.
    n : array_like
        Cluster sizes (>= 1).
    level : float
        Two-sided coverage, e.g. 0.95 or 0.998.

    Returns
    -------
    lower, upper : numpy.ndarray
        Limits on the proportion scale.

    Examples
    --------
    >>> lo, hi = binomial_control_limits(0.5, [100], 0.95)
    >>> bool(0.39 < lo[0] < 0.41 and 0.59 < hi[0] < 0.61)
    True
    """
    level = _check_level(level)
    n = np.asarray(n, dtype=float)
    if (n < 1).any():
        raise DataError("binomial_control_limits: cluster sizes must be >= 1.")
    if not 0.0 <= p0 <= 1.0:
        raise DataError(f"binomial_control_limits: p0 must be in [0, 1], got {p0}.")

    def limit(q):
        r = stats.binom.ppf(q, n, p0)
        f_r = stats.binom.cdf(r, n, p0)
        f_below = stats.binom.cdf(r - 1, n, p0)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(f_r > f_below, (f_r - q) / (f_r - f_below), 0.0)
        return np.clip((r - a) / n, 0.0, 1.0)

    tail = (1.0 - level) / 2.0
    return limit(tail), limit(1.0 - tail)


@dataclass(frozen=True)
class FunnelResult:
    """Funnel-plot data for one variable.

    Attributes
    ----------
    variable : str
    overall_rate : float
        Pooled share missing (the funnel's centre line).
    n_total, n_missing_total : int
    levels : tuple of float
        Coverages of the control limits, inner first.
    method : str
        How the limits were computed.
    table : pandas.DataFrame
        One row per cluster: ``cluster, n, n_missing, rate``, for each level
        ``lower_<pct>, upper_<pct>`` (e.g. ``lower_95``, ``upper_99.8``) and
        ``position`` (``"above 99.8%"``, ``"above 95%"``, ``"within 95%"``,
        ``"below 95%"``, ``"below 99.8%"``).
    curve : pandas.DataFrame
        The limits over a grid of sizes, for drawing: ``n`` and the same
        ``lower_*``/``upper_*`` columns.
    above, below : tuple
        Clusters beyond the outermost limit, most extreme first.
    """

    variable: str
    overall_rate: float
    n_total: int
    n_missing_total: int
    levels: tuple
    method: str
    table: pd.DataFrame
    curve: pd.DataFrame
    above: tuple
    below: tuple

    @property
    def outer_level(self) -> float:
        return max(self.levels)


def _level_tag(level: float) -> str:
    return f"{100 * level:.10g}"


def missingness_funnel(frame: pd.DataFrame, variable: str, cluster: str, *,
                       levels: Sequence[float] = (0.95, 0.998)) -> FunnelResult:
    """Cluster missing rates against cluster size, with binomial control limits.

    Parameters
    ----------
    frame : pandas.DataFrame
    variable : str
    cluster : str
    levels : sequence of float, default (0.95, 0.998)
        Coverages of the control limits. The outermost defines outliers.

    Returns
    -------
    FunnelResult

    Notes
    -----
    Exact binomial limits with interpolation (Spiegelhalter 2005) around the
    pooled rate; no overdispersion adjustment (see the module docstring).
    """
    levels = tuple(sorted(_check_level(lv) for lv in levels))
    if not levels:
        raise ParamsError("missingness_funnel: give at least one level.")
    labels, sizes, missing = _missing_counts(frame, [variable], cluster, "missingness_funnel")
    k = missing[:, 0]
    n_total = int(sizes.sum())
    p0 = float(k.sum() / n_total)
    rate = k / sizes
    table = pd.DataFrame({"cluster": labels, "n": sizes, "n_missing": k, "rate": rate})
    grid = np.unique(np.round(np.geomspace(1, max(int(sizes.max()), 2) * 1.05, 300)).astype(int))
    curve = pd.DataFrame({"n": grid})
    position = np.full(labels.size, f"within {_fmt_level(levels[0])}", dtype=object)
    eps = 1e-12
    for level in levels:
        tag = _level_tag(level)
        lo, hi = binomial_control_limits(p0, sizes, level)
        table[f"lower_{tag}"] = lo
        table[f"upper_{tag}"] = hi
        glo, ghi = binomial_control_limits(p0, grid, level)
        curve[f"lower_{tag}"] = glo
        curve[f"upper_{tag}"] = ghi
        # later (wider) levels overwrite: a cluster is placed by its most extreme limit
        position = np.where(rate > hi + eps, f"above {_fmt_level(level)}", position)
        position = np.where(rate < lo - eps, f"below {_fmt_level(level)}", position)
    table["position"] = position
    outer = _fmt_level(levels[-1])
    distance = rate - p0
    above_idx = [i for i in np.argsort(-distance, kind="stable") if position[i] == f"above {outer}"]
    below_idx = [i for i in np.argsort(distance, kind="stable") if position[i] == f"below {outer}"]
    return FunnelResult(
        variable=variable, overall_rate=p0, n_total=n_total, n_missing_total=int(k.sum()),
        levels=levels,
        method="exact binomial limits around the pooled rate, interpolated (Spiegelhalter 2005)",
        table=table, curve=curve,
        above=tuple(labels[i] for i in above_idx), below=tuple(labels[i] for i in below_idx),
    )


# --------------------------------------------------------------------------
# Design helpers for the models of the missingness indicator
# --------------------------------------------------------------------------
def _categorical_levels(series: pd.Series) -> list[str]:
    return sorted(series.dropna().astype(str).unique().tolist())


def _plain_design(frame: pd.DataFrame, covariates: Sequence[str], rows: np.ndarray):
    """Intercept, numeric covariates as they are, categorical ones treatment-coded."""
    columns = [np.ones(int(rows.sum()))]
    names = ["Intercept"]
    notes = []
    for col in covariates:
        series = frame[col]
        if _is_numeric(series):
            columns.append(series.to_numpy(dtype=float)[rows])
            names.append(col)
        else:
            values = series.astype(str).to_numpy()[rows]
            for level in _categorical_levels(series)[1:]:
                columns.append((values == level).astype(float))
                names.append(f"{col}[{level}]")
    X = np.column_stack(columns)
    X, names, dropped = _drop_constant_columns(X, names)
    notes.extend(f"{name} is constant in the rows used and was left out" for name in dropped)
    return X, names, notes


def _drop_constant_columns(X: np.ndarray, names: list[str]):
    keep = [0]
    dropped = []
    for j in range(1, X.shape[1]):
        if X.shape[0] and np.ptp(X[:, j]) > 0:
            keep.append(j)
        else:
            dropped.append(names[j])
    return X[:, keep], [names[j] for j in keep], dropped


def _complete_rows(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    rows = np.ones(len(frame), dtype=bool)
    for col in columns:
        rows &= frame[col].notna().to_numpy()
    return rows


# --------------------------------------------------------------------------
# 6. Between-cluster variation of missingness
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterVariationResult:
    """How much the missingness of one variable varies between clusters.

    Attributes
    ----------
    variable : str
    covariates : tuple of str
        Covariates adjusted for (empty: intercept-only model).
    terms : tuple of str
        Fixed-effect terms of the model.
    n_used, n_dropped : int or None
        Patients in the model, and left out for a missing covariate (None in
        a published result where the number would reveal a suppressed count).
    n_clusters : int
    n_missing : int
        Patients with the variable missing among those used.
    cluster_sd : float
        SD of the cluster intercepts on the logit scale.
    cluster_sd_ci : tuple of float
        Wald interval on the log-SD scale (NaN when the SD is 0).
    icc : float
        Latent-scale ICC, ``sd^2 / (sd^2 + pi^2 / 3)``.
    lrt_statistic, p_value : float
        Likelihood-ratio test of no cluster effect (50:50 chi2_0/chi2_1).
    df : int
    loglik, loglik_without : float
    nagq : int
        1 = Laplace, 10 = adaptive Gauss-Hermite with 10 nodes.
    method : str
    converged : bool
    fit : hmlib.stats.mixed.RandomInterceptFit
        The fitted model (holds cluster sizes: do not publish it as is).
    """

    variable: str
    covariates: tuple
    terms: tuple
    n_used: int | None
    n_dropped: int | None
    n_clusters: int
    n_missing: int | None
    cluster_sd: float
    cluster_sd_ci: tuple
    icc: float
    lrt_statistic: float
    p_value: float
    df: int
    loglik: float
    loglik_without: float
    nagq: int
    method: str
    converged: bool
    fit: object = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """Aggregated numbers (JSON-ready); no per-cluster values."""
        coef = self.fit.to_frame()
        return {
            "variable": self.variable, "covariates": list(self.covariates),
            "n_used": self.n_used, "n_dropped": self.n_dropped, "n_clusters": self.n_clusters,
            "cluster_sd": self.cluster_sd, "cluster_sd_ci": list(self.cluster_sd_ci),
            "icc_latent": self.icc, "lrt_statistic": self.lrt_statistic, "p_value": self.p_value,
            "df": self.df, "loglik": self.loglik, "loglik_without": self.loglik_without,
            "nagq": self.nagq, "method": self.method, "converged": self.converged,
            "fixed_effects": coef.iloc[:-1].to_dict(orient="records"),
        }


def missingness_cluster_variation(frame: pd.DataFrame, variable: str, cluster: str,
                                  covariates: Sequence[str] = (), *, nagq: int | None = None,
                                  level: float = 0.95) -> ClusterVariationResult:
    """Random-intercept logistic model of a missingness indicator, and the LRT of its SD.

    Parameters
    ----------
    frame : pandas.DataFrame
    variable : str
        Variable whose missingness indicator is modelled.
    cluster : str
    covariates : sequence of str, optional
        Covariates (entered as they are; categorical ones treatment-coded).
        Patients with a covariate missing are left out (``n_dropped``).
    nagq : int, optional
        Quadrature nodes; default 10 up to ``AGHQ_MAX_ROWS`` rows, else 1
        (Laplace).
    level : float, default 0.95
        Level of the interval of the cluster SD.

    Returns
    -------
    ClusterVariationResult

    Raises
    ------
    FitError
        The indicator is constant in the rows used (nothing or everything
        missing), fewer than 2 clusters, or the fit fails.
    """
    from hmlib.stats.mixed import fit_random_intercept, test_cluster_variance

    covariates = [c for c in covariates if c != variable]
    _check_columns(frame, [variable, cluster, *covariates], "missingness_cluster_variation")
    _cluster_index(frame, cluster, "missingness_cluster_variation")
    rows = _complete_rows(frame, covariates)
    y = frame[variable].isna().to_numpy(dtype=float)[rows]
    if y.size == 0:
        raise FitError(f"no patient has all of {', '.join(covariates)} recorded.")
    if y.min() == y.max():
        state = "missing" if y[0] else "recorded"
        raise FitError(f"{variable} is {state} for every patient used; its missingness cannot be modelled.")
    X, names, _ = _plain_design(frame, covariates, rows)
    groups = frame[cluster].to_numpy()[rows]
    q = _auto_nagq(y.size, nagq)
    fit = fit_random_intercept(y, X, groups, family="binomial", nagq=q, term_names=names,
                               cluster_name=cluster)
    test = test_cluster_variance(y, X, groups, family="binomial", nagq=q)
    sd_row = fit.to_frame(level).iloc[-1]
    return ClusterVariationResult(
        variable=variable, covariates=tuple(covariates), terms=tuple(names),
        n_used=int(y.size), n_dropped=int(len(frame) - y.size), n_clusters=int(fit.n_clusters),
        n_missing=int(y.sum()), cluster_sd=float(fit.cluster_sd),
        cluster_sd_ci=(float(sd_row["ci_lower"]), float(sd_row["ci_upper"])),
        icc=float(fit.icc), lrt_statistic=float(test.statistic), p_value=float(test.p_value),
        df=int(test.df), loglik=float(fit.loglik), loglik_without=float(test.loglik_without),
        nagq=q, method=fit.method, converged=bool(fit.converged), fit=fit,
    )


# --------------------------------------------------------------------------
# 7. Which covariates predict missingness, within and between clusters
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class MissingnessPredictorsResult:
    """Odds ratios of missingness per SD of each covariate, within and between clusters.

    Attributes
    ----------
    variable : str
    covariates : tuple of str
    table : pandas.DataFrame
        One row per term: ``covariate, component`` (``"within"``,
        ``"between"`` or ``"level"``), ``term, scale_sd`` (the SD one unit of
        the term stands for; NaN for levels), ``log_odds_ratio, std_error,
        odds_ratio, ci_lower, ci_upper, p_value``.
    n_used, n_dropped : int or None
        Patients in the model; left out because a covariate was missing
        (None in a published result when from 1 to ``min_cell - 1``).
    dropped_by_covariate : dict
        ``{covariate: patients with it missing}`` (they overlap; None in a
        published result where the overview suppresses that count).
    n_clusters : int
    cluster_sd : float
        Cluster SD of the indicator after adjustment.
    nagq : int
    notes : tuple of str
        Terms left out and why (no within-cluster variation, ...).
    fit : hmlib.stats.mixed.RandomInterceptFit
    """

    variable: str
    covariates: tuple
    table: pd.DataFrame
    n_used: int | None
    n_dropped: int | None
    dropped_by_covariate: dict
    n_clusters: int
    cluster_sd: float
    nagq: int
    notes: tuple
    fit: object = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "variable": self.variable, "covariates": list(self.covariates),
            "table": self.table.to_dict(orient="records"), "n_used": self.n_used,
            "n_dropped": self.n_dropped, "dropped_by_covariate": dict(self.dropped_by_covariate),
            "n_clusters": self.n_clusters, "cluster_sd": self.cluster_sd, "nagq": self.nagq,
            "notes": list(self.notes),
        }


def missingness_predictors(frame: pd.DataFrame, variable: str, cluster: str,
                           covariates: Sequence[str], *, nagq: int | None = None,
                           level: float = 0.95) -> MissingnessPredictorsResult:
    """Which observed covariates predict that ``variable`` is missing, within and between clusters.

    Each numeric covariate is split into its cluster mean and the
    within-cluster deviation, both standardised (module docstring);
    categorical covariates are treatment-coded. All enter one
    random-intercept logistic model of the missingness indicator.

    Parameters
    ----------
    frame : pandas.DataFrame
    variable : str
    cluster : str
    covariates : sequence of str
        ``variable`` itself is skipped if listed.
    nagq : int, optional
        As :func:`missingness_cluster_variation`.
    level : float, default 0.95

    Returns
    -------
    MissingnessPredictorsResult

    Raises
    ------
    FitError
        No covariate left, constant indicator in the rows used, or the fit
        fails (e.g. collinear terms, which are named).

    Notes
    -----
    Patients with any covariate missing are left out of the model (listwise);
    their number is reported overall and per covariate. Cluster means are
    computed over every patient of the cluster with the covariate recorded.
    """
    from hmlib.stats.mixed import fit_random_intercept

    level = _check_level(level)
    covariates = [c for c in covariates if c != variable]
    _check_columns(frame, [variable, cluster, *covariates], "missingness_predictors")
    if not covariates:
        raise FitError(f"no covariate to relate the missingness of {variable} to.")
    labels, codes = _cluster_index(frame, cluster, "missingness_predictors")
    m = labels.size
    rows = _complete_rows(frame, covariates)
    dropped_by = {c: int(frame[c].isna().sum()) for c in covariates}
    y = frame[variable].isna().to_numpy(dtype=float)[rows]
    if y.size == 0:
        raise FitError(f"no patient has all of {', '.join(covariates)} recorded.")
    if y.min() == y.max():
        state = "missing" if y[0] else "recorded"
        raise FitError(f"{variable} is {state} for every patient with the covariates recorded.")

    columns = [np.ones(int(rows.sum()))]
    names = ["Intercept"]
    meta = [("", "", np.nan)]
    notes = []
    for col in covariates:
        series = frame[col]
        if _is_numeric(series):
            x = series.to_numpy(dtype=float)
            observed = ~np.isnan(x)
            counts = np.bincount(codes[observed], minlength=m)
            sums = np.bincount(codes[observed], weights=x[observed], minlength=m)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = sums / counts
            cluster_means = means[counts > 0]
            between = means[codes]
            within = x - between
            sd_between = float(np.std(cluster_means, ddof=1)) if cluster_means.size > 1 else 0.0
            sd_within = float(np.std(within[observed], ddof=1)) if observed.sum() > 1 else 0.0
            scale = max(float(np.nanmax(np.abs(x))) if observed.any() else 0.0, 1.0)
            if sd_within > 1e-10 * scale:
                columns.append(within[rows] / sd_within)
                names.append(f"{col} (within)")
                meta.append((col, "within", sd_within))
            else:
                notes.append(f"{col} does not vary within clusters: no within-cluster term")
            if sd_between > 1e-10 * scale:
                columns.append((between[rows] - cluster_means.mean()) / sd_between)
                names.append(f"{col} (between)")
                meta.append((col, "between", sd_between))
            else:
                notes.append(f"{col} has the same mean in every cluster: no between-cluster term")
        else:
            values = series.astype(str).to_numpy()[rows]
            for lv in _categorical_levels(series)[1:]:
                columns.append((values == lv).astype(float))
                names.append(f"{col}[{lv}]")
                meta.append((col, "level", np.nan))
    X = np.column_stack(columns)
    keep = [0] + [j for j in range(1, X.shape[1]) if np.ptp(X[:, j]) > 0]
    for j in range(1, X.shape[1]):
        if j not in keep:
            notes.append(f"{names[j]} is constant in the rows used and was left out")
    X = X[:, keep]
    names = [names[j] for j in keep]
    meta = [meta[j] for j in keep]
    if X.shape[1] == 1:
        raise FitError(f"none of {', '.join(covariates)} varies in the rows used.")
    groups = frame[cluster].to_numpy()[rows]
    q = _auto_nagq(y.size, nagq)
    fit = fit_random_intercept(y, X, groups, family="binomial", nagq=q, term_names=names,
                               cluster_name=cluster)
    z = stats.norm.ppf(0.5 + level / 2.0)
    coef = np.asarray(fit.coef)[1:]
    se = np.asarray(fit.std_error)[1:]
    table = pd.DataFrame({
        "covariate": [mt[0] for mt in meta[1:]],
        "component": [mt[1] for mt in meta[1:]],
        "term": names[1:],
        "scale_sd": [mt[2] for mt in meta[1:]],
        "log_odds_ratio": coef,
        "std_error": se,
        "odds_ratio": np.exp(coef),
        "ci_lower": np.exp(coef - z * se),
        "ci_upper": np.exp(coef + z * se),
        "p_value": 2.0 * stats.norm.sf(np.abs(coef / se)),
    })
    return MissingnessPredictorsResult(
        variable=variable, covariates=tuple(covariates), table=table, n_used=int(y.size),
        n_dropped=int(len(frame) - y.size), dropped_by_covariate=dropped_by,
        n_clusters=int(fit.n_clusters), cluster_sd=float(fit.cluster_sd), nagq=q,
        notes=tuple(notes), fit=fit,
    )


# --------------------------------------------------------------------------
# 8. Structural versus sporadic gaps
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class GapResult:
    """Complete, sporadic and structural gaps per cluster and variable.

    Attributes
    ----------
    table : pandas.DataFrame
        ``cluster, variable, n, n_missing, share_missing, gap_type``.
    summary : pandas.DataFrame
        One row per variable: ``variable, n_clusters, n_complete,
        n_sporadic, n_structural, structural_clusters`` (tuple of labels),
        ``n_missing, n_missing_structural, share_of_missing_structural``.
    structural_share : float
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    structural_share: float


def classify_gaps(frame: pd.DataFrame, variables: Sequence[str], cluster: str, *,
                  structural_share: float = 0.9) -> GapResult:
    """Classify each cluster's gap in each variable as complete, sporadic or structural.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str
    structural_share : float, default 0.9
        A cluster's gap is *structural* when the variable is missing for every
        patient of the cluster, or when its share missing is above this value
        (strictly). *Complete*: nothing missing. Otherwise *sporadic*.

    Returns
    -------
    GapResult
    """
    if not 0.0 <= float(structural_share) <= 1.0:
        raise ParamsError(f"structural_share must be between 0 and 1, got {structural_share!r}.")
    variables = list(variables)
    labels, sizes, missing = _missing_counts(frame, variables, cluster, "classify_gaps")
    share = missing / sizes[:, None]
    structural = (missing == sizes[:, None]) | (share > structural_share)
    gap = np.where(missing == 0, "complete", np.where(structural, "structural", "sporadic"))
    m, v = missing.shape
    table = pd.DataFrame({
        "cluster": np.tile(labels, v),
        "variable": np.repeat(np.array(variables, dtype=object), m),
        "n": np.tile(sizes, v),
        "n_missing": missing.T.ravel(),
        "share_missing": share.T.ravel(),
        "gap_type": gap.T.ravel(),
    })
    rows = []
    for j, var in enumerate(variables):
        is_structural = gap[:, j] == "structural"
        total = int(missing[:, j].sum())
        in_structural = int(missing[is_structural, j].sum())
        rows.append({
            "variable": var,
            "n_clusters": m,
            "n_complete": int((gap[:, j] == "complete").sum()),
            "n_sporadic": int((gap[:, j] == "sporadic").sum()),
            "n_structural": int(is_structural.sum()),
            "structural_clusters": tuple(labels[is_structural]),
            "n_missing": total,
            "n_missing_structural": in_structural,
            "share_of_missing_structural": in_structural / total if total else np.nan,
        })
    return GapResult(table=table, summary=pd.DataFrame(rows), structural_share=float(structural_share))


# --------------------------------------------------------------------------
# 9. Missing-data patterns
# --------------------------------------------------------------------------
def missingness_patterns(frame: pd.DataFrame, variables: Sequence[str], *, min_cell: int = 11) -> pd.DataFrame:
    """Counts of each pattern of missing values, small patterns pooled.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    min_cell : int, default 11
        Patterns of fewer patients are pooled into
        ``"other patterns (each < min_cell)"``; if that pool has from 1 to
        ``min_cell - 1`` patients, the next smallest patterns join it.

    Returns
    -------
    pandas.DataFrame
        ``pattern, n_missing_variables, n_patterns, count, share``, sorted by
        count (the pooled row last). ``pattern`` lists the missing variables
        in the order given, or is ``"complete"``; ``n_patterns`` is 1 except
        for the pooled row; ``n_missing_variables`` is NaN for the pooled row.
    """
    variables = list(variables)
    _check_columns(frame, variables, "missingness_patterns")
    if not isinstance(min_cell, (int, np.integer)) or min_cell < 1:
        raise ParamsError(f"min_cell must be a whole number >= 1, got {min_cell!r}.")
    n_total = len(frame)
    columns = ["pattern", "n_missing_variables", "n_patterns", "count", "share"]
    if n_total == 0:
        return pd.DataFrame({c: [] for c in columns})
    if variables:
        isna = frame[variables].isna().to_numpy()
        # rows -> pattern codes without Python loops over patients
        uniq, inverse = np.unique(isna, axis=0, return_inverse=True)
        counts = np.bincount(inverse.ravel(), minlength=uniq.shape[0])
    else:
        uniq = np.zeros((1, 0), dtype=bool)
        counts = np.array([n_total])
    names = [", ".join(v for v, miss in zip(variables, row) if miss) or "complete" for row in uniq]
    table = pd.DataFrame({"pattern": names, "n_missing_variables": uniq.sum(axis=1).astype(float),
                          "n_patterns": 1, "count": counts})
    table = table.sort_values(["count", "pattern"], ascending=[False, True], kind="stable")
    small = table["count"] < min_cell
    # pool the smallest published patterns too while the pool itself is a small cell
    while 0 < table.loc[small, "count"].sum() < min_cell and (~small).any():
        smallest = table.loc[~small, "count"].idxmin()
        small.loc[smallest] = True
    published = table.loc[~small].copy()
    if small.any():
        pooled = pd.DataFrame({
            "pattern": [f"other patterns (each < {min_cell})"],
            "n_missing_variables": [np.nan],
            "n_patterns": [int(small.sum())],
            "count": [int(table.loc[small, "count"].sum())],
        })
        published = pd.concat([published, pooled], ignore_index=True)
    published = published.reset_index(drop=True)
    published["count"] = published["count"].astype(np.int64)
    published["n_patterns"] = published["n_patterns"].astype(np.int64)
    published["share"] = published["count"] / n_total
    return published[columns]


# --------------------------------------------------------------------------
# 10. Missingness propensity versus outcome cluster effects
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class OutcomeCorrelationResult:
    """Correlation over clusters of missingness propensity and outcome level.

    Attributes
    ----------
    variable, outcome, outcome_family : str
    predictors_used : tuple of str
        Fully observed predictors in the outcome model.
    missingness_covariates : tuple of str
        Covariates of the missingness model.
    n_clusters : int
        Clusters in both models.
    pearson, pearson_ci, pearson_p : float, tuple, float
    spearman, spearman_ci, spearman_p : float, tuple, float
    level : float
    effects : pandas.DataFrame
        ``cluster, missingness_effect, outcome_effect`` (conditional modes,
        one row per cluster; no counts).
    outcome_cluster_sd, missingness_cluster_sd : float
    caveat : str
    """

    variable: str
    outcome: str
    outcome_family: str
    predictors_used: tuple
    missingness_covariates: tuple
    n_clusters: int
    pearson: float
    pearson_ci: tuple
    pearson_p: float
    spearman: float
    spearman_ci: tuple
    spearman_p: float
    level: float
    effects: pd.DataFrame
    outcome_cluster_sd: float
    missingness_cluster_sd: float
    caveat: str = _EB_CAVEAT

    def to_dict(self) -> dict:
        """Aggregated numbers (JSON-ready); the per-cluster ``effects`` are left out."""
        out = {k: getattr(self, k) for k in (
            "variable", "outcome", "outcome_family", "n_clusters", "pearson", "pearson_p",
            "spearman", "spearman_p", "level", "outcome_cluster_sd", "missingness_cluster_sd",
            "caveat")}
        out.update(predictors_used=list(self.predictors_used),
                   missingness_covariates=list(self.missingness_covariates),
                   pearson_ci=list(self.pearson_ci), spearman_ci=list(self.spearman_ci))
        return out


def _fisher_ci(r: float, m: int, level: float, variance_factor: float = 1.0) -> tuple:
    if m <= 3 or not np.isfinite(r):
        return (np.nan, np.nan)
    z = stats.norm.ppf(0.5 + level / 2.0)
    centre = np.arctanh(np.clip(r, -0.9999999, 0.9999999))
    half = z * np.sqrt(variance_factor / (m - 3))
    return (float(np.tanh(centre - half)), float(np.tanh(centre + half)))


def missingness_outcome_correlation(frame: pd.DataFrame, variable: str, cluster: str, outcome: str,
                                    outcome_family: str, predictors: Sequence[str], *,
                                    missingness_fit=None, nagq: int | None = None,
                                    level: float = 0.95) -> OutcomeCorrelationResult:
    """Do clusters that miss ``variable`` more often differ in their outcome level?

    Parameters
    ----------
    frame : pandas.DataFrame
    variable : str
        The focus variable (its missingness indicator).
    cluster, outcome : str
    outcome_family : {"gaussian", "binomial"}
    predictors : sequence of str
        Candidate predictors; only those recorded for every patient enter the
        outcome model (and, when no ``missingness_fit`` is given, the
        missingness model).
    missingness_fit : ClusterVariationResult, optional
        A fitted missingness model of ``variable`` to reuse.
    nagq : int, optional
        As :func:`missingness_cluster_variation` (binomial outcome too).
    level : float, default 0.95

    Returns
    -------
    OutcomeCorrelationResult

    Raises
    ------
    FitError
        A model cannot be fitted, or fewer than 3 clusters in common.
    """
    from hmlib.stats.mixed import fit_random_intercept

    level = _check_level(level)
    if outcome_family not in ("gaussian", "binomial"):
        raise ParamsError(f"outcome_family must be 'gaussian' or 'binomial', got {outcome_family!r}.")
    predictors = list(predictors)
    _check_columns(frame, [variable, cluster, outcome, *predictors], "missingness_outcome_correlation")
    complete = [p for p in predictors if p not in (variable, outcome) and not frame[p].isna().any()]
    if missingness_fit is None:
        missingness_fit = missingness_cluster_variation(frame, variable, cluster, complete, nagq=nagq)
    rows = frame[outcome].notna().to_numpy()
    try:
        y = frame[outcome].to_numpy(dtype=float)[rows]
    except (TypeError, ValueError) as err:
        raise DataError(f"outcome {outcome} must be numeric (0/1 for binomial).") from err
    X, names, _ = _plain_design(frame, complete, rows)
    groups = frame[cluster].to_numpy()[rows]
    q = 1 if outcome_family == "gaussian" else _auto_nagq(y.size, nagq)
    outcome_fit = fit_random_intercept(y, X, groups, family=outcome_family, nagq=q, term_names=names,
                                       cluster_name=cluster)
    mfit = missingness_fit.fit
    miss_effects = pd.Series(np.asarray(mfit.cluster_effects), index=pd.Index(mfit.cluster_labels))
    out_effects = pd.Series(np.asarray(outcome_fit.cluster_effects), index=pd.Index(outcome_fit.cluster_labels))
    common = [c for c in mfit.cluster_labels if c in out_effects.index]
    if len(common) < 3:
        raise FitError(f"only {len(common)} cluster(s) in both models; need at least 3 to correlate.")
    a = miss_effects.loc[common].to_numpy(float)
    b = out_effects.loc[common].to_numpy(float)
    m = len(common)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        pearson = spearman = pearson_p = spearman_p = np.nan
    else:
        pearson, pearson_p = stats.pearsonr(a, b)
        spearman, spearman_p = stats.spearmanr(a, b)
    return OutcomeCorrelationResult(
        variable=variable, outcome=outcome, outcome_family=outcome_family,
        predictors_used=tuple(complete), missingness_covariates=tuple(missingness_fit.covariates),
        n_clusters=m, pearson=float(pearson), pearson_ci=_fisher_ci(float(pearson), m, level),
        pearson_p=float(pearson_p), spearman=float(spearman),
        spearman_ci=_fisher_ci(float(spearman), m, level, 1.06), spearman_p=float(spearman_p),
        level=level,
        effects=pd.DataFrame({"cluster": common, "missingness_effect": a, "outcome_effect": b}),
        outcome_cluster_sd=float(outcome_fit.cluster_sd),
        missingness_cluster_sd=float(mfit.cluster_sd),
    )


# --------------------------------------------------------------------------
# 11. Everything together, with suppression and narrative
# --------------------------------------------------------------------------
def _fmt_int(n) -> str:
    return f"{int(n):,}"


def _fmt_pct(x: float) -> str:
    if x > 0 and x < 0.001:
        return "<0.1%"
    return f"{100 * x:.1f}%"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "p not available"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _fmt_num(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _name_list(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    if len(names) <= limit:
        if len(names) <= 1:
            return "".join(names)
        return ", ".join(names[:-1]) + " and " + names[-1]
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


@dataclass(frozen=True)
class DiagnoseResult:
    """Everything step 1 found, ready to publish (small cells suppressed).

    Per-cluster tables name clusters by their display names
    (``cluster_names``) and hold NaN for suppressed counts and the values
    derived from them; :meth:`to_dict` and :meth:`narrative` use only these.

    Attributes
    ----------
    cluster, outcome, outcome_family : str
    predictors : tuple of str
    focus : str or None
        The focus variable (None when it has no missing values).
    min_cell : int
    structural_share, level : float
    cluster_noun : str
        Word for a cluster in the narrative ("site", "school").
    n_patients, n_clusters : int
    variables : tuple of str
        Outcome and predictors.
    incomplete : tuple of str
        Those with at least one missing value (order of ``variables``).
    overview : SuppressedTable
        :func:`missingness_overview` of all variables, suppressed.
    by_cluster : SuppressedTable
        :func:`missingness_by_cluster` of the incomplete variables joined
        with the gap type and funnel position; ``cluster`` holds display names.
    heatmap : pandas.DataFrame
        Share missing, clusters (display names) x incomplete variables, NaN
        where the share is suppressed; ordered by the mean of the published
        shares (most missing first; clusters with every share suppressed
        last), so the order does not bound a suppressed share.
    gap_summary : pandas.DataFrame
        :class:`GapResult` summary with display names; ``n_missing_structural``
        is NaN when it would reveal a suppressed count.
    patterns : pandas.DataFrame
        :func:`missingness_patterns` (small patterns pooled).
    funnels : dict of str to FunnelResult
        Tables use display names and NaN for suppressed counts and rates.
    variation : dict of str to ClusterVariationResult
        Intercept-only missingness models.
    variation_sporadic : dict of str to ClusterVariationResult
        The same, for variables with structural gaps, fitted without the
        clusters that have them (how much the remaining clusters vary).
    focus_variation : ClusterVariationResult or None
        Missingness model of the focus variable adjusted for the fully
        observed predictors.
    predictor_models : dict of str to MissingnessPredictorsResult
    outcome_correlation : OutcomeCorrelationResult or None
        Its ``effects`` table (display names) is not published by
        :meth:`to_dict`: with an intercept-only missingness model, a
        cluster's conditional mode and size give back its missing count.
    cluster_names : dict
        Label -> display name.
    notes : tuple of str
        Analyses skipped, and why.
    """

    cluster: str
    outcome: str
    outcome_family: str
    predictors: tuple
    focus: str | None
    min_cell: int
    structural_share: float
    level: float
    cluster_noun: str
    n_patients: int
    n_clusters: int
    variables: tuple
    incomplete: tuple
    overview: SuppressedTable
    by_cluster: SuppressedTable | None
    heatmap: pd.DataFrame
    gap_summary: pd.DataFrame
    patterns: pd.DataFrame
    funnels: dict
    variation: dict
    variation_sporadic: dict
    focus_variation: ClusterVariationResult | None
    predictor_models: dict
    outcome_correlation: OutcomeCorrelationResult | None
    cluster_names: dict = field(repr=False)
    notes: tuple = ()

    def correlation_text(self) -> str:
        """The correlation of missingness with the outcome's cluster effects, as one paragraph."""
        oc = self.outcome_correlation
        if oc is None:
            return "Not estimated: " + ("; ".join(self.notes) or "the focus variable is complete.")
        return (f"Spearman correlation {oc.spearman:.2f} (p = {oc.spearman_p:.3g}), Pearson "
                f"{oc.pearson:.2f} (95% CI {oc.pearson_ci[0]:.2f} to {oc.pearson_ci[1]:.2f}) over "
                f"{oc.n_clusters} clusters. {oc.caveat}")

    # ---------------------------------------------------------------- tables
    def variation_table(self) -> pd.DataFrame:
        """Between-cluster variation of each missingness indicator, one row per model.

        Columns ``variable, model, n_clusters, cluster_sd, sd_ci_lower,
        sd_ci_upper, icc_latent, lrt_statistic, p_value`` (boundary-corrected
        likelihood-ratio test of "no cluster effect").
        """
        rows = []
        models = [("intercept only", self.variation),
                  ("without clusters with structural gaps", self.variation_sporadic)]
        if self.focus_variation is not None:
            models.append(("adjusted for " + ", ".join(self.focus_variation.covariates),
                           {self.focus_variation.variable: self.focus_variation}))
        for label, results in models:
            for var, res in results.items():
                rows.append((var, label, res.n_clusters, res.cluster_sd, res.cluster_sd_ci[0],
                             res.cluster_sd_ci[1], res.icc, res.lrt_statistic, res.p_value))
        return pd.DataFrame(rows, columns=["variable", "model", "n_clusters", "cluster_sd", "sd_ci_lower",
                                           "sd_ci_upper", "icc_latent", "lrt_statistic", "p_value"])

    # ---------------------------------------------------------------- text
    def _plural(self, count: int) -> str:
        return self.cluster_noun if count == 1 else f"{self.cluster_noun}s"

    def _overall_sentence(self, row, mask_row, primary_row) -> str:
        var = row["variable"]
        n = _fmt_int(row["n"])
        if bool(mask_row["n_missing"]):
            if bool(primary_row["n_missing"]):
                head = f"Of {n} patients, fewer than {self.min_cell} have no recorded {var}"
            else:
                head = f"Of {n} patients, all but fewer than {self.min_cell} have no recorded {var}"
        else:
            head = (f"Of {n} patients, {_fmt_int(row['n_missing'])} ({_fmt_pct(row['share_missing'])}) "
                    f"have no recorded {var}")
        summary = self.gap_summary.set_index("variable").loc[var]
        if summary["structural_clusters"] is None:
            return head + (f"; there are too few to break them down by {self.cluster_noun} without "
                           f"revealing counts below {self.min_cell}.")
        n_all = int(summary["n_structural"])
        m = self.n_clusters
        if n_all:
            never = int(self.overview.values.set_index("variable").loc[var, "n_clusters_all_missing"])
            if never == n_all:
                tail = (f"; in {n_all} of {m} {self._plural(m)} it was never recorded "
                        f"(structural gaps: {_name_list(summary['structural_clusters'])})")
            else:
                tail = (f"; {n_all} of {m} {self._plural(m)} have structural gaps (never recorded in "
                        f"{never}, missing for more than {_fmt_pct(self.structural_share)} in the others: "
                        f"{_name_list(summary['structural_clusters'])})")
        else:
            tail = f"; no {self.cluster_noun} has a structural gap"
        any_missing = int(summary["n_sporadic"])
        tail += f", and {any_missing} {self._plural(any_missing)} have sporadic gaps."
        return head + tail

    def _variation_sentence(self, res: ClusterVariationResult) -> str:
        adjusted = f" after adjusting for {_name_list(res.covariates, 20)}" if res.covariates else ""
        numbers = (f"{self.cluster_noun} SD {_fmt_num(res.cluster_sd)} on the logit scale, "
                   f"latent ICC {_fmt_num(res.icc)}, likelihood-ratio test {_fmt_p(res.p_value)}")
        if res.p_value < 0.001 and res.icc >= 0.2:
            verdict = f"varies between {self.cluster_noun}s far more than chance allows"
        elif res.p_value < 0.05:
            verdict = f"varies between {self.cluster_noun}s more than chance allows"
        else:
            verdict = f"shows no clear variation between {self.cluster_noun}s"
        return f"Missingness of {res.variable}{adjusted} {verdict}: {numbers}."

    def _funnel_sentence(self, funnel: FunnelResult) -> str:
        outer = _fmt_level(funnel.outer_level)
        m = len(funnel.table)
        parts = []
        if funnel.above:
            parts.append(f"{len(funnel.above)} lie above it ({_name_list(funnel.above)})")
        if funnel.below:
            parts.append(f"{len(funnel.below)} below it ({_name_list(funnel.below)})")
        if not parts:
            return (f"In the funnel plot of {funnel.variable}, all {m} {self._plural(m)} lie within the "
                    f"{outer} exact binomial limits around the overall rate of "
                    f"{_fmt_pct(funnel.overall_rate)}.")
        return (f"In the funnel plot of {funnel.variable}, against {outer} exact binomial limits around "
                f"the overall rate of {_fmt_pct(funnel.overall_rate)}, of {m} {self._plural(m)} "
                + " and ".join(parts) + ".")

    def _predictors_sentence(self, res: MissingnessPredictorsResult) -> str:
        table = res.table
        clear = table.loc[(table["ci_lower"] > 1) | (table["ci_upper"] < 1)]
        if res.n_dropped is None:
            dropped = (f"; fewer than {self.min_cell} patients with a covariate missing were left out "
                       "of this model")
        elif res.n_dropped:
            dropped = f"; {_fmt_int(res.n_dropped)} patients with a covariate missing were left out of this model"
        else:
            dropped = ""
        if clear.empty:
            return (f"No observed covariate clearly predicts that {res.variable} is missing "
                    f"(all {_fmt_level(self.level)} intervals of the odds ratios include 1){dropped}.")
        bits = []
        for row in clear.itertuples(index=False):
            direction = "more" if row.odds_ratio > 1 else "less"
            ci = f"{_fmt_num(row.ci_lower)}-{_fmt_num(row.ci_upper)}"
            if row.component == "within":
                what = (f"within {self.cluster_noun}s, patients with a higher value of {row.covariate} "
                        f"are {direction} often missing it")
                per = "per SD"
            elif row.component == "between":
                what = (f"between {self.cluster_noun}s, those with a higher mean {row.covariate} "
                        f"miss it {direction} often")
                per = "per SD of the mean"
            else:
                what = f"patients with {row.term} are {direction} often missing it"
                per = "vs the reference level"
            bits.append(f"{what} (odds ratio {per} {_fmt_num(row.odds_ratio)}, {_fmt_level(self.level)} CI {ci})")
        return f"Predictors of missing {res.variable}: " + "; ".join(bits) + dropped + "."

    def _pattern_sentence(self) -> str:
        top = self.patterns.head(3)
        bits = [f"{row.pattern} ({_fmt_int(row.count)}, {_fmt_pct(row.share)})"
                for row in top.itertuples(index=False)]
        n_patterns = int(self.patterns["n_patterns"].sum())
        pooled = self.patterns["n_missing_variables"].isna()
        tail = (f" ({int(self.patterns.loc[pooled, 'n_patterns'].sum())} rare patterns are pooled)"
                if pooled.any() else "")
        lead = "the most common are " if len(self.patterns) > len(top) or pooled.any() else ""
        return (f"Patients fall into {n_patterns} missingness pattern{'s' if n_patterns != 1 else ''}"
                f"{tail}; {lead}" + _name_list(bits, 3) + ".")

    def _correlation_sentence(self) -> list[str]:
        res = self.outcome_correlation
        if res is None or not np.isfinite(res.spearman):
            return []
        lvl = _fmt_level(res.level)
        if res.spearman_ci[0] > 0 or res.spearman_ci[1] < 0:
            direction = "higher" if res.spearman > 0 else "lower"
            lead = (f"{self.cluster_noun.capitalize()}s that miss {res.variable} more often tend to have "
                    f"{direction} {res.outcome} cluster effects")
        else:
            lead = (f"There is no clear link between how often a {self.cluster_noun} misses {res.variable} "
                    f"and its {res.outcome} cluster effect")
        return [
            f"{lead}: Spearman correlation {_fmt_num(res.spearman)} ({lvl} CI {_fmt_num(res.spearman_ci[0])} "
            f"to {_fmt_num(res.spearman_ci[1])}), Pearson {_fmt_num(res.pearson)} ({lvl} CI "
            f"{_fmt_num(res.pearson_ci[0])} to {_fmt_num(res.pearson_ci[1])}) over {res.n_clusters} "
            f"{self._plural(res.n_clusters)}.",
            res.caveat,
        ]

    def narrative(self) -> list[str]:
        """Sentences stating each finding with its numbers (suppressed counts never shown).

        Returns
        -------
        list of str
        """
        m = self.n_clusters
        lines = [f"The extract has {_fmt_int(self.n_patients)} patients in {m} {self._plural(m)}."]
        if not self.incomplete:
            lines.append(f"None of the {len(self.variables)} analysis variables "
                         f"({', '.join(self.variables)}) has a missing value: there are no gaps to diagnose.")
            return lines
        complete = [v for v in self.variables if v not in self.incomplete]
        k, p = len(self.incomplete), len(self.variables)
        if k == p:
            head = f"All {p} analysis variables have missing values ({_name_list(self.incomplete, 20)})."
        else:
            head = (f"{k} of the {p} analysis variables {'has' if k == 1 else 'have'} missing values "
                    f"({_name_list(self.incomplete, 20)}); {_name_list(complete, 20)} "
                    f"{'is' if len(complete) == 1 else 'are'} complete.")
        lines.append(head)
        values = self.overview.values.set_index("variable")
        mask = self.overview.mask.set_axis(self.overview.values["variable"])
        primary = self.overview.primary.set_axis(self.overview.values["variable"])
        for var in self.incomplete:
            lines.append(self._overall_sentence(values.loc[var].rename(None).to_dict() | {"variable": var},
                                                mask.loc[var], primary.loc[var]))
        for var in self.incomplete:
            if var in self.variation:
                lines.append(self._variation_sentence(self.variation[var]))
            if var in self.variation_sporadic:
                res = self.variation_sporadic[var]
                k = int(self.gap_summary.set_index("variable").loc[var, "n_structural"])
                lines.append(
                    f"Leaving out the {k} {self._plural(k)} with structural gaps in {var}, the remaining "
                    f"{res.n_clusters} still differ: {self.cluster_noun} SD {_fmt_num(res.cluster_sd)}, "
                    f"latent ICC {_fmt_num(res.icc)}, likelihood-ratio test {_fmt_p(res.p_value)}."
                    if res.p_value < 0.05 else
                    f"Leaving out the {k} {self._plural(k)} with structural gaps in {var}, the remaining "
                    f"{res.n_clusters} show no clear variation ({self.cluster_noun} SD "
                    f"{_fmt_num(res.cluster_sd)}, latent ICC {_fmt_num(res.icc)}, {_fmt_p(res.p_value)}).")
        if self.focus_variation is not None:
            lines.append(self._variation_sentence(self.focus_variation))
        for var in self.incomplete:
            if var in self.funnels:
                lines.append(self._funnel_sentence(self.funnels[var]))
        for var in self.incomplete:
            if var in self.predictor_models:
                lines.append(self._predictors_sentence(self.predictor_models[var]))
        if len(self.patterns):
            lines.append(self._pattern_sentence())
        lines.extend(self._correlation_sentence())
        lines.extend(self.notes)
        return lines

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """JSON-serialisable summary for ``artifacts/diagnose.json`` (aggregated only).

        Suppressed values are ``null`` and named in each record's
        ``"suppressed"`` list.
        """
        from hmlib.results import to_jsonable as clean

        funnels = {}
        for var, f in self.funnels.items():
            funnels[var] = {
                "overall_rate": f.overall_rate, "levels": list(f.levels), "method": f.method,
                "n_total": f.n_total, "above": list(f.above), "below": list(f.below),
                "table": f.table, "curve": f.curve,
            }
        payload = {
            "settings": {
                "cluster": self.cluster, "outcome": self.outcome, "outcome_family": self.outcome_family,
                "predictors": list(self.predictors), "focus": self.focus, "min_cell": self.min_cell,
                "structural_share": self.structural_share, "level": self.level,
                "cluster_noun": self.cluster_noun,
            },
            "n_patients": self.n_patients,
            "n_clusters": self.n_clusters,
            "variables": list(self.variables),
            "incomplete_variables": list(self.incomplete),
            "overview": self.overview.to_records(),
            "by_cluster": self.by_cluster.to_records() if self.by_cluster is not None else [],
            "heatmap": {
                "clusters": list(self.heatmap.index),
                "variables": list(self.heatmap.columns),
                "share_missing": self.heatmap.to_numpy().tolist(),
            },
            "gap_summary": self.gap_summary,
            "patterns": self.patterns,
            "funnels": funnels,
            "cluster_variation": {v: r.to_dict() for v, r in self.variation.items()},
            "cluster_variation_without_structural": {v: r.to_dict() for v, r in self.variation_sporadic.items()},
            "focus_variation_adjusted": self.focus_variation.to_dict() if self.focus_variation else None,
            "missingness_predictors": {v: r.to_dict() for v, r in self.predictor_models.items()},
            "outcome_correlation": self.outcome_correlation.to_dict() if self.outcome_correlation else None,
            "notes": list(self.notes),
            "narrative": self.narrative(),
        }
        return clean(payload)


def _published_cluster_tables(by_cluster: pd.DataFrame, variables: Sequence[str], min_cell: int):
    """Suppress the per-cluster counts once, on a wide table (one row per cluster).

    Every per-cluster table of the report shows the same counts (n, missing,
    observed), so one decision is made here and applied to all of them.
    Returns a function giving, for tidy rows, the masks of n / n_missing /
    n_observed, of the share and of its interval.
    """
    wide = by_cluster.pivot(index="cluster", columns="variable", values="n_missing")
    sizes = by_cluster.drop_duplicates("cluster").set_index("cluster")["n"]
    table = pd.DataFrame({"n": sizes.loc[wide.index].to_numpy()}, index=wide.index)
    parts = []
    for j, var in enumerate(variables):
        table[f"m{j}"] = wide[var].to_numpy()
        table[f"o{j}"] = table["n"] - table[f"m{j}"]
        parts.append([f"m{j}", f"o{j}"])
    counts = [c for pair in parts for c in pair]
    suppressed = suppress_counts(table.reset_index(drop=True), counts, min_cell, total_column="n",
                                 parts=parts)
    mask = suppressed.mask.set_axis(wide.index)
    index = {var: j for j, var in enumerate(variables)}

    def masks(clusters, vars_):
        j = np.array([index[v] for v in vars_])
        sub = mask.loc[list(clusters)]
        n_mask = sub["n"].to_numpy()
        m_mask = np.array([sub[f"m{jj}"].iat[i] for i, jj in enumerate(j)], dtype=bool)
        o_mask = np.array([sub[f"o{jj}"].iat[i] for i, jj in enumerate(j)], dtype=bool)
        return n_mask, m_mask, o_mask

    return masks, suppressed


def _hide_overview_cluster_counts(overview: SuppressedTable, variables: Sequence[str]) -> SuppressedTable:
    """Suppress the numbers of clusters with any / all missing for ``variables``."""
    hide = overview.values["variable"].isin(list(variables)).to_numpy()
    values = overview.values.copy()
    display = overview.display.copy()
    mask = overview.mask.copy()
    for col in ("n_clusters_any_missing", "n_clusters_all_missing"):
        values[col] = values[col].astype(float).where(~hide)
        display[col] = display[col].astype(object).where(~hide, overview.label)
        mask[col] = hide
    return replace(overview, values=values, display=display, mask=mask)


def _apply_masks(table: pd.DataFrame, n_mask, m_mask, o_mask, *, count_cols, share_cols, interval_cols):
    """NaN-out suppressed counts; shares when they would reveal a count; intervals when any count is hidden."""
    out = table.copy()
    k = table["n_missing"].to_numpy()
    n = table["n"].to_numpy()
    any_hidden = n_mask | m_mask | o_mask
    # a share of 0 or 1 reveals no count (both zeros are published anyway)
    share_hidden = any_hidden & (k > 0) & (k < n)
    hidden = {"n": n_mask, "n_missing": m_mask, "n_observed": o_mask}
    suppressed_lists = [[] for _ in range(len(out))]
    for col in count_cols:
        out[col] = out[col].astype(float).where(~hidden[col])
        for i in np.flatnonzero(hidden[col]):
            suppressed_lists[i].append(col)
    for col in share_cols:
        out[col] = out[col].astype(float).where(~share_hidden)
        for i in np.flatnonzero(share_hidden):
            suppressed_lists[i].append(col)
    for col in interval_cols:
        out[col] = out[col].astype(float).where(~any_hidden)
        for i in np.flatnonzero(any_hidden):
            suppressed_lists[i].append(col)
    return out, share_hidden, any_hidden, suppressed_lists


def diagnose(frame: pd.DataFrame, *, cluster: str, outcome: str, outcome_family: str,
             predictors: Sequence[str], focus: str | None = None, min_cell: int = 11,
             structural_share: float = 0.9, level: float = 0.95, cluster_noun: str = "cluster",
             cluster_names: Mapping[Hashable, str] | None = None,
             nagq: int | None = None) -> DiagnoseResult:
    """Run step 1: all missingness diagnostics for the incomplete analysis variables.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level registry extract (not modified).
    cluster, outcome : str
        Cluster and outcome columns.
    outcome_family : {"gaussian", "binomial"}
    predictors : sequence of str
        Predictors of the analysis model.
    focus : str, optional
        Variable of main interest (its missingness model is adjusted for the
        fully observed predictors and related to the outcome). Default: the
        incomplete variable with the most missing values.
    min_cell : int, default 11
        Small-cell threshold for every published count (:mod:`hmlib.privacy`).
    structural_share : float, default 0.9
        See :func:`classify_gaps`.
    level : float, default 0.95
        Level of all intervals.
    cluster_noun : str, default "cluster"
        Word for a cluster in the narrative (e.g. "site").
    cluster_names : mapping, optional
        Label -> display name (e.g. from
        :func:`hmlib.privacy.pseudonymize_clusters`). Default: the label
        itself, or ``"<cluster_noun> <label>"`` for a numeric label. Published per-cluster tables are sorted
        by display name, so pseudonyms do not reveal the original order.
    nagq : int, optional
        Quadrature nodes of all binomial models; default 10 up to
        ``AGHQ_MAX_ROWS`` rows, else Laplace.

    Returns
    -------
    DiagnoseResult

    Raises
    ------
    DataError
        Unknown columns, or rows without a cluster label.
    ParamsError
        Bad ``outcome_family``, ``focus``, ``min_cell``, ``level`` or
        ``structural_share``.

    Notes
    -----
    A model that cannot be fitted (e.g. a variable missing for almost
    nobody) is skipped and the reason is added to ``notes``; the rest of the
    diagnosis still runs. Covariates of the predictor models of a variable are
    the other analysis variables, the outcome included.

    Disclosure control: the per-cluster counts (cluster size, missing,
    recorded) are suppressed once, on one wide table, by
    :func:`hmlib.privacy.suppress_counts` (column totals treated as
    published), and every per-cluster table, the heatmap and the funnels use
    that one decision; a share is hidden when it would give back a hidden
    count, an interval whenever any count of its row is hidden. A variable
    whose overall count is suppressed, or whose cluster counts cannot be
    protected (few missing values spread one by one over clusters), is not
    broken down by cluster at all (no per-cluster values, gap types, cluster
    counts in the overview, heatmap column or funnel), and one whose overall
    count is suppressed is not modelled either (an intercept-only fit gives
    the count back). Rows-dropped counts of the predictor models follow the
    overview's suppression. Per-cluster empirical-Bayes effects are not
    published. What is not prevented: bounds (intervals) on a hidden count
    from the gap type or funnel position of its cluster, and relations
    between the pooled pattern count and the per-variable totals.
    """
    predictors = list(predictors)
    variables = [outcome] + [p for p in predictors if p != outcome]
    _check_columns(frame, [cluster, *variables], "diagnose")
    if outcome_family not in ("gaussian", "binomial"):
        raise ParamsError(f"outcome_family must be 'gaussian' or 'binomial', got {outcome_family!r}.")
    if not isinstance(min_cell, (int, np.integer)) or isinstance(min_cell, bool) or min_cell < 1:
        raise ParamsError(f"min_cell must be a whole number >= 1, got {min_cell!r}.")
    if not 0.0 <= float(structural_share) <= 1.0:
        raise ParamsError(f"structural_share must be between 0 and 1, got {structural_share!r}.")
    level = _check_level(level)
    if focus is not None and focus not in variables:
        raise ParamsError(f"focus {focus!r} is not the outcome or a predictor ({', '.join(variables)}).")
    labels, codes = _cluster_index(frame, cluster, "diagnose")
    names = {label: str((cluster_names or {}).get(label, _default_name(label, cluster_noun))) for label in labels}
    if cluster_names is not None:
        unnamed = [lb for lb in labels if lb not in cluster_names]
        if unnamed:
            raise ParamsError(f"cluster_names has no name for {len(unnamed)} cluster(s), e.g. {unnamed[0]!r}.")
    if len(set(names.values())) != len(names):
        raise ParamsError("cluster display names are not unique.")
    order = sorted(labels, key=lambda lb: _natural_key(names[lb]))
    rank = {lb: i for i, lb in enumerate(order)}

    overview_raw = missingness_overview(frame, variables, cluster, level=level)
    overview = suppress_counts(overview_raw, ["n_missing", "n_observed"], min_cell, total_column="n",
                               column_totals=False,
                               derived_columns={"share_missing": ["n_missing", "n_observed"],
                                                "ci_lower": ["n_missing", "n_observed"],
                                                "ci_upper": ["n_missing", "n_observed"]})
    incomplete = [v for v, k in zip(variables, overview_raw["n_missing"]) if k > 0]
    notes: list[str] = []
    if focus is None and incomplete:
        focus = max(incomplete, key=lambda v: (int(overview_raw.set_index("variable").loc[v, "n_missing"]),
                                              -incomplete.index(v)))
    elif focus is not None and focus not in incomplete:
        notes.append(f"The focus variable {focus} has no missing values; the focus analyses were skipped.")
        focus = None

    empty = pd.DataFrame()
    if not incomplete:
        return DiagnoseResult(
            cluster=cluster, outcome=outcome, outcome_family=outcome_family, predictors=tuple(predictors),
            focus=None, min_cell=int(min_cell), structural_share=float(structural_share), level=level,
            cluster_noun=cluster_noun, n_patients=len(frame), n_clusters=int(labels.size),
            variables=tuple(variables), incomplete=(), overview=overview, by_cluster=None,
            heatmap=empty, gap_summary=empty, patterns=missingness_patterns(frame, variables, min_cell=min_cell),
            funnels={}, variation={}, variation_sporadic={}, focus_variation=None, predictor_models={},
            outcome_correlation=None,
            cluster_names=names, notes=tuple(notes))

    # ---- per-cluster tables, suppressed once
    overview_hidden = overview.mask.set_axis(overview_raw["variable"])["n_missing"]
    # A variable whose overall missing count is suppressed gets no funnel and no model: the
    # funnel's centre line and an intercept-only logistic fit would give the count back.
    hidden_overall = [v for v in incomplete if bool(overview_hidden.loc[v])]
    by_cluster_raw = missingness_by_cluster(frame, incomplete, cluster, level=level)
    masks, _ = _published_cluster_tables(by_cluster_raw, incomplete, min_cell)
    n_mask, m_mask, o_mask = masks(by_cluster_raw["cluster"], by_cluster_raw["variable"])
    row_var = by_cluster_raw["variable"].to_numpy()
    # No breakdown by cluster for a variable whose total is suppressed or whose cluster counts
    # could not be protected: with zeros shown, the number of hidden cells bounds the total.
    no_breakdown = [v for v in incomplete if v in hidden_overall or m_mask[row_var == v].all()]
    for var in no_breakdown:
        if var not in hidden_overall:
            notes.append(f"{var} is not broken down by {cluster_noun}: its {cluster_noun} counts cannot be "
                         f"shown without revealing counts below {min_cell}.")
    nb_rows = np.isin(row_var, no_breakdown)
    m_mask = m_mask | nb_rows
    o_mask = o_mask | nb_rows
    gaps = classify_gaps(frame, incomplete, cluster, structural_share=structural_share)
    funnels_raw = {v: missingness_funnel(frame, v, cluster) for v in incomplete}
    joined = by_cluster_raw.copy()
    joined["gap_type"] = gaps.table["gap_type"].to_numpy().astype(object)
    joined["funnel_position"] = np.concatenate(
        [funnels_raw[v].table["position"].to_numpy() for v in incomplete]).astype(object)
    joined.loc[nb_rows, ["gap_type", "funnel_position"]] = None
    published, share_hidden, any_hidden, supp_lists = _apply_masks(
        joined, n_mask, m_mask, o_mask, count_cols=["n", "n_missing", "n_observed"],
        share_cols=["share_missing"], interval_cols=["ci_lower", "ci_upper"])
    share_hidden = share_hidden | nb_rows
    published.loc[nb_rows, "share_missing"] = np.nan
    published["cluster"] = [names[c] for c in by_cluster_raw["cluster"]]
    mask_frame = pd.DataFrame({
        "n": n_mask, "n_missing": m_mask, "n_observed": o_mask, "share_missing": share_hidden,
        "ci_lower": any_hidden, "ci_upper": any_hidden, "gap_type": nb_rows, "funnel_position": nb_rows},
        index=published.index)
    sort_key = np.array([rank[c] for c in by_cluster_raw["cluster"]])
    var_key = np.array([incomplete.index(v) for v in by_cluster_raw["variable"]])
    new_order = np.lexsort((sort_key, var_key))
    display = published.copy()
    for col in mask_frame.columns:
        display[col] = display[col].astype(object).where(~mask_frame[col].to_numpy(), "suppressed")
    primary_frame = pd.DataFrame({
        "n": (by_cluster_raw["n"] >= 1) & (by_cluster_raw["n"] < min_cell),
        "n_missing": (by_cluster_raw["n_missing"] >= 1) & (by_cluster_raw["n_missing"] < min_cell),
        "n_observed": (by_cluster_raw["n_observed"] >= 1) & (by_cluster_raw["n_observed"] < min_cell),
    })
    reorder = lambda f: f.iloc[new_order].reset_index(drop=True)  # noqa: E731
    by_cluster = SuppressedTable(display=reorder(display), values=reorder(published), mask=reorder(mask_frame),
                                 primary=reorder(primary_frame), min_cell=int(min_cell))

    # heatmap: shares, NaN where hidden
    heat_raw = missingness_heatmap_table(frame, incomplete, cluster)
    hidden_share = pd.Series(share_hidden, index=pd.MultiIndex.from_arrays(
        [by_cluster_raw["cluster"], by_cluster_raw["variable"]]))
    heat = heat_raw.copy()
    for var in incomplete:
        hide = hidden_share.xs(var, level=1).reindex(heat.index).to_numpy()
        heat[var] = heat[var].where(~hide)
    heat = heat.drop(columns=no_breakdown)
    heat.index = pd.Index([names[c] for c in heat_raw.index], name=cluster)
    # re-order on the published shares only: the raw order would place a suppressed cell
    # between two published ones and so bound it
    key = heat.mean(axis=1, skipna=True).to_numpy()
    name_rank = np.array([rank[c] for c in heat_raw.index])
    heat = heat.iloc[np.lexsort((name_rank, -np.nan_to_num(key, nan=-1.0)))]

    # gap summary: names; structural patient count only when no part of it is hidden
    gap_summary = gaps.summary.copy()
    gap_summary["structural_clusters"] = [
        tuple(sorted((names[c] for c in cl), key=_natural_key)) for cl in gaps.summary["structural_clusters"]]
    m_hidden = pd.Series(m_mask, index=pd.MultiIndex.from_arrays(
        [by_cluster_raw["cluster"], by_cluster_raw["variable"]]))
    safe_structural = []
    for row in gaps.summary.itertuples(index=False):
        hidden_any = any(m_hidden[(c, row.variable)] for c in row.structural_clusters)
        small = 0 < row.n_missing_structural < min_cell
        safe_structural.append(not hidden_any and not small)
    safe_structural = np.array(safe_structural, dtype=bool)
    gap_summary["n_missing_structural"] = gap_summary["n_missing_structural"].astype(float).where(safe_structural)
    gap_summary["share_of_missing_structural"] = gap_summary["share_of_missing_structural"].where(safe_structural)
    gap_summary["n_missing"] = gap_summary["n_missing"].astype(float).where(
        ~overview_hidden.loc[gap_summary["variable"]].to_numpy())
    nb_summary = gap_summary["variable"].isin(no_breakdown).to_numpy()
    for col in ("n_complete", "n_sporadic", "n_structural", "n_missing_structural",
                "share_of_missing_structural"):
        gap_summary[col] = gap_summary[col].astype(float).where(~nb_summary)
    gap_summary["structural_clusters"] = [None if hide else cl for hide, cl in
                                          zip(nb_summary, gap_summary["structural_clusters"])]
    # the overview's cluster counts bound the hidden total from below: hide them too
    overview = _hide_overview_cluster_counts(overview, no_breakdown)

    for var in hidden_overall:
        notes.append(f"{var} is missing for fewer than {min_cell} patients (or recorded for fewer than "
                     f"{min_cell}): its breakdown by {cluster_noun}, funnel plot and missingness models are "
                     "not shown, as they would reveal the suppressed count.")
    modelled = [v for v in incomplete if v not in hidden_overall]

    # funnels: names, NaN for hidden counts / rates
    funnels = {}
    for var in modelled:
        if var in no_breakdown:
            continue
        f = funnels_raw[var]
        sel = (by_cluster_raw["variable"] == var).to_numpy()
        ftable, _, _, _ = _apply_masks(f.table, n_mask[sel], m_mask[sel], o_mask[sel],
                                       count_cols=["n", "n_missing"], share_cols=["rate"], interval_cols=[])
        lim_cols = [c for c in ftable.columns if c.startswith(("lower_", "upper_"))]
        for c in lim_cols:  # the limits at a hidden n would reveal n
            ftable[c] = ftable[c].where(~n_mask[sel])
        ftable["cluster"] = [names[c] for c in f.table["cluster"]]
        ftable = ftable.iloc[np.argsort([rank[c] for c in f.table["cluster"]], kind="stable")].reset_index(drop=True)
        funnels[var] = FunnelResult(
            variable=var, overall_rate=f.overall_rate, n_total=f.n_total, n_missing_total=f.n_missing_total,
            levels=f.levels, method=f.method, table=ftable, curve=f.curve,
            above=tuple(names[c] for c in f.above), below=tuple(names[c] for c in f.below))
    # the published funnel must not carry a small overall count
    patterns = missingness_patterns(frame, incomplete, min_cell=min_cell)

    # ---- models
    variation: dict = {}
    variation_sporadic: dict = {}
    n_hidden_by_label = dict(zip(by_cluster_raw["cluster"], n_mask))
    structural_by_var = dict(zip(gaps.summary["variable"], gaps.summary["structural_clusters"]))
    for var in modelled:
        try:
            variation[var] = missingness_cluster_variation(frame, var, cluster, nagq=nagq, level=level)
        except FitError as err:
            notes.append(f"The model of between-{cluster_noun} variation in missingness of {var} "
                         f"was not fitted: {err}")
        structural = structural_by_var[var]
        if structural and var not in no_breakdown:
            # structural gaps alone make the SD huge; how much do the other clusters vary?
            keep = ~frame[cluster].isin(list(structural)).to_numpy()
            try:
                res = missingness_cluster_variation(frame.loc[keep], var, cluster, nagq=nagq, level=level)
                if any(n_hidden_by_label[c] or m_hidden[(c, var)] for c in structural):
                    # totals minus this model's counts would give a suppressed cluster count
                    res = replace(res, n_used=None, n_missing=None)
                variation_sporadic[var] = res
            except FitError as err:
                notes.append(f"The model of missingness of {var} without the {cluster_noun}s with "
                             f"structural gaps was not fitted: {err}")
    complete_predictors = [p for p in predictors if p not in incomplete]
    focus_variation = None
    if focus in hidden_overall:
        focus = None
    if focus is not None and complete_predictors:
        try:
            focus_variation = missingness_cluster_variation(frame, focus, cluster, complete_predictors,
                                                            nagq=nagq, level=level)
        except FitError as err:
            notes.append(f"The adjusted missingness model of {focus} was not fitted: {err}")
    predictor_models: dict = {}
    for var in modelled:
        covariates = [v for v in variables if v != var]
        try:
            res = missingness_predictors(frame, var, cluster, covariates, nagq=nagq, level=level)
        except FitError as err:
            notes.append(f"The model of what predicts missing {var} was not fitted: {err}")
            continue
        # the rows left out per covariate are that covariate's missing count: publish it only
        # where the overview does
        dropped = {c: None if c in hidden_overall or 0 < k < min_cell else k
                   for c, k in res.dropped_by_covariate.items()}
        small = 0 < res.n_dropped < min_cell
        predictor_models[var] = replace(res, dropped_by_covariate=dropped,
                                        n_dropped=None if small else res.n_dropped,
                                        n_used=None if small else res.n_used)
    outcome_correlation = None
    if focus is not None:
        reuse = focus_variation if focus_variation is not None else variation.get(focus)
        try:
            corr = missingness_outcome_correlation(frame, focus, cluster, outcome, outcome_family, predictors,
                                                   missingness_fit=reuse, nagq=nagq, level=level)
            effects = corr.effects.copy()
            effects["cluster"] = [names[c] for c in effects["cluster"]]
            effects = effects.iloc[np.argsort([rank[c] for c in corr.effects["cluster"]], kind="stable")]
            outcome_correlation = OutcomeCorrelationResult(
                **{**{k: getattr(corr, k) for k in corr.__dataclass_fields__},
                   "effects": effects.reset_index(drop=True)})
        except (FitError, DataError) as err:
            notes.append(f"The correlation of {focus} missingness with the {outcome} {cluster_noun} "
                         f"effects was not computed: {err}")

    return DiagnoseResult(
        cluster=cluster, outcome=outcome, outcome_family=outcome_family, predictors=tuple(predictors),
        focus=focus, min_cell=int(min_cell), structural_share=float(structural_share), level=level,
        cluster_noun=cluster_noun, n_patients=len(frame), n_clusters=int(labels.size),
        variables=tuple(variables), incomplete=tuple(incomplete), overview=overview, by_cluster=by_cluster,
        heatmap=heat, gap_summary=gap_summary, patterns=patterns, funnels=funnels, variation=variation,
        variation_sporadic=variation_sporadic, focus_variation=focus_variation, predictor_models=predictor_models,
        outcome_correlation=outcome_correlation, cluster_names=names, notes=tuple(notes))


#: Column names that read naturally as the word for a cluster in sentences.
