"""The joint Bayesian model (hmlib.stats.joint, step hmlib.steps.joint_model): likelihood, scale, gate, brms,
truth, artifact.

Reference numbers: brms's ``mi()`` joint model on ``tests/results/sim_registry.csv``
in ``tests/results/r_methods_sim_registry.json`` (made by that folder's R
script; ``bench/brms_joint.R`` is the brms call alone, not run here since R is
not installed). ``bench/bench_joint.py`` runs the full comparison over several
seeds and the speed benchmark; ``bench/joint_truth.py`` the truth study.

Test IDs
--------
JOINT-MARG-001   summed-out binary predictors = brute-force enumeration of every completion, with and
                 without a random slope (in the outcome and the binary submodels)
JOINT-MARG-002   integrated-out focus (Gauss-Hermite) = adaptive numerical integration (scipy), binomial
                 and gaussian outcome, normal and lognormal focus, with a missing binary in the same rows
JOINT-MARG-003   the automatic node count is within its stated log-likelihood tolerance
JOINT-SCALE-001  original-scale coefficients give the same linear predictor as the standardised ones
JOINT-SCALE-002  estimates reported on the original scale: posterior means match ML on complete data
JOINT-GATE-001   the convergence gate names each offender (unit) and flags a 20-draw run
JOINT-EXT-001    a short first run that misses the gate is extended automatically until it passes, and says so
JOINT-EXT-002    a budget too small for an extension: flagged, and the message says why it was not extended
JOINT-EXT-003    a run that misses the gate with divergences is followed by the non-centred model, once, at the
                 first run's sizes; explicit choices are kept; the message says why
JOINT-BRMS-001   close to brms with brms's own default priors (within 0.2 posterior SD; 5 brms seeds)
JOINT-BRMS-002   lactate coefficient and site SD agree with brms given the same priors, within 3 MC SEs
JOINT-BRMS-003   the nested model (country, hospital in country): x, sd(country) and sd(hospital) agree with
                 brms given the same priors, within 3 MC SEs, posterior SDs within 10%
JOINT-FIT-001    contract rows, partial pooling, PPC, never-measured clusters, correlation, narrative
JOINT-DICT-001   the step's artifact is JSON-ready and holds no patient-level rows
JOINT-DICT-002   the artifact suppresses small per-cluster counts and the observed means derived from them
JOINT-ART-001    the typed artifact round-trips (write then read gives the same record), typed rows included
JOINT-ART-002    an artifact row with a renamed or missing field is refused (ArtifactError naming it)
JOINT-TRUTH-001  the truth study runs (tiny version) and recovers the truth roughly
JOINT-PRIOR-001  priors table, overrides, bad priors
JOINT-PRIOR-002  the (slope, resid) coordinates of the correlated effects keep the stated priors
JOINT-PRIOR-003  the outcome-on-missingness order (missingness centred, outcome not) is the same model as the
                 usual order: equal log densities in common coordinates (u, w, tau_y, tau_r, rho) at random points
JOINT-DIST-001   the normal/lognormal rule and its override
JOINT-ERR-001    data the model cannot take raise FitError naming the problem
JOINT-FIG-001    each figure draws what it says
JOINT-EDGE-001   no complete predictor: the submodels' fixed parts still have one value per row
JOINT-RW-001     reweighting to another cluster-SD prior recovers the exact posterior (numerical integration)
JOINT-RW-002     same prior: equal weights, the fit's own summary; save/load round trip; fingerprint check
JOINT-RW-003     a prior far from the posterior is flagged unreliable (Pareto k above threshold)
JOINT-RW-004     a real fit's draws: every cluster SD is kept, on the model's scale, no data row saved
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytensor.tensor as pt
import pytest
from scipy import integrate, special, stats

from conftest import REFERENCE, load_bench
from hmlib.exceptions import ArtifactError, FitError
from hmlib.figures import joint_model as joint_figures
from hmlib.figures.style import caption_of
from hmlib.results import ESTIMATE_COLUMNS
from hmlib.stats import joint as jm
from hmlib.stats.joint import imputations as joint_imputations
from hmlib.stats.joint import parameterisation as joint_parameterisation
from hmlib.stats.joint import priors as joint_priors
from hmlib.stats.joint import summaries as joint_summaries
from hmlib.steps.joint_model import JointModelArtifact, JointSettings, JointStepResult, PartialPoolingRow, fit_registry




joint_truth = load_bench("joint_truth")


# --------------------------------------------------------------------------
# helpers: evaluate the model's likelihood terms at a random point
# --------------------------------------------------------------------------
def _likelihood_at_random_point(model, names, seed):
    """(sum of observed log-likelihoods and potentials, {name: constrained value}) at a random point."""
    rng = np.random.default_rng(seed)
    lik = model.logp(vars=model.observed_RVs)
    if model.potentials:
        lik = lik + pt.add(*model.potentials) if len(model.potentials) > 1 else lik + model.potentials[0]
    outputs = model.replace_rvs_by_values([lik] + [model[n] for n in names])
    # FAST_COMPILE: a Python-evaluated graph; numba's compile would dominate these tiny evaluations
    fn = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore", mode="FAST_COMPILE")
    start = model.initial_point(random_seed=seed)
    point = {k: v + rng.normal(0, 0.7, size=np.shape(v)) for k, v in start.items()}
    out = fn(point)
    return float(out[0]), {n: np.asarray(v, dtype=float) for n, v in zip(names, out[1:])}


def _tiny_frame(seed=0, family="binomial", lognormal=False):
    """Three clusters, a complete numeric z, an incomplete binary b1, b2 and an incomplete x."""
    rng = np.random.default_rng(seed)
    n = 15
    site = np.repeat(["a", "b", "c"], 5)
    z = rng.normal(size=n)
    x = np.exp(rng.normal(0.5, 0.6, n)) if lognormal else rng.normal(2, 1, n)
    x[[1, 4, 7, 12]] = np.nan
    b1 = rng.integers(0, 2, n).astype(float)
    b1[[0, 4, 9]] = np.nan           # row 4: x and b1 missing together
    b2 = rng.integers(0, 2, n).astype(float)
    b2[[9, 13]] = np.nan             # row 9: b1 and b2 missing together
    y = rng.integers(0, 2, n).astype(float) if family == "binomial" else rng.normal(5, 2, n)
    return pd.DataFrame({"site": site, "z": z, "x": x, "b1": b1, "b2": b2, "y": y})


def _std(values):
    present = values[np.isfinite(values)]
    return (values - present.mean()) / present.std()


# --------------------------------------------------------------------------
# JOINT-MARG
# --------------------------------------------------------------------------
@pytest.mark.parametrize("family,slopes", [("binomial", False), ("gaussian", False), ("binomial", True),
                                           ("gaussian", True)])
def test_marg_001_binary_sum_equals_enumeration(family, slopes):
    """JOINT-MARG-001: log sum over every joint completion of the missing binaries = the model's likelihood;
    with a random slope on z, each cluster's slope in the outcome and in both binary submodels (issue #16)."""
    frame = _tiny_frame(1, family)
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "b1", "b2"], cluster="site",
                                 family=family, missingness_model=False, random_slopes=["z"] if slopes else ())
    model = jm.build_joint_model(data)
    names = ["outcome_intercept", "outcome_coef", "outcome_cluster", "b0_intercept", "b0_coef", "b0_cluster",
             "b1_intercept", "b1_coef", "b1_cluster"] + (["outcome_sigma"] if family == "gaussian" else []) + \
        (["outcome_cluster_slopes", "b0_cluster_slopes", "b1_cluster_slopes"] if slopes else [])
    for seed in (1, 2):
        model_value, p = _likelihood_at_random_point(model, names, seed)
        codes = pd.factorize(frame["site"], sort=True)[0]
        zs = _std(frame["z"].to_numpy())
        y = frame["y"].to_numpy()
        ys = (y - y.mean()) / y.std() if family == "gaussian" else y
        b_values = [frame["b1"].to_numpy(), frame["b2"].to_numpy()]
        missing = [(k, i) for k in range(2) for i in np.flatnonzero(np.isnan(b_values[k]))]
        terms = []
        for completion in itertools.product((0.0, 1.0), repeat=len(missing)):
            filled = [v.copy() for v in b_values]
            for (k, i), c in zip(missing, completion):
                filled[k][i] = c
            total = 0.0
            for k in range(2):
                eta_b = p[f"b{k}_intercept"] + p[f"b{k}_coef"][0] * zs + p[f"b{k}_cluster"][codes]
                if slopes:
                    eta_b = eta_b + p[f"b{k}_cluster_slopes"][codes, 0] * zs
                total += np.sum(stats.bernoulli.logpmf(filled[k], special.expit(eta_b)))
            eta = (p["outcome_intercept"] + p["outcome_coef"][0] * zs + p["outcome_coef"][1] * filled[0]
                   + p["outcome_coef"][2] * filled[1] + p["outcome_cluster"][codes])
            if slopes:
                eta = eta + p["outcome_cluster_slopes"][codes, 0] * zs
            if family == "binomial":
                total += np.sum(stats.bernoulli.logpmf(ys, special.expit(eta)))
            else:
                total += np.sum(stats.norm.logpdf(ys, eta, p["outcome_sigma"]))
            terms.append(total)
        assert model_value == pytest.approx(special.logsumexp(terms), abs=1e-8)


