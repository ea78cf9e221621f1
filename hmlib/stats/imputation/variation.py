"""Between-cluster variation of one variable, before and after imputation.

- :func:`cluster_variation`: the cluster SD and intraclass correlation (ICC)
  of a variable from an intercept-only random-intercept model (gaussian; for
  a 0/1 variable logistic, ICC on the latent scale,
  ``sd_u^2 / (sd_u^2 + pi^2 / 3)``), fitted by
  :func:`hmlib.stats.mixed.fit_random_intercept`; :func:`completed_variation`
  averages it over the ``m`` completed data sets of an imputation. Flat
  imputation is expected to shrink it, fixed-effects imputation to inflate
  it, multilevel imputation to keep it (Luedtke, Robitzsch & Grund 2017;
  Drechsler 2015).
- :func:`residual_variance_check`: does the variable's residual SD (given
  covariates, with cluster fixed effects) differ between clusters? The
  Brown-Forsythe (median-centred Levene) test of the within-cluster
  residuals, and the between-cluster SD of the log residual SD beyond
  sampling noise by the method of moments,
  ``sqrt(max(var(log s_j) - mean(1 / (2 (n_j - 1))), 0))`` (the sampling
  variance of ``log s_j`` is about ``1 / (2 (n_j - 1))``). It decides between
  a common (``2l.pan``) and cluster-specific (``2l.norm``) residual variance
  in the multilevel imputation model (the rule and its measurements:
  :mod:`hmlib.steps.imputation`).

References
----------
Brown MB, Forsythe AB (1974). Robust tests for the equality of variances.
J Am Stat Assoc 69(346):364-367.
Luedtke O, Robitzsch A, Grund S (2017). Multiple imputation of missing data
in multilevel designs: a comparison of different strategies. Psychol
Methods 22(1):141-165.
Drechsler J (2015). Multiple imputation of multilevel missing data: rigor
versus simplicity. J Educ Behav Stat 40(1):69-95.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError, FitError
from hmlib.stats.design import design_matrix
from hmlib.stats.mixed import fit_random_intercept

__all__ = ["ResidualVarianceCheck", "residual_variance_check", "cluster_variation", "completed_variation"]

#: Failures of a fit that leave the variation unmeasured (NaN) rather than stop the step.
_FIT_ERRORS = (FitError, DataError, np.linalg.LinAlgError, ValueError, FloatingPointError)


@dataclass(frozen=True)
class ResidualVarianceCheck:
    """Does the focus variable's residual SD differ between clusters?

    Attributes
    ----------
    variable : str
    n_clusters : int
        Clusters with at least ``min_cluster_size`` complete rows (tested).
    statistic, p_value : float
        Brown-Forsythe (median-centred Levene) test of equal variances of
        the within-cluster residuals.
    sd_log_sd : float
        Estimated between-cluster SD of the log residual SD, beyond
        sampling noise (0 when the noise explains it all).
    heterogeneous : bool
        ``p_value < alpha`` and ``sd_log_sd >= min_sd_log_sd``.
    alpha, min_sd_log_sd : float
    """

    variable: str
    n_clusters: int
    statistic: float
    p_value: float
    sd_log_sd: float
    heterogeneous: bool
    alpha: float
    min_sd_log_sd: float

    def sentence(self) -> str:
        """The check and the choice it implies, in one sentence with its numbers."""
        verdict = ("differs between clusters" if self.heterogeneous
                   else "does not differ materially between clusters")
        return (f"The residual SD of {self.variable} within clusters {verdict} (Brown-Forsythe p = "
                f"{self.p_value:.2g} over {self.n_clusters} clusters; between-cluster SD of the log residual "
                f"SD {self.sd_log_sd:.2f}, rule: p < {self.alpha:g} and at least {self.min_sd_log_sd:g}), so "
                f"the multilevel imputation uses "
                + ("cluster-specific residual variances (2l.norm)." if self.heterogeneous
                   else "a common residual variance (2l.pan)."))


def residual_variance_check(frame: pd.DataFrame, *, variable: str, cluster: str, covariates, levels=None,
                            alpha: float = 0.01, min_sd_log_sd: float = 0.2,
                            min_cluster_size: int = 3) -> ResidualVarianceCheck:
    """Test whether the residual variance of ``variable`` differs between clusters.

    Within-cluster residuals come from the regression of ``variable`` on
    ``covariates`` with cluster fixed effects (both sides centred within
    clusters), on the rows where all are recorded.

    Parameters
    ----------
    frame : pandas.DataFrame
    variable, cluster : str
    covariates : sequence of str
        Other predictors and the outcome (categorical ones are dummy coded
        with ``levels``).
    levels : dict, optional
    alpha : float
        Level of the Brown-Forsythe test.
    min_sd_log_sd : float
        Smallest between-cluster SD of the log residual SD that counts.
    min_cluster_size : int
        Clusters with fewer complete rows are left out.

    Returns
    -------
    ResidualVarianceCheck
        NaN statistics and ``heterogeneous=False`` when fewer than 2
        clusters qualify.
    """
    covariates = [c for c in covariates if c != variable]
    design = design_matrix(frame, covariates, levels, intercept=False,
                           extra_rows_mask=frame[variable].notna().to_numpy())
    y = frame[variable].to_numpy(dtype=float)[design.rows]
    groups = pd.Series(frame[cluster].to_numpy()[design.rows])
    X = pd.DataFrame(design.X)
    Xw = (X - X.groupby(groups.to_numpy()).transform("mean")).to_numpy()
    yw = y - pd.Series(y).groupby(groups.to_numpy()).transform("mean").to_numpy()
    if Xw.shape[1]:
        beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
        resid = yw - Xw @ beta
    else:
        resid = yw
    by_cluster = [resid[(groups == g).to_numpy()] for g in pd.unique(groups)]
    by_cluster = [r for r in by_cluster if r.size >= min_cluster_size]
    nan = float("nan")
    if len(by_cluster) < 2:
        return ResidualVarianceCheck(variable, len(by_cluster), nan, nan, nan, False, alpha, min_sd_log_sd)
    test = stats.levene(*by_cluster, center="median")
    sizes = np.array([r.size for r in by_cluster], dtype=float)
    s2 = np.array([np.sum(r ** 2) for r in by_cluster]) / (sizes - 1)
    ok = s2 > 0
    log_sd = 0.5 * np.log(s2[ok])
    excess = float(np.var(log_sd, ddof=1) - np.mean(1.0 / (2.0 * (sizes[ok] - 1)))) if ok.sum() > 1 else 0.0
    sd_log_sd = float(np.sqrt(max(excess, 0.0)))
    p_value = float(test.pvalue)
    return ResidualVarianceCheck(variable, len(by_cluster), float(test.statistic), p_value, sd_log_sd,
                                 bool(p_value < alpha and sd_log_sd >= min_sd_log_sd), alpha, min_sd_log_sd)



def cluster_variation(values, groups, *, binary: bool = False) -> dict:
    """Cluster SD and ICC of one variable from an intercept-only random-intercept model.

    Parameters
    ----------
    values : array_like
        The variable (NaN rows are dropped).
    groups : array_like
        Cluster of each row.
    binary : bool
        0/1 variable: logistic model, ICC on the latent scale.

    Returns
    -------
    dict
        ``cluster_sd, icc`` (NaN when the model cannot be fitted).
    """
    y = np.asarray(values, dtype=float)
    g = np.asarray(groups)
    keep = ~np.isnan(y)
    try:
        fit = fit_random_intercept(y[keep], np.ones((int(keep.sum()), 1)), g[keep],
                                   family="binomial" if binary else "gaussian", term_names=["Intercept"])
    except _FIT_ERRORS:
        return {"cluster_sd": float("nan"), "icc": float("nan")}
    return {"cluster_sd": float(fit.cluster_sd), "icc": float(fit.icc)}



def completed_variation(completed, variable: str, cluster: str, *, binary: bool = False) -> dict:
    """:func:`cluster_variation` of ``variable`` in each completed data set, summarised.

    Parameters
    ----------
    completed : sequence of pandas.DataFrame
        The completed data sets of an imputation
        (:attr:`hmlib.stats.imputation.ImputationResult.completed`).
    variable, cluster : str
    binary : bool
        0/1 variable (latent-scale ICC).

    Returns
    -------
    dict
        ``cluster_sd, icc`` (means over the data sets where the model could
        be fitted) and ``icc_min, icc_max`` (their range); all NaN when it
        could be fitted in none.
    """
    fits = [cluster_variation(done[variable].to_numpy(dtype=float), done[cluster].to_numpy(), binary=binary)
            for done in completed]
    icc = np.array([f["icc"] for f in fits], dtype=float)
    sd = np.array([f["cluster_sd"] for f in fits], dtype=float)
    if not np.isfinite(icc).any():
        return {"cluster_sd": float("nan"), "icc": float("nan"), "icc_min": float("nan"), "icc_max": float("nan")}
    return {"cluster_sd": float(np.nanmean(sd)), "icc": float(np.nanmean(icc)),
            "icc_min": float(np.nanmin(icc)), "icc_max": float(np.nanmax(icc))}
