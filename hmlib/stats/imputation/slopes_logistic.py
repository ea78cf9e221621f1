"""The random-slope logistic imputation kernel: 2l.bin with random slopes (mice's "type 2"), by Laplace.

For a binary target (or one contrast of a categorical target's baseline-category
model) when the analysis model has random slopes, usually on time, the
imputation model is

``logit P(y_ij = 1) = x_ij' beta + w_ij' b_i``, ``b_i ~ N(0, Psi)``,

with ``w_ij = (1, s_ij)`` the intercept and the slope columns (each also a
fixed effect) and ``Psi`` unstructured, on the standardised design of
:func:`~hmlib.stats.imputation.kernels.prepare_design` (so, as for the
continuous kernel, nothing depends on the units of time). Each call:

1. the maximum-likelihood fit of that model on the recorded rows (Laplace, as
   ``glmer(nAGQ = 1)``: :func:`hmlib.stats.mixed.fit_mixed` with
   ``family="binomial"``), started from the chain's previous fit of the
   variable (``state["slopes_start"]``; it moves where the optimiser begins, not
   where it ends); for a design no imputation changes (``cache``) fitted once;
2. ``beta* ~ N(beta_hat, cov)``, each SD ``sd* = sd_hat exp(se(log sd) N(0, 1))``
   (at most :data:`~hmlib.stats.imputation.kernels.LOGISTIC_TAU_MAX`) and each
   correlation ``tanh(atanh(cor_hat) + se(atanh cor) N(0, 1))``: the normal
   approximation at the optimum that the random-intercept draw
   (:func:`~hmlib.stats.imputation.kernels.ri_logistic_draw`) uses for its one
   SD, extended to ``Psi``; an SD at the boundary (0, or no standard error), or
   a drawn ``Psi*`` that is not positive definite, is replaced by the estimate
   (noted);
3. each patient's ``b_i*`` from the normal approximation at the mode of ``b_i |
   y_i, beta*, Psi*`` (Newton steps, all patients at once): conditional on the
   patient's recorded values. (mice's ``2l.bin`` draws every ``b_i*`` from
   ``N(0, Psi*)``, ignoring them, which shrinks a patient's own level and trend
   to the average.) A patient without recorded values gets ``N(0, Psi*)``;
4. the values ``Bernoulli(expit(x' beta* + w' b_i*))``, or with
   ``logits=True`` the linear predictors (the categorical caller draws).

A fit that fails falls back to the random-intercept logistic draw (noted).

A level above (visits in patients in sites; ``hc``, ``K``): ``+ v_k(i)``,
``v ~ N(0, omega^2)``, as ``(1 | site) + (1 + t | patient)`` in lme4. The fit
has both levels; ``omega*`` is drawn as the random-intercept draw's SD; the
modes of ``(v, b)`` are found jointly (Newton steps on the arrow-shaped
curvature: each site's intercept with its patients' blocks, reduced by the
Schur complement, :func:`slope_effect_modes`), and the draw takes ``v_k``
from its marginal (its patients' effects integrated out), then each ``b_i``
given its site's ``v_k`` (:func:`effects_draw`). A fit that fails falls back
to the three-level random-intercept draw
(:func:`~hmlib.stats.imputation.three_level.nested_logistic_draw`).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from hmlib.exceptions import FitError
from hmlib.stats.imputation.kernels import LOGISTIC_TAU_MAX, cluster_sums, ri_logistic_draw, values_or_logits
from hmlib.stats.imputation.three_level import nested_logistic_draw
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed

__all__ = ["random_slopes_logistic_draw", "slope_effect_modes", "effects_draw"]


def random_slopes_logistic_draw(Do, yo, co, Dp, cp, J, rng, *, random_columns, notes, target: str,
                                state: dict | None = None, cache: dict | None = None, logits: bool = False,
                                hc=None, K: int = 0):
    """The random-slope logistic model's fit and draws (module docstring).

    Parameters
    ----------
    Do, Dp : numpy.ndarray, shape (n_obs, p), (n_mis, p)
        Standardised design rows of the recorded and the missing values, the intercept first.
    yo : numpy.ndarray of 0/1, shape (n_obs,)
    co, cp : numpy.ndarray of int
        Cluster codes (``0..J-1``) of those rows.
    J : int
    rng : numpy.random.Generator
    random_columns : sequence of int
        Columns of the design with a random effect: ``0`` (the intercept) first, then the slope columns.
    notes : set
        Plain-language notes (fall-backs) are added here.
    target : str
    state : dict, optional
        The chain's state for this variable: the previous fit's optimum (``"slopes_start"``) and the patients'
        previous modes (``"slopes_modes"``, where the next Newton steps start), read and written.
    cache : dict, optional
        Shared by all chains for a design no imputation changes: the fit is made once.
    logits : bool
        Return the linear predictors instead of 0/1 values.
    hc : array_like of int, shape (J,), optional
        Each cluster's unit of the level above (``0 .. K-1``): adds that level's random intercept (module
        docstring, "A level above").
    K : int
        Number of units of the level above.

    Returns
    -------
    numpy.ndarray, shape (n_mis,)
    """
    r = np.asarray(random_columns, dtype=np.intp)
    nested = hc is not None
    hc = np.asarray(hc if nested else np.zeros(J), dtype=np.intp)
    fit = _fit(Do, yo, co, r, state, cache, hc if nested else None)
    if isinstance(fit, FitError):
        notes.add(f"Random-slope logistic model for '{target}' could not be fitted ({fit}); those values were "
                  "drawn from the random-intercept logistic model instead.")
        if nested:
            return nested_logistic_draw(Do, yo, co, Dp, cp, J, hc, K, rng, notes=notes, target=target,
                                        logits=logits)
        return ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, notes=notes, target=target, logits=logits)
    if state is not None:
        state["slopes_start"] = (Do.shape[1], tuple(r), nested, fit.optimum)
    vals, vecs = np.linalg.eigh(fit.cov)
    beta = fit.coef + vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * rng.standard_normal(vals.size))
    psi = _psi_draw(fit.levels[-1], rng, notes, target)
    omega2 = _omega2_draw(fit.levels[0], rng, notes, target) if nested else 0.0
    previous = None if state is None else state.get("slopes_modes")
    start = previous if previous is not None and np.shape(previous[1]) == (J, r.size) \
        and np.size(previous[0]) == (K if nested else 0) else None
    v, modes, precision, cross, schur = slope_effect_modes(Do @ beta, yo, co, Do[:, r], J, psi, start=start,
                                                           hc=hc if nested else None, K=K, omega2=omega2)
    if state is not None:
        state["slopes_modes"] = (v, modes)
    v, b = effects_draw(v, modes, precision, cross, schur, hc if nested else None, rng)
    eta = Dp @ beta + np.einsum("ik,ik->i", Dp[:, r], b[cp]) + (v[hc[cp]] if nested else 0.0)
    return values_or_logits(eta, rng, logits)


def effects_draw(v, b, precision, cross, schur, hc, rng):
    """One draw of ``(v, b)`` from the normal approximation at the modes (:func:`slope_effect_modes`' outputs).

    Without a level above (``hc`` None) ``b_i ~ N(b_i, H_bb^-1)``; with it, ``v_k`` from its marginal (precision
    ``schur``, its clusters' effects integrated out), then each ``b_i`` given its unit's ``v_k``.
    """
    J, q = b.shape
    out = b + _normal_given_precision(precision, rng.standard_normal((J, q)))
    if hc is None:
        return v, out
    v_star = v + rng.standard_normal(v.size) / np.sqrt(schur)
    return v_star, out - _solve(precision, cross) * (v_star - v)[hc][:, None]


def _fit(Do, yo, co, r, state, cache, hc=None):
    """Step 1: the Laplace fit on the recorded rows (or the FitError), cached and warm-started."""
    if cache is not None and "slopes_fit" in cache:
        return cache["slopes_fit"]
    previous = None if state is None else state.get("slopes_start")
    # the previous fit of the same model (design width, random columns, level above) is where this one starts
    start = previous[3] if previous is not None and previous[:3] == (Do.shape[1], tuple(r), hc is not None) \
        else None
    level = RandomLevel("cluster", co, slopes={f"s{k}": Do[:, k] for k in r[1:]})
    levels = (level,) if hc is None else (RandomLevel("higher", hc[co]), level)
    try:
        fit = fit_mixed(yo, Do, RandomEffects(levels), family="binomial", start=start)
        if not (np.all(np.isfinite(fit.cov)) and np.all(np.isfinite(fit.coef))):
            raise FitError("no usable covariance matrix of the coefficients")
    except FitError as exc:
        fit = exc
    if cache is not None:
        cache["slopes_fit"] = fit
    return fit


def _psi_draw(level, rng, notes, target: str) -> np.ndarray:
    """Step 2's ``Psi*``: SDs on the log scale and correlations on Fisher's z scale (module docstring)."""
    sd, q = level.sd, level.sd.size
    se_log = np.asarray(level.log_sd_std_error, dtype=float)
    if not (np.all(sd > 0) and np.all(np.isfinite(se_log))):
        notes.add(f"Random-slope logistic model for '{target}': an SD was estimated at the boundary (0, or "
                  "without a standard error) in some imputations; the estimated covariance was used as it is.")
        return _estimate(level)
    sd_star = np.minimum(sd * np.exp(np.minimum(se_log * rng.standard_normal(q), 700.0)), LOGISTIC_TAU_MAX)
    upper = np.triu_indices(q, 1)
    se_z = np.nan_to_num(np.asarray(level.atanh_cor_std_error, dtype=float)[upper], nan=0.0, posinf=0.0)
    cor = np.eye(q)
    cor[upper] = np.tanh(np.arctanh(np.clip(level.cor[upper], -0.999999, 0.999999))
                         + se_z * rng.standard_normal(upper[0].size))
    cor = cor + np.triu(cor, 1).T
    psi = np.outer(sd_star, sd_star) * cor
    if np.linalg.eigvalsh(psi)[0] <= 1e-10 * sd_star.max() ** 2:
        notes.add(f"Random-slope logistic model for '{target}': a drawn covariance of the random effects was not "
                  "positive definite in some imputations; the estimated covariance was used there.")
        return _estimate(level)
    return psi


def _omega2_draw(level, rng, notes, target: str) -> float:
    """The level above's variance: its SD drawn on the log scale, as the random-intercept draw's (at most
    ``LOGISTIC_TAU_MAX``; at the boundary the estimate, at least 1e-4 for the precision)."""
    sd, se = float(level.sd[0]), float(level.log_sd_std_error[0])
    if not (sd > 0 and np.isfinite(se)):
        notes.add(f"Random-slope logistic model for '{target}': the SD of the level above was estimated at "
                  f"{sd:.3g} without a standard error in some imputations; it was used as estimated.")
        return max(sd, 1e-4) ** 2
    return min(sd * np.exp(min(se * rng.standard_normal(), 700.0)), LOGISTIC_TAU_MAX) ** 2


def _estimate(level) -> np.ndarray:
    """The estimated ``Psi``, its eigenvalues floored at ``1e-8`` (an SD of 1e-4 on the logit scale per SD of the
    column): at the boundary (an SD at 0, a correlation at +/-1) the estimate is singular, and the effects'
    precision needs its inverse; the floor keeps those directions at (almost) no variation."""
    vals, vecs = np.linalg.eigh(np.array(level.covariance, dtype=float))
    return (vecs * np.maximum(vals, 1e-8)) @ vecs.T


def _solve(H, g):
    """``H_j^-1 g_j`` for a stack of symmetric positive definite ``q x q`` matrices; closed form for ``q <= 2``
    (the usual intercept and time slope), where numpy's batched solve costs most of a Newton step."""
    q = H.shape[1]
    if q == 1:
        return g / H[:, :, 0]
    if q == 2:
        a, b, d = H[:, 0, 0], H[:, 0, 1], H[:, 1, 1]
        det = a * d - b * b
        return np.column_stack([d * g[:, 0] - b * g[:, 1], a * g[:, 1] - b * g[:, 0]]) / det[:, None]
    return np.linalg.solve(H, g[..., None])[..., 0]


def _normal_given_precision(H, e):
    """``L_j'^-1 e_j`` with ``H_j = L_j L_j'`` (Cholesky): draws with covariance ``H_j^-1`` from standard normal
    ``e`` (``J x q``); closed form for ``q <= 2``."""
    q = H.shape[1]
    if q == 1:
        return e / np.sqrt(H[:, :, 0])
    if q == 2:
        l11 = np.sqrt(H[:, 0, 0])
        l21 = H[:, 1, 0] / l11
        l22 = np.sqrt(H[:, 1, 1] - l21 * l21)
        x2 = e[:, 1] / l22
        return np.column_stack([(e[:, 0] - l21 * x2) / l11, x2])
    L = np.linalg.cholesky(H)
    return np.linalg.solve(np.swapaxes(L, 1, 2), e[..., None])[..., 0]


def slope_effect_modes(offset, yo, co, Wo, J: int, psi, max_iter: int = 100, start=None, hc=None, K: int = 0,
                       omega2: float = 1.0):
    """Modes and curvature of the random effects given ``beta`` and their covariances, in the random-slope
    logistic model (with a level above: jointly with its intercepts ``v``).

    Parameters
    ----------
    offset : numpy.ndarray, shape (n_obs,)
        ``x' beta`` of the recorded rows.
    yo : numpy.ndarray of 0/1
    co : numpy.ndarray of int
        Cluster codes of the recorded rows (``0..J-1``).
    Wo : numpy.ndarray, shape (n_obs, q)
        The random-effect columns of those rows.
    J : int
    psi : numpy.ndarray, shape (q, q)
    max_iter : int
    start : tuple (v, b), optional
        Where Newton's method starts (a chain's previous modes; the maximum does not depend on it). Zeros if None.
    hc : numpy.ndarray of int, shape (J,), optional
        Each cluster's unit of the level above (``0..K-1``), whose intercepts ``v ~ N(0, omega2)`` are added.
    K : int
    omega2 : float

    Returns
    -------
    v : numpy.ndarray, shape (K,)
        The level above's modes (empty without it).
    b : numpy.ndarray, shape (J, q)
        The clusters' modes (zero for a cluster without rows, and no level above).
    precision : numpy.ndarray, shape (J, q, q)
        ``H_bb``: the negative Hessian of the log posterior in ``b_i`` (``b_i | v``'s precision).
    cross : numpy.ndarray, shape (J, q)
        ``H_bv``: its cross term with the cluster's ``v_k`` (so ``b_i | v_k ~ N(b_i - H_bb^-1 H_bv (v_k -
        v_k mode), H_bb^-1)``); zeros without a level above.
    schur : numpy.ndarray, shape (K,)
        The precision of ``v_k`` with its clusters' effects integrated out (the Laplace approximation's
        arrow-shaped precision reduced by the Schur complement).
    """
    q = Wo.shape[1]
    nested = hc is not None
    psi_inv = np.linalg.inv(psi)
    # column by column (contiguous vectors and bincount): gathering and summing (n, q) arrays row-wise costs
    # several times as much, and the Newton steps are most of the kernel's time
    cols = [np.ascontiguousarray(Wo[:, k], dtype=float) for k in range(q)]
    upper = np.triu_indices(q)
    outer = [cols[i] * cols[j] for i, j in zip(*upper)]  # the distinct products of the random-effect columns
    # with the intercept first (the imputation kernel's case), a cluster's sums of w and of w * W are H_bb's
    # first column, and of (y - p) the gradient's first entry: not summed again for the level above
    ones_first = nested and bool(np.all(cols[0] == 1.0))
    hco = hc[co] if nested else None
    v, b = (np.zeros(K), np.zeros((J, q))) if start is None else (np.array(start[0], dtype=float),
                                                                   np.array(start[1], dtype=float))

    def sums(weights):
        return np.bincount(co, weights=weights, minlength=J)

    def curvature(prob):
        w = prob * (1.0 - prob)
        H_bb = np.empty((J, q, q))
        for (i, j), o in zip(zip(*upper), outer):
            H_bb[:, i, j] = H_bb[:, j, i] = sums(o * w)
        if not nested:
            return H_bb + psi_inv, np.zeros((J, q)), np.zeros(0)
        H_bv = H_bb[:, :, 0].copy() if ones_first else np.column_stack([sums(c * w) for c in cols])
        w_sums = H_bv[:, 0] if ones_first else sums(w)
        H_bb += psi_inv
        schur = (np.bincount(hc, weights=w_sums, minlength=K) + 1.0 / omega2
                 - np.bincount(hc, weights=np.einsum("jk,jk->j", H_bv, _solve(H_bb, H_bv)), minlength=K))
        return H_bb, H_bv, schur

    def eta(v, b):
        e = offset + sum(c * b[:, k][co] for k, c in enumerate(cols))
        return e + v[hco] if nested else e

    for _ in range(max_iter):
        prob = special.expit(eta(v, b))
        H_bb, H_bv, schur = curvature(prob)
        resid = yo - prob
        g_y = np.column_stack([sums(c * resid) for c in cols])
        g_b = g_y - b @ psi_inv
        step_b = _solve(H_bb, g_b)
        if nested:
            g_v = np.bincount(hc, weights=g_y[:, 0] if ones_first else sums(resid), minlength=K) - v / omega2
            step_v = np.clip((g_v - np.bincount(hc, weights=np.einsum("jk,jk->j", H_bv, step_b), minlength=K))
                             / schur, -2.0, 2.0)
            step_b = step_b - _solve(H_bb, H_bv) * step_v[hc][:, None]
            v = v + step_v
        step_b = np.clip(step_b, -2.0, 2.0)
        b = b + step_b
        if np.max(np.abs(step_b)) < 1e-9 and (not nested or np.max(np.abs(step_v)) < 1e-9):
            break
    H_bb, H_bv, schur = curvature(special.expit(eta(v, b)))
    return v, b, H_bb, H_bv, schur