@pytest.mark.parametrize("family,lognormal", [("binomial", False), ("binomial", True), ("gaussian", False),
                                              ("gaussian", True)])
def test_marg_002_quadrature_equals_numerical_integral(family, lognormal):
    """JOINT-MARG-002: Gauss-Hermite (or closed form) focus integral = scipy.integrate.quad, row by row."""
    frame = _tiny_frame(2, family, lognormal)
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "x", "b1"], cluster="site",
                                 family=family, focus="x", missingness_model=False,
                                 distributions={"x": "lognormal" if lognormal else "normal"})
    model = jm.build_joint_model(data, quadrature_nodes=40)
    names = ["outcome_intercept", "outcome_coef", "outcome_cluster", "x0_intercept", "x0_coef", "x0_cluster",
             "x0_sigma", "b0_intercept", "b0_coef", "b0_cluster"] + \
        (["outcome_sigma"] if family == "gaussian" else [])
    model_value, p = _likelihood_at_random_point(model, names, 3)

    codes = pd.factorize(frame["site"], sort=True)[0]
    zs = _std(frame["z"].to_numpy())
    x = frame["x"].to_numpy()
    sub = np.log(x) if lognormal else x
    sub_s = _std(sub)
    x_centre, x_scale = np.nanmean(x), np.nanstd(x)
    sub_centre, sub_scale = np.nanmean(sub), np.nanstd(sub)
    b1 = frame["b1"].to_numpy()
    y = frame["y"].to_numpy()
    ys = (y - y.mean()) / y.std() if family == "gaussian" else y
    mu_x = p["x0_intercept"] + p["x0_coef"][0] * zs + p["x0_cluster"][codes]
    p_b = special.expit(p["b0_intercept"] + p["b0_coef"][0] * zs + p["b0_cluster"][codes])
    total = np.sum(stats.norm.logpdf(sub_s[np.isfinite(x)], mu_x[np.isfinite(x)], p["x0_sigma"]))
    total += np.sum(stats.bernoulli.logpmf(b1[np.isfinite(b1)], p_b[np.isfinite(b1)]))
    b_out = p["outcome_coef"]   # order: z, x, b1

    def lik_y(i, x_orig, b_val):
        eta = (p["outcome_intercept"] + b_out[0] * zs[i] + b_out[1] * (x_orig - x_centre) / x_scale
               + b_out[2] * b_val + p["outcome_cluster"][codes[i]])
        if family == "binomial":
            return special.expit(eta) if ys[i] == 1 else special.expit(-eta)
        return stats.norm.pdf(ys[i], eta, p["outcome_sigma"])

    for i in range(len(frame)):
        b_states = [(b1[i], 1.0)] if np.isfinite(b1[i]) else [(0.0, 1 - p_b[i]), (1.0, p_b[i])]
        row = 0.0
        for b_val, b_weight in b_states:
            if np.isfinite(x[i]):
                row += b_weight * lik_y(i, x[i], b_val)
            else:
                def integrand(s, b_val=b_val):
                    raw = s * sub_scale + sub_centre
                    raw = math.exp(raw) if lognormal else raw
                    return stats.norm.pdf(s, mu_x[i], p["x0_sigma"]) * lik_y(i, raw, b_val)
                lo, hi = mu_x[i] - 12 * p["x0_sigma"], mu_x[i] + 12 * p["x0_sigma"]
                row += b_weight * integrate.quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-11, limit=200)[0]
        total += math.log(row)
    assert model_value == pytest.approx(total, abs=1e-7)


def test_marg_003_automatic_nodes_within_tolerance():
    """JOINT-MARG-003: on the reference registry the chosen node count meets the tolerance against 64 nodes."""
    frame = pd.read_csv(REFERENCE / "sim_registry.csv")
    data = jm.prepare_joint_data(frame, outcome="outcome", predictors=["age", "severity", "lactate"],
                                 cluster="site", family="binomial", missingness_model=False)
    fits = joint_parameterisation.ml_fits(data)
    nodes, error = joint_parameterisation.choose_quadrature_nodes(data, fits)
    assert nodes in jm.QUADRATURE_CANDIDATES and error < jm.QUADRATURE_TOLERANCE
    # and the model's likelihood with those nodes is that close to 64 nodes at a random point
    values = [_likelihood_at_random_point(jm.build_joint_model(data, quadrature_nodes=k), [], 5)[0]
              for k in (nodes, 64)]
    assert abs(values[0] - values[1]) < jm.QUADRATURE_TOLERANCE


# --------------------------------------------------------------------------
# JOINT-SCALE
# --------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["binomial", "gaussian"])
def test_scale_001_original_scale_same_linear_predictor(family):
    """JOINT-SCALE-001: a + Xs b (standardised) = Intercept + X beta (original), draw by draw."""
    rng = np.random.default_rng(4)
    n = 60
    frame = pd.DataFrame({
        "site": rng.integers(0, 5, n), "age": rng.normal(60, 15, n), "sex": rng.choice(["f", "m"], n),
        "lab": np.where(rng.random(n) < 0.3, np.nan, rng.normal(3, 1.2, n)),
        "flag": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 2, n)),
        "y": rng.integers(0, 2, n) if family == "binomial" else rng.normal(100, 20, n)})
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["age", "sex", "lab", "flag"], cluster="site",
                                 family=family, levels={"sex": ["f", "m"]})
    assert data.outcome_terms == ("age", "sex[m]", "lab", "flag")
    draws = 7
    a, b = rng.normal(size=draws), rng.normal(size=(draws, 4))
    sd, sigma = np.abs(rng.normal(size=draws)), np.abs(rng.normal(size=draws))
    orig = jm.outcome_to_original_scale(data, a, b, sd, sigma if family == "gaussian" else None)
    rows = data.focus_variable.observed & data.binaries[0].observed
    raw = frame.loc[rows]
    X = np.column_stack([raw["age"], (raw["sex"] == "m").astype(float), raw["lab"], raw["flag"]])
    lab = frame["lab"].to_numpy()
    Xs = np.column_stack([(raw["age"] - frame["age"].mean()) / frame["age"].std(ddof=0),
                          X[:, 1], (raw["lab"] - np.nanmean(lab)) / np.nanstd(lab), X[:, 3]])
    eta_std = a[:, None] + b @ Xs.T
    beta = np.column_stack([orig[t] for t in data.outcome_terms])
    eta_orig = orig["Intercept"][:, None] + beta @ X.T
    if family == "gaussian":
        y = frame["y"].to_numpy()
        eta_std = y.mean() + y.std() * eta_std
        assert np.allclose(orig["sigma"], sigma * y.std())
        assert np.allclose(orig["sd(site)"], sd * y.std())
    else:
        assert np.allclose(orig["sd(site)"], sd)
    assert np.allclose(eta_std, eta_orig, atol=1e-9)


