"""The analysis model with levels above the cluster (params ``higher_levels``): nested random intercepts.

Reference: ``tests/results/nested_analysis.R`` fits the report's analysis
model with lme4 on ``nested_trial.csv`` (a trial-shaped registry simulated by
hmlib; ``python tests/test_nested_analysis.py --write-data`` writes it).

Test IDs
--------
NEST-AN-000  nested_trial.csv is what the simulator gives (the R reference fits that file)
NEST-AN-001  fit_analysis_model with higher_levels equals lme4's glmer/lmer with (1 | country) +
             (1 | country:hospital): coefficients to 1e-3, SEs and each level's SD to 1%
NEST-AN-002  the two-level model of the same data equals lme4 too, and attributes the country variation to the
             hospitals (its hospital SD exceeds the nested model's)
NEST-AN-003  the adapter changes no number of fit_mixed: rows sd(<level>) outermost first, the cluster's effect
             is its country's mode plus its own, the ICC counts every level
NEST-AN-004  Rubin's rules on nested fits: one sd row per level; m copies of one data set pool to the single fit
NEST-AN-005  adaptive quadrature is refused for nested effects, with the reason
NEST-AN-006  step 2 on a registry with higher_levels writes sd(country) and sd(hospital) for the complete-case
             and missing-indicator models
NEST-AN-007  two higher levels (hospital in region in country) in either order: the same fit, nested outermost first
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmlib.exceptions import FitError
from hmlib.stats.design import fit_analysis_model

RESULTS = Path(__file__).resolve().parent / "results"
DATA = RESULTS / "nested_trial.csv"
PREDICTORS = ["age_c", "sex", "sbp_c", "conscious", "stroke_type", "aspirin", "atrial_fib"]
CATEGORICAL = ["sex", "conscious", "stroke_type", "aspirin"]


def nested_trial() -> pd.DataFrame:
    """The reference data: a trial-shaped registry, 6,000 patients in 100 hospitals in 10 countries, with scaled
    age and systolic pressure and a gaussian score (:func:`hmlib.simulate.scale.with_reference_columns`)."""
    from hmlib.simulate.scale import trial_registry, with_reference_columns

    return with_reference_columns(trial_registry(5, n_patients=6000, n_hospitals=100, n_countries=10), 55,
                                  decimals=3)


def _reference(name: str) -> dict:
    cases = json.loads((RESULTS / "nested_analysis.json").read_text())
    return next(c for c in cases if c["name"] == name)


def _lme4_name(term: str) -> str:
    """hmlib's ``sex[M]`` is lme4's ``sexM``; ``Intercept`` is ``(Intercept)``."""
    return "(Intercept)" if term == "Intercept" else term.replace("[", "").replace("]", "")


def _levels(frame):
    return {c: sorted(frame[c].dropna().astype(str).unique()) for c in CATEGORICAL}


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(DATA)


def _check_fixed(fit, ref):
    table = fit.to_frame().set_index("term")
    for term in fit.term_names:
        expected = ref["fixed"][_lme4_name(term)]
        assert table.loc[term, "estimate"] == pytest.approx(expected["estimate"], abs=1e-3), term
        assert table.loc[term, "std_error"] == pytest.approx(expected["std_error"], rel=1e-2), term
    assert fit.n_obs == ref["n_used"]


def test_nest_an_000_reference_data_is_the_simulators(data):
    """NEST-AN-000: nested_trial.csv equals nested_trial() (to 1e-12 for numbers), so the R reference fits the
    data the simulator gives (regenerate: python tests/test_nested_analysis.py --write-data)."""
    again = nested_trial()
    assert list(data.columns) == list(again.columns)
    for col in again.columns:
        if pd.api.types.is_numeric_dtype(again[col]):
            np.testing.assert_allclose(data[col].to_numpy(float), again[col].to_numpy(float), rtol=1e-12,
                                       equal_nan=True)
        else:
            assert data[col].astype(str).tolist() == again[col].astype(str).tolist(), col


@pytest.mark.parametrize("case", ["nested_binomial", "nested_gaussian"])
def test_nest_an_001_nested_analysis_model_equals_lme4(data, case):
    """NEST-AN-001: the analysis model with higher_levels=[country] equals glmer/lmer with (1 | country) +
    (1 | country:hospital) (nested_analysis.R): coefficients to 1e-3, SEs and each level's SD to 1%."""
    ref = _reference(case)
    if case == "nested_binomial":
        fit = fit_analysis_model(data, outcome="dead_or_dependent", predictors=PREDICTORS, cluster="hospital",
                                 family="binomial", levels=_levels(data), higher_levels=("country",))
    else:
        fit = fit_analysis_model(data, outcome="score", predictors=["age_c", "sex", "conscious"], cluster="hospital",
                                 family="gaussian", levels=_levels(data), higher_levels=("country",))
        assert fit.residual_sd == pytest.approx(ref["residual_sd"], rel=1e-3)
    _check_fixed(fit, ref)
    table = fit.to_frame().set_index("term")
    assert table.loc["sd(country)", "estimate"] == pytest.approx(ref["sd"]["country"], rel=1e-2)
    assert table.loc["sd(hospital)", "estimate"] == pytest.approx(ref["sd"]["country:hospital"], rel=1e-2)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.n_clusters == ref["n_groups"]["country:hospital"] and fit.higher[0].n_units == ref["n_groups"]["country"]


