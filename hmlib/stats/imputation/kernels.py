"""The numerical kernels of the imputation engine: the draws of one variable's model.

Array functions, no data frames: each takes the design rows of the observed
values of one target (``Do``, ``yo``, cluster codes ``co``), the design rows
to impute (``Dp``, ``cp``) and a ``numpy.random.Generator``, and returns the
imputed values. The models (Bayesian linear regression and predictive mean
matching, penalised logistic regression, cluster intercepts as fixed effects,
the random-intercept Gibbs sampler and the random-intercept logistic draw)
and their priors are stated in the package docstring
(:mod:`hmlib.stats.imputation`); the constants below are those priors and
tolerances. A function given ``notes`` (anything with ``add(text)``, e.g.
:class:`hmlib.stats.imputation.problem.Notes`) records its fall-backs there.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, special, stats
from scipy.linalg import lapack

from hmlib.exceptions import FitError
from hmlib.stats.imputation.ri_logistic import fit_ri_logistic

__all__ = ["cluster_sums", "prepare_design", "standardise_target", "linear_draw", "logistic_draw",
           "block_gaussian", "cluster_sufficient_statistics", "pmm_match", "values_or_logits", "draw_variances",
           "cached_sufficient_statistics",
           "fe_linear_draw", "fe_logistic_draw", "ri_gibbs_draw", "draw_tau2", "ri_logistic_draw",
           "GIBBS_BURN_IN", "GIBBS_SWEEPS", "RESIDUAL_PRIOR_DF", "TAU2_FLOOR", "TAU_MAX", "LOGISTIC_TAU_MAX",
           "LOGISTIC_PRIOR_SD", "FE_LOGISTIC_PRIOR_SD", "COLLINEAR_TOL"]

#: Gibbs sweeps of the random-intercept sampler at the first iteration of a
#: chain, and at each later iteration (the state is carried over).
GIBBS_BURN_IN = 20
GIBBS_SWEEPS = 3
#: Degrees of freedom of the scaled-inverse-chi2 prior of cluster-specific
#: residual variances (cluster_residual_variance=True).
RESIDUAL_PRIOR_DF = 4.0
#: Keeps the draw of tau^2 (standardised units) away from exactly 0.
TAU2_FLOOR = 1e-4
#: Upper end of the uniform prior on tau, in SDs of the (observed) target: cluster effects
#: cannot vary more than the variable itself. Binds only when few clusters observe the target
#: (the scaled-inverse-chi2 draw with J_obs - 1 = 2 degrees of freedom has no mean).
TAU_MAX = 1.0
#: The same bound for 2l.bin, on the logit scale: a cluster SD of 5 already spans rates from
#: about 0 to about 1. Near tau_hat = 0 the SE of log tau is huge, and the log-normal draw of
#: tau would otherwise overflow.
LOGISTIC_TAU_MAX = 5.0
#: Prior SD of standardised logistic coefficients (intercept: 10).
LOGISTIC_PRIOR_SD = 2.5
#: Prior SD of the cluster intercepts of the fixed-effects logistic model.
FE_LOGISTIC_PRIOR_SD = 5.0
#: A column is collinear when its residual SD after projection on the columns
#: before it is below this share of its SD.
COLLINEAR_TOL = 1e-6
#: Entries of the work array of one block of the Gibbs sampler's per-cluster sums (8 MB).
SUFFICIENT_STATISTICS_BLOCK = 1_000_000


# --------------------------------------------------------------------------
# Triangular solves without scipy.linalg's checks (the same LAPACK calls, so the same numbers:
# cho_solve -> potrs, solve_triangular -> trtrs). The stratified comparator solves hundreds of
# thousands of tiny systems, where the checks cost more than the solves.
# --------------------------------------------------------------------------
def _cho_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(L L')^-1 b`` for a lower Cholesky factor ``L`` (``scipy.linalg.cho_solve((L, True), b)``)."""
    x, info = lapack.dpotrs(L, b, lower=1)
    if info != 0:
        raise ValueError(f"illegal value in {-info}th argument of internal potrs")
    return x


