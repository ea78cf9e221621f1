"""The covariance parameters: lme4's ``theta``, the factors ``Lambda_k``, and the SDs and correlations they imply.

Level ``k``'s random effects have covariance ``s^2 Lambda_k Lambda_k'``
(``s`` the residual SD for gaussian, 1 for binomial) on the standardised
scale of :mod:`~hmlib.stats.mixed.terms`, with ``Lambda_k`` lower
triangular, diagonal >= 0. ``theta`` lists the lower-triangular entries of
each ``Lambda_k`` column by column, level by level (lme4's order). On the
user's scale the covariance is ``A_k (s^2 Lambda_k Lambda_k') A_k'``.

The reported variance parameters are, per level, the SD of each effect and
the correlation of each pair; their standard errors are computed on the
``log(SD)`` and Fisher ``atanh(correlation)`` scales by the delta method
from the covariance of ``(theta, log s)``, with a central-difference
Jacobian of this smooth map.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ThetaLayout", "level_covariances", "transformed_parameters", "transformed_covariance"]


class ThetaLayout:
    """Where each entry of ``theta`` sits in the ``Lambda_k`` and in the chain of effects.

    Parameters
    ----------
    q : tuple of int
        Random effects per cluster at each level.
    """

    def __init__(self, q):
        self.q = tuple(int(v) for v in q)
        offsets = np.r_[0, np.cumsum(self.q)[:-1]]
        level, row, col = [], [], []
        for k, qk in enumerate(self.q):
            for j in range(qk):
                for i in range(j, qk):
                    level.append(k)
                    row.append(i)
                    col.append(j)
        self.level = np.asarray(level, dtype=np.intp)
        self.row = np.asarray(row, dtype=np.intp)
        self.col = np.asarray(col, dtype=np.intp)
        self.chain_row = offsets[self.level] + self.row
        self.chain_col = offsets[self.level] + self.col
        self.diagonal = self.row == self.col
        self.lower = np.where(self.diagonal, 0.0, -np.inf)

    @property
    def size(self) -> int:
        """Number of entries of ``theta``."""
        return int(self.level.size)

    def lambdas(self, theta: np.ndarray) -> list:
        """The ``Lambda_k`` (q_k x q_k lower triangular) of ``theta``."""
        out = [np.zeros((qk, qk)) for qk in self.q]
        for value, k, i, j in zip(theta, self.level, self.row, self.col):
            out[k][i, j] = value
        return out

    def start(self, scale: float) -> np.ndarray:
        """``theta`` with every ``Lambda_k = scale * I``."""
        return np.where(self.diagonal, float(scale), 0.0)

    def from_chain(self, matrix: np.ndarray) -> np.ndarray:
        """Entries of a chain-indexed (Q x Q) matrix at the positions of ``theta``."""
        return matrix[self.chain_row, self.chain_col]

    def level_mask(self, k: int) -> np.ndarray:
        """Which entries of ``theta`` belong to level ``k``."""
        return self.level == k


def level_covariances(layout: ThetaLayout, to_user, theta: np.ndarray, scale: float = 1.0) -> list:
    """Per level, the covariance of the effects on the user's scale, ``A (s^2 Lambda Lambda') A'``."""
    out = []
    for A, lam in zip(to_user, layout.lambdas(theta)):
        out.append(scale * scale * (A @ lam @ lam.T @ A.T))
    return out


def transformed_parameters(layout: ThetaLayout, to_user, params: np.ndarray, has_scale: bool) -> np.ndarray:
    """Per level ``log(SD_r)`` then ``atanh(cor_rs)`` (r > s, column by column), concatenated.

    ``params`` is ``theta`` followed by ``log s`` when ``has_scale``.
    """
    theta = params[:layout.size]
    scale = float(np.exp(params[layout.size])) if has_scale else 1.0
    out = []
    for cov in level_covariances(layout, to_user, theta, scale):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            out.extend(np.log(sd))
            q = sd.size
            for s in range(q):
                for r in range(s + 1, q):
                    out.append(np.arctanh(np.clip(cov[r, s] / (sd[r] * sd[s]), -1.0, 1.0)))
    return np.asarray(out, dtype=float)


def transformed_covariance(layout: ThetaLayout, to_user, params: np.ndarray, has_scale: bool,
                           cov_params: np.ndarray, *, step: float = 1e-6) -> np.ndarray:
    """Delta-method covariance of :func:`transformed_parameters` from the covariance of ``params``.

    Rows and columns of parameters that are not finite (an SD of 0, a
    correlation of +-1) are NaN.
    """
    base = transformed_parameters(layout, to_user, params, has_scale)
    jac = np.empty((base.size, params.size))
    with np.errstate(invalid="ignore"):  # -inf - -inf for an SD of 0: marked NaN below
        for i in range(params.size):
            e = np.zeros(params.size)
            h = step * max(1.0, abs(params[i]))
            e[i] = h
            jac[:, i] = (transformed_parameters(layout, to_user, params + e, has_scale)
                         - transformed_parameters(layout, to_user, params - e, has_scale)) / (2.0 * h)
        jac[~np.isfinite(jac)] = 0.0
        cov = jac @ cov_params @ jac.T
    bad = ~np.isfinite(base) | ~np.isfinite(np.diag(cov))
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    return cov
