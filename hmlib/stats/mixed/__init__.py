"""Mixed-model fitters by maximum likelihood: ``y ~ X + (1 | cluster)``, and nested random intercepts and slopes.

Every step of the report fits the random-intercept model many times
(missingness indicators, complete cases, each imputed data set, each
sensitivity scenario), so :func:`fit_random_intercept` is written for
exactness against lme4 and for speed. :func:`fit_mixed` is the general
model of the later issues: nested grouping levels (hospital in country, or
hospital in region in country) and random slopes with an unstructured
covariance (``(1 + time | patient)``); with one random intercept it gives
the same numbers as :func:`fit_random_intercept`, more slowly. Only numpy
and scipy are used; all per-cluster quantities are segment sums over rows
sorted by cluster.

Random-intercept model: terms
-----------------------------
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

General model (:func:`fit_mixed`)
---------------------------------
The formulation of lme4 (Bates et al. 2015): ``y = X beta + Z b + e`` with
``b = Lambda(theta) u``, ``u ~ N(0, s^2 I)`` (``s`` the residual SD for
gaussian, 1 for binomial), ``Lambda`` block diagonal with one lower
triangular ``q_k x q_k`` block ``Lambda_k`` per cluster of level ``k``
(diagonal >= 0; ``theta`` lists their entries column by column, as lme4).
The levels are nested; a cluster of level ``k`` is the combination of the
labels of levels ``0..k`` (lme4's ``country:hospital``). Crossed grouping
factors are not supported (their ``Z'Z`` has no tree structure).

- Structure: ``H = I + Lambda' Z' W Z Lambda`` couples two clusters only
  when one contains the other, so it is factored level by level, innermost
  first, with a small Cholesky factor per cluster and a Schur complement
  passed to its parent (:mod:`~hmlib.stats.mixed.nested_cholesky`), all
  clusters of a level at once; no sparse-matrix library. With a single
  level (random slopes) ``Z'Z`` is block diagonal.
- Gaussian (``lmer(REML = FALSE)``): penalised least squares with ``[X, y]``
  carried through the same factorisation gives ``beta(theta)`` and the
  penalised residual sum of squares ``r^2``; the profiled deviance
  ``log det H + n (1 + log(2 pi r^2 / n))`` is minimised over ``theta``
  with its analytic gradient (:mod:`~hmlib.stats.mixed.profiled`).
  ``cov(beta) = s^2 (R_X'R_X)^-1`` as lme4's ``vcov``.
- Binomial (``glmer(nAGQ = 1)``): the Laplace approximation, conditional
  modes by PIRLS, maximised over ``(beta, theta)`` jointly with the
  analytic gradient (mode and curvature differentiated implicitly);
  ``cov(beta)`` from the Hessian over ``(beta, theta)`` as lme4
  (:mod:`~hmlib.stats.mixed.laplace`). Adaptive Gauss-Hermite quadrature is
  not offered: with several random effects per cluster, or nested clusters,
  the integral is not a product of one-dimensional ones, and lme4 too
  allows ``nAGQ > 1`` only for a single scalar random effect.
- Optimisation: L-BFGS-B, restarted where it stops on a zero diagonal of a
  ``Lambda_k`` that is a saddle (the likelihood is even in those entries, so
  their gradient vanishes there), then Newton steps with a finite-difference
  Hessian of the analytic gradient (:mod:`~hmlib.stats.mixed.optimise`).
- Slopes are standardised internally (centred when the level has an
  intercept, scaled by their SD), which leaves the maximum likelihood
  unchanged and conditions the optimisation; SDs, correlations and
  conditional modes are mapped back to the user's scale
  (:mod:`~hmlib.stats.mixed.terms`).
- Variance parameters are reported as SDs and correlations, with standard
  errors on the ``log(SD)`` and ``atanh(cor)`` scales by the delta method
  from the observed information (:mod:`~hmlib.stats.mixed.variance_parameters`);
  a level with a zero on its ``Lambda_k`` diagonal is on the boundary and
  its rows have no standard error.

Against lme4 1.1-31 (``tests/results/lme4_general_fits.R``, twelve cases
including brandsma, pbcseq and cdystonia) the gaussian fits agree to
3.5e-7 in the coefficients and 1e-10 in logLik, the binomial Laplace fits
to 2e-6 in the coefficients and 1e-5 in logLik (lme4's Laplace curvature
lag, see above), once lme4's optimiser is run with tight tolerances: with
its defaults glmer stopped 0.09 log-likelihood units short on the binomial
random-slope case. Speed (``bench/bench_mixed_general.py``): 20,000 patients
in 500 hospitals in 40 countries take about 2x the time of
:func:`fit_random_intercept` on the hospitals alone; 5,000 patients x 8
visits with a random slope about 2.7x its random-intercept time.

Layout
------
Eight public names, all importable from here: :func:`fit_random_intercept`,
:func:`test_cluster_variance`, :class:`RandomInterceptFit`,
:class:`ClusterVarianceTest`; :func:`fit_mixed`, :class:`RandomEffects`,
:class:`RandomLevel` and :class:`MixedFit`. Inside the package:
:mod:`~hmlib.stats.mixed.results` (the result objects),
:mod:`~hmlib.stats.mixed.prepare` (input checks, sorting by cluster, the
orthogonalised design), :mod:`~hmlib.stats.mixed.gaussian` (profiled
likelihood) and :mod:`~hmlib.stats.mixed.binomial` (Laplace / AGHQ
objective and optimiser) for the random-intercept model;
:mod:`~hmlib.stats.mixed.terms`, :mod:`~hmlib.stats.mixed.nested_cholesky`,
:mod:`~hmlib.stats.mixed.variance_parameters`,
:mod:`~hmlib.stats.mixed.optimise`, :mod:`~hmlib.stats.mixed.profiled`,
:mod:`~hmlib.stats.mixed.laplace` and :mod:`~hmlib.stats.mixed.general`
(assembling the result) for the general model;
:mod:`~hmlib.stats.mixed.synthetic` simulates data with known truth for
its tests and benchmarks.

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
import dataclasses

import numpy as np
from scipy import stats

from hmlib.exceptions import FitError
from hmlib.stats.mixed.binomial import BinomialObjective, fit_binomial, fit_logistic
from hmlib.stats.mixed.gaussian import GaussianProfile, fit_gaussian
from hmlib.stats.mixed.general import fit_general_binomial, fit_general_gaussian
from hmlib.stats.mixed.prepare import FAMILIES, prepare
from hmlib.stats.mixed.results import ClusterVarianceTest, MixedFit, RandomInterceptFit
from hmlib.stats.mixed.separation import looks_separated, separated_terms
from hmlib.stats.mixed.terms import RandomEffects, RandomLevel, prepare_nested

try:  # installed with pymc; optional here
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - depends on the environment
    ThreadpoolController = None

__all__ = [
    "RandomInterceptFit",
    "ClusterVarianceTest",
    "fit_random_intercept",
    "test_cluster_variance",
    "RandomEffects",
    "RandomLevel",
    "MixedFit",
    "fit_mixed",
]

# The names tests/test_mixed.py uses to reach the objective and the prepared
# problem (FIT-LME4-008, FIT-GRAD-001, FIT-AGHQ-001); not part of the API.
_prepare = prepare
_BinomialObjective = BinomialObjective

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
        d = prepare(y, X, groups, family, term_names)
        if family == "gaussian":
            return fit_gaussian(d, str(cluster_name))
        fit = fit_binomial(d, nagq, str(cluster_name))
        X = np.asarray(X, dtype=float)
        if looks_separated(X, fit.coef, fit.std_error):
            terms = separated_terms(np.asarray(y, dtype=float), X, fit.term_names)
            if terms:
                fit = dataclasses.replace(fit, separated=terms)
        return fit


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
        d = prepare(y, X, groups, family, None)
        if family == "gaussian":
            fit = fit_gaussian(d, "cluster")
            loglik_without = -0.5 * GaussianProfile(d).deviance(0.0)
        else:
            fit = fit_binomial(d, nagq, "cluster")
            _, loglik_without, _, _ = fit_logistic(d.Xs, d.y)
    # At SD = 0 the two likelihoods are the same function; rounding is not evidence.
    statistic = 0.0 if fit.cluster_sd == 0 else max(0.0, 2.0 * (fit.loglik - loglik_without))
    p_value = 1.0 if statistic == 0.0 else 0.5 * float(stats.chi2.sf(statistic, 1))
    return ClusterVarianceTest(statistic=float(statistic), p_value=p_value, loglik_with=fit.loglik,
                               loglik_without=float(loglik_without), df=1, cluster_sd=fit.cluster_sd)


def fit_mixed(y, X, groups: RandomEffects, *, family: str = "gaussian", term_names=None, start=None,
              hessian=None, newton_matrix=None) -> MixedFit:
    """Fit a mixed model with nested random intercepts and random slopes by maximum likelihood.

    ``y ~ X + (1 | country) + (1 | country:hospital)`` or
    ``y ~ X + (1 + time | patient)`` (and combinations: slopes at any level,
    any number of nested levels), each level with an unstructured
    covariance of its effects.

    Parameters
    ----------
    y : array_like, shape (n,)
        Outcome; 0/1 for ``family="binomial"``.
    X : array_like, shape (n, p)
        Fixed-effects design, including the intercept column if wanted. A
        DataFrame's column names are used when ``term_names`` is None.
    groups : RandomEffects
        The grouping levels, outermost first, each with its random
        intercept and slopes.
    family : {"gaussian", "binomial"}
        Gaussian (ML as ``lmer(REML = FALSE)``) or binomial (logit link,
        Laplace approximation as ``glmer(nAGQ = 1)``; adaptive quadrature
        does not extend to several random effects per cluster, see
        :func:`fit_random_intercept` for one random intercept).
    term_names : sequence of str, optional
        Names of X's columns (default ``x0, x1, ...``).
    start, hessian, newton_matrix : numpy.ndarray, optional
        Binomial only: an earlier fit's :attr:`MixedFit.optimum` to start from, and its
        :attr:`MixedFit.optimum_hessian`, reused as this fit's Hessian (``hessian``: nearly the
        same data) or only to take Newton steps from the start (``newton_matrix``: other rows);
        see :func:`hmlib.stats.mixed.laplace.fit_laplace`.

    Returns
    -------
    MixedFit

    Raises
    ------
    FitError
        As :func:`fit_random_intercept`, and for a structure that does not
        fit the data (labels or slopes of the wrong length or missing, a
        level with one cluster, a constant slope, more random effects than
        rows for gaussian).

    See Also
    --------
    fit_random_intercept : the faster special case ``(1 | cluster)``, with
        adaptive Gauss-Hermite quadrature.

    References
    ----------
    Bates et al. (2015), J Stat Softw 67(1). See the module docstring.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> country = np.repeat(np.arange(10), 60)
    >>> hospital = np.repeat(np.arange(60), 10)
    >>> x = rng.normal(size=600)
    >>> y = (1 + 0.5 * x + rng.normal(size=10)[country] + rng.normal(size=60)[hospital]
    ...      + rng.normal(size=600))
    >>> fit = fit_mixed(y, np.column_stack([np.ones(600), x]),
    ...                 RandomEffects.nested(("country", country), ("hospital", hospital)),
    ...                 term_names=["Intercept", "x"])
    >>> fit.to_frame()["term"].tolist()
    ['Intercept', 'x', 'sd(country)', 'sd(hospital)']
    """
    if family not in FAMILIES:
        raise FitError(f"unknown family {family!r}: use 'gaussian' or 'binomial'.")
    with _single_threaded_blas():
        design = prepare_nested(y, X, groups, family, term_names)
        if family == "gaussian":
            return fit_general_gaussian(design)
        return fit_general_binomial(design, start, hessian, newton_matrix)


# Not a pytest test, despite its name (tests import it).
test_cluster_variance.__test__ = False
