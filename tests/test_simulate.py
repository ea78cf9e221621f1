"""The simulated registries (hmlib.simulate): reproducible, documented, unchanged, true to their truth.

Each generator of :mod:`hmlib.simulate` is checked for:

SIM-001  the same seed gives the same data, another seed other data
SIM-002  the columns (in order) its docstring documents
SIM-003  the data the tests, benchmarks and R reference numbers were computed on are unchanged:
         fingerprints of the generators' output, computed from the generators as they were before
         they moved to hmlib.simulate (sha256 of the CSV with ``%.10g`` floats, which a
         last-bit difference of ``exp`` between machines does not change)
SIM-01x  its documented truth (``<generator>_truth``) holds approximately in a large draw
SIM-05x  the building blocks do what their docstrings say

The demo registry has its own file (``tests/test_demo.py``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import special

from hmlib.simulate import blocks
from hmlib.simulate.longitudinal import longitudinal_registry, longitudinal_registry_truth
from hmlib.simulate.missingness import (correlated_effects_registry, correlated_effects_registry_truth,
                                        informative_missingness_registry, informative_missingness_registry_truth,
                                        missingness_registry, missingness_registry_truth, structural_gap_registry,
                                        structural_gap_registry_truth)
from hmlib.simulate.mixed_model import (large_mixed_model_data, large_mixed_model_data_truth, mixed_model_data,
                                        mixed_model_data_truth)
from hmlib.simulate.registries import (few_clusters_data, few_clusters_data_truth, graded_missingness_registry,
                                       graded_missingness_registry_truth, icc_imputation_data,
                                       icc_imputation_data_truth, icc_registry, icc_registry_truth,
                                       shifted_cluster_registry, shifted_cluster_registry_truth, small_registry,
                                       small_registry_truth)
from hmlib.simulate.scale import scale_registry, scale_registry_truth, trial_registry, trial_registry_truth
from hmlib.simulate.studies import (large_registry, multi_gap_registry, multi_gap_registry_truth,
                                    small_site_registry, small_site_registry_truth, truth_study_registry,
                                    truth_study_registry_truth)
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.missingness import missingness_cluster_variation
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed, fit_random_intercept


def _arrays_frame(arrays, names) -> pd.DataFrame:
    """Arrays (2-D ones column by column) as one frame, for comparing and fingerprinting."""
    columns = {}
    for name, a in zip(names, arrays):
        a = np.asarray(a)
        if a.ndim == 2:
            columns.update({f"{name}{k}": a[:, k] for k in range(a.shape[1])})
        else:
            columns[name] = a
    return pd.DataFrame(columns)


#: name -> (generator of a small draw from a seed, documented columns)
GENERATORS = {
    "small_registry": (lambda seed: small_registry(seed),
                       ["site", "site_type", "age", "sex", "lab", "died"]),
    "icc_registry": (lambda seed: icc_registry(seed, n_clusters=10, per_cluster=10),
                     ["site", "age", "sex", "lab", "died"]),
    "icc_imputation_data": (lambda seed: icc_imputation_data(seed)[0], ["site", "y", "x"]),
    "few_clusters_data": (lambda seed: few_clusters_data(seed)[0], ["site", "y", "age", "sev", "x"]),
    "shifted_cluster_registry": (lambda seed: shifted_cluster_registry(seed, shift=(1, 2.0)),
                                 ["site", "y", "age", "x"]),
    "graded_missingness_registry": (lambda seed: graded_missingness_registry(seed, small_cluster=True),
                                    ["site", "site_type", "age", "x", "z", "y"]),
    "missingness_registry": (lambda seed: missingness_registry(seed, n_clusters=10, per_cluster=10),
                             ["c", "x", "v", "g"]),
    "correlated_effects_registry": (lambda seed: correlated_effects_registry(seed, 0.5, n_clusters=10),
                                    ["c", "y", "age", "lab"]),
    "structural_gap_registry": (lambda seed: structural_gap_registry(seed), ["site", "y", "age", "sex", "x", "z"]),
    "informative_missingness_registry": (lambda seed: informative_missingness_registry(seed, per_cluster=10),
                                         ["site", "y", "m"]),
    "truth_study_registry": (lambda seed: truth_study_registry(seed, n_sites=10, n_patients=500),
                             ["site", "outcome", "age", "severity", "lactate"]),
    "small_site_registry": (lambda seed: small_site_registry(seed, n_sites=20, n_patients=100),
                            ["site", "outcome", "age", "x"]),
    "large_registry": (lambda seed: large_registry(seed, n_clusters=20, n_patients=400),
                       ["site", "y", "age", "x1", "x2", "b"]),
    "multi_gap_registry": (lambda seed: multi_gap_registry(seed, 600, 30),
                           ["site", "outcome", "age", "severity", "sex", "lactate", "sbp", "gcs"]),
    "trial_registry": (lambda seed: trial_registry(seed, n_patients=2000, n_hospitals=60, n_countries=6),
                       ["patient_id", "country", "hospital", "age", "sex", "sbp", "conscious", "stroke_type",
                        "aspirin", "atrial_fib", "dead_or_dependent"]),
    "scale_registry": (lambda seed: scale_registry(seed, n_patients=2000, n_sites=20),
                       ["site", "site_type", "age", "severity", "lactate", "died"]),
    "longitudinal_registry": (lambda seed: longitudinal_registry(seed, n_sites=5, n_patients=60, n_visits=4),
                              ["site", "patient", "visit", "month", "date", "x", "y"]),
    "mixed_model_data": (lambda seed: _arrays_frame(mixed_model_data(seed, family="binomial", singletons=2),
                                                    ["y", "X", "groups"]), ["y", "X0", "X1", "groups"]),
    "large_mixed_model_data": (lambda seed: _arrays_frame(large_mixed_model_data(300, 10, 2, seed=seed),
                                                          ["X", "y_bin", "y_gauss", "groups"]),
                               ["X0", "X1", "X2", "y_bin", "y_gauss", "groups"]),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_SIM_001_reproducible_by_seed(name):
    """SIM-001: the same seed gives an identical frame (exactly); another seed a different one."""
    generate, _ = GENERATORS[name]
    pd.testing.assert_frame_equal(generate(5), generate(5), check_exact=True)
    assert not generate(5).equals(generate(6))


@pytest.mark.parametrize("name", GENERATORS)
def test_SIM_002_documented_columns(name):
    """SIM-002: the generator returns the columns its docstring documents, in that order, with rows."""
    generate, columns = GENERATORS[name]
    frame = generate(1)
    assert list(frame.columns) == columns
    assert len(frame) > 0


def _fingerprint(frame: pd.DataFrame) -> str:
    text = frame.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Draws in use (the tests' and benchmarks' seeds and sizes) -> fingerprint before the move.
FINGERPRINTS = {
    "small_registry()": (lambda: small_registry(), "cb58cb745b13e490"),
    "small_registry(3, 30, 4)": (lambda: small_registry(3, 30, 4), "3737519896ab42c1"),
    "missingness_registry(1)": (lambda: missingness_registry(1), "a5235f70c4dbdeb0"),
    "correlated_effects_registry(6, 0.9)": (lambda: correlated_effects_registry(6, 0.9), "ef56fd487f95a662"),
    "structural_gap_registry(3)": (lambda: structural_gap_registry(3), "e2826939a702e43e"),
    "informative_missingness_registry(11)": (lambda: informative_missingness_registry(11), "2cd4341e6e85b20c"),
    "icc_registry(0)": (lambda: icc_registry(0), "117f75a91cef0c58"),
    "graded_missingness_registry(1, small_cluster)": (lambda: graded_missingness_registry(1, small_cluster=True),
                                                      "631e7560f639b35f"),
    "icc_imputation_data(3, gaussian)": (lambda: icc_imputation_data(3, n_clusters=80, per_cluster=25, icc=0.5,
                                                                     missing=0.4, binary_outcome=False)[0],
                                         "26b21276668ed0cf"),
    "few_clusters_data(1)": (lambda: few_clusters_data(1)[0], "95af118c2953e032"),
    "shifted_cluster_registry(3, shift)": (lambda: shifted_cluster_registry(seed=3, shift=(7, 3.0)),
                                           "1e511730843f5b8a"),
    "mixed_model_data(5, binomial)": (
        lambda: _arrays_frame(mixed_model_data(5, family="binomial", n_clusters=25, per_cluster=12, singletons=3),
                              ["y", "X", "groups"]), "2cff70840f6fef08"),
    "mixed_model_data(11, gaussian)": (
        lambda: _arrays_frame(mixed_model_data(11, family="gaussian", n_clusters=12, per_cluster=6, singletons=2),
                              ["y", "X", "groups"]), "27aaf96ab0c86ad6"),
    "large_mixed_model_data()": (
        lambda: _arrays_frame(large_mixed_model_data(20000, 500, 5, seed=20240501),
                              ["X", "y_bin", "y_gauss", "groups"]), "406b26dc70725e00"),
    "large_registry()": (lambda: large_registry(), "532716e76abc69d0"),
    "truth_study_registry(1000)": (lambda: truth_study_registry(1000), "1c20f5e77055af8a"),
    "truth_study_registry(11, 12, 1000)": (lambda: truth_study_registry(11, 12, 1000), "e121cbcf88e12078"),
    "multi_gap_registry(1, 20000, 500)": (lambda: multi_gap_registry(1, 20000, 500), "157a787d705e597a"),
    # the scale benchmarks' registries (bench/bench_scale.py), fingerprinted when they were written
    "trial_registry()": (lambda: trial_registry(), "df3b737de9e9f2de"),
    "scale_registry(14, 10000)": (lambda: scale_registry(14, n_patients=10_000), "0312deb480323e3d"),
    # the longitudinal diagnostics' registry (tests/test_longitudinal_diagnose.py), fingerprinted when written
    "longitudinal_registry(1)": (lambda: longitudinal_registry(1), "81bdc036cb9e131c"),
    # the first registry of bench/ri_logistic_small_clusters.py, fingerprinted when written
    "small_site_registry(5000)": (lambda: small_site_registry(5000), "1920ce232b110857"),
}


@pytest.mark.parametrize("case", FINGERPRINTS)
def test_SIM_003_data_in_use_unchanged(case):
    """SIM-003: the draws the tests, benchmarks and R references use have the fingerprints they had
    before the generators moved to hmlib.simulate (a changed draw order or model value shows here)."""
    generate, expected = FINGERPRINTS[case]
    assert _fingerprint(generate()) == expected


# --------------------------------------------------------------------------
# Truth in a large draw
# --------------------------------------------------------------------------
def _icc(values, groups) -> float:
    """ICC of ``values`` from an intercept-only gaussian random-intercept fit."""
    fit = fit_random_intercept(np.asarray(values, float), np.ones((len(values), 1)), np.asarray(groups))
    return fit.cluster_sd**2 / (fit.cluster_sd**2 + fit.residual_sd**2)


def _expected_logistic_share(intercept: float, sd: float) -> float:
    """E[expit(intercept + u)], u ~ N(0, sd^2), by 40-node Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    return float((weights * special.expit(intercept + sd * nodes)).sum() / weights.sum())


