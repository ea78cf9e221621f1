"""The gaussian general mixed model by profiled maximum likelihood (``lmer(REML = FALSE)``).

For fixed ``theta`` the penalised least-squares problem
``min_{u, beta} ||y - X beta - Z Lambda u||^2 + ||u||^2`` is solved by one
pass of :func:`~hmlib.stats.mixed.nested_cholesky.factorize` with ``[X, y]``
as extra columns: its Schur complement is ``[[R_X'R_X, c], [c', r_yy]]``, so
``beta = (R_X'R_X)^-1 c`` and the penalised residual sum of squares is
``r^2 = r_yy - c' beta``. The profiled deviance (Bates et al. 2015, eq. 34)
is ``log det H + n (1 + log(2 pi r^2 / n))``. All per-row work is done once:
the cross-products of the random-effect columns with themselves and with
``[X, y]`` per innermost cluster do not depend on ``theta``, so an
evaluation costs a few operations per cluster.

Gradient over the entries of ``Lambda`` (then read at ``theta``'s
positions), with ``P_c`` the block of ``H^-1`` on cluster ``c``'s chain,
``S_c`` the chain cross-products of its rows, ``U_c`` the chain of
conditional modes and ``rho_c = sum_i v_i (y_i - x_i' beta - v_i' Lambda U_c)``:
``d log det H = 2 sum_c S_c Lambda P_c`` and ``d r^2 = -2 sum_c rho_c U_c'``
(envelope theorem), so ``d deviance = d log det H + n d r^2 / r^2``.

Standard errors: ``cov(beta) = sigma^2 (R_X'R_X)^-1`` (as lme4's ``vcov``,
conditional on ``theta``). For the variance parameters the observed
information over ``(theta, log sigma)`` of the likelihood profiled over
``beta`` is, with ``sigma^2 = r^2 / n``,
``[[(H_ld + H_r / sigma^2) / 2, -g_r / sigma^2], [., 2 n]]`` where ``g_r``
is the gradient of ``r^2`` and ``H_ld``, ``H_r`` are central-difference
Jacobians of the analytic gradients of ``log det H`` and ``r^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from hmlib.exceptions import FitError
from hmlib.stats.mixed.nested_cholesky import NestedFactor, factorize, sandwich, stacked_matvec, summed_products
from hmlib.stats.mixed.optimise import minimise
from hmlib.stats.mixed.terms import NestedDesign
from hmlib.stats.mixed.variance_parameters import ThetaLayout

__all__ = ["ProfiledDeviance", "GaussianSolution", "fit_profiled", "chain_values", "block_diagonal",
           "scaled_blocks"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def block_diagonal(blocks) -> np.ndarray:
    """Block-diagonal matrix of square blocks (an empty 0 x 0 matrix for none)."""
    blocks = list(blocks)
    return linalg.block_diag(*blocks) if blocks else np.zeros((0, 0))


def chain_values(design: NestedDesign, per_level) -> np.ndarray:
    """(m_L, Q): per innermost cluster, the values of its chain (levels 0..L-1) from per-level (m_k, q_k) arrays."""
    last = design.n_levels - 1
    return np.concatenate([per_level[k][design.ancestors[last][k]] for k in range(design.n_levels)], axis=1)


def scaled_blocks(design: NestedDesign, level_cross, lambdas, level_extra=None):
    """Scale per-level cross-products by ``Lambda``: the ``own`` and ``coupling`` inputs of ``factorize``.

    ``level_cross[k]`` is (m_k, q_k, t_k + q_k): level k's columns against
    the chain up to and including its own; ``level_extra[k]`` (m_k, q_k, e).
    """
    own, coupling = [], []
    for k, lam in enumerate(lambdas):
        t = design.offsets[k]
        cross = level_cross[k]
        own.append(sandwich(lam.T, cross[:, :, t:], lam))
        parts = []
        if t:
            parts.append(sandwich(lam.T, cross[:, :, :t], block_diagonal(lambdas[:k])))
        if level_extra is not None:
            parts.append(sandwich(lam.T, level_extra[k], None))
        if not parts:
            parts.append(np.zeros((cross.shape[0], lam.shape[0], 0)))
        coupling.append(np.concatenate(parts, axis=2) if len(parts) > 1 else parts[0])
    return own, coupling


@dataclass(eq=False)
class GaussianSolution:
    """The penalised least-squares solution at one ``theta``."""

    theta: np.ndarray
    deviance: float
    beta_s: np.ndarray
    r2: float
    xtx_chol: tuple
    factor: NestedFactor


class ProfiledDeviance:
    """Profiled ML deviance of the gaussian model over ``theta``, with its analytic gradient.

    Calling the object with ``theta`` returns ``(deviance, gradient)``.

    Parameters
    ----------
    design : NestedDesign

    Raises
    ------
    FitError
        y is an exact linear function of X.
    """

    def __init__(self, design: NestedDesign):
        self.design = design
        self.layout = ThetaLayout(design.q)
        base = design.base
        self.n, self.p = base.n, base.Xs.shape[1]
        extras = np.column_stack([base.Xs, base.y])
        V = design.covariates
        cc = design.coord_covariate
        leaf_cross = design.row_sums(V[:, :, None] * V[:, None, :])
        leaf_extra = design.row_sums(V[:, :, None] * extras[:, None, :])
        self.extra_cross = extras.T @ extras
        self.chain_cross = leaf_cross[:, cc][:, :, cc]          # (m_L, Q, Q)
        self.chain_extra = leaf_extra[:, cc, :]                 # (m_L, Q, e)
        self.chain_x = np.ascontiguousarray(self.chain_extra[:, :, :self.p])
        self.chain_y = np.ascontiguousarray(self.chain_extra[:, :, self.p])
        self.level_cross, self.level_extra = [], []
        for k in range(design.n_levels):
            coords = design.coords(k)
            top = design.offsets[k] + design.q[k]
            self.level_cross.append(design.leaf_to_level(self.chain_cross[:, coords, :top], k))
            self.level_extra.append(design.leaf_to_level(self.chain_extra[:, coords, :], k))
        beta_ols = base.Xs.T @ base.y / self.n
        resid = base.y - base.Xs @ beta_ols
        if float(resid @ resid) <= 1e-12 * max(float(base.y @ base.y), 1e-300):
            raise FitError("y is an exact linear function of X (zero residual variance): "
                           "a variance model cannot be fitted.")

    def solve(self, theta: np.ndarray) -> GaussianSolution | None:
        """Penalised least squares at ``theta`` (None where it cannot be solved)."""
        d = self.design
        lambdas = self.layout.lambdas(theta)
        own, coupling = scaled_blocks(d, self.level_cross, lambdas, self.level_extra)
        factor = factorize(d.q, d.offsets, d.child_starts, d.ancestors, own, coupling, self.extra_cross)
        p = self.p
        schur = factor.schur
        try:
            chol = linalg.cho_factor(schur[:p, :p], lower=True)
        except linalg.LinAlgError:
            return None
        beta_s = linalg.cho_solve(chol, schur[:p, p])
        r2 = float(schur[p, p] - schur[:p, p] @ beta_s)
        if not r2 > 0 or not np.isfinite(factor.logdet):
            return None
        deviance = factor.logdet + self.n * (1.0 + _LOG_2PI + np.log(r2 / self.n))
        return GaussianSolution(theta=np.array(theta, dtype=float), deviance=float(deviance), beta_s=beta_s,
                                r2=r2, xtx_chol=chol, factor=factor)

    def modes(self, sol: GaussianSolution) -> list:
        """Spherical conditional modes ``u`` per level at the solution."""
        return sol.factor.backward(extra=np.r_[sol.beta_s, -1.0])

    def gradient_parts(self, sol: GaussianSolution):
        """Gradients over ``theta`` of ``log det H`` and of ``r^2``."""
        d = self.design
        lam = block_diagonal(self.layout.lambdas(sol.theta))
        U = chain_values(d, self.modes(sol))
        P = sol.factor.chain_covariance()[-1]
        logdet_matrix = 2.0 * summed_products(sandwich(None, self.chain_cross, lam), P)
        rho = (self.chain_y - stacked_matvec(self.chain_x, sol.beta_s)
               - np.einsum("mij,mj->mi", self.chain_cross, U @ lam.T))
        r2_matrix = -2.0 * rho.T @ U
        return self.layout.from_chain(logdet_matrix), self.layout.from_chain(r2_matrix)

    def __call__(self, theta: np.ndarray):
        sol = self.solve(theta)
        if sol is None:
            return np.inf, np.zeros(self.layout.size)
        g_logdet, g_r2 = self.gradient_parts(sol)
        return sol.deviance, g_logdet + self.n * g_r2 / sol.r2

    def second_derivatives(self, theta: np.ndarray) -> dict:
        """Central-difference Jacobians of the analytic gradients of ``log det H`` and ``r^2`` at ``theta``.

        Returns
        -------
        dict
            ``theta``, ``h_logdet``, ``h_r2`` (k x k), ``g_r2`` (k) and ``r2``.
        """
        theta = np.array(theta, dtype=float)
        k = theta.size
        h_logdet, h_r2 = np.empty((k, k)), np.empty((k, k))
        for i in range(k):
            step = 1e-5 * max(1.0, abs(theta[i]))
            e = np.zeros(k)
            e[i] = step
            plus = self.gradient_parts(self.solve(theta + e))
            minus = self.gradient_parts(self.solve(theta - e))
            h_logdet[:, i] = (plus[0] - minus[0]) / (2 * step)
            h_r2[:, i] = (plus[1] - minus[1]) / (2 * step)
        sol = self.solve(theta)
        return dict(theta=theta, h_logdet=0.5 * (h_logdet + h_logdet.T), h_r2=0.5 * (h_r2 + h_r2.T),
                    g_r2=self.gradient_parts(sol)[1], r2=sol.r2)

    def deviance_hessian(self, second: dict) -> np.ndarray:
        """Hessian of the profiled deviance ``log det H + n log r^2 + const`` over theta."""
        r2, g = second["r2"], second["g_r2"]
        return second["h_logdet"] + self.n * (second["h_r2"] / r2 - np.outer(g, g) / r2 ** 2)

    def variance_information(self, second: dict, free: np.ndarray) -> np.ndarray:
        """Observed information over ``(theta[free], log sigma)`` of the likelihood profiled over beta."""
        idx = np.flatnonzero(free)
        k = idx.size
        sigma2 = second["r2"] / self.n
        info = np.empty((k + 1, k + 1))
        info[:k, :k] = 0.5 * (second["h_logdet"][np.ix_(idx, idx)] + second["h_r2"][np.ix_(idx, idx)] / sigma2)
        info[:k, k] = info[k, :k] = -second["g_r2"][idx] / sigma2
        info[k, k] = 2.0 * self.n
        return info


def _snap_to_boundary(objective: ProfiledDeviance, theta: np.ndarray, deviance: float):
    """Set diagonal entries of ``theta`` that are numerically 0 to exactly 0 when that costs < 1e-9."""
    layout = objective.layout
    for i in np.flatnonzero(layout.diagonal & (theta > 0) & (theta < 1e-4)):
        trial = theta.copy()
        trial[i] = 0.0
        trial[(layout.level == layout.level[i]) & (layout.col == layout.col[i]) & ~layout.diagonal] = 0.0
        sol = objective.solve(trial)
        if sol is not None and sol.deviance <= deviance + 1e-9:
            theta, deviance = trial, sol.deviance
    return theta


def fit_profiled(design: NestedDesign):
    """Minimise the profiled deviance over ``theta``.

    Returns
    -------
    objective : ProfiledDeviance
    solution : GaussianSolution
        At the optimum.
    second : dict
        :meth:`ProfiledDeviance.second_derivatives` at (or within 1e-6 of) the optimum.
    converged : bool
    message : str
    """
    objective = ProfiledDeviance(design)
    layout = objective.layout
    starts = [layout.start(s) for s in (0.25, 1.0, 3.0)]
    values = [objective.solve(s) for s in starts]
    devs = [np.inf if v is None else v.deviance for v in values]
    if not np.isfinite(devs).any():
        raise FitError("the gaussian likelihood could not be evaluated (X is numerically singular "
                       "after accounting for the random effects).")
    x0 = starts[int(np.argmin(devs))]
    seconds = []

    def hessian(theta):
        seconds.append(objective.second_derivatives(theta))
        return objective.deviance_hessian(seconds[-1])

    x, f, _, decrement, message = minimise(objective, x0, layout.lower, float(objective.n), layout.diagonal,
                                           hessian=hessian)
    x = _snap_to_boundary(objective, x, f)
    second = seconds[-1]
    if np.max(np.abs(second["theta"] - x)) > 1e-6:
        second = objective.second_derivatives(x)
    sol = objective.solve(x)
    if sol is None:
        raise FitError("the gaussian model could not be solved at the optimum (X numerically singular).")
    converged = bool(np.isfinite(decrement) and decrement < 1e-8)
    message += "" if converged else f"; Newton decrement {decrement:.3g} at the end"
    if float(np.max(np.abs(x), initial=0.0)) > 1e4:
        converged = False
        message += "; a random-effect SD / residual SD ratio above 1e4"
    return objective, sol, second, converged, message
