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
With ``higher_levels`` (a random intercept for the level above) a binary
target keeps the three-level random-intercept model of
:mod:`hmlib.stats.imputation.three_level` instead (no slopes; said in the
model description).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from hmlib.exceptions import FitError
from hmlib.stats.imputation.kernels import LOGISTIC_TAU_MAX, cluster_sums, ri_logistic_draw, values_or_logits
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed

__all__ = ["random_slopes_logistic_draw", "slope_effect_modes"]


def random_slopes_logistic_draw(Do, yo, co, Dp, cp, J, rng, *, random_columns, notes, target: str,
                                state: dict | None = None, cache: dict | None = None, logits: bool = False):
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

    Returns
    -------
    numpy.ndarray, shape (n_mis,)
    """
    r = np.asarray(random_columns, dtype=np.intp)
    fit = _fit(Do, yo, co, r, state, cache)
    if isinstance(fit, FitError):
        notes.add(f"Random-slope logistic model for '{target}' could not be fitted ({fit}); those values were "
                  "drawn from the random-intercept logistic model instead.")
        return ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, notes=notes, target=target, logits=logits)
    if state is not None:
        state["slopes_start"] = (Do.shape[1], tuple(r), fit.optimum)
    vals, vecs = np.linalg.eigh(fit.cov)
    beta = fit.coef + vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * rng.standard_normal(vals.size))
    psi = _psi_draw(fit.levels[0], rng, notes, target)
    previous = None if state is None else state.get("slopes_modes")
    modes, precision = slope_effect_modes(Do @ beta, yo, co, Do[:, r], J, psi,
                                          start=previous if np.shape(previous) == (J, r.size) else None)
    if state is not None:
        state["slopes_modes"] = modes
    b = modes + _normal_given_precision(precision, rng.standard_normal((J, r.size)))
    return values_or_logits(Dp @ beta + np.einsum("ik,ik->i", Dp[:, r], b[cp]), rng, logits)


def _fit(Do, yo, co, r, state, cache):
    """Step 1: the Laplace fit on the recorded rows (or the FitError), cached and warm-started."""
    if cache is not None and "slopes_fit" in cache:
        return cache["slopes_fit"]
    previous = None if state is None else state.get("slopes_start")
    # the previous fit of the same model (the same design width and random columns) is where this one starts
    start = previous[2] if previous is not None and previous[:2] == (Do.shape[1], tuple(r)) else None
    level = RandomLevel("cluster", co, slopes={f"s{k}": Do[:, k] for k in r[1:]})
    try:
        fit = fit_mixed(yo, Do, RandomEffects((level,)), family="binomial", start=start)
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


def slope_effect_modes(offset, yo, co, Wo, J: int, psi, max_iter: int = 100, start=None):
    """Modes and precisions of ``b_i | y_i, beta, Psi`` in the random-slope logistic model.

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
    start : numpy.ndarray, shape (J, q), optional
        Where Newton's method starts (a chain's previous modes; the maximum does not depend on it). Zeros if None.

    Returns
    -------
    modes : numpy.ndarray, shape (J, q)
        Zero for a cluster without rows.
    precision : numpy.ndarray, shape (J, q, q)
        The negative Hessian of ``log p(b_i | y_i)`` at the mode (``Psi^-1`` without rows).
    """
    q = Wo.shape[1]
    psi_inv = np.linalg.inv(psi)
    outer = (Wo[:, :, None] * Wo[:, None, :]).reshape(-1, q * q)
    b = np.zeros((J, q)) if start is None else np.array(start, dtype=float)

    def curvature(prob):
        w = prob * (1.0 - prob)
        return cluster_sums(outer * w[:, None], co, J).reshape(J, q, q) + psi_inv

    for _ in range(max_iter):
        prob = special.expit(offset + np.einsum("ik,ik->i", Wo, b[co]))
        grad = cluster_sums(Wo * (yo - prob)[:, None], co, J) - b @ psi_inv
        step = np.clip(_solve(curvature(prob), grad), -2.0, 2.0)
        b = b + step
        if np.max(np.abs(step)) < 1e-9:
            break
    prob = special.expit(offset + np.einsum("ik,ik->i", Wo, b[co]))
    return b, curvature(prob)
