"""Tests of step 1 (diagnose): hmlib.stats.missingness, hmlib.steps.diagnose and hmlib.figures.diagnose.

IDs: MISS-WILSON, MISS-BYCLUSTER, MISS-OVERVIEW, MISS-HEATMAP, MISS-FUNNEL,
MISS-VAR (between-cluster variation), MISS-PRED (predictors within/between),
MISS-GAP, MISS-PATTERN, MISS-CORR, MISS-DIAG, MISS-FIG, MISS-ART (the typed
artifact).

Reference numbers from R: ``/work/shared/reference/lme4_fits.json``, made by
``lme4_fits.R`` beside it, e.g. for MISS-VAR-003::

    d <- read.csv("sim_registry.csv"); d$miss <- as.integer(is.na(d$lactate))
    glmer(miss ~ age + severity + (1 | site), data = d, family = binomial, nAGQ = 10)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmlib.artifacts import artifact_path
from hmlib.exceptions import ArtifactError, DataError, FitError, ParamsError
from hmlib.simulate.missingness import correlated_effects_registry, missingness_registry, structural_gap_registry
from hmlib.stats.missingness import (
    binomial_control_limits,
    classify_gaps,
    fisher_interval,
    missingness_by_cluster,
    missingness_cluster_variation,
    missingness_funnel,
    missingness_heatmap_table,
    missingness_outcome_correlation,
    missingness_overview,
    missingness_patterns,
    missingness_predictors,
    wilson_interval,
)
from hmlib.steps.diagnose import DiagnoseArtifact, diagnose

SHARED = Path("/work/shared")
SIM = SHARED / "reference" / "sim_registry.csv"
BRANDSMA = SHARED / "data" / "real" / "brandsma.csv"
LME4 = SHARED / "reference" / "lme4_fits.json"

needs_shared = pytest.mark.skipif(not SIM.is_file() or not BRANDSMA.is_file(),
                                  reason="shared reference data not present")


def _lme4(name):
    return next(e for e in json.loads(LME4.read_text()) if e["name"] == name)


@pytest.fixture
def tiny():
    """Cluster A: 4 patients, x missing twice; cluster B: 3 patients, y never recorded."""
    return pd.DataFrame({
        "site": ["A", "A", "A", "A", "B", "B", "B"],
        "x": [1.0, np.nan, np.nan, 4.0, 5.0, 6.0, 7.0],
        "y": [1.0, 2.0, 3.0, 4.0, np.nan, np.nan, np.nan],
    })


# ---------------------------------------------------------------- Wilson
def test_MISS_WILSON_001_known_value():
    """MISS-WILSON-001: Wilson 95% for 3/10 is (0.1078, 0.6032) (Newcombe 1998, table I style)."""
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(0.1078, abs=5e-5)
    assert hi == pytest.approx(0.6032, abs=5e-5)


def test_MISS_WILSON_002_vectorised_edges_and_statsmodels():
    """MISS-WILSON-002: arrays; k=0 -> lower 0; k=n -> upper 1; n=0 -> NaN; agrees with
    statsmodels' proportion_confint(method="wilson")."""
    from statsmodels.stats.proportion import proportion_confint

    k = np.array([0, 1, 5, 20, 20])
    n = np.array([10, 7, 50, 20, 400])
    lo, hi = wilson_interval(k, n, level=0.9)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=0.1, method="wilson")
    np.testing.assert_allclose(lo, ref_lo, atol=1e-12)
    np.testing.assert_allclose(hi, ref_hi, atol=1e-12)
    assert lo[0] == 0.0 and hi[3] == 1.0
    lo0, hi0 = wilson_interval(np.array([0]), np.array([0]))
    assert np.isnan(lo0[0]) and np.isnan(hi0[0])
    with pytest.raises(DataError):
        wilson_interval(5, 3)


# ---------------------------------------------------------------- tables
def test_MISS_BYCLUSTER_001_hand_counts(tiny):
    """MISS-BYCLUSTER-001: counts, shares and Wilson limits per cluster x variable."""
    t = missingness_by_cluster(tiny, ["x", "y"], "site")
    assert list(t.columns) == ["cluster", "variable", "n", "n_missing", "n_observed", "share_missing",
                               "ci_lower", "ci_upper"]
    assert t[["cluster", "variable"]].values.tolist() == [["A", "x"], ["B", "x"], ["A", "y"], ["B", "y"]]
    assert t["n"].tolist() == [4, 3, 4, 3]
    assert t["n_missing"].tolist() == [2, 0, 0, 3]
    assert t["share_missing"].tolist() == [0.5, 0.0, 0.0, 1.0]
    lo, hi = wilson_interval(2, 4)
    assert (t.loc[0, "ci_lower"], t.loc[0, "ci_upper"]) == pytest.approx((lo, hi))
    assert t.loc[3, "ci_upper"] == 1.0
    assert tiny["x"].isna().sum() == 2  # input untouched


