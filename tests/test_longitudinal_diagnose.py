"""Missingness over time in visits within patients (hmlib.stats.longitudinal, issue #16).

LONG-DIAG-001  classify_sequences: each class exactly on constructed sequences
LONG-DIAG-002  missingness_patterns_over_time: counts, shares and dropout visits exact on a small frame
LONG-DIAG-003  row order does not matter and the input frame is never modified (every function)
LONG-DIAG-004  datetime time columns: calendar periods, visit order, time since first visit in days
LONG-DIAG-005  duplicate (patient, time) rows: a DataWarning, counted, collapsed as documented
LONG-DIAG-006  input errors: constant time, missing time/patient, moving site, text time, bad options
LONG-DIAG-007  missingness_by_visit: counts exact on a small frame; intervals are Wilson's
LONG-DIAG-008  calendar time: the change point found at the end of the simulated pilot phase, and
               without a pilot phase not more often than the nominal rate
LONG-DIAG-009  binomial_change_point: the split and statistic by hand; calibrated on independent counts
LONG-DIAG-010  time_to_dropout: Kaplan-Meier shares, risk sets and Greenwood limits by hand
LONG-DIAG-011  history screen: finds dropout on the last value when the generator has it, at about the
               nominal rate when it has not; the intermittent screen finds no history dependence
LONG-DIAG-012  privacy: tables of aggregates, small cells marked and blanked, hmlib.privacy accepts them
LONG-DIAG-020  cdystonia (real): 23 missed visits, their patterns, weeks and dropout by site
LONG-DIAG-021  pbcseq (real): chol never observed for 8 patients; by visit number; follow-up years
LONG-DIAG-030  the history screens against lme4's glmer on rows built independently in R
               (tests/results/longitudinal_history.R, .json)
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from hmlib.exceptions import DataError, DataWarning, ParamsError
from hmlib.privacy import suppress_counts
from hmlib.simulate.longitudinal import longitudinal_registry, longitudinal_registry_truth
from hmlib.stats.longitudinal import (PATTERNS, binomial_change_point, classify_sequences, missingness_by_visit,
                                      missingness_history_screen, missingness_over_calendar_time,
                                      missingness_patterns_over_time, time_to_dropout)
from hmlib.stats.missingness import wilson_interval

REAL = REPO / "data" / "real"
RESULTS = REPO / "tests" / "results"


@pytest.fixture(scope="module")
def registry() -> pd.DataFrame:
    return longitudinal_registry(1)


def _small_frame() -> pd.DataFrame:
    """Six patients x four weeks (0, 2, 4, 6), rows shuffled; y observed (o) or missing (m): p1 oooo
    complete, p2 oomm and p6 ooom monotone, p3 omoo intermittent, p4 omom both, p5 mmmm never observed."""
    seqs = {"p1": "oooo", "p2": "oomm", "p3": "omoo", "p4": "omom", "p5": "mmmm", "p6": "ooom"}
    rows = []
    for pid, seq in seqs.items():
        for visit, state in enumerate(seq):
            rows.append({"site": "A" if pid in ("p1", "p2", "p3") else "B", "pid": pid, "week": 2 * visit,
                         "y": np.nan if state == "m" else 10.0 + visit})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_long_diag_001_classify_sequences_exact():
    """LONG-DIAG-001: complete, intermittent (gap then observed, incl. a missing first visit), monotone
    (incl. only the last visit missing), intermittent and monotone, never observed; one-visit patients."""
    seqs = ["oooo", "omoo", "mooo", "ooomm", "ooom", "omom", "mmm", "o", "m", "mo"]
    expected = ["complete", "intermittent", "intermittent", "monotone", "monotone", "intermittent and monotone",
                "never observed", "complete", "never observed", "intermittent"]
    missing = np.array([c == "m" for s in seqs for c in s])
    starts = np.r_[0, np.cumsum([len(s) for s in seqs])]
    assert [PATTERNS[c] for c in classify_sequences(missing, starts)] == expected


def test_long_diag_002_patterns_on_small_frame():
    """LONG-DIAG-002: counts per class (one patient each; p5 never observed), shares of 6 patients, and the
    visit numbers at which dropouts start (p2 at 2, p4 and p6 at 3)."""
    result = missingness_patterns_over_time(_small_frame(), ["y"], "pid", "week", min_cell=1)
    counts = result.table.set_index("pattern")["n_patients"]
    assert counts.to_dict() == {"complete": 1, "intermittent": 1, "monotone": 2, "intermittent and monotone": 1,
                                "never observed": 1}
    assert result.shares().loc["y", "monotone"] == pytest.approx(2 / 6)
    assert result.dropout_by_visit.set_index("dropout_visit_number")["n_patients"].to_dict() == {2: 1, 3: 2}


def _all_results(frame: pd.DataFrame) -> dict:
    return {
        "patterns": missingness_patterns_over_time(frame, ["x", "y"], "patient", "month").table,
        "by_visit": missingness_by_visit(frame, ["x", "y"], "patient", "month").table,
        "calendar": missingness_over_calendar_time(frame, "y", "patient", "month", calendar="date", seed=4).table,
        "dropout": time_to_dropout(frame, "y", "patient", "month", site="site").table,
        "history": missingness_history_screen(frame, "y", "patient", "month", site="site", outcome="y").table,
        "intermittent": missingness_history_screen(frame, "x", "patient", "month", outcome="y",
                                                   kind="intermittent").table,
    }


def test_long_diag_003_order_free_and_input_unchanged(registry):
    """LONG-DIAG-003: a shuffled frame (new index too) gives the same tables as the sorted one, and
    neither frame is modified by any of the functions."""
    shuffled = registry.sample(frac=1.0, random_state=11).reset_index(drop=True)
    before_sorted, before_shuffled = registry.copy(deep=True), shuffled.copy(deep=True)
    sorted_results, shuffled_results = _all_results(registry), _all_results(shuffled)
    for name in sorted_results:
        pd.testing.assert_frame_equal(sorted_results[name], shuffled_results[name], check_exact=False,
                                      rtol=1e-6, obj=name)
    pd.testing.assert_frame_equal(registry, before_sorted)
    pd.testing.assert_frame_equal(shuffled, before_shuffled)


def test_long_diag_004_datetime_time(registry):
    """LONG-DIAG-004: the visit date as time orders visits as the month does (by visit number the same
    table as by month on this full grid; patterns identical); by="time" with dates is refused; the
    history screen in days gives the last-value effect of the screen in months; quarters as periods."""
    by_month = missingness_by_visit(registry, ["y"], "patient", "month").table
    by_date = missingness_by_visit(registry, ["y"], "patient", "date", by="order").table
    assert (by_date["visit"].to_numpy() * 3 == by_month["visit"].to_numpy()).all()
    pd.testing.assert_frame_equal(by_date.drop(columns="visit"), by_month.drop(columns="visit"))
    pd.testing.assert_frame_equal(missingness_patterns_over_time(registry, ["y"], "patient", "date").table,
                                  missingness_patterns_over_time(registry, ["y"], "patient", "month").table)
    with pytest.raises(DataError, match="by='order'"):
        missingness_by_visit(registry, ["y"], "patient", "date")
    in_days = missingness_history_screen(registry, "y", "patient", "date", site="site").table.set_index("term")
    in_months = missingness_history_screen(registry, "y", "patient", "month", site="site").table.set_index("term")
    assert in_days.loc["last y", "log_odds_ratio"] == pytest.approx(in_months.loc["last y", "log_odds_ratio"],
                                                                    abs=0.01)
    quarters = missingness_over_calendar_time(registry, "y", "patient", "date", freq="Q", seed=1)
    assert str(quarters.table["period"].iloc[0]) == "2020Q1" and quarters.table["n_visits"].sum() > 0


def test_long_diag_005_duplicates_reported():
    """LONG-DIAG-005: two rows for one (patient, week) give a DataWarning, n_duplicate_rows = 2 (two extra
    rows, two patients), and a visit observed in either row counts as observed."""
    frame = _small_frame()
    extra = frame[(frame["pid"] == "p3") & (frame["week"] == 2)].assign(y=12.0)   # p3's gap filled
    extra2 = frame[(frame["pid"] == "p1") & (frame["week"] == 0)].assign(y=np.nan)  # p1 stays complete
    doubled = pd.concat([frame, extra, extra2], ignore_index=True)
    with pytest.warns(DataWarning, match="2 row"):
        result = missingness_patterns_over_time(doubled, ["y"], "pid", "week", min_cell=1)
    assert result.n_duplicate_rows == 2
    counts = result.table.set_index("pattern")["n_patients"]
    assert counts["complete"] == 2 and counts["intermittent"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert missingness_patterns_over_time(frame, ["y"], "pid", "week").n_duplicate_rows == 0


def test_long_diag_006_input_errors(registry):
    """LONG-DIAG-006: clear errors for a time constant within every patient, rows without time or patient,
    a site changing within a patient, a text time column, unknown columns and bad options."""
    frame = _small_frame()
    with pytest.raises(DataError, match="does not vary within any pid"), pytest.warns(DataWarning):
        missingness_by_visit(frame.assign(week=1.0), ["y"], "pid", "week")
    with pytest.raises(DataError, match="have no week"):
        missingness_by_visit(frame.assign(week=frame["week"].where(frame.index != 0)), ["y"], "pid", "week")
    with pytest.raises(DataError, match="have no pid"):
        missingness_by_visit(frame.assign(pid=frame["pid"].where(frame.index != 0)), ["y"], "pid", "week")
    with pytest.raises(DataError, match="site changes within a patient"):
        time_to_dropout(frame.assign(site=np.where(frame["week"] == 0, "A", "B")), "y", "pid", "week", site="site")
    with pytest.raises(DataError, match="to_datetime"):
        missingness_by_visit(frame.assign(week=frame["week"].astype(str)), ["y"], "pid", "week")
    with pytest.raises(DataError, match="not in the data"):
        missingness_by_visit(frame, ["nope"], "pid", "week")
    with pytest.raises(ParamsError):
        missingness_by_visit(frame, ["y"], "pid", "week", by="calendar")
    with pytest.raises(ParamsError):
        missingness_history_screen(registry, "y", "patient", "month", kind="both")
    with pytest.raises(ParamsError, match="width"):
        missingness_over_calendar_time(registry, "y", "patient", "month")
    with pytest.raises(ParamsError):
        missingness_patterns_over_time(frame, ["y"], "pid", "week", min_cell=0)


def test_long_diag_007_by_visit_counts_exact():
    """LONG-DIAG-007: per week of the small frame, missing counts split into intermittent and after
    dropout as the sequences say; the limits are wilson_interval's."""
    table = missingness_by_visit(_small_frame(), ["y"], "pid", "week", min_cell=1).table.set_index("visit")
    # week:   0  2  4  6   (p1 oooo, p2 oomm, p3 omoo, p4 omom, p5 mmmm, p6 ooom)
    assert table["n_missing"].tolist() == [1, 3, 2, 4]
    assert table["n_after_dropout"].tolist() == [1, 1, 2, 4]
    assert table["n_intermittent"].tolist() == [0, 2, 0, 0]
    lower, upper = wilson_interval(table["n_missing"].to_numpy(), table["n_patients"].to_numpy())
    np.testing.assert_allclose(table["ci_lower"], lower)
    np.testing.assert_allclose(table["ci_upper"], upper)


