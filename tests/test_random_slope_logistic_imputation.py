"""Random-slope logistic imputation (2l.bin with random slopes): :mod:`hmlib.stats.imputation.slopes_logistic`.

Truth by simulation: ``bench/random_slope_imputation_truth.py --binary``; speed:
``bench/bench_random_slope_imputation.py --binary``. R reference: ``tests/results/random_slope_binary_imputation.R``
(brms: the same imputation model, its posterior, and the missing values drawn from its posterior predictive
distribution; mice's 2l.bin with a random slope beside it for contrast).

Test IDs
--------
RSL-IMP-001  the sampler's posterior is brms's: on the parity registries' recorded rows and brms's design (columns
             z-scored over all rows), 3,000 sweeps after the burn-in give posterior means of the imputation model's
             coefficients within 0.25 posterior SDs of brms's and of the random-effect SDs and correlation (and the
             site SD) within 0.4 (the SDs mix more slowly; the priors differ a little: brms has flat coefficients
             and half-t(3, 0, 2.5) SDs); posterior SDs within 20%
RSL-IMP-002  the effects are drawn given the patient's values: on data with strong patient trends, the imputed chance
             of the finding at masked visits (averaged over 30 draws) is closer to the true chance (mean squared
             distance; 200 patients x 20 visits, slope SD 1.5 per unit of t in -1..1) than under the
             random-intercept kernel (2l.bin; at most 0.85 of its distance) and than under draws of the effects from
             N(0, Psi) at the Laplace fit (mice 2l.bin's way; at most half)
RSL-IMP-003  R parity (random_slope_binary_registry.csv, 300 patients): the chained equations with random_slopes=[t]
             give pooled coefficients of lmer(y ~ t + x + treat + (1 + t | patient)) within 3 combined Monte Carlo
             SEs of brms's posterior imputations, SEs within 10%, the mean slope SD within 5%
RSL-IMP-004  hard data: a finding with no patient-specific trend (slope SD 0) and a design that separates the finding
             completely impute without error (0/1 values, finite coefficients: the priors hold them); a patient
             without recorded rows gets effects from N(0, Psi) (their SD over a chain matches Psi's); random
             columns that do not start with the intercept are refused
RSL-IMP-005  chain state: the first call runs GIBBS_BURN_IN sweeps and later calls GIBBS_SWEEPS from the stored
             state; a state of another design width starts afresh; the same seed gives the same values
RSL-IMP-006  the small helpers: the closed-form inverses and precision draws (q = 1, 2; numpy for q = 3) equal
             numpy's, and the draws given a precision have covariance its inverse; the prior density of a factor L
             (Psi = L L') is the inverse-Wishart density of Psi (scipy) plus log |d Psi / d L| (a numerical
             Jacobian), up to a constant
RSL-IMP-007  the linear step given the Polya-Gamma draws, with a site level: 40,000 iterations of ``beta | v``,
             ``v | beta`` (patients' effects integrated out) and ``b | beta, v`` have the dense normal posterior of
             (beta, v, b) as their distribution (means within 4.5 batch-means MC SEs, covariance within 4% of its largest entry)
RSL-IMP-008  R parity with a site level (random_slope_binary_sites_registry.csv, 300 patients in 30 sites): the chained
             equations with random_slopes=[t] and higher_levels=[site] give pooled coefficients of lmer(y ~ t + x +
             treat + (1 + t | patient) + (1 | site)) within 3 combined Monte Carlo SEs of brms's posterior
             predictive imputations with (1 + t | patient) + (1 | site), SEs within 10%, sd(site) and the slope SD
             within 5%
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import hmlib.stats.imputation.slopes_logistic as slopes_logistic
from hmlib.stats.imputation import impute
from hmlib.stats.imputation.kernels import GIBBS_BURN_IN, GIBBS_SWEEPS, prepare_design, ri_logistic_draw
from hmlib.stats.imputation.slopes_logistic import (_inverse, _log_prior_of_factor, _Model,
                                                   _normal_given_precision, random_slopes_logistic_draw)
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed
from hmlib.stats.pooling import rubin_arrays

RESULTS = Path(__file__).resolve().parent / "results"
REGISTRY = RESULTS / "random_slope_binary_registry.csv"


def _trend_problem(seed: int, J: int = 300, visits: int = 8, slope_sd: float = 1.0):
    """A 0/1 finding with each patient's own level and strong trend; 30% of visits masked completely at random."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(J), visits)
    t = np.tile(np.linspace(-1.0, 1.0, visits), J)
    b = rng.multivariate_normal([0.0, 0.0], [[1.5 ** 2, 0.0], [0.0, slope_sd ** 2]], J)
    z = rng.normal(size=J * visits)
    prob = special.expit(0.5 * z + b[patient, 0] + b[patient, 1] * t)
    x = (rng.random(J * visits) < prob).astype(float)
    masked = rng.random(J * visits) < 0.3
    return patient, t, z, x, masked, prob