def test_MISS_OVERVIEW_001_hand_counts(tiny):
    """MISS-OVERVIEW-001: per variable n_missing, share, clusters with any / all missing."""
    t = missingness_overview(tiny, ["x", "y"], "site").set_index("variable")
    assert t.loc["x", "n_missing"] == 2 and t.loc["y", "n_missing"] == 3
    assert t.loc["x", "share_missing"] == pytest.approx(2 / 7)
    assert t.loc["x", "n_clusters_any_missing"] == 1 and t.loc["x", "n_clusters_all_missing"] == 0
    assert t.loc["y", "n_clusters_any_missing"] == 1 and t.loc["y", "n_clusters_all_missing"] == 1
    assert (t["n_clusters"] == 2).all()


def test_MISS_HEATMAP_001_order_by_overall_missingness(tiny):
    """MISS-HEATMAP-001: B (3 of 6 cells missing) before A (2 of 8); shares per cell."""
    h = missingness_heatmap_table(tiny, ["x", "y"], "site")
    assert list(h.index) == ["B", "A"]
    assert h.loc["B"].tolist() == [0.0, 1.0]
    assert h.loc["A"].tolist() == [0.5, 0.0]
    assert h.index.name == "site"


def test_MISS_BYCLUSTER_002_missing_cluster_label_refused(tiny):
    """MISS-BYCLUSTER-002: a row without cluster label is an error naming the column."""
    bad = tiny.astype({"site": object})
    bad.loc[0, "site"] = None
    with pytest.raises(DataError, match="site"):
        missingness_by_cluster(bad, ["x"], "site")


# ---------------------------------------------------------------- funnel
def _binom_cdf(r, n, p):
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(0, r + 1)) if r >= 0 else 0.0


def test_MISS_FUNNEL_001_exact_limits_by_hand():
    """MISS-FUNNEL-001: Spiegelhalter's interpolated binomial limit.
    n=4, p0=0.5, 95%: upper r=4, a=(1-0.975)/(1-15/16)=0.4 -> 0.9; lower clipped to 0.
    n=10, p0=0.3, 95% upper from the binomial cdf computed by hand."""
    lo, hi = binomial_control_limits(0.5, [4], 0.95)
    assert hi[0] == pytest.approx(0.9, abs=1e-12)
    assert lo[0] == 0.0
    f5, f6 = _binom_cdf(5, 10, 0.3), _binom_cdf(6, 10, 0.3)
    assert f5 < 0.975 <= f6
    expected = (6 - (f6 - 0.975) / (f6 - f5)) / 10
    _, hi10 = binomial_control_limits(0.3, [10], 0.95)
    assert hi10[0] == pytest.approx(expected, abs=1e-10)
    # large n: close to the normal approximation
    lo_big, hi_big = binomial_control_limits(0.5, [10_000], 0.95)
    assert hi_big[0] == pytest.approx(0.5 + 1.96 * 0.005, abs=2e-4)
    assert lo_big[0] == pytest.approx(0.5 - 1.96 * 0.005, abs=2e-4)


def test_MISS_FUNNEL_002_outliers_named():
    """MISS-FUNNEL-002: one cluster at 90% and one at 0% among clusters at 20% are outliers."""
    rows = []
    for j, k in enumerate([20, 20, 20, 20, 20, 20, 90, 0]):
        rows += [{"c": f"c{j}", "v": np.nan if i < k else 1.0} for i in range(100)]
    frame = pd.DataFrame(rows)
    f = missingness_funnel(frame, "v", "c")
    assert f.overall_rate == pytest.approx(210 / 800)
    assert f.above == ("c6",)
    assert f.below == ("c7",)
    pos = dict(zip(f.table["cluster"], f.table["position"]))
    assert pos["c6"] == "above 99.8%" and pos["c7"] == "below 99.8%"
    assert pos["c0"] == "within 95%"
    assert {"lower_95", "upper_95", "lower_99.8", "upper_99.8"} <= set(f.curve.columns)
    assert (f.curve["upper_99.8"] >= f.curve["upper_95"] - 1e-12).all()


