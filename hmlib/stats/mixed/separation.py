"""Detecting (quasi-)complete separation in a binary outcome's fixed effects.

When a linear combination of the predictors separates the events from the
non-events (e.g. no patient in one category of a predictor ever has the
outcome), the maximum-likelihood estimate of that combination is infinite:
the fitter stops at a large coefficient (|beta| of 20-60 on the logit scale)
with an enormous standard error, and the Wald interval is meaningless. Such a
fit must be flagged, never reported as a result.

The check is Konis's linear program (Konis 2007, the method of R's
``detectseparation`` / ``safeBinaryRegression``): with ``s_i = 2 y_i - 1``,
separation exists iff some direction ``b`` with ``s_i x_i' b >= 0`` for every
row has ``sum_i s_i x_i' b > 0``; maximising that sum over the box
``-1 <= b <= 1`` finds it, and the non-zero components of the optimal ``b``
name the terms whose estimates diverge. The cluster intercepts are left out:
they are penalised by their normal distribution, so their estimates stay
finite; separation that involves them shows as a cluster SD at its bound.

Because the linear program costs more than the fit itself on large data, it
runs only on fits that look separated: a coefficient whose standardised size
(``|beta| * sd(x)``) or standardised standard error exceeds
:data:`SUSPICIOUS_STANDARDISED` (an odds ratio of ``e^5``, 148, per SD: far
beyond any clinical effect; a legitimate fit never reaches it).

References
----------
Konis K (2007). Linear programming algorithms for detecting separated data in
binary logistic regression models. DPhil thesis, University of Oxford.
Albert A, Anderson JA (1984). On the existence of maximum likelihood estimates
in logistic regression models. Biometrika 71:1-10.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

__all__ = ["SUSPICIOUS_STANDARDISED", "looks_separated", "separated_terms"]

#: A coefficient or standard error above this many units per SD of its predictor is suspicious.
SUSPICIOUS_STANDARDISED = 5.0
_DIRECTION_TOL = 1e-6


def looks_separated(X: np.ndarray, coef: np.ndarray, std_error: np.ndarray) -> bool:
    """Whether a binomial fit's coefficients look like separation (cheap screen before the linear program)."""
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0  # the intercept: its own units
    size = np.maximum(np.abs(coef), np.nan_to_num(std_error, nan=np.inf)) * scale
    return bool(np.any(~np.isfinite(size) | (size > SUSPICIOUS_STANDARDISED)))


def separated_terms(y: np.ndarray, X: np.ndarray, term_names) -> tuple[str, ...]:
    """The terms whose estimates diverge because the data are (quasi-)separated (module docstring).

    Parameters
    ----------
    y : array of 0/1
    X : (n, p) array
        The fixed-effects design (with the intercept column if the model has one).
    term_names : sequence of str

    Returns
    -------
    tuple of str
        Empty when the data are not separated.
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    signed = X * (2.0 * y - 1.0)[:, None]
    scale = np.abs(signed).max(axis=0)
    scale[scale == 0] = 1.0
    signed = signed / scale  # a well-scaled program; directions are unchanged
    result = optimize.linprog(-signed.sum(axis=0), A_ub=-signed, b_ub=np.zeros(len(y)),
                              bounds=[(-1.0, 1.0)] * X.shape[1], method="highs")
    if result.status != 0 or -result.fun <= _DIRECTION_TOL * len(y):
        return ()
    direction = result.x
    return tuple(name for name, b in zip(term_names, direction) if abs(b) > _DIRECTION_TOL)
