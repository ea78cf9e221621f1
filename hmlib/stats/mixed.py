"""The random-intercept model fitter: ``y ~ X + (1 | cluster)`` by maximum likelihood.

Every step of the report fits this model many times (missingness indicators,
complete cases, each imputed data set, each sensitivity scenario), so it is
written for exactness against lme4 and for speed. Only numpy and scipy are
used; all per-cluster quantities are segment sums over rows sorted by cluster.

Model and terms
---------------
Cluster ``j`` has ``n_j`` rows; ``u_j ~ N(0, 1)`` is its spherical random
effect and ``theta`` scales it, as in lme4 (Bates et al. 2015):

- gaussian: ``y_ij = x_ij' beta + sigma * theta * u_j + e_ij``,
  ``e_ij ~ N(0, sigma^2)``; cluster SD ``sigma * theta``, residual SD ``sigma``.
- binomial (logit): ``logit P(y_ij = 1) = x_ij' beta + theta * u_j``;
  cluster SD ``theta``.

Internally the design is replaced by ``Xs = Q sqrt(n)`` from the thin QR
decomposition ``X = Q R`` (``beta = sqrt(n) R^-1 beta_s``), which makes the
optimisation well conditioned whatever the units of the predictors; results
are transformed back.

Gaussian (``lmer(REML = FALSE)``)
---------------------------------
For fixed ``theta`` the likelihood is maximised in closed form: with
``w_j = theta^2 / (1 + n_j theta^2)``, the generalised least squares normal
equations are ``(X'X - sum_j w_j s_j s_j') beta = X'y - sum_j w_j s_j t_j``
(``s_j``, ``t_j`` the cluster sums of ``x`` and ``y``; Woodbury identity), the
weighted residual sum of squares is ``RSS = r'r - sum_j w_j (sum_i r_ij)^2``,
``sigma^2 = RSS / n`` and the profiled deviance is
``n (log(2 pi RSS / n) + 1) + sum_j log(1 + n_j theta^2)``. It is minimised
over ``theta >= 0`` by a grid (including 0) followed by Brent's method. The
covariance of ``beta`` is ``sigma^2 (X'V0^-1 X)^-1``, conditional on the
variance parameters, as lme4's ``vcov``.

Binomial (``glmer``, ``nAGQ = 1`` Laplace, ``nAGQ = k`` adaptive Gauss-Hermite)
------------------------------------------------------------------------------
For given ``(beta, theta)`` each cluster's conditional mode ``u_j`` maximises
``g_j(u) = sum_i log p(y_ij | u) - u^2 / 2``; all clusters are solved at once
by a safeguarded Newton iteration (step halving where ``g_j`` would
decrease). With ``H_j = theta^2 sum_i p_ij (1 - p_ij) + 1`` the Laplace
log-likelihood of the cluster is ``g_j(u_j) - log(H_j) / 2``; adaptive
Gauss-Hermite quadrature (Liu & Pierce 1994; Pinheiro & Bates 1995) uses the
nodes ``u_j + z_k / sqrt(H_j)`` of the probabilists' rule with ``k`` nodes
(one node is the Laplace approximation). The gradient with respect to
``(beta, theta)`` is analytic, including the dependence of the mode and of
the curvature on the parameters (implicit function theorem). The
approximate log-likelihood is maximised jointly over ``(beta, theta >= 0)``
as in lme4's second stage: start from a logistic regression, L-BFGS-B on the
Laplace objective, Newton steps with the Hessian obtained by central
differences of the analytic gradient; then (for ``k > 1``) quasi-Newton steps
on the quadrature objective from the Laplace optimum with the Laplace
Hessian as the Newton matrix, and final Newton steps with the quadrature
Hessian. As lme4 (1.1-31) does, the covariance of ``beta`` is the ``beta``
block of the inverse of that Hessian over ``(theta, beta)``, so it includes
the uncertainty of ``theta``.

lme4's own Laplace deviance takes the curvature from the PIRLS iteration
before the last (``internal_glmerWrkIter`` in its ``external.cpp``), so it is
off by up to about 1e-3 in log-likelihood, and glmer stops its Nelder-Mead
search at a deviance change of 1e-5; here the curvature is taken at the
converged mode and the optimum is polished by Newton steps, so Laplace
estimates can differ from ``glmer(nAGQ = 1)`` by up to about 1% of a
standard error. Quadrature fits agree with lme4 to ~1e-5.

Cluster effects are the conditional modes on the linear-predictor scale
(``sigma theta u_j`` or ``theta u_j``) with their conditional SD, as lme4's
``ranef(condVar = TRUE)``. The standard error of ``log`` of the cluster SD
comes from the observed information (numerical Hessian of the log-likelihood
over ``(beta, log SDs)`` for gaussian, over ``(beta, theta)`` and the delta
method for binomial).

Test of the cluster variance: the likelihood-ratio statistic of the mixed
model against the model without cluster effect (linear or logistic
regression by ML, the ``theta = 0`` limit of the same likelihood), referred
to the 50:50 mixture of chi2_0 and chi2_1 (Self & Liang 1987).

Speed: per-cluster sums are ``np.add.reduceat`` over rows sorted by
cluster; BLAS is held to one thread during a fit (see
``_single_threaded_blas``). 20,000 rows in 500 clusters with 6 fixed effects
take about 0.01 s (gaussian), 0.06 s (Laplace) and 0.15 s (10-node AGHQ)
on one core (``bench/bench_mixed.py``). AGHQ keeps four ``k x n`` work arrays.

References
----------
Bates D, Maechler M, Bolker B, Walker S (2015). Fitting linear mixed-effects
models using lme4. Journal of Statistical Software 67(1).
Liu Q, Pierce DA (1994). A note on Gauss-Hermite quadrature. Biometrika
81(3):624-629.
Pinheiro JC, Bates DM (1995). Approximations to the log-likelihood function
in the nonlinear mixed-effects model. J Comput Graph Stat 4(1):12-35.
Self SG, Liang KY (1987). Asymptotic properties of maximum likelihood
estimators and likelihood ratio tests under nonstandard conditions. JASA
82(398):605-610.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, optimize, stats

from hmlib.exceptions import FitError

try:  # installed with pymc; optional here
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - depends on the environment
    ThreadpoolController = None

__all__ = [
    "RandomInterceptFit",
    "ClusterVarianceTest",
    "fit_random_intercept",
    "test_cluster_variance",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
_FAMILIES = ("gaussian", "binomial")
# A column is "collinear" when it is reproduced by the others to this relative
# precision (R's lm() uses the same tolerance for its pivoted QR).
_COLLINEAR_TOL = 1e-7
# A logit-scale cluster SD above this (latent ICC > 0.995) means the likelihood
# keeps rising towards an infinite SD; the fit is then flagged as not converged.
_MAX_BINOMIAL_SD = 25.0


_BLAS_CONTROLLER = None


def _single_threaded_blas():
    """Context limiting BLAS/LAPACK to one thread during a fit.

    The matrices here are tall and thin (n x p) or tiny (p x p); multi-threaded
    OpenBLAS brings no gain on them and, on a busy 2-core machine, costs
    milliseconds per call in thread wake-ups (a 6 x 6 triangular solve measured
    11 ms instead of microseconds). Falls back to doing nothing when
    threadpoolctl is not installed.
    """
    global _BLAS_CONTROLLER
    if ThreadpoolController is None:
        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RandomInterceptFit:
    """A fitted random-intercept model ``y ~ X + (1 | cluster)``.

    Attributes
    ----------
    family : str
        ``"gaussian"`` or ``"binomial"``.
    method : str
        ``"ML"``, ``"ML, Laplace"`` or ``"ML, adaptive Gauss-Hermite (k nodes)"``.
    term_names : tuple of str
        Names of the fixed effects (columns of X).
    coef, std_error : numpy.ndarray
        Fixed-effect estimates and their standard errors.
    cov : numpy.ndarray
        p x p covariance matrix of ``coef``.
    cluster_sd : float
        Estimated SD of the cluster intercepts (0 at the boundary).
    log_cluster_sd_std_error : float
        Standard error of ``log(cluster_sd)`` from the observed information
        (NaN when ``cluster_sd`` is 0).
    residual_sd : float or None
        Residual SD (gaussian); None for binomial.
    loglik : float
        Maximised log-likelihood (Laplace / quadrature approximation for
        binomial), on lme4's ``logLik`` scale.
    n_obs, n_clusters : int
    cluster_labels : numpy.ndarray
        Sorted unique cluster labels.
    cluster_sizes : numpy.ndarray
        Rows per cluster, in ``cluster_labels`` order.
    cluster_effects, cluster_effect_sd : numpy.ndarray
        Conditional modes (BLUPs) of the cluster intercepts on the linear
        predictor scale and their conditional SDs, in ``cluster_labels`` order.
    converged : bool
        The optimiser met its convergence criterion.
    cluster_name : str
    nagq : int
        Quadrature nodes used (1 = Laplace; 1 for gaussian).
    optimizer_message : str
        What the optimiser reported (useful when ``converged`` is False).
    """

    family: str
    method: str
    term_names: tuple
    coef: np.ndarray
    std_error: np.ndarray
    cov: np.ndarray
    cluster_sd: float
    log_cluster_sd_std_error: float
    residual_sd: float | None
    loglik: float
    n_obs: int
    n_clusters: int
    cluster_labels: np.ndarray
    cluster_sizes: np.ndarray
    cluster_effects: np.ndarray
    cluster_effect_sd: np.ndarray
    converged: bool
    cluster_name: str = "cluster"
    nagq: int = 1
    optimizer_message: str = ""

    @property
    def icc(self) -> float:
        """Intraclass correlation.

        Gaussian: ``s_u^2 / (s_u^2 + s_e^2)``; binomial, on the latent logistic
        scale: ``s_u^2 / (s_u^2 + pi^2 / 3)``.
        """
        su2 = self.cluster_sd ** 2
        if self.family == "gaussian":
            return float(su2 / (su2 + self.residual_sd ** 2))
        return float(su2 / (su2 + np.pi ** 2 / 3.0))

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Estimates with Wald intervals, one row per term.

        Parameters
        ----------
        level : float
            Confidence level of the intervals.

        Returns
        -------
        pandas.DataFrame
            Columns ``term, estimate, std_error, ci_lower, ci_upper``: the fixed
            effects (Wald z intervals) and a last row ``sd(<cluster_name>)``
            whose interval is a Wald interval on the log-SD scale transformed
            back (its ``std_error`` is the delta-method SE of the SD). The SD
            row has NaN standard error and interval when the SD is 0.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be between 0 and 1, got {level!r}.")
        z = stats.norm.ppf(0.5 + level / 2.0)
        sd = self.cluster_sd
        log_se = self.log_cluster_sd_std_error
        if sd > 0 and np.isfinite(log_se):
            sd_row = (sd * log_se, sd * np.exp(-z * log_se), sd * np.exp(z * log_se))
        else:
            sd_row = (np.nan, np.nan, np.nan)
        return pd.DataFrame({
            "term": [*self.term_names, f"sd({self.cluster_name})"],
            "estimate": np.r_[self.coef, sd],
            "std_error": np.r_[self.std_error, sd_row[0]],
            "ci_lower": np.r_[self.coef - z * self.std_error, sd_row[1]],
            "ci_upper": np.r_[self.coef + z * self.std_error, sd_row[2]],
        })

    def cluster_effects_frame(self) -> pd.DataFrame:
        """Cluster intercepts: columns ``cluster, n, effect, effect_sd``."""
        return pd.DataFrame({
            "cluster": self.cluster_labels,
            "n": self.cluster_sizes,
            "effect": self.cluster_effects,
            "effect_sd": self.cluster_effect_sd,
        })

    def summary(self) -> str:
        """A short plain-text summary (returned, not printed)."""
        frame = self.to_frame()
        width = max(len(t) for t in frame["term"])
        lines = [
            f"Random-intercept model, {self.family}, {self.method}",
            f"{self.n_obs} rows in {self.n_clusters} clusters ({self.cluster_name}); "
            f"log-likelihood {self.loglik:.3f}; "
            f"{'converged' if self.converged else 'NOT CONVERGED: ' + self.optimizer_message}",
            f"{'term':<{width}}  {'estimate':>10}  {'std.err':>9}  {'95% CI':>21}",
        ]
        for row in frame.itertuples(index=False):
            lines.append(f"{row.term:<{width}}  {row.estimate:>10.4g}  {row.std_error:>9.3g}  "
                         f"({row.ci_lower:>9.4g}, {row.ci_upper:>9.4g})")
        if self.residual_sd is not None:
            lines.append(f"residual SD {self.residual_sd:.4g}")
        lines.append(f"ICC {self.icc:.3f}" + (" (latent scale)" if self.family == "binomial" else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class ClusterVarianceTest:
    """Likelihood-ratio test of "no cluster effect" (cluster SD = 0).

    Attributes
    ----------
    statistic : float
        ``2 (loglik_with - loglik_without)``, at least 0.
    p_value : float
        ``0.5 P(chi2_1 > statistic)`` (1 when the statistic is 0): the null
        distribution is the 50:50 mixture of chi2_0 and chi2_1.
    loglik_with, loglik_without : float
        Log-likelihoods of the random-intercept model and of the model
        without cluster effect.
    df : int
        Parameters tested (1).
    cluster_sd : float
        The estimated cluster SD of the model with cluster effect.
    """

    statistic: float
    p_value: float
    loglik_with: float
    loglik_without: float
    df: int
    cluster_sd: float


# --------------------------------------------------------------------------
# Input checking and preparation
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Prepared:
    y: np.ndarray            # sorted by cluster
    Xs: np.ndarray           # Q sqrt(n), sorted by cluster; Xs'Xs = n I
    to_original: np.ndarray  # beta = to_original @ beta_s
    codes: np.ndarray        # cluster index of each (sorted) row
    starts: np.ndarray       # first row of each cluster
    sizes: np.ndarray
    labels: np.ndarray
    term_names: tuple

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def m(self) -> int:
        return self.sizes.shape[0]

    def seg_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of rows of ``values`` within each cluster (axis 0)."""
        return np.add.reduceat(values, self.starts, axis=0)