def test_scale_002_complete_data_matches_ml():
    """JOINT-SCALE-002: with no missing value, posterior means ~ lme4-equivalent ML (hmlib.stats.mixed), original scale."""
    from hmlib.stats.design import fit_analysis_model

    frame = joint_truth.simulate(11, n_sites=12, n_patients=1000)
    frame["lactate"] = frame["lactate"].fillna(2.7)     # complete data: the model is then the analysis model
    result = jm.fit_joint_model(frame, outcome="outcome", predictors=["age", "severity", "lactate"],
                                cluster="site", family="binomial", seed=3, fast=True)
    ml = fit_analysis_model(frame, outcome="outcome", predictors=["age", "severity", "lactate"], cluster="site",
                            family="binomial").to_frame().set_index("term")
    est = result.to_estimates().set_index("term")
    for term in ("Intercept", "age", "severity", "lactate"):
        # weak priors, 1,000 patients: the posterior mean sits within a fifth of a posterior SD of the MLE
        assert abs(est.loc[term, "estimate"] - ml.loc[term, "estimate"]) < 0.2 * est.loc[term, "std_error"]
        assert est.loc[term, "std_error"] == pytest.approx(ml.loc[term, "std_error"], rel=0.15)
    assert result.correlation is None and not result.settings["missingness_model"]


# --------------------------------------------------------------------------
# JOINT-GATE
# --------------------------------------------------------------------------
def test_gate_001_unit_messages():
    """JOINT-GATE-001 (unit): each failing criterion is named with its value; a clean table passes."""
    table = pd.DataFrame({"term": ["lactate", "sd(site)"], "rhat": [1.002, 1.05],
                          "ess_bulk": [900.0, 120.0], "ess_tail": [350.0, 800.0]})
    ok, message = joint_summaries.gate_message(table, divergences=3, settings_hint="Run longer.")
    assert not ok and message.startswith("not converged: ")
    assert "lactate (tail ESS 350 < 400)" in message
    assert "sd(site) (R-hat 1.050 > 1.01, bulk ESS 120 < 400)" in message
    assert "3 divergent transition(s)" in message
    clean = table.assign(rhat=1.001, ess_bulk=1000.0, ess_tail=1000.0)
    ok, message = joint_summaries.gate_message(clean, divergences=0, settings_hint="")
    assert ok and message.startswith("converged: ")


def test_gate_001_flags_short_run(write_case):
    """JOINT-GATE-001: 20 draws per chain cannot pass the gate; the registry path supplies seed and model."""
    from hmlib.data import load_registry
    from hmlib.params import load_params

    registry = load_registry(load_params(write_case()))
    result = fit_registry(registry, draws=20, tune=20)
    assert not result.converged
    assert result.convergence_message.startswith("not converged: ")
    named = [t for t in result.summary["term"] if f"{t} (" in result.convergence_message]
    assert named, result.convergence_message
    assert result.settings["seed"] == 3 and result.data.focus == "lab"
    assert "not converged" in " ".join(result.narrative())


def test_ext_001_short_run_is_extended_until_it_passes(write_case, tmp_path):
    """JOINT-EXT-001: 200 draws after 200 warm-up iterations miss the gate; with a time budget the chains are
    continued (250, 300, 350, 400 draws) and then, if needed, new runs with doubled sizes are made until the gate passes.
    The case is small_registry's gaussian outcome, whose site SD 25 patients per site identify: on its binary outcome
    (estimated sd(site) 0.25 from 12 sites) sd(site) kept a tail ESS of 70 after the three runs' 1600 draws on the CI
    machine, a case for checking the model rather than for testing the extension. Here, at sampling seeds 3-8, all six
    passed: three at the second run's 600-700 draws, three after runs of the non-centred fall-back (smallest ESS
    406-910); seed 4 passed at 600 draws of the second run. Sizes are checked run by run against each model's own
    doubling, as the chains' paths differ between processes (README) and a run with a divergence may bring in the
    fall-back.
    Every run is recorded with its seed, checkpoints and work (each chain's leapfrog steps, seconds per gradient),
    the reported sizes are the last run's last checkpoint, and the message, the narrative, the artifact, the
    methods paragraph and the runner's note say what was done.
    The reported fit is reproduced by its run's sizes and seed given explicitly (a continued run truncated at a
    checkpoint equals a plain run of that many draws: hmlib.stats.joint.sampling)."""
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from types import SimpleNamespace

    from hmlib.simulate.registries import small_registry
    from hmlib.stats.joint.sampling import CONTINUATIONS
    from hmlib.steps.joint_model import STEP

    case = write_case(small_registry(family="gaussian"), outcome="score", outcome_family="gaussian", seed=4,
                      joint_model={"time_budget_minutes": 10})
    registry = load_registry(load_params(case))
    assert registry.params.joint_model.time_budget_minutes == 10.0
    result = fit_registry(registry, draws=200, tune=200, time_budget_minutes=10)
    runs = result.settings["attempts"]
    assert result.converged, result.convergence_message
    assert runs[0]["checkpoints"][0] == 200 and not runs[-1]["checkpoints"] == [200]
    assert runs[-1]["converged"] and not any(r["converged"] for r in runs[:-1])
    for k, r in enumerate(runs):
        same_model = [q for q in runs[:k] if q["fallback"] == r["fallback"]]
        base = 2 * same_model[-1]["tune"] if same_model else 200
        assert r["tune"] == base and r["checkpoints"] == [int(round(base * f)) for f in CONTINUATIONS][:len(r["checkpoints"])]
        assert r["draws"] == r["checkpoints"][-1]
    assert result.settings["extensions"] == sum(len(r["checkpoints"]) - 1 for r in runs) + len(runs) - 1 >= 1
    assert runs[0]["seed"] == 4 and len({r["seed"] for r in runs}) == len(runs)
    for r in runs:   # the sampler's work (hmlib.stats.joint.sampling._effort): a chain's counted steps fit in its run
        assert len(r["leapfrog_warmup"]) == len(r["leapfrog_per_draw"]) == 2 and r["max_depth_draws"] >= 0
        for warm, per_draw in zip(r["leapfrog_warmup"], r["leapfrog_per_draw"]):
            assert warm >= r["tune"] and per_draw >= 1
            assert 0 < (warm + r["draws"] * per_draw) * r["seconds_per_gradient"] <= r["seconds"]
    assert (result.settings["draws"], result.settings["tune"]) == (runs[-1]["draws"], runs[-1]["tune"])
    last = f"{runs[-1]['draws']} draws after {runs[-1]['tune']} warm-up iterations per chain"
    assert "extended automatically" in result.convergence_message and last in result.convergence_message
    assert any("extended automatically" in s for s in result.narrative())
    record = JointStepResult(result, min_cell=11).to_artifact()
    assert record.settings.extensions == result.settings["extensions"]
    assert record.settings.attempts[-1].draws == runs[-1]["draws"]
    assert list(record.settings.attempts[-1].checkpoints) == runs[-1]["checkpoints"]
    assert record.settings.attempts[-1].seconds_per_gradient == runs[-1]["seconds_per_gradient"]
    assert "extended" in record.notice() and record.alert() is None
    paragraph = " ".join(STEP.methods_text(record, SimpleNamespace(noun="site", min_cell=11, versions={})))
    assert "extended automatically" in paragraph and last in paragraph
    again = fit_registry(registry, draws=runs[-1]["draws"], tune=runs[-1]["tune"], seed=runs[-1]["seed"],
                         time_budget_minutes=0,
                         parameterisation=result.settings["parameterisation"] if runs[-1]["fallback"] else None)
    assert again.settings["extensions"] == 0
    pd.testing.assert_frame_equal(again.summary, result.summary)


