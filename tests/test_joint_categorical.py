"""Incomplete categorical predictors in the joint Bayesian model (hmlib.stats.joint, issue 17 part B).

A predictor with three or more levels gets a baseline-category logit
(nominal) or cumulative logit (ordinal) submodel with cluster random
intercepts, and its missing values are summed out of the outcome likelihood
(K terms per incomplete row). The likelihood is checked against brute-force
enumeration of every completion (as JOINT-MARG-001 does for binaries), the
complete-data submodels against brms's ``categorical`` and ``cumulative``
families (``tests/results/joint_categorical.R``), and the whole model
against the truth by simulation (``bench/joint_categorical_truth.py``).

Test IDs
--------
JOINT-CAT-001   summed-out categorical (nominal and ordinal) and binary predictors = enumeration of every
                completion, binomial and gaussian outcome
JOINT-CAT-002   a continuous focus integrated out in rows that also miss a categorical = numerical integral
JOINT-CAT-003   the ordinal submodel's probabilities are the cumulative-logit ones, in the declared order
JOINT-CAT-004   an ordinal declaration that is not categorical, or whose order does not list the levels, is refused
JOINT-CAT-005   a fit with a 3-level focus: contract rows per level, imputations, pooling, PPC, narrative per level
JOINT-CAT-006   the complete-data submodels agree with brms categorical() / cumulative() (posterior means)
JOINT-CAT-007   the missing focus categories drawn after the fit follow their exact conditional p(x | y, theta)
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

from conftest import REFERENCE
from hmlib.exceptions import FitError
from hmlib.figures.style import caption_of
from hmlib.stats import joint as jm
from hmlib.stats.joint import imputations as joint_imputations
from hmlib.stats.joint import model as joint_model


def _likelihood_at_random_point(model, names, seed):
    """(sum of observed log-likelihoods and potentials, {name: constrained value}) at a random point."""
    rng = np.random.default_rng(seed)
    lik = model.logp(vars=model.observed_RVs) if model.observed_RVs else pt.constant(0.0)
    if model.potentials:
        lik = lik + pt.add(*model.potentials) if len(model.potentials) > 1 else lik + model.potentials[0]
    outputs = model.replace_rvs_by_values([lik] + [model[n] for n in names])
    fn = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore", mode="FAST_COMPILE")
    start = model.initial_point(random_seed=seed)
    point = {k: v + rng.normal(0, 0.7, size=np.shape(v)) for k, v in start.items()}
    out = fn(point)
    return float(out[0]), {n: np.asarray(v, dtype=float) for n, v in zip(names, out[1:])}


def _tiny_frame(seed=0, family="binomial"):
    """Three clusters; complete z; incomplete nominal g (3 levels), ordinal o (3 levels), binary b, numeric x."""
    rng = np.random.default_rng(seed)
    n = 15
    site = np.repeat(["a", "b", "c"], 5)
    z = rng.normal(size=n)
    g = rng.choice(["blue", "green", "red"], n).astype(object)
    g[[0, 4, 9]] = None
    o = rng.choice(["high", "low", "mid"], n).astype(object)
    o[[4, 7, 11]] = None            # row 4: g and o missing together
    b = rng.integers(0, 2, n).astype(float)
    b[[7, 13]] = np.nan             # row 7: o and b missing together
    x = rng.normal(2, 1, n)
    x[[1, 9, 11]] = np.nan          # rows 9 and 11: x with g, x with o
    y = rng.integers(0, 2, n).astype(float) if family == "binomial" else rng.normal(5, 2, n)
    return pd.DataFrame({"site": site, "z": z, "g": g, "o": o, "b": b, "x": x, "y": y})


_LEVELS = {"g": ["blue", "green", "red"], "o": ["high", "low", "mid"]}
_ORDER = {"o": ["low", "mid", "high"]}


def _std(values):
    present = values[np.isfinite(values)]
    return (values - present.mean()) / present.std()


def _nominal_probs(p, prefix, zs, codes):
    """rows x K probabilities of a baseline-category logit submodel, written out independently."""
    eta = p[f"{prefix}_intercept"][None, :] + zs[:, None] * p[f"{prefix}_coef"][0][None, :] + \
        p[f"{prefix}_cluster"][codes]
    logits = np.column_stack([np.zeros(len(zs)), eta])
    return np.exp(logits - special.logsumexp(logits, axis=1, keepdims=True))


def _ordinal_probs(p, prefix, zs, codes, ranks):
    """rows x K probabilities (columns in level order) of a cumulative logit submodel, written out independently."""
    eta = p[f"{prefix}_coef"][0] * zs + p[f"{prefix}_cluster"][codes]
    cut = p[f"{prefix}_cutpoints"]
    at_least = np.column_stack([np.ones(len(zs)), special.expit(eta[:, None] - cut[None, :]), np.zeros(len(zs))])
    by_rank = at_least[:, :-1] - at_least[:, 1:]
    return by_rank[:, ranks]


# --------------------------------------------------------------------------
# JOINT-CAT-001 / 002 / 003
# --------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["binomial", "gaussian"])
def test_cat_001_categorical_sum_equals_enumeration(family):
    """JOINT-CAT-001: log sum over every joint completion of the missing categoricals and binary = the model's."""
    frame = _tiny_frame(1, family)
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "g", "o", "b"], cluster="site",
                                 family=family, levels=_LEVELS, ordinal=_ORDER, missingness_model=False)
    assert [c.name for c in data.categoricals] == ["g", "o"] and data.categoricals[1].ordinal
    assert data.outcome_terms == ("z", "b", "g[green]", "g[red]", "o[low]", "o[mid]")
    model = jm.build_joint_model(data)
    names = ["outcome_intercept", "outcome_coef", "outcome_cluster", "b0_intercept", "b0_coef", "b0_cluster",
             "c0_intercept", "c0_coef", "c0_cluster", "c1_cutpoints", "c1_coef", "c1_cluster"] + \
        (["outcome_sigma"] if family == "gaussian" else [])
    codes = pd.factorize(frame["site"], sort=True)[0]
    zs = _std(frame["z"].to_numpy())
    y = frame["y"].to_numpy()
    ys = (y - y.mean()) / y.std() if family == "gaussian" else y
    g = frame["g"].map({v: i for i, v in enumerate(_LEVELS["g"])}).to_numpy(dtype=float)
    o = frame["o"].map({v: i for i, v in enumerate(_LEVELS["o"])}).to_numpy(dtype=float)
    b = frame["b"].to_numpy()
    ranks = np.array([2, 0, 1])                    # high, low, mid -> ranks in low < mid < high
    for seed in (1, 2):
        model_value, p = _likelihood_at_random_point(model, names, seed)
        assert np.all(np.diff(p["c1_cutpoints"]) > 0)
        pg, po = _nominal_probs(p, "c0", zs, codes), _ordinal_probs(p, "c1", zs, codes, ranks)
        pb = special.expit(p["b0_intercept"] + p["b0_coef"][0] * zs + p["b0_cluster"][codes])
        beta = p["outcome_coef"]
        total = 0.0
        for i in range(len(frame)):
            states = itertools.product(*[[v] if np.isfinite(v) else list(range(k))
                                         for v, k in ((g[i], 3), (o[i], 3), (b[i], 2))])
            row = []
            for gi, oi, bi in states:
                log_w = math.log(pg[i, int(gi)]) + math.log(po[i, int(oi)]) + \
                    math.log(pb[i] if bi == 1 else 1 - pb[i])
                eta = (p["outcome_intercept"] + beta[0] * zs[i] + beta[1] * bi + p["outcome_cluster"][codes[i]]
                       + (beta[2] if gi == 1 else beta[3] if gi == 2 else 0.0)
                       + (beta[4] if oi == 1 else beta[5] if oi == 2 else 0.0))
                log_y = stats.bernoulli.logpmf(ys[i], special.expit(eta)) if family == "binomial" else \
                    stats.norm.logpdf(ys[i], eta, p["outcome_sigma"])
                row.append(log_w + log_y)
            total += special.logsumexp(row)
        assert model_value == pytest.approx(total, abs=1e-8)


