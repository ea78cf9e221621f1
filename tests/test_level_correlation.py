"""Step 1's correlation of missingness with the outcome at each level (params ``higher_levels``).

Reference: ``tests/results/level_correlation.R`` fits the focus variable's
missingness model and the outcome model with nested random intercepts
(lme4: ``glmer`` Laplace, ``lmer`` ML) and correlates their conditional
modes at each level, on ``level_correlation.csv`` (``python
tests/test_level_correlation.py --write-data`` writes it) and on
``nested_trial.csv`` (see ``tests/test_nested_analysis.py``).

Test IDs
--------
LEVEL-COR-000  level_correlation.csv is what the simulator gives (the R reference fits that file)
LEVEL-COR-001  per level, the numbers of units and the Pearson and Spearman correlations of the modes equal lme4's
               (to 2e-3), the SDs of both models to 1%; a level whose SD is on its boundary has no correlation in
               either
LEVEL-COR-002  truth: where the outcome's country effects share the missingness's (correlation 0.8) and the
               hospitals' do not, the country correlation is clearly positive and the hospitals' (within their
               country) near 0; the other way round, the other way round
LEVEL-COR-003  bad input is refused: no higher level, an unknown family, a variable recorded for everyone
LEVEL-COR-004  step 1 with higher_levels: the table in the result and the artifact (round trip), the narrative
               names the link at the country level; without higher levels there is none
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmlib.exceptions import FitError, ParamsError
from hmlib.simulate.missingness import level_outcome_missingness_registry
from hmlib.stats.missingness import missingness_outcome_correlation_by_level

RESULTS = Path(__file__).resolve().parent / "results"
DATA = RESULTS / "level_correlation.csv"
REFERENCE = {c["name"]: c for c in json.loads((RESULTS / "level_correlation.json").read_text())} \
    if (RESULTS / "level_correlation.json").is_file() else {}


def level_data() -> pd.DataFrame:
    """The reference data: 2,400 patients in 80 hospitals in 16 countries."""
    return level_outcome_missingness_registry(4, n_countries=16, hospitals_per_country=5, per_hospital=30)


def _case(name: str) -> tuple:
    """(frame, variable, outcome, family, predictors) of each reference case."""
    if name == "trial_atrial_fib":
        frame = pd.read_csv(RESULTS / "nested_trial.csv")
        return frame, "atrial_fib", "dead_or_dependent", "binomial", ["age_c", "sbp_c", "sex"]
    outcome, family = ("y", "gaussian") if name == "simulated_gaussian" else ("yb", "binomial")
    return pd.read_csv(DATA), "v", outcome, family, ["x", "v"]


def test_level_cor_000_reference_data_is_the_simulators():
    """LEVEL-COR-000: the CSV the R script fits is the generator's draw."""
    data, again = pd.read_csv(DATA), level_data()
    pd.testing.assert_frame_equal(data, again, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("case", ["simulated_gaussian", "simulated_binomial", "trial_atrial_fib"])
def test_level_cor_001_equals_lme4(case):
    """LEVEL-COR-001: units, correlations and SDs per level equal lme4's (ranef, VarCorr)."""
    ref = REFERENCE[case]
    frame, variable, outcome, family, predictors = _case(case)
    res = missingness_outcome_correlation_by_level(frame, variable, "hospital", ["country"], outcome, family,
                                                   predictors)
    assert list(res.levels) == ["country", "hospital"]
    covariates = ref["covariates"]  # jsonlite writes a vector of one as a string
    assert list(res.predictors_used) == (covariates if isinstance(covariates, list) else [covariates])
    table = res.table.set_index("level")
    groups = {"country": "country", "hospital": "country:hospital"}
    for level, group in groups.items():
        row, expected = table.loc[level], ref[level]
        assert row["n_units"] == expected["n_units"], level
        for model, column in (("missingness_sd", "missingness_sd"), ("outcome_sd", "outcome_sd")):
            sd = ref[model][group]
            if sd < 1e-4:
                assert row[column] < 1e-3, (level, model)
            else:
                assert row[column] == pytest.approx(sd, rel=1e-2), (level, model)
        if expected["pearson"] is None:
            assert np.isnan(row["pearson"]) and np.isnan(row["spearman"]), level
        else:
            assert row["pearson"] == pytest.approx(expected["pearson"], abs=2e-3), level
            assert row["spearman"] == pytest.approx(expected["spearman"], abs=2e-3), level


@pytest.mark.parametrize("country, hospital", [(0.8, 0.0), (0.0, 0.8)])
def test_level_cor_002_finds_the_level_of_the_link(country, hospital):
    """LEVEL-COR-002: the link is found at the level where it was simulated, and not at the other."""
    frame = level_outcome_missingness_registry(11, n_countries=40, hospitals_per_country=8, per_hospital=40,
                                               country_sd=0.7, hospital_sd=0.5, country_correlation=country,
                                               hospital_correlation=hospital)
    res = missingness_outcome_correlation_by_level(frame, "v", "hospital", ["country"], "y", "gaussian", ["x"])
    table = res.table.set_index("level")
    linked, other = ("country", "hospital") if country else ("hospital", "country")
    assert table.loc[linked, "pearson_ci_lower"] > 0.2
    assert table.loc[other, "pearson_ci_lower"] < 0 < table.loc[other, "pearson_ci_upper"]
    assert table.loc[other, "spearman_ci_lower"] < 0 < table.loc[other, "spearman_ci_upper"]
    assert table["n_units"].tolist() == [40, 320]


def test_level_cor_003_refuses_bad_input():
    """LEVEL-COR-003: no higher level, an unknown family, a complete variable."""
    frame = level_data()
    with pytest.raises(ParamsError, match="at least one level above"):
        missingness_outcome_correlation_by_level(frame, "v", "hospital", [], "y", "gaussian", ["x"])
    with pytest.raises(ParamsError, match="outcome_family"):
        missingness_outcome_correlation_by_level(frame, "v", "hospital", ["country"], "y", "poisson", ["x"])
    with pytest.raises(FitError, match="recorded for every patient"):
        missingness_outcome_correlation_by_level(frame, "x", "hospital", ["country"], "y", "gaussian", ["v"])


def test_level_cor_004_in_step_one():
    """LEVEL-COR-004: step 1 carries the table into its result, artifact and narrative; not without levels."""
    from hmlib.steps.diagnose import DiagnoseArtifact, diagnose

    frame = level_outcome_missingness_registry(11, n_countries=40, hospitals_per_country=8, per_hospital=40,
                                               country_sd=0.7, hospital_sd=0.5)
    before = frame.copy()
    kwargs = dict(cluster="hospital", outcome="y", outcome_family="gaussian", predictors=["x", "v"],
                  cluster_noun="hospital")
    result = diagnose(frame, **kwargs, higher_levels=["country"])
    pd.testing.assert_frame_equal(frame, before)
    table = result.level_correlation_table()
    assert table["level"].tolist() == ["country", "hospital"]
    artifact = result.to_artifact()
    again = DiagnoseArtifact.from_json(json.loads(json.dumps(artifact.to_json())))
    assert again.level_correlation.table[0].pearson == pytest.approx(table["pearson"].iloc[0])
    assert "missingness_effect" not in json.dumps(artifact.to_json())
    text = " ".join(result.narrative())
    assert "Across 40 country units, a clear link between v missingness and the y effects" in text
    assert "hospitals within their country" in text
    assert "Across 40 country units" in result.correlation_text()
    plain = diagnose(frame, **kwargs)
    assert plain.level_correlation is None and plain.level_correlation_table().empty
    assert plain.to_artifact().level_correlation is None
    assert "Across" not in " ".join(plain.narrative())


def write_reference_data() -> None:
    """Write level_correlation.csv (the R script reads it)."""
    level_data().to_csv(DATA, index=False)


if __name__ == "__main__" and "--write-data" in sys.argv:
    write_reference_data()
    print("wrote", DATA)