def test_SIM_010_small_registry_truth():
    """SIM-010: small_registry, 400 sites x 50: the complete-case fit recovers lab, age and sd(site)
    of small_registry_truth (lab MCAR), and lab is missing in 20%."""
    truth = small_registry_truth()
    frame = small_registry(1, n_clusters=400, per_cluster=50)
    assert frame["lab"].isna().mean() == pytest.approx(truth["missing_share"]["lab"], abs=0.015)
    fit = fit_analysis_model(frame.dropna(), outcome="died", predictors=["age", "sex", "lab"], cluster="site",
                             family="binomial")
    coef = dict(zip(fit.term_names, fit.coef))
    assert coef["lab"] == pytest.approx(truth["terms"]["lab"], abs=0.08)
    assert coef["age"] == pytest.approx(truth["terms"]["age"], abs=0.008)
    assert coef["sex[male]"] == pytest.approx(truth["terms"]["sex[male]"], abs=0.15)
    assert coef["Intercept"] == pytest.approx(truth["terms"]["Intercept"], abs=0.5)
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(site)"], abs=0.12)
    assert set(frame["site_type"]) == {"A", "B"}


def test_SIM_011_icc_generators_truth():
    """SIM-011: icc_registry and icc_imputation_data, 300 clusters x 40: the ICC of the variable
    and its MCAR share are those of their truth records."""
    truth = icc_registry_truth(icc=0.5, missing=0.5)
    frame = icc_registry(2, n_clusters=300, per_cluster=40, icc=0.5, missing=0.5)
    observed = frame.dropna()
    assert _icc(observed["lab"], observed["site"]) == pytest.approx(truth["icc"]["lab"], abs=0.08)
    assert frame["lab"].isna().mean() == pytest.approx(truth["missing_share"]["lab"], abs=0.02)

    truth = icc_imputation_data_truth(icc=0.4, missing=0.3)
    frame, x = icc_imputation_data(2, n_clusters=300, per_cluster=40, icc=0.4, missing=0.3)
    assert _icc(x, frame["site"]) == pytest.approx(truth["icc"]["x"], abs=0.08)
    assert frame["x"].isna().mean() == pytest.approx(truth["missing_share"]["x"], abs=0.02)
    observed = ~frame["x"].isna()
    np.testing.assert_array_equal(frame["x"][observed], x[observed])