def test_cat_002_integrated_focus_with_missing_categorical():
    """JOINT-CAT-002: continuous focus x integrated out (Gauss-Hermite, 120 nodes: the random point has a submodel
    SD of 3) in rows that also miss g or o, against scipy.integrate.quad of sum_k P(k) p(y | x, k) p(x)."""
    frame = _tiny_frame(2, "binomial")
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "x", "g", "o"], cluster="site",
                                 family="binomial", levels=_LEVELS, ordinal=_ORDER, focus="x",
                                 missingness_model=False, distributions={"x": "normal"})
    model = jm.build_joint_model(data, quadrature_nodes=120)
    names = ["outcome_intercept", "outcome_coef", "outcome_cluster", "x0_intercept", "x0_coef", "x0_cluster",
             "x0_sigma", "c0_intercept", "c0_coef", "c0_cluster", "c1_cutpoints", "c1_coef", "c1_cluster"]
    model_value, p = _likelihood_at_random_point(model, names, 4)
    codes = pd.factorize(frame["site"], sort=True)[0]
    zs = _std(frame["z"].to_numpy())
    x = frame["x"].to_numpy()
    xs = _std(x)
    g = frame["g"].map({v: i for i, v in enumerate(_LEVELS["g"])}).to_numpy(dtype=float)
    o = frame["o"].map({v: i for i, v in enumerate(_LEVELS["o"])}).to_numpy(dtype=float)
    y = frame["y"].to_numpy()
    pg, po = _nominal_probs(p, "c0", zs, codes), _ordinal_probs(p, "c1", zs, codes, np.array([2, 0, 1]))
    mu_x = p["x0_intercept"] + p["x0_coef"][0] * zs + p["x0_cluster"][codes]
    beta = p["outcome_coef"]                        # z, x, g[green], g[red], o[low], o[mid]
    total = np.sum(stats.norm.logpdf(xs[np.isfinite(x)], mu_x[np.isfinite(x)], p["x0_sigma"]))
    total += sum(math.log(pg[i, int(g[i])]) for i in range(len(g)) if np.isfinite(g[i]))
    total += sum(math.log(po[i, int(o[i])]) for i in range(len(o)) if np.isfinite(o[i]))
    for i in range(len(frame)):
        row = 0.0
        for gi in ([g[i]] if np.isfinite(g[i]) else range(3)):
            for oi in ([o[i]] if np.isfinite(o[i]) else range(3)):
                weight = (1.0 if np.isfinite(g[i]) else pg[i, int(gi)]) * (1.0 if np.isfinite(o[i]) else po[i, int(oi)])

                def lik(x_std, gi=gi, oi=oi):
                    eta = (p["outcome_intercept"] + beta[0] * zs[i] + beta[1] * x_std + p["outcome_cluster"][codes[i]]
                           + (beta[2] if gi == 1 else beta[3] if gi == 2 else 0.0)
                           + (beta[4] if oi == 1 else beta[5] if oi == 2 else 0.0))
                    return special.expit(eta) if y[i] == 1 else special.expit(-eta)

                if np.isfinite(x[i]):
                    row += weight * lik(xs[i])
                else:
                    lo, hi = mu_x[i] - 12 * p["x0_sigma"], mu_x[i] + 12 * p["x0_sigma"]
                    row += weight * integrate.quad(lambda s: stats.norm.pdf(s, mu_x[i], p["x0_sigma"]) * lik(s),
                                                   lo, hi, epsabs=1e-13, epsrel=1e-11, limit=200)[0]
        total += math.log(row)
    assert model_value == pytest.approx(total, abs=1e-7)


