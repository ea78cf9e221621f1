"""Optimisation for the general fitters: L-BFGS-B, then Newton steps with a finite-difference Hessian.

An objective is a callable ``x -> (value, gradient)`` (analytic gradient);
it may carry warm-start state (the binomial conditional modes), exposed as
``snapshot()`` / ``restore(state)`` so that the finite-difference Hessian
is computed from one state. The Hessian of the analytic gradient by
central differences is the Newton matrix and, at the optimum, the observed
information for the standard errors (as lme4's ``glmer`` computes its
``vcov`` from a finite-difference Hessian over ``(theta, beta)``).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize

__all__ = ["lbfgs", "hessian_from_gradient", "newton_polish", "escape_boundary", "minimise"]


def _snapshot(objective):
    return objective.snapshot() if hasattr(objective, "snapshot") else None


def _restore(objective, state) -> None:
    if state is not None:
        objective.restore(state)


def lbfgs(objective, x0: np.ndarray, lower: np.ndarray, scale: float, *, maxiter: int = 3000):
    """L-BFGS-B from ``x0`` with lower bounds (``-inf`` for none) on ``objective / scale``.

    Returns
    -------
    scipy.optimize.OptimizeResult
    """
    bounds = [(None if not np.isfinite(b) else float(b), None) for b in lower]

    def scaled(x):
        f, g = objective(x)
        return f / scale, g / scale

    return optimize.minimize(scaled, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                             options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20})


def hessian_from_gradient(objective, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Central-difference Hessian of the analytic gradient, symmetrised."""
    k = x.size
    hess = np.empty((k, k))
    objective(x)  # the warm-start state at the centre
    state = _snapshot(objective)
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        _restore(objective, state)
        g_plus = objective(x + e)[1]
        _restore(objective, state)
        g_minus = objective(x - e)[1]
        hess[:, i] = (g_plus - g_minus) / (2.0 * steps[i])
    _restore(objective, state)
    return 0.5 * (hess + hess.T)


def newton_polish(objective, x: np.ndarray, lower: np.ndarray, hess: np.ndarray, *, max_iter: int = 20):
    """Newton steps with a fixed Newton matrix, respecting the lower bounds.

    A variable on its bound whose gradient pushes against the bound stays
    there. Each step is halved until the objective does not increase.

    Returns
    -------
    x, f, g : numpy.ndarray, float, numpy.ndarray
    decrement : float
        The Newton decrement ``g' H^-1 g`` at the last point over the free
        variables (a scale-free distance to the optimum); ``inf`` if the
        Newton matrix could not be used.
        
    """
    f, g = objective(x)
    decrement = np.inf
    for _ in range(max_iter):
        free = ~((x <= lower) & (g >= 0))
        step = np.zeros(x.size)
        try:
            step[free] = -linalg.solve(hess[np.ix_(free, free)], g[free], assume_a="sym")
        except (linalg.LinAlgError, ValueError):
            return x, f, g, np.inf
        decrement = float(-g @ step)
        if not np.isfinite(decrement) or decrement < 0:
            return x, f, g, np.inf
        if decrement < 1e-14:
            break
        t, improved = 1.0, False
        for _ in range(30):
            candidate = np.maximum(x + t * step, lower)
            fc, gc = objective(candidate)
            if fc <= f + 1e-13 * abs(f):
                improved = True
                break
            t *= 0.5
        if not improved:
            break
        x, f, g = candidate, fc, gc
    return x, f, g, decrement


def escape_boundary(objective, x: np.ndarray, value: float, boundary: np.ndarray):
    """A better point off the boundary, or None.

    The likelihood is an even function of each diagonal entry of a
    ``Lambda_k`` (``Lambda Lambda'`` depends on its square), so its gradient
    is exactly 0 there: a gradient-based optimiser that reaches a zero
    diagonal stays, even where that is a saddle. Each such entry is moved
    to a few positive values; the best point that improves the objective is
    returned as a new start.
    """
    best, best_value = None, value - 1e-10 * max(1.0, abs(value))
    state = _snapshot(objective)
    for i in np.flatnonzero(boundary & (np.abs(x) < 1e-4)):
        for trial_value in (1e-2, 0.1, 0.5):
            trial = x.copy()
            trial[i] = trial_value
            _restore(objective, state)
            f = objective(trial)[0]
            if f < best_value:
                best, best_value = trial, f
    _restore(objective, state)
    return best


def minimise(objective, x0: np.ndarray, lower: np.ndarray, scale: float, boundary: np.ndarray,
             steps: np.ndarray | None = None, hessian=None):
    """L-BFGS-B (restarted off saddles on the boundary), then Newton steps with the Hessian of the gradient.

    Parameters
    ----------
    objective : callable
        ``x -> (value, gradient)``.
    x0, lower : numpy.ndarray
        Start and lower bounds.
    scale : float
        Divides the objective inside L-BFGS-B (the number of rows).
    boundary : numpy.ndarray of bool
        The diagonal entries of the ``Lambda_k`` (see :func:`escape_boundary`).
    steps : numpy.ndarray, optional
        Finite-difference steps of the Hessian (:func:`hessian_from_gradient`).
    hessian : callable, optional
        ``x -> Hessian`` to use instead of :func:`hessian_from_gradient`.

    Returns
    -------
    x, value, hessian, decrement, message
        ``hessian`` is computed at the point where the Newton steps started.
    """
    x = np.asarray(x0, dtype=float)
    for _ in range(4):
        res = lbfgs(objective, x, lower, scale)
        x = res.x
        restart = escape_boundary(objective, x, float(res.fun) * scale, boundary)
        if restart is None:
            break
        x = restart
    hess = hessian_from_gradient(objective, x, steps) if hessian is None else hessian(x)
    x, value, _, decrement = newton_polish(objective, x, lower, hess)
    return x, value, hess, decrement, str(res.message)
