"""The demo registry (hmlib.simulate.demo): determinism, contents, truth, files, design.

The design checks (DEMO-010) are a small version of ``bench/demo_design.py``
(200 seeds; numbers in ``bench/results/demo_design.json``), whose functions
are imported from the script so that the conditions have one definition.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hmlib.simulate.demo import (ANALYSIS_PREDICTORS, COLUMNS, DEFAULT_SEED, DEMO_PARAMS_YAML,
                        LACTATE_MODEL, MISSINGNESS_MODEL, OUTCOME_COEFFICIENTS, DemoPaths,
                        DemoRegistry, simulate_complete_data, simulate_registry, write_demo)
from hmlib.exceptions import ParamsError
from conftest import load_bench

TERMS = ["Intercept", "age", "sex[male]", "severity", "lactate", "sbp", "sd(site)"]


@pytest.fixture(scope="module")
def demo() -> DemoRegistry:
    return simulate_registry()


def test_demo_001_same_seed_same_registry_other_seed_differs(demo):
    """DEMO-001: same seed -> identical frame and truth; another seed -> different."""
    again = simulate_registry(seed=DEFAULT_SEED)
    pd.testing.assert_frame_equal(demo.data, again.data)
    assert json.dumps(demo.truth, sort_keys=True) == json.dumps(again.truth, sort_keys=True)
    other = simulate_registry(seed=DEFAULT_SEED + 1)
    assert not demo.data.equals(other.data)
    assert other.truth["terms"]["Intercept"] != demo.truth["terms"]["Intercept"]
    assert other.truth["per_site"] != demo.truth["per_site"]


def test_demo_002_columns_and_dtypes(demo):
    """DEMO-002: exactly the documented columns, in order, with their dtypes."""
    data = demo.data
    assert tuple(data.columns) == COLUMNS
    assert len(data) == 3000
    assert data["patient_id"].dtype == np.int64
    assert data["patient_id"].tolist() == list(range(1, 3001))
    for col in ("site", "site_type", "sex"):
        assert pd.api.types.is_string_dtype(data[col]), col
    assert sorted(data["site"].unique()) == [f"Site {j:02d}" for j in range(1, 31)]
    assert set(data["site_type"]) == {"major trauma centre", "trauma unit"}
    assert set(data["sex"]) == {"female", "male"}
    for col in ("age", "lactate", "sbp"):
        assert data[col].dtype == np.float64, col
    for col in ("severity", "mortality_30d"):
        assert data[col].dtype == np.int64, col
    # Only lactate and sbp have gaps.
    assert data.drop(columns=["lactate", "sbp"]).notna().all().all()


def test_demo_003_value_ranges(demo):
    """DEMO-003: lactate positive (>= assay floor), 0/1 outcome, plausible ranges."""
    data = demo.data
    lactate = data["lactate"].dropna()
    assert (lactate >= LACTATE_MODEL["floor"]).all() and (lactate > 0).all()
    assert lactate.skew() > 0.2  # right-skewed
    assert 2.0 < lactate.median() < 4.5
    assert set(data["mortality_30d"].unique()) == {0, 1}
    assert data["age"].between(16, 99).all()
    assert data["severity"].between(1, 75).all()
    assert data["sbp"].dropna().between(50, 230).all()
    assert (data["age"] * 10 == (data["age"] * 10).round()).all()  # 1 decimal
    assert (lactate * 100 - (lactate * 100).round()).abs().max() < 1e-6  # 2 decimals
    assert 0.2 < data["lactate"].isna().mean() < 0.6
    assert 0.01 < data["sbp"].isna().mean() < 0.06
    # site_type is a cluster-level covariate: constant within each site.
    assert (data.groupby("site")["site_type"].nunique() == 1).all()
    sizes = data.groupby("site").size()
    assert sizes.min() < 15 and sizes.max() > 4 * sizes.median()  # very unequal sizes


def test_demo_004_truth_terms_and_per_site_match_data(demo):
    """DEMO-004: truth keyed as estimates.csv terms; per-site summaries match the frame."""
    truth = demo.truth
    assert list(truth["terms"]) == TERMS
    for term, value in OUTCOME_COEFFICIENTS.items():
        assert truth["terms"][term] == value
    assert truth["terms"]["sd(site)"] == 0.6
    assert truth["seed"] == DEFAULT_SEED
    assert truth["call"] == {"seed": DEFAULT_SEED, "n_patients": 3000, "n_sites": 30}
    assert truth["generator"] == "hmlib.simulate.demo.simulate_registry"
    data = demo.data
    per_site = pd.DataFrame(truth["per_site"]).set_index("site")
    assert len(per_site) == 30
    grouped = data.groupby("site")
    assert per_site["n"].to_dict() == grouped.size().to_dict()
    np.testing.assert_allclose(per_site["missing_rate"],
                               grouped["lactate"].apply(lambda s: s.isna().mean()), atol=1e-6)
    np.testing.assert_allclose(per_site["observed_mortality"],
                               grouped["mortality_30d"].mean(), atol=1e-6)
    assert per_site["site_type"].to_dict() == grouped["site_type"].first().to_dict()
    # Realised site effects: documentation quality correlates -0.5 with the
    # outcome effect; the lactate offset's own part is exactly uncorrelated
    # with both (the site-type shift adds a chance correlation), which keeps
    # the random-intercept model unbiased on the complete data.
    assert np.corrcoef(per_site["doc_quality"], per_site["outcome_re"])[0, 1] == pytest.approx(-0.5, abs=1e-4)
    own_part = per_site["lactate_site_offset"] - LACTATE_MODEL["trauma_unit"] * (
        per_site["site_type"] == "trauma unit")
    for effect in ("outcome_re", "doc_quality"):
        assert abs(np.corrcoef(own_part, per_site[effect])[0, 1]) < 1e-4, effect
    assert own_part.std(ddof=0) == pytest.approx(LACTATE_MODEL["site_sd"], rel=1e-3)
    assert abs(truth["lactate_model"]["corr_site_offset_outcome_re_realised"]) < 0.3
    assert truth["mortality"]["overall"] == pytest.approx(data["mortality_30d"].mean(), abs=1e-6)
    json.dumps(truth)  # JSON-ready


def test_demo_005_structural_sites_have_no_lactate(demo):
    """DEMO-005: the two structural sites have no lactate at all; all others have some."""
    data = demo.data
    structural = demo.truth["missingness_model"]["structural_sites"]
    assert len(structural) == 2
    flagged = [row["site"] for row in demo.truth["per_site"] if row["structural_missing"]]
    assert sorted(flagged) == sorted(structural)
    observed = data["lactate"].notna().groupby(data["site"]).sum()
    assert (observed[structural] == 0).all()
    assert (observed.drop(structural) > 0).all()
    site_type = data.groupby("site")["site_type"].first()
    assert (site_type[structural] == "trauma unit").all()


def test_demo_006_truth_is_the_generating_model(demo):
    """DEMO-006: the truth reproduces the data: expected deaths and a CC fit agree with it.

    With the true coefficients and the per-site random effects, the expected
    number of deaths among patients with complete data must match the
    observed number within binomial noise (a wrong sign or scale would be far
    off); and the complete-case random-intercept fit (valid for the
    coefficients here: lactate is missing at random given site and severity,
    both in the model) must cover the true lactate coefficient.
    """
    from hmlib.stats.mixed import fit_random_intercept

    data = demo.data.dropna()
    terms = demo.truth["terms"]
    re = {row["site"]: row["outcome_re"] for row in demo.truth["per_site"]}
    eta = (terms["Intercept"] + terms["age"] * data["age"] + terms["sex[male]"] * (data["sex"] == "male")
           + terms["severity"] * data["severity"] + terms["lactate"] * data["lactate"]
           + terms["sbp"] * data["sbp"] + data["site"].map(re))
    p = 1 / (1 + np.exp(-eta.to_numpy(dtype=float)))
    z = (data["mortality_30d"].sum() - p.sum()) / np.sqrt((p * (1 - p)).sum())
    assert abs(z) < 3
    X = np.column_stack([np.ones(len(data)), data["age"], (data["sex"] == "male").astype(float),
                         data["severity"], data["lactate"], data["sbp"]])
    fit = fit_random_intercept(data["mortality_30d"].to_numpy(float), X, data["site"].to_numpy(),
                               family="binomial", term_names=TERMS[:-1], cluster_name="site")
    k = TERMS.index("lactate")
    assert abs(fit.coef[k] - terms["lactate"]) < 2.5 * fit.std_error[k]
    assert fit.coef[k] > 0


def test_demo_007_write_demo_files_yaml_and_bytes(tmp_path):
    """DEMO-007: write_demo writes the three files; YAML is the constant; bytes are stable."""
    paths = write_demo(tmp_path)
    assert isinstance(paths, DemoPaths)
    assert paths.data == tmp_path / "data" / "demo" / "demo_registry.csv"
    assert paths.truth == tmp_path / "data" / "demo" / "demo_registry_truth.json"
    assert paths.params == tmp_path / "params" / "demo.yaml"
    assert paths.params.read_text(encoding="utf-8") == DEMO_PARAMS_YAML
    params = yaml.safe_load(DEMO_PARAMS_YAML)
    assert params["predictors"] == ["age", "sex", "severity", "lactate", "sbp"]
    assert params["seed"] == DEFAULT_SEED and params["focus"] == "lactate"
    assert (paths.params.parent / params["data"]).resolve() == paths.data.resolve()
    assert (paths.params.parent / params["truth"]).resolve() == paths.truth.resolve()

    demo = simulate_registry()
    read = pd.read_csv(paths.data)
    assert list(read.columns) == list(COLUMNS)
    for col in COLUMNS:
        np.testing.assert_array_equal(read[col].to_numpy(), demo.data[col].to_numpy(), err_msg=col)
    assert json.loads(paths.truth.read_text(encoding="utf-8")) == demo.truth
    text = pd.read_csv(paths.data, dtype=str, keep_default_na=False)
    assert not text["sbp"].str.contains(".", regex=False).any()  # whole mmHg, no "128.0"
    assert text["lactate"].str.fullmatch(r"(\d+(\.\d{1,2})?)?").all()  # "" or <= 2 decimals
    assert (text["lactate"] == "").sum() == demo.data["lactate"].isna().sum()

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    first = {name: digest(getattr(paths, name)) for name in ("data", "truth", "params")}
    again = write_demo(tmp_path / "again")
    assert {name: digest(getattr(again, name)) for name in ("data", "truth", "params")} == first


def test_demo_008_written_demo_loads_through_params_and_data(tmp_path):
    """DEMO-008: the written params and data pass hmlib's own params and data checks."""
    from hmlib.data import load_registry
    from hmlib.params import load_params

    paths = write_demo(tmp_path)
    params = load_params(paths.params)
    assert params.data == paths.data.resolve()
    assert params.truth == paths.truth.resolve()
    registry = load_registry(params)
    assert registry.n_patients == 3000 and registry.n_clusters == 30
    assert registry.params.focus == "lactate"
    assert set(registry.incomplete_variables) == {"lactate", "sbp"}