def test_cat_003_ordinal_probabilities_and_order():
    """JOINT-CAT-003: ordinal_log_probabilities = log of differences of expit (numpy and pytensor); the declared
    order sets the ranks; numbers-as-text levels are ordered as numbers; nominal rows of probabilities sum to 1."""
    rng = np.random.default_rng(0)
    eta = rng.normal(0, 2, size=(4, 7))
    cut = np.sort(rng.normal(0, 2, size=(4, 3)), axis=1)
    at_least = np.concatenate([np.ones((4, 7, 1)), special.expit(eta[..., None] - cut[:, None, :]),
                               np.zeros((4, 7, 1))], axis=-1)
    expected = np.log(at_least[..., :-1] - at_least[..., 1:])
    assert np.allclose(joint_model.ordinal_log_probabilities(eta, cut, 4, np), expected, atol=1e-12)
    tensor = joint_model.ordinal_log_probabilities(pt.as_tensor_variable(eta[0]), pt.as_tensor_variable(cut[0]), 4, pt)
    assert np.allclose(tensor.eval(), expected[0], atol=1e-12)
    frame = _tiny_frame(3)
    frame["n"] = frame["o"].map({"low": "1", "mid": "2", "high": "10"})
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "n", "o"], cluster="site", family="binomial",
                                 levels={"n": ["1", "10", "2"], **_LEVELS}, ordinal={"n": None, "o": _ORDER["o"]})
    n_var, o_var = data.categoricals
    assert list(n_var.ranks) == [0, 2, 1] and list(o_var.ranks) == [2, 0, 1]
    assert data.focus_kind == "categorical" and data.focus_terms == ("n[10]", "n[2]")


