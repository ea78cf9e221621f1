"""The logistic random-intercept model: Laplace and adaptive Gauss-Hermite likelihoods, and the fit.

:class:`BinomialObjective` evaluates the negative approximate
log-likelihood over ``(beta_s, theta)`` with its analytic gradient;
:func:`fit_binomial` maximises it as described in :mod:`hmlib.stats.mixed`
("Binomial"). :func:`fit_logistic` is the model without cluster effect (the
start values, and the null model of the variance test).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize

from hmlib.exceptions import FitError
from hmlib.stats.mixed.prepare import Prepared, readonly
from hmlib.stats.mixed.results import RandomInterceptFit

__all__ = ["BinomialObjective", "fit_binomial", "fit_logistic", "logistic", "MAX_BINOMIAL_SD"]

# A logit-scale cluster SD above this (latent ICC > 0.995) means the likelihood
# keeps rising towards an infinite SD; the fit is then flagged as not converged.
MAX_BINOMIAL_SD = 25.0


def logistic(eta: np.ndarray):
    """Stable ``p = expit(eta)``, ``p (1 - p)`` and ``log(1 + exp(eta))``.

    Written with in-place operations: on large arrays the temporaries, not the
    arithmetic, dominate the cost.
    """
    e = np.abs(eta)
    np.negative(e, out=e)
    np.exp(e, out=e)                       # exp(-|eta|), no overflow
    r = e + 1.0
    np.reciprocal(r, out=r)                # 1 / (1 + exp(-|eta|))
    w = e * r
    w *= r                                 # p (1 - p)
    p = r - 0.5
    np.copysign(p, eta, out=p)
    p += 0.5                               # r for eta >= 0, 1 - r otherwise
    softplus = np.log1p(e, out=e)
    softplus += np.maximum(eta, 0.0)
    return p, w, softplus


def fit_logistic(Xs: np.ndarray, y: np.ndarray, max_iter: int = 100):
    """Logistic regression by Newton's method (the model without cluster effect).

    Returns
    -------
    beta : numpy.ndarray
    loglik : float
    converged : bool
    information : numpy.ndarray
        ``Xs' W Xs`` at ``beta``.
    """
    p = Xs.shape[1]
    beta = np.zeros(p)
    eta = np.zeros_like(y)
    prob, w, sp = logistic(eta)
    ll = float(y @ eta - sp.sum())
    converged = False
    for _ in range(max_iter):
        info = Xs.T @ (Xs * w[:, None])
        score = Xs.T @ (y - prob)
        try:
            step = linalg.solve(info, score, assume_a="pos")
        except (linalg.LinAlgError, ValueError):
            break
        t = 1.0
        for _ in range(30):
            new_beta = beta + t * step
            new_eta = Xs @ new_beta
            new_prob, new_w, new_sp = logistic(new_eta)
            new_ll = float(y @ new_eta - new_sp.sum())
            if new_ll >= ll - 1e-12 * abs(ll):
                break
            t *= 0.5
        gain = new_ll - ll
        beta, eta, prob, w, ll = new_beta, new_eta, new_prob, new_w, new_ll
        if abs(gain) < 1e-10 * (1 + abs(ll)) and float(score @ step) < 1e-10:
            converged = True
            break
    info = Xs.T @ (Xs * w[:, None])
    return beta, ll, converged, info


class BinomialObjective:
    """Negative Laplace / AGHQ log-likelihood over (beta_s, theta) and its gradient.

    Calling the object with ``params = (beta_s, theta)`` returns the negative
    log-likelihood and its gradient. The conditional modes of the last call
    (``u``) are the start of the next one's mode search, so evaluations along
    an optimiser's path are cheap.

    Parameters
    ----------
    d : Prepared
    nagq : int
        1 for Laplace; k > 1 for adaptive Gauss-Hermite with k nodes.
    """

    def __init__(self, d: Prepared, nagq: int):
        self.d = d
        self.set_nagq(nagq)
        self.u = np.zeros(d.m)
        self.n_evaluations = 0

    def set_nagq(self, nagq: int):
        """Switch to ``nagq`` quadrature nodes (1 = Laplace)."""
        self.nagq = nagq
        z, w = np.polynomial.hermite_e.hermegauss(nagq)
        self.z = z
        self.log_w = np.log(w / np.sqrt(2.0 * np.pi))
        # node x row work arrays (4 K n doubles), reused across evaluations
        self._node_buffers = [np.empty((nagq, self.d.n)) for _ in range(4)] if nagq > 1 else None

    def modes(self, off: np.ndarray, theta: float, u: np.ndarray):
        """Conditional modes of all clusters by safeguarded Newton iteration."""
        d = self.d
        y, codes = d.y, d.codes
        u = u.copy()
        u_prev = g_prev = None
        for _ in range(200):
            eta = off + theta * u[codes]
            p, w, sp = logistic(eta)
            g = d.seg_sum(y * eta - sp) - 0.5 * u * u
            if g_prev is not None:
                worse = g < g_prev - 1e-12 * (1.0 + np.abs(g_prev))
                if worse.any():
                    u = np.where(worse, 0.5 * (u_prev + u), u)
                    if np.max(np.abs(u - u_prev)) < 1e-13:
                        u = np.where(worse, u_prev, u)
                    continue
            S = d.seg_sum(y - p)
            W = d.seg_sum(w)
            H = theta * theta * W + 1.0
            step = (theta * S - u) / H
            if np.max(np.abs(step)) < 1e-10:
                break
            u_prev, g_prev = u, g
            u = u + step
        return u, eta, p, w, g, S, W, H

    def __call__(self, params: np.ndarray):
        """Return (negative log-likelihood, gradient)."""
        self.n_evaluations += 1
        d = self.d
        Xs, y, codes = d.Xs, d.y, d.codes
        beta, theta = params[:-1], float(params[-1])
        off = Xs @ beta
        u, eta, p, w, g, S, W, H = self.modes(off, theta, self.u)
        self.u = u
        t2 = theta * theta
        one_m2p = 1.0 - 2.0 * p
        B = d.seg_sum(w * one_m2p)
        A = t2 * theta * B                         # dH/du
        du_dtheta = (S - theta * u * W) / H
        dH_dtheta = 2.0 * theta * W + t2 * u * B + A * du_dtheta
        s = 1.0 / np.sqrt(H)
        Hc = H[codes]
        # dH/dbeta (total) per row, to be multiplied by x_i and summed
        dH_dbeta_row = t2 * w * one_m2p - (A[codes] * theta * w) / Hc
        du_dbeta_row = -theta * w / Hc
        if self.nagq == 1:
            loglik_j = g - 0.5 * np.log(H)
            a = 1.0 / s
            b = np.zeros_like(u)
            pbar = p
            node_term = u * S
        else:
            z, starts = self.z, d.starts
            eta_k, p_k, softplus_k, work = self._node_buffers        # K x n each
            U = u[None, :] + z[:, None] * s[None, :]                  # K x m nodes
            np.take(U, codes, axis=1, out=eta_k, mode="clip")
            eta_k *= theta
            eta_k += off
            # p and log(1 + exp(eta)) at the nodes, as in logistic, in place
            np.abs(eta_k, out=work)
            np.negative(work, out=work)
            np.exp(work, out=work)
            np.add(work, 1.0, out=p_k)
            np.reciprocal(p_k, out=p_k)
            np.log1p(work, out=softplus_k)
            np.maximum(eta_k, 0.0, out=work)
            softplus_k += work
            p_k -= 0.5
            np.copysign(p_k, eta_k, out=p_k)
            p_k += 0.5
            np.multiply(eta_k, y, out=work)
            work -= softplus_k
            G = np.add.reduceat(work, starts, axis=1) - 0.5 * U * U + 0.5 * (z * z)[:, None]
            lg = self.log_w[:, None] + G
            top = lg.max(axis=0)
            ew = np.exp(lg - top)
            total = ew.sum(axis=0)
            pi = ew / total                                            # K x m node weights
            loglik_j = np.log(s) + top + np.log(total)
            np.subtract(y, p_k, out=work)
            Sk = np.add.reduceat(work, starts, axis=1)                 # K x m
            D = theta * Sk - U                                         # g'(node)
            a = 1.0 / s + np.sum(pi * D * z[:, None], axis=0)
            b = np.sum(pi * D, axis=0)
            np.take(pi, codes, axis=1, out=work, mode="clip")
            work *= p_k
            pbar = work.sum(axis=0)
            node_term = np.sum(pi * U * Sk, axis=0)
        ds_coef = -0.5 * s ** 3 * a                                 # multiplies dH
        row = (y - pbar) + ds_coef[codes] * dH_dbeta_row + b[codes] * du_dbeta_row
        grad_beta = Xs.T @ row
        grad_theta = float(np.sum(ds_coef * dH_dtheta + b * du_dtheta + node_term))
        loglik = float(loglik_j.sum())
        self.last = dict(u=u, H=H, theta=theta)
        return -loglik, -np.r_[grad_beta, grad_theta]


def _hessian_from_gradient(objective, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    k = x.size
    hess = np.empty((k, k))
    u_saved = objective.u.copy()
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        objective.u = u_saved
        gp = objective(x + e)[1]
        objective.u = u_saved
        gm = objective(x - e)[1]
        hess[:, i] = (gp - gm) / (2 * steps[i])
    objective.u = u_saved
    return 0.5 * (hess + hess.T)


def _lbfgs(objective, x0: np.ndarray, n: int):
    p1 = x0.size
    bounds = [(None, None)] * (p1 - 1) + [(0.0, None)]
    scaled = lambda x: tuple(v / n for v in objective(x))  # noqa: E731  (per-row scale)
    res = optimize.minimize(scaled, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20})
    return res


def _newton(objective, x: np.ndarray, *, fixed_hessian=None, max_iter: int = 4):
    """Newton iterations on the objective, keeping ``theta >= 0``.

    With ``fixed_hessian`` None the Hessian is recomputed by central
    differences of the analytic gradient at every iteration (and returned for
    the standard errors); otherwise the given matrix is used throughout
    (quasi-Newton with a good approximation, e.g. the Laplace Hessian when
    optimising the quadrature objective: linear convergence with a small
    rate, at the cost of one gradient per iteration).

    Returns
    -------
    x, f, grad, hessian, decrement
        ``decrement`` is the Newton decrement ``g' H^-1 g`` at the last
        Hessian (a scale-free measure of distance to the optimum).
    """
    f, g = objective(x)
    hess = fixed_hessian
    decrement = np.inf
    for _ in range(max_iter):
        if fixed_hessian is None:
            hess = _hessian_from_gradient(objective, x, np.full(x.size, 1e-4))
        free = np.ones(x.size, dtype=bool)
        if x[-1] == 0.0 and g[-1] >= 0:
            free[-1] = False  # at the boundary and pushed against it
        step = np.zeros(x.size)
        try:
            step[free] = -linalg.solve(hess[np.ix_(free, free)], g[free], assume_a="sym")
        except (linalg.LinAlgError, ValueError):
            break
        decrement = float(-g @ step)
        if not np.isfinite(decrement) or decrement < 0 or decrement < 1e-12:
            break
        t = 1.0
        improved = False
        for _ in range(20):
            cand = x + t * step
            cand[-1] = max(cand[-1], 0.0)
            fc, gc = objective(cand)
            if fc <= f + 1e-12 * abs(f):
                improved = True
                break
            t *= 0.5
        if not improved:
            break
        x, f, g = cand, fc, gc
    return x, f, g, hess, decrement


def fit_binomial(d: Prepared, nagq: int, cluster_name: str) -> RandomInterceptFit:
    """Maximum-likelihood fit of the logistic model (``glmer(nAGQ = nagq)``).

    Parameters
    ----------
    d : Prepared
    nagq : int
        1 for Laplace, k > 1 for adaptive Gauss-Hermite.
    cluster_name : str
        For the term ``sd(<cluster_name>)``.

    Returns
    -------
    RandomInterceptFit

    Raises
    ------
    FitError
        The Hessian or the information matrix is unavailable or singular
        (separation, or a predictor without variation).
    """
    n, p = d.n, d.Xs.shape[1]
    beta0, _, _, _ = fit_logistic(d.Xs, d.y)
    objective = BinomialObjective(d, 1)
    # theta start: the best of a few values with beta from the logistic fit
    theta_starts = [0.3, 0.7, 1.5]
    values = []
    for t in theta_starts:
        objective.u = np.zeros(d.m)
        values.append(objective(np.r_[beta0, t])[0])
    x0 = np.r_[beta0, theta_starts[int(np.argmin(values))]]
    objective.u = np.zeros(d.m)
    res = _lbfgs(objective, x0, n)
    message = str(res.message)
    x, f, g, hess, decrement = _newton(objective, res.x)
    if nagq > 1 and hess is not None:
        # From the Laplace optimum, with the Laplace Hessian as the Newton matrix.
        objective.set_nagq(nagq)
        x, f, g, _, decrement = _newton(objective, x, fixed_hessian=hess, max_iter=30)
        if not decrement < 1e-10:
            res = _lbfgs(objective, x, n)
            message = str(res.message)
            x = res.x
        x, f, g, hess, decrement = _newton(objective, x)
    theta = float(x[-1])
    # A theta this small is indistinguishable from the boundary; use the exact limit.
    if 0 < theta < 1e-4:
        objective.u = np.zeros(d.m)
        f0 = objective(np.r_[x[:-1], 0.0])[0]
        if f0 <= f + 1e-8:
            x, f, g, hess, decrement = _newton(objective, np.r_[x[:-1], 0.0])
            theta = float(x[-1])
    converged = bool(np.isfinite(decrement) and decrement < 1e-6 and hess is not None)
    if not converged:
        message = f"{message}; Newton decrement {decrement:.3g} (gradient not small at the end)"
    if theta > MAX_BINOMIAL_SD:
        converged = False
        message += (f"; cluster SD {theta:.3g} on the logit scale is diverging (clusters whose "
                    "outcomes are all 0 or all 1 dominate): the estimate is not usable")
    if hess is None:
        raise FitError("the binomial mixed model did not converge (Hessian unavailable): "
                       "check for separation (a predictor or cluster with all-0 or all-1 outcomes).")
    T = d.to_original
    # cov over (beta_s, theta); at theta = 0 only the beta block is meaningful
    log_se = np.nan
    try:
        if theta > 0:
            inv = np.linalg.inv(hess)
            cov_s = inv[:p, :p]
            if inv[p, p] > 0:
                log_se = float(np.sqrt(inv[p, p]) / theta)
        else:
            cov_s = np.linalg.inv(hess[:p, :p])
    except np.linalg.LinAlgError:
        raise FitError("the information matrix of the binomial mixed model is singular: "
                       "check for separation or a predictor without variation.") from None
    eig = np.linalg.eigvalsh(0.5 * (cov_s + cov_s.T))
    if eig.min() <= 0:
        converged = False
        message += "; information matrix not positive definite"
    coef = T @ x[:p]
    cov = T @ cov_s @ T.T
    cov = 0.5 * (cov + cov.T)
    std_error = np.sqrt(np.abs(np.diag(cov)))
    objective(x)  # leave the state (modes, curvature) at the optimum
    u, H = objective.last["u"], objective.last["H"]
    effects = theta * u
    effect_sd = theta / np.sqrt(H)
    method = "ML, Laplace" if nagq == 1 else f"ML, adaptive Gauss-Hermite ({nagq} nodes)"
    readonly(coef, std_error, cov, effects, effect_sd)
    sizes = d.sizes.copy()
    labels = d.labels.copy()
    readonly(sizes, labels)
    return RandomInterceptFit(
        family="binomial", method=method, term_names=d.term_names, coef=coef, std_error=std_error,
        cov=cov, cluster_sd=theta, log_cluster_sd_std_error=log_se, residual_sd=None,
        loglik=float(-f), n_obs=n, n_clusters=d.m, cluster_labels=labels, cluster_sizes=sizes,
        cluster_effects=effects, cluster_effect_sd=effect_sd, converged=converged,
        cluster_name=cluster_name, nagq=nagq, optimizer_message=message)
