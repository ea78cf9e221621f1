"""Random-slope logistic imputation (2l.bin with random slopes): :mod:`hmlib.stats.imputation.slopes_logistic`.

Truth by simulation: ``bench/random_slope_imputation_truth.py --binary``; speed:
``bench/bench_random_slope_imputation.py --binary``. R reference: ``tests/results/random_slope_binary_imputation.R``
(brms: the same imputation model, the missing values drawn from its posterior predictive distribution; mice's 2l.bin
with a random slope beside it for contrast).

Test IDs
--------
RSL-IMP-001  the patients' effects: each mode maximises the patient's log posterior ``sum log p(y | b) - b'Psi^-1 b /
             2`` (scipy's optimiser on one patient agrees to 1e-5), the precision is its negative Hessian (central
             differences), and a patient without recorded rows has mode 0 and precision Psi^-1
RSL-IMP-002  the effects are drawn given the patient's values: on data with strong patient trends, the imputed chance
             of the finding at masked visits (averaged over 30 draws) is closer to the true chance (mean squared
             distance; 200 patients x 20 visits, slope SD 1.5 per unit of t in -1..1) than under the
             random-intercept kernel (2l.bin; at most 0.85 of its distance) and than under draws of the effects from
             N(0, Psi) (mice 2l.bin's way; at most half)
RSL-IMP-003  R parity (random_slope_binary_registry.csv, 300 patients): the chained equations with random_slopes=[t]
             give pooled coefficients of lmer(y ~ t + x + treat + (1 + t | patient)) within 3.5 combined Monte Carlo
             SEs (+ 0.005) of brms's posterior imputations, SEs within 10%, the mean slope SD within 5%
RSL-IMP-004  fall-backs: a finding with no patient-specific trend (the slope SD near or at the boundary) imputes
             without error, 0/1 values only; the estimated covariance at the boundary (an SD at 0, singular) is
             made usable (eigenvalues floored, the effect kept at almost no variation); a model that cannot be
             fitted (one recorded value) falls back to the random-intercept draw with a note
RSL-IMP-006  the closed-form small solves (q = 1, 2; numpy for q = 3) equal numpy's batched solve, and the draws
             given a precision have covariance its inverse (the Cholesky factor's transpose solved)
RSL-IMP-007  with a site level above (visits in patients in sites): the joint modes of the sites' intercepts and the
             patients' effects maximise the joint log posterior (scipy agrees to 1e-5), the arrow-shaped curvature
             equals the dense Hessian (H_bb, H_bv, and each site's Schur precision = 1 / the v-diagonal of its
             inverse), and 40,000 draws of (v, b) have the dense inverse as covariance
RSL-IMP-008  R parity with a site level (random_slope_binary_sites_registry.csv, 300 patients in 30 sites): the chained
             equations with random_slopes=[t] and higher_levels=[site] give pooled coefficients of lmer(y ~ t + x +
             treat + (1 + t | patient) + (1 | site)) within 3.5 combined Monte Carlo SEs (+ 0.005) of brms's posterior
             predictive imputations with (1 + t | patient) + (1 | site), SEs within 10%, sd(site) and the slope SD
             within 5%
RSL-IMP-005  warm start: a chain's later fits start from its previous optimum and its patients' modes from their
             previous modes (stored per variable); a start of
             another design width is not used
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

from hmlib.stats.imputation import impute
from hmlib.stats.imputation.kernels import prepare_design, ri_logistic_draw
from hmlib.stats.imputation.slopes_logistic import (_estimate, _normal_given_precision, _solve, effects_draw,
                                                   random_slopes_logistic_draw, slope_effect_modes)
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


def test_rsl_imp_001_modes_and_precisions():
    """RSL-IMP-001: see the module docstring."""
    rng = np.random.default_rng(4)
    J, n = 6, 40
    co = np.sort(rng.integers(1, J, n))                  # cluster 0 has no rows
    W = np.column_stack([np.ones(n), rng.normal(size=n)])
    offset = rng.normal(size=n)
    y = (rng.random(n) < 0.5).astype(float)
    psi = np.array([[0.8, 0.2], [0.2, 0.5]])
    _, modes, precision, _, _ = slope_effect_modes(offset, y, co, W, J, psi)
    psi_inv = np.linalg.inv(psi)
    np.testing.assert_array_equal(modes[0], 0.0)
    np.testing.assert_allclose(precision[0], psi_inv)
    for j in range(1, J):
        rows = co == j

        def neg_log_post(b, rows=rows):
            eta = offset[rows] + W[rows] @ b
            return -(np.sum(y[rows] * eta - np.logaddexp(0.0, eta)) - 0.5 * b @ psi_inv @ b)

        best = optimize.minimize(neg_log_post, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(modes[j], best, atol=1e-5)
        h = 1e-4
        hess = np.array([[(neg_log_post(modes[j] + h * (e1 + e2)) - neg_log_post(modes[j] + h * (e1 - e2))
                           - neg_log_post(modes[j] - h * (e1 - e2)) + neg_log_post(modes[j] - h * (e1 + e2)))
                          / (4 * h * h) for e2 in np.eye(2)] for e1 in np.eye(2)])
        np.testing.assert_allclose(precision[j], hess, rtol=1e-4)


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
        assert pooled["estimate"][k] == pytest.approx(theirs["estimate"], abs=3.5 * mc + 0.005), term
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


def test_rsl_imp_004_fallbacks():
    """RSL-IMP-004: see the module docstring."""
    patient, t, z, x, masked, _ = _trend_problem(seed=8, J=150, slope_sd=0.0)
    obs = ~masked
    Do, Dp, _ = prepare_design(np.column_stack([t, z]), ["t", "z"], obs, masked)
    notes: set = set()
    rng = np.random.default_rng(2)
    for _ in range(5):
        values = random_slopes_logistic_draw(Do, x[obs], patient[obs], Dp, patient[masked], 150, rng,
                                             random_columns=[0, 1], notes=notes, target="x")
        assert set(np.unique(values)) <= {0.0, 1.0}
    singular = SimpleNamespace(covariance=np.array([[1.0, 0.0], [0.0, 0.0]]))
    floored = _estimate(singular)
    assert np.linalg.eigvalsh(floored)[0] == pytest.approx(1e-8) and floored[0, 0] == pytest.approx(1.0)
    # one recorded value: no model can be fitted; the random-intercept draw (and its own fall-back) takes over
    few = np.zeros(obs.size, dtype=bool)
    few[0] = True
    notes = set()
    design = np.column_stack([np.ones(t.size), t, z])
    values = random_slopes_logistic_draw(design[few], x[few], patient[few], design[~few], patient[~few], 150, rng,
                                         random_columns=[0, 1], notes=notes, target="x")
    assert set(np.unique(values)) <= {0.0, 1.0}
    assert any("could not be fitted" in n and "random-intercept logistic" in n for n in notes), notes


def test_rsl_imp_005_warm_start():
    """RSL-IMP-005: see the module docstring."""
    patient, t, z, x, masked, _ = _trend_problem(seed=9, J=120)
    obs = ~masked
    Do, Dp, _ = prepare_design(np.column_stack([t, z]), ["t", "z"], obs, masked)
    state: dict = {}
    rng = np.random.default_rng(3)
    random_slopes_logistic_draw(Do, x[obs], patient[obs], Dp, patient[masked], 120, rng, random_columns=[0, 1],
                                notes=set(), target="x", state=state)
    width, columns, nested, optimum = state["slopes_start"]
    assert width == Do.shape[1] and columns == (0, 1) and np.all(np.isfinite(optimum)) and not nested
    assert state["slopes_modes"][1].shape == (120, 2)
    offset, psi = Do @ np.array([0.1, 0.2, 0.3]), np.array([[1.0, 0.2], [0.2, 0.5]])
    cold_modes = slope_effect_modes(offset, x[obs], patient[obs], Do[:, :2], 120, psi)[1]
    warm_modes = slope_effect_modes(offset, x[obs], patient[obs], Do[:, :2], 120, psi, start=state["slopes_modes"])[1]
    np.testing.assert_allclose(warm_modes, cold_modes, atol=1e-8)
    cold = fit_mixed(x[obs], Do, RandomEffects((RandomLevel("c", patient[obs], slopes={"s1": Do[:, 1]}),)),
                     family="binomial")
    warm = fit_mixed(x[obs], Do, RandomEffects((RandomLevel("c", patient[obs], slopes={"s1": Do[:, 1]}),)),
                     family="binomial", start=optimum)
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-5)
    # a design of another width (a column dropped) starts afresh instead of from a start of the wrong shape
    values = random_slopes_logistic_draw(Do[:, :2], x[obs], patient[obs], Dp[:, :2], patient[masked], 120, rng,
                                         random_columns=[0, 1], notes=set(), target="x", state=state)
    assert set(np.unique(values)) <= {0.0, 1.0} and state["slopes_start"][0] == 2


def test_rsl_imp_006_small_solves():
    """RSL-IMP-006: see the module docstring."""
    rng = np.random.default_rng(5)
    for q in (1, 2, 3):
        A = rng.normal(size=(50, q, q))
        H = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(q)
        g = rng.normal(size=(50, q))
        np.testing.assert_allclose(_solve(H, g), np.linalg.solve(H, g[..., None])[..., 0], rtol=1e-10, atol=1e-12)
        L = np.linalg.cholesky(H)
        e = rng.normal(size=(50, q))
        np.testing.assert_allclose(_normal_given_precision(H, e),
                                   np.linalg.solve(np.swapaxes(L, 1, 2), e[..., None])[..., 0], rtol=1e-10, atol=1e-12)
    one = np.array([[[2.0, 0.6], [0.6, 1.0]]])
    draws = np.array([_normal_given_precision(one, rng.normal(size=(1, 2)))[0] for _ in range(20000)])
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(one[0]), atol=0.03)


def test_rsl_imp_007_site_level_modes_curvature_and_draws():
    """RSL-IMP-007: see the module docstring."""
    rng = np.random.default_rng(12)
    K, J, q, n = 3, 9, 2, 90
    hc = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    co = np.sort(rng.integers(1, J, n))                 # patient 0 (site 0) has no rows
    W = np.column_stack([np.ones(n), rng.normal(size=n)])
    offset = 0.3 * rng.normal(size=n)
    y = (rng.random(n) < special.expit(offset + np.array([0.8, -0.5, 0.2])[hc[co]])).astype(float)
    psi, omega2 = np.array([[0.6, 0.1], [0.1, 0.3]]), 0.5
    psi_inv = np.linalg.inv(psi)
    v, b, H_bb, H_bv, schur = slope_effect_modes(offset, y, co, W, J, psi, hc=hc, K=K, omega2=omega2)

    def neg_log_post(theta):
        vv, bb = theta[:K], theta[K:].reshape(J, q)
        eta = offset + vv[hc[co]] + np.einsum("ik,ik->i", W, bb[co])
        return -(np.sum(y * eta - np.logaddexp(0.0, eta)) - 0.5 * np.einsum("jk,kl,jl->", bb, psi_inv, bb)
                 - 0.5 * vv @ vv / omega2)

    best = optimize.minimize(neg_log_post, np.zeros(K + J * q), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(np.r_[v, b.ravel()], best, atol=1e-5)
    np.testing.assert_allclose(b[0], 0.0, atol=1e-12)
    # the dense precision over (v, b) at the mode
    Z = np.zeros((n, K + J * q))
    Z[np.arange(n), hc[co]] = 1.0
    for j in range(J):
        Z[co == j, K + q * j:K + q * j + q] = W[co == j]
    prob = special.expit(Z @ np.r_[v, b.ravel()] + offset)
    P = Z.T @ (Z * (prob * (1 - prob))[:, None])
    P[:K, :K] += np.eye(K) / omega2
    for j in range(J):
        P[K + q * j:K + q * j + q, K + q * j:K + q * j + q] += psi_inv
    for j in range(J):
        np.testing.assert_allclose(H_bb[j], P[K + q * j:K + q * j + q, K + q * j:K + q * j + q], rtol=1e-10)
        np.testing.assert_allclose(H_bv[j], P[K + q * j:K + q * j + q, hc[j]], rtol=1e-10, atol=1e-14)
    cov = np.linalg.inv(P)
    np.testing.assert_allclose(schur, 1.0 / np.diag(cov)[:K], rtol=1e-10)
    draws = np.array([np.r_[vv, bb.ravel()] for vv, bb in
                      (effects_draw(v, b, H_bb, H_bv, schur, hc, rng) for _ in range(40_000))])
    np.testing.assert_allclose(draws.mean(axis=0), np.r_[v, b.ravel()], atol=4.5 * np.sqrt(np.diag(cov).max() / 40_000))
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.03 * np.abs(cov).max())
