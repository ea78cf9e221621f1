"""A categorical focus variable in steps 1-3: the missing-category model, diagnose and imputation tables.

The missing-category model (:func:`hmlib.stats.complete_case.fit_missing_category_model`) is
checked against lme4 (``tests/results/missing_category.R`` / ``.json``) on the simulated
registry ``categorical_registry.csv`` (:func:`hmlib.simulate.categorical.categorical_registry`,
seed 11, 30 sites) and on real data with an incomplete categorical predictor (``Hisp`` and
``Use.Tob`` of opt_periodontal, the school denomination ``den`` of brandsma).

Test IDs
--------
CAT-MC-001  missing-category model = glmer / lmer with "missing" as a level (coefficients to 1e-3)
CAT-MC-002  the missing level's effect by cluster = R's within-cluster glm, and its pooling
CAT-MC-003  the missing level is last (reference unchanged) and never collides with a level
CAT-MC-004  step 2 on a categorical focus: method missing_indicator with focus[missing], per-level
            sentences, typed artifact fields, figures with one colour per level
CAT-MC-005  the complete-case shift of a categorical variable, level by level, by hand
CAT-DIAG-001..003  step 1: level shares by cluster, suppression, narrative and artifact
CAT-STEP3-001      step 3: every focus level in the narrative, level shares observed vs imputed
CAT-SIM-001..002   the generator (hmlib.simulate.categorical): reproducible, as documented, its truth
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REFERENCE, REPO
from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.simulate.categorical import categorical_registry
from hmlib.stats.complete_case import fit_missing_category_model, missing_level_label
from hmlib.steps.complete_case import CompleteCaseArtifact, complete_case_check

REAL = REPO / "data" / "real"
R_CASES = {c["name"]: c for c in json.loads((REFERENCE / "missing_category.json").read_text())}

#: name -> (data file, params of the registry): the models of missing_category.R
CASES = {
    "categorical_registry": (REFERENCE / "categorical_registry.csv", dict(
        cluster="site", outcome="outcome", outcome_family="binomial",
        predictors=["lactate_band", "age", "severity"], focus="lactate_band")),
    "opt_hisp": (REAL / "opt_periodontal.csv", dict(
        cluster="Clinic", outcome="preterm", outcome_family="binomial",
        predictors=["Group", "Age", "Black", "Education", "Public.Asstce", "Hisp"], focus="Hisp")),
    "opt_use_tob": (REAL / "opt_periodontal.csv", dict(
        cluster="Clinic", outcome="preterm", outcome_family="binomial",
        predictors=["Group", "Age", "Black", "Education", "Public.Asstce", "BMI", "Use.Tob"], focus="Use.Tob")),
    "brandsma_den": (REAL / "brandsma.csv", dict(
        cluster="sch", outcome="lpo", outcome_family="gaussian", predictors=["iqv", "ses", "sex", "lpr", "den"],
        categorical=["sex", "den"], focus="den")),
}


def _registry(folder, data, **params):
    folder.mkdir(parents=True, exist_ok=True)
    base = {"name": "t", "data": str(data), "seed": 1, **params}
    (folder / "p.yaml").write_text(yaml.safe_dump(base))
    return load_registry(load_params(folder / "p.yaml"))


def _lme4_term(term: str) -> str:
    """hmlib's ``name[level]`` as lme4 names it (``namelevel``)."""
    return term.replace("Intercept", "(Intercept)").replace("[", "").replace("]", "")