def test_ext_002_budget_too_small_is_flagged_and_says_so(write_case):
    """JOINT-EXT-002: with a budget of 0.01 minutes no extension fits: the fit is flagged not converged, and the
    message says it was not extended because the next run would exceed the budget, and which setting to raise."""
    from hmlib.data import load_registry
    from hmlib.params import load_params

    registry = load_registry(load_params(write_case()))
    result = fit_registry(registry, draws=100, tune=100, time_budget_minutes=0.01)
    assert not result.converged and result.settings["extensions"] == 0
    message = result.convergence_message
    assert message.startswith("not converged: ")
    assert "Not extended further: more sampling" in message and "time budget of 0.01 minutes" in message
    assert "joint_model.time_budget_minutes" in message
    record = JointStepResult(result, min_cell=11).to_artifact()
    assert record.notice() is None and "time budget" in record.alert()


def test_ext_003_divergences_switch_to_the_non_centred_model(monkeypatch):
    """JOINT-EXT-003: the loop of hmlib.stats.joint.sampling with a stand-in for one nutpie run (the geometry
    itself is the nested truth study's, bench/joint_nested_truth.py --fallback): a run of the chosen model that
    ends with divergences is followed by a run of the fall-back model at the first run's sizes (not a longer run
    of the same model), at most once; runs without divergences double as before; every run records its
    divergences and whether it was the fall-back; the message says what was done and why. The fall-back keeps
    the choices given explicitly and switches every other centred one (None when nothing is left to switch)."""
    import time
    from types import SimpleNamespace

    from hmlib.stats.joint import sampling
    from hmlib.stats.joint.parameterisation import fallback_parameterisation

    def fake_run(compiled, summarise, checkpoints, *, tune, seed, **_):
        ok = compiled == "non-centred" and tune >= 200       # the fall-back model passes at its second run
        n = checkpoints[-1]
        record = {"draws": n, "tune": tune, "seed": seed, "seconds": 1.0, "converged": ok, "checkpoints": checkpoints}
        return (None, {}, 0 if compiled == "non-centred" else 7, None), record, 0.01

    monkeypatch.setattr(sampling, "_run", fake_run)
    calls = []
    fallback = lambda: calls.append(1) or "non-centred"           # noqa: E731
    runs = sampling.sample_until_gate("centred", None, draws=100, tune=100, chains=2, cores=None, seed=5,
                                      adaptation="diag", budget_s=600.0, start_wall=time.perf_counter(), fallback=fallback)[-1]
    assert len(calls) == 1
    assert [(r["tune"], r["fallback"], r["divergences"], r["converged"]) for r in runs] == [
        (100, False, 7, False), (100, True, 0, False), (200, True, 0, True)]
    assert len({r["seed"] for r in runs}) == 3
    text = sampling.extension_text(runs, 600.0)
    assert "as that run ended with 7 divergent transition(s), a new run of the model with every level's effects " \
           "non-centred (100 warm-up iterations)" in text
    # without a fall-back (or when it has nothing to switch) the same model's runs double, up to MAX_RUNS
    for fb in (None, lambda: None):
        runs = sampling.sample_until_gate("centred", None, draws=100, tune=100, chains=2, cores=None, seed=5,
                                          adaptation="diag", budget_s=600.0,
                                          start_wall=time.perf_counter(), fallback=fb)[-1]
        assert [r["tune"] for r in runs] == [100, 200, 400][:sampling.MAX_RUNS] and not any(r["fallback"] for r in runs)
        assert "the limit of 3 runs, each continued" in sampling.extension_hint(runs, fast=False, budget_s=600.0,
                                                                                elapsed_s=1.0)
    data = SimpleNamespace(submodel_key=lambda name: {"x": "x0"}.get(name, name))
    choice = {"outcome": "noncentred", "outcome@above": "centred", "x0": "centred", "x0@above": "centred"}
    assert fallback_parameterisation(data, choice, {"x": "centred"}) == {
        "outcome": "noncentred", "outcome@above": "noncentred", "x0": "centred", "x0@above": "noncentred"}
    assert fallback_parameterisation(data, {k: "noncentred" for k in choice}, None) is None


def test_ext_004_a_fall_back_that_diverges_no_less_is_given_up(monkeypatch):
    """JOINT-EXT-004: the loop of hmlib.stats.joint.sampling with a stand-in for one nutpie run, in the case met on
    a gaussian outcome with 25 patients in each of 12 sites (sampling.py docstring): the chosen model's second run
    ends with 1 divergent transition in 400 draws per chain, the fall-back's run (first run's sizes) with 4 in 200;
    the fall-back is given up and the chosen model's third run (400 warm-up iterations) is made and reported. The
    message says why. A fall-back that diverges less often is kept (JOINT-EXT-003), and with no run of the chosen
    model left, the fall-back's run is the last and is reported as such."""
    import time

    from hmlib.stats.joint import sampling

    def fake_run(compiled, summarise, checkpoints, *, tune, seed, **_):
        n = checkpoints[-1]
        divergences = {("centred", 100): 0, ("centred", 200): 1, ("non-centred", 100): 4}.get((compiled, tune), 0)
        ok = compiled == "centred" and tune == 400
        record = {"draws": n, "tune": tune, "seed": seed, "seconds": 1.0, "converged": ok, "checkpoints": checkpoints}
        return (compiled, {}, divergences, None), record, 0.01

    monkeypatch.setattr(sampling, "_run", fake_run)
    calls = []
    fallback = lambda: calls.append(1) or "non-centred"           # noqa: E731
    out = sampling.sample_until_gate("centred", None, draws=100, tune=100, chains=2, cores=None, seed=5,
                                     adaptation="diag", budget_s=600.0, start_wall=time.perf_counter(),
                                     fallback=fallback)
    runs = out[-1]
    assert len(calls) == 1 and out[0] == "centred"
    assert [(r["tune"], r["fallback"], r["divergences"], r["converged"]) for r in runs] == [
        (100, False, 0, False), (200, False, 1, False), (100, True, 4, False), (400, False, 0, True)]
    assert len({r["seed"] for r in runs}) == 4
    text = sampling.extension_text(runs, 600.0)
    assert ("as the non-centred run diverged no less often (4 divergent transition(s) in 200 draws per chain, "
            "against 1 in 400 before it), a new run of the first model with 400 warm-up iterations") in text
    # the chosen model's last run diverged: the fall-back's run, no better, is the last one made
    monkeypatch.setattr(sampling, "MAX_RUNS", 2)
    out = sampling.sample_until_gate("centred", None, draws=100, tune=100, chains=2, cores=None, seed=5,
                                     adaptation="diag", budget_s=600.0, start_wall=time.perf_counter(),
                                     fallback=fallback)
    assert [(r["tune"], r["fallback"]) for r in out[-1]] == [(100, False), (200, False), (100, True)]
    assert out[0] == "non-centred" and not out[-1][-1]["converged"]
    assert sampling.extension_hint(out[-1], fast=False, budget_s=600.0, elapsed_s=1.0).endswith(
        "Not extended further: the limit of 2 runs, each continued to 2 times its draws, was reached, and the "
        "non-centred model's run diverged no less often: check the model.")


# --------------------------------------------------------------------------
# JOINT-BRMS
# --------------------------------------------------------------------------
def _pooled(runs, name):
    """Mean over independent runs and its Monte Carlo SE, sqrt(sum sd^2 / ess) / runs."""
    means = [r[name]["mean"] for r in runs]
    mcse = math.sqrt(sum(r[name]["sd"] ** 2 / r[name]["ess_bulk"] for r in runs)) / len(runs)
    return float(np.mean(means)), mcse, float(np.mean([r[name]["sd"] for r in runs]))


@pytest.fixture(scope="module")
def brms_model_fit():
    """hmlib's fit of brms's model on sim_registry.csv: normal lactate submodel, no missingness submodel."""
    frame = pd.read_csv(REFERENCE / "sim_registry.csv")
    result = jm.fit_joint_model(frame, outcome="outcome", predictors=["age", "severity", "lactate"],
                                cluster="site", family="binomial", seed=2026, missingness_model=False,
                                distributions={"lactate": "normal"})
    assert result.converged, result.convergence_message
    return result.summary.set_index("term")


