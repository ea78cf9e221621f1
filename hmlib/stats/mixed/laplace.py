"""The logistic general mixed model: Laplace approximation by PIRLS, its analytic gradient, and the fit.

For given ``(beta, theta)`` the conditional modes ``u`` minimise
``g(u) = -sum_i log p(y_i | eta_i) + ||u||^2 / 2`` with
``eta = X beta + Z Lambda u``; Newton's method on ``u`` (penalised
iteratively reweighted least squares, PIRLS) solves
``H delta = Lambda' Z' (y - mu) - u`` with ``H = I + Lambda' Z' W Z Lambda``,
``W = diag(mu (1 - mu))``, by the nested factor of
:mod:`~hmlib.stats.mixed.nested_cholesky`, halving steps that would increase
``g``. The objective minimised is
``f(beta, theta) = g(u*) + log det H(u*) / 2``, minus the Laplace
log-likelihood (lme4's Laplace deviance / 2), with the curvature taken at the
converged mode.

Gradient. With ``P_c`` the block of ``H^-1`` on chain ``c``,
``h_i = v_i' Lambda P_c Lambda' v_i``, ``c_i = w_i (1 - 2 mu_i) h_i``,
``lambda = H^-1 Lambda' Z' c`` (one more solve) and
``rho_i = -(y_i - mu_i) + c_i / 2 - w_i (Z Lambda lambda)_i / 2``, the
envelope theorem for ``g`` and implicit differentiation of the mode give
``df/dbeta = X' rho`` and, over the entries of ``Lambda``,
``df/dLambda = sum_c [S^w_c Lambda P_c + R_c U_c' + Y_c lambda_c' / 2]``,
where per innermost cluster ``S^w_c = sum_i w_i v_i v_i'``,
``R_c = sum_i rho_i v_i``, ``Y_c = sum_i (y_i - mu_i) v_i`` and ``U_c``,
``lambda_c`` are the chain values of ``u`` and ``lambda``.

The maximisation over ``(beta, theta)`` jointly is lme4's second stage: start
from a logistic regression, L-BFGS-B, then Newton steps with the Hessian
from central differences of the analytic gradient, whose inverse gives the
covariance of ``beta`` (including the uncertainty of ``theta``, as lme4's
``vcov`` for ``glmer``). A refit from an earlier optimum with a Newton matrix (the
imputation's chains, :func:`fit_laplace`) takes the Newton steps directly. Adaptive Gauss-Hermite
quadrature is not offered:
with more than one random effect per cluster, or nested clusters, the
integral is not a product of one-dimensional integrals.
"""

from __future__ import annotations

import numpy as np

from hmlib.exceptions import FitError
from hmlib.stats.mixed.binomial import MAX_BINOMIAL_SD, fit_logistic, logistic
from hmlib.stats.mixed.nested_cholesky import NestedFactor, factorize, sandwich, summed_products
from hmlib.stats.mixed.optimise import escape_boundary, hessian_from_gradient, minimise, newton_polish
from hmlib.stats.mixed.profiled import block_diagonal, chain_values, scaled_blocks
from hmlib.stats.mixed.terms import NestedDesign
from hmlib.stats.mixed.variance_parameters import ThetaLayout

__all__ = ["LaplaceObjective", "fit_laplace"]

# Modes are predicted to first order only for steps this small (in beta_s and theta); after a
# larger step the linear prediction can be a worse start than the previous modes.
_MAX_PREDICTED_STEP = 0.1