def test_cat_004_ordinal_declaration_checked():
    """JOINT-CAT-004: an ordinal name that is numeric, not a predictor, or an order missing a level is refused."""
    frame = _tiny_frame(4)
    base = dict(outcome="y", cluster="site", family="binomial", levels=_LEVELS)
    with pytest.raises(FitError, match="'z', which is numeric; list it under 'categorical'"):
        jm.prepare_joint_data(frame, predictors=["z", "g"], ordinal=["z"], **base)
    with pytest.raises(FitError, match="'o', which is not a predictor"):
        jm.prepare_joint_data(frame, predictors=["z", "g"], ordinal=["o"], **base)
    with pytest.raises(FitError, match="lists \\['low', 'high'\\], but its levels are"):
        jm.prepare_joint_data(frame, predictors=["z", "o"], ordinal={"o": ["low", "high"]}, **base)


# --------------------------------------------------------------------------
# JOINT-CAT-007: draws of the missing focus categories
# --------------------------------------------------------------------------
@pytest.mark.parametrize("ordinal", [False, True])
def test_cat_007_focus_draws_follow_exact_conditional(ordinal):
    """JOINT-CAT-007: for one posterior draw repeated 20,000 times, the drawn level of each missing focus value
    has frequencies within 5 binomial SEs of p(k | y, theta) = P(k) p(y | k) / sum_j P(j) p(y | j), also in a row
    that misses a second categorical (which is then summed over)."""
    frame = _tiny_frame(6)
    data = jm.prepare_joint_data(frame, outcome="y", predictors=["z", "g", "o"], cluster="site", family="binomial",
                                 levels=_LEVELS, ordinal=_ORDER if ordinal else None, focus="g",
                                 missingness_model=False)
    rng = np.random.default_rng(7)
    J = data.n_clusters
    o_params = ({"c1_cutpoints": np.array([-0.6, 0.8]), "c1_coef": np.array([0.5]), "c1_cluster": rng.normal(0, .5, J)}
                if ordinal else {"c1_intercept": np.array([0.3, -0.4]), "c1_coef": np.array([[0.5, -0.2]]),
                                 "c1_cluster": rng.normal(0, .5, (J, 2))})
    point = {"outcome_intercept": np.array(-0.3), "outcome_coef": np.array([0.4, 1.2, -0.9, 0.7, -1.1]),
             "outcome_cluster": rng.normal(0, 0.5, J), "c0_intercept": np.array([0.2, -0.5]),
             "c0_coef": np.array([[0.8, -0.3]]), "c0_cluster": rng.normal(0, 0.5, (J, 2)), **o_params}
    post = {k: np.asarray(v, dtype=float)[None, None] for k, v in point.items()}
    draws = 20_000
    drawn = joint_imputations.draw_focus_missing(data, post, np.zeros(draws, dtype=int), np.random.default_rng(3))
    mis_rows = np.flatnonzero(~data.categoricals[0].observed)
    assert drawn.shape == (draws, mis_rows.size) and set(np.unique(drawn)) <= {0.0, 1.0, 2.0}
    pg = joint_imputations.category_probabilities(data, post, 0, np.array([0]), mis_rows)[0]
    po = joint_imputations.category_probabilities(data, post, 1, np.array([0]), mis_rows)[0]
    assert np.allclose(pg.sum(axis=1), 1.0) and np.allclose(po.sum(axis=1), 1.0)
    zs = data.Z[mis_rows, 0]
    beta = point["outcome_coef"]                       # z, g[green], g[red], o[...], o[...]
    o_codes = data.categoricals[1].codes[mis_rows]
    for col, i in enumerate(mis_rows):
        posterior = np.zeros(3)
        for gi in range(3):
            for oi in ([int(o_codes[col])] if np.isfinite(o_codes[col]) else range(3)):
                eta = (point["outcome_intercept"] + beta[0] * zs[col] + point["outcome_cluster"][data.codes[i]]
                       + (beta[gi] if gi else 0.0) + (beta[2 + oi] if oi else 0.0))
                like = special.expit(eta) if data.y[i] == 1 else special.expit(-eta)
                posterior[gi] += pg[col, gi] * (po[col, oi] if not np.isfinite(o_codes[col]) else 1.0) * like
        posterior /= posterior.sum()
        freq = np.bincount(drawn[:, col].astype(int), minlength=3) / draws
        se = np.sqrt(posterior * (1 - posterior) / draws)
        assert np.all(np.abs(freq - posterior) <= 5 * se + 1e-12), (i, freq, posterior)