def test_nest_an_002_two_level_model_misattributes_country_variation(data):
    """NEST-AN-002: the two-level model (what hmlib fitted before higher levels were modelled) equals lme4's
    (1 | hospital) fit, and its hospital SD takes up the country variation: larger than the nested model's
    hospital SD (the misattribution the issue measured on the real trial: 0.66 against 0.29)."""
    ref = _reference("two_level_binomial")
    two = fit_analysis_model(data, outcome="dead_or_dependent", predictors=PREDICTORS, cluster="hospital",
                             family="binomial", levels=_levels(data))
    _check_fixed(two, ref)
    assert two.cluster_sd == pytest.approx(ref["sd"]["hospital"], rel=1e-2)
    nested = _reference("nested_binomial")
    assert ref["sd"]["hospital"] > nested["sd"]["country:hospital"]


def _simulated(seed=1, family="binomial"):
    rng = np.random.default_rng(seed)
    n_country, n_hospital, n = 10, 100, 5000
    country_of = np.repeat(np.arange(n_country), n_hospital // n_country)
    h = rng.integers(0, n_hospital, n)
    x = rng.normal(size=n)
    eta = -0.5 + 0.5 * x + rng.normal(0, 0.5, n_country)[country_of[h]] + rng.normal(0, 0.3, n_hospital)[h]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float) if family == "binomial" else eta + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "hospital": [f"H{i:03d}" for i in h],
                         "country": [f"C{i:02d}" for i in country_of[h]]})


def test_nest_an_003_adapter_keeps_fit_mixed_numbers():
    """NEST-AN-003: the nested analysis fit reports fit_mixed's numbers unchanged (rows sd(country) then
    sd(hospital)); each hospital's effect is its country's conditional mode plus its own; the ICC counts
    the variance of both levels."""
    from hmlib.stats.mixed import RandomEffects, fit_mixed

    frame = _simulated()
    fit = fit_analysis_model(frame, outcome="y", predictors=["x"], cluster="hospital", family="binomial",
                             higher_levels=("country",))
    X = np.column_stack([np.ones(len(frame)), frame["x"]])
    direct = fit_mixed(frame["y"].to_numpy(), X, RandomEffects.nested(("country", frame["country"].to_numpy()),
                                                                      ("hospital", frame["hospital"].to_numpy())),
                       family="binomial", term_names=["Intercept", "x"])
    ours = fit.to_frame()
    assert ours["term"].tolist() == ["Intercept", "x", "sd(country)", "sd(hospital)"]
    pd.testing.assert_frame_equal(ours, direct.to_frame().loc[:, list(ours.columns)], check_exact=False, rtol=1e-12)
    country = direct.levels[0].effects_frame(["country"]).set_index("country")["Intercept"]
    hospital = direct.levels[1].effects_frame(["country", "hospital"])
    expected = (hospital["Intercept"] + hospital["country"].map(country)).to_numpy()
    order = np.argsort(hospital["hospital"].to_numpy())
    np.testing.assert_array_equal(fit.cluster_labels, hospital["hospital"].to_numpy()[order])
    np.testing.assert_allclose(fit.cluster_effects, expected[order], rtol=1e-12)
    between = fit.cluster_sd ** 2 + fit.higher[0].sd ** 2
    assert fit.icc == pytest.approx(between / (between + np.pi ** 2 / 3))