class LaplaceObjective:
    """Negative Laplace log-likelihood over ``(beta_s, theta)`` and its analytic gradient.

    Calling the object with ``params = (beta_s, theta)`` returns ``(value,
    gradient)``. The conditional modes of the last call are the start of the
    next mode search (``snapshot`` / ``restore`` save and reset them).

    Parameters
    ----------
    design : NestedDesign
    """

    def __init__(self, design: NestedDesign):
        self.design = design
        self.layout = ThetaLayout(design.q)
        self.p = design.base.Xs.shape[1]
        V = design.covariates
        self.n_covariates = V.shape[1]
        self.pairs = [(a, b) for a in range(V.shape[1]) for b in range(a, V.shape[1])]
        # products of covariate pairs, one contiguous row per pair (segment sums run along rows)
        self.pair_products = np.stack([V[:, a] * V[:, b] for a, b in self.pairs])
        # chain position -> covariate indicator, to collapse chain matrices to covariates
        self.collapse = np.zeros((design.chain_size, V.shape[1]))
        self.collapse[np.arange(design.chain_size), design.coord_covariate] = 1.0
        self.leaf_of_row = design.row_codes[-1]
        self.u = [np.zeros((m, q)) for m, q in zip(design.n_clusters, design.q)]
        self.n_evaluations = 0
        self.last = None

    def snapshot(self):
        """The warm-start state: modes and the state at the last evaluated point."""
        return [u.copy() for u in self.u], self.last

    def restore(self, state) -> None:
        """Return to a :meth:`snapshot` (None: start from zero modes)."""
        if state is None:
            self.u = [np.zeros_like(u) for u in self.u]
            self.last = None
        else:
            self.u = [u.copy() for u in state[0]]
            self.last = state[1]

    def _predicted_modes(self, params: np.ndarray) -> list:
        """Modes at ``params`` to first order from the last point: ``u + H^-1 [dLambda' Z' (y - mu)
        - Lambda' Z' W (X dbeta + Z dLambda u)]`` (implicit differentiation of the mode)."""
        last = self.last
        step = params - last["x"]
        if not np.any(step) or np.max(np.abs(step)) > _MAX_PREDICTED_STEP:
            return last["u"]
        d = self.design
        step_lambdas = self.layout.lambdas(step[self.p:])
        eta_step = d.base.Xs @ step[:self.p] + d.random_part([uk @ lam.T for uk, lam in zip(last["u"],
                                                                                          step_lambdas)])
        rhs = [a - b for a, b in zip(self._level_vectors(last["resid_sums"], step_lambdas),
                                     self._level_vectors(self._covariate_sums(last["w"] * eta_step),
                                                         last["lambdas"]))]
        return [uk + dk for uk, dk in zip(last["u"], last["factor"].solve(rhs))]

    def _segment_sums(self, columns: np.ndarray) -> np.ndarray:
        """Sums of each row of ``columns`` (k, n) over the rows of each innermost cluster: (m_L, k)."""
        return np.add.reduceat(columns, self.design.row_starts[-1], axis=1).T

    def _covariate_sums(self, values: np.ndarray) -> np.ndarray:
        """(m_L, Q): per innermost cluster, ``sum_i values_i v_i`` in chain positions."""
        d = self.design
        columns = np.empty((self.n_covariates, values.size))
        columns[0] = values
        for j in range(1, self.n_covariates):
            np.multiply(values, d.covariates[:, j], out=columns[j])
        return self._segment_sums(columns)[:, d.coord_covariate]

    def _leaf_sums(self, w: np.ndarray, resid: np.ndarray):
        """Per innermost cluster, in chain positions: ``sum_i w_i v_i v_i'`` (m_L, Q, Q) and
        ``sum_i resid_i v_i`` (m_L, Q), from one segment sum."""
        d = self.design
        dc, n_pairs = self.n_covariates, len(self.pairs)
        columns = np.empty((n_pairs + dc, w.size))
        columns[0] = w                                   # pair (0, 0): the column of ones
        for j in range(1, n_pairs):
            np.multiply(w, self.pair_products[j], out=columns[j])
        columns[n_pairs] = resid
        for j in range(1, dc):
            np.multiply(resid, d.covariates[:, j], out=columns[n_pairs + j])
        sums = self._segment_sums(columns)
        cross = np.empty((sums.shape[0], dc, dc))
        for j, (a, b) in enumerate(self.pairs):
            cross[:, a, b] = cross[:, b, a] = sums[:, j]
        cc = d.coord_covariate
        return cross[:, cc][:, :, cc], sums[:, n_pairs:][:, cc]

    def _level_vectors(self, chain_sums: np.ndarray, lambdas) -> list:
        """Per level ``Lambda_k' sum_{rows of the cluster} (values v_k)`` as (m_k, q_k) rows."""
        d = self.design
        return [d.leaf_to_level(chain_sums[:, d.coords(k)], k) @ lam for k, lam in enumerate(lambdas)]

    def _factor(self, cross: np.ndarray, lambdas) -> NestedFactor:
        d = self.design
        level_cross = []
        for k in range(d.n_levels):
            top = d.offsets[k] + d.q[k]
            level_cross.append(d.leaf_to_level(cross[:, d.coords(k), :top], k))
        own, coupling = scaled_blocks(d, level_cross, lambdas)
        return factorize(d.q, d.offsets, d.child_starts, d.ancestors, own, coupling)

    def _penalised(self, off, lambdas, u):
        d = self.design
        eta = off + d.random_part([uk @ lam.T for uk, lam in zip(u, lambdas)])
        mu, w, softplus = logistic(eta)
        value = -float(d.base.y @ eta - softplus.sum()) + 0.5 * sum(float(np.sum(uk * uk)) for uk in u)
        return value, mu, w

    def modes(self, off: np.ndarray, lambdas):
        """Conditional modes by PIRLS from the stored modes; returns the state at the mode."""
        d = self.design
        y = d.base.y
        u = self.u
        value, mu, w = self._penalised(off, lambdas, u)
        for _ in range(100):
            cross, resid_sums = self._leaf_sums(w, y - mu)
            factor = self._factor(cross, lambdas)
            rhs = [r - uk for r, uk in zip(self._level_vectors(resid_sums, lambdas), u)]
            delta = factor.solve(rhs)
            if max(float(np.max(np.abs(dk), initial=0.0)) for dk in delta) < 1e-10:
                break
            t = 1.0
            for _ in range(40):
                trial = [uk + t * dk for uk, dk in zip(u, delta)]
                trial_value, trial_mu, trial_w = self._penalised(off, lambdas, trial)
                if trial_value <= value + 1e-12 * abs(value):
                    break
                t *= 0.5
            else:
                break
            u, value, mu, w = trial, trial_value, trial_mu, trial_w
        return dict(u=u, value=value, mu=mu, w=w, cross=cross, factor=factor, resid_sums=resid_sums)

    def _evaluate(self, params: np.ndarray):
        """Modes at ``params`` (from the predicted modes) and the state there."""
        self.n_evaluations += 1
        if self.last is not None:
            self.u = self._predicted_modes(params)
        lambdas = self.layout.lambdas(params[self.p:])
        state = self.modes(self.design.base.Xs @ params[:self.p], lambdas)
        self.u = state["u"]
        self.last = dict(state, x=np.array(params, dtype=float), lambdas=lambdas)
        return state, lambdas

    def value(self, params: np.ndarray) -> float:
        """The negative Laplace log-likelihood alone (no gradient)."""
        state, _ = self._evaluate(params)
        return state["value"] + 0.5 * state["factor"].logdet

    def __call__(self, params: np.ndarray):
        """Return (negative Laplace log-likelihood, gradient over ``(beta_s, theta)``)."""
        d = self.design
        y = d.base.y
        state, lambdas = self._evaluate(params)
        factor, mu, w = state["factor"], state["mu"], state["w"]
        value = state["value"] + 0.5 * factor.logdet
        lam = block_diagonal(lambdas)
        P = factor.chain_covariance()
        leaf_P = P[-1]
        # h_i = v_i' Lambda P_c Lambda' v_i, through the covariates (C' M C)
        M = sandwich(self.collapse.T @ lam, leaf_P, lam.T @ self.collapse)
        if self.n_covariates == 1:
            h = M[:, 0, 0][self.leaf_of_row]
        else:
            h = np.zeros(d.base.n)
            for j, (a, b) in enumerate(self.pairs):
                h += (1.0 if a == b else 2.0) * M[:, a, b][self.leaf_of_row] * self.pair_products[j]
        c = w * (1.0 - 2.0 * mu) * h
        lagrange = factor.solve(self._level_vectors(self._covariate_sums(c), lambdas))
        rho = (mu - y) + 0.5 * c - 0.5 * w * d.random_part([lk @ lk_lam.T for lk, lk_lam in zip(lagrange, lambdas)])
        grad_beta = d.base.Xs.T @ rho
        U = chain_values(d, state["u"])
        chain_lagrange = chain_values(d, lagrange)
        grad_matrix = (summed_products(sandwich(None, state["cross"], lam), leaf_P)
                       + self._covariate_sums(rho).T @ U + 0.5 * state["resid_sums"].T @ chain_lagrange)
        self.last["chain_covariance"] = P
        return value, np.r_[grad_beta, self.layout.from_chain(grad_matrix)]