# --------------------------------------------------------------------------
# JOINT-CAT-005: a fit with a 3-level focus
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def categorical_fit():
    """A short fit on a simulated registry whose 3-level focus is 39% missing, two sites never recording it."""
    from hmlib.simulate.categorical_focus import categorical_focus_registry

    frame = categorical_focus_registry(5, n_sites=20, n_patients=800)
    return jm.fit_joint_model(frame, outcome="outcome", predictors=["age", "severity", "band"], cluster="site",
                              family="binomial", seed=5, draws=300, tune=300, chains=2,
                              levels={"band": ["normal", "raised", "high"]}), frame


def test_cat_005_fit_contract_and_tables(categorical_fit, tmp_path):
    """JOINT-CAT-005: one contract row per level; settings name the summed-out submodel; the pooling table is
    about the share not 'normal' (its observed shares equal the data's); never-measured sites get level shares
    summing to 1; the narrative gives an odds ratio per level; the step's artifact round-trips; figures draw."""
    from hmlib.figures import joint_model as joint_figures
    from hmlib.steps.joint_model import JointModelArtifact, JointStepResult

    result, frame = categorical_fit
    est = result.to_estimates()
    assert list(est["term"]) == ["Intercept", "age", "severity", "band[raised]", "band[high]", "sd(site)"]
    assert result.settings["categorical_summed_out"] == {"band": "nominal"}
    assert result.data.focus_kind == "categorical" and result.data.focus_terms == ("band[raised]", "band[high]")
    pooled = result.partial_pooling()
    observed = frame.dropna(subset=["band"]).groupby("site")["band"].apply(lambda s: (s != "normal").mean())
    measured = pooled.loc[pooled["n_observed"] > 0].set_index("cluster")
    assert np.allclose(measured["raw_mean"], observed.loc[measured.index])
    assert pooled["pooled_mean"].between(0, 1).all() and (pooled["shrinkage"].between(0, 1)).all()
    unmeasured = result.imputed_in_unmeasured()
    assert len(unmeasured["clusters"]) == 2 and unmeasured["levels"] == ["normal", "raised", "high"]
    assert sum(unmeasured["imputed"]["shares"].values()) == pytest.approx(1.0)
    assert unmeasured["observed"]["shares"]["high"] == pytest.approx((frame["band"] == "high").sum()
                                                                     / frame["band"].notna().sum())
    text = " ".join(result.narrative())
    for term in ("raised", "high"):
        r = result.summary.set_index("term").loc[f"band[{term}]"]
        assert f"'{term}' {r.estimate:.3f} (odds ratio {math.exp(r.estimate):.2f}" in text
    assert "nominal (baseline-category logit) submodel" in text and "not 'normal'" in text
    step = JointStepResult(result, min_cell=11)
    artifact = step.to_artifact()
    artifact.write(tmp_path)
    assert JointModelArtifact.read(tmp_path) == artifact
    assert artifact.settings.categorical_summed_out == {"band": "nominal"}
    figs = step.figures()
    assert len(figs["checks"]) == 2 and figs["pooling"][0].axes[0].collections
    fig = joint_figures.imputed_distribution(unmeasured, focus="band")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["normal", "raised", "high"]
    # the caption counts the rows as patients, or as visits when the params have a visit time (#16)
    n = unmeasured["n_patients"]
    words = {visits: caption_of(JointStepResult(result, min_cell=11, visits=visits).figures()["checks"][1])[1]
             for visits in (False, True)}
    assert f"({n} patients in " in words[False] and f"({n} visits in " in words[True]


