"""Step 1's partition of missingness by level (params ``higher_levels``).

Reference: ``tests/results/missingness_levels.R`` fits each missingness
indicator's nested intercept-only model, and the models without each level,
with lme4 (``glmer``, Laplace) on ``nested_trial.csv`` (see
``tests/test_nested_analysis.py``), on ``level_missingness.csv``
(``python tests/test_missingness_levels.py --write-data`` writes it) and on
the real ``cdystonia.csv`` (missed visits in patients in sites).

Test IDs
--------
MISS-LEVEL-000  level_missingness.csv is what the simulator gives (the R reference fits that file)
MISS-LEVEL-001  each level's SD equals glmer's to 1% (to 1e-3 where lme4's is 0), the likelihood-ratio statistic
                per level to 1e-3, the two-level model's SD to 1%: boundary fits, a fit with both levels non-zero,
                and a real dataset
MISS-LEVEL-002  the table adds up: variance shares sum to the latent ICC, p = 0.5 P(chi2_1 > statistic), a level
                at SD 0 has statistic 0 and p 1, no interval
MISS-LEVEL-003  truth: over 40 simulated registries the mean SD of each level is within 10% of the truth, the
                two-level model's SD near sqrt(sd_c^2 + sd_h^2), the Wald intervals cover in 85-100%
MISS-LEVEL-004  bad input is refused: no higher level, a missing column, a variable recorded for everyone
MISS-LEVEL-005  three levels (hospital in region in country), given in either order: one row per level, outermost
                first
MISS-LEVEL-006  step 1 with higher_levels: a partition per modelled variable in the result, the artifact (round
                trip) and the narrative, which names the misattribution of the two-level model; the methods name it
MISS-LEVEL-007  step 1 without higher_levels is unchanged: no partition, no sentence, no methods sentence
MISS-LEVEL-008  a country that never records a variable is a structural gap at the country level, named with its
                number of hospitals; no patient count of it is published
MISS-LEVEL-009  on the real cdystonia data (6 visits per patient, 23 missed) the Laplace fits of the partition
                overstate the patient SD against step 1's adaptive quadrature (4.69 vs 2.08): the narrative says so;
                where they agree (30 patients per hospital, 20% missing) it says nothing
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hmlib.exceptions import FitError, ParamsError
from hmlib.simulate.missingness import level_missingness_registry, level_missingness_registry_truth
from hmlib.stats.missingness.levels import missingness_level_variation

RESULTS = Path(__file__).resolve().parent / "results"
REAL = Path(__file__).resolve().parents[1] / "data" / "real"
DATA = RESULTS / "level_missingness.csv"


def level_data() -> pd.DataFrame:
    """The reference data with both levels non-zero: 3,600 patients in 120 hospitals in 20 countries."""
    return level_missingness_registry(2, n_countries=20, hospitals_per_country=6, per_hospital=30)


def _trial(sporadic: bool = False) -> pd.DataFrame:
    trial = pd.read_csv(RESULTS / "nested_trial.csv")
    trial["either"] = np.where(trial["dead_or_dependent"].isna() | trial["atrial_fib"].isna(), np.nan, 1.0)
    if sporadic:  # without the hospitals that (almost) never record atrial fibrillation
        share = trial["atrial_fib"].isna().groupby(trial["hospital"]).transform("mean")
        trial = trial.loc[share <= 0.9]
    return trial


def _case_data(name: str) -> tuple:
    """(frame, variable, cluster, higher) of each reference case."""
    if name == "simulated_both_levels":
        return pd.read_csv(DATA), "v", "hospital", ["country"]
    if name == "cdystonia_twstrs":
        return pd.read_csv(REAL / "cdystonia.csv"), "twstrs", "patient_id", ["site"]
    variable = {"trial_outcome": "dead_or_dependent", "trial_atrial_fib": "atrial_fib"}.get(name, "either")
    return _trial(sporadic=name == "trial_either_sporadic"), variable, "hospital", ["country"]


REFERENCE = {c["name"]: c for c in json.loads((RESULTS / "missingness_levels.json").read_text())}


def test_miss_level_000_reference_data_is_the_simulators():
    """MISS-LEVEL-000: the CSV the R script fits is the generator's draw."""
    data, again = pd.read_csv(DATA), level_data()
    assert data["country"].tolist() == again["country"].tolist()
    assert data["hospital"].tolist() == again["hospital"].tolist()
    np.testing.assert_array_equal(data["v"].isna().to_numpy(), again["v"].isna().to_numpy())


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_miss_level_001_equals_glmer(case):
    """MISS-LEVEL-001: SDs, likelihood-ratio statistics and the two-level SD equal lme4's."""
    ref = REFERENCE[case]
    if case == "cdystonia_twstrs" and not (REAL / "cdystonia.csv").exists():
        pytest.skip("the real data are not beside the project")
    frame, variable, cluster, higher = _case_data(case)
    res = missingness_level_variation(frame, variable, cluster, higher)
    assert res.n_used == ref["n_used"]
    assert list(res.levels) == ref["levels"]
    assert res.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    for name in res.levels:
        row = res.row(name)
        expected = ref["sd"][name]
        if expected < 1e-4:
            assert row["sd"] < 1e-3, name
        else:
            assert row["sd"] == pytest.approx(expected, rel=1e-2), name
        assert row["lrt_statistic"] == pytest.approx(max(ref["lrt"][name], 0.0), abs=1e-3), name
    assert res.two_level_sd == pytest.approx(ref["two_level_sd"], rel=1e-2)


