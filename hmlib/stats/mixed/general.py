"""From the optimum of the gaussian or binomial general model to a :class:`MixedFit`.

Runs the fitter of the family (:mod:`~hmlib.stats.mixed.profiled`,
:mod:`~hmlib.stats.mixed.laplace`), then maps everything back to the
user's scales: fixed effects through the orthogonalised design, random
effects through the slope standardisation (``A_k``), the covariance of the
variance parameters to standard errors of ``log(SD)`` and ``atanh(cor)``
(:mod:`~hmlib.stats.mixed.variance_parameters`). A level whose covariance
factor has a zero on its diagonal lies on the boundary of the parameter
space: its parameters are held fixed for the information matrix and its
variance rows have no standard error.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from hmlib.exceptions import FitError
from hmlib.stats.mixed.laplace import fit_laplace
from hmlib.stats.mixed.prepare import readonly
from hmlib.stats.mixed.profiled import fit_profiled
from hmlib.stats.mixed.results import LevelEffects, MixedFit
from hmlib.stats.mixed.terms import NestedDesign
from hmlib.stats.mixed.variance_parameters import (ThetaLayout, level_covariances, transformed_covariance)

__all__ = ["fit_general_gaussian", "fit_general_binomial"]


def _free_theta(layout: ThetaLayout, theta: np.ndarray) -> np.ndarray:
    """Entries of theta that are not part of a level on the boundary (a zero on Lambda_k's diagonal)."""
    free = np.ones(layout.size, dtype=bool)
    for k in range(len(layout.q)):
        mask = layout.level_mask(k)
        if np.any(theta[mask & layout.diagonal] == 0.0):
            free[mask] = False
    return free


def _levels(design: NestedDesign, layout: ThetaLayout, theta, scale, modes, chain_cov, params, has_scale,
            cov_params) -> tuple:
    """The LevelEffects of every level, on the user's scale."""
    lambdas = layout.lambdas(theta)
    covariances = level_covariances(layout, design.to_user, theta, scale)
    transformed = transformed_covariance(layout, design.to_user, params, has_scale, cov_params)
    se = np.sqrt(np.diag(transformed))
    out, position = [], 0
    for k, (lam, A) in enumerate(zip(lambdas, design.to_user)):
        q, t = design.q[k], design.offsets[k]
        log_sd_se = se[position:position + q]
        position += q
        cor_se = np.full((q, q), np.nan)
        for s in range(q):
            for r in range(s + 1, q):
                cor_se[r, s] = se[position]
                position += 1
        factor = A @ lam
        effects = modes[k] @ factor.T     # b = Lambda u: the penalised least-squares u carries the scale
        cond = (scale * scale) * (factor @ chain_cov[k][:, t:, t:] @ factor.T)
        effect_sd = np.sqrt(np.maximum(np.diagonal(cond, axis1=1, axis2=2), 0.0))
        path = tuple(np.asarray(design.labels[j])[design.ancestors[k][j]] for j in range(k + 1))
        sizes = design.sizes[k].copy()
        readonly(covariances[k], log_sd_se, cor_se, effects, effect_sd, sizes, *path)
        out.append(LevelEffects(name=design.level_names[k], columns=design.columns[k], covariance=covariances[k],
                                log_sd_std_error=log_sd_se, atanh_cor_std_error=cor_se, cluster_path=path,
                                sizes=sizes, modes=effects, mode_sd=effect_sd))
    return tuple(out)


def _fixed(design: NestedDesign, beta_s, cov_s):
    T = design.base.to_original
    coef = T @ beta_s
    cov = T @ cov_s @ T.T
    cov = 0.5 * (cov + cov.T)
    std_error = np.sqrt(np.abs(np.diag(cov)))
    readonly(coef, cov, std_error)
    return coef, cov, std_error


def fit_general_gaussian(design: NestedDesign) -> MixedFit:
    """Maximum-likelihood fit of the gaussian model (``lmer(REML = FALSE)``)."""
    objective, sol, second, converged, message = fit_profiled(design)
    layout, n, p = objective.layout, objective.n, objective.p
    sigma2 = sol.r2 / n
    sigma = float(np.sqrt(sigma2))
    coef, cov, std_error = _fixed(design, sol.beta_s, sigma2 * linalg.cho_solve(sol.xtx_chol, np.eye(p)))
    free = _free_theta(layout, sol.theta)
    cov_params = np.zeros((layout.size + 1, layout.size + 1))
    keep = np.r_[np.flatnonzero(free), layout.size]
    try:
        info = objective.variance_information(second, free)
        cov_params[np.ix_(keep, keep)] = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov_params[:] = np.nan
    params = np.r_[sol.theta, np.log(sigma)]
    levels = _levels(design, layout, sol.theta, sigma, objective.modes(sol), sol.factor.chain_covariance(),
                     params, True, cov_params)
    return MixedFit(family="gaussian", method="ML", term_names=design.base.term_names, coef=coef,
                    std_error=std_error, cov=cov, levels=levels, residual_sd=sigma, loglik=float(-0.5 * sol.deviance),
                    n_obs=n, converged=converged, optimizer_message=message)


def fit_general_binomial(design: NestedDesign, start=None, hessian=None, newton_matrix=None) -> MixedFit:
    """Maximum-likelihood fit of the logistic model by the Laplace approximation (``glmer(nAGQ = 1)``);
    ``start``, ``hessian``, ``newton_matrix``: an earlier fit's :attr:`MixedFit.optimum` and
    :attr:`MixedFit.optimum_hessian` (:func:`~hmlib.stats.mixed.laplace.fit_laplace`)."""
    objective, x, value, hess, converged, message = fit_laplace(design, start, hessian, newton_matrix)
    layout, p = objective.layout, objective.p
    theta = x[p:]
    free = np.r_[np.ones(p, dtype=bool), _free_theta(layout, theta)]
    try:
        inv = np.linalg.inv(hess[np.ix_(free, free)])
    except np.linalg.LinAlgError:
        raise FitError("the information matrix of the binomial mixed model is singular: "
                       "check for separation or a predictor without variation.") from None
    full = np.zeros((x.size, x.size))
    full[np.ix_(free, free)] = inv
    cov_s = full[:p, :p]
    if np.linalg.eigvalsh(0.5 * (inv + inv.T)).min() <= 0:
        converged = False
        message += "; information matrix not positive definite"
    coef, cov, std_error = _fixed(design, x[:p], cov_s)
    last = objective.last
    levels = _levels(design, layout, theta, 1.0, last["u"], last["chain_covariance"], theta, False,
                     full[p:, p:])
    return MixedFit(family="binomial", method="ML, Laplace", term_names=design.base.term_names, coef=coef,
                    std_error=std_error, cov=cov, levels=levels, residual_sd=None, loglik=float(-value),
                    n_obs=design.base.n, converged=converged, optimizer_message=message, optimum=x,
                    optimum_hessian=hess)