def _solve_lower(L: np.ndarray, b: np.ndarray, *, transposed: bool = False) -> np.ndarray:
    """``L^-1 b`` (``L'^-1 b`` if ``transposed``) for lower-triangular ``L``, as
    ``scipy.linalg.solve_triangular(L, b, lower=True, trans=...)`` calls LAPACK."""
    if L.flags.f_contiguous:
        x, info = lapack.dtrtrs(L, b, lower=1, trans=int(transposed))
    else:
        x, info = lapack.dtrtrs(L.T, b, lower=0, trans=int(not transposed))
    if info > 0:
        raise np.linalg.LinAlgError(f"singular matrix: resolution failed at diagonal {info - 1}")
    if info < 0:
        raise ValueError(f"illegal value in {-info}-th argument of internal trtrs")
    return x


# --------------------------------------------------------------------------
# Numerical helpers
# --------------------------------------------------------------------------
def cluster_sums(values: np.ndarray, codes: np.ndarray, J: int) -> np.ndarray:
    """Per-cluster sums of ``values`` (a vector, or each column of a matrix) over ``J`` clusters."""
    if values.ndim == 1:
        return np.bincount(codes, weights=values, minlength=J)
    out = np.empty((J, values.shape[1]))
    for k in range(values.shape[1]):
        out[:, k] = np.bincount(codes, weights=values[:, k], minlength=J)
    return out


def _cholesky(S: np.ndarray, what: str) -> np.ndarray:
    S = 0.5 * (S + S.T)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6):
        try:
            if jitter:
                S = S + jitter * max(float(np.trace(S)) / S.shape[0], 1e-12) * np.eye(S.shape[0])
            return np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            continue
    raise FitError(f"{what}: the normal equations are singular even after removing collinear "
                   "columns; the imputation model cannot be fitted.")


def block_gaussian(A, C, D, b_beta, b_alpha, rng=None):
    """Mean (and a draw) of the Gaussian with precision [[A, C'], [C, diag(D)]].

    The linear term is ``(b_beta, b_alpha)``. ``beta`` is drawn from its
    marginal (precision ``A - C' D^-1 C``, the Schur complement), then
    ``alpha | beta ~ N((b_alpha - C beta) / D, 1 / D)``.
    """
    CD = C / D[:, None]
    S = A - C.T @ CD
    rhs = b_beta - CD.T @ b_alpha
    L = _cholesky(S, "coefficient draw")
    beta_hat = _cho_solve(L, rhs)
    alpha_hat = (b_alpha - C @ beta_hat) / D
    if rng is None:
        return beta_hat, alpha_hat, None, None
    beta = beta_hat + _solve_lower(L, rng.standard_normal(beta_hat.size), transposed=True)
    alpha = (b_alpha - C @ beta) / D + rng.standard_normal(D.size) / np.sqrt(D)
    return beta_hat, alpha_hat, beta, alpha


def _independent_columns(Z: np.ndarray, centred: bool = False) -> np.ndarray:
    """Sorted indices of a maximal set of linearly independent columns (after centring).

    Columns are taken in order; a column is dropped when less than
    ``COLLINEAR_TOL^2`` of its (centred) sum of squares is left after
    projecting it on the columns kept before it. Works on the Gram matrix
    (an incremental Cholesky factorisation), which is cheap for the few
    columns of an imputation model.
    """
    n, q = Z.shape
    if q == 0 or n == 0:
        return np.arange(0)
    C = Z if centred else Z - Z.mean(axis=0)
    G = C.T @ C
    kept: list[int] = []
    L = np.zeros((q, q))
    for j in range(q):
        gjj = G[j, j]
        if gjj <= 1e-18 * n:
            continue
        if kept:
            l = _solve_lower(L[:len(kept), :len(kept)], G[kept, j])
            resid = gjj - float(l @ l)
        else:
            l = np.empty(0)
            resid = gjj
        if resid <= COLLINEAR_TOL ** 2 * gjj:
            continue
        k = len(kept)
        L[k, :k] = l
        L[k, k] = np.sqrt(resid)
        kept.append(j)
    return np.asarray(kept, dtype=int)


