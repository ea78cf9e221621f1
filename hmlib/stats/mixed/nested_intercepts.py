"""The analysis model with nested random intercepts, in the shape of the one-level fit.

``y ~ X + (1 | country) + (1 | country:hospital)`` (any number of levels
above the cluster) is fitted by :func:`hmlib.stats.mixed.fit_mixed`
(gaussian: ML as ``lmer(REML = FALSE)``; binomial: Laplace as ``glmer``;
adaptive quadrature does not extend to nested effects). The report's steps
read a :class:`~hmlib.stats.mixed.results.RandomInterceptFit`; a
:class:`NestedInterceptFit` is one, for the cluster level, plus the SD of
each higher level:

- ``cluster_sd`` and its standard error are the cluster level's (the SD of
  hospitals within their country);
- ``cluster_effects`` are each cluster's deviation from the overall
  intercept, its higher units' modes plus its own (the hospital's country
  effect plus its effect within the country), and ``cluster_effect_sd``
  combines their conditional SDs as if independent (lme4's ``condVar``
  gives no covariance between levels either);
- :attr:`NestedInterceptFit.higher` holds ``(name, sd, log_sd_std_error,
  n_units)`` per higher level, outermost first; :meth:`to_frame` gives one
  ``sd(<level>)`` row per level, outermost first, then ``sd(<cluster>)``.

Random slopes at the cluster level (``(1 + week | patient)``, issue #16) are
fitted the same way (``slopes=``): ``cluster_sd`` and ``cluster_effects``
are then the random intercept's at the slopes' value 0 on the user's scale
(lme4's convention), :attr:`NestedInterceptFit.cluster_level` holds the
level's whole covariance, and :meth:`to_frame` gives ``sd(<cluster>)``,
``sd(<slope>|<cluster>)`` and ``cor(<slope>|<cluster>)`` as
:meth:`hmlib.stats.mixed.MixedFit.to_frame` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import FitError
from hmlib.stats.mixed.results import LevelEffects, RandomInterceptFit, variance_rows
from hmlib.stats.mixed.separation import looks_separated, separated_terms
from hmlib.stats.mixed.terms import RandomEffects, RandomLevel

__all__ = ["HigherLevel", "NestedInterceptFit", "fit_nested_intercepts"]


@dataclass(frozen=True)
class HigherLevel:
    """One level above the cluster: its name, the SD of its random intercept, that SD's log-scale SE, its units."""

    name: str
    sd: float
    log_sd_std_error: float
    n_units: int