def _as_float_array(values, what: str, ndim: int) -> np.ndarray:
    try:
        if isinstance(values, (pd.Series, pd.DataFrame)):
            # nullable dtypes (Int64, boolean, Float64) hold pd.NA: make it NaN first
            arr = values.to_numpy(dtype=float, na_value=np.nan)
        else:
            arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise FitError(f"{what} must be numeric ({exc}). Code categorical variables as 0/1 columns "
                       "before fitting.") from None
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != ndim:
        raise FitError(f"{what} must be {ndim}-dimensional, got shape {arr.shape}.")
    return arr


def _check_rank(r: np.ndarray, n: int, names: tuple) -> None:
    """Raise FitError naming the columns involved if X (with QR factor ``r``) is rank deficient.

    The singular values of X with unit-norm columns are those of ``r`` with
    unit-norm columns (X = QR), so only the p x p factor is decomposed.
    """
    p = r.shape[1]
    if p > n:
        raise FitError(f"X has more columns ({p}) than rows ({n}): the fixed effects are not "
                       "identifiable. Use fewer predictors or more data.")
    norms = np.sqrt(np.einsum("ij,ij->j", r, r))
    zero = [names[j] for j in range(p) if norms[j] == 0]
    if zero:
        raise FitError(f"X is rank deficient: column(s) {', '.join(map(repr, zero))} are all zero. "
                       "Drop them from the model.")
    _, sv, vt = np.linalg.svd(r / norms)
    small = sv < _COLLINEAR_TOL * sv[0]
    if small.any():
        null = vt[small]
        involved = np.flatnonzero(np.abs(null).max(axis=0) > 1e-3)
        cols = ", ".join(repr(names[j]) for j in involved)
        raise FitError(f"X is rank deficient (collinear columns): {cols} are linearly dependent "
                       f"({int(small.sum())} redundant column(s)). Drop one of them, or merge "
                       "categories that never differ, and refit.")