def test_miss_level_002_table_adds_up():
    """MISS-LEVEL-002: shares sum to the latent ICC; boundary-corrected p; a zero SD has no interval."""
    res = missingness_level_variation(*_case_data("simulated_both_levels"))
    table = res.table
    sds = table["sd"].to_numpy()
    assert np.allclose(table["variance_share"], sds ** 2 / (np.sum(sds ** 2) + np.pi ** 2 / 3))
    assert res.latent_icc == pytest.approx(table["variance_share"].sum())
    assert np.allclose(table["p_value"], 0.5 * stats.chi2.sf(table["lrt_statistic"], 1))
    assert (table["sd_ci_lower"] < table["sd"]).all() and (table["sd"] < table["sd_ci_upper"]).all()
    assert table["n_units"].tolist() == [20, 120]
    boundary = missingness_level_variation(*_case_data("trial_outcome"))
    hospital = boundary.row("hospital")
    assert hospital["sd"] == 0.0 and hospital["lrt_statistic"] == 0.0 and hospital["p_value"] == 1.0
    assert np.isnan(hospital["sd_ci_lower"]) and np.isnan(hospital["sd_ci_upper"])
    assert boundary.dominant_level == "country"


def test_miss_level_003_truth_by_simulation():
    """MISS-LEVEL-003: mean SDs within 10% of the truth over 40 registries; interval coverage 85-100%; the
    two-level model puts both levels' variance on the hospitals."""
    truth = level_missingness_registry_truth()["missingness"]
    sds, two_level, covered = [], [], []
    for seed in range(40):
        res = missingness_level_variation(level_missingness_registry(100 + seed), "v", "hospital", ["country"])
        t = res.table.set_index("level")
        sds.append([t.loc["country", "sd"], t.loc["hospital", "sd"]])
        two_level.append(res.two_level_sd)
        covered.append([t.loc[lv, "sd_ci_lower"] <= truth[f"sd({lv})"] <= t.loc[lv, "sd_ci_upper"]
                        for lv in ("country", "hospital")])
    mean = np.mean(sds, axis=0)
    assert mean[0] == pytest.approx(truth["sd(country)"], rel=0.10)
    assert mean[1] == pytest.approx(truth["sd(hospital)"], rel=0.10)
    assert np.mean(two_level) == pytest.approx(truth["two_level_sd(hospital)"], rel=0.10)
    assert np.mean(two_level) > mean[1] + 0.2
    assert (0.85 <= np.mean(covered, axis=0)).all()


def test_miss_level_004_bad_input_is_refused():
    """MISS-LEVEL-004: clear errors before fitting."""
    frame = level_data()
    with pytest.raises(ParamsError, match="at least one level above"):
        missingness_level_variation(frame, "v", "hospital", [])
    with pytest.raises(Exception, match="region"):
        missingness_level_variation(frame, "v", "hospital", ["region"])
    complete = frame.assign(v=1.0)
    with pytest.raises(FitError, match="recorded for every patient"):
        missingness_level_variation(complete, "v", "hospital", ["country"])
    assert frame["v"].isna().sum() == level_data()["v"].isna().sum()  # not modified


def test_miss_level_005_three_levels():
    """MISS-LEVEL-005: hospital in region in country gives a row per level, outermost first."""
    frame = level_data()
    frame["region"] = frame["country"] + "-" + (frame["hospital"].str[1:].astype(int) % 2).astype(str)
    res = missingness_level_variation(frame, "v", "hospital", ["country", "region"])
    assert res.table["level"].tolist() == ["country", "region", "hospital"]
    swapped = missingness_level_variation(frame, "v", "hospital", ["region", "country"])
    pd.testing.assert_frame_equal(swapped.table, res.table)
    assert res.table["n_units"].tolist() == [20, 40, 120]
    assert res.converged
    two = missingness_level_variation(frame, "v", "hospital", ["country"])
    # the regions are arbitrary halves of a country: they take little from the other levels
    assert res.row("country")["sd"] == pytest.approx(two.row("country")["sd"], abs=0.15)
    assert res.two_level_sd == pytest.approx(two.two_level_sd, rel=1e-6)


PREDICTORS = ["age", "sex", "sbp", "conscious", "stroke_type", "aspirin", "atrial_fib"]


def _diagnose(frame, higher_levels=("country",)):
    from hmlib.steps.diagnose import diagnose

    return diagnose(frame, cluster="hospital", outcome="dead_or_dependent", outcome_family="binomial",
                    predictors=PREDICTORS, higher_levels=higher_levels)


@pytest.fixture(scope="module")
def trial_diagnosis():
    return _diagnose(_trial().drop(columns=["either"]))


