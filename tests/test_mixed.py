"""The random-intercept fitter (hmlib.stats.mixed) against lme4, against truth, and at the edges.

Reference numbers: ``tests/results/lme4_fits.json`` (made by
``tests/results/lme4_fits.R``, lme4 1.1-31), on ``tests/results/sim_registry.csv``
and the real datasets in ``data/real/``. Each FIT-LME4 test builds the design
from the case's formula the way lme4 does (rows with a missing model variable
dropped; categorical predictors treatment-coded with the alphabetically first
level as reference, named ``<column><level>``; ``log(v)`` is the log of v;
``miss`` is the missingness indicator of the variable named in the R script's
``prep`` function).

Test IDs
--------
FIT-LME4-001..007   each case of lme4_fits.json: estimates, SEs, SD, logLik, n
FIT-LME4-008        lme4's Laplace estimate lies on the flat top of our Laplace likelihood
FIT-GRAD-001        analytic gradient of the Laplace / AGHQ objective = finite differences
FIT-AGHQ-001        quadrature log-likelihood = brute-force integral per cluster
FIT-GAUSS-001       gaussian log-likelihood, GLS estimates and BLUPs = dense matrix algebra
FIT-GAUSS-002       SE of log(cluster SD) = curvature of an independently profiled likelihood
FIT-BIN-001         binomial cluster effects are the conditional modes (score = 0)
FIT-SIM-001/002     replication against known truth, gaussian / binomial
FIT-EDGE-001..004   SD at the boundary, singletons, string labels, row order and inputs
FIT-LRT-001/002     likelihood-ratio test of the cluster variance
FIT-API-001         to_frame / icc / cluster_effects_frame / summary
FIT-ERR-001..011    each FitError names the problem
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats

from conftest import REFERENCE, REPO
from hmlib.stats import mixed
from hmlib.exceptions import FitError
from hmlib.simulate.mixed_model import mixed_model_data
from hmlib.stats.mixed import RandomInterceptFit, fit_random_intercept

LME4_CASES = json.loads((REFERENCE / "lme4_fits.json").read_text())
# lme4_fits.R: prep = function(d) { d$miss <- as.integer(is.na(d$<variable>)) }
MISSINGNESS_OF = {"sim_missing_indicator": "lactate", "brandsma_missing_ses": "ses"}


def _data_path(file: str):
    path = REFERENCE / file if file == "sim_registry.csv" else REPO / "data" / "real" / file
    if not path.exists():
        pytest.fail(f"reference data {path} is missing (copy it from shared/reference or shared/data/real)")
    return path


def lme4_design(case: dict):
    """y, X, groups, term names for a case of lme4_fits.json, built as lme4 builds them."""
    frame = pd.read_csv(_data_path(case["data"]))
    if case["name"] in MISSINGNESS_OF:
        frame["miss"] = frame[MISSINGNESS_OF[case["name"]]].isna().astype(int)
    lhs, rhs = (s.strip() for s in case["formula"].split("~"))
    bar = re.search(r"\(1\s*\|\s*([\w.]+)\)", rhs)
    cluster = bar.group(1)
    terms = [t.strip() for t in rhs[:bar.start()].split("+") if t.strip()]
    log_outcome = re.fullmatch(r"log\((.+)\)", lhs)
    outcome = log_outcome.group(1) if log_outcome else lhs
    frame = frame.dropna(subset=[outcome, cluster, *terms])
    y = frame[outcome].to_numpy(dtype=float)
    if log_outcome:
        y = np.log(y)
    columns, names = [np.ones(len(frame))], ["(Intercept)"]
    for term in terms:
        values = frame[term]
        if pd.api.types.is_numeric_dtype(values):
            columns.append(values.to_numpy(dtype=float))
            names.append(term)
        else:
            for level in sorted(values.unique())[1:]:
                columns.append((values == level).to_numpy(dtype=float))
                names.append(f"{term}{level}")
    return y, np.column_stack(columns), frame[cluster].to_numpy(), names


def _nagq(case: dict) -> int:
    return int(case["method"].rsplit("=", 1)[1]) if case["family"] == "binomial" else 1


@pytest.fixture(scope="module")
def lme4_fits():
    """Our fit of each reference case, keyed by case name."""
    out = {}
    for case in LME4_CASES:
        y, X, groups, names = lme4_design(case)
        out[case["name"]] = fit_random_intercept(y, X, groups, family=case["family"], nagq=_nagq(case),
                                                 term_names=names)
    return out


# --------------------------------------------------------------------------
# Against lme4
# --------------------------------------------------------------------------
@pytest.mark.parametrize("case", LME4_CASES, ids=[f"FIT-LME4-{i + 1:03d}-{c['name']}"
                                                  for i, c in enumerate(LME4_CASES)])
def test_fit_lme4_001_007_reference_fits(case, lme4_fits):
    """FIT-LME4-001..007: fixed effects (1e-3 abs), SEs (2% rel), cluster SD (1e-2), logLik (1e-2), n.

    Laplace exception, explained and checked in FIT-LME4-008: glmer's second
    stage stops Nelder-Mead at an absolute deviance change of 1e-5 (FtolAbs)
    on a Laplace deviance that is itself evaluated with the curvature of the
    PIRLS iteration before the last (src/external.cpp, internal_glmerWrkIter),
    so its Laplace estimates are only located to about 1% of an SE (the
    AGHQ objective is insensitive to that lag, and those fits agree to 1e-5).
    For the Laplace case the fixed effects are compared to 1e-3 or 1% of their
    SE, whichever is larger (the intercept differs by 1.4e-3 = 0.4% of its SE).
    """
    fit = lme4_fits[case["name"]]
    names = list(case["fixed"])
    assert set(fit.term_names) == set(names)
    order = [fit.term_names.index(n) for n in names]
    est = np.array([case["fixed"][n]["estimate"] for n in names])
    se = np.array([case["fixed"][n]["std_error"] for n in names])
    tol = np.maximum(1e-3, 0.01 * se) if case["method"].endswith("nAGQ = 1") else 1e-3
    assert np.all(np.abs(fit.coef[order] - est) <= tol), (fit.coef[order], est)
    np.testing.assert_allclose(fit.std_error[order], se, rtol=0.02)
    assert fit.cluster_sd == pytest.approx(case["cluster_sd"], abs=1e-2)
    assert fit.loglik == pytest.approx(case["logLik"], abs=1e-2)
    assert (fit.n_obs, fit.n_clusters) == (case["n_used"], case["n_clusters"])
    if case["family"] == "gaussian":
        assert fit.residual_sd == pytest.approx(case["residual_sd"], rel=1e-4)
        assert fit.method == "ML"
    else:
        assert fit.residual_sd is None
        nagq = _nagq(case)
        assert fit.method == ("ML, Laplace" if nagq == 1 else f"ML, adaptive Gauss-Hermite ({nagq} nodes)")
    assert fit.converged


def test_fit_lme4_008_laplace_estimates_on_flat_top(lme4_fits):
    """FIT-LME4-008: at lme4's Laplace estimates our Laplace log-likelihood is within 1e-4 of our
    maximum (measured: 9e-6, i.e. a deviance gap of 2e-5, the size of lme4's Nelder-Mead FtolAbs
    of 1e-5; so the 1.4e-3 intercept difference is optimiser tolerance on a flat top), and within
    1e-3 of the logLik lme4 reports there (measured 7.7e-4: its lagged-curvature evaluation)."""
    case = next(c for c in LME4_CASES if c["name"] == "sim_cc_laplace")
    y, X, groups, names = lme4_design(case)
    d = mixed._prepare(y, X, groups, "binomial", names)
    objective = mixed._BinomialObjective(d, 1)
    beta_s = np.linalg.solve(d.to_original, [case["fixed"][n]["estimate"] for n in names])
    ours_at_lme4 = -objective(np.r_[beta_s, case["cluster_sd"]])[0]
    best = lme4_fits["sim_cc_laplace"].loglik
    assert best - 1e-4 <= ours_at_lme4 <= best
    assert ours_at_lme4 == pytest.approx(case["logLik"], abs=1e-3)


# --------------------------------------------------------------------------
# Internal consistency against independent computations
# --------------------------------------------------------------------------
@pytest.mark.parametrize("nagq", [1, 7])
def test_fit_grad_001_gradient_matches_finite_differences(nagq):
    """FIT-GRAD-001: the analytic gradient over (beta, theta), including the dependence of the
    modes and curvatures on the parameters, equals central finite differences (rel 1e-5)."""
    y, X, groups = mixed_model_data(5, family="binomial", n_clusters=25, per_cluster=12, singletons=3)
    d = mixed._prepare(y, X, groups, "binomial", None)
    objective = mixed._BinomialObjective(d, nagq)
    x = np.array([0.3, -0.2, 0.9])
    _, grad = objective(x)
    h = 1e-6
    numeric = np.array([(objective(x + h * e)[0] - objective(x - h * e)[0]) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_fit_aghq_001_loglik_equals_brute_force_integral():
    """FIT-AGHQ-001: with 25 nodes the quadrature log-likelihood equals the marginal likelihood
    integrated by scipy.integrate.quad cluster by cluster (1e-7); Laplace (1 node) is close but not
    equal; and the fitted AGHQ optimum is stable between 10 and 25 nodes."""
    y, X, groups = mixed_model_data(8, family="binomial", n_clusters=8, per_cluster=20, sd=1.2)
    beta, theta = np.array([0.8, 0.4]), 1.1
    exact = 0.0
    for j in np.unique(groups):
        rows = groups == j
        eta0 = X[rows] @ beta

        def integrand(u, eta0=eta0, yj=y[rows]):
            eta = eta0 + theta * u
            return np.exp(np.sum(yj * eta - np.logaddexp(0.0, eta))) * stats.norm.pdf(u)

        exact += np.log(integrate.quad(integrand, -12, 12, epsabs=0, epsrel=1e-12, limit=200)[0])
    d = mixed._prepare(y, X, groups, "binomial", None)
    beta_s = np.linalg.solve(d.to_original, beta)
    aghq = -mixed._BinomialObjective(d, 25)(np.r_[beta_s, theta])[0]
    laplace = -mixed._BinomialObjective(d, 1)(np.r_[beta_s, theta])[0]
    assert aghq == pytest.approx(exact, abs=1e-7)
    assert 1e-6 < abs(laplace - exact) < 0.1
    f10 = fit_random_intercept(y, X, groups, family="binomial", nagq=10)
    f25 = fit_random_intercept(y, X, groups, family="binomial", nagq=25)
    np.testing.assert_allclose(f10.coef, f25.coef, atol=1e-4)
    assert f10.loglik == pytest.approx(f25.loglik, abs=1e-4)


def _dense_gaussian_loglik(y, X, groups, beta, su, se):
    total = 0.0
    for j in np.unique(groups):
        rows = groups == j
        k = int(rows.sum())
        V = se ** 2 * np.eye(k) + su ** 2 * np.ones((k, k))
        total += stats.multivariate_normal(X[rows] @ beta, V).logpdf(y[rows])
    return total


def test_fit_gauss_001_dense_matrix_algebra():
    """FIT-GAUSS-001: gaussian logLik = sum of multivariate normal log-densities; beta = GLS
    (X'V^-1X)^-1 X'V^-1 y; cov = (X'V^-1X)^-1; BLUPs = su^2 Z'V^-1 (y - X beta); conditional SD
    = sqrt(su^2 - su^4 n_j / (se^2 + n_j su^2)); all at the fitted variances."""
    y, X, groups = mixed_model_data(11, family="gaussian", n_clusters=12, per_cluster=6, singletons=2)
    fit = fit_random_intercept(y, X, groups)
    su, se = fit.cluster_sd, fit.residual_sd
    labels = np.unique(groups)
    Z = (groups[:, None] == labels[None, :]).astype(float)
    V = se ** 2 * np.eye(y.size) + su ** 2 * Z @ Z.T
    Vinv = np.linalg.inv(V)
    cov = np.linalg.inv(X.T @ Vinv @ X)
    beta = cov @ X.T @ Vinv @ y
    np.testing.assert_allclose(fit.coef, beta, rtol=1e-9)
    np.testing.assert_allclose(fit.cov, cov, rtol=1e-8)
    assert fit.loglik == pytest.approx(_dense_gaussian_loglik(y, X, groups, beta, su, se), abs=1e-8)
    np.testing.assert_allclose(fit.cluster_effects, su ** 2 * Z.T @ Vinv @ (y - X @ beta), atol=1e-9)
    sizes = Z.sum(axis=0)
    np.testing.assert_allclose(fit.cluster_effect_sd, np.sqrt(su ** 2 - su ** 4 * sizes / (se ** 2 + sizes * su ** 2)))
    # and the ML optimum: perturbing either SD lowers the dense log-likelihood
    for dsu, dse in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        assert _dense_gaussian_loglik(y, X, groups, beta, su + dsu, se + dse) < fit.loglik


def test_fit_gauss_002_log_sd_standard_error_from_profile():
    """FIT-GAUSS-002: SE of log(cluster SD) equals 1/sqrt(-curvature) of the profile log-likelihood
    in log(SD), profiled over beta (GLS) and the residual SD by an independent dense computation."""
    y, X, groups = mixed_model_data(12, family="gaussian", n_clusters=15, per_cluster=5)
    fit = fit_random_intercept(y, X, groups)

    def profile(log_su):
        su = np.exp(log_su)

        def negll(log_se):
            se = np.exp(log_se)
            labels = np.unique(groups)
            Z = (groups[:, None] == labels[None, :]).astype(float)
            Vinv = np.linalg.inv(se ** 2 * np.eye(y.size) + su ** 2 * Z @ Z.T)
            beta = np.linalg.solve(X.T @ Vinv @ X, X.T @ Vinv @ y)
            return -_dense_gaussian_loglik(y, X, groups, beta, su, se)

        res = optimize.minimize_scalar(negll, bounds=(-3, 3), method="bounded", options={"xatol": 1e-10})
        return -res.fun

    h = 1e-3
    x0 = np.log(fit.cluster_sd)
    curvature = (profile(x0 + h) - 2 * profile(x0) + profile(x0 - h)) / h ** 2
    assert fit.log_cluster_sd_std_error == pytest.approx(1 / np.sqrt(-curvature), rel=1e-3)


def test_fit_bin_001_cluster_effects_are_conditional_modes():
    """FIT-BIN-001: each binomial cluster effect b_j solves sum_i (y_ij - p_ij) = b_j / sd^2 (the
    conditional mode), and its SD is 1 / sqrt(sum_i p(1-p) + 1/sd^2) (lme4's condVar)."""
    y, X, groups = mixed_model_data(4, family="binomial", n_clusters=20, per_cluster=25, sd=0.9)
    fit = fit_random_intercept(y, X, groups, family="binomial", nagq=5)
    b = fit.cluster_effects[np.searchsorted(fit.cluster_labels, groups)]
    p = 1 / (1 + np.exp(-(X @ fit.coef + b)))
    score = np.bincount(np.searchsorted(fit.cluster_labels, groups), weights=y - p)
    np.testing.assert_allclose(score, fit.cluster_effects / fit.cluster_sd ** 2, atol=1e-8)
    info = np.bincount(np.searchsorted(fit.cluster_labels, groups), weights=p * (1 - p))
    np.testing.assert_allclose(fit.cluster_effect_sd, 1 / np.sqrt(info + 1 / fit.cluster_sd ** 2), rtol=1e-6)


# --------------------------------------------------------------------------
# Against truth
# --------------------------------------------------------------------------
def test_fit_sim_001_gaussian_recovers_truth():
    """FIT-SIM-001: 30 replicates (40 clusters x 15, beta1 = 0.5, SD 0.7, residual SD 1): mean
    estimates within 3 Monte Carlo SEs of the truth for beta1 and the residual SD; the cluster SD
    within 0.04 (ML is biased down by about 1/(2m)); mean SE of beta1 within 25% of the spread."""
    fits = [fit_random_intercept(*mixed_model_data(seed, family="gaussian")) for seed in range(30)]
    b1 = np.array([f.coef[1] for f in fits])
    assert abs(b1.mean() - 0.5) < 3 * b1.std(ddof=1) / np.sqrt(30)
    res = np.array([f.residual_sd for f in fits])
    assert abs(res.mean() - 1.0) < 3 * res.std(ddof=1) / np.sqrt(30)
    sd = np.array([f.cluster_sd for f in fits])
    assert abs(sd.mean() - 0.7) < 0.04
    assert np.mean([f.std_error[1] for f in fits]) == pytest.approx(b1.std(ddof=1), rel=0.25)
    assert all(f.converged for f in fits)


def test_fit_sim_002_binomial_recovers_truth():
    """FIT-SIM-002: 30 replicates (40 clusters x 30, beta = (-1, 0.8), SD 0.8), Laplace: mean beta1
    within 3 Monte Carlo SEs of the truth, mean cluster SD within 0.06 of 0.8; mean SE of beta1
    within 25% of the spread."""
    fits = [fit_random_intercept(*mixed_model_data(100 + seed, family="binomial", per_cluster=30,
                                           beta=(-1.0, 0.8), sd=0.8), family="binomial")
            for seed in range(30)]
    b1 = np.array([f.coef[1] for f in fits])
    assert abs(b1.mean() - 0.8) < 3 * b1.std(ddof=1) / np.sqrt(30)
    sd = np.array([f.cluster_sd for f in fits])
    assert abs(sd.mean() - 0.8) < 0.06
    assert np.mean([f.std_error[1] for f in fits]) == pytest.approx(b1.std(ddof=1), rel=0.25)
    assert all(f.converged for f in fits)


# --------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------
@pytest.mark.parametrize("family,nagq", [("gaussian", 1), ("binomial", 1), ("binomial", 5)])
def test_fit_edge_001_sd_at_boundary(family, nagq):
    """FIT-EDGE-001: data without cluster effect whose ML cluster SD is 0: returns exactly 0,
    converged, coefficients equal to ordinary (logistic) regression, NaN SD row in to_frame,
    zero cluster effects."""
    y, X, groups = mixed_model_data(3, family=family, sd=0.0, n_clusters=30, per_cluster=20)
    fit = fit_random_intercept(y, X, groups, family=family, nagq=nagq)
    assert fit.cluster_sd == 0.0 and fit.converged
    assert np.all(fit.cluster_effects == 0)
    row = fit.to_frame().iloc[-1]
    assert row["estimate"] == 0 and np.isnan(row[["std_error", "ci_lower", "ci_upper"]].astype(float)).all()
    import statsmodels.api as sm
    glm = sm.GLM(y, X, family=sm.families.Binomial() if family == "binomial" else sm.families.Gaussian()).fit()
    np.testing.assert_allclose(fit.coef, glm.params, atol=1e-6)
    if family == "binomial":
        np.testing.assert_allclose(fit.std_error, glm.bse, rtol=1e-4)
        assert fit.loglik == pytest.approx(glm.llf, abs=1e-8)
    assert fit.icc == 0.0


@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_fit_edge_001b_no_numerical_dust_at_boundary(family):
    """FIT-EDGE-001b: over 12 data sets without cluster effect, every estimated SD is either exactly
    0 or clearly positive (> 1e-3): the flat likelihood near 0 never leaves rounding dust."""
    sds = [fit_random_intercept(*mixed_model_data(seed, family=family, sd=0.0, n_clusters=30, per_cluster=20),
                                family=family).cluster_sd for seed in range(12)]
    assert all(sd == 0.0 or sd > 1e-3 for sd in sds), sds
    assert sum(sd == 0.0 for sd in sds) >= 3


@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_fit_edge_002_singleton_clusters(family):
    """FIT-EDGE-002: clusters of one row (here 40 of 60) are fitted; their sizes are 1 and their
    effects finite; the binomial AGHQ fit matches the brute-force likelihood check of FIT-AGHQ-001
    by construction, so here: converged, finite SEs, and all clusters reported."""
    y, X, groups = mixed_model_data(21, family=family, n_clusters=20, per_cluster=8, singletons=40, sd=1.0)
    fit = fit_random_intercept(y, X, groups, family=family, nagq=1 if family == "gaussian" else 8)
    assert fit.converged and fit.n_clusters == 60 and fit.n_obs == 200
    assert (fit.cluster_sizes == 1).sum() == 40
    assert np.isfinite(fit.std_error).all() and fit.cluster_sd > 0
    assert np.isfinite(fit.cluster_effects).all() and np.all(fit.cluster_effect_sd > 0)


def test_fit_edge_003_string_labels_and_row_order():
    """FIT-EDGE-003: string cluster labels give the same fit as integer labels, labels come back
    sorted with their own effects, and shuffling the rows changes nothing."""
    y, X, groups = mixed_model_data(7, family="binomial", n_clusters=12, per_cluster=20)
    names = np.array([f"site-{chr(ord('L') - g)}" for g in groups], dtype=object)
    a = fit_random_intercept(y, X, groups, family="binomial", nagq=3)
    b = fit_random_intercept(y, X, names, family="binomial", nagq=3)
    perm = np.random.default_rng(0).permutation(y.size)
    c = fit_random_intercept(y[perm], X[perm], pd.Series(names[perm]), family="binomial", nagq=3)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-8)
    np.testing.assert_allclose(b.coef, c.coef, rtol=1e-8)
    assert list(b.cluster_labels) == sorted(set(names))
    # site-L is integer cluster 0, site-A is integer cluster 11
    effects = dict(zip(b.cluster_labels, b.cluster_effects))
    assert effects["site-L"] == pytest.approx(a.cluster_effects[0], rel=1e-6)
    assert effects["site-A"] == pytest.approx(a.cluster_effects[11], rel=1e-6)
    np.testing.assert_allclose(c.cluster_effects, b.cluster_effects, rtol=1e-6)


def test_fit_edge_004_inputs_untouched_and_pandas_accepted():
    """FIT-EDGE-004: y, X and groups are not modified; a DataFrame's column names become the term
    names; results are read-only (frozen dataclass, read-only arrays)."""
    y, X, groups = mixed_model_data(9, family="gaussian")
    frame = pd.DataFrame(X, columns=["Intercept", "age"])
    y0, X0, g0 = y.copy(), frame.copy(), groups.copy()
    fit = fit_random_intercept(pd.Series(y), frame, pd.Series(groups), cluster_name="site")
    assert np.array_equal(y, y0) and np.array_equal(groups, g0)
    pd.testing.assert_frame_equal(frame, X0)
    assert fit.term_names == ("Intercept", "age")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.cluster_sd = 1.0
    with pytest.raises(ValueError):
        fit.coef[0] = 0.0


# --------------------------------------------------------------------------
# Likelihood-ratio test of the cluster variance
# --------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_fit_lrt_001_statistic_and_mixture_p_value(family):
    """FIT-LRT-001: statistic = 2 (logLik mixed - logLik of the regression without clusters, from
    statsmodels); p = 0.5 P(chi2_1 > statistic) (Self & Liang 1987)."""
    import statsmodels.api as sm

    y, X, groups = mixed_model_data(13, family=family, sd=0.8, n_clusters=25, per_cluster=10)
    test = mixed.test_cluster_variance(y, X, groups, family=family, nagq=1)
    fit = fit_random_intercept(y, X, groups, family=family)
    glm = sm.GLM(y, X, family=sm.families.Binomial() if family == "binomial" else sm.families.Gaussian()).fit()
    # statsmodels' gaussian llf uses the ML scale (RSS/n): the same likelihood as SD = 0
    assert test.loglik_without == pytest.approx(glm.llf, abs=1e-6)
    assert test.loglik_with == pytest.approx(fit.loglik, abs=1e-9)
    assert test.statistic == pytest.approx(2 * (fit.loglik - glm.llf), abs=1e-6)
    assert test.p_value == pytest.approx(0.5 * stats.chi2.sf(test.statistic, 1))
    assert test.df == 1 and test.statistic > 0 and test.p_value < 0.05


@pytest.mark.parametrize("seed,sd,n_clusters,per_cluster", [(3, 0.0, 30, 20), (13, 0.4, 25, 10)])
def test_fit_lrt_002_boundary_gives_p_one(seed, sd, n_clusters, per_cluster):
    """FIT-LRT-002: when the cluster SD is estimated at 0 the statistic is exactly 0 (not rounding
    noise) and p is 1 (all the mass of the chi2_0 component)."""
    y, X, groups = mixed_model_data(seed, family="binomial", sd=sd, n_clusters=n_clusters, per_cluster=per_cluster)
    test = mixed.test_cluster_variance(y, X, groups, family="binomial")
    assert test.statistic == 0.0 and test.p_value == 1.0 and test.cluster_sd == 0.0


# --------------------------------------------------------------------------
# Result API
# --------------------------------------------------------------------------
def test_fit_api_001_frames_icc_summary():
    """FIT-API-001: to_frame has the fixed effects with Wald z intervals and a last row sd(<cluster>)
    with a Wald interval on the log-SD scale; icc by its formulas; cluster_effects_frame columns;
    summary is a string that names the method and every term."""
    y, X, groups = mixed_model_data(2, family="gaussian")
    fit = fit_random_intercept(y, X, groups, term_names=["Intercept", "x"], cluster_name="site")
    frame = fit.to_frame(level=0.9)
    assert list(frame.columns) == ["term", "estimate", "std_error", "ci_lower", "ci_upper"]
    assert frame["term"].tolist() == ["Intercept", "x", "sd(site)"]
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(frame["ci_lower"][:2], fit.coef - z * fit.std_error)
    np.testing.assert_allclose(frame["ci_upper"][:2], fit.coef + z * fit.std_error)
    sd_row = frame.iloc[-1]
    log_se = fit.log_cluster_sd_std_error
    assert sd_row["ci_lower"] == pytest.approx(fit.cluster_sd * np.exp(-z * log_se))
    assert sd_row["ci_upper"] == pytest.approx(fit.cluster_sd * np.exp(z * log_se))
    assert sd_row["std_error"] == pytest.approx(fit.cluster_sd * log_se)
    assert fit.icc == pytest.approx(fit.cluster_sd ** 2 / (fit.cluster_sd ** 2 + fit.residual_sd ** 2))
    effects = fit.cluster_effects_frame()
    assert list(effects.columns) == ["cluster", "n", "effect", "effect_sd"]
    assert effects["n"].sum() == fit.n_obs
    text = fit.summary()
    assert isinstance(text, str) and "ML" in text and "sd(site)" in text and "Intercept" in text
    yb, Xb, gb = mixed_model_data(2, family="binomial")
    fb = fit_random_intercept(yb, Xb, gb, family="binomial")
    assert fb.icc == pytest.approx(fb.cluster_sd ** 2 / (fb.cluster_sd ** 2 + np.pi ** 2 / 3))
    assert isinstance(fb, RandomInterceptFit) and fb.term_names == ("x0", "x1")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def _base():
    y, X, groups = mixed_model_data(1, family="binomial", n_clusters=5, per_cluster=10)
    return y, X, groups


def _collinear():
    y, X, g = _base()
    return y, np.column_stack([X, 2 * X[:, 1] + 1]), g


def _dummy_trap():
    y, X, g = _base()
    a = (np.arange(y.size) % 2).astype(float)
    return y, np.column_stack([X, a, 1 - a]), g


ERROR_CASES = {
    "FIT-ERR-001-no-rows": (lambda: (np.array([]), np.empty((0, 2)), np.array([])), {}, "no rows"),
    "FIT-ERR-002-nan-y": (lambda: (np.r_[np.nan, _base()[0][1:]], _base()[1], _base()[2]),
                          {"family": "gaussian"}, "y has 1 missing or infinite"),
    "FIT-ERR-003-inf-X": (lambda: (_base()[0], np.where(np.arange(50)[:, None] == 3, np.inf, _base()[1]),
                                   _base()[2]), {}, "missing or infinite values in column(s) 'x0', 'x1'"),
    "FIT-ERR-004-nan-groups": (lambda: (_base()[0], _base()[1], np.r_[np.nan, _base()[2][1:].astype(float)]),
                               {}, "missing cluster label"),
    "FIT-ERR-005-length": (lambda: (_base()[0][:-1], _base()[1], _base()[2]), {}, "length mismatch"),
    "FIT-ERR-006-collinear": (_collinear, {"term_names": ["Intercept", "age", "age2"]},
                              "'Intercept', 'age', 'age2' are linearly dependent"),
    "FIT-ERR-007-dummy-trap": (_dummy_trap, {"term_names": ["Intercept", "x", "a", "b"]},
                               "'Intercept', 'a', 'b' are linearly dependent"),
    "FIT-ERR-008-not-binary": (lambda: (_base()[0] * 2, _base()[1], _base()[2]), {}, "must be 0/1"),
    "FIT-ERR-009-constant": (lambda: (np.ones(50), _base()[1], _base()[2]), {}, "constant"),
    "FIT-ERR-010-one-cluster": (lambda: (_base()[0], _base()[1], np.zeros(50)), {}, "at least 2 clusters"),
    "FIT-ERR-011-family": (_base, {"family": "poisson"}, "unknown family 'poisson'"),
    "FIT-ERR-012-nagq": (_base, {"nagq": 0}, "nagq must be a positive integer"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_fit_err_001_012_fit_errors_name_the_problem(case):
    """FIT-ERR-001..012: each bad input raises FitError (never LinAlgError) whose message names
    the problem (and the columns, for collinearity)."""
    make, kwargs, message = ERROR_CASES[case]
    y, X, groups = make()
    kwargs = {"family": "binomial", **kwargs}
    with pytest.raises(FitError) as info:
        fit_random_intercept(y, X, groups, **kwargs)
    assert message in str(info.value)