# ---------------------------------------------------------------- variation
def test_MISS_VAR_001_cluster_dependent_missingness_found():
    """MISS-VAR-001: true cluster SD 1.5 (40 x 50): estimate near it, LRT p < 0.001."""
    res = missingness_cluster_variation(missingness_registry(1), "v", "c")
    assert 1.0 < res.cluster_sd < 2.2
    assert res.p_value < 0.001
    assert res.icc == pytest.approx(res.cluster_sd ** 2 / (res.cluster_sd ** 2 + np.pi ** 2 / 3))
    assert res.nagq == 10 and res.n_used == 2000 and res.n_dropped == 0


def test_MISS_VAR_002_mcar_gives_small_sd():
    """MISS-VAR-002: MCAR (SD 0): small estimated SD and LRT p > 0.05."""
    res = missingness_cluster_variation(missingness_registry(2, cluster_sd=0.0), "v", "c")
    assert res.cluster_sd < 0.35
    assert res.p_value > 0.05


@needs_shared
def test_MISS_VAR_003_sim_registry_matches_lme4():
    """MISS-VAR-003: lactate missingness ~ age + severity + (1|site), nAGQ=10 vs lme4
    (sim_missing_indicator): cluster SD 1.926 to 1e-2, fixed effects and logLik."""
    ref = _lme4("sim_missing_indicator")
    res = missingness_cluster_variation(pd.read_csv(SIM), "lactate", "site", ["age", "severity"], nagq=10)
    assert res.cluster_sd == pytest.approx(ref["cluster_sd"], abs=1e-2)
    assert res.loglik == pytest.approx(ref["logLik"], abs=1e-2)
    coef = dict(zip(res.fit.term_names, res.fit.coef))
    assert coef["severity"] == pytest.approx(ref["fixed"]["severity"]["estimate"], abs=1e-3)
    assert coef["Intercept"] == pytest.approx(ref["fixed"]["(Intercept)"]["estimate"], abs=1e-2)
    assert res.n_used == ref["n_used"] and res.n_clusters == ref["n_clusters"]


@needs_shared
def test_MISS_VAR_004_brandsma_ses_matches_lme4():
    """MISS-VAR-004: ses missingness ~ iqv + (1|sch), nAGQ=10 vs lme4 (brandsma_missing_ses);
    rows with iqv missing dropped as lme4 does."""
    ref = _lme4("brandsma_missing_ses")
    res = missingness_cluster_variation(pd.read_csv(BRANDSMA), "ses", "sch", ["iqv"], nagq=10)
    assert res.cluster_sd == pytest.approx(ref["cluster_sd"], abs=1e-2)
    assert res.n_used == ref["n_used"] and res.n_dropped == 4106 - ref["n_used"]