def test_nest_an_004_rubin_pooling_has_one_sd_row_per_level():
    """NEST-AN-004: pooling nested fits gives sd(country) and sd(hospital) rows (log scale, as the one-level
    SD); m copies of one data set pool to the single fit with no between-imputation variance."""
    from hmlib.stats.pooling import pool_fits

    frame = _simulated(2, family="gaussian")
    fit = fit_analysis_model(frame, outcome="y", predictors=["x"], cluster="hospital", family="gaussian",
                             higher_levels=("country",))
    pooled = pool_fits([fit] * 3, method="multilevel_mi", n_patients=fit.n_obs, n_clusters=fit.n_clusters)
    assert pooled.terms == ("Intercept", "x", "sd(country)", "sd(hospital)")
    single = fit.to_frame().set_index("term")
    for term in pooled.terms:
        row = pooled.term(term)
        assert row["estimate"] == pytest.approx(single.loc[term, "estimate"], rel=1e-12)
    np.testing.assert_allclose(pooled.between, 0.0, atol=1e-20)
    assert set(pooled.per_imputation["term"]) >= {"sd(country)", "sd(hospital)", "sd(residual)"}
    assert pooled.icc == pytest.approx(fit.icc, rel=1e-9)


def test_nest_an_005_quadrature_refused_for_nested_effects():
    """NEST-AN-005: nagq > 1 with higher levels is an error that says why (adaptive quadrature does not extend
    to nested random effects)."""
    with pytest.raises(FitError, match="does not extend to nested random effects"):
        fit_analysis_model(_simulated(), outcome="y", predictors=["x"], cluster="hospital", family="binomial",
                           nagq=5, higher_levels=("country",))


def test_nest_an_006_complete_case_step_reports_each_level(tmp_path):
    """NEST-AN-006: step 2 on a registry with higher_levels writes sd(country) before sd(hospital) for the
    complete-case and the missing-indicator models, and no other sd row."""
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.simulate.scale import TRIAL_PARAMS
    from hmlib.steps.complete_case import complete_case_check

    nested_trial().to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "p.yaml").write_text(TRIAL_PARAMS.format(name="t", data="data.csv", truth="none")
                                     .replace("truth: none\n", ""))
    result = complete_case_check(load_registry(load_params(tmp_path / "p.yaml")))
    for method in ("complete_case", "missing_indicator"):
        rows = result.estimates.loc[result.estimates["method"] == method, "term"].tolist()
        assert [t for t in rows if t.startswith("sd(")] == ["sd(country)", "sd(hospital)"], method


def test_nest_an_007_two_higher_levels_in_either_order():
    """NEST-AN-007: with higher_levels [region, country] or [country, region] the model is the same, nested
    outermost first by the levels' numbers of units: rows sd(country), sd(region), sd(hospital)."""
    frame = _simulated(3, family="gaussian")
    number = frame["hospital"].str[1:].astype(int)
    frame["region"] = frame["country"] + np.where(number % 2 == 0, "-a", "-b")
    fits = [fit_analysis_model(frame, outcome="y", predictors=["x"], cluster="hospital", family="gaussian",
                               higher_levels=order) for order in (("region", "country"), ("country", "region"))]
    assert [t for t in fits[0].to_frame()["term"] if t.startswith("sd(")] == ["sd(country)", "sd(region)",
                                                                             "sd(hospital)"]
    pd.testing.assert_frame_equal(fits[0].to_frame(), fits[1].to_frame())


def write_reference_data() -> None:
    """Write nested_trial.csv (the data nested_analysis.R fits)."""
    nested_trial().to_csv(DATA, index=False)


if __name__ == "__main__" and "--write-data" in sys.argv:
    write_reference_data()
    print("wrote", DATA)