def test_SIM_012_few_clusters_and_shift_truth():
    """SIM-012: few_clusters_data never records x in its unmeasured clinic and misses 20% elsewhere;
    shifted_cluster_registry's shift moves that cluster's x by the amount and changes nothing else."""
    truth = few_clusters_data_truth(unmeasured_cluster=3)
    frame, x = few_clusters_data(4, per_cluster=2000)
    gap = frame["site"].isin(truth["structural_clusters"])
    assert frame.loc[gap, "x"].isna().all()
    assert frame.loc[~gap, "x"].isna().mean() == pytest.approx(truth["missing_share"]["x"], abs=0.02)

    truth = shifted_cluster_registry_truth(missing=0.25)
    plain = shifted_cluster_registry(5, n_clusters=40, per_cluster=100)
    shifted = shifted_cluster_registry(5, n_clusters=40, per_cluster=100, shift=(7, 3.0))
    pd.testing.assert_frame_equal(plain.drop(columns="x"), shifted.drop(columns="x"))
    moved = (shifted["x"] - plain["x"]).groupby(plain["site"]).mean()
    assert moved["S07"] == pytest.approx(3.0) and moved.drop("S07").abs().max() == 0.0
    assert plain["x"].isna().mean() == pytest.approx(truth["missing_share"]["x"], abs=0.02)
    fit = fit_analysis_model(plain.dropna(), outcome="y", predictors=["age", "x"], cluster="site", family="binomial")
    assert dict(zip(fit.term_names, fit.coef))["x"] == pytest.approx(truth["terms"]["x"], abs=0.15)


