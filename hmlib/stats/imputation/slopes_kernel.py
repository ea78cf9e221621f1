"""The random-slope normal imputation kernel (mice's 2l.pan "type 2" model): a Gibbs sampler with an
unstructured covariance of each cluster's random intercept and slopes.

The model, the priors and the sampler are described in
:mod:`hmlib.stats.imputation.random_slopes`, which holds the self-contained
:func:`~hmlib.stats.imputation.random_slopes.impute_random_slopes`; this module
holds the kernel alone so that the chained equations
(:mod:`hmlib.stats.imputation.univariate`) can call it for a continuous
target when the analysis model has random slopes.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from hmlib.exceptions import FitError
from hmlib.stats.imputation.kernels import (GIBBS_BURN_IN, GIBBS_SWEEPS, cached_sufficient_statistics, pmm_match,
                                            standardise_target)

__all__ = ["random_slopes_gibbs_draw", "draw_inverse_wishart", "PSI_PRIOR_DF", "PSI_PRIOR_SD_SCALE",
           "MIN_CLUSTERS_PER_EFFECT"]

#: ``nu`` of the Huang-Wand prior of Psi: each SD half-t with ``nu`` degrees of freedom, correlations uniform.
PSI_PRIOR_DF = 2.0
#: ``A``: the half-t's scale, in SDs of the target per SD of the column (standardised units).
PSI_PRIOR_SD_SCALE = 1.0
#: A target needs at least this many clusters recording it per random effect (5 q).
MIN_CLUSTERS_PER_EFFECT = 5


# --------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------
def draw_inverse_wishart(df: float, scale: np.ndarray, rng) -> np.ndarray:
    """One draw of ``Psi ~ inverse-Wishart(df, scale)`` (density ``|Psi|^-(df+q+1)/2 exp(-tr(scale Psi^-1)/2)``).

    Bartlett's decomposition of ``Psi^-1 ~ Wishart(df, scale^-1)``: with ``scale^-1 = L L'``
    and ``A`` lower triangular with ``A_kk = sqrt(chi2_{df - k})`` and standard normal entries
    below the diagonal, ``Psi^-1 = L A A' L'``. ``E[Psi] = scale / (df - q - 1)``.
    """
    q = scale.shape[0]
    L = np.linalg.cholesky(np.linalg.inv(0.5 * (scale + scale.T)))
    A = np.zeros((q, q))
    A[np.diag_indices(q)] = np.sqrt(rng.chisquare(df - np.arange(q)))
    below = np.tril_indices(q, -1)
    A[below] = rng.standard_normal(below[0].size)
    LA = L @ A
    psi = np.linalg.inv(LA @ LA.T)
    return 0.5 * (psi + psi.T)


def _lower_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L_j^-1 B_j`` for a stack of lower-triangular ``q x q`` matrices (``J x q x q``, ``B``: ``J x q x k``).

    Forward substitution over the ``q`` rows, vectorised over the clusters: for the few random
    effects of a cluster this is several times faster than a batched LAPACK solve.
    """
    X = np.empty_like(B)
    for i in range(L.shape[1]):
        X[:, i] = (B[:, i] - np.einsum("jk,jkm->jm", L[:, i, :i], X[:, :i])) / L[:, i, i, None]
    return X