def _prepare(y, X, groups, family: str, term_names) -> _Prepared:
    if family not in _FAMILIES:
        raise FitError(f"unknown family {family!r}: use 'gaussian' or 'binomial'.")
    if term_names is None and isinstance(X, pd.DataFrame):
        term_names = tuple(str(c) for c in X.columns)
    y = _as_float_array(y, "y", 1)
    X = _as_float_array(X, "X", 2)
    if isinstance(groups, (pd.Series, pd.Index)):
        groups = groups.to_numpy()
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise FitError(f"groups must be 1-dimensional, got shape {groups.shape}.")
    n = y.shape[0]
    if n == 0 or X.shape[0] == 0 or groups.shape[0] == 0:
        raise FitError("no rows to fit: y, X and groups must have at least one row "
                       "(check that the complete-case filter left some data).")
    if X.shape[0] != n or groups.shape[0] != n:
        raise FitError(f"length mismatch: y has {n} rows, X has {X.shape[0]}, groups has "
                       f"{groups.shape[0]}. Build them from the same rows.")
    p = X.shape[1]
    if p == 0:
        raise FitError("X has no columns: include at least an intercept column.")
    names = tuple(f"x{j}" for j in range(p)) if term_names is None else tuple(str(t) for t in term_names)
    if len(names) != p:
        raise FitError(f"term_names has {len(names)} names but X has {p} columns.")
    if not np.isfinite(y).all():
        raise FitError(f"y has {int((~np.isfinite(y)).sum())} missing or infinite value(s): "
                       "drop those rows (or impute) before fitting.")
    bad_cols = [names[j] for j in range(p) if not np.isfinite(X[:, j]).all()]
    if bad_cols:
        raise FitError(f"X has missing or infinite values in column(s) "
                       f"{', '.join(map(repr, bad_cols))}: drop those rows (or impute) before fitting.")
    if groups.dtype.kind in "fc":
        bad_groups = ~np.isfinite(groups)
    else:
        bad_groups = np.asarray(pd.isna(groups), dtype=bool)
    if bad_groups.any():
        raise FitError(f"groups has {int(bad_groups.sum())} missing cluster label(s): "
                       "drop those rows before fitting.")
    if family == "binomial":
        if not np.isin(y, (0.0, 1.0)).all():
            raise FitError("binomial y must be 0/1; found values "
                           f"{np.unique(y[~np.isin(y, (0.0, 1.0))])[:5].tolist()}.")
        if y.min() == y.max():
            raise FitError(f"binomial y is constant (all {int(y[0])}): there is nothing to model.")
    try:
        codes, uniques = pd.factorize(groups, sort=True)
    except TypeError as exc:
        raise FitError(f"cluster labels cannot be sorted ({exc}); use labels of one type "
                       "(all strings or all integers).") from None
    labels = np.asarray(uniques)
    m = labels.shape[0]
    if m < 2:
        raise FitError(f"only {m} cluster: a cluster variance needs at least 2 clusters. "
                       "Fit an ordinary regression instead.")
    if X.shape[1] > n:
        _check_rank(X, n, names)  # raises: more columns than rows
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    y = y[order]
    X = X[order]
    sizes = np.bincount(codes, minlength=m)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    q, r = np.linalg.qr(X)
    _check_rank(r, n, names)
    root_n = np.sqrt(n)
    to_original = linalg.solve_triangular(r, np.eye(p)) * root_n
    return _Prepared(y=y, Xs=q * root_n, to_original=to_original, codes=codes, starts=starts,
                     sizes=sizes, labels=labels, term_names=names)


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)