# --------------------------------------------------------------------------
# JOINT-CAT-006: the submodels against brms
# --------------------------------------------------------------------------
def _submodel_posterior(ordinal: bool, seed: int = 1):
    """hmlib's categorical submodel on the rows of the reference data where band is recorded (complete there):
    posterior mean and MCSE of each submodel parameter, named as brms names them."""
    import dataclasses

    import arviz as az
    import nutpie

    from hmlib.stats.joint.data import CategoricalPredictor

    name = "joint_categorical_ordinal.csv" if ordinal else "joint_categorical_nominal.csv"
    frame = pd.read_csv(REFERENCE / name).dropna(subset=["band"]).reset_index(drop=True)
    levels = ["normal", "raised", "high"]
    base = jm.prepare_joint_data(frame, outcome="outcome", predictors=["age", "severity"], cluster="site",
                                 family="binomial", missingness_model=False)
    codes = frame["band"].map({v: i for i, v in enumerate(levels)}).to_numpy(dtype=float)
    band = CategoricalPredictor("band", tuple(levels), ("band[raised]", "band[high]"), codes,
                                np.ones(len(frame), bool), ordinal=ordinal, ranks=np.arange(3) if ordinal else None)
    data = dataclasses.replace(base, categoricals=(band,), term_order=(*base.term_order, *band.terms))
    model = jm.build_joint_model(data, parameterisation={"c0": "noncentred"})
    trace = nutpie.sample(nutpie.compile_pymc_model(model), draws=1000, tune=1000, chains=2, seed=seed,
                          progress_bar=False)
    post = trace.posterior
    out = {}

    def put(label, values):
        values = np.asarray(values)
        out[label] = (float(values.mean()), float(az.mcse(az.convert_to_dataset(values[None] if values.ndim == 1
                                                                                 else values))["x"]))

    if ordinal:
        for k in range(2):
            put(f"b_Intercept[{k + 1}]", post["c0_cutpoints"].values[..., k])
        for j, z in enumerate(("age_z", "sev_z")):
            put(f"b_{z}", post["c0_coef"].values[..., j])
        put("sd_site__Intercept", post["c0_cluster_sd"].values)
    else:
        for k, level in enumerate(("raised", "high")):
            put(f"b_mu{level}_Intercept", post["c0_intercept"].values[..., k])
            for j, z in enumerate(("age_z", "sev_z")):
                put(f"b_mu{level}_{z}", post["c0_coef"].values[..., j, k])
            put(f"sd_site__mu{level}_Intercept", post["c0_cluster_sd"].values[..., k])
    return out


@pytest.mark.parametrize("ordinal", [False, True])
def test_cat_006_submodels_agree_with_brms(ordinal):
    """JOINT-CAT-006: on complete bands the categorical submodel's posterior means (intercepts or cut points,
    coefficients, cluster SDs) equal brms categorical() / cumulative() with the same priors within 4 combined
    Monte Carlo SEs (tests/results/joint_categorical.R, brms 2.18, 4 x 1000 draws)."""
    reference = json.loads((REFERENCE / "joint_categorical.json").read_text())
    brms = reference["brms_ordinal" if ordinal else "brms_nominal"]["runs"][0]["parameters"]
    ours = _submodel_posterior(ordinal)
    for label, (mean, mcse) in ours.items():
        b = brms[label]
        assert abs(mean - b["mean"]) <= 4 * math.hypot(mcse, b["mcse"]), (label, mean, b["mean"], mcse, b["mcse"])