def test_SIM_013_graded_missingness_truth():
    """SIM-013: graded_missingness_registry has exactly the missing counts asked for (z flags them);
    in 200 clusters x 50 the gaussian outcome model of its truth is recovered."""
    frame = graded_missingness_registry(0, small_cluster=True)
    counts = frame.groupby("site", sort=False)["x"].apply(lambda x: int(x.isna().sum()))
    assert counts.tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 24, 0, 6]
    assert (frame["z"] == frame["x"].isna()).all()

    truth = graded_missingness_registry_truth()
    frame = graded_missingness_registry(1, missing_per_cluster=[10] * 200, per_cluster=50)
    fit = fit_analysis_model(frame.dropna(subset=["x"]), outcome="y", predictors=["age", "x"], cluster="site",
                             family="gaussian")
    coef = dict(zip(fit.term_names, fit.coef))
    assert coef["x"] == pytest.approx(truth["terms"]["x"], abs=0.05)
    assert coef["age"] == pytest.approx(truth["terms"]["age"], abs=0.005)
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(site)"], abs=0.1)
    assert fit.residual_sd == pytest.approx(truth["terms"]["residual_sd"], abs=0.03)


def test_SIM_020_missingness_registry_truth():
    """SIM-020: missingness_registry, 150 clusters x 60: the estimated SD of the missingness random
    intercept is the truth's (1.5); with cluster_sd 0 the clusters' missing shares vary only by chance."""
    truth = missingness_registry_truth(cluster_sd=1.5)
    result = missingness_cluster_variation(missingness_registry(1, n_clusters=150, per_cluster=60), "v", "c")
    assert result.cluster_sd == pytest.approx(truth["missingness"]["sd(c)"], abs=0.3)
    flat = missingness_registry(2, n_clusters=150, per_cluster=60, cluster_sd=0.0)
    shares = flat["v"].isna().groupby(flat["c"]).mean()
    p = _expected_logistic_share(-0.5, 0.0)
    assert shares.mean() == pytest.approx(p, abs=0.02)
    assert shares.std() == pytest.approx(np.sqrt(p * (1 - p) / 60), rel=0.25)


def test_SIM_021_correlated_effects_truth():
    """SIM-021: correlated_effects_registry, 400 clusters x 200: the correlation of the clusters'
    outcome effects and missingness log-odds is near rho, for rho 0.6 and 0."""
    for seed, rho in [(1, 0.6), (2, 0.0)]:
        truth = correlated_effects_registry_truth(rho)
        frame = correlated_effects_registry(seed, rho, n_clusters=400, per_cluster=200)
        means = frame.assign(residual=frame["y"] - 1 - 0.5 * frame["age"], missing=frame["lab"].isna()) \
            .groupby("c")[["residual", "missing"]].mean()
        r = np.corrcoef(means["residual"], special.logit(means["missing"].clip(0.005, 0.995)))[0, 1]
        assert r == pytest.approx(truth["corr(missingness, outcome)"], abs=0.12)


