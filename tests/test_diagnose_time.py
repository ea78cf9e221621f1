"""Step 1 over time (params ``time``, issue #16): the params checks, the step, privacy, nothing changed without time.

DIAG-TIME-001  params: a bad 'time' (a list, the cluster, the outcome, a higher level) is a ParamsError naming
               the fix; 'random_slopes' naming a column that is not a predictor, or a categorical one, is a
               ParamsError naming the fix
DIAG-TIME-002  data: a time column that is absent, text, partly dates, empty in some rows or constant within
               every patient is a DataError naming the column and the fix; repeated (patient, time) rows are a
               counted notice, not an error; dates parse; time is kept out of Registry.frame
DIAG-TIME-003  the simulated registry (pilot phase of 6 months, dropout on the last outcome): the change-point
               screen splits after 2020-06 with p < 0.01 and a higher rate before; the dropout screen finds the
               last value of y (odds ratio > 1, p < 0.001); the narrative says both, as screens
DIAG-TIME-004  privacy: no published count of the over-time tables is from 1 to min_cell - 1; each variable's
               by-visit block is protected around its column totals (no block hides exactly one cell of a
               column); a visit's number of patients is hidden in every block or none; curves carry no counts
               and no point the stats result marked; no dropout curve of a site with fewer than min_cell
               patients (pooled instead, said in the caption)
DIAG-TIME-005  without time nothing changes: the artifact has over_time None and otherwise the fields of
               version 4, the figures have no over-time entries, narrative and methods say nothing of time
               (with time the counts of rows say visits instead of patients, nothing else moves)
DIAG-TIME-006  the real data: params/cdystonia_time.yaml (site > patient_id > week) runs step 1 over time,
               pools the sites with fewer than 11 patients into one curve and round-trips its artifact
DIAG-TIME-007  the over-time figures follow the report's figure style (captions, 9-point text, A4 width, no overlaps)
DIAG-TIME-008  profiles by dropout pattern (the aggregate spaghetti plot): every group holds at least min_cell
               patients, each point is the mean of the group's recorded values at that visit (checked by hand),
               points of fewer patients are blanked, no count is published; the simulated dropout-on-the-outcome
               registry shows the early dropouts' lower outcome; cdystonia (4 early dropouts of 109) draws none and
               says why
DIAG-TIME-009  with time the clusters are patients: their IDs are pseudonymised by default (no study ID in the
               registry frame), unless the params say pseudonymize_clusters: false; without time nothing changes
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from hmlib.data import load_registry
from hmlib.exceptions import DataError, ParamsError
from hmlib.params import load_params
from hmlib.simulate.longitudinal import longitudinal_registry
from hmlib.steps.diagnose import DiagnoseArtifact, diagnose, diagnose_registry, methods_text

BASE = ("name: t\ndata: d.csv\ncluster: patient\noutcome: y\noutcome_family: gaussian\npredictors: [x, month]\n"
        "higher_levels: [site]\nseed: 1\n")


def _params(tmp_path, extra: str, frame: pd.DataFrame | None = None):
    if frame is not None:
        frame.to_csv(tmp_path / "d.csv", index=False)
    path = tmp_path / "p.yaml"
    path.write_text(BASE + extra)
    return load_params(path)


@pytest.fixture(scope="module")
def registry_frame():
    return longitudinal_registry(3, n_sites=12, n_patients=400, n_visits=6)


@pytest.fixture(scope="module")
def simulated(registry_frame):
    return diagnose(registry_frame, cluster="patient", outcome="y", outcome_family="gaussian",
                    predictors=["x", "month"], higher_levels=["site"], time="date", seed=1, nagq=1, focus="y")


@pytest.mark.parametrize("extra, needle", [
    ("time: [date, visit]\n", "'time' must be one column name"),
    ("time: patient\n", "'time' is 'patient', which is also given as cluster"),
    ("time: y\n", "also given as outcome"),
    ("time: site\n", "also given as higher_levels"),
    ("random_slopes: [age]\n", "'random_slopes' names 'age', which is not in 'predictors'"),
    ("random_slopes: [x]\ncategorical: [x]\n", "which is categorical; a random slope needs a numeric"),
    ("random_slopes: [month, month]\n", "names ['month'] more than once"),
])
def test_diag_time_001_params(tmp_path, extra, needle):
    """DIAG-TIME-001: (module docstring)."""
    with pytest.raises(ParamsError) as err:
        _params(tmp_path, extra)
    assert needle in str(err.value)


def _frame_with(registry_frame, **columns) -> pd.DataFrame:
    frame = registry_frame[["site", "patient", "month", "x", "y"]].copy()
    frame["date"] = registry_frame["date"].dt.strftime("%Y-%m-%d")
    return frame.assign(**columns)


@pytest.mark.parametrize("make, needle", [
    (lambda f: f.drop(columns=["date"]), "column 'date' named in p.yaml is not in d.csv"),
    (lambda f: f.assign(date="soon"), "holds neither numbers nor dates"),
    (lambda f: f.assign(date=np.where(np.arange(len(f)) % 7 == 0, "later", f["date"])),
     "but 339 value(s) are not dates, e.g. 'later'"),
    (lambda f: f.assign(date=f["date"].where(np.arange(len(f)) % 50 != 0)), "is empty in"),
    (lambda f: f.assign(date=f.groupby("patient")["date"].transform("first")), "never varies within a patient"),
])
def test_diag_time_002_data_checks(tmp_path, registry_frame, make, needle):
    """DIAG-TIME-002: (module docstring) errors."""
    params = _params(tmp_path, "time: date\n", make(_frame_with(registry_frame)))
    with pytest.raises(DataError) as err:
        load_registry(params)
    assert needle in str(err.value)
    assert "remove 'time'" in str(err.value) or "not in d.csv" in str(err.value)


def test_diag_time_002_duplicates_dates_and_frame(tmp_path, registry_frame):
    """DIAG-TIME-002: (module docstring) a notice for repeated visits, dates parsed, time kept apart."""
    frame = _frame_with(registry_frame)
    frame = pd.concat([frame, frame.iloc[:15]], ignore_index=True)
    reg = load_registry(_params(tmp_path, "time: date\n", frame))
    notice = [n.message for n in reg.notices if n.code == "duplicate-visits"]
    assert notice and notice[0].startswith("15 row(s) repeat the (patient, date)")
    assert pd.api.types.is_datetime64_any_dtype(reg.time_values) and "date" not in reg.frame.columns
    numeric = load_registry(_params(tmp_path, "time: month\n", _frame_with(registry_frame)))
    assert numeric.time_values.dtype == float and "month" in numeric.frame.columns
    result = diagnose_registry(reg)
    assert result.over_time.n_duplicate_rows == 15
    assert any("15 row(s) repeat" in n for n in result.over_time.notes)


def test_diag_time_003_pilot_phase_and_dropout_screen(simulated):
    """DIAG-TIME-003: (module docstring)."""
    td = simulated.over_time
    assert td.time_is_date and td.period == "M" and td.site == "site" and td.visit_by == "order"
    cp = td.change_points.set_index("variable").loc["y"]
    assert cp["last_period_before"] == "2020-06" and cp["p_value"] < 0.01
    assert cp["rate_before"] > cp["rate_after"] + 0.1
    history = td.history.set_index(["variable", "kind", "term"])
    last_y = history.loc[("y", "dropout", "last y")]
    assert last_y["odds_ratio"] > 1 and last_y["p_value"] < 0.001 and last_y["cluster"] == "site"
    focus_sentences = [s for s in simulated.narrative() if s.startswith("Screens, not tests")]
    assert len(focus_sentences) == 1 and "changes after 2020-06" in focus_sentences[0]
    assert "dropout from" in focus_sentences[0] and "last y" in focus_sentences[0]
    shares = td.patterns.values.set_index("variable")
    assert 0 < shares.loc["y", "share_monotone"] < 1


def test_diag_time_003_no_drift_no_change_point():
    """DIAG-TIME-003: without a pilot shift the screen finds no change (the test can fail both ways)."""
    frame = longitudinal_registry(3, n_sites=12, n_patients=400, n_visits=6, pilot_shift=0.0,
                                  dropout_last_value=0.0)
    res = diagnose(frame, cluster="patient", outcome="y", outcome_family="gaussian", predictors=["x", "month"],
                   higher_levels=["site"], time="date", seed=1, nagq=1, focus="y")
    assert res.over_time.change_points.set_index("variable").loc["y", "p_value"] > 0.05
    assert not any("changes after" in s for s in res.narrative())


def _small(values) -> np.ndarray:
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    return (v >= 1) & (v < 11)


def test_diag_time_004_privacy(simulated, registry_frame):
    """DIAG-TIME-004: (module docstring)."""
    from hmlib.stats.longitudinal import time_to_dropout
    from hmlib.steps.diagnose_time import dropout_groups
    record = simulated.to_artifact().over_time
    for table in (record.by_visit, record.by_period, record.patterns):
        for row in table:
            for name in row.__dataclass_fields__:
                value = getattr(row, name)
                if name.startswith("n_") or name in ("complete", "intermittent", "monotone",
                                                     "intermittent_and_monotone", "never_observed"):
                    assert not _small([value]).any(), (name, row)
    by_visit = simulated.over_time.by_visit
    counts = ["n_missing", "n_observed", "n_intermittent", "n_after_dropout"]
    for _, block in by_visit.mask.groupby(by_visit.values["variable"]):
        assert (block[counts].sum(axis=0) != 1).all()  # a lone hidden cell would be its column total minus the rest
    hidden_n = by_visit.mask["n_patients"].groupby(by_visit.values["visit"]).nunique()
    assert (hidden_n == 1).all()
    assert any(r.suppressed for r in record.by_visit)  # there is something to protect
    assert set(DiagnoseArtifact.__dataclass_fields__) >= {"over_time"}
    assert "n_at_risk" not in simulated.over_time.dropout.columns
    labels, pooled = dropout_groups(registry_frame, "y", "patient", "site", 11)
    assert simulated.over_time.pooled_sites["y"] == pooled and len(pooled) == 2
    marked = time_to_dropout(registry_frame.assign(group=labels), "y", "patient", "date", site="group",
                             by="order").table
    published = simulated.over_time.dropout.query("variable == 'y'")
    assert len(marked) == len(published) and marked["suppressed"].sum() > 0
    shown = published["share_remaining"].notna().to_numpy()
    assert not (shown & marked["suppressed"].to_numpy()).any()
    assert shown[~marked["suppressed"].to_numpy()].all()


def test_diag_time_004_small_sites_pooled(registry_frame):
    """DIAG-TIME-004: sites below min_cell patients are pooled into one curve, never drawn alone."""
    from hmlib.figures.style import caption_of
    from hmlib.steps.diagnose_time import dropout_groups

    frame = registry_frame.copy()
    sizes = frame.groupby("site")["patient"].nunique()
    small_sites = sizes.sort_values().index[:2]
    keep = ~frame["site"].isin(small_sites) | frame["patient"].isin(
        frame.loc[frame["site"].isin(small_sites)].groupby("site")["patient"].unique().explode().groupby(
            level=0).head(4))
    frame = frame.loc[keep].reset_index(drop=True)
    labels, pooled = dropout_groups(frame, "y", "patient", "site", 11)
    assert set(small_sites) <= set(pooled)
    per_group = frame.loc[frame["y"].notna()].groupby(labels.loc[frame["y"].notna()])["patient"].nunique()
    assert (per_group >= 11).all()
    res = diagnose(frame, cluster="patient", outcome="y", outcome_family="gaussian", predictors=["x", "month"],
                   higher_levels=["site"], time="date", seed=1, nagq=1)
    groups = set(res.over_time.dropout["group"])
    assert not {str(s) for s in small_sites} & groups and any("pooled" in g for g in groups)
    dropout_fig = [f for f in res.figures()["over_time"] if caption_of(f)[0] == "dropout-y"][0]
    assert "pooled into one curve, never drawn alone" in caption_of(dropout_fig)[1]


def test_diag_time_005_without_time_nothing_changes(registry_frame, simulated):
    """DIAG-TIME-005: (module docstring)."""
    from hmlib.figures.style import caption_of
    from test_diagnose_units import VERSION_3_FIELDS

    plain = diagnose(registry_frame, cluster="patient", outcome="y", outcome_family="gaussian",
                     predictors=["x", "month"], higher_levels=["site"], nagq=1, focus="y")
    assert plain.over_time is None and plain.figures()["over_time"] == []
    record = plain.to_artifact()
    assert set(record.to_json()) == VERSION_3_FIELDS | {"by_unit", "over_time"} and record.over_time is None
    assert DiagnoseArtifact.VERSION == 6   # 6: over_time.profiles
    ev = type("Ev", (), {"noun": "patient"})()
    assert "Over the visits" not in methods_text(record, ev)[0]
    assert "Over the visits" in methods_text(simulated.to_artifact(), ev)[0]
    assert not any("Over the visits" in s or s.startswith("Screens") or "dropout pattern" in s
                   for s in plain.narrative())
    # everything that is not about time is the same with time
    with_time = simulated.to_artifact().to_json()
    without = record.to_json()
    for key in without:
        if key not in ("over_time", "narrative"):
            assert with_time[key] == without[key], key
    kept = [s for s in simulated.narrative() if "Over the visits" not in s and not s.startswith("Screens")
            and "(profiles by dropout pattern;" not in s]
    # with time the rows are visits (wording.row_noun); only that word of the counts moves
    assert kept != plain.narrative() and kept[0].startswith("The extract has 2,370 visits in ")
    assert [re.sub(r"(\d) visits\b", r"\1 patients", s) for s in kept] == plain.narrative()
    assert [caption_of(f)[0] for f in plain.figures()["by_cluster"]] == \
        [caption_of(f)[0] for f in simulated.figures()["by_cluster"]]


def test_diag_time_006_cdystonia():
    """DIAG-TIME-006: (module docstring)."""
    params = load_params(REPO / "params" / "cdystonia_time.yaml")
    assert params.time == "week" and "week" in params.predictors
    plain = load_params(REPO / "params" / "cdystonia.yaml")
    assert plain.time is None and plain.fingerprint != params.fingerprint
    result = diagnose_registry(load_registry(params))
    td = result.over_time
    assert td.visit_by == "time" and td.variables == ("twstrs",) and td.site == "site"
    assert td.n_patients == 109 and list(td.by_visit.values["visit"]) == [0.0, 2.0, 4.0, 8.0, 12.0, 16.0]
    assert set(td.pooled_sites["twstrs"]) == {"4", "5"}  # the sites with fewer than 11 patients
    assert "2 smaller site units pooled" in set(td.dropout["group"])
    record = result.to_artifact()
    assert DiagnoseArtifact.from_json(record.to_json()) == record
    assert any(s.startswith("Over the visits (week)") for s in result.narrative())


def test_diag_time_007_figures_follow_the_style(simulated):
    """DIAG-TIME-007: the over-time figures (by visit, by calendar month, dropout curves per variable) are
    captioned, have no text under 9 points, are at most A4 wide and have no overlapping tick labels."""
    import io

    from hmlib.figures import style

    figures = simulated.figures()["over_time"]
    keys = [style.caption_of(f)[0] for f in figures]
    assert keys == ["over-time-y", "calendar-y", "dropout-y", "profiles-y", "over-time-x", "calendar-x",
                    "dropout-x"]
    for fig in figures:
        key, text = style.caption_of(fig)
        assert len(text) > 40, key
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
        assert style.smallest_font(fig) >= style.MIN_FONT_PT, key
        assert fig.get_figwidth() <= style.MAX_WIDTH_IN + 1e-9, key
        assert style.overlapping_ticks(fig) == 0, key
    assert "split after 2020-06" in style.caption_of(figures[1])[1]


def test_diag_time_008_profiles_by_dropout(registry_frame, simulated):
    """DIAG-TIME-008: (module docstring)."""
    from hmlib.stats.longitudinal.profiles import profiles_by_dropout

    frame = registry_frame.drop(columns=["date"])
    res = profiles_by_dropout(frame, "y", "patient", "month", min_cell=11)
    assert (res.groups["n_patients"] >= 11).all() and len(res.groups) >= 3
    last = frame.dropna(subset=["y"]).groupby("patient")["month"].max()
    for row in res.groups.itertuples():
        patients = last.index[(last >= row.first_visit) & (last <= row.last_visit)]
        assert len(patients) == row.n_patients
        at = frame.loc[frame["patient"].isin(patients) & (frame["month"] == row.first_visit), "y"].dropna()
        point = res.table.loc[(res.table["group"] == row.group) & (res.table["visit"] == row.first_visit)]
        assert point["mean"].iloc[0] == pytest.approx(at.mean(), rel=1e-12) and point["n_patients"].iloc[0] == len(at)
    small = profiles_by_dropout(frame, "y", "patient", "month", min_cell=60)
    hidden = small.table["suppressed"]
    assert hidden.any() and small.to_frame().loc[hidden, "mean"].isna().all()
    published = simulated.over_time.profiles
    assert list(published.columns) == ["variable", "group", "label", "visit", "mean"]   # no counts
    first = published.loc[published["visit"] == published["visit"].min()].sort_values("group")
    assert first["mean"].iloc[0] > first["mean"].iloc[-1]   # dropout more likely after a high last outcome
    assert any("by dropout pattern" in s for s in simulated.narrative())
    record = simulated.to_artifact()
    assert DiagnoseArtifact.from_json(record.to_json()) == record and record.over_time.profiles
    params = load_params(REPO / "params" / "cdystonia_time.yaml")
    td = diagnose_registry(load_registry(params)).over_time
    assert td.profiles.empty and any("by dropout pattern is not drawn" in n for n in td.notes)


def test_diag_time_009_patients_pseudonymised_by_default(tmp_path, registry_frame):
    """DIAG-TIME-009: (module docstring)."""
    frame = _frame_with(registry_frame)
    frame.to_csv(tmp_path / "d.csv", index=False)
    ids = {str(i) for i in frame["patient"]}
    with_time = _params(tmp_path, "time: date\n")
    assert with_time.privacy.pseudonymize_clusters
    assert not set(load_registry(with_time).frame["patient"].astype(str)) & ids
    kept = _params(tmp_path, "time: date\nprivacy: {pseudonymize_clusters: false}\n")
    assert not kept.privacy.pseudonymize_clusters and set(load_registry(kept).frame["patient"].astype(str)) == ids
    assert not _params(tmp_path, "").privacy.pseudonymize_clusters
