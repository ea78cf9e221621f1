"""The gaussian random-intercept model by profiled maximum likelihood (``lmer(REML = FALSE)``).

The profiled deviance over ``theta`` (cluster SD / residual SD), its
minimisation, and the fit with its standard errors; the formulas are in
:mod:`hmlib.stats.mixed` ("Gaussian").
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize

from hmlib.exceptions import FitError
from hmlib.stats.mixed.prepare import Prepared, readonly
from hmlib.stats.mixed.results import RandomInterceptFit

__all__ = ["GaussianProfile", "fit_gaussian"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class GaussianProfile:
    """Sufficient statistics of the gaussian model, relative to the OLS fit.

    Parameters
    ----------
    d : Prepared

    Raises
    ------
    FitError
        y is an exact linear function of X (no residual variance).
    """

    def __init__(self, d: Prepared):
        self.d = d
        n = d.n
        self.beta_ols = d.Xs.T @ d.y / n
        r0 = d.y - d.Xs @ self.beta_ols
        self.rr = float(r0 @ r0)
        self.Sx = d.seg_sum(d.Xs)             # m x p
        self.Sr = d.seg_sum(r0)               # m
        self.sizes = d.sizes.astype(float)
        if self.rr <= 1e-12 * max(float(d.y @ d.y), 1e-300):
            raise FitError("y is an exact linear function of X (zero residual variance): "
                           "a variance model cannot be fitted.")

    def solve(self, theta: float):
        """GLS for fixed theta: (deviance, delta beta_s, rss, cholesky of A, w)."""
        n = self.d.n
        t2 = theta * theta
        w = t2 / (1.0 + self.sizes * t2)
        A = n * np.eye(self.Sx.shape[1]) - (self.Sx * w[:, None]).T @ self.Sx
        b = -(self.Sx.T @ (w * self.Sr))
        try:
            chol = linalg.cho_factor(A, lower=True)
        except linalg.LinAlgError:
            return np.inf, None, np.nan, None, w
        delta = linalg.cho_solve(chol, b)
        rss = self.rr - float(w @ self.Sr ** 2) - float(b @ delta)
        if not rss > 0:
            return np.inf, None, np.nan, None, w
        dev = n * (_LOG_2PI + np.log(rss / n) + 1.0) + float(np.log1p(self.sizes * t2).sum())
        return dev, delta, rss, chol, w

    def deviance(self, theta: float) -> float:
        return self.solve(theta)[0]

    def loglik_full(self, delta, log_su, log_se) -> float:
        """Unprofiled log-likelihood at beta_s = beta_ols + delta, SDs exp(log_su), exp(log_se)."""
        n = self.d.n
        su2, se2 = np.exp(2 * log_su), np.exp(2 * log_se)
        cluster_sums = self.Sr - self.Sx @ delta
        rss = self.rr + n * float(delta @ delta)
        denom = se2 + self.sizes * su2
        quad = (rss - float(np.sum(su2 / denom * cluster_sums ** 2))) / se2
        logdet = float(np.sum((self.sizes - 1.0) * np.log(se2) + np.log(denom)))
        return -0.5 * (n * _LOG_2PI + logdet + quad)


def _minimise_theta(profile: GaussianProfile):
    grid = np.r_[0.0, np.geomspace(1e-3, 1e4, 36)]
    devs = np.array([profile.deviance(t) for t in grid])
    if not np.isfinite(devs).any():
        raise FitError("the gaussian likelihood could not be evaluated (X is numerically singular "
                       "after accounting for clusters).")
    k = int(np.nanargmin(devs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = optimize.minimize_scalar(profile.deviance, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10 * max(hi, 1e-3), "maxiter": 500})
    best_theta, best_dev = (res.x, res.fun) if res.fun < devs[k] else (grid[k], devs[k])
    # At the boundary the profile is flat to rounding error near 0; a theta
    # that gains less than 1e-9 in deviance is the boundary itself.
    if devs[0] <= best_dev + 1e-9:
        best_theta, best_dev = 0.0, devs[0]
    converged = bool(res.success) and k < grid.size - 1
    message = str(res.message) if k < grid.size - 1 else "cluster SD / residual SD ratio above 1e4"
    return float(best_theta), converged, message


def _numerical_hessian(fun, x, steps) -> np.ndarray:
    """Central-difference Hessian of a scalar function."""
    k = x.size
    hess = np.empty((k, k))
    f0 = fun(x)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        hess[i, i] = (fun(x + ei) - 2 * f0 + fun(x - ei)) / steps[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = steps[j]
            hess[i, j] = hess[j, i] = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej)
                                       + fun(x - ei - ej)) / (4 * steps[i] * steps[j])
    return hess


def fit_gaussian(d: Prepared, cluster_name: str) -> RandomInterceptFit:
    """Maximum-likelihood fit of the gaussian model (``lmer(REML = FALSE)``).

    Parameters
    ----------
    d : Prepared
    cluster_name : str
        For the term ``sd(<cluster_name>)``.

    Returns
    -------
    RandomInterceptFit
    """
    profile = GaussianProfile(d)
    theta, converged, message = _minimise_theta(profile)
    dev, delta, rss, chol, w = profile.solve(theta)
    if delta is None:
        raise FitError("the gaussian model could not be solved at the optimum (X numerically singular).")
    n, p = d.n, d.Xs.shape[1]
    sigma2 = rss / n
    sigma = float(np.sqrt(sigma2))
    su = theta * sigma
    beta_s = profile.beta_ols + delta
    cov_s = sigma2 * linalg.cho_solve(chol, np.eye(p))
    T = d.to_original
    coef = T @ beta_s
    cov = T @ cov_s @ T.T
    cov = 0.5 * (cov + cov.T)
    cluster_sums = profile.Sr - profile.Sx @ delta
    effects = w * cluster_sums
    effect_sd = sigma * np.sqrt(w)

    log_se = np.nan
    if su > 0:
        x0 = np.r_[delta, np.log(su), np.log(sigma)]
        steps = np.r_[1e-3 * np.sqrt(np.diag(cov_s)), 1e-4, 1e-4]
        hess = _numerical_hessian(lambda x: -profile.loglik_full(x[:p], x[p], x[p + 1]), x0, steps)
        try:
            inv = np.linalg.inv(hess)
            if inv[p, p] > 0:
                log_se = float(np.sqrt(inv[p, p]))
        except np.linalg.LinAlgError:
            pass
    std_error = np.sqrt(np.diag(cov))
    readonly(coef, std_error, cov, effects, effect_sd)
    sizes = d.sizes.copy()
    labels = d.labels.copy()
    readonly(sizes, labels)
    return RandomInterceptFit(
        family="gaussian", method="ML", term_names=d.term_names, coef=coef, std_error=std_error,
        cov=cov, cluster_sd=float(su), log_cluster_sd_std_error=log_se, residual_sd=sigma,
        loglik=float(-0.5 * dev), n_obs=n, n_clusters=d.m, cluster_labels=labels,
        cluster_sizes=sizes, cluster_effects=effects, cluster_effect_sd=effect_sd,
        converged=converged, cluster_name=cluster_name, nagq=1, optimizer_message=message)