def test_SIM_022_structural_gap_truth():
    """SIM-022: structural_gap_registry: the structural sites never record x, z misses exactly
    n_sporadic values, and elsewhere x is missing at the expected rate E[expit(-1.2 + u)], u ~ N(0, 1)."""
    truth = structural_gap_registry_truth()
    frame = structural_gap_registry(1, n_clusters=400, per_cluster=100)
    gap = frame["site"].isin(truth["structural_clusters"])
    assert frame.loc[gap, "x"].isna().all()
    assert int(frame["z"].isna().sum()) == truth["n_missing"]["z"]
    x_truth = truth["missingness"]["x"]
    expected = _expected_logistic_share(x_truth["intercept"], x_truth["sd(site)"])
    assert frame.loc[~gap, "x"].isna().mean() == pytest.approx(expected, abs=0.03)


def test_SIM_023_informative_missingness_truth():
    """SIM-023: informative_missingness_registry, 60 clusters x 1000: missing share 0.4; the
    indicator's log odds ratio is about 1.5 in even clusters and about 0 in odd ones."""
    truth = informative_missingness_registry_truth()
    frame = informative_missingness_registry(1, n_clusters=60, per_cluster=1000)
    assert frame["m"].mean() == pytest.approx(truth["missing_share"]["m"], abs=0.01)
    for parity, key in [(0, "even clusters"), (1, "odd clusters")]:
        part = frame[frame["site"] % 2 == parity]
        fit = sm.Logit(part["y"], sm.add_constant(part["m"])).fit(disp=0)
        assert fit.params["m"] == pytest.approx(truth["indicator_effect"][key], abs=0.2)


def test_SIM_030_truth_study_registry_truth():
    """SIM-030: truth_study_registry, 100 sites, 20,000 patients: the two structural sites never record
    lactate, and the complete-case fit of the analysis model is near truth_study_registry_truth."""
    truth = truth_study_registry_truth()
    frame = truth_study_registry(1, n_sites=100, n_patients=20000)
    never = frame["lactate"].isna().groupby(frame["site"]).all()
    assert int(never.sum()) == truth["missingness_model"]["n_structural_sites"]
    fit = fit_analysis_model(frame.dropna(), outcome="outcome", predictors=["lactate", "age", "severity"],
                             cluster="site", family="binomial")
    coef = dict(zip(fit.term_names, fit.coef))
    assert coef["lactate"] == pytest.approx(truth["terms"]["lactate"], abs=0.15)
    assert coef["age"] == pytest.approx(truth["terms"]["age"], abs=0.008)
    assert coef["severity"] == pytest.approx(truth["terms"]["severity"], abs=0.015)
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(site)"], abs=0.15)


def test_SIM_035_small_site_registry_truth():
    """SIM-035: small_site_registry, 2,000 sites of mean 4.6: ``complete=True`` is the same draw before the gaps;
    the full-data fits of the analysis model and of x's model are near small_site_registry_truth; x is missing
    more often where the outcome occurred (missing at random given the outcome and the site)."""
    truth = small_site_registry_truth()
    frame = small_site_registry(2, n_sites=2000, n_patients=10000)
    full = small_site_registry(2, n_sites=2000, n_patients=10000, complete=True)
    recorded = frame["x"].notna()
    pd.testing.assert_frame_equal(frame.drop(columns="x"), full.drop(columns="x"))
    assert (frame.loc[recorded, "x"] == full.loc[recorded, "x"]).all()
    assert 0.25 < 1 - recorded.mean() < 0.45
    assert (1 - recorded[frame["outcome"] == 1].mean()) > (1 - recorded[frame["outcome"] == 0].mean()) + 0.1
    fit = fit_analysis_model(full, outcome="outcome", predictors=["x", "age"], cluster="site", family="binomial")
    coef = dict(zip(fit.term_names, fit.coef))
    assert coef["x"] == pytest.approx(truth["terms"]["x"], abs=0.12)
    assert coef["age"] == pytest.approx(truth["terms"]["age"], abs=0.08)
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(site)"], abs=0.15)
    x_fit = fit_analysis_model(full, outcome="x", predictors=["age"], cluster="site", family="binomial")
    assert dict(zip(x_fit.term_names, x_fit.coef))["age"] == pytest.approx(truth["x_model"]["age"], abs=0.08)
    assert x_fit.cluster_sd == pytest.approx(truth["x_model"]["site_sd"], abs=0.15)