def _brms_design(registry: str, sites: bool):
    """The parity registry's recorded rows on brms's design (the R script's: columns z-scored over all rows)."""
    frame = pd.read_csv(RESULTS / registry)
    columns = ["y", "t", "treat", "p_y", "p_t"] + (["s_y", "s_t", "s_treat"] if sites else [])
    for v in ("y", "t", "treat"):
        frame[f"p_{v}"] = frame.groupby("patient")[v].transform("mean")
        frame[f"s_{v}"] = frame.groupby("site")[v].transform("mean") if sites else 0.0
    rec = frame[frame["x"].notna()]
    X = np.column_stack([np.ones(len(rec))] + [(rec[c] - frame[c].mean()) / frame[c].std() for c in columns])
    patient, J = pd.factorize(rec["patient"])[0], rec["patient"].nunique()
    hc = K = None
    if sites:
        first = pd.Series(rec["site"].to_numpy()).groupby(patient).first()
        hc, K = pd.factorize(first.sort_index())[0], rec["site"].nunique()
    return X, rec["x"].to_numpy(float), patient, J, hc, K, columns


@pytest.mark.parametrize("registry, reference, sites", [
    ("random_slope_binary_registry.csv", "random_slope_binary_imputation.json", False),
    ("random_slope_binary_sites_registry.csv", "random_slope_binary_sites_imputation.json", True)])
def test_rsl_imp_001_posterior_is_brms(registry, reference, sites):
    """RSL-IMP-001: see the module docstring."""
    X, y, patient, J, hc, K, columns = _brms_design(registry, sites)
    model = _Model(X, y, patient, J, np.array([0, 2]), hc, K or 0)
    rng = np.random.default_rng(11)
    state: dict = {}
    for _ in range(GIBBS_BURN_IN):
        model.sweep(state, rng)
    draws = []
    for _ in range(3000):
        model.sweep(state, rng)
        sd = np.sqrt(np.diag(state["psi"]))
        draws.append(np.r_[state["beta"], sd, state["psi"][0, 1] / sd.prod(),
                           np.sqrt(state["omega2"]) if sites else []])
    draws = np.array(draws)
    ref = json.loads((RESULTS / reference).read_text())["brms"]["imputation_model"]
    names = ["b_Intercept"] + [f"b_{c}" for c in columns] + ["sd_patient__Intercept", "sd_patient__t",
                                                               "cor_patient__Intercept__t"]
    names += ["sd_site__Intercept"] if sites else []
    for k, name in enumerate(names):
        theirs = ref[name]
        tol = 0.25 if name.startswith("b_") else 0.4
        assert draws[:, k].mean() == pytest.approx(theirs["mean"], abs=tol * theirs["sd"]), name
        assert draws[:, k].std() == pytest.approx(theirs["sd"], rel=0.2), name


