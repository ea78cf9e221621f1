"""Multiple imputation of clustered data: behaviour, theory, truth and R parity.

Test IDs: MI-API (interface), MI-SEED (determinism), MI-2LPAN / MI-2LNORM /
MI-2LPMM / MI-2LBIN / MI-2LONLY (the multilevel models, named as mice's
methods), MI-FEW (few clusters: cluster means, the tau bound, the
extrapolation note), MI-FLAT-ICC (the theory of flat imputation's attenuation),
MI-STRAT / MI-FE (the other approaches and their fall-backs), MI-BAD (bad
input), MI-TRUTH (simulation with known truth), MI-RPARITY (R's mice on the
reference registry).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from hmlib.exceptions import DataError
from hmlib.simulate.registries import few_clusters_data, icc_imputation_data
from hmlib.stats import imputation as imp
from hmlib.stats.imputation import impute, kernels, split_rhat, univariate
from hmlib.stats.mixed import fit_random_intercept
from hmlib.stats.pooling import analyse_imputations
from conftest import load_bench

REFERENCE = Path("/work/shared/reference")


def anova_icc(values, groups) -> float:
    """One-way ANOVA estimator of the intraclass correlation (unbalanced: n0 correction)."""
    frame = pd.DataFrame({"v": np.asarray(values, float), "g": np.asarray(groups)})
    stats = frame.groupby("g")["v"].agg(["mean", "count"])
    n, k = len(frame), len(stats)
    grand = frame["v"].mean()
    ssb = float((stats["count"] * (stats["mean"] - grand) ** 2).sum())
    ssw = float(((frame["v"] - frame.groupby("g")["v"].transform("mean")) ** 2).sum())
    msb, msw = ssb / (k - 1), ssw / (n - k)
    n0 = (n - (stats["count"] ** 2).sum() / n) / (k - 1)
    return (msb - msw) / (msb + (n0 - 1) * msw)


ROLES = dict(cluster="site", outcome="y", outcome_family="binomial", predictors=["x"])


# ---------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", imp.METHODS)
def test_MI_API_001_result_structure(method):
    """MI-API-001: m completed frames, only missing cells filled, mask, chain means (m x iterations), R-hat."""
    data, _ = icc_imputation_data(1)
    data["group"] = np.where(data["site"] % 2 == 0, "a", "b")
    original = data.copy()
    res = impute(data, method=method, cluster_covariates=["group"], m=3, iterations=4, seed=2, **ROLES)
    pd.testing.assert_frame_equal(data, original)                       # input untouched
    assert res.method == method and res.m == 3 and res.iterations == 4 and len(res.completed) == 3
    assert list(res.completed[0].columns) == ["site", "y", "x", "group"]
    mask = data["x"].isna().to_numpy()
    assert res.imputed_mask["x"].to_numpy().tolist() == mask.tolist()
    assert not res.imputed_mask[["site", "y", "group"]].to_numpy().any()
    for frame in res.completed:
        assert frame.notna().all().all()
        np.testing.assert_array_equal(frame["x"].to_numpy()[~mask], data["x"].to_numpy()[~mask])
    assert not np.allclose(res.completed[0]["x"][mask], res.completed[1]["x"][mask])
    assert res.chain_means["x"].shape == (3, 4)
    np.testing.assert_allclose(res.chain_means["x"][:, -1],
                               [f["x"].to_numpy()[mask].mean() for f in res.completed])
    assert set(res.rhat) == {"x"} and set(res.models) == {"x"}
    assert res.label == f"{method}_mi"
    assert "x" in res.summary()


def test_MI_SEED_001_deterministic_for_a_seed():
    """MI-SEED-001: same seed, same data sets; another seed, other data sets (every method)."""
    data, _ = icc_imputation_data(2)
    for method in imp.METHODS:
        a = impute(data, method=method, m=2, iterations=3, seed=7, **ROLES)
        b = impute(data, method=method, m=2, iterations=3, seed=7, **ROLES)
        c = impute(data, method=method, m=2, iterations=3, seed=8, **ROLES)
        for fa, fb in zip(a.completed, b.completed):
            pd.testing.assert_frame_equal(fa, fb)
        assert not a.completed[0].equals(c.completed[0])


def test_MI_RHAT_001_split_rhat():
    """MI-RHAT-001: split R-hat is about 1 for exchangeable chains and large for separated ones."""
    rng = np.random.default_rng(0)
    same = rng.normal(size=(4, 200))
    assert split_rhat(same) == pytest.approx(1.0, abs=0.02)
    shifted = same + np.arange(4)[:, None] * 3
    assert split_rhat(shifted) > 2
    trend = same + np.linspace(0, 6, 200)[None, :]                      # caught by splitting
    assert split_rhat(trend) > 1.5
    assert np.isnan(split_rhat(same[:, :3]))


# ---------------------------------------------------------------------------
# The multilevel models
# ---------------------------------------------------------------------------
def test_MI_2LPAN_001_gibbs_posterior_matches_likelihood():
    """MI-2LPAN-001: the random-intercept Gibbs sampler centres on lme4-exact ML fit (tau^2, sigma^2, BLUPs)."""
    rng = np.random.default_rng(5)
    J, nj = 60, 30
    g = np.repeat(np.arange(J), nj)
    x = rng.normal(size=g.size)
    y = 2 + 0.7 * x + rng.normal(0, 0.8, J)[g] + rng.normal(0, 1, g.size)
    mis = rng.random(g.size) < 0.3
    X = np.column_stack([np.ones(g.size), x])
    fit = fit_random_intercept(y[~mis], X[~mis], g[~mis], family="gaussian")
    state, tau2, sig2, draws = {}, [], [], []
    for _ in range(600):
        draws.append(kernels.ri_gibbs_draw(X[~mis], y[~mis], g[~mis], X[mis], g[mis], J, rng, state=state,
                                           hetero=False, pmm=False, donors=5))
        tau2.append(state["tau2"])
        sig2.append(state["sig2"])
    _, scale = kernels.standardise_target(y[~mis])
    tau2 = np.array(tau2[50:]) * scale ** 2
    sig2 = np.array(sig2[50:]) * scale ** 2
    # posterior means vs ML (posterior of tau^2 lies a little above ML with J = 60)
    assert tau2.mean() == pytest.approx(fit.cluster_sd ** 2, rel=0.15)
    assert sig2.mean() == pytest.approx(fit.residual_sd ** 2, rel=0.03)
    blup = X[mis] @ fit.coef + fit.cluster_effects[g[mis]]
    centre = np.mean(draws[50:], axis=0)
    assert np.sqrt(np.mean((centre - blup) ** 2)) < 0.06
    spread = np.var(np.array(draws[50:]) - blup, axis=0).mean()
    assert spread == pytest.approx(fit.residual_sd ** 2 + np.mean(fit.cluster_effect_sd ** 2), rel=0.05)
    t = tau2 - tau2.mean()
    assert abs(t[1:] @ t[:-1] / (t @ t)) < 0.2                          # mixes well between iterations


def test_MI_FLAT_ICC_001_attenuation_is_one_minus_q_squared():
    """MI-FLAT-ICC-001: flat imputation of an MCAR variable from its marginal gives ICC (1 - q)^2 ICC.

    The outcome is independent of x, so the flat model is x's marginal
    distribution; pairs of patients in a cluster are both observed with
    probability (1 - q)^2, the only pairs that keep their covariance. The
    multilevel model keeps the ICC.
    """
    rng = np.random.default_rng(11)
    J, nj, icc, q = 150, 30, 0.5, 0.5
    site = np.repeat(np.arange(J), nj)
    x = np.sqrt(icc) * rng.normal(size=J)[site] + np.sqrt(1 - icc) * rng.normal(size=site.size)
    y = (rng.random(site.size) < 0.3).astype(float)
    x_obs = np.where(rng.random(site.size) < q, np.nan, x)
    data = pd.DataFrame({"site": site, "y": y, "x": x_obs})
    icc_full = anova_icc(x, site)
    flat = impute(data, method="flat", m=5, iterations=2, seed=3, **ROLES)
    icc_flat = np.mean([anova_icc(f["x"], site) for f in flat.completed])
    assert icc_flat == pytest.approx((1 - q) ** 2 * icc_full, abs=0.025)  # 0.125, not 0.25 or 0.5
    multi = impute(data, method="multilevel", m=5, iterations=3, seed=3, **ROLES)
    icc_multi = np.mean([anova_icc(f["x"], site) for f in multi.completed])
    assert icc_multi == pytest.approx(icc_full, abs=0.05)


def test_MI_2LBIN_001_binary_keeps_cluster_structure():
    """MI-2LBIN-001: 2l.bin imputation keeps the ICC of a clustered binary variable; flat attenuates it."""
    rng = np.random.default_rng(12)
    J, nj, q = 120, 25, 0.4
    site = np.repeat(np.arange(J), nj)
    b = (rng.random(site.size) < special.expit(-0.3 + rng.normal(0, 1.5, J)[site])).astype(float)
    y = rng.normal(size=site.size)
    b_obs = np.where(rng.random(site.size) < q, np.nan, b)
    data = pd.DataFrame({"site": site, "y": y, "b": b_obs})
    roles = dict(cluster="site", outcome="y", outcome_family="gaussian", predictors=["b"])
    icc_full = anova_icc(b, site)
    multi = impute(data, method="multilevel", m=4, iterations=3, seed=1, **roles)
    flat = impute(data, method="flat", m=4, iterations=3, seed=1, **roles)
    for frame in multi.completed:
        assert set(np.unique(frame["b"])) == {0.0, 1.0}
    icc_multi = np.mean([anova_icc(f["b"], site) for f in multi.completed])
    icc_flat = np.mean([anova_icc(f["b"], site) for f in flat.completed])
    assert icc_multi == pytest.approx(icc_full, abs=0.04)
    assert icc_flat == pytest.approx((1 - q) ** 2 * icc_full, abs=0.04)
    assert "2l.bin" in multi.models["b"]


def test_MI_2LNORM_001_cluster_specific_residual_variance():
    """MI-2LNORM-001: with cluster_residual_variance the imputations' spread follows each cluster's SD."""
    rng = np.random.default_rng(13)
    J, nj = 40, 40
    site = np.repeat(np.arange(J), nj)
    sd = np.where(np.arange(J) < J // 2, 0.3, 2.0)
    x = rng.normal(0, 1, J)[site] + sd[site] * rng.normal(size=site.size)
    y = rng.normal(size=site.size)
    x_obs = np.where(rng.random(site.size) < 0.3, np.nan, x)
    data = pd.DataFrame({"site": site, "y": y, "x": x_obs})
    roles = dict(cluster="site", outcome="y", outcome_family="gaussian", predictors=["x"])
    mask = np.isnan(x_obs)

    def within_sd(res, clusters):
        out = []
        for frame in res.completed:
            values = frame["x"].to_numpy()
            for j in clusters:
                rows = mask & (site == j)
                out.append(values[rows].std(ddof=1))
        return float(np.mean(out))

    hetero = impute(data, method="multilevel", cluster_residual_variance=True, m=3, iterations=4, seed=2,
                    **roles)
    homo = impute(data, method="multilevel", m=3, iterations=4, seed=2, **roles)
    small, large = range(J // 2), range(J // 2, J)
    assert within_sd(hetero, small) == pytest.approx(0.3, rel=0.25)
    assert within_sd(hetero, large) == pytest.approx(2.0, rel=0.15)
    assert within_sd(homo, small) > 3 * within_sd(hetero, small)       # one pooled SD for all clusters
    assert "2l.norm" in hetero.models["x"] and "2l.pan" in homo.models["x"]


def test_MI_2LPMM_001_pmm_draws_observed_values_within_cluster_structure():
    """MI-2LPMM-001: pmm imputes observed values only; multilevel pmm keeps the ICC (flat pmm does not)."""
    data, x = icc_imputation_data(3, n_clusters=80, per_cluster=25, icc=0.5, missing=0.4, binary_outcome=False)
    roles = dict(ROLES, outcome_family="gaussian")
    observed = set(np.round(data["x"].dropna(), 12))
    multi = impute(data, method="multilevel", continuous="pmm", m=3, iterations=3, seed=4, **roles)
    flat = impute(data, method="flat", continuous="pmm", m=3, iterations=3, seed=4, **roles)
    for res in (multi, flat):
        for frame in res.completed:
            assert set(np.round(frame["x"], 12)) <= observed
    site = data["site"].to_numpy()
    icc_full = anova_icc(x, site)
    assert np.mean([anova_icc(f["x"], site) for f in multi.completed]) == pytest.approx(icc_full, abs=0.06)
    assert np.mean([anova_icc(f["x"], site) for f in flat.completed]) < icc_full - 0.1
    assert multi.label == "multilevel_pmm_mi"


def test_MI_2LPAN_002_cluster_without_observed_value_gets_a_cluster_effect_draw():
    """MI-2LPAN-002: a cluster that never observes x gets cluster effects drawn from N(0, tau^2), not 0."""
    rng = np.random.default_rng(14)
    J, nj = 40, 30
    site = np.repeat(np.arange(J), nj)
    x = rng.normal(0, 1.0, J)[site] + rng.normal(0, 0.5, site.size)
    y = rng.normal(size=site.size)
    x_obs = np.where((site == 0) | (rng.random(site.size) < 0.1), np.nan, x)
    data = pd.DataFrame({"site": site, "y": y, "x": x_obs})
    res = impute(data, method="multilevel", m=20, iterations=3, seed=5, cluster="site", outcome="y",
                 outcome_family="gaussian", predictors=["x"])
    means = np.array([f.loc[site == 0, "x"].mean() for f in res.completed])
    # spread of the empty cluster's mean across imputations ~ sqrt(tau^2 + sigma^2 / 30) ~ 1
    assert 0.6 < means.std(ddof=1) < 1.5
    assert abs(means.mean()) < 0.6


# ---------------------------------------------------------------------------
# Few clusters
# ---------------------------------------------------------------------------
FOUR_ROLES = dict(cluster="site", outcome="y", outcome_family="binomial", predictors=["age", "sev", "x"])


def test_MI_FEW_001_four_clusters_never_measured_cluster_stays_plausible():
    """MI-FEW-001: 4 clusters, cluster means on (the default), one cluster never measures x: its imputations
    stay on the variable's scale. Before the fix they were 10^4-10^8 SDs off (cluster-mean coefficients
    identified by 3 clusters, extrapolated to the 4th)."""
    data, x = few_clusters_data(1)
    res = impute(data, method="multilevel", m=10, iterations=5, seed=1, **FOUR_ROLES)
    sd = np.nanstd(data["x"])
    empty = (data["site"] == 3).to_numpy()
    means = np.array([f.loc[empty, "x"].mean() for f in res.completed])
    # the clinic's own effect is unknown: its mean imputed value scatters with tau (<= 1 SD) around x'beta
    assert np.max(np.abs(means - x[empty].mean())) < 3 * sd
    assert means.std(ddof=1) < 1.0 * sd
    assert res.cluster_means_dropped == {"x": {"clusters": 3, "cluster_columns": 3, "needed": 15}}
    assert "without cluster means" in res.models["x"]
    assert any("cluster means of the other variables were left out" in n for n in res.notes)
    assert res.extrapolated == {}


def test_MI_FEW_002_without_the_safeguards_the_engine_extrapolates_and_says_so(monkeypatch):
    """MI-FEW-002: with the cluster-means rule, the tau bound and the ridge switched off (the old engine),
    the 4-cluster case gives absurd values, and the range check names them in a note."""
    monkeypatch.setattr(univariate, "MIN_CLUSTERS_FOR_MEANS", 0)
    monkeypatch.setattr(univariate, "CLUSTERS_PER_CLUSTER_COLUMN", 0)
    monkeypatch.setattr(kernels, "TAU_MAX", np.inf)
    monkeypatch.setattr(univariate, "CLUSTER_COEF_PRIOR_SD", np.inf)
    data, x = few_clusters_data(1)
    res = impute(data, method="multilevel", m=10, iterations=5, seed=1, **FOUR_ROLES)
    sd = np.nanstd(data["x"])
    empty = (data["site"] == 3).to_numpy()
    worst = max(np.abs(f.loc[empty, "x"] - x[empty].mean()).max() for f in res.completed) / sd
    assert worst > 100
    assert res.extrapolated["x"] > univariate.EXTRAPOLATION_SDS
    assert any("beyond its observed range" in n for n in res.notes)


def test_MI_FEW_003_cluster_means_kept_with_enough_clusters():
    """MI-FEW-003: the rule leaves the cluster means in when >= max(10, 5 per cluster-level column) clusters
    observe the target (here 40 clusters, 3 cluster-mean columns), and drops them below."""
    rng = np.random.default_rng(3)
    for J, dropped in ((40, False), (12, True)):
        site = np.repeat(np.arange(J), 20)
        age = rng.normal(size=site.size)
        sev = rng.normal(size=site.size)
        x = 0.5 * age + rng.normal(0, 0.5, J)[site] + rng.normal(size=site.size)
        y = (rng.random(site.size) < special.expit(0.5 * x)).astype(float)
        data = pd.DataFrame({"site": site, "y": y, "age": age, "sev": sev,
                             "x": np.where(rng.random(site.size) < 0.3, np.nan, x)})
        res = impute(data, method="multilevel", m=2, iterations=2, seed=1, **FOUR_ROLES)
        assert ("x" in res.cluster_means_dropped) is dropped, J
        assert res.models["x"].endswith("with cluster means") is not dropped
        off = impute(data, method="multilevel", cluster_means=False, m=2, iterations=2, seed=1, **FOUR_ROLES)
        assert off.cluster_means_dropped == {} and "cluster means" not in off.models["x"]


def test_MI_FEW_004_tau_draw_is_the_truncated_scaled_inverse_chi2():
    """MI-FEW-004: tau^2 | u under a uniform prior on (0, TAU_MAX]: S / chi2_df truncated at TAU_MAX^2.
    Kolmogorov-Smirnov against the exact truncated CDF, where the bound binds often (df 2) and never."""
    from scipy import stats

    rng = np.random.default_rng(0)
    for scale_sum, df in ((0.6, 2), (0.05, 30)):
        draws = np.array([kernels.draw_tau2(scale_sum, df, rng) for _ in range(4000)])
        assert draws.max() <= kernels.TAU_MAX ** 2
        lower = scale_sum / kernels.TAU_MAX ** 2
        tail = stats.chi2.sf(lower, df)

        def cdf(t2):
            # P(S / X <= t2) = P(X >= S / t2), X ~ chi2_df truncated to X >= lower
            return np.clip(stats.chi2.sf(np.maximum(scale_sum / np.asarray(t2), lower), df) / tail, 0, 1)

        assert stats.kstest(draws, cdf).pvalue > 0.001


def test_MI_2LONLY_001_cluster_covariate_imputed_at_cluster_level():
    """MI-2LONLY-001: a cluster covariate missing for whole clusters gets one value per cluster, from cluster means."""
    rng = np.random.default_rng(15)
    J, nj = 80, 20
    site = np.repeat(np.arange(J), nj)
    w = rng.normal(size=J)                                   # cluster-level
    x = 0.9 * w[site] + rng.normal(0, 0.6, site.size)        # its cluster mean reveals w
    y = (rng.random(site.size) < special.expit(0.5 * x)).astype(float)
    gone = rng.random(J) < 0.3
    data = pd.DataFrame({"site": site, "y": y, "x": x, "w": np.where(gone[site], np.nan, w[site])})
    data.loc[data.index[:5], "x"] = np.nan
    for method in ("multilevel", "fixed_effects", "stratified"):
        res = impute(data, method=method, cluster_covariates=["w"], m=4, iterations=3, seed=6, **ROLES)
        for frame in res.completed:
            assert frame.groupby("site")["w"].nunique().max() == 1
            imputed = frame.groupby("site")["w"].first().to_numpy()[gone]
            assert np.corrcoef(imputed, w[gone])[0, 1] > 0.6
        assert "2lonly.norm" in res.models["w"]
    pmm = impute(data, method="multilevel", cluster_covariates=["w"], continuous="pmm", m=2, iterations=2,
                 seed=6, **ROLES)
    assert set(np.round(pmm.completed[0]["w"], 12)) <= set(np.round(w[~gone], 12))
    flat = impute(data, method="flat", cluster_covariates=["w"], m=2, iterations=2, seed=6, **ROLES)
    assert flat.completed[0].groupby("site")["w"].nunique().max() > 1   # flat ignores the level


def test_MI_2LPAN_003_higher_levels_enter_as_fixed_effects():
    """MI-2LPAN-003: an empty cluster's imputations centre on its higher-level unit's mean."""
    rng = np.random.default_rng(16)
    J, nj = 60, 20
    site = np.repeat(np.arange(J), nj)
    region = np.where(np.arange(J) < 30, "north", "south")
    x = np.where(region == "north", -2.0, 2.0)[site] + rng.normal(0, 0.3, J)[site] + rng.normal(0, 0.5, site.size)
    y = rng.normal(size=site.size)
    x_obs = np.where(np.isin(site, [0, 59]) | (rng.random(site.size) < 0.1), np.nan, x)
    data = pd.DataFrame({"site": site, "region": region[site], "y": y, "x": x_obs})
    roles = dict(cluster="site", outcome="y", outcome_family="gaussian", predictors=["x"])
    res = impute(data, method="multilevel", higher_levels=["region"], m=6, iterations=3, seed=7, **roles)
    north = np.mean([f.loc[site == 0, "x"].mean() for f in res.completed])
    south = np.mean([f.loc[site == 59, "x"].mean() for f in res.completed])
    assert north == pytest.approx(-2.0, abs=0.5) and south == pytest.approx(2.0, abs=0.5)


def test_MI_CAT_001_categorical_baseline_category_logits():
    """MI-CAT-001: a 3-level categorical keeps its dtype and levels; its cluster structure is kept."""
    rng = np.random.default_rng(17)
    J, nj = 60, 30
    site = np.repeat(np.arange(J), nj)
    favourite = rng.integers(0, 3, J)
    cat = np.where(rng.random(site.size) < 0.8, favourite[site], rng.integers(0, 3, site.size))
    labels = np.array(["low", "mid", "high"])[cat]
    y = rng.normal(size=site.size)
    miss = rng.random(site.size) < 0.3
    data = pd.DataFrame({"site": site, "y": y,
                         "grade": pd.Categorical(np.where(miss, None, labels), categories=["high", "low", "mid"])})
    res = impute(data, method="multilevel", m=3, iterations=3, seed=8, cluster="site", outcome="y",
                 outcome_family="gaussian", predictors=["grade"], kinds={"grade": "categorical"})
    for frame in res.completed:
        assert isinstance(frame["grade"].dtype, pd.CategoricalDtype)
        assert list(frame["grade"].cat.categories) == ["high", "low", "mid"]
        agree = (frame["grade"].to_numpy()[miss] == labels[miss]).mean()
        assert agree > 0.6                                   # flat would give about 1/3
    assert "baseline-category logits" in res.models["grade"]


# ---------------------------------------------------------------------------
# Stratified and fixed effects: where they break
# ---------------------------------------------------------------------------
def test_MI_STRAT_001_breakdowns_are_reported_and_filled():
    """MI-STRAT-001: a one-patient cluster, a cluster with no observed value and a one-level binary fall back."""
    data, _ = icc_imputation_data(4, n_clusters=10, per_cluster=20)
    data = pd.concat([data, pd.DataFrame({"site": [99], "y": [1.0], "x": [np.nan]})], ignore_index=True)
    data.loc[data["site"] == 3, "x"] = np.nan
    data["b"] = (np.random.default_rng(0).random(len(data)) < 0.5).astype(float)
    data.loc[data["site"] == 5, "b"] = 1.0
    data.loc[data.index[(data["site"] == 5).to_numpy()][:4], "b"] = np.nan
    res = impute(data, method="stratified", m=2, iterations=2, seed=9, cluster="site", outcome="y",
                 outcome_family="binomial", predictors=["x", "b"])
    assert res.strata == "site"
    text = " ".join(res.notes)
    assert "'x' broke down in 2 of 11 strata" in text and "no observed value" in text
    assert "'b' broke down" in text and "a single observed value" in text
    # the same, structurally (what imputation_step uses)
    assert res.fallbacks["x"]["strata"] == 2 and res.fallbacks["x"]["of"] == 11
    assert res.fallbacks["x"]["reasons"]["no observed value"] == 2
    assert res.fallbacks["b"]["reasons"] == {"a single observed value": 1}
    assert impute(data, method="multilevel", m=2, iterations=2, seed=9, cluster="site", outcome="y",
                  outcome_family="binomial", predictors=["x", "b"]).fallbacks == {}
    for frame in res.completed:
        assert frame[["x", "b"]].notna().all().all()


def test_MI_STRAT_002_cluster_type_strata():
    """MI-STRAT-002: with a complete categorical cluster covariate, strata are cluster types."""
    data, _ = icc_imputation_data(5)
    data["kind"] = np.where(data["site"] < 15, "major", "unit")
    res = impute(data, method="stratified", cluster_covariates=["kind"], m=2, iterations=2, seed=1, **ROLES)
    assert res.strata == "kind"
    forced = impute(data, method="stratified", cluster_covariates=["kind"], strata="site", m=2, iterations=2,
                    seed=1, **ROLES)
    assert forced.strata == "site"


def test_MI_FE_001_fixed_effects_track_clusters_and_fill_empty_ones():
    """MI-FE-001: cluster intercepts keep the cluster means; an empty cluster gets a noted draw."""
    rng = np.random.default_rng(18)
    J, nj = 30, 25
    site = np.repeat(np.arange(J), nj)
    effect = rng.normal(0, 2, J)
    x = effect[site] + rng.normal(0, 0.5, site.size)
    y = (rng.random(site.size) < 0.4).astype(float)
    b = (rng.random(site.size) < special.expit(effect[site])).astype(float)
    miss = rng.random(site.size) < 0.3
    data = pd.DataFrame({"site": site, "y": y, "x": np.where(miss | (site == 0), np.nan, x),
                         "b": np.where(miss, np.nan, b)})
    res = impute(data, method="fixed_effects", m=3, iterations=3, seed=2, cluster="site", outcome="y",
                 outcome_family="binomial", predictors=["x", "b"])
    frame = res.completed[0]
    rows = miss & (site != 0)
    means = pd.Series(frame["x"].to_numpy()[rows]).groupby(site[rows]).mean()
    assert np.corrcoef(means, effect[means.index])[0, 1] > 0.95
    assert any("never observe" in n for n in res.notes)
    rate = pd.Series(frame["b"].to_numpy()[miss]).groupby(site[miss]).mean()
    assert np.corrcoef(rate, effect[rate.index])[0, 1] > 0.6


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
def test_MI_BAD_001_clear_errors():
    """MI-BAD-001: empty variable, missing cluster id, varying cluster covariate, unknown method/options."""
    data, _ = icc_imputation_data(6)
    empty = data.assign(x=np.nan)
    with pytest.raises(DataError, match="missing in all"):
        impute(empty, method="multilevel", m=2, iterations=2, **ROLES)
    with pytest.raises(DataError, match="cluster column"):
        impute(data.assign(site=data["site"].where(data.index > 0)), method="flat", m=2, **ROLES)
    with pytest.raises(DataError, match="varies within"):
        impute(data.assign(w=np.arange(len(data), dtype=float)), method="multilevel", cluster_covariates=["w"],
               m=2, **ROLES)
    with pytest.raises(DataError, match="not in the data"):
        impute(data, method="flat", m=2, cluster="site", outcome="y", outcome_family="binomial",
               predictors=["nope"])
    with pytest.raises(ValueError, match="method"):
        impute(data, method="joint", **ROLES)
    with pytest.raises(ValueError, match="continuous"):
        impute(data, method="flat", continuous="cart", **ROLES)
    with pytest.raises(ValueError, match="m must"):
        impute(data, method="flat", m=0, **ROLES)
    with pytest.raises(DataError, match="not nested"):
        impute(data.assign(r=np.arange(len(data)) % 3), method="multilevel", higher_levels=["r"], m=2, **ROLES)
    with pytest.raises(DataError, match="0/1"):
        impute(data.assign(y=data["y"] * 2 + 1), method="flat", m=2, **ROLES)


def test_MI_BAD_002_collinear_singleton_one_level_do_not_crash():
    """MI-BAD-002: collinear predictors are dropped (noted); singleton clusters and one-level binaries impute."""
    data, _ = icc_imputation_data(7)
    data["z"] = np.random.default_rng(1).normal(size=len(data))
    data["z2"] = 2 * data["z"] + 1                          # collinear with z
    data["x2"] = 2 * data["x"] + 1                          # predicts x exactly where observed
    data["b"] = np.where(np.arange(len(data)) % 5 == 0, np.nan, 1.0)   # one observed level
    data = pd.concat([data, pd.DataFrame({"site": [500], "y": [0.0], "x": [np.nan], "x2": [0.3], "b": [1.0],
                                            "z": [0.1], "z2": [1.2]})],
                     ignore_index=True)
    for method in imp.METHODS:
        res = impute(data, method=method, m=2, iterations=2, seed=3, cluster="site", outcome="y",
                     outcome_family="binomial", predictors=["x", "x2", "b", "z", "z2"])
        for frame in res.completed:
            assert frame[["x", "x2", "b"]].notna().all().all()
            assert (frame["b"] == 1.0).all()
        assert any("single observed value" in n for n in res.notes)
        if method in ("flat", "multilevel"):
            assert any("linearly dependent" in n for n in res.notes)


# ---------------------------------------------------------------------------
# Truth and R parity
# ---------------------------------------------------------------------------
def test_MI_TRUTH_001_multilevel_recovers_truth_small():
    """MI-TRUTH-001: 10 simulated registries: lactate and site SD within 3 MC SE of truth, coverage >= 8/10.

    The full study (100 replicates, m = 20) is ``bench/imputation_truth.py``.
    """
    truth = load_bench("imputation_truth")
    out = truth.run(reps=10, methods=("multilevel",), m=10, iterations=6, n_patients=3000, verbose=False)
    for term in ("lactate", "sd(site)"):
        s = out["multilevel"][term]
        assert abs(s["bias"]) < 3 * s["bias_mc_se"] + 0.01, (term, s)
        assert s["coverage"] >= 0.8, (term, s)
        # pooled SEs agree with the spread of the estimates (within the noise of 10 replicates)
        assert 0.5 < s["mean_se"] / s["empirical_sd"] < 2.0, (term, s)


def test_MI_RPARITY_001_sim_registry_against_mice():
    """MI-RPARITY-001: sim_registry.csv, m = 20: multilevel vs mice 2l.pan/2l.norm, flat pmm vs mice pmm.

    Monte Carlo error: each side's pooled estimate varies between imputation
    runs with SD ~ sqrt(B / m) (B the between-imputation variance); the
    difference of two runs has SD sqrt(B_ours / m + B_R / m). We require
    agreement within 3 such SDs (plus 3 for the SD term, using the log-scale
    B transformed back).
    """
    ref = json.loads((REFERENCE / "r_methods_sim_registry.json").read_text())["methods"]
    data = pd.read_csv(REFERENCE / "sim_registry.csv")
    predictors = ["lactate", "age", "severity"]
    pairs = {("multilevel", "norm"): ["mice_2l_pan_ri", "mice_2l_norm"], ("flat", "pmm"): ["mice_flat_pmm"]}
    for (method, cont), names in pairs.items():
        res = impute(data, method=method, continuous=cont, cluster="site", outcome="outcome",
                     outcome_family="binomial", predictors=predictors, m=20, iterations=10, seed=2026)
        pooled = analyse_imputations(res, outcome="outcome", predictors=predictors, cluster="site",
                                     family="binomial")
        lac = pooled.term("lactate")
        i = pooled.terms.index("lactate")
        b_ours = pooled.between[i]
        sd_i = pooled.terms.index("sd(site)")
        sd_est = pooled.estimate[sd_i]
        b_sd_ours = pooled.between[sd_i] * sd_est ** 2                # delta method, SD scale
        for name in names:
            r = ref[name]
            t_r = r["lactate"]["se"] ** 2
            b_r = r["lactate"]["fmi_lambda"] * t_r / (1 + 1 / 20)
            mc = np.sqrt(b_ours / 20 + b_r / 20)
            assert abs(lac["estimate"] - r["lactate"]["estimate"]) < 3 * mc, (method, name, lac, mc)
            assert lac["std_error"] == pytest.approx(r["lactate"]["se"], rel=0.15)
            assert abs(sd_est - r["site_sd"]) < 3 * np.sqrt(2 * b_sd_ours / 20) + 0.01, (name, sd_est)
