"""Multilevel imputation with random slopes: the ``2l.pan`` "type 2" model, on standardised columns.

For repeated measures (visits within patients) the imputation model of an
incomplete continuous variable ``y`` has a random intercept *and* random
slopes, usually on time, as R's ``mice`` method ``2l.pan`` with the slope
column given type 2 (Schafer & Yucel 2002):

``y_ij = x_ij' beta + w_ij' b_i + e_ij``, ``b_i ~ N(0, Psi)``, ``e_ij ~ N(0, sigma^2)``,

where ``w_ij = (1, s_ij)`` holds the intercept and the slope columns ``s``
(each slope column is also a fixed effect), ``Psi`` is unstructured
(``q x q``, ``q = 1 + number of slopes``) and ``x`` holds the predictors and,
as hmlib does for random intercepts, their cluster means (Grund, Luedtke &
Robitzsch 2018; the cluster mean of time matters once patients drop out).

Standardisation (the trap). ``2l.pan`` works on the user's units and puts an
inverse-Wishart prior with identity scale on ``Psi`` (``Dinv = diag(q)``):
with time in days, the slope variance is about ``1e-6`` per day^2, and the
identity prior swamps it (on the reference registry of #16 a true 0.35 was
estimated at 0.10; on ``tests/results/random_slope_registry.csv``, 0.094 with
time in days against 0.348 in years: ``random_slope_imputation.R``). Here every column of the design, the slope columns
included, is centred and scaled on the rows where ``y`` is recorded, and
``y`` is z-scored on its recorded values, so ``Psi`` is in units where 1 is
the variance of ``y`` and a slope of 1 is one SD of ``y`` per SD of time;
the model and the imputed values do not depend on the units of time (up to
rounding; RS-IMP-003). ``Psi`` and ``sigma`` are reported on the user's
scale (:attr:`RandomSlopeImputation.random_cov`: the intercept at time 0 and
the slope per unit of the user's time).

Priors (standardised units). ``p(beta)`` flat except the ``N(0, 1)`` prior on
the coefficients of cluster-mean columns that the random-intercept kernel
uses; ``p(sigma^2) ~ 1 / sigma^2``; ``Psi`` has the prior of Huang & Wand
(2013): ``Psi | a ~ inverse-Wishart(nu + q - 1, 2 nu diag(1 / a))``,
``a_k ~ inverse-gamma(1/2, 1 / A^2)``, with ``nu = 2`` and ``A = 1``. Each
SD is then half-t(2) with scale 1 SD of ``y`` per SD of the column (flat near
0, as the random-intercept kernel's uniform prior on ``tau``), and each
correlation uniform on (-1, 1). An inverse-Wishart with a fixed small scale
(the multivariate inverse-gamma(eps, eps), Gelman 2006) was tried first and
pulled small slope SDs to 0: with 30 clusters the posterior median of a
slope SD whose ML estimate is 0.045 (SE 0.023) was 0.018 (RS-IMP-012); with
identity scale, 2l.pan's, it was 0.128. Fewer than ``5 q`` clusters recording
``y`` are refused.

Gibbs sampler (:func:`random_slopes_gibbs_draw`), each sweep:

1. ``(beta, b) | Psi, sigma^2``: one joint Gaussian draw. The precision has a
   ``p x p`` block for ``beta``, a block-diagonal part ``D_i = W_i'W_i /
   sigma^2 + Psi^-1`` for the clusters and cross terms ``W_i'X_i / sigma^2``;
   ``beta`` is drawn from its marginal (the Schur complement of the cluster
   blocks), then each ``b_i | beta ~ N(D_i^-1 W_i'(y_i - X_i beta) / sigma^2,
   D_i^-1)``: the generalisation of the random-intercept kernel's block draw
   (:func:`hmlib.stats.imputation.kernels.block_gaussian`), so the sampler
   does not stall on the trade between ``beta`` and the cluster effects.
2. ``sigma^2 | beta, b = RSS / chi2_n``.
3. ``Psi | b, a ~ inverse-Wishart(nu + q - 1 + J_obs, 2 nu diag(1 / a) + sum b_i b_i')``
   over the ``J_obs`` clusters that record ``y`` (a cluster without recorded
   values has ``b_i ~ N(0, Psi)`` in step 1 and carries no information on
   ``Psi``), then ``a_k | Psi ~ inverse-gamma((nu + q) / 2, nu (Psi^-1)_kk + 1 / A^2)``.

All updates use per-cluster sufficient statistics
(:func:`~hmlib.stats.imputation.kernels.cluster_sufficient_statistics`; the
random-effect columns are columns of the fixed design, so their cross
products are sub-blocks), and a sweep costs ``O(J (p^2 q + q^3))``. The
state (``Psi``, ``a``, ``sigma^2``) is carried between calls as in
:func:`~hmlib.stats.imputation.kernels.ri_gibbs_draw`: ``GIBBS_BURN_IN``
sweeps at a chain's first call, ``GIBBS_SWEEPS`` later. Missing values are
``x' beta* + w' b*_i + e``; ``pmm=True`` matches as 2l.pmm does (type 1).

Binary variables (decision). No random-slope logistic kernel is built:
:func:`impute_random_slopes` imputes a 0/1 target with the random-intercept
logistic draw (2l.bin, :func:`~hmlib.stats.imputation.kernels.ri_logistic_draw`)
whose design keeps the slope columns and their cluster means as fixed
effects, and says so in :attr:`RandomSlopeImputation.notes`. A patient's own
trend in a binary variable is therefore shrunk to the common trend; the
missing piece is a Laplace fit of ``(1 + time | patient)`` with draws of
``Psi`` (``fit_mixed(family="binomial")`` has the fit).

:func:`impute_random_slopes` is the self-contained public function for one
incomplete variable with complete predictors (``m`` chains, each of
``iterations`` calls of the kernel; the design is the same in every call, so
its sums are computed once); the chained-equations engine
(:func:`hmlib.stats.imputation.impute`) does not use it yet.

References
----------
Schafer JL, Yucel RM (2002). Computational strategies for multivariate
linear mixed-effects models with missing values. J Comput Graph Stat 11(2):437-457.
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., sections 7.5-7.10.
Grund S, Luedtke O, Robitzsch A (2018). Multiple imputation of missing data
for multilevel models: simulations and recommendations. Organ Res Methods 21(1):111-149.
Huang A, Wand MP (2013). Simple marginally noninformative prior distributions
for covariance matrices. Bayesian Anal 8(2):439-452.
Gelman A (2006). Prior distributions for variance parameters in hierarchical
models. Bayesian Anal 1(3):515-534.
Enders CK, Du H, Keller BT (2020). A model-based imputation procedure for
multilevel regression models with random coefficients, interaction effects,
and nonlinear terms. Psychol Methods 25(1):88-112.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular

from hmlib.exceptions import DataError, FitError
from hmlib.stats.imputation.chained import split_rhat
from hmlib.stats.imputation.kernels import (GIBBS_BURN_IN, GIBBS_SWEEPS, cached_sufficient_statistics,
                                            cluster_sums, pmm_match, prepare_design, ri_logistic_draw,
                                            standardise_target)
from hmlib.stats.imputation.univariate import CLUSTER_COEF_PRIOR_SD

__all__ = ["random_slopes_gibbs_draw", "impute_random_slopes", "RandomSlopeImputation", "draw_inverse_wishart",
           "PSI_PRIOR_DF", "PSI_PRIOR_SD_SCALE", "MIN_CLUSTERS_PER_EFFECT"]

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
@dataclass(frozen=True, eq=False)
class RandomSlopeImputation:
    """``m`` imputations of one variable under the random-slope model, with the chains' traces.

    Attributes
    ----------
    target : str
    index : pandas.Index
        The input frame's index (rows in the input order).
    missing : numpy.ndarray of bool, shape (n,)
        The rows imputed.
    values : numpy.ndarray, shape (m, n)
        The completed target, one row per imputation (recorded values unchanged).
    chain_means : numpy.ndarray, shape (m, iterations)
        Mean of the imputed values after each kernel call of each chain.
    random_names : tuple of str
        ``("Intercept", <slope>, ...)``: the random effects (the intercept at the slopes' 0).
    random_cov : numpy.ndarray, shape (m, iterations, q, q)
        ``Psi`` drawn at each call, on the user's scale (NaN for the binary fall-back).
    residual_sd : numpy.ndarray, shape (m, iterations)
        ``sigma`` drawn at each call, on the user's scale (NaN for the binary fall-back).
    model : str
        The imputation model in words.
    notes : tuple of str
        Fall-backs and dropped columns.
    seed, iterations : int
    """

    target: str
    index: pd.Index
    missing: np.ndarray
    values: np.ndarray
    chain_means: np.ndarray
    random_names: tuple
    random_cov: np.ndarray
    residual_sd: np.ndarray
    model: str
    notes: tuple
    seed: int
    iterations: int

    @property
    def m(self) -> int:
        """Number of imputations."""
        return int(self.values.shape[0])

    def columns(self) -> pd.DataFrame:
        """The ``m`` completed target columns (``imputation_1`` ...), indexed as the input frame."""
        return pd.DataFrame(self.values.T, index=self.index,
                            columns=[f"imputation_{k + 1}" for k in range(self.m)])

    def completed(self, frame: pd.DataFrame) -> list:
        """``m`` copies of ``frame`` (the input frame) with the target completed; ``frame`` is not changed."""
        if not frame.index.equals(self.index):
            raise DataError("completed() needs the frame that was imputed (its index differs).")
        out = []
        for row in self.values:
            done = frame.copy()
            done[self.target] = row
            out.append(done)
        return out

    def diagnostics(self) -> pd.DataFrame:
        """Split R-hat over the chains' second halves (``iterations >= 8``, else NaN) and the final draws' means.

        Rows: ``mean(imputed)``, ``sd(<effect>)`` for each random effect, ``cor(<slope>)`` with the
        intercept, and ``sigma``.
        """
        sds = np.sqrt(np.maximum(np.diagonal(self.random_cov, axis1=2, axis2=3), 0.0))
        traces = {"mean(imputed)": self.chain_means}
        for k, name in enumerate(self.random_names):
            traces[f"sd({name})"] = sds[:, :, k]
        for k, name in enumerate(self.random_names[1:], start=1):
            with np.errstate(invalid="ignore", divide="ignore"):
                traces[f"cor({name})"] = self.random_cov[:, :, 0, k] / (sds[:, :, 0] * sds[:, :, k])
        traces["sigma"] = self.residual_sd
        rows = []
        for name, trace in traces.items():
            half = trace[:, trace.shape[1] // 2:]
            finite = np.all(np.isfinite(half))
            rows.append({"quantity": name, "rhat": split_rhat(half) if finite else float("nan"),
                         "final_mean": float(np.mean(trace[:, -1]))})
        return pd.DataFrame(rows)


def _numeric_column(frame: pd.DataFrame, name: str, role: str) -> np.ndarray:
    if name not in frame.columns:
        raise DataError(f"{role} column {name!r} is not in the data; the columns are {list(frame.columns)}.")
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
    bad = frame[name].notna().to_numpy() & np.isnan(values)
    if bad.any():
        raise DataError(f"{role} column {name!r} has {int(bad.sum())} non-numeric values; recode it as numbers.")
    return values


def _checked_columns(frame, target, predictors, cluster, slopes):
    """The target, the fixed columns (slopes first) and the cluster codes, or a DataError saying what is wrong."""
    if not slopes:
        raise DataError("impute_random_slopes needs at least one slope column (e.g. slopes=['time']); without "
                        "one, use the random-intercept imputation (hmlib.stats.imputation.impute).")
    if cluster not in frame.columns:
        raise DataError(f"cluster column {cluster!r} is not in the data.")
    if frame[cluster].isna().any():
        raise DataError(f"cluster column {cluster!r} has {int(frame[cluster].isna().sum())} missing labels; "
                        "every row needs its cluster.")
    codes, labels = pd.factorize(frame[cluster], sort=True)
    y = _numeric_column(frame, target, "target")
    names = list(dict.fromkeys([*slopes, *(p for p in predictors if p not in slopes)]))
    if target in names or cluster in names:
        raise DataError(f"the target {target!r} and the cluster {cluster!r} cannot be predictors or slopes.")
    X = np.column_stack([_numeric_column(frame, nm, "slope" if nm in slopes else "predictor") for nm in names]) \
        if names else np.empty((len(frame), 0))
    for k, nm in enumerate(names):
        if np.isnan(X[:, k]).any():
            raise DataError(f"{'slope' if nm in slopes else 'predictor'} column {nm!r} has "
                            f"{int(np.isnan(X[:, k]).sum())} missing values; impute_random_slopes imputes one "
                            "variable from complete predictors (impute or drop those rows first).")
    J = labels.size
    sizes = np.bincount(codes, minlength=J).astype(float)
    for k, nm in enumerate(names[:len(slopes)]):
        means = cluster_sums(X[:, k], codes, J) / sizes
        if np.allclose(X[:, k], means[codes], rtol=0.0, atol=1e-12 * max(1.0, float(np.abs(X[:, k]).max()))):
            raise DataError(f"slope column {nm!r} does not vary within any {cluster!r}: a random slope needs "
                            "several values per cluster (a time or visit variable); drop it from slopes.")
    return y, X, names, codes, J


def _cluster_level_design(X, names, codes, J, obs, slopes, cluster_means: bool, notes: list, target: str):
    """The fixed design: the columns (slopes first) and, within budget, the cluster means of those that vary
    within clusters (a patient-level column's mean is the column itself)."""
    J_obs = int(np.unique(codes[obs]).size)
    q = len(slopes) + 1
    if J_obs < MIN_CLUSTERS_PER_EFFECT * q:
        raise FitError(f"only {J_obs} clusters record {target!r}: a random intercept and {q - 1} slope(s) need "
                       f"at least {MIN_CLUSTERS_PER_EFFECT * q} to estimate their {q} x {q} covariance; use the "
                       "random-intercept imputation instead.")
    sizes = np.bincount(codes, minlength=J).astype(float)
    means = (cluster_sums(X, codes, J) / sizes[:, None])[codes] if X.shape[1] else X
    spread = np.abs(X - means).max(axis=0, initial=0.0) if X.shape[1] else np.zeros(0)
    varying = np.flatnonzero(spread > 1e-12 * np.maximum(1.0, np.abs(X).max(axis=0, initial=0.0)))
    if not (cluster_means and varying.size):
        return X, list(names), []
    needed = max(10, 5 * varying.size)
    if J_obs < needed:
        notes.append(f"Imputation model for '{target}': the cluster means were left out ({J_obs} clusters record "
                     f"it, {needed} needed for {varying.size} cluster-level columns).")
        return X, list(names), []
    mean_names = [f"mean({names[k]})" for k in varying]
    return np.column_stack([X, means[:, varying]]), [*names, *mean_names], mean_names


def _to_user_scale(X, names, obs, slopes, scale):
    """``T`` with (user-scale effects) = ``T`` (standardised effects): intercept at the slopes' 0, slopes per unit."""
    q = len(slopes) + 1
    T = np.eye(q)
    for k, nm in enumerate(slopes, start=1):
        col = X[obs, names.index(nm)]
        mu = col.mean()
        sd = np.sqrt(np.mean((col - mu) ** 2))
        T[0, k] = -mu / sd
        T[k, k] = 1.0 / sd
    return scale * T


def impute_random_slopes(frame: pd.DataFrame, *, target: str, predictors, cluster: str, slopes, m: int = 20,
                         iterations: int = 10, seed: int = 0, cluster_means: bool = True, continuous: str = "norm",
                         donors: int = 5) -> RandomSlopeImputation:
    """Impute one variable ``m`` times from a model with a random intercept and random slopes per cluster.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per measurement (visit); any row order; never modified.
    target : str
        The incomplete variable: continuous, or 0/1 (the binary fall-back, module docstring).
    predictors : sequence of str
        Complete numeric columns predicting it (the outcome of the analysis model among them).
    cluster : str
        The grouping column (the patient).
    slopes : sequence of str
        Columns with a random slope (usually time, in any unit); complete, varying within clusters,
        and also fixed effects (added to the predictors when not there).
    m : int
        Imputations (independent chains).
    iterations : int
        Calls of the kernel per chain (``GIBBS_BURN_IN`` sweeps, then ``GIBBS_SWEEPS`` per call);
        the last call's draw is the imputation, the calls' traces the chain diagnostics.
    seed : int
        Chain ``k`` uses ``Generator(PCG64(SeedSequence(seed).spawn(m)[k]))``.
    cluster_means : bool
        Add the cluster means of the slopes and predictors that vary within clusters as columns (within
        the few-cluster budget of the random-intercept engine: ``max(10, 5 q)`` clusters recording the
        target).
    continuous : {"norm", "pmm"}
        Normal draws (2l.pan) or predictive mean matching on the same sampler (2l.pmm).
    donors : int
        Donors for ``pmm``.

    Returns
    -------
    RandomSlopeImputation

    Raises
    ------
    DataError
        A column absent or not numeric, a slope or predictor with missing values, a slope that does
        not vary within any cluster, missing cluster labels.
    FitError
        Fewer than ``5 q`` clusters record the target; a slope collinear with the other columns.

    See Also
    --------
    random_slopes_gibbs_draw : the kernel.
    hmlib.stats.imputation.impute : chained equations with random intercepts.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> patient = np.repeat(np.arange(40), 5)
    >>> day = np.tile(np.arange(5) * 90.0, 40)
    >>> y = rng.normal(size=40)[patient] + (0.004 + 0.002 * rng.normal(size=40)[patient]) * day
    >>> frame = pd.DataFrame({"patient": patient, "day": day, "y": y + rng.normal(size=200)})
    >>> frame.loc[::7, "y"] = np.nan
    >>> res = impute_random_slopes(frame, target="y", predictors=[], cluster="patient", slopes=["day"], m=3)
    >>> res.columns().shape
    (200, 3)
    """
    if continuous not in ("norm", "pmm"):
        raise ValueError(f"continuous must be 'norm' or 'pmm', got {continuous!r}.")
    if m < 1 or iterations < 1:
        raise ValueError(f"m and iterations must be at least 1, got m={m}, iterations={iterations}.")
    slopes = list(dict.fromkeys(slopes))
    y, X, names, codes, J = _checked_columns(frame, target, list(predictors), cluster, slopes)
    obs = ~np.isnan(y)
    if not obs.any():
        raise DataError(f"{target!r} is never recorded; there is nothing to impute it from.")
    mis = ~obs
    notes: list[str] = []
    X, all_names, mean_names = _cluster_level_design(X, names, codes, J, obs, slopes, cluster_means, notes, target)
    Do, Dp, kept = prepare_design(X, all_names, obs, mis, notes=_NoteList(notes), target=target)
    if any(s not in kept for s in slopes):
        raise FitError(f"slope column(s) {[s for s in slopes if s not in kept]} are constant or collinear with the "
                       f"other slopes where {target!r} is recorded; drop them from slopes.")
    random_columns = [0, *(kept.index(s) + 1 for s in slopes)]
    ridge = np.r_[0.0, [1.0 / CLUSTER_COEF_PRIOR_SD ** 2 if nm in mean_names else 0.0 for nm in kept]]
    yo = y[obs]
    binary = bool(np.isin(yo, (0.0, 1.0)).all() and np.unique(yo).size == 2)
    if binary:
        notes.append(f"'{target}' is binary: no random-slope logistic model is built; it was imputed from the "
                     "random-intercept logistic model (2l.bin) with the slope columns as fixed effects.")
    T = _to_user_scale(X, all_names, obs, slopes, standardise_target(yo)[1])
    chains = _run_chains(Do, yo, codes, obs, Dp, J, T, m=m, iterations=iterations, seed=seed, binary=binary,
                         random_columns=random_columns, ridge=ridge, pmm=continuous == "pmm", donors=donors,
                         notes=notes, target=target)
    values = np.tile(y, (m, 1))
    values[:, mis] = chains["draws"]
    kind = "random-intercept logistic (2l.bin; slopes as fixed effects)" if binary else \
        f"linear mixed model with a random intercept and random slope(s) on {', '.join(map(repr, slopes))} " \
        f"per '{cluster}', unstructured covariance ({'pmm' if continuous == 'pmm' else '2l.pan type 2'})"
    model = f"{target} ~ {' + '.join(kept) if kept else '1'}: {kind}; columns standardised"
    return RandomSlopeImputation(target=target, index=frame.index.copy(), missing=mis, values=values,
                                 chain_means=chains["chain_means"], random_names=("Intercept", *slopes),
                                 random_cov=chains["random_cov"], residual_sd=chains["residual_sd"], model=model,
                                 notes=tuple(dict.fromkeys(notes)), seed=seed, iterations=iterations)


def _run_chains(Do, yo, codes, obs, Dp, J, T, *, m, iterations, seed, binary, random_columns, ridge, pmm, donors,
                notes, target) -> dict:
    """``m`` chains of ``iterations`` kernel calls: the last draws and the traces (user scale, through ``T``)."""
    q = len(random_columns)
    out = {"draws": np.empty((m, Dp.shape[0])), "chain_means": np.full((m, iterations), np.nan),
           "random_cov": np.full((m, iterations, q, q), np.nan), "residual_sd": np.full((m, iterations), np.nan)}
    cache: dict = {}
    co, cp = codes[obs], codes[~obs]
    for k, child in enumerate(np.random.SeedSequence(seed).spawn(m)):
        rng = np.random.Generator(np.random.PCG64(child))
        state: dict = {}
        for it in range(iterations):
            if binary:
                draw = ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, notes=_NoteList(notes), target=target,
                                        state=state, cache=cache)
            else:
                draw = random_slopes_gibbs_draw(Do, yo, co, Dp, cp, J, rng, random_columns=random_columns,
                                                state=state, pmm=pmm, donors=donors, prior_precision=ridge,
                                                cache=cache)
                out["random_cov"][k, it] = T @ state["psi"] @ T.T
                out["residual_sd"][k, it] = T[0, 0] * np.sqrt(state["sig2"])
            out["chain_means"][k, it] = float(draw.mean()) if draw.size else np.nan
        out["draws"][k] = draw
    return out


class _NoteList:
    """``notes.add(text)`` for the kernels' fall-back messages, into a list."""

    def __init__(self, target: list):
        self._target = target

    def add(self, text: str) -> None:
        self._target.append(text)