def test_brms_001_close_to_brms_with_its_own_priors(brms_model_fit):
    """JOINT-BRMS-001: against brms's mi() model with brms's default priors (5 seeds pooled,
    tests/results/brms_joint_seeds.json): posterior means within 0.2 posterior SD (the two default prior
    sets differ: 0.11 SD for lactate is their effect, see JOINT-BRMS-002) and posterior SDs within 10%."""
    runs = [{"lactate": r["lactate"], "site_sd": r["site_sd"]}
            for r in json.loads((REFERENCE / "brms_joint_seeds.json").read_text())["seeds"]]
    assert len(runs) == 5
    for term, name in (("lactate", "lactate"), ("sd(site)", "site_sd")):
        mean, _, sd = _pooled(runs, name)
        ours = brms_model_fit.loc[term]
        assert abs(ours["estimate"] - mean) <= 0.2 * sd, (term, ours["estimate"], mean)
        assert ours["std_error"] == pytest.approx(sd, rel=0.1)


def test_brms_002_agrees_with_brms_given_the_same_priors(brms_model_fit):
    """JOINT-BRMS-002: against brms with hmlib's default priors on the same standardised scale (3 seeds,
    tests/results/brms_matched_priors.json, made by brms_matched_priors.R): lactate coefficient and site SD
    within 3 combined Monte Carlo SEs (posterior SD / sqrt(bulk ESS) for each run)."""
    runs = json.loads((REFERENCE / "brms_matched_priors.json").read_text())["runs"]
    assert len(runs) == 3
    for term, name in (("lactate", "lactate"), ("sd(site)", "site_sd")):
        mean, brms_mcse, sd = _pooled(runs, name)
        ours = brms_model_fit.loc[term]
        mc_se = math.hypot(ours["std_error"] / math.sqrt(ours["ess_bulk"]), brms_mcse)
        assert abs(ours["estimate"] - mean) <= 3 * mc_se, (term, ours["estimate"], mean, mc_se)
        assert ours["std_error"] == pytest.approx(sd, rel=0.1)


@pytest.mark.slow
def test_brms_003_nested_agrees_with_brms():
    """JOINT-BRMS-003: ``higher_levels: [country]`` against brms's ``(1 | country) + (1 | country:hospital)``
    mi() model with hmlib's default priors (tests/results/brms_nested_joint.json, made by
    brms_nested_joint.R on three_level_registry.csv; 3 seeds of 2 x 1000 draws): x on the original scale,
    both SDs of the outcome model within 3 combined Monte Carlo SEs; posterior SDs within 10%."""
    runs = json.loads((REFERENCE / "brms_nested_joint.json").read_text())["runs"]
    assert len(runs) == 3
    frame = pd.read_csv(REFERENCE / "three_level_registry.csv")
    result = jm.fit_joint_model(frame, outcome="y", predictors=["age", "x"], cluster="hospital",
                                family="binomial", seed=2026, missingness_model=False,
                                distributions={"x": "normal"}, higher_levels=["country"])
    assert result.converged, result.convergence_message
    ours_table = result.summary.set_index("term")
    for term, name in (("x", "x"), ("sd(country)", "sd_country"), ("sd(hospital)", "sd_hospital")):
        mean, brms_mcse, sd = _pooled(runs, name)
        ours = ours_table.loc[term]
        mc_se = math.hypot(ours["std_error"] / math.sqrt(ours["ess_bulk"]), brms_mcse)
        assert abs(ours["estimate"] - mean) <= 3 * mc_se, (term, ours["estimate"], mean, mc_se)
        assert ours["std_error"] == pytest.approx(sd, rel=0.1)


# --------------------------------------------------------------------------
# JOINT-FIT / JOINT-DICT / JOINT-FIG: one small fast fit with everything switched on
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_fit():
    frame = joint_truth.simulate(21, n_sites=16, n_patients=1200)
    rng = np.random.default_rng(21)
    frame["sex"] = np.where(rng.random(len(frame)) < 0.1, None, rng.choice(["female", "male"], len(frame)))
    original = frame.copy()
    result = jm.fit_joint_model(frame, outcome="outcome", predictors=["age", "sex", "severity", "lactate"],
                                cluster="site", family="binomial", seed=5, fast=True, draws=1000, tune=1000,
                                levels={"sex": ["female", "male"]})
    # 500 fast draws sat at the gate's edge (site SD bulk ESS 304); 1000 after the fast 500 warm-up iterations
    # gave 616 on one machine and a divergent transition on another (chains differ in floating point between
    # machines); 1000 warm-up iterations pass with bulk ESS >= 1046 there
    pd.testing.assert_frame_equal(frame, original)       # input never modified
    return frame, result


def _artifact_json(result, min_cell=11):
    """The step's artifact record of a fit, as the JSON the report reads."""
    return JointStepResult(result, min_cell=min_cell).to_artifact().to_json()


def test_fit_001_contract_and_tables(small_fit):
    """JOINT-FIT-001: estimates contract, partial pooling, PPC, never-measured clusters, correlation, narrative."""
    frame, result = small_fit
    est = result.to_estimates()
    assert tuple(est.columns) == ESTIMATE_COLUMNS and (est["method"] == "joint_bayes").all()
    assert est["term"].tolist() == ["Intercept", "age", "sex[male]", "severity", "lactate", "sd(site)"]
    assert (est["n_patients"] == len(frame)).all() and (est["n_clusters"] == 16).all()
    assert (est["ci_lower"] < est["estimate"]).all() and (est["estimate"] < est["ci_upper"]).all()
    assert result.settings["binary_summed_out"] == ["sex"]

    pooled = result.partial_pooling()
    assert len(pooled) == 16
    observed = frame.groupby("site")["lactate"].count()
    assert np.array_equal(pooled.set_index("cluster").loc[observed.index, "n_observed"], observed.to_numpy())
    never = pooled.loc[pooled["n_observed"] == 0]
    assert len(never) == 2                               # the simulator's two structural sites
    assert np.allclose(never["shrinkage"], 1.0) and never["raw_effect"].isna().all()
    measured = pooled.loc[pooled["n_observed"] > 0]
    assert (measured["shrinkage"] < 1).all()
    # uncertainty of a cluster's completed mean widens with fewer observed values
    partly = pooled.loc[pooled["n_observed"] > 0]
    missing_share = 1 - partly["n_observed"] / partly["n_patients"]
    assert stats.spearmanr(missing_share, partly["pooled_mean_sd"])[0] > 0.5
    assert never["pooled_mean_sd"].min() > partly["pooled_mean_sd"].max()
    # a fully observed cluster's mean is known exactly
    full = pooled.loc[pooled["n_observed"] == pooled["n_patients"]]
    assert np.allclose(full["pooled_mean_sd"], 0.0) and np.allclose(full["pooled_mean"], full["raw_mean"])

    ppc = result.posterior_predictive()
    assert len(ppc) == 14 and ppc["p_mean"].between(0, 1).all()
    assert (ppc["replicated_mean_lower"] < ppc["replicated_mean_upper"]).all()
    assert np.allclose(ppc.set_index("cluster")["observed_mean"],
                       frame.groupby("site")["lactate"].mean().dropna())

    unmeasured = result.imputed_in_unmeasured()
    assert sorted(unmeasured["clusters"]) == sorted(never["cluster"].tolist())
    assert unmeasured["n_patients"] == int(never["n_patients"].sum())
    assert unmeasured["imputed"]["q05"] < unmeasured["imputed"]["mean"] < unmeasured["imputed"]["q95"]

    c = result.correlation
    assert -1 < c["ci_lower"] < c["estimate"] < c["ci_upper"] < 1 and 0 <= c["prob_positive"] <= 1
    text = " ".join(result.narrative())
    lac = est.set_index("term").loc["lactate"]
    assert f"{lac['estimate']:.3f}" in text and f"{c['estimate']:.2f}" in text
    assert result.timing["compile_s"] > 0 and result.timing["sampling_s"] > 0
    assert set(result.ess_per_second) == {"focus", "cluster_sd"}


