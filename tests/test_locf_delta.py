"""Last observation carried forward and the MNAR delta after dropout (#16).

LOCF-001  LOCF on a constructed unsorted frame: each missing value gets the patient's latest earlier recorded
          value, in the input's row order and index; counts of carried and left-missing cells
LOCF-002  a patient's first visits without a recorded value stay missing (nothing carried backward), and the
          left-missing mask says so
LOCF-003  the input frame is not modified (values, order, dtypes)
LOCF-004  duplicate (patient, time) rows: one visit (DataWarning); the visit's first recorded value fills its
          other rows (counted within the visit) and is carried to later visits; recorded values never change
LOCF-005  LOCF carries per variable: a later missing value takes the variable's own last value, not a row's
LOCF-006  datetime time: order by date; median time carried in days
LOCF-007  clear errors: unknown column, the time or cluster among the columns, time that does not vary
LOCF-008  LOCF matches a few lines of base R (tests/results/locf_reference.R -> locf_reference.json)
DELTA-001 dropout_cells: only missing values after the last recorded visit, not intermittent gaps, not never-
          observed patients; unsorted input
DELTA-002 shift_after_dropout moves exactly the post-dropout imputed values by delta; observed values and
          intermittent imputed values untouched; inputs unchanged
DELTA-003 delta = 0 is the identity (the pooled analysis at 0 equals the unshifted one)
DELTA-004 form="growing": shift = delta x time since the last recorded visit
DELTA-005 tipping point where a constructed monotone relation crosses the relevant difference (bisection
          brackets it, both sides)
DELTA-006 tipping point with the random-slope analysis model: the bracket straddles the change, and delta = 0
          reproduces the pooled unshifted analysis
DELTA-007 errors: no post-dropout cell, completed sets with other rows, unknown form
DELTA-008 both forms of the shift match a few lines of base R (tests/results/dropout_delta_reference.R ->
          dropout_delta_reference.json): the post-dropout cells, the constant and the growing shift
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmlib.exceptions import DataError, DataWarning, ParamsError
from hmlib.stats.dropout_delta import (dropout_cells, dropout_tipping_point, pooled_random_slope_coefficient,
                                       shift_after_dropout)
from hmlib.stats.imputation.carried_forward import last_observation_carried_forward
from hmlib.stats.sensitivity import ChangeRule

RESULTS = Path(__file__).parent / "results"


def _locf(frame, columns=("y",), **kw):
    return last_observation_carried_forward(frame, columns=list(columns), cluster="id", time="week", **kw)


@pytest.fixture
def unsorted():
    # patient "b": weeks 0, 4, 8, 12 given as 8, 0, 12, 4; patient "a": weeks 0, 4, 8
    return pd.DataFrame({"id": ["b", "a", "b", "a", "b", "a", "b"],
                         "week": [8, 4, 0, 0, 12, 8, 4],
                         "y": [np.nan, np.nan, 10.0, 3.0, np.nan, 5.0, 11.0]},
                        index=[70, 71, 72, 73, 74, 75, 76])


def test_locf_001_unsorted_exact(unsorted):
    """LOCF-001: each missing value gets the latest earlier recorded value; input order and index kept."""
    res = _locf(unsorted)
    assert res.completed.index.tolist() == [70, 71, 72, 73, 74, 75, 76]
    # b week 8 <- week 4 (11); a week 4 <- week 0 (3); b week 12 <- week 4 (11)
    assert res.completed["y"].tolist() == [11.0, 3.0, 10.0, 3.0, 11.0, 5.0, 11.0]
    assert res.carried["y"].tolist() == [True, True, False, False, True, False, False]
    row = res.counts.iloc[0]
    assert (row.n_missing, row.n_carried, row.n_filled_within_visit, row.n_left_missing) == (3, 3, 0, 0)
    assert row.median_time_carried == 4.0     # gaps 4 (b: 4->8), 4 (a: 0->4), 8 (b: 4->12)


def test_locf_002_first_visit_missing_stays_missing():
    """LOCF-002: nothing is carried backward; those cells are left missing and counted."""
    frame = pd.DataFrame({"id": [1, 1, 1, 2, 2, 2], "week": [4, 0, 8, 0, 4, 8],
                          "y": [7.0, np.nan, np.nan, np.nan, np.nan, np.nan]})
    res = _locf(frame)
    np.testing.assert_array_equal(res.completed["y"].to_numpy(), [7.0, np.nan, 7.0, np.nan, np.nan, np.nan])
    assert res.left_missing["y"].tolist() == [False, True, False, True, True, True]
    assert res.counts.loc[0, "n_left_missing"] == 4 and res.counts.loc[0, "n_carried"] == 1


def test_locf_003_input_unchanged(unsorted):
    """LOCF-003: the input frame's values, order and dtypes do not change."""
    before = unsorted.copy(deep=True)
    _locf(unsorted)
    pd.testing.assert_frame_equal(unsorted, before)