def _upper_solve(L: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``L_j'^-1 v_j`` for a stack of lower-triangular ``L`` (``J x q x q``) and vectors ``v`` (``J x q``)."""
    q = L.shape[1]
    x = np.empty_like(v)
    for i in range(q - 1, -1, -1):
        x[:, i] = (v[:, i] - np.einsum("jk,jk->j", L[:, i + 1:, i], x[:, i + 1:])) / L[:, i, i]
    return x


def _coefficients_draw(A, a, WW, WX, Wz, sig2, psi, ridge, rng):
    """``(beta, b) | Psi, sigma^2``: posterior means and one joint draw (module docstring, step 1).

    ``A = sum X'X``, ``a = sum X'z`` over all clusters; ``WW, WX, Wz`` per cluster (``J x q x q``,
    ``J x q x p``, ``J x q``). With ``D_j = L_j L_j'`` the cluster blocks, ``G_j = L_j^-1 W_j'X_j /
    sigma^2`` and ``g_j = L_j^-1 W_j'z_j / sigma^2``: ``beta``'s precision is ``A / sigma^2 - sum G_j'G_j``,
    and ``b_j | beta = L_j'^-1 (g_j - G_j beta + e_j)``, ``e_j ~ N(0, I)``.
    """
    w = 1.0 / sig2
    J, q, p = WX.shape
    Lc = np.linalg.cholesky(w * WW + np.linalg.inv(psi))          # J x q x q cluster precisions
    Gg = _lower_solve(Lc, np.concatenate([w * WX, w * Wz[..., None]], axis=2))
    G, g = Gg[..., :p].reshape(J * q, p), Gg[..., p].reshape(J * q)
    schur = w * A + np.diag(ridge) - G.T @ G
    try:
        L = np.linalg.cholesky(0.5 * (schur + schur.T))
    except np.linalg.LinAlgError:
        raise FitError("random-slope imputation model: the normal equations of the coefficients are singular; "
                       "the imputation model cannot be fitted.") from None
    beta_hat = solve_triangular(L, solve_triangular(L, w * a - G.T @ g, lower=True), lower=True, trans="T")
    beta = beta_hat + solve_triangular(L, rng.standard_normal(p), lower=True, trans="T")
    b = _upper_solve(Lc, (g - G @ beta).reshape(J, q) + rng.standard_normal((J, q)))
    b_hat = _upper_solve(Lc, (g - G @ beta_hat).reshape(J, q))
    return beta_hat, b_hat, beta, b


def _residual_variance_draw(A, a, zz_sum, n, WW, WX, Wz, beta, b, rng) -> float:
    """``sigma^2 | beta, b = RSS / chi2_n`` (prior ``1 / sigma^2``), RSS from the sufficient statistics."""
    rss = (zz_sum - 2.0 * a @ beta + beta @ A @ beta - 2.0 * np.sum(b * Wz)
           + 2.0 * np.sum(b * (WX @ beta)) + np.sum(b * (WW @ b[..., None])[..., 0]))
    return max(float(rss), 0.0) / rng.chisquare(max(n, 1))


def random_slopes_gibbs_draw(Do, yo, co, Dp, cp, J, rng, *, random_columns, state: dict, pmm: bool = False,
                             donors: int = 5, prior_precision=None, cache: dict | None = None):
    """The random-slope normal model's Gibbs sampler, then draws (2l.pan type 2; module docstring).

    Parameters
    ----------
    Do, Dp : numpy.ndarray, shape (n_obs, p), (n_mis, p)
        Standardised design rows of the recorded and the missing values, the intercept first
        (:func:`~hmlib.stats.imputation.kernels.prepare_design`).
    yo : numpy.ndarray, shape (n_obs,)
        Recorded values (z-scored here).
    co, cp : numpy.ndarray of int
        Cluster codes (``0..J-1``) of those rows; any order.
    J : int
    rng : numpy.random.Generator
    random_columns : sequence of int
        Columns of the design with a random effect: ``0`` (the intercept) first, then the
        standardised slope columns.
    state : dict
        The chain's sampler state (``psi``, ``a``, ``sig2``; standardised units), read and updated in
        place; empty at a chain's first call (``GIBBS_BURN_IN`` sweeps), carried over later
        (``GIBBS_SWEEPS``). The last ``beta`` drawn is left there too (for traces).
    pmm : bool
        Predictive mean matching on the model (type 1) instead of normal draws.
    donors : int
    prior_precision : array_like of length p, optional
        Independent ``N(0, 1 / precision)`` priors on the standardised coefficients (0 = flat).
    cache : dict, optional
        Shared by all chains for a design no imputation changes: its per-cluster sums are
        computed once.

    Returns
    -------
    numpy.ndarray, shape (n_mis,)
        The imputed values on the user's scale.
    """
    centre, scale = standardise_target(yo)
    z = (yo - centre) / scale
    p = Do.shape[1]
    r = np.asarray(random_columns, dtype=np.intp)
    q = r.size
    sums = cached_sufficient_statistics(Do, z, co, J, cache)
    XX = sums[:, :p * p].reshape(J, p, p)
    Xz = sums[:, p * p + p:p * p + 2 * p]
    zz, n_j = sums[:, -2], sums[:, -1]
    WW, WX, Wz = XX[:, r][:, :, r], XX[:, r, :], Xz[:, r]
    A, a = XX.sum(axis=0), Xz.sum(axis=0)
    has = n_j > 0
    if np.shape(state.get("psi", np.eye(q))) != (q, q):
        state.clear()           # a carried-over state of another model: start afresh
    first = "psi" not in state
    psi = np.array(state.get("psi", 0.25 * np.eye(q)), dtype=float)
    a_k = np.array(state.get("a", np.ones(q)), dtype=float)
    sig2 = float(state.get("sig2", 0.75))
    ridge = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, dtype=float)
    nu = PSI_PRIOR_DF
    for _ in range(GIBBS_BURN_IN if first else GIBBS_SWEEPS):
        beta_hat, b_hat, beta, b = _coefficients_draw(A, a, WW, WX, Wz, sig2, psi, ridge, rng)
        sig2 = _residual_variance_draw(A, a, float(zz.sum()), int(n_j.sum()), WW, WX, Wz, beta, b, rng)
        bo = b[has]
        psi = draw_inverse_wishart(nu + q - 1 + bo.shape[0], np.diag(2.0 * nu / a_k) + bo.T @ bo, rng)
        a_k = (nu * np.diag(np.linalg.inv(psi)) + 1.0 / PSI_PRIOR_SD_SCALE ** 2) / rng.gamma(0.5 * (nu + q), size=q)
    state.update(psi=psi, a=a_k, sig2=sig2, beta=beta)
    if pmm:
        fitted = Do @ beta_hat + np.einsum("ik,ik->i", Do[:, r], b_hat[co])
        return yo[pmm_match(fitted, Dp @ beta + np.einsum("ik,ik->i", Dp[:, r], b[cp]), rng, donors)]
    eta = Dp @ beta + np.einsum("ik,ik->i", Dp[:, r], b[cp])
    return centre + scale * (eta + np.sqrt(sig2) * rng.standard_normal(Dp.shape[0]))


# --------------------------------------------------------------------------
# The public function and its result
# --------------------------------------------------------------------------
