"""The maximum-likelihood fit behind 2l.bin, warm-started within a chain.

2l.bin (:mod:`hmlib.stats.imputation`) draws ``beta*`` and ``tau*`` from the
normal approximation at the maximum-likelihood fit of the random-intercept
logistic model (Laplace, as ``glmer(nAGQ = 1)``) on the observed rows, at
every chained-equations iteration of every chain. With many predictors (four
categorical ones and 35 higher-level indicators give 58 columns) a fit by
:func:`hmlib.stats.mixed.fit_random_intercept` costs about 0.6 s, three
quarters of it in two Hessians by central differences of the analytic
gradient (``2 (p + 1)`` gradient evaluations each).

:func:`fit_ri_logistic` gives the same fit faster:

- a chain's first fit of a variable is :func:`~hmlib.stats.mixed.fit_random_intercept`
  itself;
- later fits of the same variable in the same chain start from the previous
  estimate (the data differ only in the values imputed since) and take
  Newton steps on the same Laplace objective
  (:class:`hmlib.stats.mixed.binomial.BinomialObjective`, in the
  coordinates of the standardised design) with its **analytic** Hessian
  (:func:`laplace_hessian`), recomputed at every step until the Newton
  decrement is below ``1e-2``, then kept for the last steps (one gradient
  each) and recomputed at the optimum, where the decrement must be below
  ``1e-10`` (``fit_random_intercept`` stops
  at ``1e-12`` within its four Newton steps; both are the same maximum to
  far below a standard error). The covariance is the inverse of the
  analytic Hessian over ``(beta, theta)`` (its ``beta`` block, as lme4 and
  ``fit_random_intercept``); central differences agree with it to about
  ``1e-7`` relative (``tests/test_imputation_speed.py``);
- anything unusual falls back to ``fit_random_intercept``: no previous
  estimate, a cluster SD below ``WARM_MIN_SD`` (the boundary, where the
  reference fit has its own handling), a Hessian that is not positive
  definite, a step leaving ``theta >= 0``, no convergence in
  ``WARM_MAX_STEPS`` steps, or a coefficient variance above
  ``WARM_MAX_VARIANCE`` (a nearly flat likelihood, e.g. separation, where
  the point an optimiser stops at depends on its path: the full fit's
  path is then the one taken).

The warm start only moves where the optimiser begins, never what it
converges to, and it never crosses chains (the previous estimate is part of
the chain's state), so a chain's draws do not depend on the other chains or
on how the chains are split between processes.

Analytic Hessian of the Laplace log-likelihood
----------------------------------------------
Cluster ``j`` has rows ``i`` with ``eta_i = x_i' beta + theta u``; ``g(u) =
sum_i [y_i eta_i - log(1 + e^eta_i)] - u^2 / 2`` has its mode at ``u_j``
and curvature ``H_j = theta^2 sum_i w_i + 1`` (``w = p (1 - p)``); the
cluster's Laplace log-likelihood is ``L_j = g(u_j) - log(H_j) / 2``. With
``phi = (beta, theta)``, ``e_i = d eta_i / d phi = (x_i, u_j)``, the row
derivatives ``w' = w (1 - 2p)``, ``w'' = w (1 - 6w)`` and the implicit
derivatives of the mode ``u_phi = g_u phi / H`` and
``u_phi phi' = (g_u phi phi' - H_phi u_phi' - u_phi H_phi' - H_u u_phi u_phi') / H``:

``d2 L_j = g_phi phi' + H u_phi u_phi' + D D' / (2 H^2) - (H_phi phi' +
H_u phi u_phi' + u_phi H_u phi' + H_uu u_phi u_phi' + H_u u_phi phi') / (2 H)``

with ``D = H_phi + H_u u_phi`` (the total derivative of ``H``). Every term is
a sum over rows of a weight times ``e_i e_i'`` (one ``X' diag(c) X``) or a
sum over clusters of outer products of per-cluster vectors, so the Hessian
costs one pass over the rows, against ``2 (p + 1)`` for central differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, sparse

from hmlib.stats.mixed import fit_random_intercept
from hmlib.stats.mixed.binomial import BinomialObjective, logistic
from hmlib.stats.mixed.prepare import Prepared

__all__ = ["LogisticFit", "fit_ri_logistic", "laplace_hessian", "WARM_MAX_STEPS", "WARM_MIN_SD",
           "WARM_DECREMENT", "REUSE_DECREMENT",
           "WARM_MAX_VARIANCE", "SPARSE_SUMS_MIN_CELLS"]

#: Newton steps a warm-started fit may take before it falls back to the full fit.
WARM_MAX_STEPS = 12
#: A previous cluster SD below this (logit scale) is near the boundary: full fit instead.
WARM_MIN_SD = 1e-3
#: Newton decrement ``g' H^-1 g`` (negative log-likelihood) at which a warm-started fit has converged.
WARM_DECREMENT = 1e-10
#: Below this decrement the Newton steps keep their Hessian (module docstring).
REUSE_DECREMENT = 1e-2
#: A coefficient variance above this (standardised columns: an SD of 100) means a direction the
#: likelihood barely bends in (separation, a near-empty level); where the maximum lies along it
#: depends on the optimiser's path, so the full fit decides instead.
WARM_MAX_VARIANCE = 1e4
#: Design cells (rows x columns) from which the Hessian's weighted cluster sums are one sparse product
#: (below it, building the sparse matrix costs more than it saves: 0.7x at 500 x 4, 1.4x at 19,435 x 12).
SPARSE_SUMS_MIN_CELLS = 50_000


@dataclass(frozen=True)
class LogisticFit:
    """What 2l.bin needs of a random-intercept logistic fit.

    Attributes
    ----------
    coef : numpy.ndarray
        Fixed effects, in the columns of the design given.
    cov : numpy.ndarray
        Their covariance (the ``beta`` block of the inverse Hessian over ``(beta, theta)``).
    cluster_sd : float
        ``theta``, the SD of the cluster intercepts (logit scale).
    log_sd_se : float
        Standard error of ``log(theta)`` (delta method); NaN when unavailable.
    warm : bool
        Made by the warm-started Newton steps (False: by ``fit_random_intercept``).
    """

    coef: np.ndarray
    cov: np.ndarray
    cluster_sd: float
    log_sd_se: float
    warm: bool


def laplace_hessian(objective: BinomialObjective, params: np.ndarray):
    """Negative Laplace log-likelihood, its gradient and its analytic Hessian at ``params``.

    Parameters
    ----------
    objective : hmlib.stats.mixed.binomial.BinomialObjective
        With ``nagq = 1`` (Laplace).
    params : numpy.ndarray
        ``(beta_s, theta)`` in the objective's coordinates (``theta > 0``).

    Returns
    -------
    value : float
    gradient : numpy.ndarray, shape (p + 1,)
    hessian : numpy.ndarray, shape (p + 1, p + 1)
        Of the negative log-likelihood (module docstring).
    """
    d = objective.d
    Xs, y, codes = d.Xs, d.y, d.codes
    p = Xs.shape[1]
    theta = float(params[-1])
    value, gradient = objective(params)
    u, H = objective.last["u"], objective.last["H"]
    prob, w, _ = logistic(Xs @ params[:-1] + theta * u[codes])
    w1 = w * (1.0 - 2.0 * prob)
    w2 = w * (1.0 - 6.0 * w)
    t2 = theta * theta
    Sa1, Sw, Sw1, Sw2 = d.seg_sum(np.column_stack([y - prob, w, w1, w2])).T
    Hu = t2 * theta * Sw1
    inv_h = 1.0 / H
    hu_h = Hu * inv_h
    # weight of e_i e_i' in the row-level part
    c = -w - 0.5 * (t2 * w2 - (hu_h * theta)[codes] * w1) * inv_h[codes]
    Xw, Xw1, Xw2, Xc = _weighted_cluster_sums(d, np.stack([w, w1, w2, c]))     # J x p each
    Sc = d.seg_sum(c)

    def per_phi(Xsum, Ssum):   # sums of (row weight) e_i per cluster: J x (p + 1)
        return np.column_stack([Xsum, u * Ssum])

    g_uphi = -theta * per_phi(Xw, Sw)
    g_uphi[:, -1] += Sa1
    u_phi = g_uphi * inv_h[:, None]
    H_phi = t2 * per_phi(Xw1, Sw1)
    H_phi[:, -1] += 2.0 * theta * Sw
    D = H_phi + Hu[:, None] * u_phi
    H_uphi = t2 * theta * per_phi(Xw2, Sw2)
    H_uphi[:, -1] += 3.0 * t2 * Sw1
    H_uu = t2 * t2 * Sw2

    hess = np.empty((p + 1, p + 1))
    hess[:p, :p] = Xs.T @ (Xs * c[:, None])
    hess[:p, p] = hess[p, :p] = Xc.T @ u
    hess[p, p] = float(np.sum(u * u * Sc))
    k = -0.5 * inv_h
    # the parts of H_phiphi' and g_uphiphi' that are not e_i e_i' (beta-theta and theta-theta entries)
    cross = (2.0 * theta * Xw1 * k[:, None]).sum(axis=0) + (-Xw * (k * hu_h)[:, None]).sum(axis=0)
    hess[:p, p] += cross
    hess[p, :p] += cross
    hess[p, p] += float(np.sum((2.0 * Sw + 4.0 * theta * u * Sw1) * k) + np.sum(-2.0 * u * Sw * k * hu_h))

    def outer(weights, V, W=None):
        return (V * weights[:, None]).T @ (V if W is None else W)

    hess += outer(H, u_phi)                                # g_phi u u_phi' = H u_phi u_phi'
    hess += outer(0.5 * inv_h ** 2, D)                     # D D' / (2 H^2)
    mixed = outer(k, H_uphi, u_phi) - outer(k * hu_h, H_phi, u_phi)
    hess += mixed + mixed.T
    hess += outer(k * H_uu - k * hu_h * Hu, u_phi)
    return value, gradient, -hess


def _weighted_cluster_sums(d: Prepared, weights: np.ndarray) -> list:
    """``sum_i weights[k, i] x_i`` over each cluster's rows, for each row of ``weights``: k arrays J x p.

    From ``SPARSE_SUMS_MIN_CELLS`` design cells on, one sparse product (rows sorted by cluster: each
    cluster a contiguous run) instead of a weighted copy of the design and a segment sum per weight;
    the two agree to rounding (summation order).
    """
    if d.Xs.size < SPARSE_SUMS_MIN_CELLS:
        return [d.seg_sum(d.Xs * weight[:, None]) for weight in weights]
    k, n = weights.shape
    J = d.m
    bounds = np.r_[d.starts, n]
    indptr = np.concatenate([bounds[:-1] + i * n for i in range(k)] + [[k * n]])
    blocks = sparse.csr_matrix((weights.ravel(), np.tile(np.arange(n), k), indptr), shape=(k * J, n))
    sums = blocks @ d.Xs
    return [sums[i * J:(i + 1) * J] for i in range(k)]


def _prepared(Do: np.ndarray, yo: np.ndarray, co: np.ndarray) -> Prepared:
    """The fitting problem in the coordinates of the (standardised) design, rows sorted by cluster."""
    order = np.argsort(co, kind="stable")
    labels, codes = np.unique(co[order], return_inverse=True)
    sizes = np.bincount(codes, minlength=labels.size)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    p = Do.shape[1]
    return Prepared(y=yo[order], Xs=Do[order], to_original=np.eye(p), codes=codes, starts=starts, sizes=sizes,
                    labels=labels, term_names=tuple(f"x{k}" for k in range(p)))


def _newton_from(objective: BinomialObjective, x: np.ndarray):
    """Newton steps from ``x`` with the analytic Hessian; near the optimum the last Hessian is kept.

    While the Newton decrement is above ``REUSE_DECREMENT`` every step gets a
    new Hessian (quadratic convergence); below it the last Hessian serves for
    the remaining steps (one gradient each: it is then close to the Hessian
    at the optimum, so they converge fast), and the Hessian is recomputed at
    the end. Returns ``(x, hessian)`` at a point whose Newton decrement under
    its own Hessian is below ``WARM_DECREMENT``, or None.
    """
    value, grad, hess = laplace_hessian(objective, x)
    fresh = True
    for _ in range(WARM_MAX_STEPS):
        try:
            factor = linalg.cho_factor(hess, check_finite=False)
        except linalg.LinAlgError:
            return None
        step = -linalg.cho_solve(factor, grad, check_finite=False)
        decrement = float(-grad @ step)
        if not np.isfinite(decrement):
            return None
        if decrement < WARM_DECREMENT:
            if fresh:
                return x, hess
            value, grad, hess = laplace_hessian(objective, x)
            fresh = True
            continue
        t = 1.0
        for _ in range(30):
            candidate = x + t * step
            if candidate[-1] <= 0.0:
                return None
            new_value, new_grad = objective(candidate)
            if new_value <= value + 1e-12 * abs(value):
                break
            t *= 0.5
        else:
            return None
        x = candidate
        if decrement > REUSE_DECREMENT:
            value, grad, hess = laplace_hessian(objective, x)
            fresh = True
        else:
            value, grad = new_value, new_grad
            fresh = False
    return None


def _warm_fit(Do, yo, co, start) -> LogisticFit | None:
    coef, theta = start
    if not (theta > WARM_MIN_SD and coef.shape == (Do.shape[1],) and np.all(np.isfinite(coef))):
        return None
    d = _prepared(Do, yo, co)
    if d.m < 2:
        return None
    objective = BinomialObjective(d, 1)
    found = _newton_from(objective, np.r_[coef, theta])
    if found is None:
        return None
    x, hess = found
    p = Do.shape[1]
    try:
        inv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return None
    cov = 0.5 * (inv[:p, :p] + inv[:p, :p].T)
    if not (np.all(np.isfinite(cov)) and inv[p, p] > 0 and np.max(np.diag(cov)) < WARM_MAX_VARIANCE):
        return None
    theta = float(x[-1])
    return LogisticFit(coef=x[:p].copy(), cov=cov, cluster_sd=theta, log_sd_se=float(np.sqrt(inv[p, p]) / theta),
                       warm=True)


def fit_ri_logistic(Do: np.ndarray, yo: np.ndarray, co: np.ndarray, *, start=None) -> LogisticFit:
    """Maximum-likelihood fit of ``logit P(y = 1) = x' beta + u_cluster`` (Laplace), warm-started if possible.

    Parameters
    ----------
    Do : numpy.ndarray, shape (n, p)
        Design of the observed rows (2l.bin's: intercept, standardised columns).
    yo : numpy.ndarray
        0/1 values.
    co : numpy.ndarray of int
        Cluster code of each row.
    start : tuple, optional
        ``(coef, cluster_sd)`` of the previous fit of this variable in this
        chain; without it (or when the warm start fails, module docstring)
        :func:`hmlib.stats.mixed.fit_random_intercept` fits.

    Returns
    -------
    LogisticFit

    Raises
    ------
    hmlib.exceptions.FitError
        From ``fit_random_intercept`` (separation, a single cluster, ...).
    """
    if start is not None:
        fit = _warm_fit(Do, yo, co, start)
        if fit is not None:
            return fit
    fit = fit_random_intercept(yo, Do, co, family="binomial")
    return LogisticFit(coef=np.array(fit.coef), cov=0.5 * (fit.cov + fit.cov.T), cluster_sd=float(fit.cluster_sd),
                       log_sd_se=float(fit.log_cluster_sd_std_error), warm=False)