def prepare_design(X: np.ndarray, names: list, fit_rows, pred_rows, *, intercept: bool = True,
                   notes=None, target: str = ""):
    """Standardise on the fitting rows, drop constant and collinear columns.

    Parameters
    ----------
    X : numpy.ndarray, shape (n, q)
        Candidate predictor columns of one target.
    names : list of str
        Their names (for the note on dropped columns).
    fit_rows, pred_rows : index or bool mask
        Rows the model is fitted on, rows it predicts.
    intercept : bool
        Add a leading column of ones.
    notes : Notes, optional
        Receives a note naming the collinear columns dropped.
    target : str
        The target's name, for that note.

    Returns
    -------
    Do, Dp : numpy.ndarray
        The fitting and prediction design matrices.
    kept : list of str
        Names of the columns kept (without the intercept).
    """
    Xo = X[fit_rows]
    Xp = X[pred_rows]
    if X.shape[1]:
        mu = Xo.mean(axis=0)
        centred = Xo - mu
        sd = np.sqrt(np.einsum("ij,ij->j", centred, centred) / max(Xo.shape[0], 1))
        keep = np.flatnonzero(sd > 1e-9 * np.maximum(1.0, np.abs(mu)))
        Zo = centred[:, keep] / sd[keep]
        independent = _independent_columns(Zo, centred=True)
        chosen = keep[independent]
        if notes is not None and len(chosen) < len(keep):
            dropped = [names[k] for k in keep if k not in set(chosen.tolist())]
            notes.add(f"Imputation model for '{target}': dropped {', '.join(map(repr, dropped))} "
                      "(linearly dependent on the other predictors where it is observed).")
        Zo = Zo[:, independent]
        Zp = (Xp[:, chosen] - mu[chosen]) / sd[chosen]
        kept = [names[k] for k in chosen]
    else:
        Zo, Zp, kept = np.empty((Xo.shape[0], 0)), np.empty((Xp.shape[0], 0)), []
    if intercept:
        Zo = np.column_stack([np.ones(Zo.shape[0]), Zo])
        Zp = np.column_stack([np.ones(Zp.shape[0]), Zp])
    return Zo, Zp, kept


def standardise_target(y: np.ndarray):
    """Centre and scale (population SD, 1 for a constant) of a continuous target's observed values."""
    centre = float(y.mean())
    scale = float(y.std())
    return centre, (scale if scale > 0 else 1.0)


def pmm_match(yhat_obs: np.ndarray, yhat_mis: np.ndarray, rng, donors: int) -> np.ndarray:
    """Index (into the observed rows) of the donor of each missing row.

    The donor is a random one of the ``donors`` observed rows with the
    closest predicted means (type-1 matching: observed predicted from the
    estimate, missing from the draw).
    """
    n = yhat_obs.size
    k = max(1, min(donors, n))
    order = np.argsort(yhat_obs, kind="stable")
    s = yhat_obs[order]
    width = min(2 * k, n)
    pos = np.searchsorted(s, yhat_mis)
    start = np.clip(pos - k, 0, n - width)
    idx = start[:, None] + np.arange(width)[None, :]
    dist = np.abs(s[idx] - yhat_mis[:, None])
    if width > k:
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
    else:
        nearest = np.broadcast_to(np.arange(width), (yhat_mis.size, width))
    pick = nearest[np.arange(yhat_mis.size), rng.integers(nearest.shape[1], size=yhat_mis.size)]
    return order[idx[np.arange(yhat_mis.size), pick]]


# --------------------------------------------------------------------------
# Single-level draws
# --------------------------------------------------------------------------
def linear_draw(Do, yo, Dp, rng, *, pmm: bool, donors: int) -> np.ndarray:
    """Bayesian linear regression draw (mice norm.draw), or pmm on it."""
    centre, scale = standardise_target(yo)
    z = (yo - centre) / scale
    n, p = Do.shape
    xtx = Do.T @ Do
    xtx = xtx + np.diag(1e-5 * np.diag(xtx))
    L = _cholesky(xtx, "linear imputation model")
    beta_hat = _cho_solve(L, Do.T @ z)
    resid = z - Do @ beta_hat
    sigma = np.sqrt(float(resid @ resid) / rng.chisquare(max(n - p, 1)))
    beta = beta_hat + sigma * _solve_lower(L, rng.standard_normal(p), transposed=True)
    if pmm:
        return yo[pmm_match(Do @ beta_hat, Dp @ beta, rng, donors)]
    return centre + scale * (Dp @ beta + sigma * rng.standard_normal(Dp.shape[0]))