# --------------------------------------------------------------------------
# Gaussian: profiled likelihood over theta = cluster SD / residual SD
# --------------------------------------------------------------------------
class _GaussianProfile:
    """Sufficient statistics of the gaussian model, relative to the OLS fit."""

    def __init__(self, d: _Prepared):
        self.d = d
        n = d.n
        self.beta_ols = d.Xs.T @ d.y / n
        r0 = d.y - d.Xs @ self.beta_ols
        self.rr = float(r0 @ r0)
        self.Sx = d.seg_sum(d.Xs)             # m x p
        self.Sr = d.seg_sum(r0)               # m
        self.sizes = d.sizes.astype(float)
        if self.rr <= 1e-12 * max(float(d.y @ d.y), 1e-300):
            raise FitError("y is an exact linear function of X (zero residual variance): "
                           "a variance model cannot be fitted.")

    def solve(self, theta: float):
        """GLS for fixed theta: (deviance, delta beta_s, rss, cholesky of A, w)."""
        n = self.d.n
        t2 = theta * theta
        w = t2 / (1.0 + self.sizes * t2)
        A = n * np.eye(self.Sx.shape[1]) - (self.Sx * w[:, None]).T @ self.Sx
        b = -(self.Sx.T @ (w * self.Sr))
        try:
            chol = linalg.cho_factor(A, lower=True)
        except linalg.LinAlgError:
            return np.inf, None, np.nan, None, w
        delta = linalg.cho_solve(chol, b)
        rss = self.rr - float(w @ self.Sr ** 2) - float(b @ delta)
        if not rss > 0:
            return np.inf, None, np.nan, None, w
        dev = n * (_LOG_2PI + np.log(rss / n) + 1.0) + float(np.log1p(self.sizes * t2).sum())
        return dev, delta, rss, chol, w

    def deviance(self, theta: float) -> float:
        return self.solve(theta)[0]

    def loglik_full(self, delta, log_su, log_se) -> float:
        """Unprofiled log-likelihood at beta_s = beta_ols + delta, SDs exp(log_su), exp(log_se)."""
        n = self.d.n
        su2, se2 = np.exp(2 * log_su), np.exp(2 * log_se)
        cluster_sums = self.Sr - self.Sx @ delta
        rss = self.rr + n * float(delta @ delta)
        denom = se2 + self.sizes * su2
        quad = (rss - float(np.sum(su2 / denom * cluster_sums ** 2))) / se2
        logdet = float(np.sum((self.sizes - 1.0) * np.log(se2) + np.log(denom)))
        return -0.5 * (n * _LOG_2PI + logdet + quad)