@pytest.fixture(scope="module")
def step2_results(tmp_path_factory):
    """Step 2 on each reference case: name -> CompleteCaseResult."""
    root = tmp_path_factory.mktemp("mc")
    return {name: complete_case_check(_registry(root / name, data, **params))
            for name, (data, params) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_cat_mc_001_missing_category_model_matches_lme4(step2_results, name):
    """CAT-MC-001: the missing_indicator rows of a categorical focus are glmer's (binomial, Laplace) or
    lmer's (gaussian, ML) fit with "missing" as the focus's last level: every fixed effect to 1e-3,
    its SE to 1% (relative), the cluster SD to 1e-3, the same rows and clusters
    (missing_category.R)."""
    ref = R_CASES[name]
    res = step2_results[name]
    rows = res.estimates.loc[res.estimates["method"] == "missing_indicator"].set_index("term")
    cluster = CASES[name][1]["cluster"]
    fixed = rows.drop(index=f"sd({cluster})")
    assert sorted(_lme4_term(t) for t in fixed.index) == sorted(ref["fixed"])
    assert res.indicator_term == f"{CASES[name][1]['focus']}[missing]" and res.indicator_term in fixed.index
    for term, row in fixed.iterrows():
        expected = ref["fixed"][_lme4_term(term)]
        assert row["estimate"] == pytest.approx(expected["estimate"], abs=1e-3), term
        assert row["std_error"] == pytest.approx(expected["std_error"], rel=0.01), term
    assert rows.loc[f"sd({cluster})", "estimate"] == pytest.approx(ref["cluster_sd"], abs=1e-3)
    assert int(rows["n_patients"].iloc[0]) == ref["n_used"] and int(rows["n_clusters"].iloc[0]) == ref["n_clusters"]


def test_cat_mc_002_missing_level_by_cluster_matches_r(step2_results):
    """CAT-MC-002: the missing level's effect within each cluster (own intercept, common model's fixed
    part as offset) equals R's per-cluster glm to 1e-3, in the same clusters; the DerSimonian-Laird
    tau, mean and heterogeneity p equal R's (missing_category.R, by_cluster)."""
    ref = R_CASES["categorical_registry"]["by_cluster"]
    table = step2_results["categorical_registry"].indicator_by_cluster
    mine = table.dropna(subset=["raw"]).set_index("cluster")
    theirs = pd.DataFrame(ref["table"]).set_index("cluster")
    assert sorted(mine.index) == sorted(theirs.index)
    assert (mine["raw"] - theirs["raw"]).abs().max() < 1e-3
    assert (mine["raw_se"] - theirs["raw_se"]).abs().max() < 1e-3
    assert table.attrs["n_estimable"] == ref["n_estimable"]
    assert table.attrs["tau"] == pytest.approx(ref["tau"], abs=1e-3)
    assert table.attrs["mean"] == pytest.approx(ref["mean"], abs=1e-3)
    assert table.attrs["q_p"] == pytest.approx(ref["q_p"], abs=1e-3)


def test_cat_mc_003_missing_level_is_last_and_never_collides():
    """CAT-MC-003: the missing level comes after the observed levels (the reference level and the
    other levels' terms are those of the complete-case model), and a level already called
    "missing" keeps its meaning: the missing level then takes another label."""
    frame = categorical_registry(3, n_sites=12, n_patients=600)
    model = fit_missing_category_model(frame, focus="lactate_band", predictors=["lactate_band", "age"],
                                       outcome="outcome", cluster="site", family="binomial")
    assert model.fit.term_names == ("Intercept", "lactate_band[normal]", "lactate_band[raised]",
                                    "lactate_band[missing]", "age")
    assert model.indicator == "lactate_band[missing]"
    assert frame["lactate_band"].isna().any()                      # the input is not modified
    assert missing_level_label(["missing", "yes"]) == "missing (not recorded)"
    recoded = frame.assign(lactate_band=frame["lactate_band"].replace({"raised": "missing"}))
    model = fit_missing_category_model(recoded, focus="lactate_band", predictors=["lactate_band", "age"],
                                       outcome="outcome", cluster="site", family="binomial")
    assert model.indicator == "lactate_band[missing (not recorded)]"
    assert "lactate_band[missing]" in model.fit.term_names         # the recorded level "missing"
    n_missing = int(frame["lactate_band"].isna().sum())
    k = model.fit.term_names.index(model.indicator)
    assert model.design.X[:, k].sum() == n_missing


def test_cat_mc_004_step2_categorical_focus(tmp_path, step2_results):
    """CAT-MC-004: step 2 with a categorical focus writes missing_indicator rows with every level and
    focus[missing], states each level's coefficient (complete cases and missing-category model, with
    odds ratios) and the missing level's, keeps the levels and the indicator term in its typed
    artifact, and draws the level shares and the missing level's effect by cluster."""
    res = step2_results["categorical_registry"]
    assert res.focus_levels == ("high", "normal", "raised")
    assert res.focus_terms == ["lactate_band[normal]", "lactate_band[raised]"]
    text = res.narrative()
    for term in res.focus_terms:
        assert any(s.startswith(f"The {term} coefficient against lactate_band = high is") and "odds ratio" in s
                   for s in text), term
    assert any(s.startswith("Patients without a recorded lactate_band (lactate_band[missing]") for s in text)
    assert not any("numeric focus variables only" in s for s in text)
    artifact = res.to_artifact()
    assert artifact.focus_levels == ("high", "normal", "raised")
    assert artifact.indicator_term == "lactate_band[missing]"
    assert CompleteCaseArtifact.from_json(json.loads(json.dumps(artifact.to_json()))) == artifact
    figures = res.figures()
    assert len(figures["shift"]) == 2 and len(figures["indicator_by_cluster"]) == 1
    shares = figures["shift"][1]
    legend = [t.get_text() for ax in shares.axes for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["high", "normal", "raised"]
    numeric = step2_results["brandsma_den"]
    assert numeric.indicator_term == "den[missing]" and numeric.focus_levels == ("1", "2", "3", "4")


def test_cat_mc_005_shift_per_level_by_hand():
    """CAT-MC-005: the estimand shift of a categorical variable is one row per level, the share of
    each level among the recorded values of all patients against among complete cases, with its
    SMD (Austin 2009), computed by hand on a frame where another variable's gaps move the mix."""
    from hmlib.stats.complete_case import complete_case_mask, standardized_differences

    frame = pd.DataFrame({"band": ["lo", "lo", "hi", "hi", None, "mid", "hi", "lo"],
                          "x": [1.0, np.nan, 2.0, np.nan, 1.0, 3.0, 2.0, 1.0], "y": [0, 1, 1, 0, 1, 0, 1, 0]})
    complete = complete_case_mask(frame, ["band", "x", "y"])
    rows = standardized_differences(frame, complete, ["band"], {"band": "categorical"}).set_index("level")
    assert list(rows.index) == ["hi", "lo", "mid"] and set(rows["summary"]) == {"share"}
    # all patients: 7 recorded (hi 3, lo 3, mid 1); complete cases: rows 0, 2, 5, 6, 7 (hi 2, lo 2, mid 1)
    assert rows["all_patients"].to_dict() == pytest.approx({"hi": 3 / 7, "lo": 3 / 7, "mid": 1 / 7})
    assert rows["complete_cases"].to_dict() == pytest.approx({"hi": 2 / 5, "lo": 2 / 5, "mid": 1 / 5})
    p_all, p_cc = 1 / 7, 1 / 5
    assert rows.loc["mid", "smd"] == pytest.approx((p_cc - p_all) / np.sqrt((p_all * (1 - p_all) + p_cc * (1 - p_cc)) / 2))


# ---------------------------------------------------------------------------
# Step 1: the recorded levels by cluster
# ---------------------------------------------------------------------------
def test_cat_diag_001_level_counts_and_mix_by_hand():
    """CAT-DIAG-001: level counts by cluster by hand; the homogeneity test equals scipy's chi2_contingency
    over the clusters with a recorded value, Cramer's V its definition, each level's correlation
    scipy's Spearman over the clusters with at least min_recorded recorded values."""
    from scipy import stats

    from hmlib.stats.missingness import level_counts_by_cluster, level_mix

    frame = pd.DataFrame({"site": list("AAAABBBCCD"),
                          "band": ["lo", "hi", None, "lo", "hi", "hi", None, None, None, "lo"]})
    counts = level_counts_by_cluster(frame, "band", "site", ["lo", "hi"])
    assert counts.to_dict(orient="index") == {
        "A": {"n": 4, "n_missing": 1, "n_recorded": 3, "lo": 2, "hi": 1},
        "B": {"n": 3, "n_missing": 1, "n_recorded": 2, "lo": 0, "hi": 2},
        "C": {"n": 2, "n_missing": 2, "n_recorded": 0, "lo": 0, "hi": 0},
        "D": {"n": 1, "n_missing": 0, "n_recorded": 1, "lo": 1, "hi": 0}}
    data = pd.read_csv(REFERENCE / "categorical_registry.csv")
    counts = level_counts_by_cluster(data, "lactate_band", "site", ["high", "normal", "raised"])
    mix = level_mix(counts, "lactate_band", min_recorded=11)
    table = counts.loc[counts["n_recorded"] > 0, ["high", "normal", "raised"]].to_numpy()
    chi2, p, df, _ = stats.chi2_contingency(table, correction=False)
    assert (mix.chi2, mix.p_value, mix.df) == (pytest.approx(chi2), pytest.approx(p), df)
    assert mix.cramers_v == pytest.approx(np.sqrt(chi2 / (table.sum() * 2)))
    assert mix.n_clusters_tested == len(table) == 28                  # two sites never record it
    big = counts.loc[counts["n_recorded"] >= 11]
    rho, p = stats.spearmanr(big["n_missing"] / big["n"], big["normal"] / big["n_recorded"])
    assert mix.missing_correlation["normal"] == (pytest.approx(rho), pytest.approx(p))
    assert sum(mix.overall_shares.values()) == pytest.approx(1.0)


def test_cat_diag_002_level_counts_suppressed_around_the_cluster_decision(tmp_path):
    """CAT-DIAG-002: the by-cluster missingness table of a categorical focus is the one a numeric
    focus gets (the level breakdown hides nothing there); every level count from 1 to min_cell - 1
    is hidden; where the recorded count is shown no row has exactly one hidden level, and no level
    column has exactly one hidden cell (column totals are published); a total hidden elsewhere
    (suppress_counts' hidden=) gets a hidden part."""
    from hmlib.privacy import suppress_counts
    from hmlib.stats.missingness import level_counts_by_cluster
    from hmlib.steps.diagnose import diagnose

    frame = categorical_registry(5, n_sites=25, n_patients=900)
    roles = dict(cluster="site", outcome="outcome", outcome_family="binomial",
                 predictors=["lactate_band", "age", "severity"], focus="lactate_band", min_cell=11)
    levels = {"lactate_band": ["high", "normal", "raised"]}
    res = diagnose(frame, levels=levels, **roles)
    plain = diagnose(frame, **roles)
    pd.testing.assert_frame_equal(res.by_cluster.values, plain.by_cluster.values)
    assert plain.focus_levels is None and res.focus_levels is not None
    shown = res.focus_levels.table.set_index("cluster")
    counts = level_counts_by_cluster(frame, "lactate_band", "site", levels["lactate_band"])
    counts.index = [res.cluster_names[c] for c in counts.index]
    counts = counts.loc[shown.index]
    hidden = shown[levels["lactate_band"]].isna() & (counts["n_recorded"] > 0).to_numpy()[:, None]
    small = (counts[levels["lactate_band"]] > 0) & (counts[levels["lactate_band"]] < 11)
    assert hidden[small].fillna(True).all().all()
    assert small.to_numpy().any()                                       # the test has small cells to hide
    visible_total = shown["n_recorded"].notna()
    assert not (hidden.loc[visible_total].sum(axis=1) == 1).any()
    assert not (hidden.sum(axis=0) == 1).any()
    table = pd.DataFrame({"o": [30, 40], "a": [15, 20], "b": [15, 20]})
    given = pd.DataFrame({"o": [True, False]})
    masked = suppress_counts(table, ["a", "b"], 11, total_column="o", parts=[["a", "b"]], hidden=given)
    assert bool(masked.mask.loc[0, "o"]) and masked.mask.loc[0, ["a", "b"]].sum() == 1


def test_cat_diag_003_step1_categorical_focus(tmp_path):
    """CAT-DIAG-003: step 1 on the reference registry states the recorded mix of levels, that it
    differs between sites, and that sites missing lactate_band more often record "normal" less
    often (missingness depends on severity, and so does the band); the typed artifact keeps the
    mix; the figures gain the levels-by-cluster plot (legend: missing, then each level)."""
    from hmlib.steps.diagnose import DiagnoseArtifact, diagnose_registry

    data, params = CASES["categorical_registry"]
    res = diagnose_registry(_registry(tmp_path, data, **params))
    text = " ".join(res.narrative())
    assert "Among the recorded values of lactate_band: high 18%, normal 47%, raised 35%" in text
    assert "The mix of recorded lactate_band levels differs between sites" in text
    assert "record normal less often (Spearman -0.54" in text
    artifact = res.to_artifact()
    assert artifact.focus_levels.levels == ("high", "normal", "raised")
    assert artifact.focus_levels.mix.n_clusters_tested == 28
    assert DiagnoseArtifact.from_json(json.loads(json.dumps(artifact.to_json()))) == artifact
    figure = res.figures()["by_cluster"][-1]
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["missing", "high", "normal", "raised", "suppressed"]


# ---------------------------------------------------------------------------
# Step 3: every level, and the levels observed vs imputed
# ---------------------------------------------------------------------------
def test_cat_step3_001_every_level_and_level_shares(tmp_path):
    """CAT-STEP3-001: step 3 on a categorical focus states each non-reference level's coefficient
    (against the reference level) and its fraction of missing information for every method, draws
    every focus level in the forest plot, and publishes the level shares observed and imputed by
    method in the clusters with most missing values (a cluster that never recorded the focus has
    imputed shares only; observed shares that would reveal a count below min_cell are left out);
    the typed artifact keeps the levels and the table."""
    from hmlib.steps.imputation import ImputationArtifact, imputation_step

    data, params = CASES["categorical_registry"]
    res = imputation_step(_registry(tmp_path, data, **params), m=3, iterations=2, transport=False)
    assert res.focus_terms == ["lactate_band[normal]", "lactate_band[raised]"]
    text = res.narrative()
    for term in res.focus_terms:
        assert any(s.startswith(f"The {term} coefficient against lactate_band = high (95% interval)") for s in text)
        assert any(s.startswith(f"Fraction of missing information for the {term} coefficient") for s in text)
    table = res.level_distributions
    assert set(table["source"]) == {"observed", "flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi"}
    sums = table.groupby(["cluster", "source"])["share"].sum()
    assert np.allclose(sums.to_numpy(), 1.0)
    frame = pd.read_csv(data)
    never = [c for c, g in frame.groupby("site") if g["lactate_band"].isna().all()]
    chosen = set(table["cluster"])
    assert set(never) & chosen                                         # a never-recording site is shown
    for site in chosen:
        observed = frame.loc[(frame["site"] == site), "lactate_band"].dropna().value_counts()
        has_observed = ((table["cluster"] == site) & (table["source"] == "observed")).any()
        assert has_observed == (len(observed) > 0 and not ((observed > 0) & (observed < 11)).any())
    artifact = res.to_artifact()
    assert artifact.focus_levels == ("high", "normal", "raised") and len(artifact.level_distributions) == len(table)
    assert ImputationArtifact.from_json(json.loads(json.dumps(artifact.to_json()))) == artifact
    figures = res.figures()
    assert [ax.get_title() for ax in figures["estimates"][0].axes[:3]] == [
        "lactate_band[normal]", "lactate_band[raised]", "sd(site)"]
    assert len(figures["distributions"]) == 1


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------
def test_cat_sim_001_generator_reproducible_and_as_documented():
    """CAT-SIM-001: categorical_registry is reproducible by seed (another seed, other data); its
    columns are the documented ones; the reference files were made by it (seed 11, and seed 12
    ordinal); band_doc_corr leaves every draw but documentation quality unchanged."""
    a, b = categorical_registry(4, 12, 600), categorical_registry(4, 12, 600)
    pd.testing.assert_frame_equal(a, b)
    assert not categorical_registry(5, 12, 600).equals(a)
    assert list(a.columns) == ["site", "outcome", "age", "severity", "lactate_band"]
    assert set(a["lactate_band"].dropna()) == {"normal", "raised", "high"}
    pd.testing.assert_frame_equal(categorical_registry(11, n_sites=30, n_patients=2000),
                                  pd.read_csv(REFERENCE / "categorical_registry.csv"), check_dtype=False)
    pd.testing.assert_frame_equal(categorical_registry(12, n_sites=30, n_patients=2000, ordinal=True),
                                  pd.read_csv(REFERENCE / "categorical_registry_ordinal.csv"), check_dtype=False)
    shifted = categorical_registry(4, 12, 600, band_doc_corr=-0.6)
    pd.testing.assert_frame_equal(shifted.drop(columns="lactate_band"), a.drop(columns="lactate_band"))
    assert shifted["lactate_band"].notna().sum() != a["lactate_band"].notna().sum()  # only missingness moves
    recorded = a["lactate_band"].notna() & shifted["lactate_band"].notna()
    assert (a.loc[recorded, "lactate_band"] == shifted.loc[recorded, "lactate_band"]).all()
    with pytest.raises(ValueError, match="band_doc_corr"):
        categorical_registry(4, 12, 600, band_doc_corr=0.9)


def test_cat_sim_002_truth_recovered_in_a_large_draw():
    """CAT-SIM-002: in a large draw (20,000 patients, 200 sites) the complete-case fit of the analysis
    model recovers the documented truth (each level's log odds ratio within 0.12, site SD within
    0.1; missingness depends on site and severity only), about a third to a half of the band is
    missing, and exactly two sites never record it."""
    from hmlib.simulate.categorical import categorical_registry_truth
    from hmlib.stats.design import fit_analysis_model

    frame = categorical_registry(7, n_sites=200, n_patients=20000)
    truth = categorical_registry_truth()["terms"]
    fit = fit_analysis_model(frame, outcome="outcome", predictors=["lactate_band", "age", "severity"],
                             cluster="site", family="binomial")
    coef = dict(zip(fit.term_names, fit.coef))
    for term in ("lactate_band[normal]", "lactate_band[raised]"):
        assert coef[term] == pytest.approx(truth[term], abs=0.12), term
    assert fit.cluster_sd == pytest.approx(truth["sd(site)"], abs=0.1)
    assert 0.3 < frame["lactate_band"].isna().mean() < 0.5
    never = frame.groupby("site")["lactate_band"].apply(lambda x: x.isna().all())
    assert int(never.sum()) == 2