@dataclass(frozen=True, eq=False)
class NestedInterceptFit(RandomInterceptFit):
    """A :class:`RandomInterceptFit` of the cluster level with random intercepts at higher levels too.

    Attributes
    ----------
    higher : tuple of HigherLevel
        The levels above the cluster, outermost first.
    cluster_level : LevelEffects or None
        With random slopes: the cluster level's effects (intercept and slopes), their covariance and
        the standard errors of its log SDs and Fisher-z correlations; None without slopes.
    """

    higher: tuple = ()
    cluster_level: LevelEffects | None = None

    @property
    def slopes(self) -> tuple:
        """Names of the random slopes at the cluster level (empty without)."""
        return () if self.cluster_level is None else tuple(self.cluster_level.columns[1:])

    @property
    def icc(self) -> float:
        """Correlation of two patients of one cluster: every level's variance over the total.

        The higher levels count: two patients of one hospital share its
        country's effect too (latent logistic scale for binomial).
        """
        between = self.cluster_sd ** 2 + sum(h.sd ** 2 for h in self.higher)
        residual = self.residual_sd ** 2 if self.family == "gaussian" else np.pi ** 2 / 3.0
        return float(between / (between + residual))

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Estimates with Wald intervals: the fixed effects, ``sd(<level>)`` per higher level, ``sd(<cluster>)``,
        then with slopes ``sd(<slope>|<cluster>)`` and ``cor(<slope>|<cluster>)`` (module docstring)."""
        base = super().to_frame(level)
        z = stats.norm.ppf(0.5 + level / 2.0)
        if self.slopes:
            slope_rows = pd.DataFrame(variance_rows(self.cluster_level, z)[1:], columns=list(base.columns))
            base = pd.concat([base, slope_rows], ignore_index=True)
        if not self.higher:
            return base
        rows = []
        for h in self.higher:
            ok = h.sd > 0 and np.isfinite(h.log_sd_std_error)
            se = h.log_sd_std_error
            rows.append({"term": f"sd({h.name})", "estimate": h.sd, "std_error": h.sd * se if ok else np.nan,
                         "ci_lower": h.sd * np.exp(-z * se) if ok else np.nan,
                         "ci_upper": h.sd * np.exp(z * se) if ok else np.nan})
        p = len(self.term_names)
        return pd.concat([base.iloc[:p], pd.DataFrame(rows), base.iloc[p:]], ignore_index=True)


def fit_nested_intercepts(y, X, groups, higher: dict, *, family: str, term_names, cluster_name: str,
                          nagq: int = 1, slopes: dict | None = None) -> NestedInterceptFit:
    """Fit ``y ~ X + (1 | higher...) + (1 + slopes | cluster)`` with nested intercepts (module docstring).

    Parameters
    ----------
    y : array_like, shape (n,)
    X : array_like, shape (n, p)
    groups : array_like, shape (n,)
        Cluster labels (unique across the data, each cluster in one unit of every higher level).
    higher : dict
        ``{name: labels}`` of the higher levels, outermost first (may be empty when ``slopes`` are given).
    family : {"gaussian", "binomial"}
    term_names : sequence of str
    cluster_name : str
    nagq : int
        Must be 1 (Laplace) for nested effects and for random slopes.
    slopes : dict, optional
        ``{name: values}`` (shape (n,)) of random slopes at the cluster level, with an unstructured
        covariance (:class:`~hmlib.stats.mixed.terms.RandomLevel`).

    Returns
    -------
    NestedInterceptFit

    Raises
    ------
    FitError
        ``nagq`` above 1, or what :func:`~hmlib.stats.mixed.fit_mixed` raises.
    """
    from hmlib.stats.mixed import fit_mixed

    if int(nagq) != 1:
        raise FitError("adaptive Gauss-Hermite quadrature does not extend to nested random effects or random "
                       "slopes; the model with higher levels or slopes is fitted by Laplace (nagq = 1).")
    groups = np.asarray(groups)
    slopes = {str(k): np.asarray(v, dtype=float) for k, v in (slopes or {}).items()}
    structure = RandomEffects((*(RandomLevel(str(name), np.asarray(labels)) for name, labels in higher.items()),
                               RandomLevel(str(cluster_name), groups, slopes=slopes)))
    fit = fit_mixed(y, X, structure, family=family, term_names=list(term_names))
    inner = fit.levels[-1]
    labels = np.asarray(inner.cluster_path[-1])
    total = inner.modes[:, 0].copy()
    variance = inner.mode_sd[:, 0] ** 2
    for k, level in enumerate(fit.levels[:-1]):
        # each cluster's unit at level k: match on the path of labels down to that level
        index = {tuple(p[j] for p in level.cluster_path): j for j in range(level.n_clusters)}
        rows = np.array([index[tuple(path[i] for path in inner.cluster_path[:k + 1])]
                         for i in range(inner.n_clusters)])
        total += level.modes[rows, 0]
        variance += level.mode_sd[rows, 0] ** 2
    order = np.argsort(labels, kind="stable")
    separated = ()
    X = np.asarray(X, dtype=float)
    if family == "binomial" and looks_separated(X, fit.coef, fit.std_error):
        separated = separated_terms(np.asarray(y, dtype=float), X, tuple(term_names))
    return NestedInterceptFit(
        family=fit.family, method=fit.method, term_names=tuple(term_names), coef=fit.coef,
        std_error=fit.std_error, cov=fit.cov, cluster_sd=float(inner.sd[0]),
        log_cluster_sd_std_error=float(inner.log_sd_std_error[0]), residual_sd=fit.residual_sd,
        loglik=fit.loglik, n_obs=fit.n_obs, n_clusters=inner.n_clusters, cluster_labels=labels[order],
        cluster_sizes=np.asarray(inner.sizes)[order], cluster_effects=total[order],
        cluster_effect_sd=np.sqrt(variance)[order], converged=fit.converged, cluster_name=cluster_name,
        nagq=1, optimizer_message=fit.optimizer_message, separated=separated,
        higher=tuple(HigherLevel(level.name, float(level.sd[0]), float(level.log_sd_std_error[0]),
                                 level.n_clusters) for level in fit.levels[:-1]),
        cluster_level=inner if slopes else None)
