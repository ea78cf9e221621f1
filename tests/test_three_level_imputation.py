"""Three-level multilevel imputation (params ``higher_levels``): random intercepts for the cluster and the level above.

Truth by simulation: ``bench/three_level_imputation_truth.py``. These tests check the kernels and the wiring.

Test IDs
--------
TL-IMP-001  the nested logistic draw's conditional modes of (country, hospital) effects equal fit_mixed's (lme4's
            ranef) at the fitted parameters, and its arrow-shaped curvature equals the dense Hessian's
TL-IMP-002  completed data keep the variance components of a three-level variable: the country and hospital SDs
            of the completed x are near the truth (0.7, 0.5) and the recorded values' SDs
TL-IMP-003  a country that never records x gets country effects drawn from their distribution (its imputed mean
            varies between imputations as much as the countries' effects do), not its neighbours' or 0
TL-IMP-004  the options: higher_effects="fixed" is the two-level model with indicators (no country random
            effect, described as before), "random" is described as three levels; unknown values refused
TL-IMP-005  a binary incomplete variable with a country level runs through the nested logistic draw; its completed
            values are 0/1 and missing cells only change
TL-IMP-006  R reference (tests/results/three_level_imputation.R, the same three-level model written out with lme4 in
            miceadds::ml.lmer's way, m = 100): the pooled coefficients of x and age agree within Monte Carlo error
            (0.02 and 0.01; about 3 combined Monte Carlo SEs), the pooled SEs within 10% (R's draws of the two
            levels' effects are independent, which inflates its between-imputation variance a little)
TL-IMP-007  three_level_registry.csv is what the simulator gives (the R reference imputes that file)
TL-IMP-008  three-level pmm imputes recorded values only and keeps both levels' SDs near the normal model's
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from hmlib.simulate.studies import three_level_registry
from hmlib.stats.imputation import impute
from hmlib.stats.imputation.three_level import nested_conditional_modes
from hmlib.stats.mixed import RandomEffects, fit_mixed

RESULTS = Path(__file__).resolve().parent / "results"
DATA = RESULTS / "three_level_registry.csv"
MODEL = dict(method="multilevel", cluster="hospital", outcome="y", outcome_family="binomial",
             predictors=["x", "age"], higher_levels=["country"])


def _sds(frame, column):
    fit = fit_mixed(frame[column].to_numpy(float), np.ones((len(frame), 1)),
                    RandomEffects.nested(("country", frame["country"].to_numpy()),
                                         ("hospital", frame["hospital"].to_numpy())), family="gaussian")
    return float(fit.levels[0].sd[0]), float(fit.levels[1].sd[0])


def test_tl_imp_001_conditional_modes_equal_fit_mixed():
    """TL-IMP-001: modes at the ML fit equal fit_mixed's conditional modes; the arrow curvature is the Hessian's."""
    frame = three_level_registry(3)
    country = pd.factorize(frame["country"], sort=True)[0]
    hospital = pd.factorize(frame["hospital"], sort=True)[0]
    hc = pd.Series(country).groupby(hospital).first().to_numpy()
    X = np.column_stack([np.ones(len(frame)), frame["age"]])
    y = frame["y"].to_numpy()
    fit = fit_mixed(y, X, RandomEffects.nested(("country", country), ("hospital", hospital)), family="binomial")
    v, u, schur, h_u, a = nested_conditional_modes(X @ fit.coef, y, hospital, hospital.max() + 1, hc,
                                                   country.max() + 1, fit.levels[1].sd[0], fit.levels[0].sd[0])
    np.testing.assert_allclose(v, fit.levels[0].modes[:, 0], atol=1e-4)
    np.testing.assert_allclose(u, fit.levels[1].modes[:, 0], atol=1e-4)
    # the dense precision of (v, u) and its marginal for v
    K, J = v.size, u.size
    prob = special.expit(X @ fit.coef + u[hospital] + v[hc[hospital]])
    Z = np.zeros((len(frame), K + J))
    Z[np.arange(len(frame)), hc[hospital]] = 1.0
    Z[np.arange(len(frame)), K + hospital] = 1.0
    H = Z.T @ (Z * (prob * (1 - prob))[:, None])
    H[np.arange(K), np.arange(K)] += 1 / fit.levels[0].sd[0] ** 2
    H[K + np.arange(J), K + np.arange(J)] += 1 / fit.levels[1].sd[0] ** 2
    marginal_v = np.linalg.inv(np.linalg.inv(H)[:K, :K])
    np.testing.assert_allclose(np.diag(marginal_v), schur, rtol=1e-6)
    np.testing.assert_allclose(np.diag(H)[K:], h_u, rtol=1e-10)
    np.testing.assert_allclose(H[hc, K + np.arange(J)], a, rtol=1e-10)


@pytest.fixture(scope="module")
def imputed():
    frame = three_level_registry(5)
    return frame, impute(frame, m=10, iterations=10, seed=2, **MODEL)


def test_tl_imp_002_variance_components_kept(imputed):
    """TL-IMP-002: the completed x has about the true SDs (country 0.7, hospital 0.5)."""
    frame, res = imputed
    sds = np.array([_sds(done, "x") for done in res.completed])
    country, hospital = sds.mean(axis=0)
    assert country == pytest.approx(0.7, abs=0.2)
    assert hospital == pytest.approx(0.5, abs=0.15)
    # this draw's recorded values: country SD 0.62, hospital SD 0.40
    observed = _sds(frame.dropna(subset=["x"]), "x")
    assert country == pytest.approx(observed[0], abs=0.1)
    assert hospital == pytest.approx(observed[1], abs=0.05)


def test_tl_imp_003_never_recording_country_gets_drawn_effects(imputed):
    """TL-IMP-003: the two countries that never record x: their imputed means vary between imputations about
    as much as country effects do (SD about 0.7), where fixed indicators give them no effect of their own."""
    frame, res = imputed
    never = sorted(frame["country"].unique())[-2:]
    assert frame.loc[frame["country"].isin(never), "x"].isna().all()
    means = np.array([[done.loc[done["country"] == c, "x"].mean() for c in never] for done in res.completed])
    spread = means.std(axis=0, ddof=1)
    assert (spread > 0.3).all() and (spread < 1.4).all()
    fixed = impute(frame, m=10, iterations=10, seed=2, higher_effects="fixed", **MODEL)
    fixed_means = np.array([[done.loc[done["country"] == c, "x"].mean() for c in never] for done in fixed.completed])
    assert (fixed_means.std(axis=0, ddof=1) < spread).all()


def test_tl_imp_004_options_and_descriptions(imputed):
    """TL-IMP-004: described as three levels; "fixed" is the two-level model; bad values refused."""
    frame, res = imputed
    assert "three levels" in res.models["x"] and "'country'" in res.models["x"]
    fixed = impute(frame, m=2, iterations=2, seed=2, higher_effects="fixed", **MODEL)
    assert "three levels" not in fixed.models["x"]
    with pytest.raises(ValueError, match="higher_effects"):
        impute(frame, m=2, iterations=2, seed=2, higher_effects="nested", **MODEL)


def test_tl_imp_005_binary_variable_three_levels():
    """TL-IMP-005: an incomplete binary variable with a country level: 0/1 draws in missing cells only."""
    frame = three_level_registry(6)
    frame["z"] = (frame["age"] + np.random.default_rng(1).normal(size=len(frame)) > 0).astype(float)
    frame.loc[np.random.default_rng(2).random(len(frame)) < 0.2, "z"] = np.nan
    res = impute(frame, m=3, iterations=3, seed=1, **{**MODEL, "predictors": ["x", "age", "z"]})
    for done in res.completed:
        assert set(np.unique(done["z"])) <= {0.0, 1.0}
        recorded = frame["z"].notna()
        assert (done.loc[recorded, "z"] == frame.loc[recorded, "z"]).all()
    assert "three levels" in res.models["z"]
    assert not any("could not be fitted" in n for n in res.notes)


def test_tl_imp_006_r_reference():
    """TL-IMP-006: pooled estimates equal the lme4 reference's within Monte Carlo error."""
    from hmlib.stats.pooling import analyse_imputations

    ref = json.loads((RESULTS / "three_level_imputation.json").read_text())["pooled"]
    data = pd.read_csv(DATA)
    res = impute(data, m=50, iterations=10, seed=1, **MODEL)
    pooled = analyse_imputations(res, outcome="y", predictors=["x", "age"], cluster="hospital", family="binomial",
                                 higher_levels=["country"]).to_frame().set_index("term")
    assert pooled.loc["x", "estimate"] == pytest.approx(ref["x"]["estimate"], abs=0.02)
    assert pooled.loc["age", "estimate"] == pytest.approx(ref["age"]["estimate"], abs=0.01)
    for term in ("x", "age"):
        assert pooled.loc[term, "std_error"] == pytest.approx(ref[term]["std_error"], rel=0.10), term