def test_miss_level_006_step1_reports_the_partition(trial_diagnosis):
    """MISS-LEVEL-006: the result, its artifact and its sentences carry the partition by level."""
    from hmlib.steps.diagnose import DiagnoseArtifact, methods_text

    res = trial_diagnosis
    assert res.higher_levels == ("country",)
    assert set(res.level_variation) == {"dead_or_dependent", "atrial_fib"}
    table = res.level_table()
    outcome = table[table["variable"] == "dead_or_dependent"].set_index("level")
    ref = REFERENCE["trial_outcome"]
    assert outcome.loc["country", "sd"] == pytest.approx(ref["sd"]["country"], rel=1e-2)
    assert outcome.loc["hospital", "sd"] < 1e-3
    record = res.to_artifact()
    again = DiagnoseArtifact.from_json(record.to_json())
    assert again == record
    assert [r.level for r in record.level_variation["dead_or_dependent"].table] == ["country", "hospital"]
    assert record.settings.higher_levels == ("country",)
    text = " ".join(res.narrative())
    assert "By level, missingness of dead_or_dependent varies with SD 1.08 at the country level" in text
    assert "most of that lies at the country level" in text
    # the atrial fibrillation gaps are by hospital, not by country: no misattribution claimed for it
    af = next(line for line in res.narrative() if line.startswith("By level, missingness of atrial_fib"))
    assert "most of that" not in af
    ev = type("Ev", (), {"noun": "cluster"})()
    assert "partitioned by level" in methods_text(record, ev)[0]


def test_miss_level_007_without_higher_levels_nothing_changes():
    """MISS-LEVEL-007: no higher levels, no partition and no new sentence."""
    from hmlib.steps.diagnose import methods_text

    res = _diagnose(_trial().drop(columns=["either"]), higher_levels=())
    assert res.level_variation == {} and res.higher_gaps.empty and res.level_table().empty
    assert not any(line.startswith("By level") for line in res.narrative())
    record = res.to_artifact()
    assert record.level_variation == {} and record.higher_gaps == () and record.settings.higher_levels == ()
    ev = type("Ev", (), {"noun": "cluster"})()
    assert "partitioned by level" not in methods_text(record, ev)[0]


def test_miss_level_008_structural_gap_at_the_country_level():
    """MISS-LEVEL-008: a country that never records atrial fibrillation is named, with its hospitals counted."""
    frame = _trial().drop(columns=["either"])
    frame.loc[frame["country"] == "C03", "atrial_fib"] = np.nan
    n_hospitals = frame.loc[frame["country"] == "C03", "hospital"].nunique()
    res = _diagnose(frame)
    gaps = res.higher_gaps.set_index("variable")
    assert gaps.loc["atrial_fib", "structural_units"] == ("C03",)
    assert gaps.loc["atrial_fib", "n_clusters_in_structural"] == n_hospitals
    assert gaps.loc["dead_or_dependent", "n_units_structural"] == 0
    assert any(line.startswith(f"atrial_fib is structurally missing in 1 of 10 country units (C03; {n_hospitals} ")
               for line in res.narrative())
    row = next(r for r in res.to_artifact().higher_gaps if r.variable == "atrial_fib")
    assert set(row.to_json()) == {"level", "variable", "n_units", "n_units_structural", "structural_units",
                                  "n_clusters_in_structural"}


def test_miss_level_009_laplace_caveat_on_small_clusters():
    """MISS-LEVEL-009: where Laplace and adaptive quadrature disagree by more than a fifth, the narrative says so."""
    from hmlib.steps.diagnose import diagnose

    path = REAL / "cdystonia.csv"
    if not path.exists():
        pytest.skip("the real data are not beside the project")
    res = diagnose(pd.read_csv(path), cluster="patient_id", outcome="twstrs", outcome_family="gaussian",
                   predictors=["treat", "week", "age", "sex"], higher_levels=["site"])
    assert res.variation["twstrs"].nagq == 10
    assert res.level_variation["twstrs"].two_level_sd == pytest.approx(REFERENCE["cdystonia_twstrs"]["two_level_sd"],
                                                                       rel=1e-2)
    line = next(x for x in res.narrative() if x.startswith("By level, missingness of twstrs"))
    assert "Laplace gives the clusters SD 4.69 where adaptive quadrature gives 2.08" in line
    # 30 patients per hospital and 20% missing: Laplace and quadrature agree, no caveat
    frame = pd.read_csv(DATA).assign(y=np.random.default_rng(4).normal(size=3600))
    plain = diagnose(frame, cluster="hospital", outcome="y", outcome_family="gaussian", predictors=["v"],
                     higher_levels=["country"])
    assert plain.level_variation["v"].two_level_sd == pytest.approx(plain.variation["v"].cluster_sd, rel=0.05)
    assert not any("Laplace" in x for x in plain.narrative())


def write_reference_data() -> None:
    """Write level_missingness.csv for the R reference script."""
    level_data().to_csv(DATA, index=False)


if __name__ == "__main__" and "--write-data" in sys.argv:
    write_reference_data()
    print("wrote", DATA)