def test_demo_009_bad_arguments_raise_params_error(tmp_path):
    """DEMO-009: non-integer or out-of-range arguments raise ParamsError before any work."""
    for kwargs in ({"seed": 1.5}, {"seed": -1}, {"n_sites": 5}, {"n_patients": 100},
                   {"n_sites": True}):
        with pytest.raises(ParamsError):
            simulate_registry(**kwargs)
    with pytest.raises(ParamsError):
        write_demo(tmp_path, n_patients=10)
    assert not (tmp_path / "data").exists()


def test_demo_011_complete_data_is_the_registry_before_deletion(demo):
    """DEMO-011: simulate_complete_data fills exactly the gaps, nothing else changes."""
    full = simulate_complete_data()
    assert tuple(full.columns) == COLUMNS and full.notna().all().all()
    data = demo.data
    for col in COLUMNS:
        observed = data[col].notna()
        np.testing.assert_array_equal(full.loc[observed, col].to_numpy(),
                                      data.loc[observed, col].to_numpy(), err_msg=col)
    # The hidden values obey the generator: lactate at or above the floor; in
    # the structural sites they exist although the registry has none.
    structural = data["site"].isin(demo.truth["missingness_model"]["structural_sites"])
    assert (full.loc[structural, "lactate"] >= LACTATE_MODEL["floor"]).all()
    assert data.loc[structural, "lactate"].isna().all()
    assert full["sbp"].between(50, 230).all()