def _logistic_mode(D, y, prior_prec, offset=None, max_iter: int = 60):
    """Posterior mode of a logistic regression with independent normal priors (mean 0)."""
    p = D.shape[1]
    beta = np.zeros(p)
    off = 0.0 if offset is None else offset

    def objective(b):
        eta = D @ b + off
        return float(y @ eta - np.logaddexp(0.0, eta).sum() - 0.5 * np.sum(prior_prec * b * b))

    value = objective(beta)
    H = None
    for _ in range(max_iter):
        eta = D @ beta + off
        prob = special.expit(eta)
        w = prob * (1.0 - prob)
        grad = D.T @ (y - prob) - prior_prec * beta
        H = D.T @ (D * w[:, None]) + np.diag(prior_prec)
        step = _cho_solve(_cholesky(H, "logistic imputation model"), grad)
        t = 1.0
        for _ in range(30):
            candidate = beta + t * step
            new_value = objective(candidate)
            if new_value >= value - 1e-10 * abs(value):
                break
            t *= 0.5
        beta, value = candidate, new_value
        if np.max(np.abs(t * step)) < 1e-8:
            break
    eta = D @ beta + off
    prob = special.expit(eta)
    H = D.T @ (D * (prob * (1.0 - prob))[:, None]) + np.diag(prior_prec)
    return beta, H


def _logistic_prior(p: int) -> np.ndarray:
    prec = np.full(p, 1.0 / LOGISTIC_PRIOR_SD ** 2)
    prec[0] = 1.0 / 100.0
    return prec


def values_or_logits(eta, rng, logits: bool) -> np.ndarray:
    """0/1 draws with ``P = expit(eta)``, or ``eta`` itself (``logits=True``: the caller draws)."""
    if logits:
        return eta
    return (rng.random(eta.shape[0]) < special.expit(eta)).astype(float)


def logistic_draw(Do, yo, Dp, rng, cache: dict | None = None, *, logits: bool = False) -> np.ndarray:
    """Logistic regression draw (mice logreg, with weakly informative priors).

    ``cache`` (a dict shared by all chains, for a design no imputation
    changes): the posterior mode and its Cholesky factor are computed once.
    With ``logits=True`` the rows of ``Dp`` get their linear predictors under the drawn
    parameters instead of 0/1 values (one contrast of a baseline-category model).
    """
    if cache is not None and "mode" in cache:
        beta_hat, L = cache["mode"]
    else:
        beta_hat, H = _logistic_mode(Do, yo, _logistic_prior(Do.shape[1]))
        L = _cholesky(H, "logistic imputation model")
        if cache is not None:
            cache["mode"] = (beta_hat, L)
    beta = beta_hat + _solve_lower(L, rng.standard_normal(beta_hat.size), transposed=True)
    return values_or_logits(Dp @ beta, rng, logits)


# --------------------------------------------------------------------------
# Fixed-effects (cluster intercept) draws
# --------------------------------------------------------------------------
def _within_independent(Do, co, J):
    """Columns of Do that stay independent after removing cluster means."""
    n_j = np.bincount(co, minlength=J).astype(float)
    means = cluster_sums(Do, co, J) / np.maximum(n_j, 1.0)[:, None]
    return _independent_columns(Do - means[co])


def _empty_cluster_intercepts(alpha_hat, has, rng, J, cp, notes, target):
    if notes is not None and np.isin(cp, np.flatnonzero(~has)).any():
        notes.add(f"Fixed-effects imputation of '{target}': some clusters never observe it, so their "
                  "intercepts cannot be estimated; they were drawn from a normal distribution with the "
                  "mean and SD of the other clusters' estimated intercepts.")
    centre = float(alpha_hat[has].mean())
    spread = float(alpha_hat[has].std(ddof=1)) if has.sum() > 1 else 0.0
    return centre + spread * rng.standard_normal(J)


