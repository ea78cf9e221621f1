"""What the fitters return: the random-intercept fit, the variance test, and the general mixed-model fit.

Frozen result objects (statsmodels' Model / Results split): estimates,
standard errors, ``to_frame()`` and ``summary()``; nothing is printed. The
algorithm behind the numbers is in :mod:`hmlib.stats.mixed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["RandomInterceptFit", "ClusterVarianceTest", "LevelEffects", "MixedFit", "variance_rows"]


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
    separated : tuple of str
        Binomial fits: terms whose estimates diverge because the data are
        (quasi-)separated (:mod:`hmlib.stats.mixed.separation`); their
        estimates and standard errors are not estimates of anything. Empty
        otherwise.
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
    separated: tuple = ()

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


def variance_rows(level: "LevelEffects", z: float) -> list:
    """to_frame rows of one level: SDs (log-scale Wald intervals), then correlations (Fisher z)."""
    rows = []
    cols = level.columns
    has_intercept = cols[0] == "Intercept"
    sd, cor = level.sd, level.cor
    for r, col in enumerate(cols):
        term = f"sd({level.name})" if col == "Intercept" else f"sd({col}|{level.name})"
        se_log = level.log_sd_std_error[r]
        if sd[r] > 0 and np.isfinite(se_log):
            rows.append((term, sd[r], sd[r] * se_log, sd[r] * np.exp(-z * se_log), sd[r] * np.exp(z * se_log)))
        else:
            rows.append((term, sd[r], np.nan, np.nan, np.nan))
    for s in range(len(cols)):
        for r in range(s + 1, len(cols)):
            if has_intercept and s == 0:
                term = f"cor({cols[r]}|{level.name})"
            else:
                term = f"cor({cols[s]},{cols[r]}|{level.name})"
            value, se_z = cor[r, s], level.atanh_cor_std_error[r, s]
            if np.isfinite(se_z) and abs(value) < 1:
                centre = np.arctanh(value)
                rows.append((term, value, (1 - value ** 2) * se_z, np.tanh(centre - z * se_z),
                             np.tanh(centre + z * se_z)))
            else:
                rows.append((term, value, np.nan, np.nan, np.nan))
    return rows


@dataclass(frozen=True, eq=False)
class LevelEffects:
    """One grouping level of a fitted general mixed model: its covariance and its clusters' effects.

    Attributes
    ----------
    name : str
    columns : tuple of str
        The level's random effects: ``"Intercept"`` and slope names.
    covariance : numpy.ndarray
        q x q covariance of the effects on the user's scale.
    log_sd_std_error : numpy.ndarray
        Standard error of ``log(SD)`` of each effect (NaN at SD 0).
    atanh_cor_std_error : numpy.ndarray
        q x q; below the diagonal, the standard error of ``atanh`` of each
        correlation (NaN at +-1 or where an SD is 0).
    cluster_path : tuple of numpy.ndarray
        Labels of each cluster at the levels up to and including this one
        (outermost first); the last is the cluster's own label.
    sizes : numpy.ndarray
        Rows per cluster.
    modes, mode_sd : numpy.ndarray
        (m, q): conditional modes of the effects (lme4's ``ranef``) on the
        user's scale and their conditional SDs (``condVar``).
    """

    name: str
    columns: tuple
    covariance: np.ndarray
    log_sd_std_error: np.ndarray
    atanh_cor_std_error: np.ndarray
    cluster_path: tuple
    sizes: np.ndarray
    modes: np.ndarray
    mode_sd: np.ndarray

    @property
    def sd(self) -> np.ndarray:
        """SD of each effect."""
        return np.sqrt(np.maximum(np.diag(self.covariance), 0.0))

    @property
    def cor(self) -> np.ndarray:
        """Correlation matrix of the effects (NaN where an SD is 0)."""
        sd = self.sd
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.covariance / np.outer(sd, sd)
        np.fill_diagonal(out, 1.0)
        return np.clip(out, -1.0, 1.0)

    @property
    def n_clusters(self) -> int:
        """Clusters at this level."""
        return int(self.sizes.size)

    @property
    def singular(self) -> bool:
        """The covariance is singular: an SD of 0 or a correlation of +-1 (a boundary estimate)."""
        eig = np.linalg.eigvalsh(self.covariance)
        return bool(eig[0] <= 1e-10 * max(eig[-1], 0.0))

    def effects_frame(self, level_names) -> pd.DataFrame:
        """Conditional modes: the cluster's labels (one column per level), ``n``, then per effect
        ``<column>`` and ``<column>_sd``."""
        frame = pd.DataFrame({name: labels for name, labels in zip(level_names, self.cluster_path)})
        frame["n"] = self.sizes
        for j, col in enumerate(self.columns):
            frame[col] = self.modes[:, j]
            frame[f"{col}_sd"] = self.mode_sd[:, j]
        return frame


@dataclass(frozen=True, eq=False)
class MixedFit:
    """A fitted general mixed model ``y ~ X + nested random intercepts and slopes``.

    Attributes
    ----------
    family : str
        ``"gaussian"`` or ``"binomial"``.
    method : str
        ``"ML"`` or ``"ML, Laplace"``.
    term_names : tuple of str
    coef, std_error : numpy.ndarray
        Fixed effects and their standard errors.
    cov : numpy.ndarray
        p x p covariance of ``coef``.
    levels : tuple of LevelEffects
        The grouping levels, outermost first.
    residual_sd : float or None
        Residual SD (gaussian); None for binomial.
    loglik : float
        Maximised log-likelihood (Laplace approximation for binomial), on
        lme4's ``logLik`` scale.
    n_obs : int
    converged : bool
    optimizer_message : str
    """

    family: str
    method: str
    term_names: tuple
    coef: np.ndarray
    std_error: np.ndarray
    cov: np.ndarray
    levels: tuple
    residual_sd: float | None
    loglik: float
    n_obs: int
    converged: bool
    optimizer_message: str = ""
    #: The optimiser's solution on its internal scale (binomial: standardised coefficients and the
    #: relative covariance factors), to start a later fit of similar data from (``fit_mixed(start=)``).
    optimum: np.ndarray | None = None
    #: The Hessian of the negative log-likelihood there, on the same scale (binomial).
    optimum_hessian: np.ndarray | None = None

    @property
    def fixed_effects(self) -> pd.Series:
        """Fixed-effect estimates by term."""
        return pd.Series(self.coef, index=list(self.term_names), name="estimate")

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors of the fixed effects by term."""
        return pd.Series(self.std_error, index=list(self.term_names), name="std_error")

    @property
    def level_names(self) -> tuple:
        """Names of the grouping levels, outermost first."""
        return tuple(level.name for level in self.levels)

    @property
    def n_clusters(self) -> int:
        """Clusters of the innermost level (the ``n_clusters`` of ``estimates.csv``)."""
        return self.levels[-1].n_clusters

    @property
    def singular(self) -> bool:
        """Some level's covariance is singular (lme4's ``isSingular``): an SD estimated at 0 or a
        correlation at +-1. The estimates are valid maximum-likelihood estimates on the boundary
        of the parameter space; their rows have no standard error."""
        return any(level.singular for level in self.levels)

    @property
    def n_clusters_by_level(self) -> dict:
        """Clusters per level, outermost first."""
        return {level.name: level.n_clusters for level in self.levels}

    def level(self, name: str) -> LevelEffects:
        """The level called ``name``."""
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(f"no grouping level {name!r}; the levels are {list(self.level_names)}.")

    def effects_frame(self, name: str) -> pd.DataFrame:
        """Conditional modes of the clusters of level ``name`` (see :meth:`LevelEffects.effects_frame`)."""
        k = self.level_names.index(self.level(name).name)
        return self.levels[k].effects_frame(self.level_names[:k + 1])

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Estimates with Wald intervals, one row per term (the ``estimates.csv`` contract).

        Parameters
        ----------
        level : float
            Confidence level of the intervals.

        Returns
        -------
        pandas.DataFrame
            Columns ``term, estimate, std_error, ci_lower, ci_upper``: the
            fixed effects (Wald z intervals), then per grouping level
            ``sd(<level>)`` for the intercept, ``sd(<slope>|<level>)`` for
            each slope (Wald intervals on the log-SD scale transformed back,
            delta-method standard errors), ``cor(<slope>|<level>)`` for the
            intercept-slope correlations and ``cor(<a>,<b>|<level>)`` for
            slope-slope ones (Fisher-z intervals). Variance rows at the
            boundary (SD 0, correlation +-1) have NaN standard error and
            interval.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be between 0 and 1, got {level!r}.")
        z = stats.norm.ppf(0.5 + level / 2.0)
        rows = [(t, b, s, b - z * s, b + z * s) for t, b, s in zip(self.term_names, self.coef, self.std_error)]
        for lev in self.levels:
            rows.extend(variance_rows(lev, z))
        return pd.DataFrame(rows, columns=["term", "estimate", "std_error", "ci_lower", "ci_upper"])

    def summary(self) -> str:
        """A short plain-text summary (returned, not printed)."""
        frame = self.to_frame()
        width = max(len(t) for t in frame["term"])
        clusters = ", ".join(f"{m} {name}" for name, m in self.n_clusters_by_level.items())
        lines = [
            f"Mixed model, {self.family}, {self.method}",
            f"{self.n_obs} rows in {clusters}; log-likelihood {self.loglik:.3f}; "
            f"{'converged' if self.converged else 'NOT CONVERGED: ' + self.optimizer_message}",
            f"{'term':<{width}}  {'estimate':>10}  {'std.err':>9}  {'95% CI':>21}",
        ]
        for row in frame.itertuples(index=False):
            lines.append(f"{row.term:<{width}}  {row.estimate:>10.4g}  {row.std_error:>9.3g}  "
                         f"({row.ci_lower:>9.4g}, {row.ci_upper:>9.4g})")
        if self.residual_sd is not None:
            lines.append(f"residual SD {self.residual_sd:.4g}")
        if self.singular:
            lines.append("singular fit: a random-effect SD is 0 or a correlation is +-1 (boundary estimate)")
        return "\n".join(lines)