def _minimise_theta(profile: _GaussianProfile):
    grid = np.r_[0.0, np.geomspace(1e-3, 1e4, 36)]
    devs = np.array([profile.deviance(t) for t in grid])
    if not np.isfinite(devs).any():
        raise FitError("the gaussian likelihood could not be evaluated (X is numerically singular "
                       "after accounting for clusters).")
    k = int(np.nanargmin(devs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = optimize.minimize_scalar(profile.deviance, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10 * max(hi, 1e-3), "maxiter": 500})
    best_theta, best_dev = (res.x, res.fun) if res.fun < devs[k] else (grid[k], devs[k])
    # At the boundary the profile is flat to rounding error near 0; a theta
    # that gains less than 1e-9 in deviance is the boundary itself.
    if devs[0] <= best_dev + 1e-9:
        best_theta, best_dev = 0.0, devs[0]
    converged = bool(res.success) and k < grid.size - 1
    message = str(res.message) if k < grid.size - 1 else "cluster SD / residual SD ratio above 1e4"
    return float(best_theta), converged, message


def _numerical_hessian(fun, x, steps) -> np.ndarray:
    """Central-difference Hessian of a scalar function."""
    k = x.size
    hess = np.empty((k, k))
    f0 = fun(x)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        hess[i, i] = (fun(x + ei) - 2 * f0 + fun(x - ei)) / steps[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = steps[j]
            hess[i, j] = hess[j, i] = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej)
                                       + fun(x - ei - ej)) / (4 * steps[i] * steps[j])
    return hess


def _fit_gaussian(d: _Prepared, cluster_name: str) -> RandomInterceptFit:
    profile = _GaussianProfile(d)
    theta, converged, message = _minimise_theta(profile)
    dev, delta, rss, chol, w = profile.solve(theta)
    if delta is None:
        raise FitError("the gaussian model could not be solved at the optimum (X numerically singular).")
    n, p = d.n, d.Xs.shape[1]
    sigma2 = rss / n
    sigma = float(np.sqrt(sigma2))
    su = theta * sigma
    beta_s = profile.beta_ols + delta
    cov_s = sigma2 * linalg.cho_solve(chol, np.eye(p))
    T = d.to_original
    coef = T @ beta_s
    cov = T @ cov_s @ T.T
    cov = 0.5 * (cov + cov.T)
    cluster_sums = profile.Sr - profile.Sx @ delta
    effects = w * cluster_sums
    effect_sd = sigma * np.sqrt(w)

    log_se = np.nan
    if su > 0:
        x0 = np.r_[delta, np.log(su), np.log(sigma)]
        steps = np.r_[1e-3 * np.sqrt(np.diag(cov_s)), 1e-4, 1e-4]
        hess = _numerical_hessian(lambda x: -profile.loglik_full(x[:p], x[p], x[p + 1]), x0, steps)
        try:
            inv = np.linalg.inv(hess)
            if inv[p, p] > 0:
                log_se = float(np.sqrt(inv[p, p]))
        except np.linalg.LinAlgError:
            pass
    std_error = np.sqrt(np.diag(cov))
    _readonly(coef, std_error, cov, effects, effect_sd)
    sizes = d.sizes.copy()
    labels = d.labels.copy()
    _readonly(sizes, labels)
    return RandomInterceptFit(
        family="gaussian", method="ML", term_names=d.term_names, coef=coef, std_error=std_error,
        cov=cov, cluster_sd=float(su), log_cluster_sd_std_error=log_se, residual_sd=sigma,
        loglik=float(-0.5 * dev), n_obs=n, n_clusters=d.m, cluster_labels=labels,
        cluster_sizes=sizes, cluster_effects=effects, cluster_effect_sd=effect_sd,
        converged=converged, cluster_name=cluster_name, nagq=1, optimizer_message=message)


# --------------------------------------------------------------------------
# Binomial: Laplace / adaptive Gauss-Hermite
# --------------------------------------------------------------------------
def _logistic(eta: np.ndarray):
    """Stable ``p = expit(eta)``, ``p (1 - p)`` and ``log(1 + exp(eta))``.

    Written with in-place operations: on large arrays the temporaries, not the
    arithmetic, dominate the cost.
    """
    e = np.abs(eta)
    np.negative(e, out=e)
    np.exp(e, out=e)                       # exp(-|eta|), no overflow
    r = e + 1.0
    np.reciprocal(r, out=r)                # 1 / (1 + exp(-|eta|))
    w = e * r
    w *= r                                 # p (1 - p)
    p = r - 0.5
    np.copysign(p, eta, out=p)
    p += 0.5                               # r for eta >= 0, 1 - r otherwise
    softplus = np.log1p(e, out=e)
    softplus += np.maximum(eta, 0.0)
    return p, w, softplus


def _fit_logistic(Xs: np.ndarray, y: np.ndarray, max_iter: int = 100):
    """Logistic regression by Newton's method: (beta, loglik, converged, hessian)."""
    p = Xs.shape[1]
    beta = np.zeros(p)
    eta = np.zeros_like(y)
    prob, w, sp = _logistic(eta)
    ll = float(y @ eta - sp.sum())
    converged = False
    for _ in range(max_iter):
        info = Xs.T @ (Xs * w[:, None])
        score = Xs.T @ (y - prob)
        try:
            step = linalg.solve(info, score, assume_a="pos")
        except (linalg.LinAlgError, ValueError):
            break
        t = 1.0
        for _ in range(30):
            new_beta = beta + t * step
            new_eta = Xs @ new_beta
            new_prob, new_w, new_sp = _logistic(new_eta)
            new_ll = float(y @ new_eta - new_sp.sum())
            if new_ll >= ll - 1e-12 * abs(ll):
                break
            t *= 0.5
        gain = new_ll - ll
        beta, eta, prob, w, ll = new_beta, new_eta, new_prob, new_w, new_ll
        if abs(gain) < 1e-10 * (1 + abs(ll)) and float(score @ step) < 1e-10:
            converged = True
            break
    info = Xs.T @ (Xs * w[:, None])
    return beta, ll, converged, info