def test_dict_001_no_patient_level_rows(small_fit):
    """JOINT-DICT-001: the step's artifact (to_artifact().to_json()) is strict JSON as it is (no NaN, no numpy
    types) and no list is patient-level."""
    frame, result = small_fit
    payload = _artifact_json(result)
    text = json.dumps(payload, allow_nan=False)
    assert "joint_bayes" in text
    n_missing = int(frame["lactate"].isna().sum())

    def lists(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from lists(v)
        elif isinstance(value, list):
            yield value
            for v in value:
                yield from lists(v)

    lengths = [len(v) for v in lists(payload)]
    assert max(lengths) <= max(result.n_clusters, 31)   # clusters, terms, histogram edges
    assert len(frame) not in lengths and n_missing not in lengths
    assert payload["n_patients"] == len(frame)


def test_dict_002_small_cells_suppressed(small_fit):
    """JOINT-DICT-002: in the artifact written with min_cell no per-cluster observed count from 1 to
    min_cell - 1 is left, nor the observed mean of such a cluster (partial pooling and predictive checks);
    every cluster keeps its 'measured' flag; with min_cell = 1 nothing is hidden."""
    _, result = small_fit
    raw = result.partial_pooling()
    min_cell = int(np.sort(raw.loc[raw["n_observed"] > 0, "n_observed"])[2]) + 1   # at least three small clusters
    payload = json.loads(json.dumps(_artifact_json(result, min_cell=min_cell)))
    pooled = pd.DataFrame(payload["partial_pooling"])
    small = raw["n_observed"].between(1, min_cell - 1).to_numpy()
    assert small.sum() >= 3
    assert (pooled.loc[small, "n_observed"] == "suppressed").all() and (pooled.loc[small, "raw_mean"] == "suppressed").all()
    numeric = pd.to_numeric(pooled["n_observed"], errors="coerce").dropna()
    assert not numeric.between(1, min_cell - 1).any()
    assert pooled["measured"].tolist() == (raw["n_observed"] > 0).tolist()
    ppc = pd.DataFrame(payload["posterior_predictive"])
    counts = pd.to_numeric(ppc["n_observed"], errors="coerce")
    assert not counts.between(1, min_cell - 1).any()
    hidden = ppc["n_observed"] == "suppressed"
    assert hidden.any() and (ppc.loc[hidden, "observed_mean"] == "suppressed").all()
    open_payload = json.loads(json.dumps(_artifact_json(result, min_cell=1)))
    assert pd.DataFrame(open_payload["partial_pooling"])["n_observed"].tolist() == raw["n_observed"].tolist()


def test_art_001_artifact_round_trip(small_fit, tmp_path):
    """JOINT-ART-001: to_artifact().write(d) then JointModelArtifact.read(d) gives an equal record; the rows the
    report reads are typed (partial pooling, settings) and hold the fit's numbers."""
    _, result = small_fit
    record = JointStepResult(result, min_cell=11).to_artifact()
    record.write(tmp_path)
    back = JointModelArtifact.read(tmp_path)
    assert back == record
    assert all(isinstance(row, PartialPoolingRow) for row in back.partial_pooling)
    assert len(back.partial_pooling) == len(result.partial_pooling()) == 16
    assert isinstance(back.settings, JointSettings)
    assert (back.settings.seed, back.settings.draws, back.settings.tune, back.settings.chains) == (5, 1000, 1000, 2)
    assert back.converged == result.converged and back.convergence_message == result.convergence_message
    never = [row for row in back.partial_pooling if not row.measured]
    assert len(never) == 2 and all(row.n_observed == 0 and row.raw_effect is None for row in never)


def test_art_002_renamed_or_missing_field_is_refused(small_fit, tmp_path):
    """JOINT-ART-002: a partial-pooling row with a renamed field, or settings without the seed, make reading
    the artifact fail with an ArtifactError naming the field."""
    _, result = small_fit
    JointStepResult(result, min_cell=11).to_artifact().write(tmp_path)
    path = tmp_path / "artifacts" / "joint_model.json"
    original = json.loads(path.read_text())

    renamed = json.loads(json.dumps(original))
    row = renamed["record"]["partial_pooling"][0]
    row["shrinkage_factor"] = row.pop("shrinkage")
    path.write_text(json.dumps(renamed))
    with pytest.raises(ArtifactError, match=r"partial_pooling\[0\].*shrinkage"):
        JointModelArtifact.read(tmp_path)

    missing = json.loads(json.dumps(original))
    del missing["record"]["settings"]["seed"]
    path.write_text(json.dumps(missing))
    with pytest.raises(ArtifactError, match=r"settings.*seed"):
        JointModelArtifact.read(tmp_path)


def test_fig_001_figures(small_fit):
    """JOINT-FIG-001: each figure returns a Figure and draws its points."""
    from matplotlib.figure import Figure

    frame, result = small_fit
    other = result.to_estimates().assign(method="complete_case", estimate=lambda t: t["estimate"] * 0.9)
    fig = joint_figures.coefficient_forest(pd.concat([result.to_estimates(), other]),
                                           truth={"lactate": 0.35, "sd(site)": 0.6})
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["age", "sex[male]", "severity", "lactate",
                                                                        "sd(site)"]
    fig = joint_figures.shrinkage_plot(result.partial_pooling(), focus=result.data.focus, min_cell=11)
    pooled = result.partial_pooling()
    shown_raw = int((pooled["n_observed"] >= 11).sum())  # fewer observed values: no raw estimate drawn
    assert 0 < shown_raw < len(pooled) == 16
    pooled_points = fig.axes[0].collections[1].get_offsets()
    assert len(pooled_points) == shown_raw
    assert len(fig.axes[0].collections[2].get_offsets()) == len(pooled) - shown_raw
    right_x = fig.axes[1].collections[0].get_offsets()[:, 0]
    assert len(right_x) == 16 and (right_x[pooled["n_observed"].to_numpy() < 11] == 5.5).all()
    fig = joint_figures.ppc_by_cluster(result.posterior_predictive(), focus=result.data.focus)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_yticklabels()) == 14
    fig = joint_figures.imputed_distribution(result.imputed_in_unmeasured(), focus=result.data.focus)
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert "2 never-measuring" in " ".join(t.get_text() for legend in legends for t in legend.get_texts())
    fig = joint_figures.correlation_posterior(result.correlation_draws(), result.correlation,
                                              lkj_eta=result.settings["priors"]["lkj_eta"])
    assert f"{result.correlation['estimate']:.2f}" in caption_of(fig)[1]


# --------------------------------------------------------------------------
# JOINT-TRUTH
# --------------------------------------------------------------------------
def test_truth_001_tiny_study():
    """JOINT-TRUTH-001: two small replicates; the summary has what the bench reports, estimates near truth."""
    out = joint_truth.run(2, n_sites=15, n_patients=1000, first_seed=77, verbose=False, fast=True)
    s = out["summary"]
    for term in ("lactate", "sd(site)", "corr(missingness, outcome)"):
        assert s[term]["reps"] == 2 and 0 <= s[term]["coverage90"] <= 1
    for row in out["replicates"]:
        for term in ("lactate", "sd(site)"):
            # within 4 posterior SDs of the truth in each replicate
            assert abs(row[term]["estimate"] - joint_truth.TRUTH[term]) < 4 * row[term]["std_error"]


# --------------------------------------------------------------------------
# JOINT-PRIOR / JOINT-DIST / JOINT-ERR
# --------------------------------------------------------------------------
def test_prior_001_table_and_overrides():
    """JOINT-PRIOR-001: the table states each prior; overrides appear; bad priors are refused."""
    table = jm.priors_table()
    assert table["prior"].tolist() == ["Normal(0, 2.5)", "Normal(m, 2.5)", "Half-Normal(0, 1)",
                                       "Half-Normal(0, 1)", "LKJ(2)"]
    table = jm.priors_table({"cluster_sd": ("halfstudentt", 3, 2.5), "lkj_eta": 4})
    assert "Half-Student-t(3, 0, 2.5)" in table["prior"].tolist() and "LKJ(4)" in table["prior"].tolist()
    with pytest.raises(FitError, match="unknown prior 'slope'"):
        jm.priors_table({"slope": ("normal", 1)})
    with pytest.raises(FitError, match="prior 'cluster_sd'"):
        jm.priors_table({"cluster_sd": ("normal", 1)})


