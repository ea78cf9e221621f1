"""Three-level imputation kernels: random intercepts for the cluster and for the level above it.

With ``higher_levels`` (hospitals in countries), multilevel imputation gives
each imputation model of a patient-level variable a random intercept for the
hospital *and* one for its country (the level directly above the cluster; any
level further up keeps its fixed indicator columns), as ``miceadds::ml.lmer``
with ``levels_id``, jomo and Blimp do; the predictors gain the country means
of the other variables beside their hospital means
(:mod:`hmlib.stats.imputation.univariate`). The two kernels here take the
arrays of :mod:`hmlib.stats.imputation.kernels` plus ``hc`` (the higher unit
of each cluster, length ``J``) and ``K`` (the number of higher units).

Continuous (:func:`nested_gibbs_draw`, 2l.pan / 2l.norm / 2l.pmm with a third
level). ``y_ij = x' beta + u_j + v_k(j) + e``, ``u ~ N(0, tau^2)``, ``v ~ N(0,
omega^2)``. Each sweep is a blocked Gibbs sampler:

1. ``(beta, u) | v``: the two-level block draw of
   :func:`~hmlib.stats.imputation.kernels.ri_gibbs_draw` on ``y - v`` (only
   ``beta`` is kept: ``u`` is redrawn next);
2. ``(v, u) | beta``: ``v_k`` from its distribution with the hospital
   effects integrated out (a hospital's mean residual is ``N(v_k, tau^2 +
   sigma^2 / n_j)``), then ``u_j | v_k``: an exact joint draw, so the
   sampler does not stall on the trade between a country's effect and its
   hospitals' (their sum is what the data inform);
3. ``sigma^2``, ``tau^2`` and ``omega^2`` as in the two-level sampler (the
   same uniform prior on ``omega`` over ``(0, 1]`` SD of the target).

A hospital without observed values gets ``u ~ N(0, tau^2)``, a country
without observed values ``v ~ N(0, omega^2)``.

Binary (:func:`nested_logistic_draw`, 2l.bin with a third level): the
nested random-intercept logistic model is fitted by maximum likelihood
(Laplace; :func:`hmlib.stats.mixed.fit_mixed`) on the observed rows;
``beta* ~ N(beta_hat, cov)``, each level's ``log SD* ~ N(log SD_hat,
se^2)`` (capped as in 2l.bin); then ``(v*, u*)`` from the normal
approximation at the mode of their joint conditional posterior given
``beta*`` and the SDs (per country, the precision matrix is an arrow: the
country effect and its hospitals'), and the values from ``expit(x' beta* +
u*_j + v*_k)``. A fit that fails falls back to the two-level draw (noted).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from hmlib.exceptions import FitError
from hmlib.stats.imputation.kernels import (GIBBS_BURN_IN, GIBBS_SWEEPS, LOGISTIC_TAU_MAX, TAU2_FLOOR,
                                            block_gaussian, cached_sufficient_statistics, draw_tau2,
                                            draw_variances, pmm_match, ri_logistic_draw, standardise_target,
                                            values_or_logits)

__all__ = ["nested_gibbs_draw", "nested_logistic_draw", "nested_conditional_modes"]


def nested_gibbs_draw(Do, yo, co, Dp, cp, J, hc, K, rng, *, state: dict, hetero: bool, pmm: bool, donors: int,
                      prior_precision=None, cache: dict | None = None):
    """The three-level normal model's Gibbs sampler, then draws (module docstring).

    Parameters as :func:`hmlib.stats.imputation.kernels.ri_gibbs_draw`, plus
    ``hc`` (higher unit of each cluster, ``J`` integers) and ``K``. ``state``
    also carries ``omega2`` and the higher units' effects ``v``.
    """
    centre, scale = standardise_target(yo)
    z = (yo - centre) / scale
    p = Do.shape[1]
    hc = np.asarray(hc, dtype=np.intp)
    sums = cached_sufficient_statistics(Do, z, co, J, cache)
    XX = sums[:, :p * p].reshape(J, p, p)
    S = sums[:, p * p:p * p + p]
    Xz = sums[:, p * p + p:p * p + 2 * p]
    zs, n_j = sums[:, -3], sums[:, -1]
    has = n_j > 0
    has_k = np.bincount(hc[has], minlength=K) > 0
    K_obs = int(has_k.sum())
    if np.size(state.get("sig2", 0.0)) not in (1, J) or np.size(state.get("v", np.zeros(K))) != K:
        state.clear()
    first = "tau2" not in state
    tau2, omega2 = state.get("tau2", 0.25), state.get("omega2", 0.25)
    sig2 = np.broadcast_to(np.asarray(state.get("sig2", 0.5), dtype=float), (J,)).copy()
    s2 = state.get("s2", 0.5)
    v = np.array(state.get("v", np.zeros(K)), dtype=float)
    ridge = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, dtype=float)
    n_safe = np.where(has, n_j, 1.0)
    for _ in range(GIBBS_BURN_IN if first else GIBBS_SWEEPS):
        w = 1.0 / sig2
        vj = v[hc]
        A = np.einsum("j,jkl->kl", w, XX) + np.diag(ridge)
        C = w[:, None] * S
        D = w * n_j + 1.0 / tau2
        beta_hat, _, beta, _ = block_gaussian(A, C, D, (w[:, None] * (Xz - vj[:, None] * S)).sum(axis=0),
                                               w * (zs - vj * n_j), rng)
        # (v, u) | beta: v with u integrated out, then u | v
        r = zs - S @ beta                                # residual sum per cluster
        prec_j = np.where(has, 1.0 / (tau2 + sig2 / n_safe), 0.0)
        P = np.bincount(hc, weights=prec_j, minlength=K) + 1.0 / omega2
        M = np.bincount(hc, weights=prec_j * r / n_safe, minlength=K) / P
        v = M + rng.standard_normal(K) / np.sqrt(P)
        Du = w * n_j + 1.0 / tau2
        u = w * (r - n_j * v[hc]) / Du + rng.standard_normal(J) / np.sqrt(Du)
        sig2, s2, tau2 = draw_variances(sums, beta, u + v[hc], u, rng, hetero=hetero, s2=s2)
        omega2 = draw_tau2(float(np.sum(v[has_k] ** 2)) + TAU2_FLOOR, max(K_obs - 1, 1), rng)
    state.update(tau2=tau2, omega2=omega2, sig2=sig2 if hetero else float(sig2[0]), s2=s2, v=v)
    if pmm:
        # type-1 matching: the observed rows' predictions at the conditional means given the variance
        # components the last sweep used (w and Du from that sweep, as beta_hat and M; not the redrawn ones)
        u_hat = w * (r - n_j * M[hc]) / Du
        return yo[pmm_match(Do @ beta_hat + (u_hat + M[hc])[co], Dp @ beta + (u + v[hc])[cp], rng, donors)]
    return centre + scale * (Dp @ beta + u[cp] + v[hc[cp]] + np.sqrt(sig2[cp]) * rng.standard_normal(Dp.shape[0]))


def nested_conditional_modes(offset, y, co, J, hc, K, tau, omega, max_iter: int = 100):
    """Mode and arrow-shaped curvature of ``(v, u) | beta, tau, omega`` in a nested logistic model.

    Returns
    -------
    v, u : numpy.ndarray
        The modes (``K`` and ``J``).
    schur : numpy.ndarray
        ``K``: the precision of ``v_k`` with its hospitals' ``u`` integrated out (Laplace).
    h_u, a : numpy.ndarray
        ``J``: the conditional precision of ``u_j`` given ``v``, and its cross term with ``v_k``
        (so ``u_j | v_k ~ N(u_j - a_j / h_u_j (v_k - v_mode_k), 1 / h_u_j)``).
    """
    tau2 = max(float(tau), 1e-6) ** 2
    omega2 = max(float(omega), 1e-6) ** 2
    u, v = np.zeros(J), np.zeros(K)
    for _ in range(max_iter):
        prob = special.expit(offset + u[co] + v[hc[co]])
        a = np.bincount(co, weights=prob * (1 - prob), minlength=J)
        g_u = np.bincount(co, weights=y - prob, minlength=J) - u / tau2
        h_u = a + 1.0 / tau2
        g_v = np.bincount(hc, weights=g_u + u / tau2, minlength=K) - v / omega2
        h_v = np.bincount(hc, weights=a, minlength=K) + 1.0 / omega2
        schur = h_v - np.bincount(hc, weights=a * a / h_u, minlength=K)
        dv = (g_v - np.bincount(hc, weights=a * g_u / h_u, minlength=K)) / schur
        du = (g_u - a * dv[hc]) / h_u
        dv, du = np.clip(dv, -2.0, 2.0), np.clip(du, -2.0, 2.0)
        v, u = v + dv, u + du
        if max(np.max(np.abs(dv)), np.max(np.abs(du))) < 1e-9:
            break
    prob = special.expit(offset + u[co] + v[hc[co]])
    a = np.bincount(co, weights=prob * (1 - prob), minlength=J)
    h_u = a + 1.0 / tau2
    schur = np.bincount(hc, weights=a, minlength=K) + 1.0 / omega2 - np.bincount(hc, weights=a * a / h_u,
                                                                                  minlength=K)
    return v, u, schur, h_u, a


def _draw_sd(sd: float, log_se: float, rng) -> float:
    if sd > 0 and np.isfinite(log_se):
        return min(sd * np.exp(min(log_se * rng.standard_normal(), 700.0)), LOGISTIC_TAU_MAX)
    return sd


def nested_logistic_draw(Do, yo, co, Dp, cp, J, hc, K, rng, *, notes, target: str, logits: bool = False,
                         cache: dict | None = None, state: dict | None = None):
    """2l.bin with a third level: the nested fit, then beta*, the SDs, (v*, u*) and the values (module docstring).

    ``cache`` (shared by all chains) keeps the fit when no imputation changes the design. ``state``
    (the chain's, for this variable) carries the fit's optimum and Hessian from one iteration to
    the next: the next fit starts there and takes that Hessian as its Newton matrix and for the
    covariance of the parameter draws (the chain's first fit computes it; later ones refit data
    that differ only in the imputed values, whose curvature is nearly the same), which saves
    about half of each fit; from that start Newton steps replace L-BFGS-B. A state from other rows
    (a sensitivity scenario's subset, warm-started from the primary's chains) gives the start and
    the Newton matrix only: the subset's Hessian is computed afresh, at its optimum.
    """
    from hmlib.stats.mixed import RandomEffects, fit_mixed

    hc = np.asarray(hc, dtype=np.intp)
    if cache is not None and "nested_fit" in cache:
        fit = cache["nested_fit"]
    else:
        try:
            start, hessian, rows = (None, None, None) if state is None else \
                state.get("nested_start", (None, None, None))
            newton = None
            if rows != (yo.size, K, J):
                # another data set (a scenario's subset): its own curvature, computed at its optimum; the
                # other rows' Hessian only guides the Newton steps there
                hessian, newton = None, hessian
            fit = fit_mixed(yo, Do, RandomEffects.nested(("higher", hc[co]), ("cluster", co)), family="binomial",
                            start=start, hessian=hessian, newton_matrix=newton)
            if state is not None:
                state["nested_start"] = (fit.optimum, fit.optimum_hessian, (yo.size, K, J))
        except FitError as exc:
            fit = exc
        if cache is not None:
            cache["nested_fit"] = fit
    if isinstance(fit, FitError) or not (np.all(np.isfinite(fit.cov)) and np.all(np.isfinite(fit.coef))):
        notes.add(f"The three-level logistic model for '{target}' could not be fitted"
                  f"{f' ({fit})' if isinstance(fit, FitError) else ''}; those values were drawn from the "
                  "two-level random-intercept logistic model (cluster intercepts only).")
        return ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, notes=notes, target=target, logits=logits)
    vals, vecs = np.linalg.eigh(fit.cov)
    beta = fit.coef + vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * rng.standard_normal(vals.size))
    higher, cluster = fit.levels
    omega = _draw_sd(float(higher.sd[0]), float(higher.log_sd_std_error[0]), rng)
    tau = _draw_sd(float(cluster.sd[0]), float(cluster.log_sd_std_error[0]), rng)
    v_mode, u_mode, schur, h_u, a = nested_conditional_modes(Do @ beta, yo, co, J, hc, K, tau, omega)
    v = v_mode + rng.standard_normal(K) / np.sqrt(schur) if omega > 0 else np.zeros(K)
    u = u_mode - a / h_u * (v - v_mode)[hc] + rng.standard_normal(J) / np.sqrt(h_u) if tau > 0 else np.zeros(J)
    return values_or_logits(Dp @ beta + u[cp] + v[hc[cp]], rng, logits)