def test_demo_010_design_holds_over_seeds():
    """DEMO-010: the demo shows its point whatever the seed (20 seeds + the default).

    (a) complete cases lose at least one whole site; (b) complete-case
    mortality differs from overall mortality by >= 1.5 points, always lower;
    (c) overall mortality within 8-12 %; (d) a site with < 15 patients;
    (e2) the site levels implied by flat imputations of lactate (hmlib's
    engine, m = 2) are further from the true site offsets than those of
    multilevel imputations. Sites with an extreme lactate offset miss more
    lactate (pooled over seeds). The lactate-coefficient contrast (e) is too
    noisy for 20 seeds (see the bench).
    """
    bench = load_bench("demo_design")
    seeds = [DEFAULT_SEED, *range(1, 21)]
    rows, sites = [], []
    for seed in seeds:
        registry = simulate_registry(seed=seed)
        row = bench.site_conditions(registry.data)
        completed = {name: bench.completed_lactate(
                         bench.impute_demo(registry.data, seed + 1, method=name, m=2, iterations=3))
                     for name in ("flat", "multilevel")}
        row["flat_error"] = bench.site_offset_error(registry.data, completed["flat"], registry.truth)
        row["ml_error"] = bench.site_offset_error(registry.data, completed["multilevel"],
                                                  registry.truth)
        rows.append(row)
        per_site = pd.DataFrame(registry.truth["per_site"])
        per_site = per_site[~per_site["structural_missing"]]
        own_part = per_site["lactate_site_offset"] - LACTATE_MODEL["trauma_unit"] * (
            per_site["site_type"] == "trauma unit")
        sites.append(pd.DataFrame({"extreme": own_part.abs() > 1.0,
                                   "missing_rate": per_site["missing_rate"]}))
    table = pd.DataFrame(rows)
    sites = pd.concat(sites)
    by_extremeness = sites.groupby("extreme")["missing_rate"].mean()
    assert by_extremeness[True] > by_extremeness[False] + 0.1, by_extremeness
    assert table["a"].all(), table.loc[~table["a"], "sites_lost_cc"]
    assert table["b"].all() and (table["cc_gap"] < 0).all(), table["cc_gap"].describe()
    assert table["c"].all(), table["mortality"].describe()
    assert table["d"].all(), table["smallest_site"].describe()
    assert (table["flat_error"] > table["ml_error"]).all()
    assert table["ml_error"].mean() < 0.6 * table["flat_error"].mean()