@pytest.mark.parametrize("cluster_sd", [("halfnormal", 1.0), ("halfstudentt", 3.0, 2.5)])
def test_prior_002_correlated_effects_prior_is_the_stated_one(cluster_sd):
    """JOINT-PRIOR-002: sampling (slope, resid) with the change-of-variables term gives exactly
    tau ~ the SD prior and (rho + 1) / 2 ~ Beta(eta, eta), independent (numerical integration)."""
    import pytensor

    priors = joint_priors.check_priors({"cluster_sd": cluster_sd, "lkj_eta": 2.0})
    slope, resid = pt.dscalar("slope"), pt.dscalar("resid")
    tau = pt.sqrt(slope ** 2 + resid ** 2)
    log_density = joint_priors.correlated_sd_log_prior(tau, slope / tau, priors)
    density = pytensor.function([slope, resid], pt.exp(log_density), mode="FAST_COMPILE")

    def integral(angle_to, radius_to):
        # polar coordinates: slope = r sin(a), resid = r cos(a), a in (-pi/2, pi/2); rho = sin(a), tau = r
        return integrate.dblquad(lambda r, a: float(density(r * math.sin(a), r * math.cos(a))) * r,
                                 -math.pi / 2, angle_to, 0, radius_to, epsabs=1e-10)[0]

    assert integral(math.pi / 2, np.inf) == pytest.approx(1.0, abs=1e-6)
    median = stats.halfnorm.ppf(0.5) if cluster_sd[0] == "halfnormal" else 2.5 * stats.t.ppf(0.75, 3)
    expected = 0.5 * stats.beta.cdf(0.75, 2, 2)          # P(tau < median, rho < 0.5), independent
    assert integral(math.asin(0.5), median) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_prior_003_outcome_on_missingness_same_model(seed):
    """JOINT-PRIOR-003: density of (u, w, tau_y, tau_r, rho, rest) equal in both orders of the regression.

    Usual order, both non-centred: values (tau_y, slope_m, resid_m, z1, z2) with u = tau_y z1,
    w = slope_m z1 + resid_m z2. Other order (missingness centred, outcome not): values (tau_r, w,
    slope_y, resid_y, z) with u = slope_y w / tau_r + resid_y z. Densities without PyMC's log-transform
    Jacobians, moved to common coordinates with the Jacobians of these maps.
    """
    frame = _tiny_frame(seed)
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "x", "b1"], cluster="site",
                                 family="binomial")
    J = data.n_clusters
    usual = jm.build_joint_model(data, parameterisation={"outcome": "noncentred", "missingness": "noncentred"})
    other = jm.build_joint_model(data, parameterisation={"outcome": "noncentred", "missingness": "centred"})
    assert "outcome_slope" in other.named_vars and "miss_slope" in usual.named_vars
    rng = np.random.default_rng(seed)
    tau_y, tau_r, rho = 0.4 + rng.random(), 0.5 + rng.random(), rng.uniform(-0.9, 0.9)
    u, w = rng.normal(size=J), rng.normal(size=J)
    start = usual.initial_point()
    shared = {k: v + rng.normal(0, 0.5, size=np.shape(v)) for k, v in start.items()
              if k in other.initial_point()}
    slope_m, resid_m = rho * tau_r, np.sqrt(1 - rho ** 2) * tau_r
    slope_y, resid_y = rho * tau_y, np.sqrt(1 - rho ** 2) * tau_y
    usual_point = shared | {"outcome_cluster_sd_log__": np.log(tau_y), "miss_slope": slope_m,
                            "miss_resid_sd_log__": np.log(resid_m), "outcome_cluster_z": u / tau_y,
                            "miss_cluster_z": (w - slope_m * u / tau_y) / resid_m}
    other_point = shared | {"miss_cluster_sd_log__": np.log(tau_r), "miss_cluster": w, "outcome_slope": slope_y,
                            "outcome_resid_sd_log__": np.log(resid_y),
                            "outcome_cluster_z": (u - slope_y * w / tau_r) / resid_y}
    assert set(usual_point) == {v.name for v in usual.value_vars}
    assert set(other_point) == {v.name for v in other.value_vars}
    log_usual = usual.compile_logp(jacobian=False, mode="FAST_COMPILE")(usual_point)
    log_other = other.compile_logp(jacobian=False, mode="FAST_COMPILE")(other_point)
    common_usual = log_usual + np.log(tau_r / np.sqrt(1 - rho ** 2)) - J * np.log(tau_y) - J * np.log(resid_m)
    common_other = log_other + np.log(tau_y / np.sqrt(1 - rho ** 2)) - J * np.log(resid_y)
    assert np.isfinite(common_usual)
    assert common_other == pytest.approx(common_usual, abs=1e-8)
    # and the derived quantities are the same ones
    outputs = other.replace_rvs_by_values([other["outcome_cluster"], other["re_corr"], other["outcome_cluster_sd"]])
    fn = other.compile_fn(outputs, inputs=other.value_vars, on_unused_input="ignore", mode="FAST_COMPILE")
    got_u, got_rho, got_tau = fn(other_point)
    np.testing.assert_allclose(got_u, u, rtol=1e-10)
    assert got_rho == pytest.approx(rho) and got_tau == pytest.approx(tau_y)


def test_dist_001_rule_and_override():
    """JOINT-DIST-001: positive with skewness > 1 -> lognormal; otherwise normal; override wins."""
    rng = np.random.default_rng(0)
    assert jm.choose_distribution(np.exp(rng.normal(0, 0.8, 500))) == "lognormal"
    assert jm.choose_distribution(rng.normal(5, 1, 500)) == "normal"
    skewed_with_zero = np.r_[0.0, np.exp(rng.normal(0, 0.8, 500))]
    assert jm.choose_distribution(skewed_with_zero) == "normal"
    frame = _tiny_frame(3, lognormal=True)
    frame["x"] = np.where(frame["x"].notna(), np.exp(3 * frame["x"]), np.nan)
    auto = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "x"], cluster="site", family="binomial")
    forced = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "x"], cluster="site",
                                   family="binomial", distributions={"x": "normal"})
    assert auto.continuous[0].distribution == jm.choose_distribution(frame["x"])
    assert forced.continuous[0].distribution == "normal"
    with pytest.raises(FitError, match="values <= 0"):
        jm.prepare_joint_data(frame.assign(x=frame["x"] - 1000), outcome="y", predictors=["z", "x"],
                              cluster="site", family="binomial", distributions={"x": "lognormal"})


def test_err_001_unsupported_data():
    """JOINT-ERR-001: each FitError says what is wrong."""
    frame = _tiny_frame(4)
    # (an incomplete categorical with 3 levels is modelled since issue 17: tests/test_joint_categorical.py)
    frame["grade"] = np.where(np.arange(len(frame)) % 4 == 0, None, "a")
    with pytest.raises(FitError, match="single recorded level"):
        jm.prepare_joint_data(frame, outcome="y", predictors=["z", "grade"], cluster="site", family="binomial")
    with pytest.raises(FitError, match="needs seed="):
        jm.fit_joint_model(frame, outcome="y", predictors=["z"], cluster="site", family="binomial")
    with pytest.raises(FitError, match="at least two clusters"):
        jm.prepare_joint_data(frame.assign(site="a"), outcome="y", predictors=["z"], cluster="site",
                              family="binomial")
    with pytest.raises(FitError, match="missing_values"):
        jm.prepare_joint_data(frame, outcome="y", predictors=["z"], cluster="site", family="binomial",
                              missing_values="mice")
    with pytest.raises(FitError, match="parameterisation names 'age'"):
        jm.prepare_joint_data(frame, outcome="y", predictors=["z", "x"], cluster="site",
                              family="binomial").submodel_key("age")


