"""Random-intercept logistic models of a missingness indicator.

:func:`missingness_cluster_variation` (how much missingness varies between
clusters: cluster SD, latent ICC, boundary-corrected likelihood-ratio test)
and :func:`missingness_predictors` (which covariates predict missingness,
within and between clusters), with the shared design helpers and the choice
of quadrature (:func:`quadrature_nodes`). The models, terms and references are
in :mod:`hmlib.stats.missingness` ("Between-cluster variation", "Predictors
of missingness, within and between clusters").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import FitError
from hmlib.stats.missingness.counts import check_columns, check_level, cluster_index, is_numeric
from hmlib.stats.mixed import fit_random_intercept, test_cluster_variance

__all__ = [
    "AGHQ_MAX_ROWS",
    "quadrature_nodes",
    "plain_design",
    "complete_rows",
    "ClusterVariationResult",
    "missingness_cluster_variation",
    "MissingnessPredictorsResult",
    "missingness_predictors",
]

#: Models of at most this many rows use 10-point adaptive Gauss-Hermite
#: quadrature; larger ones the Laplace approximation (see the module docstring).
AGHQ_MAX_ROWS = 50_000
_AGHQ_NODES = 10


def quadrature_nodes(n_rows: int, nagq: int | None) -> int:
    """Quadrature nodes of a binomial model of ``n_rows`` rows: ``nagq`` if given, else 10
    up to :data:`AGHQ_MAX_ROWS` rows and 1 (Laplace) above."""
    if nagq is not None:
        return int(nagq)
    return _AGHQ_NODES if n_rows <= AGHQ_MAX_ROWS else 1


# --------------------------------------------------------------------------
# Design matrices
# --------------------------------------------------------------------------
def _categorical_levels(series: pd.Series) -> list[str]:
    return sorted(series.dropna().astype(str).unique().tolist())


def plain_design(frame: pd.DataFrame, covariates: Sequence[str], rows: np.ndarray):
    """Fixed-effects design: intercept, numeric covariates as they are, categorical ones treatment-coded.

    Parameters
    ----------
    frame : pandas.DataFrame
    covariates : sequence of str
    rows : numpy.ndarray of bool
        Rows of ``frame`` in the model.

    Returns
    -------
    X : numpy.ndarray
        Design matrix of the rows used (columns constant in them left out).
    names : list of str
        Term names (``"Intercept"``, ``"age"``, ``"sex[male]"``; reference level:
        the alphabetically first).
    notes : list of str
        Terms left out and why.
    """
    columns = [np.ones(int(rows.sum()))]
    names = ["Intercept"]
    notes = []
    for col in covariates:
        series = frame[col]
        if is_numeric(series):
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


def complete_rows(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Rows with every one of ``columns`` recorded (boolean mask)."""
    rows = np.ones(len(frame), dtype=bool)
    for col in columns:
        rows &= frame[col].notna().to_numpy()
    return rows


# --------------------------------------------------------------------------
# Between-cluster variation of missingness
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
    covariates = [c for c in covariates if c != variable]
    check_columns(frame, [variable, cluster, *covariates], "missingness_cluster_variation")
    cluster_index(frame, cluster, "missingness_cluster_variation")
    rows = complete_rows(frame, covariates)
    y = frame[variable].isna().to_numpy(dtype=float)[rows]
    if y.size == 0:
        raise FitError(f"no patient has all of {', '.join(covariates)} recorded.")
    if y.min() == y.max():
        state = "missing" if y[0] else "recorded"
        raise FitError(f"{variable} is {state} for every patient used; its missingness cannot be modelled.")
    X, names, _ = plain_design(frame, covariates, rows)
    groups = frame[cluster].to_numpy()[rows]
    q = quadrature_nodes(y.size, nagq)
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
# Which covariates predict missingness, within and between clusters
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
    level = check_level(level)
    covariates = [c for c in covariates if c != variable]
    check_columns(frame, [variable, cluster, *covariates], "missingness_predictors")
    if not covariates:
        raise FitError(f"no covariate to relate the missingness of {variable} to.")
    labels, codes = cluster_index(frame, cluster, "missingness_predictors")
    m = labels.size
    rows = complete_rows(frame, covariates)
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
        if is_numeric(series):
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
    q = quadrature_nodes(y.size, nagq)
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