def test_tl_imp_007_reference_data_is_the_simulators():
    """TL-IMP-007: the CSV the R script imputes is the generator's draw (to 1e-9)."""
    data, again = pd.read_csv(DATA), three_level_registry(1)
    assert data["hospital"].tolist() == again["hospital"].tolist()
    np.testing.assert_allclose(data["x"].to_numpy(), again["x"].to_numpy(), rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(data["age"].to_numpy(), again["age"].to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(data["y"].to_numpy(), again["y"].to_numpy())


def write_reference_data() -> None:
    """Write three_level_registry.csv for the R reference script."""
    three_level_registry(1).to_csv(DATA, index=False, float_format="%.10g")


if __name__ == "__main__" and "--write-data" in sys.argv:
    write_reference_data()
    print("wrote", DATA)


def test_tl_imp_008_pmm_three_levels(imputed):
    """TL-IMP-008: three-level pmm imputes recorded values only and keeps both levels' variation about as well as
    the normal model (country and hospital SDs of the completed x within 0.15 of the normal model's)."""
    frame, normal = imputed
    res = impute(frame, m=10, iterations=10, seed=2, continuous="pmm", **MODEL)
    recorded = set(frame["x"].dropna().to_numpy())
    miss = frame["x"].isna().to_numpy()
    for done in res.completed:
        assert set(done.loc[miss, "x"].to_numpy()) <= recorded
    sds = np.array([_sds(done, "x") for done in res.completed]).mean(axis=0)
    ref = np.array([_sds(done, "x") for done in normal.completed]).mean(axis=0)
    assert np.abs(sds - ref).max() < 0.15, (sds, ref)