def test_SIM_031_benchmark_registries():
    """SIM-031: large_registry has exactly n_patients in n_clusters (at least 5 each) and b missing at
    the rate its age-dependent mechanism implies; multi_gap_registry never records lactate in its
    structural sites and misses sbp completely at random in 5%."""
    frame = large_registry(3, n_clusters=200, n_patients=20000)
    sizes = frame.groupby("site").size()
    assert len(frame) == 20000 and len(sizes) == 200 and sizes.min() >= 5
    expected_b = special.expit(-1.8 + 0.02 * (frame["age"] - 60)).mean()
    assert frame["b"].isna().mean() == pytest.approx(expected_b, abs=0.01)

    truth = multi_gap_registry_truth()
    frame = multi_gap_registry(2, 20000, 100)
    assert abs(len(frame) - 20000) <= 100
    assert frame.loc[frame["site"].isin(truth["structural_clusters"]), "lactate"].isna().all()
    assert frame["sbp"].isna().mean() == pytest.approx(truth["missing_share"]["sbp"], abs=0.006)


def test_SIM_032_trial_registry_truth():
    """SIM-032: trial_registry (19,435 patients, 466 hospitals in 36 countries): its shape (every
    hospital in one country, at least 3 patients each), atrial fibrillation never recorded in the 25
    pilot hospitals and missing in about 8% overall, the outcome in about 1%, and the complete-case fit
    of the analysis model with its country level (TRIAL_PARAMS' higher_levels) near trial_registry_truth; the
    two-level model's hospital SD holds country and hospital effects together."""
    truth = trial_registry_truth()
    frame = trial_registry()
    sizes = frame.groupby("hospital").size()
    assert len(frame) == 19435 and len(sizes) == 466 and sizes.min() >= 3
    assert frame["country"].nunique() == 36
    assert (frame.groupby("hospital")["country"].nunique() == 1).all()
    never = frame["atrial_fib"].isna().groupby(frame["hospital"]).all()
    assert int(never.sum()) == truth["missingness_model"]["atrial_fib"]["n_pilot_hospitals"]
    assert frame["atrial_fib"].isna().mean() == pytest.approx(0.085, abs=0.02)
    assert frame["dead_or_dependent"].isna().mean() == pytest.approx(0.012, abs=0.006)
    predictors = ["age", "sex", "sbp", "conscious", "stroke_type", "aspirin", "atrial_fib"]
    fit = fit_analysis_model(frame.dropna(), outcome="dead_or_dependent", predictors=predictors,
                             cluster="hospital", family="binomial", higher_levels=("country",))
    coef = dict(zip(fit.term_names, fit.coef))
    se = dict(zip(fit.term_names, fit.std_error))
    for term in ("age", "sex[M]", "sbp", "conscious[drowsy]", "conscious[unconscious]", "stroke_type[TACS]",
                 "stroke_type[PACS]", "atrial_fib"):
        assert abs(coef[term] - truth["terms"][term]) < 4 * se[term], term
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(hospital)"], abs=0.15)
    assert fit.higher[0].sd == pytest.approx(truth["terms"]["sd(country)"], abs=0.15)
    two_level = fit_analysis_model(frame.dropna(), outcome="dead_or_dependent", predictors=predictors,
                                   cluster="hospital", family="binomial")
    assert two_level.cluster_sd == pytest.approx(truth["two_level_sd_hospital"], abs=0.15)


def test_SIM_033_scale_registry_truth():
    """SIM-033: scale_registry (100,000 patients, 400 sites): exactly that many patients, at least 5 per
    site, a fifth of the sites major centres, lactate never recorded in 2 sites, and the complete-case
    fit near scale_registry_truth."""
    truth = scale_registry_truth()
    frame = scale_registry(3)
    sizes = frame.groupby("site").size()
    assert len(frame) == 100_000 and len(sizes) == 400 and sizes.min() >= 5
    assert frame.groupby("site")["site_type"].first().eq("major trauma centre").sum() == 80
    never = frame["lactate"].isna().groupby(frame["site"]).all()
    assert int(never.sum()) == truth["missingness_model"]["n_structural_sites"]
    fit = fit_analysis_model(frame.dropna(), outcome="died", predictors=["age", "severity", "lactate"],
                             cluster="site", family="binomial")
    coef = dict(zip(fit.term_names, fit.coef))
    se = dict(zip(fit.term_names, fit.std_error))
    for term in ("age", "severity", "lactate"):
        assert abs(coef[term] - truth["terms"][term]) < 4 * se[term], term
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(site)"], abs=0.1)