def test_locf_004_duplicates_one_visit():
    """LOCF-004: duplicate rows are one visit: its first recorded value fills its other rows and is carried on."""
    frame = pd.DataFrame({"id": [1, 1, 1, 1, 1], "week": [0, 4, 4, 4, 8],
                          "y": [1.0, np.nan, 6.0, 9.0, np.nan]})
    with pytest.warns(DataWarning, match="repeat"):
        res = _locf(frame)
    np.testing.assert_array_equal(res.completed["y"].to_numpy(), [1.0, 6.0, 6.0, 9.0, 6.0])
    row = res.counts.iloc[0]
    assert (row.n_carried, row.n_filled_within_visit, row.n_left_missing) == (1, 1, 0)
    assert res.n_duplicate_rows == 2


def test_locf_005_per_variable():
    """LOCF-005: each variable carries its own last recorded value."""
    frame = pd.DataFrame({"id": [1, 1, 1], "week": [0, 1, 2], "y": [1.0, np.nan, np.nan],
                          "z": [np.nan, 2.0, np.nan], "note": ["a", None, "c"]})
    res = _locf(frame, columns=("y", "z", "note"))
    np.testing.assert_array_equal(res.completed["y"].to_numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(res.completed["z"].to_numpy(), [np.nan, 2.0, 2.0])
    assert res.completed["note"].tolist() == ["a", "a", "c"]


def test_locf_006_dates():
    """LOCF-006: a datetime time orders the visits; the time carried is in days."""
    frame = pd.DataFrame({"id": [1, 1, 1], "week": pd.to_datetime(["2024-03-01", "2024-01-01", "2024-01-31"]),
                          "y": [np.nan, 2.0, np.nan]})
    res = _locf(frame)
    np.testing.assert_array_equal(res.completed["y"].to_numpy(), [2.0, 2.0, 2.0])
    assert res.counts.loc[0, "median_time_carried"] == pytest.approx((30 + 60) / 2)


def test_locf_007_errors(unsorted):
    """LOCF-007: unknown column, time or cluster among the columns, a time constant within patients."""
    with pytest.raises(DataError, match="nothere"):
        _locf(unsorted, columns=("nothere",))
    with pytest.raises(DataError, match="cluster or the time"):
        _locf(unsorted, columns=("y", "week"))
    with pytest.raises(DataError, match="at least one"):
        _locf(unsorted, columns=())
    flat = unsorted.assign(week=unsorted["id"].map({"a": 1, "b": 2}))
    with pytest.raises(DataError, match="does not vary"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        _locf(flat)
    with pytest.raises(DataError, match="numeric"):
        _locf(unsorted.assign(week=unsorted["week"].astype(str)))


def test_locf_008_matches_base_r():
    """LOCF-008: the completed column equals base R's LOCF (tests/results/locf_reference.R)."""
    ref = json.loads((RESULTS / "locf_reference.json").read_text())
    frame = pd.DataFrame(ref["input"])
    res = last_observation_carried_forward(frame, columns=["y"], cluster="id", time="time")
    expected = np.array([np.nan if v is None else v for v in ref["locf"]], dtype=float)
    np.testing.assert_array_equal(res.completed["y"].to_numpy(dtype=float), expected)
    assert res.counts.loc[0, "n_left_missing"] == ref["n_left_missing"]


# --------------------------------------------------------------------------
# delta after dropout
# --------------------------------------------------------------------------
@pytest.fixture
def dropout_frame():
    # patient 1: o m o m m (intermittent at week 1, dropout from week 3); patient 2: o o o o o;
    # patient 3: m m m m m (never observed); patient 4: o o o o m (dropout at the last visit). Rows shuffled.
    y = {1: [1.0, None, 2.0, None, None], 2: [3.0, 3.5, 4.0, 4.5, 5.0], 3: [None] * 5, 4: [6.0, 6.0, 7.0, 7.0, None]}
    rows = [{"id": i, "week": w, "y": v} for i, vs in y.items() for w, v in enumerate(vs)]
    frame = pd.DataFrame(rows).astype({"y": float})
    return frame.sample(frac=1.0, random_state=4).set_index(pd.Index(np.arange(100, 120)))


def _post_dropout(frame):
    return ((frame["id"] == 1) & (frame["week"] >= 3)) | ((frame["id"] == 4) & (frame["week"] == 4))


def test_delta_001_dropout_cells(dropout_frame):
    """DELTA-001: only the trailing missing values of patients who recorded the variable before."""
    cells = dropout_cells(dropout_frame, "y", cluster="id", time="week")
    np.testing.assert_array_equal(cells.mask, _post_dropout(dropout_frame).to_numpy())
    assert (cells.n_cells, cells.n_patients_dropped_out, cells.n_intermittent_cells,
            cells.n_never_observed_patients) == (3, 2, 1, 1)
    since = pd.Series(cells.time_since_last, index=dropout_frame.index)[cells.mask]
    weeks = dropout_frame.loc[cells.mask, ["id", "week"]]
    expected = np.where(weeks["id"] == 1, weeks["week"] - 2, weeks["week"] - 3)
    np.testing.assert_array_equal(since.to_numpy(), expected)


def _completed(frame, m=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(m):
        done = frame.copy()
        miss = done["y"].isna()
        done.loc[miss, "y"] = rng.normal(size=int(miss.sum()))
        out.append(done)
    return out


def test_delta_002_shift_only_post_dropout(dropout_frame):
    """DELTA-002: post-dropout imputed values move by delta; recorded and intermittent values do not."""
    completed = _completed(dropout_frame)
    before = [c.copy() for c in completed]
    frame_before = dropout_frame.copy()
    shifted = shift_after_dropout(completed, dropout_frame, "y", -1.5, cluster="id", time="week")
    post = _post_dropout(dropout_frame).to_numpy()
    for old, new in zip(before, shifted):
        diff = new["y"].to_numpy() - old["y"].to_numpy()
        np.testing.assert_allclose(diff[post], -1.5)
        np.testing.assert_array_equal(diff[~post], 0.0)
        assert new.index.equals(dropout_frame.index)
    for old, kept in zip(before, completed):
        pd.testing.assert_frame_equal(old, kept)
    pd.testing.assert_frame_equal(frame_before, dropout_frame)


def test_delta_003_zero_is_identity(dropout_frame):
    """DELTA-003: delta = 0 returns equal copies."""
    completed = _completed(dropout_frame)
    for old, new in zip(completed, shift_after_dropout(completed, dropout_frame, "y", 0.0, cluster="id",
                                                       time="week")):
        pd.testing.assert_frame_equal(old, new)


def test_delta_004_growing(dropout_frame):
    """DELTA-004: form="growing" shifts by delta x time since the last recorded visit."""
    completed = _completed(dropout_frame, m=1)
    new = shift_after_dropout(completed, dropout_frame, "y", 0.5, cluster="id", time="week", form="growing")[0]
    diff = (new["y"] - completed[0]["y"]).to_numpy()
    f = dropout_frame
    expected = np.select([(f["id"] == 1) & (f["week"] >= 3), (f["id"] == 4) & (f["week"] == 4)],
                         [0.5 * (f["week"] - 2), 0.5 * 1.0], 0.0)
    np.testing.assert_allclose(diff, expected)


def test_delta_005_tipping_point_monotone(dropout_frame):
    """DELTA-005: the analysis is the mean of the shifted post-dropout cells: estimate = mean0 + delta, so the
    conclusion (R = 0.9) changes at |delta_units| = 0.9 on each side; bisection brackets it."""
    completed = _completed(dropout_frame)
    post = _post_dropout(dropout_frame).to_numpy()

    def analyse(frames):
        est = float(np.mean([f["y"].to_numpy()[post].mean() for f in frames]))
        return {"estimate": est, "ci_lower": est - 100.0, "ci_upper": est + 100.0}

    rule = ChangeRule(relevant_difference=0.9)
    res = dropout_tipping_point(completed, dropout_frame, variable="y", outcome="y", predictors=[], cluster="id",
                                time="week", focus="week", rule=rule, analyse=analyse, bisection_steps=10)
    for side, sign in (("positive", 1), ("negative", -1)):
        tp = res.tipping[side]
        assert tp["found"]
        lo, hi = sorted(abs(v) * res.scale for v in tp["bracket_sd"])
        assert lo < 0.9 <= hi and hi - lo < 0.01 * res.scale
        assert np.sign(tp["delta_units"]) == sign and abs(tp["delta_units"]) == pytest.approx(0.9, abs=0.01)
    assert res.evaluations["delta_sd"].is_monotonic_increasing
    no_change = dropout_tipping_point(completed, dropout_frame, variable="y", outcome="y", predictors=[],
                                      cluster="id", time="week", focus="week", rule=ChangeRule(relevant_difference=50),
                                      analyse=analyse)
    assert not no_change.tipping["positive"]["found"] and not no_change.tipping["negative"]["found"]


def _registry(seed=5, patients=60, visits=5):
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(patients), visits)
    t = np.tile(np.arange(visits) * 0.5, patients)
    u = rng.normal(size=(patients, 2)) * [1.0, 0.4]
    y = 1 + 0.4 * t + u[pid, 0] + u[pid, 1] * t + rng.normal(0, 0.6, pid.size)
    last = 1 + rng.geometric(0.25, patients)
    y[np.tile(np.arange(visits), patients) >= last[pid]] = np.nan
    return pd.DataFrame({"id": pid, "t": t, "y": y})


def test_delta_006_random_slope_analysis():
    """DELTA-006: with fit_mixed + Rubin, delta = 0 equals the pooled unshifted analysis and the tipping bracket
    straddles the change (unchanged at its inner end, changed at its outer end)."""
    frame = _registry()
    completed = []
    rng = np.random.default_rng(2)
    for _ in range(3):     # a crude MAR imputation: the patient's mean plus noise (fast and deterministic)
        done = frame.copy()
        means = frame.groupby("id")["y"].transform("mean").fillna(frame["y"].mean())
        miss = done["y"].isna()
        done.loc[miss, "y"] = means[miss] + rng.normal(0, 0.6, int(miss.sum()))
        completed.append(done)
    kwargs = dict(outcome="y", predictors=[], cluster="id", time="t", focus="t")
    plain = pooled_random_slope_coefficient(completed, **kwargs)
    rule = ChangeRule(relevant_difference=0.15)
    res = dropout_tipping_point(completed, frame, variable="y", rule=rule, deltas_sd=(-1.0, -0.5, 0.5, 1.0),
                                bisection_steps=3, **kwargs)
    assert res.reference["estimate"] == pytest.approx(plain["estimate"], abs=1e-10)
    assert res.reference["ci_upper"] == pytest.approx(plain["ci_upper"], abs=1e-10)
    tp = res.tipping["negative"]
    assert tp["found"]
    lo, hi = tp["bracket_sd"]
    table = res.evaluations.set_index("delta_sd")
    assert table.loc[lo, "change"] == "" or lo == 0
    assert table.loc[hi, "change"] != ""
    # lowering the values after dropout (late visits) lowers the mean slope, monotonically
    assert table.loc[hi, "estimate"] < res.reference["estimate"]
    assert res.evaluations["estimate"].is_monotonic_increasing


def test_delta_007_errors(dropout_frame):
    """DELTA-007: nothing to shift, completed sets of other rows, unknown form."""
    full = dropout_frame.assign(y=1.0)
    with pytest.raises(DataError, match="no missing values after"):
        dropout_tipping_point(_completed(full), full, variable="y", outcome="y", predictors=[], cluster="id",
                              time="week", focus="week", rule=ChangeRule(relevant_difference=1.0))
    with pytest.raises(DataError, match="index"):
        shift_after_dropout([dropout_frame.reset_index(drop=True)], dropout_frame, "y", 1.0, cluster="id",
                            time="week")
    with pytest.raises(ParamsError, match="form"):
        shift_after_dropout(_completed(dropout_frame), dropout_frame, "y", 1.0, cluster="id", time="week",
                            form="linear")


def test_delta_008_matches_base_r():
    """DELTA-008: the post-dropout cells and both forms of the shift equal base R's
    (tests/results/dropout_delta_reference.R)."""
    ref = json.loads((RESULTS / "dropout_delta_reference.json").read_text())
    frame = pd.DataFrame(ref["input"]).astype({"y": float})
    completed = frame.assign(y=np.asarray(ref["completed"], dtype=float))
    cells = dropout_cells(frame, "y", cluster="id", time="time")
    np.testing.assert_array_equal(cells.mask, np.asarray(ref["post_dropout"], dtype=bool))
    assert cells.n_cells == ref["n_post_dropout"] > 0
    for form in ("constant", "growing"):
        new = shift_after_dropout([completed], frame, "y", ref["delta"], cluster="id", time="time", form=form)[0]
        np.testing.assert_allclose(new["y"].to_numpy(), np.asarray(ref[form], dtype=float), rtol=0, atol=1e-12)