def _snap_to_boundary(objective: LaplaceObjective, x: np.ndarray, value: float):
    """Set diagonal entries of ``theta`` that are numerically 0 to exactly 0 when that costs < 1e-8."""
    layout, p = objective.layout, objective.p
    for i in np.flatnonzero(layout.diagonal & (x[p:] > 0) & (x[p:] < 1e-4)):
        trial = x.copy()
        trial[p + i] = 0.0
        state = objective.snapshot()
        trial_value = objective.value(trial)
        if trial_value <= value + 1e-8:
            x, value = trial, trial_value
        else:
            objective.restore(state)
    return x


def fit_laplace(design: NestedDesign, start: np.ndarray | None = None, hessian: np.ndarray | None = None,
                newton_matrix: np.ndarray | None = None):
    """Maximise the Laplace log-likelihood over ``(beta_s, theta)``.

    ``start``: a solution of an earlier fit of similar data (same columns and levels) to start
    from instead of the default starting values; ignored when it does not fit. ``hessian``: that
    fit's Hessian, used as the Newton matrix and returned instead of a new finite-difference one
    (``2 (p + q)`` gradients saved; the imputation's chains refit nearly the same data at every
    iteration); ignored when it does not fit. ``newton_matrix``: a Hessian of other rows (the
    full data, for a subset), used only to take the Newton steps; the fit's own Hessian is then
    computed at the optimum.

    With a start and one of the two matrices, Newton steps are taken from the start directly: from
    an earlier optimum of nearly the same data they converge in a few evaluations, where L-BFGS-B
    would first spend a dozen rebuilding the curvature. L-BFGS-B runs only when they do not
    converge, or when an SD at 0 may be a saddle (:func:`~hmlib.stats.mixed.optimise.escape_boundary`).
    The optimum is the one the full search reaches (it ends with the same Newton steps).

    Returns
    -------
    objective : LaplaceObjective
        Left at the optimum (``objective.last``).
    x : numpy.ndarray
        ``(beta_s, theta)`` at the optimum.
    value : float
        The negative Laplace log-likelihood there.
    hessian : numpy.ndarray
        Its central-difference Hessian over ``x``.
    converged : bool
    message : str

    Raises
    ------
    FitError
        The Hessian is not available (separation).
    """
    base = design.base
    n, p = base.n, base.Xs.shape[1]
    objective = LaplaceObjective(design)
    layout = objective.layout
    lower = np.r_[np.full(p, -np.inf), layout.lower]
    size = p + layout.size
    warm = start is not None and np.shape(start) == (size,) and bool(np.all(np.isfinite(start)))
    given = hessian if hessian is not None and np.shape(hessian) == (size, size) else None
    steps = np.full(size, 1e-5)
    boundary = np.r_[np.zeros(p, dtype=bool), layout.diagonal]
    matrix = given if given is not None else (
        newton_matrix if newton_matrix is not None and np.shape(newton_matrix) == (size, size) else None)
    x = hess = None
    if warm and matrix is not None:
        x0 = np.maximum(np.asarray(start, dtype=float), lower)
        x, value, _, decrement = newton_polish(objective, x0, lower, matrix)
        message = "Newton steps from the warm start"
        # an SD left at 0 may be a saddle (escape_boundary): then, as when the steps did not
        # converge, the full search, from the better point (the steps never end worse than the start)
        escape = escape_boundary(objective, x, value, boundary)
        if escape is not None or not (np.isfinite(decrement) and decrement < 1e-6):
            start_point, state, x = (x if escape is None else escape), objective.snapshot(), None
        else:
            hess = given if given is not None else hessian_from_gradient(objective, x, steps)
    if x is None and warm and matrix is None:
        start_point = np.maximum(np.asarray(start, dtype=float), lower)     # the earlier solution
        objective.value(start_point)
        state = objective.snapshot()
    if x is None:
        if not warm:
            # theta start: the best of a few values with beta from the logistic fit, each search of the
            # modes warm-started from the one before
            beta0, _, _, _ = fit_logistic(base.Xs, base.y)
            best = None
            for candidate in [np.r_[beta0, layout.start(scale)] for scale in (0.7, 0.3, 1.5)]:
                value = objective.value(candidate)
                if best is None or value < best[0]:
                    best = (value, candidate, objective.snapshot())
            _, start_point, state = best
        objective.restore(state)
        x, value, hess, decrement, message = minimise(objective, start_point, lower, float(n), boundary, steps,
                                                      hessian=None if given is None else (lambda _: given))
    x_polished = _snap_to_boundary(objective, x, value)
    if np.max(np.abs(x_polished - x)) > 1e-6:
        hess = hessian_from_gradient(objective, x_polished, steps)
    x = x_polished
    value = objective(x)[0]
    if not np.all(np.isfinite(hess)):
        raise FitError("the binomial mixed model did not converge (Hessian unavailable): check for "
                       "separation (a predictor or cluster with all-0 or all-1 outcomes).")
    converged = bool(np.isfinite(decrement) and decrement < 1e-6)
    if not converged:
        message += f"; Newton decrement {decrement:.3g} (gradient not small at the end)"
    sds = [np.sqrt(np.diag(lam @ lam.T)) for lam in layout.lambdas(x[p:])]
    if max(float(s.max()) for s in sds) > MAX_BINOMIAL_SD:
        converged = False
        message += ("; a random-effect SD above 25 on the logit scale is diverging (clusters whose "
                    "outcomes are all 0 or all 1 dominate): the estimate is not usable")
    return objective, x, float(value), hess, converged, message