def test_SIM_034_longitudinal_registry_truth():
    """SIM-034: longitudinal_registry, 2,000 patients x 8 visits: the mixed model with a random slope
    on the observed visits recovers longitudinal_registry_truth (dropout is MAR on the observed
    history, so the likelihood on the observed rows is unbiased); missed visits outside the pilot phase
    occur at the documented rate, more often in it; dropout is monotone and its hazard rises with the
    last observed outcome as documented."""
    truth = longitudinal_registry_truth()
    frame = longitudinal_registry(2, n_sites=40, n_patients=2000)
    seen = frame.dropna(subset=["x", "y"])
    X = np.column_stack([np.ones(len(seen)), seen["month"], seen["x"]])
    structure = RandomEffects((RandomLevel("site", seen["site"].to_numpy()),
                               RandomLevel("patient", seen["patient"].to_numpy(),
                                           slopes={"month": seen["month"].to_numpy()})))
    fit = fit_mixed(seen["y"].to_numpy(), X, structure, term_names=["Intercept", "month", "x"])
    got = dict(zip(fit.to_frame()["term"], fit.to_frame()["estimate"]))
    for term, tol in {"Intercept": 0.4, "month": 0.02, "x": 0.05, "sd(site)": 0.35, "sd(patient)": 0.2,
                      "sd(month|patient)": 0.02, "cor(month|patient)": 0.15}.items():
        assert got[term] == pytest.approx(truth["terms"][term], abs=tol), term
    assert fit.residual_sd == pytest.approx(truth["residual_sd"], abs=0.05)

    # a patient's dropout visit: the first of the trailing run of missing y (after an observed one)
    y_missing = frame["y"].isna().to_numpy().reshape(-1, 8)
    trailing = np.flip(np.cumprod(np.flip(y_missing, axis=1), axis=1), axis=1).astype(bool)
    pilot = frame["date"].to_numpy().reshape(-1, 8) < np.datetime64(truth["pilot_end"])
    intermittent = y_missing & ~trailing
    mv = truth["missed_visit"]
    expected = _expected_logistic_share(mv["intercept"], mv["site_sd"])
    assert intermittent[~pilot & ~trailing].mean() == pytest.approx(expected, abs=0.025)
    assert intermittent[pilot & ~trailing].mean() > expected + 0.1
    # dropout hazard at visits 1..7 against the last observed outcome (logistic regression, site fixed)
    rows = []
    for t in range(1, 8):
        at_risk = ~trailing[:, :t].any(axis=1)
        y_wide = frame["y"].to_numpy().reshape(-1, 8)[:, :t]
        last = pd.DataFrame(y_wide).ffill(axis=1).iloc[:, -1].fillna(10.0).to_numpy()
        rows.append(pd.DataFrame({"event": trailing[at_risk, t].astype(float), "last": last[at_risk] - 10.0,
                                  "site": frame["site"].to_numpy()[::8][at_risk]}))
    hazard = pd.concat(rows)
    design = pd.get_dummies(hazard["site"], prefix="site", dtype=float)
    design["last"] = hazard["last"]
    coef = sm.Logit(hazard["event"], design).fit(disp=0).params["last"]
    assert coef == pytest.approx(truth["dropout"]["last_value"], abs=0.06)



@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_SIM_040_mixed_model_data_truth(family):
    """SIM-040: mixed_model_data, 300 clusters x 30: fit_random_intercept recovers beta, the cluster
    SD and (gaussian) the residual SD of mixed_model_data_truth; singletons come last."""
    truth = mixed_model_data_truth(family=family)
    y, X, groups = mixed_model_data(1, family=family, n_clusters=300, per_cluster=30)
    fit = fit_random_intercept(y, X, groups, family=family)
    # about 4 standard errors of each estimate
    atol = [0.15, 0.05] if family == "gaussian" else [0.18, 0.1]
    assert np.all(np.abs(fit.coef - [truth["terms"]["Intercept"], truth["terms"]["x"]]) < atol)
    assert fit.cluster_sd == pytest.approx(truth["terms"]["sd(cluster)"], abs=0.12)
    if family == "gaussian":
        assert fit.residual_sd == pytest.approx(truth["residual_sd"], abs=0.03)
    _, _, groups = mixed_model_data(1, family=family, n_clusters=3, per_cluster=2, singletons=2)
    assert groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 4]