def test_long_diag_008_change_point_at_pilot_end():
    """LONG-DIAG-008: in three simulated registries the scan puts the change within one month of the
    true pilot end (2020-07-01) with p < 0.01; with no pilot phase (pilot_shift = 0) at most 2 of 10
    registries give p < 0.05 (nominal 0.5; P(>= 3 of 10) = 0.012). A row-level permutation failed this
    (8 of 10: missed visits cluster in sites, and late periods hold the last visits)."""
    pilot_end = pd.Period(longitudinal_registry_truth()["pilot_end"], freq="M")
    for seed in (1, 2, 3):
        frame = longitudinal_registry(seed)
        result = missingness_over_calendar_time(frame, "y", "patient", "month", calendar="date", seed=seed)
        assert abs((result.first_period_after_change - pilot_end).n) <= 1, seed
        assert result.change_point.p_value < 0.01
        assert result.change_point.rate_before > result.change_point.rate_after
        assert result.n_excluded_after_dropout > 0
    p_values = [missingness_over_calendar_time(longitudinal_registry(100 + s, pilot_shift=0.0), "y", "patient",
                                               "month", calendar="date", seed=s,
                                               n_permutations=199).change_point.p_value for s in range(10)]
    assert sum(p < 0.05 for p in p_values) <= 2, p_values