def test_MISS_VAR_005_constant_indicator_is_fit_error():
    """MISS-VAR-005: nothing missing -> FitError that says so."""
    frame = pd.DataFrame({"c": [1, 1, 2, 2], "v": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(FitError, match="recorded for every patient"):
        missingness_cluster_variation(frame, "v", "c")


# ---------------------------------------------------------------- predictors
def test_MISS_PRED_001_recovers_within_effect():
    """MISS-PRED-001: true log-OR 0.8 per unit of the within deviation (SD ~1) and 0 between:
    within OR per SD near exp(0.8 * SD_within), between CI includes 1; categorical
    dummies named g[b], g[c] (reference a)."""
    frame = missingness_registry(3, n_clusters=60, per_cluster=60, cluster_sd=0.7, within=0.8, between=0.0)
    res = missingness_predictors(frame, "v", "c", ["x", "g"])
    t = res.table.set_index("term")
    sd_within = t.loc["x (within)", "scale_sd"]
    assert 0.9 < sd_within < 1.1
    assert t.loc["x (within)", "log_odds_ratio"] == pytest.approx(0.8 * sd_within, abs=0.12)
    assert t.loc["x (within)", "ci_lower"] < np.exp(0.8 * sd_within) < t.loc["x (within)", "ci_upper"]
    assert t.loc["x (between)", "ci_lower"] < 1 < t.loc["x (between)", "ci_upper"]
    assert {"g[b]", "g[c]"} <= set(t.index) and "g[a]" not in t.index
    assert set(t["component"]) == {"within", "between", "level"}


def test_MISS_PRED_002_rows_with_covariate_missing_are_counted():
    """MISS-PRED-002: patients with the covariate missing are left out and counted."""
    frame = missingness_registry(4, cluster_sd=0.5, within=0.5)
    frame.loc[frame.index[:37], "x"] = np.nan
    res = missingness_predictors(frame, "v", "c", ["x"])
    assert res.n_dropped == 37 and res.dropped_by_covariate == {"x": 37}
    assert res.n_used == len(frame) - 37


def test_MISS_PRED_003_cluster_level_covariate_has_no_within_term():
    """MISS-PRED-003: a covariate constant within clusters gets only a between term, noted."""
    frame = missingness_registry(5, cluster_sd=0.5)
    frame["level2"] = frame["c"] % 7
    res = missingness_predictors(frame, "v", "c", ["level2"])
    assert res.table["term"].tolist() == ["level2 (between)"]
    assert any("does not vary within" in n for n in res.notes)


# ---------------------------------------------------------------- gaps, patterns
def test_MISS_GAP_001_structural_sporadic_complete():
    """MISS-GAP-001: A all missing -> structural; B 19/20 (> 0.9) structural; C 18/20 (= 0.9,
    not above) sporadic; D complete. structural_share=1 leaves only A structural."""
    sizes = {"A": (5, 5), "B": (20, 19), "C": (20, 18), "D": (10, 0)}
    rows = []
    for c, (n, k) in sizes.items():
        rows += [{"c": c, "v": np.nan if i < k else 1.0} for i in range(n)]
    frame = pd.DataFrame(rows)
    g = classify_gaps(frame, ["v"], "c")
    assert dict(zip(g.table["cluster"], g.table["gap_type"])) == {
        "A": "structural", "B": "structural", "C": "sporadic", "D": "complete"}
    s = g.summary.iloc[0]
    assert (s["n_structural"], s["n_sporadic"], s["n_complete"]) == (2, 1, 1)
    assert s["structural_clusters"] == ("A", "B")
    assert s["n_missing_structural"] == 24 and s["share_of_missing_structural"] == pytest.approx(24 / 42)
    g1 = classify_gaps(frame, ["v"], "c", structural_share=1.0)
    assert g1.summary.iloc[0]["structural_clusters"] == ("A",)


def _pattern_frame(counts):
    rows = []
    for pattern, k in counts.items():
        rows += [{"a": np.nan if "a" in pattern else 1.0, "b": np.nan if "b" in pattern else 1.0}] * k
    return pd.DataFrame(rows)


def test_MISS_PATTERN_001_counts_and_pooling():
    """MISS-PATTERN-001: 20 complete, 15 'a', 6 'b', 7 'a, b' -> the two small ones pooled (13)."""
    p = missingness_patterns(_pattern_frame({"": 20, "a": 15, "b": 6, "ab": 7}), ["a", "b"], min_cell=11)
    assert p["pattern"].tolist() == ["complete", "a", "other patterns (each < 11)"]
    assert p["count"].tolist() == [20, 15, 13]
    assert p["n_patterns"].tolist() == [1, 1, 2]
    assert p["share"].sum() == pytest.approx(1.0)


def test_MISS_PATTERN_002_small_pool_takes_next_pattern():
    """MISS-PATTERN-002: 20 complete, 12 'a', 5 'b', 3 'a, b': pool of 8 < 11 would be
    recoverable from the total, so 'a' (12) joins it (20)."""
    p = missingness_patterns(_pattern_frame({"": 20, "a": 12, "b": 5, "ab": 3}), ["a", "b"], min_cell=11)
    assert p["pattern"].tolist() == ["complete", "other patterns (each < 11)"]
    assert p["count"].tolist() == [20, 20]
    assert p["n_patterns"].tolist() == [1, 3]
    # order of names follows the variables given
    q = missingness_patterns(_pattern_frame({"ab": 12}), ["b", "a"], min_cell=11)
    assert q["pattern"].tolist() == ["b, a"]


# ---------------------------------------------------------------- correlation
def test_MISS_CORR_001_fisher_interval_by_hand():
    """MISS-CORR-001: r=0.5 over 40 clusters -> tanh(atanh(0.5) +- 1.96/sqrt(37)) = (0.2233, 0.7021)."""
    lo, hi = fisher_interval(0.5, 40, 0.95)
    assert (lo, hi) == pytest.approx((0.2233, 0.7021), abs=1e-4)
    assert all(np.isnan(fisher_interval(0.5, 3, 0.95)))


def test_MISS_CORR_002_correlated_cluster_effects_detected():
    """MISS-CORR-002: cluster missingness and outcome effects correlated 0.9 (80 clusters x 40):
    Spearman clearly positive; with independent effects the interval covers 0."""
    res = missingness_outcome_correlation(correlated_effects_registry(6, 0.9), "lab", "c", "y", "gaussian",
                                          ["age", "lab"])
    assert res.predictors_used == ("age",) and res.n_clusters == 80
    assert res.spearman > 0.5 and res.spearman_ci[0] > 0.2
    assert "shrunk" in res.caveat
    null = missingness_outcome_correlation(correlated_effects_registry(7, 0.0), "lab", "c", "y", "gaussian",
                                           ["age", "lab"])
    assert null.spearman_ci[0] < 0 < null.spearman_ci[1]


# ---------------------------------------------------------------- diagnose
@pytest.fixture(scope="module")
def sim_frame():
    if not SIM.is_file():
        pytest.skip("shared reference data not present")
    return pd.read_csv(SIM)


@pytest.fixture(scope="module")
def sim_result(sim_frame):
    return diagnose(sim_frame, cluster="site", outcome="outcome", outcome_family="binomial",
                    predictors=["age", "severity", "lactate"], focus="lactate", cluster_noun="site")


def _records(obj):
    if isinstance(obj, dict):
        if not any(isinstance(v, (dict, list)) for v in obj.values()):
            yield obj
        for v in obj.values():
            yield from _records(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _records(v)


def _numbers(record):
    return {round(float(v), 6) for v in record.values() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@needs_shared
def test_MISS_DIAG_001_sim_registry_findings(sim_result):
    """MISS-DIAG-001: sim registry: lactate the only incomplete variable, 1,315 missing, structural
    sites 5 and 27, adjusted missingness SD = lme4's 1.926, narrative states the numbers."""
    r = sim_result
    assert r.incomplete == ("lactate",) and r.focus == "lactate"
    assert r.focus_variation.cluster_sd == pytest.approx(_lme4("sim_missing_indicator")["cluster_sd"], abs=1e-2)
    assert r.focus_variation.nagq == 10 and r.focus_variation.p_value < 0.001
    gap = r.gap_summary.set_index("variable").loc["lactate"]
    assert gap["structural_clusters"] == ("site 5", "site 27")
    text = " ".join(r.narrative())
    assert "1,315 (32.9%)" in text
    assert "structural gaps: site 5 and site 27" in text
    assert f"site SD {r.focus_variation.cluster_sd:.2f}" in text
    assert "p < 0.001" in text
    assert "shrunk" in text
    # truth: site documentation quality correlates -0.5 with the outcome site effect and lowers
    # missingness, so missingness propensity and outcome effect correlate positively
    assert r.outcome_correlation.spearman > 0
    assert r.patterns["count"].tolist() == [2685, 1315]


@needs_shared
def test_MISS_DIAG_002_no_patient_level_rows_in_json(sim_result, sim_frame):
    """MISS-DIAG-002: the artifact's JSON has no NaN, no record is or contains a patient row, no
    published per-cluster count is from 1 to min_cell - 1."""
    payload = sim_result.to_artifact().to_json()
    text = json.dumps(payload, allow_nan=False)
    assert "patient_id" not in text
    records = list(_records(payload))
    assert records
    number_sets = [_numbers(rec) for rec in records]
    checked = 0
    for row in sim_frame.itertuples(index=False):
        values = {round(float(v), 6) for v in (row.age, row.severity, row.lactate) if not pd.isna(v)}
        if len(values) < 2:  # a single number says nothing about rows
            continue
        checked += 1
        assert not any(values <= s for s in number_sets), f"patient values {values} found in the JSON"
    assert checked > 3900

    def longest_list(obj):
        if isinstance(obj, dict):
            return max([longest_list(v) for v in obj.values()] + [0])
        if isinstance(obj, list):
            return max([len(obj)] + [longest_list(v) for v in obj])
        return 0

    assert longest_list(payload) < len(sim_frame) / 4  # nothing is one entry per patient
    for rec in payload["by_cluster"]:
        for key in ("n", "n_missing", "n_observed"):
            assert rec[key] is None or rec[key] == 0 or rec[key] >= 11
        if rec["n_missing"] is None:
            assert "n_missing" in rec["suppressed"]
    for var in payload["funnels"].values():
        for rec in var["table"]:
            assert rec["n_missing"] is None or rec["n_missing"] == 0 or rec["n_missing"] >= 11
    # the suppression did act (the sim has sites with 1-10 missing)
    assert any(rec["n_missing"] is None for rec in payload["by_cluster"])


@pytest.fixture(scope="module")
def brandsma_result():
    if not BRANDSMA.is_file():
        pytest.skip("shared real data not present")
    return diagnose(pd.read_csv(BRANDSMA), cluster="sch", outcome="lpo", outcome_family="gaussian",
                    predictors=["iqv", "ses", "sex", "lpr"], cluster_noun="school")


@needs_shared
def test_MISS_DIAG_003_brandsma(brandsma_result):
    """MISS-DIAG-003: brandsma (real): all 5 variables incomplete, lpr never recorded in 14 schools
    (README), sex (8 missing) too rare to model or plot without revealing its count."""
    r = brandsma_result
    assert r.incomplete == ("lpo", "iqv", "ses", "sex", "lpr")
    assert r.focus == "lpr"
    ov = r.overview.values.set_index("variable")
    assert ov.loc["lpr", "n_clusters_all_missing"] == 14
    assert ov.loc["lpo", "n_missing"] == 204
    assert np.isnan(ov.loc["sex", "n_missing"])
    assert "sex" not in r.funnels and "sex" not in r.variation and "sex" not in r.predictor_models
    assert any("sex is missing for fewer than 11" in n for n in r.notes)
    assert "lpr" in r.variation_sporadic
    n_structural = r.gap_summary.set_index("variable").loc["lpr", "n_structural"]
    assert r.variation_sporadic["lpr"].n_clusters == 216 - n_structural
    payload = json.loads(json.dumps(r.to_artifact().to_json(), allow_nan=False))
    assert "fewer than 11 have no recorded sex" in " ".join(r.narrative())
    # the predictor models must not give the suppressed count back as "rows dropped"
    assert all(m["dropped_by_covariate"]["sex"] is None
               for v, m in payload["missingness_predictors"].items() if v != "sex")
    # sex (8 missing) and iqv (17 missing spread over 15 schools) cannot be broken down by
    # school: with zeros shown, the number of hidden cells would pin the counts
    for var in ("sex", "iqv"):
        rows = [rec for rec in payload["by_cluster"] if rec["variable"] == var]
        assert len(rows) == 216
        assert all(rec["n_missing"] is None and rec["share_missing"] is None and rec["gap_type"] is None
                   for rec in rows)
        assert var not in payload["heatmap"]["variables"]
        overview = next(rec for rec in payload["overview"] if rec["variable"] == var)
        assert overview["n_clusters_any_missing"] is None
    assert "lpr" in payload["heatmap"]["variables"]


@needs_shared
@pytest.mark.parametrize("which", ["sim", "brandsma"])
def test_MISS_DIAG_007_published_cluster_counts_resist_subtraction(which, sim_result, brandsma_result):
    """MISS-DIAG-007: in the published per-cluster table, for each variable whose overall counts
    are published, the hidden cluster counts (each >= 1 unless the whole column is hidden) sum to
    the published total minus the shown ones; none can be recovered or bounded below min_cell:
    at least 2 hidden and (hidden sum - (hidden - 1)) >= min_cell. Same for cluster sizes."""
    r = sim_result if which == "sim" else brandsma_result
    values = r.by_cluster.values
    overview = r.overview.values.set_index("variable")
    checked = 0
    for var in r.incomplete:
        rows = values.loc[values["variable"] == var]
        for col, total in (("n_missing", overview.loc[var, "n_missing"]),
                           ("n_observed", overview.loc[var, "n_observed"]), ("n", r.n_patients)):
            if np.isnan(total):
                continue
            hidden = rows[col].isna()
            if not hidden.any() or hidden.all():
                continue
            hidden_sum = total - rows.loc[~hidden, col].sum()
            h = int(hidden.sum())
            assert h >= 2 and hidden_sum - (h - 1) >= r.min_cell, (var, col, h, hidden_sum)
            checked += 1
    assert checked >= 2


def test_MISS_DIAG_004_nothing_missing():
    """MISS-DIAG-004: no incomplete variable -> valid result, narrative says so, JSON fine."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"c": np.repeat(np.arange(10), 20), "y": rng.normal(size=200),
                          "x": rng.normal(size=200)})
    r = diagnose(frame, cluster="c", outcome="y", outcome_family="gaussian", predictors=["x"])
    assert r.incomplete == () and r.focus is None
    assert any("no gaps to diagnose" in s for s in r.narrative())
    payload = json.loads(json.dumps(r.to_artifact().to_json(), allow_nan=False))
    assert payload["incomplete_variables"] == [] and payload["by_cluster"] == []


@needs_shared
def test_MISS_DIAG_005_input_untouched_and_pseudonyms(sim_frame):
    """MISS-DIAG-005: input frame unchanged; with pseudonyms no original site name is published
    and tables are sorted by pseudonym."""
    from hmlib.privacy import pseudonymize_clusters

    before = sim_frame.copy()
    names = pseudonymize_clusters(sim_frame["site"], seed=3)
    r = diagnose(sim_frame, cluster="site", outcome="outcome", outcome_family="binomial",
                 predictors=["age", "severity", "lactate"], cluster_names=names, cluster_noun="site")
    pd.testing.assert_frame_equal(sim_frame, before)
    text = json.dumps(r.to_artifact().to_json(), allow_nan=False)
    assert "site 5" not in text and names[5] in text
    published = r.by_cluster.values["cluster"].tolist()
    assert published == sorted(names.values())
    gap = r.gap_summary.set_index("variable").loc["lactate", "structural_clusters"]
    assert set(gap) == {names[5], names[27]}


def test_MISS_DIAG_006_bad_arguments():
    """MISS-DIAG-006: unknown column, family, focus are errors that name the problem."""
    frame = pd.DataFrame({"c": [1, 1, 2, 2], "y": [1.0, 2.0, np.nan, 3.0], "x": [1, 2, 3, 4]})
    with pytest.raises(DataError, match="nope"):
        diagnose(frame, cluster="c", outcome="y", outcome_family="gaussian", predictors=["nope"])
    with pytest.raises(ParamsError, match="outcome_family"):
        diagnose(frame, cluster="c", outcome="y", outcome_family="poisson", predictors=["x"])
    with pytest.raises(ParamsError, match="focus"):
        diagnose(frame, cluster="c", outcome="y", outcome_family="gaussian", predictors=["x"], focus="z")


# ---------------------------------------------------------------- figures
@needs_shared
def test_MISS_FIG_001_figures_from_published_tables(sim_result):
    """MISS-FIG-001: each figure function returns a Figure without opening pyplot figures;
    funnel outliers are labelled; suppressed clusters are counted, not drawn."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from hmlib.figures import diagnose as figures

    r = sim_result
    open_before = plt.get_fignums()
    heat = figures.missingness_heatmap(r.heatmap, cluster_noun="site")
    funnel = figures.funnel_plot(r.funnels["lactate"], cluster_noun="site")
    bars = figures.cluster_missingness_bars(r.by_cluster.values, "lactate", cluster_noun="site")
    pats = figures.pattern_plot(r.patterns, r.incomplete)
    assert all(isinstance(f, Figure) for f in (heat, funnel, bars, pats))
    assert plt.get_fignums() == open_before
    labels = {t.get_text() for t in funnel.axes[0].texts}
    assert {"site 5", "site 27"} <= labels
    legend = " ".join(t.get_text() for t in funnel.axes[0].get_legend().get_texts())
    table = r.funnels["lactate"].table
    n_hidden = int((table["rate"].isna() | table["n"].isna()).sum())
    assert n_hidden > 0 and f"{n_hidden} site(s) with suppressed counts not shown" in " ".join(legend.split())


def test_MISS_FIG_002_many_clusters_and_plain_text():
    """MISS-FIG-002: 120 clusters -> 60 labelled and the caption says so; '$' in names stays literal."""
    from hmlib.figures import diagnose as figures
    from hmlib.figures import style

    idx = [f"$x$ site {i}" for i in range(120)]
    heat = pd.DataFrame({"v": np.linspace(1, 0, 120)}, index=idx)
    fig = figures.missingness_heatmap(heat)
    ax = fig.axes[0]
    assert len([t for t in ax.get_yticklabels() if t.get_text() != "..."]) == 60
    assert "of 120" in style.caption_of(fig)[1]
    assert ax.get_yticklabels()[0].get_text() == r"\$x\$ site 0"


def test_MISS_DIAG_008_default_cluster_names(tiny):
    """MISS-DIAG-008: text labels are shown as they are, numeric ones get the cluster noun."""
    frame = tiny.assign(out=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    r = diagnose(frame, cluster="site", outcome="out", outcome_family="gaussian", predictors=["x", "y"],
                 min_cell=1)
    assert r.cluster_names == {"A": "A", "B": "B"}
    numeric = frame.assign(site=[1, 1, 1, 1, 2, 2, 2])
    r2 = diagnose(numeric, cluster="site", outcome="out", outcome_family="gaussian", predictors=["x", "y"],
                  min_cell=1, cluster_noun="ward")
    assert r2.cluster_names == {1: "ward 1", 2: "ward 2"}
    assert r2.by_cluster.values["n_missing"].tolist() == [2, 0, 0, 3]  # min_cell=1: nothing hidden


# ---------------------------------------------------------------- artifact
def test_MISS_ART_001_artifact_round_trips(tmp_path):
    """MISS-ART-001: DiagnoseArtifact written by to_artifact().write and read back with
    DiagnoseArtifact.read is equal to the one written (structural gaps, suppressed cells, every
    model present; and with nothing missing); rows read back are typed records."""
    frame = structural_gap_registry(3)
    r = diagnose(frame, cluster="site", outcome="y", outcome_family="binomial", predictors=["age", "sex", "x", "z"],
                 focus="x", cluster_noun="site", input_notices=["a notice"], n_rows_read=760,
                 n_excluded_missing_cluster=10)
    assert r.variation_sporadic and r.focus_variation is not None and r.outcome_correlation is not None
    assert any("z is missing for fewer than 11" in n for n in r.notes)
    written = r.to_artifact()
    written.write(tmp_path)
    back = DiagnoseArtifact.read(tmp_path)
    assert back == written
    assert back.to_json() == written.to_json()
    assert back.n_rows_read == 760 and back.input_notices == ("a notice",)
    assert type(back.overview[0]).__name__ == "OverviewRow"
    assert type(back.missingness_predictors["x"].table[0]).__name__ == "PredictorRow"
    assert {"site 4", "site 9"} <= set(back.gap_summary[0].structural_clusters)
    assert back.funnels["x"].above == written.funnels["x"].above

    empty = tmp_path / "empty"
    rng = np.random.default_rng(0)
    complete = pd.DataFrame({"c": np.repeat(np.arange(10), 20), "y": rng.normal(size=200),
                             "x": rng.normal(size=200)})
    nothing = diagnose(complete, cluster="c", outcome="y", outcome_family="gaussian", predictors=["x"]).to_artifact()
    nothing.write(empty)
    assert DiagnoseArtifact.read(empty) == nothing


def test_MISS_ART_002_renamed_or_missing_field_is_refused(tmp_path):
    """MISS-ART-002: a row with a renamed field, a row or record with a field missing, and a
    field of the wrong type each raise ArtifactError naming the place."""
    r = diagnose(structural_gap_registry(3), cluster="site", outcome="y", outcome_family="binomial",
                 predictors=["age", "sex", "x", "z"], focus="x", cluster_noun="site")
    path = r.to_artifact().write(tmp_path)
    assert path == artifact_path(tmp_path, "diagnose")
    original = json.loads(path.read_text())

    def refused(edit, match):
        payload = json.loads(json.dumps(original))
        edit(payload["record"])
        path.write_text(json.dumps(payload))
        with pytest.raises(ArtifactError, match=match):
            DiagnoseArtifact.read(tmp_path)

    def rename(rec):
        row = rec["overview"][1]
        row["share_miss"] = row.pop("share_missing")

    refused(rename, r"diagnose\.overview\[1\]: unknown field\(s\) share_miss")
    refused(lambda rec: rec["gap_summary"][0].pop("structural_clusters"),
            r"diagnose\.gap_summary\[0\]: field\(s\) structural_clusters missing")
    refused(lambda rec: rec["missingness_predictors"]["x"]["table"][0].pop("odds_ratio"),
            r"diagnose\.missingness_predictors\.x\.table\[0\]: field\(s\) odds_ratio missing")
    refused(lambda rec: rec["cluster_variation"]["x"].pop("cluster_sd"), r"cluster_sd missing")
    refused(lambda rec: rec["funnels"]["x"].pop("above"), r"diagnose\.funnels\.x: field\(s\) above missing")
    refused(lambda rec: rec["settings"].pop("structural_share"), r"structural_share missing")
    refused(lambda rec: rec.pop("n_patients"), r"diagnose: field\(s\) n_patients missing")
    refused(lambda rec: rec["by_cluster"][0].update(n_missing="eleven"), r"by_cluster\[0\]\.n_missing")


def test_MISS_DIAG_010_min_cell_above_the_patient_count():
    """MISS-DIAG-010: privacy.min_cell above the number of patients suppresses the counts and the narrative
    says so in words; it does not crash (it raised 'cannot convert float NaN to integer'). Only the extract's
    total is printed (the denominator of the whole report, not a cell)."""
    from hmlib.simulate.registries import small_registry

    frame = small_registry(seed=2)
    result = diagnose(frame, cluster="site", outcome="died", outcome_family="binomial",
                      predictors=["age", "sex", "lab"], focus="lab", min_cell=500)
    text = " ".join(result.narrative())
    assert "Of a suppressed number of patients" in text
    assert text.count(str(len(frame))) == 1 and text.startswith(f"The extract has {len(frame)} patients")
    result.to_artifact()  # writes without error