def test_SIM_041_large_mixed_model_data_truth():
    """SIM-041: large_mixed_model_data, 20,000 rows in 300 clusters: the gaussian outcome's fit
    recovers beta, the cluster SD 0.8 and the residual SD 1.5."""
    truth = large_mixed_model_data_truth(3)
    X, y_bin, y_gauss, groups = large_mixed_model_data(20000, 300, 3, seed=2)
    fit = fit_random_intercept(y_gauss, X, groups)
    assert np.all(np.abs(fit.coef - truth["beta"]) < [0.18, 0.05, 0.05, 0.05])  # about 4 SEs each
    assert fit.cluster_sd == pytest.approx(truth["sd(cluster)"], abs=0.1)
    assert fit.residual_sd == pytest.approx(truth["residual_sd_gaussian"], abs=0.03)
    assert set(np.unique(y_bin)) == {0.0, 1.0}


# --------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------
def test_SIM_050_cluster_size_blocks():
    """SIM-050: stratified lognormal and multinomial sizes sum exactly to n with the minimum size;
    lognormal sizes keep their minimum; cluster_index repeats codes by size."""
    rng = np.random.default_rng(1)
    sizes = blocks.stratified_lognormal_cluster_sizes(rng, 3000, 30, log_sd=1.0, score_clip=2.5, min_size=3)
    assert sizes.sum() == 3000 and sizes.min() >= 3 and sizes.size == 30
    sizes = blocks.multinomial_cluster_sizes(rng, 1000, 50, min_size=5)
    assert sizes.sum() == 1000 and sizes.min() >= 5
    assert blocks.lognormal_cluster_sizes(rng, 200, 40, log_sd=0.8, min_size=5).min() >= 5
    assert blocks.cluster_index([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
    assert blocks.cluster_labels(2, "Site ", start=9).tolist() == ["Site 09", "Site 10"]


def test_SIM_051_correlation_blocks():
    """SIM-051: exactly_correlated_scores has mean 0, SD 1 and sample correlation exactly rho;
    uncorrelated_scores is exactly uncorrelated with each vector it is given."""
    rng = np.random.default_rng(2)
    u = rng.normal(size=25)
    d = blocks.exactly_correlated_scores(rng, u, -0.5)
    assert d.mean() == pytest.approx(0, abs=1e-12) and d.std() == pytest.approx(1)
    assert np.corrcoef(d, u)[0, 1] == pytest.approx(-0.5, abs=1e-12)
    z = blocks.uncorrelated_scores(rng, 25, [u, d])
    assert np.corrcoef(z, u)[0, 1] == pytest.approx(0, abs=1e-12)
    assert np.corrcoef(z, d)[0, 1] == pytest.approx(0, abs=1e-12)


def test_SIM_052_gap_blocks():
    """SIM-052: lowest_clusters picks the k eligible clusters with the lowest score; exact_missing_counts
    and random_gaps make exactly the asked number of gaps; with_gaps puts NaN there and nowhere else."""
    score = np.array([0.5, -2.0, -1.0, -3.0, 0.0])
    eligible = np.array([True, True, True, False, True])
    assert blocks.lowest_clusters(score, eligible, 2).tolist() == [False, True, True, False, False]
    rng = np.random.default_rng(3)
    missing = blocks.exact_missing_counts(rng, [0, 4, 10], 10)
    assert missing.reshape(3, 10).sum(axis=1).tolist() == [0, 4, 10]
    gaps = blocks.random_gaps(rng, 50, 7)
    assert gaps.sum() == 7
    values = blocks.with_gaps(np.arange(50.0), gaps)
    assert np.isnan(values).sum() == 7 and np.array_equal(np.isnan(values), gaps)


def test_SIM_053_draw_blocks():
    """SIM-053: bernoulli and logistic_draws hit their probabilities in a large draw; gaussian_draws
    adds N(0, sd^2) noise; normal_cluster_effects with SD 0 still draws (the next draw is unchanged)."""
    rng = np.random.default_rng(4)
    assert blocks.bernoulli(rng, 0.3, 100_000).mean() == pytest.approx(0.3, abs=0.005)
    assert blocks.logistic_draws(rng, np.full(100_000, special.logit(0.8))).mean() == pytest.approx(0.8, abs=0.005)
    assert (blocks.gaussian_draws(rng, np.zeros(100_000), 2.0)).std() == pytest.approx(2.0, rel=0.01)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert not blocks.normal_cluster_effects(a, 10, 0.0).any()
    blocks.normal_cluster_effects(b, 10, 1.0)
    assert a.normal() == b.normal()
