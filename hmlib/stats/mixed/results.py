"""What a fit of the random-intercept model returns: the fit and the variance test.

Frozen result objects (statsmodels' Model / Results split): estimates,
standard errors, ``to_frame()`` and ``summary()``; nothing is printed. The
algorithm behind the numbers is in :mod:`hmlib.stats.mixed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["RandomInterceptFit", "ClusterVarianceTest"]


@dataclass(frozen=True, eq=False)
class RandomInterceptFit:
    """A fitted random-intercept model ``y ~ X + (1 | cluster)``.

    Attributes
    ----------
    family : str
        ``"gaussian"`` or ``"binomial"``.
    method : str
        ``"ML"``, ``"ML, Laplace"`` or ``"ML, adaptive Gauss-Hermite (k nodes)"``.
    term_names : tuple of str
        Names of the fixed effects (columns of X).
    coef, std_error : numpy.ndarray
        Fixed-effect estimates and their standard errors.
    cov : numpy.ndarray
        p x p covariance matrix of ``coef``.
    cluster_sd : float
        Estimated SD of the cluster intercepts (0 at the boundary).
    log_cluster_sd_std_error : float
        Standard error of ``log(cluster_sd)`` from the observed information
        (NaN when ``cluster_sd`` is 0).
    residual_sd : float or None
        Residual SD (gaussian); None for binomial.
    loglik : float
        Maximised log-likelihood (Laplace / quadrature approximation for
        binomial), on lme4's ``logLik`` scale.
    n_obs, n_clusters : int
    cluster_labels : numpy.ndarray
        Sorted unique cluster labels.
    cluster_sizes : numpy.ndarray
        Rows per cluster, in ``cluster_labels`` order.
    cluster_effects, cluster_effect_sd : numpy.ndarray
        Conditional modes (BLUPs) of the cluster intercepts on the linear
        predictor scale and their conditional SDs, in ``cluster_labels`` order.
    converged : bool
        The optimiser met its convergence criterion.
    cluster_name : str
    nagq : int
        Quadrature nodes used (1 = Laplace; 1 for gaussian).
    optimizer_message : str
        What the optimiser reported (useful when ``converged`` is False).
    """

    family: str
    method: str
    term_names: tuple
    coef: np.ndarray
    std_error: np.ndarray
    cov: np.ndarray
    cluster_sd: float
    log_cluster_sd_std_error: float
    residual_sd: float | None
    loglik: float
    n_obs: int
    n_clusters: int
    cluster_labels: np.ndarray
    cluster_sizes: np.ndarray
    cluster_effects: np.ndarray
    cluster_effect_sd: np.ndarray
    converged: bool
    cluster_name: str = "cluster"
    nagq: int = 1
    optimizer_message: str = ""

    @property
    def icc(self) -> float:
        """Intraclass correlation.

        Gaussian: ``s_u^2 / (s_u^2 + s_e^2)``; binomial, on the latent logistic
        scale: ``s_u^2 / (s_u^2 + pi^2 / 3)``.
        """
        su2 = self.cluster_sd ** 2
        if self.family == "gaussian":
            return float(su2 / (su2 + self.residual_sd ** 2))
        return float(su2 / (su2 + np.pi ** 2 / 3.0))

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Estimates with Wald intervals, one row per term.

        Parameters
        ----------
        level : float
            Confidence level of the intervals.

        Returns
        -------
        pandas.DataFrame
            Columns ``term, estimate, std_error, ci_lower, ci_upper``: the fixed
            effects (Wald z intervals) and a last row ``sd(<cluster_name>)``
            whose interval is a Wald interval on the log-SD scale transformed
            back (its ``std_error`` is the delta-method SE of the SD). The SD
            row has NaN standard error and interval when the SD is 0.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be between 0 and 1, got {level!r}.")
        z = stats.norm.ppf(0.5 + level / 2.0)
        sd = self.cluster_sd
        log_se = self.log_cluster_sd_std_error
        if sd > 0 and np.isfinite(log_se):
            sd_row = (sd * log_se, sd * np.exp(-z * log_se), sd * np.exp(z * log_se))
        else:
            sd_row = (np.nan, np.nan, np.nan)
        return pd.DataFrame({
            "term": [*self.term_names, f"sd({self.cluster_name})"],
            "estimate": np.r_[self.coef, sd],
            "std_error": np.r_[self.std_error, sd_row[0]],
            "ci_lower": np.r_[self.coef - z * self.std_error, sd_row[1]],
            "ci_upper": np.r_[self.coef + z * self.std_error, sd_row[2]],
        })

    def cluster_effects_frame(self) -> pd.DataFrame:
        """Cluster intercepts: columns ``cluster, n, effect, effect_sd``."""
        return pd.DataFrame({
            "cluster": self.cluster_labels,
            "n": self.cluster_sizes,
            "effect": self.cluster_effects,
            "effect_sd": self.cluster_effect_sd,
        })

    def summary(self) -> str:
        """A short plain-text summary (returned, not printed)."""
        frame = self.to_frame()
        width = max(len(t) for t in frame["term"])
        lines = [
            f"Random-intercept model, {self.family}, {self.method}",
            f"{self.n_obs} rows in {self.n_clusters} clusters ({self.cluster_name}); "
            f"log-likelihood {self.loglik:.3f}; "
            f"{'converged' if self.converged else 'NOT CONVERGED: ' + self.optimizer_message}",
            f"{'term':<{width}}  {'estimate':>10}  {'std.err':>9}  {'95% CI':>21}",
        ]
        for row in frame.itertuples(index=False):
            lines.append(f"{row.term:<{width}}  {row.estimate:>10.4g}  {row.std_error:>9.3g}  "
                         f"({row.ci_lower:>9.4g}, {row.ci_upper:>9.4g})")
        if self.residual_sd is not None:
            lines.append(f"residual SD {self.residual_sd:.4g}")
        lines.append(f"ICC {self.icc:.3f}" + (" (latent scale)" if self.family == "binomial" else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class ClusterVarianceTest:
    """Likelihood-ratio test of "no cluster effect" (cluster SD = 0).

    Attributes
    ----------
    statistic : float
        ``2 (loglik_with - loglik_without)``, at least 0.
    p_value : float
        ``0.5 P(chi2_1 > statistic)`` (1 when the statistic is 0): the null
        distribution is the 50:50 mixture of chi2_0 and chi2_1.
    loglik_with, loglik_without : float
        Log-likelihoods of the random-intercept model and of the model
        without cluster effect.
    df : int
        Parameters tested (1).
    cluster_sd : float
        The estimated cluster SD of the model with cluster effect.
    """

    statistic: float
    p_value: float
    loglik_with: float
    loglik_without: float
    df: int
    cluster_sd: float