def test_rsl_imp_002_effects_drawn_given_the_patients_values():
    """RSL-IMP-002: see the module docstring."""
    patient, t, z, x, masked, prob = _trend_problem(seed=6, J=200, visits=20, slope_sd=1.5)
    obs = ~masked
    Do, Dp, _ = prepare_design(np.column_stack([t, z]), ["t", "z"], obs, masked)
    J = int(patient.max()) + 1

    def error(draw, reps=30):
        """Mean squared distance of the imputed chance of the finding (averaged over the draws: the imputation
        model's prediction) from the true chance, over the masked visits."""
        rng = np.random.default_rng(1)
        return np.mean((np.mean([special.expit(draw(rng)) for _ in range(reps)], axis=0) - prob[masked]) ** 2)

    slopes = error(lambda rng: random_slopes_logistic_draw(Do, x[obs], patient[obs], Dp, patient[masked], J, rng,
                                                           random_columns=[0, 1], notes=set(), target="x",
                                                           logits=True))
    intercept = error(lambda rng: ri_logistic_draw(Do, x[obs], patient[obs], Dp, patient[masked], J, rng,
                                                   notes=set(), target="x", logits=True))
    fit = fit_mixed(x[obs], Do, RandomEffects((RandomLevel("p", patient[obs], slopes={"t": Do[:, 1]}),)),
                    family="binomial")

    def unconditional(rng):                              # mice 2l.bin: b ~ N(0, Psi*) whatever the patient recorded
        b = rng.multivariate_normal([0.0, 0.0], fit.levels[0].covariance, J)
        return Dp @ fit.coef + np.einsum("ik,ik->i", Dp[:, :2], b[patient[masked]])

    marginal = error(unconditional)
    assert slopes < 0.85 * intercept, (slopes, intercept)
    assert slopes < 0.5 * marginal, (slopes, marginal)


def _pooled(frames):
    """Rubin-pooled fixed effects of the analysis model (with ``(1 | site)`` when the frames have sites), the slope
    SDs and the site SDs (empty without sites)."""
    est, var, sds, site_sds = [], [], [], []
    for done in frames:
        X = np.column_stack([np.ones(len(done)), done[["t", "x", "treat"]].to_numpy(float)])
        level = RandomLevel("patient", done["patient"].to_numpy(), slopes={"t": done["t"].to_numpy(float)})
        sites = (RandomLevel("site", done["site"].to_numpy()),) if "site" in done else ()
        fit = fit_mixed(done["y"].to_numpy(float), X, RandomEffects((*sites, level)))
        est.append(fit.coef)
        var.append(fit.std_error ** 2)
        sds.append(fit.levels[-1].sd[1])
        if sites:
            site_sds.append(fit.levels[0].sd[0])
    return rubin_arrays(np.array(est), np.array(var)), np.array(sds), np.array(site_sds)


def _r_parity(reference: str, res):
    """RSL-IMP-003/008: the pooled analysis of ``res``'s completed sets against the brms reference's."""
    ref = json.loads((RESULTS / reference).read_text())
    m_ref, brms = ref["m"], ref["brms"]
    pooled, sds, site_sds = _pooled(res.completed)
    m = len(res.completed)
    for k, term in enumerate(["(Intercept)", "t", "x", "treat"]):
        theirs = brms["pooled"][term]
        mc = np.sqrt(pooled["between"][k] / m + theirs["between"] / m_ref)
        assert pooled["estimate"][k] == pytest.approx(theirs["estimate"], abs=3.0 * mc), term
        assert np.sqrt(pooled["total"][k]) == pytest.approx(theirs["std_error"], rel=0.10), term
    assert sds.mean() == pytest.approx(brms["sds"]["sd(t|patient)"]["mean"], rel=0.05)
    if site_sds.size:
        assert site_sds.mean() == pytest.approx(brms["sds"]["sd(site)"]["mean"], rel=0.05)


def test_rsl_imp_003_r_parity():
    """RSL-IMP-003: see the module docstring."""
    frame = pd.read_csv(REGISTRY).drop(columns=["visit"])
    res = impute(frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                 predictors=["x", "t", "treat"], random_slopes=["t"], m=60, iterations=5, seed=20261207)
    assert "random intercept and slopes on t (unstructured covariance), logistic" in res.models["x"]
    _r_parity("random_slope_binary_imputation.json", res)