class _BinomialObjective:
    """Negative Laplace / AGHQ log-likelihood over (beta_s, theta) and its gradient."""

    def __init__(self, d: _Prepared, nagq: int):
        self.d = d
        self.set_nagq(nagq)
        self.u = np.zeros(d.m)
        self.n_evaluations = 0

    def set_nagq(self, nagq: int):
        self.nagq = nagq
        z, w = np.polynomial.hermite_e.hermegauss(nagq)
        self.z = z
        self.log_w = np.log(w / np.sqrt(2.0 * np.pi))
        # node x row work arrays (4 K n doubles), reused across evaluations
        self._node_buffers = [np.empty((nagq, self.d.n)) for _ in range(4)] if nagq > 1 else None

    def modes(self, off: np.ndarray, theta: float, u: np.ndarray):
        """Conditional modes of all clusters by safeguarded Newton iteration."""
        d = self.d
        y, codes = d.y, d.codes
        u = u.copy()
        u_prev = g_prev = None
        for _ in range(200):
            eta = off + theta * u[codes]
            p, w, sp = _logistic(eta)
            g = d.seg_sum(y * eta - sp) - 0.5 * u * u
            if g_prev is not None:
                worse = g < g_prev - 1e-12 * (1.0 + np.abs(g_prev))
                if worse.any():
                    u = np.where(worse, 0.5 * (u_prev + u), u)
                    if np.max(np.abs(u - u_prev)) < 1e-13:
                        u = np.where(worse, u_prev, u)
                    continue
            S = d.seg_sum(y - p)
            W = d.seg_sum(w)
            H = theta * theta * W + 1.0
            step = (theta * S - u) / H
            if np.max(np.abs(step)) < 1e-10:
                break
            u_prev, g_prev = u, g
            u = u + step
        return u, eta, p, w, g, S, W, H

    def __call__(self, params: np.ndarray):
        """Return (negative log-likelihood, gradient)."""
        self.n_evaluations += 1
        d = self.d
        Xs, y, codes = d.Xs, d.y, d.codes
        beta, theta = params[:-1], float(params[-1])
        off = Xs @ beta
        u, eta, p, w, g, S, W, H = self.modes(off, theta, self.u)
        self.u = u
        t2 = theta * theta
        one_m2p = 1.0 - 2.0 * p
        B = d.seg_sum(w * one_m2p)
        A = t2 * theta * B                         # dH/du
        du_dtheta = (S - theta * u * W) / H
        dH_dtheta = 2.0 * theta * W + t2 * u * B + A * du_dtheta
        s = 1.0 / np.sqrt(H)
        Hc = H[codes]
        # dH/dbeta (total) per row, to be multiplied by x_i and summed
        dH_dbeta_row = t2 * w * one_m2p - (A[codes] * theta * w) / Hc
        du_dbeta_row = -theta * w / Hc
        if self.nagq == 1:
            loglik_j = g - 0.5 * np.log(H)
            a = 1.0 / s
            b = np.zeros_like(u)
            pbar = p
            node_term = u * S
        else:
            z, starts = self.z, d.starts
            eta_k, p_k, softplus_k, work = self._node_buffers        # K x n each
            U = u[None, :] + z[:, None] * s[None, :]                  # K x m nodes
            np.take(U, codes, axis=1, out=eta_k, mode="clip")
            eta_k *= theta
            eta_k += off
            # p and log(1 + exp(eta)) at the nodes, as in _logistic, in place
            np.abs(eta_k, out=work)
            np.negative(work, out=work)
            np.exp(work, out=work)
            np.add(work, 1.0, out=p_k)
            np.reciprocal(p_k, out=p_k)
            np.log1p(work, out=softplus_k)
            np.maximum(eta_k, 0.0, out=work)
            softplus_k += work
            p_k -= 0.5
            np.copysign(p_k, eta_k, out=p_k)
            p_k += 0.5
            np.multiply(eta_k, y, out=work)
            work -= softplus_k
            G = np.add.reduceat(work, starts, axis=1) - 0.5 * U * U + 0.5 * (z * z)[:, None]
            lg = self.log_w[:, None] + G
            top = lg.max(axis=0)
            ew = np.exp(lg - top)
            total = ew.sum(axis=0)
            pi = ew / total                                            # K x m node weights
            loglik_j = np.log(s) + top + np.log(total)
            np.subtract(y, p_k, out=work)
            Sk = np.add.reduceat(work, starts, axis=1)                 # K x m
            D = theta * Sk - U                                         # g'(node)
            a = 1.0 / s + np.sum(pi * D * z[:, None], axis=0)
            b = np.sum(pi * D, axis=0)
            np.take(pi, codes, axis=1, out=work, mode="clip")
            work *= p_k
            pbar = work.sum(axis=0)
            node_term = np.sum(pi * U * Sk, axis=0)
        ds_coef = -0.5 * s ** 3 * a                                 # multiplies dH
        row = (y - pbar) + ds_coef[codes] * dH_dbeta_row + b[codes] * du_dbeta_row
        grad_beta = Xs.T @ row
        grad_theta = float(np.sum(ds_coef * dH_dtheta + b * du_dtheta + node_term))
        loglik = float(loglik_j.sum())
        self.last = dict(u=u, H=H, theta=theta)
        return -loglik, -np.r_[grad_beta, grad_theta]