def test_demo_012_complete_data_terms_are_the_analysis_model_on_complete_data(demo):
    """DEMO-012: truth["complete_data_terms"] is the analysis model fitted before deletion.

    Same keys as ``terms``; the values equal a fresh
    :func:`hmlib.stats.design.fit_analysis_model` fit to
    :func:`simulate_complete_data` (to the 6 decimals stored) and lie within
    sampling error of the generating values (lactate within 3 SE).
    """
    from hmlib.stats.design import fit_analysis_model

    truth = demo.truth
    assert list(truth["complete_data_terms"]) == TERMS
    assert "before" in truth["complete_data_note"]
    params = yaml.safe_load(DEMO_PARAMS_YAML)
    assert list(ANALYSIS_PREDICTORS) == params["predictors"]
    fit = fit_analysis_model(simulate_complete_data(), outcome=params["outcome"],
                             predictors=params["predictors"], cluster=params["cluster"],
                             family=params["outcome_family"], levels={"sex": ["female", "male"]})
    assert fit.converged
    expected = {**dict(zip(fit.term_names, fit.coef)), "sd(site)": fit.cluster_sd}
    for term in TERMS:
        assert truth["complete_data_terms"][term] == pytest.approx(expected[term], abs=2e-6), term
    k = list(fit.term_names).index("lactate")
    assert abs(fit.coef[k] - truth["terms"]["lactate"]) < 3 * fit.std_error[k]
    # A different registry gives a different complete-data fit.
    other = simulate_registry(seed=DEFAULT_SEED + 1).truth["complete_data_terms"]
    assert other["lactate"] != truth["complete_data_terms"]["lactate"]


def test_demo_013_missingness_model_recorded_in_truth(demo):
    """DEMO-013: the truth records the extremeness term of the missingness model."""
    recorded = demo.truth["missingness_model"]
    assert recorded["offset_extremeness"] == MISSINGNESS_MODEL["offset_extremeness"] > 0
    assert recorded["lactate_missing_rate"] == pytest.approx(demo.data["lactate"].isna().mean(),
                                                             abs=1e-6)