def test_rsl_imp_008_r_parity_with_sites():
    """RSL-IMP-008: see the module docstring."""
    frame = pd.read_csv(RESULTS / "random_slope_binary_sites_registry.csv").drop(columns=["visit"])
    res = impute(frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                 predictors=["x", "t", "treat"], random_slopes=["t"], higher_levels=["site"], m=60, iterations=5,
                 seed=20261208)
    assert "random intercepts for the cluster and for 'site'" in res.models["x"]
    _r_parity("random_slope_binary_sites_imputation.json", res)


def test_rsl_imp_004_hard_data():
    """RSL-IMP-004: see the module docstring."""
    for slope_sd in (0.0, 1.0):
        patient, t, z, x, masked, _ = _trend_problem(seed=8, J=150, slope_sd=slope_sd)
        if slope_sd:
            x = (z > 0).astype(float)                   # z separates the finding completely
        obs = ~masked
        Do, Dp, _ = prepare_design(np.column_stack([t, z]), ["t", "z"], obs, masked)
        state: dict = {}
        rng = np.random.default_rng(2)
        for _ in range(5):
            values = random_slopes_logistic_draw(Do, x[obs], patient[obs], Dp, patient[masked], 150, rng,
                                                 random_columns=[0, 1], notes=set(), target="x", state=state)
            assert set(np.unique(values)) <= {0.0, 1.0}
        assert np.all(np.isfinite(state["beta"])) and np.all(np.isfinite(state["psi"]))
        assert np.abs(state["beta"]).max() < 40.0
    # patient 0 without recorded rows: its effects come from N(0, Psi)
    patient, t, z, x, masked, _ = _trend_problem(seed=10, J=120)
    obs = ~masked & (patient != 0)
    Do, Dp, _ = prepare_design(np.column_stack([t, z]), ["t", "z"], obs, ~obs)
    model = _Model(Do, x[obs], patient[obs], 120, np.array([0, 1]), None, 0)
    state = {}
    rng = np.random.default_rng(4)
    z0 = []
    for _ in range(2000):
        model.sweep(state, rng)
        z0.append(np.linalg.solve(np.linalg.cholesky(state["psi"]), state["b"][0]))
    z0 = np.array(z0)
    np.testing.assert_allclose(z0.mean(axis=0), 0.0, atol=0.15)
    np.testing.assert_allclose(np.cov(z0.T), np.eye(2), atol=0.15)
    with pytest.raises(ValueError, match="intercept"):
        random_slopes_logistic_draw(Do, x[obs], patient[obs], Dp, patient[~obs], 120, rng, random_columns=[1],
                                    notes=set(), target="x")


def test_rsl_imp_005_chain_state(monkeypatch):
    """RSL-IMP-005: see the module docstring."""
    patient, t, z, x, masked, _ = _trend_problem(seed=9, J=120)
    obs = ~masked
    Do, Dp, _ = prepare_design(np.column_stack([t, z]), ["t", "z"], obs, masked)
    sweeps = []
    original = slopes_logistic._Model.sweep

    def counted(self, state, rng):
        sweeps.append(self.p)
        original(self, state, rng)

    monkeypatch.setattr(slopes_logistic._Model, "sweep", counted)

    def call(state, seed, width=3):
        return random_slopes_logistic_draw(Do[:, :width], x[obs], patient[obs], Dp[:, :width], patient[masked], 120,
                                           np.random.default_rng(seed), random_columns=[0, 1], notes=set(),
                                           target="x", state=state)

    state: dict = {}
    first = call(state, 1)
    assert len(sweeps) == GIBBS_BURN_IN and state["b"].shape == (120, 2)
    call(state, 2)
    assert len(sweeps) == GIBBS_BURN_IN + GIBBS_SWEEPS
    # a design of another width (a column dropped) starts afresh
    call(state, 3, width=2)
    assert len(sweeps) == 2 * GIBBS_BURN_IN + GIBBS_SWEEPS and state["beta"].shape == (2,)
    np.testing.assert_array_equal(first, call({}, 1))