def test_long_diag_009_change_point_kernel():
    """LONG-DIAG-009: the split and LR of a hand example (8/20, 9/20, 7/20 then 2/20, 1/20, 2/20, 3/20:
    LR = 2 [l(24, 60) + l(8, 80) - l(32, 140)]); null calibration on independent binomials (200 series,
    rejection at 5% between 1.5% and 9.5%); bad counts refused."""
    k, n = [8, 9, 7, 2, 1, 2, 3], [20] * 7
    res = binomial_change_point(k, n, seed=1)

    def ll(a, b):
        return a * np.log(a / b) + (b - a) * np.log(1 - a / b)

    assert res.split == 2
    assert res.statistic == pytest.approx(2 * (ll(24, 60) + ll(8, 80) - ll(32, 140)))
    assert res.p_value < 0.01
    rng = np.random.default_rng(3)
    sizes = np.full(20, 50)
    p_values = [binomial_change_point(rng.binomial(sizes, 0.2), sizes, seed=i, n_permutations=199).p_value
                for i in range(200)]
    assert 0.015 <= np.mean(np.array(p_values) < 0.05) <= 0.095
    with pytest.raises(DataError):
        binomial_change_point([3, 30], [20, 20])


def test_long_diag_010_kaplan_meier_by_hand():
    """LONG-DIAG-010: small frame (p5, never observed, is not at risk): risk sets 5, 5, 4 at weeks 2, 4, 6;
    p2 drops out at week 4, p4 and p6 at week 6, p1 and p3 censored at 6; S = 1, 4/5, (4/5)(1 - 2/4);
    Greenwood's variance gives the log(-log) limits; site blocks follow the overall block."""
    result = time_to_dropout(_small_frame(), "y", "pid", "week", site="site", min_cell=1)
    overall = result.table[result.table["site"] == "all"].set_index("visit")
    assert overall["n_at_risk"].tolist() == [0, 5, 5, 4]
    assert overall["n_dropout"].tolist() == [0, 0, 1, 2]
    assert overall["n_censored"].tolist() == [0, 0, 0, 2]
    s6 = (4 / 5) * (1 - 2 / 4)
    assert overall["share_remaining"].tolist() == pytest.approx([1.0, 1.0, 0.8, s6])
    var_sum = 1 / (5 * 4) + 2 / (4 * 2)
    se = np.sqrt(var_sum) / abs(np.log(s6))
    assert overall.loc[6, "ci_lower"] == pytest.approx(s6 ** np.exp(1.959964 * se), rel=1e-5)
    assert result.n_never_observed == 1 and result.n_dropouts == 3 and result.n_patients == 5
    assert result.table["site"].drop_duplicates().tolist() == ["all", "A", "B"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_diag_011_history_screen_finds_last_value(seed):
    """LONG-DIAG-011: with dropout on the last observed outcome (0.25 per point) the dropout screen finds
    it (p < 0.001) and its per-point estimate is within 0.1 of the truth."""
    frame = longitudinal_registry(seed)
    result = missingness_history_screen(frame, "y", "patient", "month", site="site")
    row = result.table.set_index("term").loc["last y"]
    assert row["p_value"] < 1e-3
    truth = longitudinal_registry_truth()["dropout"]["last_value"]
    assert row["log_odds_ratio"] / row["sd"] == pytest.approx(truth, abs=0.1)
    assert result.cluster_name == "site" and "(1 | site)" in result.formula and not result.small_cell


def test_long_diag_011_history_screen_nominal_without_dependence():
    """LONG-DIAG-011: with dropout on the site only (dropout_last_value = 0) the last-value term has
    p < 0.05 in at most 3 of 20 registries (nominal 1; P(>= 4 of 20) = 0.016); the intermittent screen of y
    (missed visits depend on site and pilot phase only) finds the last value in at most 3 of them."""
    dropout_p, intermittent_p = [], []
    for s in range(20):
        frame = longitudinal_registry(200 + s, dropout_last_value=0.0, n_patients=400)
        dropout_p.append(missingness_history_screen(frame, "y", "patient", "month", site="site").p_value("last y"))
        intermittent_p.append(missingness_history_screen(frame, "y", "patient", "month",
                                                         kind="intermittent").p_value("last y"))
    assert sum(p < 0.05 for p in dropout_p) <= 3, np.round(dropout_p, 3)
    assert sum(p < 0.05 for p in intermittent_p) <= 3, np.round(intermittent_p, 3)


def test_long_diag_012_privacy(registry):
    """LONG-DIAG-012: the tables hold aggregates (no patient column, rows independent of the number of
    patients); a count of 1..min_cell-1 patients marks its row, to_frame() blanks it; the by-visit table
    goes through hmlib.privacy.suppress_counts with its row relation."""
    visit = missingness_by_visit(registry, ["y"], "patient", "month", min_cell=11)
    small = missingness_by_visit(registry[registry["patient"] <= 40], ["y"], "patient", "month", min_cell=11)
    assert len(visit.table) == len(small.table) == 8
    for table in (visit.table, small.table):
        assert "patient" not in table.columns
    counts = small.table[["n_patients", "n_missing", "n_intermittent", "n_after_dropout", "n_observed"]].to_numpy()
    expected = ((counts >= 1) & (counts < 11)).any(axis=1)
    assert (small.table["suppressed"].to_numpy() == expected).all() and expected.any()
    blanked = small.to_frame()
    assert blanked.loc[expected, "share_missing"].isna().all()
    assert blanked.loc[~expected, "share_missing"].notna().all()
    safe = suppress_counts(visit.table, ["n_missing", "n_observed"], 11, total_column="n_patients",
                           derived_columns={"share_missing": ["n_missing"]})
    assert not safe.mask.loc[~visit.table["suppressed"], "n_missing"].all()
    dropout = time_to_dropout(registry, "y", "patient", "month", site="site")
    site_rows = dropout.table[dropout.table["site"] != "all"]
    assert site_rows["suppressed"].any() and dropout.to_frame().loc[site_rows.index[site_rows["suppressed"]],
                                                                    "share_remaining"].isna().all()


def _cdystonia() -> pd.DataFrame:
    return pd.read_csv(REAL / "cdystonia.csv")


def test_long_diag_020_cdystonia():
    """LONG-DIAG-020: cdystonia (109 patients x 6 weeks, 23 missed visits of twstrs): by week the missing
    counts add to 23 and none at week 0 is after dropout; patterns cover 109 patients with no one never
    observed; dropout curves for the 9 sites plus overall; the history screen runs on its 9 sites; a
    shuffled copy gives the same tables."""
    frame = _cdystonia()
    by_week = missingness_by_visit(frame, ["twstrs"], "patient_id", "week", min_cell=1).table
    assert by_week["visit"].tolist() == [0, 2, 4, 8, 12, 16]
    assert by_week["n_missing"].sum() == 23 and (by_week["n_patients"] == 109).all()
    patterns = missingness_patterns_over_time(frame, ["twstrs"], "patient_id", "week", min_cell=1)
    counts = patterns.table.set_index("pattern")["n_patients"]
    assert counts.sum() == 109 and counts["never observed"] == 0 and counts["complete"] < 109
    dropout = time_to_dropout(frame, "twstrs", "patient_id", "week", site="site")
    assert dropout.table["site"].nunique() == 10
    assert dropout.n_dropouts == counts["monotone"] + counts["intermittent and monotone"]
    screen = missingness_history_screen(frame, "twstrs", "patient_id", "week", site="site")
    assert screen.n_clusters == 9 and screen.n_events == dropout.n_dropouts and screen.small_cell
    shuffled = frame.sample(frac=1.0, random_state=2)
    pd.testing.assert_frame_equal(missingness_by_visit(shuffled, ["twstrs"], "patient_id", "week",
                                                       min_cell=1).table, by_week)


def test_long_diag_021_pbcseq():
    """LONG-DIAG-021: pbcseq (312 patients, 1-16 visits at irregular days): chol is never observed for 8
    patients (the data README); by visit number the first visit has all 312 patients; its missingness per
    follow-up year (day / 365.25) is a table over every year with its change-point scan."""
    frame = pd.read_csv(REAL / "pbcseq.csv")
    patterns = missingness_patterns_over_time(frame, ["chol"], "id", "day", min_cell=1)
    assert patterns.table.set_index("pattern").loc["never observed", "n_patients"] == 8
    by_order = missingness_by_visit(frame, ["chol"], "id", "day", by="order", min_cell=1).table
    assert by_order["n_patients"].iloc[0] == 312 and by_order["n_patients"].sum() == len(frame)
    assert by_order["n_missing"].sum() == frame["chol"].isna().sum()
    yearly = missingness_over_calendar_time(frame, "chol", "id", "day", width=365.25, include_after_dropout=True,
                                            seed=1)
    assert yearly.table["n_visits"].sum() == len(frame)
    assert yearly.change_point.split is not None and 0 <= yearly.change_point.p_value <= 1


#: case of longitudinal_history.json -> (data file, variable, patient, time, keyword arguments)
HISTORY_CASES = {
    "cdystonia_dropout": ("cdystonia.csv", "twstrs", "patient_id", "week", {"site": "site"}),
    "cdystonia_intermittent": ("cdystonia.csv", "twstrs", "patient_id", "week", {"kind": "intermittent"}),
    "pbcseq_intermittent": ("pbcseq.csv", "chol", "id", "day", {"kind": "intermittent"}),
}


@pytest.mark.parametrize("name", HISTORY_CASES)
def test_long_diag_030_history_screen_matches_glmer(name):
    """LONG-DIAG-030: the same rows (count, events), SDs of the covariates to 1e-8, log odds ratios to 1e-3,
    standard errors to 1e-3 (cdystonia intermittent: 12 events, patient SD 5.2; its SE 2e-4 off) and
    the cluster SD to 1e-3 as glmer (Laplace, tight control) on rows built in R."""
    reference = {c["name"]: c for c in json.loads((RESULTS / "longitudinal_history.json").read_text())}[name]
    file, variable, patient, time, kwargs = HISTORY_CASES[name]
    result = missingness_history_screen(pd.read_csv(REAL / file), variable, patient, time, **kwargs)
    assert (result.n_rows, result.n_events) == (reference["n_rows"], reference["n_events"])
    np.testing.assert_allclose(result.table["sd"].to_numpy()[1:], reference["sd"], rtol=1e-8)
    np.testing.assert_allclose(result.table["log_odds_ratio"], reference["estimate"], atol=1e-3)
    np.testing.assert_allclose(result.table["std_error"], reference["std_error"], atol=1e-3)
    assert result.cluster_sd == pytest.approx(reference["cluster_sd"], abs=1e-3)