# --------------------------------------------------------------------------
# JOINT-CAT-008: the params' ordinal declaration
# --------------------------------------------------------------------------
def test_cat_008_params_ordinal_checked_before_any_fit(write_case):
    """JOINT-CAT-008: 'ordinal' takes a list or a mapping to the order; a name outside the predictors is a ParamsError;
    a numeric column not in 'categorical', or an order that does not list the levels, is a DataError at load (before
    any model); the registry's params carry the order to the joint model."""
    from hmlib.data import load_registry
    from hmlib.exceptions import DataError, ParamsError
    from hmlib.params import load_params
    from hmlib.simulate.registries import small_registry

    frame = small_registry()
    frame["grade"] = np.where(frame["lab"].isna(), None,
                              np.where(frame["lab"] < frame["lab"].median(), "mild", "severe"))
    frame.loc[frame.index % 7 == 0, "grade"] = "moderate"
    ok = load_registry(load_params(write_case(frame, predictors=["age", "grade"],
                                              ordinal={"grade": ["mild", "moderate", "severe"]})))
    assert ok.params.ordinal == {"grade": ("mild", "moderate", "severe")}
    listed = load_params(write_case(frame, predictors=["age", "grade"], ordinal=["grade"]))
    assert listed.ordinal == {"grade": None}
    with pytest.raises(ParamsError, match="'ordinal' names \\['sex'\\], which are not in 'predictors'"):
        load_params(write_case(frame, predictors=["age", "grade"], ordinal=["sex"]))
    with pytest.raises(DataError, match="'age' is listed under 'ordinal' but is read as numbers"):
        load_registry(load_params(write_case(frame, predictors=["age", "grade"], ordinal=["age"])))
    with pytest.raises(DataError, match="'ordinal.grade' lists \\['mild', 'severe'\\]"):
        load_registry(load_params(write_case(frame, predictors=["age", "grade"],
                                             ordinal={"grade": ["mild", "severe"]})))
    data = jm.prepare_joint_data(ok.frame, outcome="died", predictors=["age", "grade"], cluster="site",
                                 family="binomial", levels=ok.levels, ordinal=dict(ok.params.ordinal))
    assert data.categoricals[0].ordinal and list(data.categoricals[0].ranks) == [0, 1, 2]


# --------------------------------------------------------------------------
# JOINT-CAT-009: the whole model against multilevel imputation (jomo) and the truth
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_cat_009_whole_model_against_jomo():
    """JOINT-CAT-009: on the reference data with 33% of bands missing (two sites never recording them), the joint
    model's band log odds ratios (full sampler sizes) lie within 0.5 of jomo.glmer's pooled standard error of jomo's
    estimates (20 imputations; tests/results/joint_categorical.R), and their intervals cover the truth (0.5, 1.0).
    brms's mi() takes no categorical variable, so substantive-model-compatible multilevel imputation is the R
    comparator of the whole model."""
    reference = json.loads((REFERENCE / "joint_categorical.json").read_text())["jomo_nominal"]["terms"]
    frame = pd.read_csv(REFERENCE / "joint_categorical_nominal.csv")
    result = jm.fit_joint_model(frame, outcome="outcome", predictors=["age", "severity", "band"], cluster="site",
                                family="binomial", seed=3, levels={"band": ["normal", "raised", "high"]})
    table = result.summary.set_index("term")
    for term, truth in (("band[raised]", 0.5), ("band[high]", 1.0)):
        ours, theirs = table.loc[term], reference[term]
        assert abs(ours.estimate - theirs["estimate"]) <= 0.5 * theirs["std_error"], (term, ours.estimate, theirs)
        assert ours.ci_lower <= truth <= ours.ci_upper