def fe_linear_draw(Do, yo, co, Dp, cp, J, rng, *, pmm, donors, notes, target):
    """Normal (or pmm) draw from a linear model with one fixed intercept per cluster.

    ``(beta, alpha)`` are drawn jointly from the within-cluster normal
    equations (the cluster block is diagonal), ``sigma^2`` from
    ``RSS / chi2_{n - p - J_obs}``. A cluster without observed value gets an
    intercept drawn from the other clusters' estimated ones (noted).
    """
    cols = _within_independent(Do, co, J)
    Do, Dp = Do[:, cols], Dp[:, cols]
    centre, scale = standardise_target(yo)
    z = (yo - centre) / scale
    n_j = np.bincount(co, minlength=J).astype(float)
    has = n_j > 0
    D = np.where(has, n_j, 1.0)
    A = Do.T @ Do
    C = cluster_sums(Do, co, J)
    b_beta = Do.T @ z
    b_alpha = np.bincount(co, weights=z, minlength=J)
    beta_hat, alpha_hat, beta_u, alpha_u = block_gaussian(A, C, D, b_beta, b_alpha, rng)
    resid = z - Do @ beta_hat - alpha_hat[co]
    df = z.size - Do.shape[1] - int(has.sum())
    if df < 1:
        notes.add(f"Fixed-effects imputation of '{target}': fewer observed values than cluster "
                  "intercepts + predictors; the residual variance rests on 1 degree of freedom.")
        df = 1
    sigma = np.sqrt(float(resid @ resid) / rng.chisquare(df))
    beta = beta_hat + sigma * (beta_u - beta_hat)
    alpha = alpha_hat + sigma * (alpha_u - alpha_hat)
    if (~has).any():
        alpha = np.where(has, alpha, _empty_cluster_intercepts(alpha_hat, has, rng, J, cp, notes, target))
    if pmm:
        return yo[pmm_match(Do @ beta_hat + alpha_hat[co], Dp @ beta + alpha[cp], rng, donors)]
    return centre + scale * (Dp @ beta + alpha[cp] + sigma * rng.standard_normal(Dp.shape[0]))


def fe_logistic_draw(Do, yo, co, Dp, cp, J, rng, *, notes=None, target="", logits: bool = False):
    """0/1 draw from a logistic model with one intercept per cluster.

    The cluster intercepts carry a ``N(logit(mean), FE_LOGISTIC_PRIOR_SD^2)``
    prior, the standardised coefficients ``N(0, LOGISTIC_PRIOR_SD^2)``; the
    draw is from the normal approximation at the posterior mode (found by
    Newton steps on the block system with step halving).
    """
    cols = _within_independent(Do, co, J)
    Do, Dp = Do[:, cols], Dp[:, cols]
    rate = float(np.clip(yo.mean(), 0.01, 0.99))
    mu0 = float(np.log(rate / (1 - rate)))
    a_prec = 1.0 / FE_LOGISTIC_PRIOR_SD ** 2
    b_prec = np.full(Do.shape[1], 1.0 / LOGISTIC_PRIOR_SD ** 2)
    n_j = np.bincount(co, minlength=J)
    has = n_j > 0
    beta = np.zeros(Do.shape[1])
    alpha = np.full(J, mu0)

    def log_post(b, a):
        eta = Do @ b + a[co]
        return float(yo @ eta - np.logaddexp(0.0, eta).sum() - 0.5 * np.sum(b_prec * b * b)
                     - 0.5 * a_prec * np.sum((a - mu0) ** 2))

    def system(b, a):
        eta = Do @ b + a[co]
        prob = special.expit(eta)
        w = np.maximum(prob * (1 - prob), 1e-10)
        zw = w * eta + (yo - prob)
        A = Do.T @ (Do * w[:, None]) + np.diag(b_prec)
        C = cluster_sums(Do * w[:, None], co, J)
        D = np.bincount(co, weights=w, minlength=J) + a_prec
        return A, C, D, Do.T @ zw, np.bincount(co, weights=zw, minlength=J) + a_prec * mu0

    value = log_post(beta, alpha)
    for _ in range(60):
        b_new, a_new, _, _ = block_gaussian(*system(beta, alpha))
        t = 1.0
        for _ in range(30):
            cb, ca = beta + t * (b_new - beta), alpha + t * (a_new - alpha)
            new_value = log_post(cb, ca)
            if new_value >= value - 1e-10 * abs(value):
                break
            t *= 0.5
        change = max(np.max(np.abs(cb - beta), initial=0.0), np.max(np.abs(ca - alpha)))
        beta, alpha, value = cb, ca, new_value
        if change < 1e-8:
            break
    beta_hat, alpha_hat, beta_d, alpha_d = block_gaussian(*system(beta, alpha), rng)
    if (~has).any():
        alpha_d = np.where(has, alpha_d, _empty_cluster_intercepts(alpha_hat, has, rng, J, cp, notes, target))
    return values_or_logits(Dp @ beta_d + alpha_d[cp], rng, logits)


