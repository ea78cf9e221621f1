"""The random-slope normal imputation kernel (mice's 2l.pan "type 2" model): a Gibbs sampler with an
unstructured covariance of each cluster's random intercept and slopes, and optionally a random
intercept for the level above the cluster.

The model, the priors and the sampler are described in
:mod:`hmlib.stats.imputation.random_slopes`, which holds the self-contained
:func:`~hmlib.stats.imputation.random_slopes.impute_random_slopes`; this module
holds the kernel alone so that the chained equations
(:mod:`hmlib.stats.imputation.univariate`) can call it for a continuous
target when the analysis model has random slopes.

A level above (visits in patients in sites; ``hc``, ``K``): ``y_ij = x' beta + w' b_i
+ v_k(i) + e``, ``v ~ N(0, omega^2)``, as ``(1 | site) + (1 + t | patient)`` in lme4 (and
``miceadds::ml.lmer`` with ``levels_id`` and ``random_slopes``). Each sweep then draws

1. ``beta | v`` (the cluster effects integrated out: step 1 of the two-level sweep on ``y - v``,
   keeping ``beta``);
2. ``v | beta`` with the cluster effects integrated out: cluster ``i``'s residuals ``r_i = y_i -
   X_i beta`` are ``N(v_k 1, W_i Psi W_i' + sigma^2 I)``, so by Woodbury each cluster adds
   ``1'V_i^-1 1 = n_i / sigma^2 - s_i' D_i^-1 s_i / sigma^4`` to ``v_k``'s precision and
   ``1'V_i^-1 r_i = 1'r_i / sigma^2 - s_i' D_i^-1 W_i'r_i / sigma^4`` to its score (``s_i =
   W_i'1``, ``D_i = W_i'W_i / sigma^2 + Psi^-1``), all from the cluster sums;
3. ``b | beta, v``, then ``sigma^2``, ``Psi`` as in the two-level sweep on ``y - v``, and
   ``omega^2`` as the three-level random-intercept kernel does (uniform prior on ``omega``
   over ``(0, 1]`` SD of the target, :func:`~hmlib.stats.imputation.kernels.draw_tau2`).

Steps 1-2 draw ``(beta, v)`` with the cluster effects integrated out, so the sampler does not
stall on the trade between a site's effect and its patients' intercepts (as
:func:`~hmlib.stats.imputation.three_level.nested_gibbs_draw` does for random intercepts).
A site without recorded values gets ``v ~ N(0, omega^2)``.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from hmlib.exceptions import FitError
from hmlib.stats.imputation.kernels import (GIBBS_BURN_IN, GIBBS_SWEEPS, TAU2_FLOOR, cached_sufficient_statistics,
                                            draw_tau2, pmm_match, standardise_target)

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


def _coefficients_draw(A, a, WW, WX, Wz, sig2, Lc, ridge, rng):
    """``(beta, b) | Psi, sigma^2``: posterior means and one joint draw (module docstring, step 1).

    ``A = sum X'X``, ``a = sum X'z`` over all clusters; ``WW, WX, Wz`` per cluster (``J x q x q``,
    ``J x q x p``, ``J x q``); ``Lc`` the Cholesky factors of the cluster blocks ``D_j = W_j'W_j / sigma^2 +
    Psi^-1 = L_j L_j'``. With ``G_j = L_j^-1 W_j'X_j / sigma^2`` and ``g_j = L_j^-1 W_j'z_j / sigma^2``:
    ``beta``'s precision is ``A / sigma^2 - sum G_j'G_j``, and ``b_j | beta = L_j'^-1 (g_j - G_j beta + e_j)``,
    ``e_j ~ N(0, I)``.
    """
    w = 1.0 / sig2
    J, q, p = WX.shape
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


def _cluster_blocks(WW, sig2, psi):
    """Cholesky factors of the cluster blocks ``D_j = W_j'W_j / sigma^2 + Psi^-1`` (``J x q x q``)."""
    return np.linalg.cholesky((1.0 / sig2) * WW + np.linalg.inv(psi))


def _cluster_effects_draw(Lc, WX, Wz, sig2, beta, rng):
    """``b | beta``: ``b_j = L_j'^-1 (L_j^-1 W_j'(z_j - X_j beta) / sigma^2 + e_j)`` (``z`` net of the level above)."""
    J, q = Wz.shape
    g = _lower_solve(Lc, ((Wz - WX @ beta) / sig2)[..., None])[..., 0]
    return _upper_solve(Lc, g + rng.standard_normal((J, q)))


def _higher_draw(Lc, S, zs, WX, Wz, r, beta, sig2, hc, K, omega2, rng):
    """``v | beta`` with the cluster effects integrated out (module docstring, step 2): one draw.

    ``S`` (``J x p``) and ``zs`` (``J``): each cluster's column sums of the design and ``sum z``; ``WX``,
    ``Wz`` as in :func:`_coefficients_draw` with ``z`` not net of ``v``; ``r`` the random-effect columns;
    ``hc`` each cluster's unit of the level above (``0 .. K-1``).
    """
    w = 1.0 / sig2
    t1 = _lower_solve(Lc, S[:, r, None])[..., 0]                              # L_j^-1 W_j'1
    t2 = _lower_solve(Lc, (Wz - WX @ beta)[..., None])[..., 0]                # L_j^-1 W_j'r_j
    prec = w * S[:, 0] - w * w * np.einsum("jk,jk->j", t1, t1)               # 1'V_j^-1 1 (S[:, 0] = n_j)
    score = w * (zs - S @ beta) - w * w * np.einsum("jk,jk->j", t1, t2)      # 1'V_j^-1 r_j
    P = np.bincount(hc, weights=prec, minlength=K) + 1.0 / omega2
    return np.bincount(hc, weights=score, minlength=K) / P + rng.standard_normal(K) / np.sqrt(P)