def _hessian_from_gradient(objective, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    k = x.size
    hess = np.empty((k, k))
    u_saved = objective.u.copy()
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        objective.u = u_saved
        gp = objective(x + e)[1]
        objective.u = u_saved
        gm = objective(x - e)[1]
        hess[:, i] = (gp - gm) / (2 * steps[i])
    objective.u = u_saved
    return 0.5 * (hess + hess.T)


def _lbfgs(objective, x0: np.ndarray, n: int):
    p1 = x0.size
    bounds = [(None, None)] * (p1 - 1) + [(0.0, None)]
    scaled = lambda x: tuple(v / n for v in objective(x))  # noqa: E731  (per-row scale)
    res = optimize.minimize(scaled, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20})
    return res


def _newton(objective, x: np.ndarray, *, fixed_hessian=None, max_iter: int = 4):
    """Newton iterations on the objective, keeping ``theta >= 0``.

    With ``fixed_hessian`` None the Hessian is recomputed by central
    differences of the analytic gradient at every iteration (and returned for
    the standard errors); otherwise the given matrix is used throughout
    (quasi-Newton with a good approximation, e.g. the Laplace Hessian when
    optimising the quadrature objective: linear convergence with a small
    rate, at the cost of one gradient per iteration).

    Returns
    -------
    x, f, grad, hessian, decrement
        ``decrement`` is the Newton decrement ``g' H^-1 g`` at the last
        Hessian (a scale-free measure of distance to the optimum).
    """
    f, g = objective(x)
    hess = fixed_hessian
    decrement = np.inf
    for _ in range(max_iter):
        if fixed_hessian is None:
            hess = _hessian_from_gradient(objective, x, np.full(x.size, 1e-4))
        free = np.ones(x.size, dtype=bool)
        if x[-1] == 0.0 and g[-1] >= 0:
            free[-1] = False  # at the boundary and pushed against it
        step = np.zeros(x.size)
        try:
            step[free] = -linalg.solve(hess[np.ix_(free, free)], g[free], assume_a="sym")
        except (linalg.LinAlgError, ValueError):
            break
        decrement = float(-g @ step)
        if not np.isfinite(decrement) or decrement < 0 or decrement < 1e-12:
            break
        t = 1.0
        improved = False
        for _ in range(20):
            cand = x + t * step
            cand[-1] = max(cand[-1], 0.0)
            fc, gc = objective(cand)
            if fc <= f + 1e-12 * abs(f):
                improved = True
                break
            t *= 0.5
        if not improved:
            break
        x, f, g = cand, fc, gc
    return x, f, g, hess, decrement


def _fit_binomial(d: _Prepared, nagq: int, cluster_name: str) -> RandomInterceptFit:
    n, p = d.n, d.Xs.shape[1]
    beta0, _, _, _ = _fit_logistic(d.Xs, d.y)
    objective = _BinomialObjective(d, 1)
    # theta start: the best of a few values with beta from the logistic fit
    theta_starts = [0.3, 0.7, 1.5]
    values = []
    for t in theta_starts:
        objective.u = np.zeros(d.m)
        values.append(objective(np.r_[beta0, t])[0])
    x0 = np.r_[beta0, theta_starts[int(np.argmin(values))]]
    objective.u = np.zeros(d.m)
    res = _lbfgs(objective, x0, n)
    message = str(res.message)
    x, f, g, hess, decrement = _newton(objective, res.x)
    if nagq > 1 and hess is not None:
        # From the Laplace optimum, with the Laplace Hessian as the Newton matrix.
        objective.set_nagq(nagq)
        x, f, g, _, decrement = _newton(objective, x, fixed_hessian=hess, max_iter=30)
        if not decrement < 1e-10:
            res = _lbfgs(objective, x, n)
            message = str(res.message)
            x = res.x
        x, f, g, hess, decrement = _newton(objective, x)
    theta = float(x[-1])
    # A theta this small is indistinguishable from the boundary; use the exact limit.
    if 0 < theta < 1e-4:
        objective.u = np.zeros(d.m)
        f0 = objective(np.r_[x[:-1], 0.0])[0]
        if f0 <= f + 1e-8:
            x, f, g, hess, decrement = _newton(objective, np.r_[x[:-1], 0.0])
            theta = float(x[-1])
    converged = bool(np.isfinite(decrement) and decrement < 1e-6 and hess is not None)
    if not converged:
        message = f"{message}; Newton decrement {decrement:.3g} (gradient not small at the end)"
    if theta > _MAX_BINOMIAL_SD:
        converged = False
        message += (f"; cluster SD {theta:.3g} on the logit scale is diverging (clusters whose "
                    "outcomes are all 0 or all 1 dominate): the estimate is not usable")
    if hess is None:
        raise FitError("the binomial mixed model did not converge (Hessian unavailable): "
                       "check for separation (a predictor or cluster with all-0 or all-1 outcomes).")
    T = d.to_original
    # cov over (beta_s, theta); at theta = 0 only the beta block is meaningful
    log_se = np.nan
    try:
        if theta > 0:
            inv = np.linalg.inv(hess)
            cov_s = inv[:p, :p]
            if inv[p, p] > 0:
                log_se = float(np.sqrt(inv[p, p]) / theta)
        else:
            cov_s = np.linalg.inv(hess[:p, :p])
    except np.linalg.LinAlgError:
        raise FitError("the information matrix of the binomial mixed model is singular: "
                       "check for separation or a predictor without variation.") from None
    eig = np.linalg.eigvalsh(0.5 * (cov_s + cov_s.T))
    if eig.min() <= 0:
        converged = False
        message += "; information matrix not positive definite"
    coef = T @ x[:p]
    cov = T @ cov_s @ T.T
    cov = 0.5 * (cov + cov.T)
    std_error = np.sqrt(np.abs(np.diag(cov)))
    objective(x)  # leave the state (modes, curvature) at the optimum
    u, H = objective.last["u"], objective.last["H"]
    effects = theta * u
    effect_sd = theta / np.sqrt(H)
    method = "ML, Laplace" if nagq == 1 else f"ML, adaptive Gauss-Hermite ({nagq} nodes)"
    _readonly(coef, std_error, cov, effects, effect_sd)
    sizes = d.sizes.copy()
    labels = d.labels.copy()
    _readonly(sizes, labels)
    return RandomInterceptFit(
        family="binomial", method=method, term_names=d.term_names, coef=coef, std_error=std_error,
        cov=cov, cluster_sd=theta, log_cluster_sd_std_error=log_se, residual_sd=None,
        loglik=float(-f), n_obs=n, n_clusters=d.m, cluster_labels=labels, cluster_sizes=sizes,
        cluster_effects=effects, cluster_effect_sd=effect_sd, converged=converged,
        cluster_name=cluster_name, nagq=nagq, optimizer_message=message)


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------
def _check_nagq(nagq) -> int:
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 1:
        raise FitError(f"nagq must be a positive integer (1 = Laplace), got {nagq!r}.")
    if nagq > 100:
        raise FitError(f"nagq = {nagq} is more quadrature nodes than useful; use at most 25.")
    return int(nagq)