def test_edge_001_no_complete_predictor():
    """JOINT-EDGE-001: with every predictor incomplete (brandsma's case) a submodel's fixed part is
    draws x rows, not draws x 1 (this broke the partial-pooling table once)."""
    post = {"x0_intercept": np.arange(6.0).reshape(2, 3)}
    fixed = joint_imputations.fixed_part(post, "x0", np.empty((5, 0)), np.array([0, 2, 4]))
    assert fixed.shape == (3, 5) and np.array_equal(fixed[:, 0], [0.0, 2.0, 4.0])
    frame = _tiny_frame(5)
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["x", "b1"], cluster="site", family="binomial")
    assert data.Z.shape == (len(frame), 0) and data.outcome_terms == ("x", "b1")


# --------------------------------------------------------------------------
# JOINT-RW: prior sensitivity by importance reweighting
# --------------------------------------------------------------------------
_GRID = np.linspace(1e-4, 4.0, 200_001)
_J, _SS = 20, 20 * 0.36            # cluster effects known: likelihood of tau is tau^-J exp(-SS / (2 tau^2))


def _log_likelihood_tau(tau):
    return -_J * np.log(tau) - _SS / (2 * tau ** 2)


def _posterior_on_grid(prior):
    log_post = _log_likelihood_tau(_GRID) + joint_priors.sd_log_density(_GRID, prior)
    dens = np.exp(log_post - log_post.max())
    return dens / np.trapezoid(dens, _GRID)


def _draws_under(prior, seed=0, chains=2, n=2000):
    """Exact draws of tau under ``prior`` (inverse CDF on the grid) and a coefficient that depends on tau."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(_posterior_on_grid(prior))
    cdf /= cdf[-1]
    tau = np.interp(rng.uniform(size=(chains, n)), cdf, _GRID)
    coef = 0.3 + 0.5 * (tau - 0.6) + rng.normal(0, 0.05, size=tau.shape)
    return jm.PosteriorDraws(terms={"Intercept": rng.normal(-2, 0.1, size=tau.shape), "x": coef, "sd(site)": tau},
                             cluster_sds={"outcome_cluster_sd": tau}, cluster_sd_prior=tuple(prior),
                             converged=True, convergence_message="converged: test", n_patients=400,
                             n_clusters=_J, fingerprint="abc")


@pytest.mark.parametrize("new_prior", [("halfnormal", 0.5), ("halfnormal", 2.5), ("halfstudentt", 1.0, 1.0)])
def test_rw_001_reweighting_recovers_the_exact_posterior(new_prior):
    """JOINT-RW-001: draws under halfnormal(1) reweighted to ``new_prior`` give the posterior mean and 95%
    quantiles of tau (and of a coefficient linear in tau) computed by numerical integration under the new
    prior, within 4 Monte Carlo SEs of the weighted estimate."""
    draws = _draws_under(("halfnormal", 1.0))
    rw = jm.reweight_cluster_sd_prior(draws, new_prior)
    assert rw.reliable and rw.pareto_k < 0.5 and rw.n_draws == 4000
    exact = _posterior_on_grid(new_prior)
    mean = np.trapezoid(_GRID * exact, _GRID)
    sd = math.sqrt(np.trapezoid((_GRID - mean) ** 2 * exact, _GRID))
    cdf = np.cumsum(exact) / np.sum(exact)
    table = rw.estimates.set_index("term")
    mcse = sd / math.sqrt(rw.ess)
    assert table.loc["sd(site)", "estimate"] == pytest.approx(mean, abs=4 * mcse)
    assert table.loc["sd(site)", "std_error"] == pytest.approx(sd, rel=0.1)
    for q, column in ((0.025, "ci_lower"), (0.975, "ci_upper")):
        assert table.loc["sd(site)", column] == pytest.approx(np.interp(q, cdf, _GRID), abs=12 * mcse)
    assert table.loc["x", "estimate"] == pytest.approx(0.3 + 0.5 * (mean - 0.6), abs=4 * math.hypot(0.5 * sd, 0.05)
                                                        / math.sqrt(rw.ess))
    if new_prior == ("halfnormal", 0.5):    # and the prior matters there: the old mean is not within those errors
        assert abs(draws.terms["sd(site)"].mean() - mean) > 4 * mcse
    assert tuple(rw.estimates.columns) == tuple(ESTIMATE_COLUMNS) and set(rw.estimates["method"]) == {"joint_bayes"}


def test_rw_002_same_prior_round_trip_and_fingerprint(tmp_path):
    """JOINT-RW-002: reweighting to the prior the draws came from gives equal weights and the plain summary
    (mean, SD, type-7 quantiles); the .npz round trip keeps every array and field; a fingerprint of other
    data makes load_matching return None."""
    draws = _draws_under(("halfnormal", 1.0), seed=3)
    rw = jm.reweight_cluster_sd_prior(draws, ("halfnormal", 1.0))
    tau = draws.terms["sd(site)"].reshape(-1)
    row = rw.estimates.set_index("term").loc["sd(site)"]
    assert rw.reliable and rw.ess == pytest.approx(4000)
    assert row["estimate"] == pytest.approx(tau.mean(), rel=1e-12)
    assert row["std_error"] == pytest.approx(tau.std(ddof=1), rel=1e-12)
    assert row["ci_lower"] == pytest.approx(np.quantile(tau, 0.025), rel=1e-12)
    path = draws.save(tmp_path / "joint_posterior.npz")
    back = jm.PosteriorDraws.load(path)
    assert back.cluster_sd_prior == draws.cluster_sd_prior and back.fingerprint == "abc" and back.converged
    assert all(np.array_equal(back.terms[k], v) for k, v in draws.terms.items())
    assert all(np.array_equal(back.cluster_sds[k], v) for k, v in draws.cluster_sds.items())
    assert not list(tmp_path.glob("*.partial"))

    class FakeRegistry:
        data_sha256 = "0" * 64
        params = type("P", (), {"outcome": "y", "predictors": ("x",), "cluster": "site"})()
    assert jm.PosteriorDraws.load_matching(path, FakeRegistry()) is None
    jm.PosteriorDraws(**{**draws.__dict__, "fingerprint": jm.model_fingerprint(FakeRegistry())}).save(path)
    assert jm.PosteriorDraws.load_matching(path, FakeRegistry()) is not None
    assert jm.PosteriorDraws.load_matching(tmp_path / "absent.npz", FakeRegistry()) is None


def test_rw_003_far_prior_is_unreliable():
    """JOINT-RW-003: a prior that puts the posterior's tau (about 0.6) far in its tail leaves few effective
    draws: Pareto k exceeds min(1 - 1/log10(S), 0.7) and the result says so."""
    draws = _draws_under(("halfnormal", 1.0))
    rw = jm.reweight_cluster_sd_prior(draws, ("halfnormal", 0.1))
    assert not rw.reliable and rw.pareto_k > rw.k_threshold
    assert rw.k_threshold == pytest.approx(min(1 - 1 / math.log10(4000), 0.7))
    assert "above" in rw.message
    with pytest.raises(FitError, match="cluster-SD prior"):
        jm.reweight_cluster_sd_prior(draws, ("uniform", 1.0))


def test_rw_004_real_fit_draws(small_fit, tmp_path):
    """JOINT-RW-004: a fitted model's posterior_draws hold the contract terms (original scale, equal to the
    fit's own summary) and every SD with the cluster-SD prior (outcome, submodels, missingness); the saved
    file holds parameter draws only: no array has a patient-length axis."""
    _, fit = small_fit
    draws = fit.posterior_draws("fp")
    assert set(draws.terms) == set(fit.to_estimates()["term"])
    assert "outcome_cluster_sd" in draws.cluster_sds and len(draws.cluster_sds) >= 2
    assert draws.cluster_sd_prior == tuple(fit.settings["priors"]["cluster_sd"])
    same = jm.reweight_cluster_sd_prior(draws, draws.cluster_sd_prior).estimates
    pd.testing.assert_frame_equal(same.drop(columns="method").reset_index(drop=True),
                                  fit.to_estimates().drop(columns="method").reset_index(drop=True),
                                  check_exact=False, rtol=1e-10)
    path = draws.save(tmp_path / "d.npz")
    with np.load(path) as z:
        shapes = {k: z[k].shape for k in z.files if k != "meta"}
    chains, n = next(iter(draws.terms.values())).shape
    assert all(shape == (chains, n) for shape in shapes.values())