def _residual_variance_draw(A, a, zz_sum, n, WW, WX, Wz, beta, b, rng) -> float:
    """``sigma^2 | beta, b = RSS / chi2_n`` (prior ``1 / sigma^2``), RSS from the sufficient statistics."""
    rss = (zz_sum - 2.0 * a @ beta + beta @ A @ beta - 2.0 * np.sum(b * Wz)
           + 2.0 * np.sum(b * (WX @ beta)) + np.sum(b * (WW @ b[..., None])[..., 0]))
    return max(float(rss), 0.0) / rng.chisquare(max(n, 1))


def random_slopes_gibbs_draw(Do, yo, co, Dp, cp, J, rng, *, random_columns, state: dict, pmm: bool = False,
                             donors: int = 5, prior_precision=None, cache: dict | None = None, hc=None,
                             K: int = 0):
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
    hc : array_like of int, shape (J,), optional
        Each cluster's unit of the level above (``0 .. K-1``): adds that level's random intercept
        (module docstring); ``state`` then also carries ``omega2`` and the units' effects ``v``.
    K : int
        Number of units of the level above.

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
    S = sums[:, p * p:p * p + p]
    Xz = sums[:, p * p + p:p * p + 2 * p]
    zs, zz, n_j = sums[:, -3], sums[:, -2], sums[:, -1]
    WW, WX = XX[:, r][:, :, r], XX[:, r, :]
    A = XX.sum(axis=0)
    has = n_j > 0
    nested = hc is not None
    hc = np.asarray(hc if nested else np.zeros(J), dtype=np.intp)
    if np.shape(state.get("psi", np.eye(q))) != (q, q) or np.size(state.get("v", np.zeros(K))) != K:
        state.clear()           # a carried-over state of another model: start afresh
    first = "psi" not in state
    psi = np.array(state.get("psi", 0.25 * np.eye(q)), dtype=float)
    a_k = np.array(state.get("a", np.ones(q)), dtype=float)
    sig2 = float(state.get("sig2", 0.75))
    v = np.array(state.get("v", np.zeros(K)), dtype=float)
    omega2 = float(state.get("omega2", 0.25))
    has_k = np.bincount(hc[has], minlength=K) > 0
    ridge = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, dtype=float)
    nu = PSI_PRIOR_DF
    for _ in range(GIBBS_BURN_IN if first else GIBBS_SWEEPS):
        Lc = _cluster_blocks(WW, sig2, psi)
        v_used = v
        Xz_v = Xz - v[hc][:, None] * S if nested else Xz         # sums of z - v
        beta_hat, b_hat, beta, b = _coefficients_draw(A, Xz_v.sum(axis=0), WW, WX, Xz_v[:, r], sig2, Lc, ridge,
                                                      rng)
        if nested:
            v = _higher_draw(Lc, S, zs, WX, Xz[:, r], r, beta, sig2, hc, K, omega2, rng)
            Xz_v = Xz - v[hc][:, None] * S
            b = _cluster_effects_draw(Lc, WX, Xz_v[:, r], sig2, beta, rng)
            zz_v = float(np.sum(zz - 2.0 * v[hc] * zs + n_j * v[hc] ** 2))
        else:
            zz_v = float(zz.sum())
        sig2 = _residual_variance_draw(A, Xz_v.sum(axis=0), zz_v, int(n_j.sum()), WW, WX, Xz_v[:, r], beta, b,
                                       rng)
        bo = b[has]
        psi = draw_inverse_wishart(nu + q - 1 + bo.shape[0], np.diag(2.0 * nu / a_k) + bo.T @ bo, rng)
        a_k = (nu * np.diag(np.linalg.inv(psi)) + 1.0 / PSI_PRIOR_SD_SCALE ** 2) / rng.gamma(0.5 * (nu + q), size=q)
        if nested:
            omega2 = draw_tau2(float(np.sum(v[has_k] ** 2)) + TAU2_FLOOR, max(int(has_k.sum()) - 1, 1), rng)
    state.update(psi=psi, a=a_k, sig2=sig2, beta=beta)
    if nested:
        state.update(v=v, omega2=omega2)
    offset_p = v[hc[cp]] if nested else 0.0
    if pmm:
        # type 1: the recorded rows' predictions at the last sweep's conditional means (b_hat given beta_hat and
        # the v that sweep started from)
        fitted = Do @ beta_hat + np.einsum("ik,ik->i", Do[:, r], b_hat[co]) + (v_used[hc[co]] if nested else 0.0)
        return yo[pmm_match(fitted, Dp @ beta + np.einsum("ik,ik->i", Dp[:, r], b[cp]) + offset_p, rng, donors)]
    eta = Dp @ beta + np.einsum("ik,ik->i", Dp[:, r], b[cp]) + offset_p
    return centre + scale * (eta + np.sqrt(sig2) * rng.standard_normal(Dp.shape[0]))


# --------------------------------------------------------------------------
# The public function and its result
# --------------------------------------------------------------------------