def test_rsl_imp_006_small_helpers():
    """RSL-IMP-006: see the module docstring."""
    rng = np.random.default_rng(5)
    for q in (1, 2, 3):
        A = rng.normal(size=(50, q, q))
        H = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(q)
        np.testing.assert_allclose(_inverse(H), np.linalg.inv(H), rtol=1e-10, atol=1e-12)
        L = np.linalg.cholesky(H)
        e = rng.normal(size=(50, q))
        np.testing.assert_allclose(_normal_given_precision(H, e),
                                   np.linalg.solve(np.swapaxes(L, 1, 2), e[..., None])[..., 0], rtol=1e-10, atol=1e-12)
    one = np.array([[[2.0, 0.6], [0.6, 1.0]]])
    draws = np.array([_normal_given_precision(one, rng.normal(size=(1, 2)))[0] for _ in range(20000)])
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(one[0]), atol=0.03)
    # the factor's prior: inverse-Wishart density of L L' plus log |d Psi / d L|, up to one constant
    a = np.array([0.7, 1.9])
    nu = slopes_logistic.PSI_PRIOR_DF
    free = np.tril_indices(2)

    def psi_of(theta):
        L = np.zeros((2, 2))
        L[free] = theta
        return L @ L.T

    gaps = []
    for _ in range(5):
        theta = rng.normal(size=3)
        theta[[0, 2]] = np.abs(theta[[0, 2]]) + 0.3
        L = np.zeros((2, 2))
        L[free] = theta
        jac = np.array([[(psi_of(theta + 1e-6 * e) - psi_of(theta - 1e-6 * e))[free] / 2e-6 for e in np.eye(3)]])[0]
        reference = (stats.invwishart(df=nu + 1, scale=np.diag(2.0 * nu / a)).logpdf(L @ L.T)
                     + np.log(abs(np.linalg.det(jac))))
        gaps.append(_log_prior_of_factor(L, a) - reference)
    np.testing.assert_allclose(gaps, gaps[0], atol=1e-6)


def test_rsl_imp_007_linear_step_with_sites():
    """RSL-IMP-007: see the module docstring."""
    rng = np.random.default_rng(12)
    K, J, q, n = 3, 9, 2, 90
    hc = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    co = np.sort(rng.integers(1, J, n))                 # patient 0 (site 0) has no rows
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    y = (rng.random(n) < 0.4).astype(float)
    omega = rng.uniform(0.1, 0.25, n)
    psi, omega2 = np.array([[0.6, 0.1], [0.1, 0.3]]), 0.5
    r = np.array([0, 1])
    model = _Model(X, y, co, J, r, hc, K)
    WX = model.weighted_sums(omega)
    # the dense normal posterior of (beta, v, b) given omega: z = kappa / omega with precisions omega
    Z = np.zeros((n, 3 + K + J * q))
    Z[:, :3] = X
    Z[np.arange(n), 3 + hc[co]] = 1.0
    for j in range(J):
        Z[co == j, 3 + K + q * j:3 + K + q * j + q] = X[co == j][:, r]
    P = Z.T @ (Z * omega[:, None])
    P[:3, :3] += model.prior_precision
    P[3:3 + K, 3:3 + K] += np.eye(K) / omega2
    for j in range(J):
        P[3 + K + q * j:3 + K + q * j + q, 3 + K + q * j:3 + K + q * j + q] += np.linalg.inv(psi)
    cov = np.linalg.inv(P)
    mean = cov @ (Z.T @ (y - 0.5))
    v = np.zeros(K)
    draws = []
    for _ in range(40_000):
        beta, v, b, _ = model.linear_step(omega, WX, psi, v, omega2, rng)
        draws.append(np.r_[beta, v, b.ravel()])
    draws = np.array(draws[500:])
    batches = draws[:len(draws) // 50 * 50].reshape(50, -1, draws.shape[1]).mean(axis=1)
    se = batches.std(axis=0, ddof=1) / np.sqrt(50)       # batch means: beta and v are drawn in turn, so correlated
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4.5 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.04 * np.abs(cov).max())