def fit_random_intercept(y, X, groups, *, family: str = "gaussian", nagq: int = 1,
                         term_names=None, cluster_name: str = "cluster") -> RandomInterceptFit:
    """Fit ``y ~ X + (1 | cluster)`` by maximum likelihood.

    Parameters
    ----------
    y : array_like, shape (n,)
        Outcome; 0/1 for ``family="binomial"``.
    X : array_like, shape (n, p)
        Design matrix, including the intercept column if wanted. A
        DataFrame's column names are used when ``term_names`` is None.
    groups : array_like, shape (n,)
        Cluster label of each row (any sortable hashable values).
    family : {"gaussian", "binomial"}
        Gaussian (identity link, ML as ``lmer(REML = FALSE)``) or binomial
        (logit link, as ``glmer``).
    nagq : int
        Binomial only: 1 for the Laplace approximation, k > 1 for adaptive
        Gauss-Hermite quadrature with k nodes (``glmer(nAGQ = k)``). Ignored
        for gaussian, whose likelihood is exact.
    term_names : sequence of str, optional
        Names of X's columns (default ``x0, x1, ...``).
    cluster_name : str
        Name of the cluster variable, used for the term ``sd(<cluster_name>)``.

    Returns
    -------
    RandomInterceptFit

    Raises
    ------
    FitError
        No rows; NaN/inf in y, X or groups; lengths differ; X rank deficient
        (the collinear columns are named); binomial y not 0/1 or constant;
        fewer than 2 clusters; unknown family; bad ``nagq``.

    See Also
    --------
    test_cluster_variance : likelihood-ratio test of the cluster SD.

    References
    ----------
    Bates et al. (2015), J Stat Softw 67(1); Pinheiro & Bates (1995),
    J Comput Graph Stat 4(1). See the module docstring for the algorithm.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(30), 20)
    >>> x = rng.normal(size=g.size)
    >>> y = 1 + 0.5 * x + rng.normal(size=30)[g] + rng.normal(size=g.size)
    >>> fit = fit_random_intercept(y, np.column_stack([np.ones_like(x), x]), g,
    ...                            term_names=["Intercept", "x"], cluster_name="site")
    >>> fit.to_frame()["term"].tolist()
    ['Intercept', 'x', 'sd(site)']
    """
    nagq = _check_nagq(nagq)
    with _single_threaded_blas():
        d = _prepare(y, X, groups, family, term_names)
        if family == "gaussian":
            return _fit_gaussian(d, str(cluster_name))
        return _fit_binomial(d, nagq, str(cluster_name))


def test_cluster_variance(y, X, groups, *, family: str = "binomial", nagq: int = 1) -> ClusterVarianceTest:
    """Likelihood-ratio test of "no cluster effect" against the random-intercept model.

    The model without cluster effect is linear or logistic regression fitted
    by maximum likelihood, the ``cluster SD = 0`` limit of the mixed model's
    likelihood. Under the null the SD lies on the boundary of the parameter
    space, so the statistic follows the 50:50 mixture of chi2_0 and chi2_1
    (Self & Liang 1987): ``p = 0.5 P(chi2_1 > statistic)``, and 1 when the
    statistic is 0.

    Parameters
    ----------
    y, X, groups, family, nagq
        As for :func:`fit_random_intercept`.

    Returns
    -------
    ClusterVarianceTest

    Raises
    ------
    FitError
        As :func:`fit_random_intercept`.
    """
    nagq = _check_nagq(nagq)
    with _single_threaded_blas():
        d = _prepare(y, X, groups, family, None)
        if family == "gaussian":
            fit = _fit_gaussian(d, "cluster")
            loglik_without = -0.5 * _GaussianProfile(d).deviance(0.0)
        else:
            fit = _fit_binomial(d, nagq, "cluster")
            _, loglik_without, _, _ = _fit_logistic(d.Xs, d.y)
    # At SD = 0 the two likelihoods are the same function; rounding is not evidence.
    statistic = 0.0 if fit.cluster_sd == 0 else max(0.0, 2.0 * (fit.loglik - loglik_without))
    p_value = 1.0 if statistic == 0.0 else 0.5 * float(stats.chi2.sf(statistic, 1))
    return ClusterVarianceTest(statistic=float(statistic), p_value=p_value, loglik_with=fit.loglik,
                               loglik_without=float(loglik_without), df=1, cluster_sd=fit.cluster_sd)


# Not a pytest test, despite its name (tests import it).
test_cluster_variance.__test__ = False