# --------------------------------------------------------------------------
# Random-intercept draws
# --------------------------------------------------------------------------
def cluster_sufficient_statistics(Do, z, co, J) -> np.ndarray:
    """Per-cluster ``[vec(X'X), X'1, X'z, 1'z, z'z, n]`` (J rows), from rows sorted by cluster.

    The rows are taken in blocks of whole clusters of about ``SUFFICIENT_STATISTICS_BLOCK``
    work-array entries (so a million rows do not need a gigabyte of temporaries); each
    cluster's sums are made in one block, so the numbers do not depend on the blocking.
    """
    n, p = Do.shape
    width = p * p + 2 * p + 3
    order = np.argsort(co, kind="stable")
    cs = co[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    ends = np.r_[starts[1:], n]
    sums = np.zeros((J, width))
    block = max(SUFFICIENT_STATISTICS_BLOCK // width, 1)
    first = 0
    while first < starts.size:
        # whole clusters up to about `block` rows (at least one cluster)
        last = max(int(np.searchsorted(ends, starts[first] + block, side="right")), first + 1)
        lo, hi = starts[first], ends[last - 1]
        rows_idx = order[lo:hi]
        Xs, zs = Do[rows_idx], z[rows_idx]
        rows = np.concatenate([(Xs[:, :, None] * Xs[:, None, :]).reshape(hi - lo, p * p), Xs, Xs * zs[:, None],
                               zs[:, None], (zs ** 2)[:, None], np.ones((hi - lo, 1))], axis=1)
        sums[cs[starts[first:last]]] = np.add.reduceat(rows, starts[first:last] - lo, axis=0)
        first = last
    return sums


def cached_sufficient_statistics(Do, z, co, J, cache: dict | None) -> np.ndarray:
    """:func:`cluster_sufficient_statistics`, kept in ``cache`` (when given) for a design no imputation changes."""
    if cache is not None and "sums" in cache:
        return cache["sums"]
    sums = cluster_sufficient_statistics(Do, z, co, J)
    if cache is not None:
        cache["sums"] = sums
    return sums


def ri_gibbs_draw(Do, yo, co, Dp, cp, J, rng, *, state: dict, hetero: bool, pmm: bool, donors: int,
                   prior_precision=None, cache: dict | None = None):
    """Gibbs sampler of the random-intercept normal model, then draws (2l.pan / 2l.norm / 2l.pmm).

    ``prior_precision`` (length ``p``, 0 = flat) adds independent ``N(0, 1 / precision)``
    priors on the standardised coefficients (the cluster-level columns' ridge). ``state``
    (``tau2``, ``sig2``, ``s2``) is the chain's sampler state, read and updated in place: empty
    at a chain's first iteration (``GIBBS_BURN_IN`` sweeps), carried over later
    (``GIBBS_SWEEPS`` sweeps). ``cache`` (a dict shared by all chains) is for
    a design that no imputation changes: the per-cluster sums are then
    computed once (the same numbers each time).
    """
    centre, scale = standardise_target(yo)
    z = (yo - centre) / scale
    p = Do.shape[1]
    sums = cached_sufficient_statistics(Do, z, co, J, cache)
    XX = sums[:, :p * p].reshape(J, p, p)
    S = sums[:, p * p:p * p + p]
    Xz = sums[:, p * p + p:p * p + 2 * p]
    zs, n_j = sums[:, -3], sums[:, -1]
    if np.size(state.get("sig2", 0.0)) not in (1, J):
        state.clear()           # a carried-over state of other clusters: start afresh
    first = "tau2" not in state
    tau2 = state.get("tau2", 0.25)
    sig2 = np.broadcast_to(np.asarray(state.get("sig2", 0.75), dtype=float), (J,)).copy()
    s2 = state.get("s2", 0.75)
    ridge = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, dtype=float)
    for _ in range(GIBBS_BURN_IN if first else GIBBS_SWEEPS):
        w = 1.0 / sig2
        A = np.einsum("j,jkl->kl", w, XX) + np.diag(ridge)
        C = w[:, None] * S
        D = w * n_j + 1.0 / tau2
        beta_hat, u_hat, beta, u = block_gaussian(A, C, D, (w[:, None] * Xz).sum(axis=0), w * zs, rng)
        sig2, s2, tau2 = draw_variances(sums, beta, u, u, rng, hetero=hetero, s2=s2)
    state.update(tau2=tau2, sig2=sig2 if hetero else float(sig2[0]), s2=s2)
    if pmm:
        return yo[pmm_match(Do @ beta_hat + u_hat[co], Dp @ beta + u[cp], rng, donors)]
    return centre + scale * (Dp @ beta + u[cp] + np.sqrt(sig2[cp]) * rng.standard_normal(Dp.shape[0]))


def draw_variances(sums: np.ndarray, beta: np.ndarray, e: np.ndarray, u: np.ndarray, rng, *, hetero: bool,
                   s2: float):
    """One Gibbs update of the residual variance(s) and the cluster variance, in this order of draws.

    Parameters
    ----------
    sums : numpy.ndarray
        :func:`cluster_sufficient_statistics` of the standardised target.
    beta : numpy.ndarray
        The coefficients drawn.
    e : numpy.ndarray
        Each cluster's total intercept (``u``, or ``u + v`` with a level above).
    u : numpy.ndarray
        The cluster level's own effects (their SD is updated).
    hetero : bool
        Cluster-specific residual variances (2l.norm) with the hyper-scale ``s2``.
    s2 : float

    Returns
    -------
    sig2 : numpy.ndarray
        ``J`` residual variances (all equal unless ``hetero``).
    s2 : float
    tau2 : float
    """
    J, p = sums.shape[0], beta.size
    XX = sums[:, :p * p].reshape(J, p, p)
    S = sums[:, p * p:p * p + p]
    Xz = sums[:, p * p + p:p * p + 2 * p]
    zs, zz, n_j = sums[:, -3], sums[:, -2], sums[:, -1]
    has = n_j > 0
    J_obs = int(has.sum())
    nu = RESIDUAL_PRIOR_DF
    rss = (zz - 2.0 * Xz @ beta - 2.0 * e * zs + np.einsum("k,jkl,l->j", beta, XX, beta)
           + 2.0 * e * (S @ beta) + n_j * e * e)
    rss = np.maximum(rss, 0.0)
    # sigma^2 | beta, u does not involve the prior of beta
    if hetero:
        sig2 = (rss + nu * s2) / rng.chisquare(n_j + nu)
        s2 = rng.gamma(shape=0.5 * nu * J_obs, scale=1.0 / (0.5 * nu * np.sum(1.0 / sig2[has])))
    else:
        sig2 = np.full(J, float(rss.sum()) / rng.chisquare(max(int(n_j.sum()), 1)))
    tau2 = draw_tau2(float(np.sum(u[has] ** 2)) + TAU2_FLOOR, max(J_obs - 1, 1), rng)
    return sig2, s2, tau2


def draw_tau2(scale_sum: float, df: int, rng) -> float:
    """``tau^2 = scale_sum / chi2_df`` truncated to ``tau <= TAU_MAX`` (uniform prior on (0, TAU_MAX]).

    An untruncated draw inside the bound is kept; otherwise the chi-square is redrawn from
    its distribution truncated to ``chi2 >= scale_sum / TAU_MAX^2`` by inversion. Together
    that is an exact draw from the truncated distribution, and the random stream is the
    plain one whenever the bound does not bind.
    """
    x = rng.chisquare(df)
    if scale_sum / x <= TAU_MAX ** 2:
        return scale_sum / x
    lower = scale_sum / TAU_MAX ** 2
    tail = stats.chi2.sf(lower, df)
    if not tail > 0:
        return TAU_MAX ** 2
    x = max(float(stats.chi2.isf(rng.uniform(0.0, tail), df)), lower)
    return scale_sum / x


def _conditional_modes(offset, y, codes, J, tau2):
    """Modes and curvatures of u_j | beta, tau for a random-intercept logistic model."""
    u = np.zeros(J)
    prec = 1.0 / tau2
    for _ in range(100):
        prob = special.expit(offset + u[codes])
        grad = np.bincount(codes, weights=y - prob, minlength=J) - prec * u
        curv = np.bincount(codes, weights=prob * (1 - prob), minlength=J) + prec
        step = np.clip(grad / curv, -2.0, 2.0)
        u = u + step
        if np.max(np.abs(step)) < 1e-9:
            break
    prob = special.expit(offset + u[codes])
    curv = np.bincount(codes, weights=prob * (1 - prob), minlength=J) + prec
    return u, curv


def ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, *, notes, target: str, state: dict | None = None,
                     cache: dict | None = None, logits: bool = False):
    """2l.bin: the random-intercept logistic fit, then beta*, tau*, u* and the values (or, ``logits=True``,
    their logits).

    The fit is :func:`hmlib.stats.imputation.ri_logistic.fit_ri_logistic`:
    warm-started from ``state["start"]`` (the chain's previous fit of this
    variable, written back here) when given. ``cache`` (a dict shared by all
    chains) is for a design that no imputation changes: the fit (or its
    failure) is made once and reused, which gives the same numbers as
    refitting the same rows.
    """
    if cache is not None and "fit" in cache:
        fit = cache["fit"]
    else:
        try:
            fit = fit_ri_logistic(Do, yo, co, start=None if state is None else state.get("start"))
        except FitError as exc:
            fit = exc
        if cache is not None:
            cache["fit"] = fit
    if isinstance(fit, FitError):
        notes.add(f"Random-intercept logistic model for '{target}' could not be fitted ({fit}); "
                  "those values were drawn from the flat logistic model instead.")
        return logistic_draw(Do, yo, Dp, rng, logits=logits)
    cov = fit.cov
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(fit.coef))):
        notes.add(f"Random-intercept logistic model for '{target}' gave no usable covariance matrix; those "
                  "values were drawn from the flat logistic model instead.")
        return logistic_draw(Do, yo, Dp, rng, logits=logits)
    if state is not None:
        state["start"] = (fit.coef, fit.cluster_sd)
    vals, vecs = np.linalg.eigh(cov)
    beta = fit.coef + vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * rng.standard_normal(vals.size))
    sd = float(fit.cluster_sd)
    log_se = float(fit.log_sd_se)
    if sd > 0 and np.isfinite(log_se):
        tau = min(sd * np.exp(min(log_se * rng.standard_normal(), 700.0)), LOGISTIC_TAU_MAX)
    else:
        tau = sd
        notes.add(f"Random-intercept logistic model for '{target}': the cluster SD was estimated at "
                  f"{sd:.3g} without a standard error in some imputations; it was used as estimated.")
    if tau > 0:
        u_mode, curv = _conditional_modes(Do @ beta, yo, co, J, tau * tau)
        u = u_mode + rng.standard_normal(J) / np.sqrt(curv)
    else:
        u = np.zeros(J)
    return values_or_logits(Dp @ beta + u[cp], rng, logits)
