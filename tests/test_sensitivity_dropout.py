"""Step 5 with repeated measures (#16): the MNAR delta after dropout and the exclusion of early dropouts.

A simulated registry of visits within patients within sites (:func:`hmlib.simulate.longitudinal.longitudinal_registry`:
x and y missing after dropout, intermittent gaps), m = 3 imputations of 3 iterations: the file runs in seconds
(the end-to-end report is marked slow).

Test IDs
--------
SENS-DROP-001  planning: with ``time`` the family delta-dropout has its delta = 0 reference and one scenario per
               shifted variable (the outcome y, and the time-varying focus x) and grid value, named
               ``delta-dropout:<variable>:<delta>sd``, plus ``exclude-early-dropout``; without post-dropout cells
               neither family is planned (a note says why), nor without ``time``
SENS-DROP-002  the shift touches only post-dropout imputed values: by exactly delta x the recorded SD, in every
               completed set, as :func:`hmlib.stats.dropout_delta.shift_after_dropout` does; recorded values and
               intermittent imputed values untouched
SENS-DROP-003  delta = 0 equals the un-shifted analysis with imputed outcomes kept (all rows analysed), not the
               primary (which deletes them); the shifted scenarios are judged against it
SENS-DROP-004  the tipping point (grid and bisection) equals :func:`hmlib.stats.dropout_delta.dropout_tipping_point`
               on the same completed sets with the same rule and analysis
SENS-DROP-005  the verdict and the narrative list the family: coverage, the tipping point in SDs and units, what
               delta means in plain words, a fragile tipping point makes the verdict "not robust"; the artifact's
               dropout_tipping round-trips and the methods text names the family
SENS-DROP-006  exclude-early-dropout leaves out exactly the patients whose last recorded outcome is before the
               median visit time and who dropped out (their number published, not their identifiers), re-imputes
               and re-analyses
SENS-DROP-007  nothing changes without ``time``: same plan, same scenarios, estimates, verdict and narrative
SENS-DROP-008  (slow) the fast report on params/cdystonia_time.yaml has the delta-dropout and early-dropout rows
               in estimates.csv, the tipping points in step 5's artifact and verdict, and the report's methods,
               checklist and step-5 table say so
SENS-DROP-009  worker processes (workers=2) give exactly the serial grid, curve and dropout tipping points
SENS-DROP-010  the figure of the delta after dropout: one panel per shifted variable with the tipping point
               marked, captioned, readable (fonts, width, ticks, no drawn title); absent without the family
SENS-DROP-011  the key messages state the nearest dropout tipping point (SD and units) per shifted variable, or
               that none lies within the grid; SENS-DROP-006 also checks that a small number of early dropouts
               left out is suppressed in the scenario table (the clusters are patients)
SENS-DROP-012  the growing form (params ``sensitivity: {dropout_delta_form: growing}``): the shift of each
               post-dropout cell is delta SDs per visit interval (the median gap between a patient's visits, 3
               months here) times the time since the last recorded visit, as the library's growing form with
               delta / interval per month; the tipping point equals the library's on the same sets; the
               settings record, narrative, methods text, figure, key message, checklist, the section's opening
               words and the tipping table's caption and headers say "per visit interval"; params
               checks (unknown form, growing without ``time``)
"""

from __future__ import annotations

import dataclasses
import os
import re
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.simulate.longitudinal import longitudinal_registry
from hmlib.exceptions import ParamsError
from hmlib.stats.dropout_delta import dropout_cells, dropout_tipping_point, shift_after_dropout, visit_interval
from hmlib.stats.pooling import analyse_imputations
from hmlib.steps.imputation import impute_registry
from hmlib.steps.sensitivity import SensitivityArtifact, methods_text, run_sensitivity
from hmlib.steps.sensitivity_dropout import (EARLY_SCENARIO, REFERENCE, dropout_variables, early_dropout_patients,
                                             plan_all, plan_dropout, recorded_sd, shifted_after_dropout)
from hmlib.steps.sensitivity_scenarios import SensitivitySettings, plan_scenarios
from hmlib.steps.sensitivity_verdict import FAMILY_TEXT, family_coverage

REPO = Path(__file__).resolve().parents[1]
GRID = (-1.0, -0.5, 0.5, 1.0)
FAST = dict(m=3, iterations=3)


def write_registry(folder: Path, frame, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "long.csv", index=False)
    spec = {"name": "dropout", "data": "long.csv", "cluster": "patient", "higher_levels": ["site"], "time": "month",
            "outcome": "y", "outcome_family": "gaussian", "predictors": ["x", "month"], "focus": "x",
            "random_slopes": ["month"], "seed": 3, "fast": True}
    spec.update(overrides)
    spec = {k: v for k, v in spec.items() if v is not None}
    (folder / "p.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_registry(load_params(folder / "p.yaml"))


@pytest.fixture(scope="module")
def frame():
    return longitudinal_registry(1, n_sites=10, n_patients=150, n_visits=6).drop(columns=["date"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory, frame):
    return write_registry(tmp_path_factory.mktemp("dropout"), frame)


@pytest.fixture(scope="module")
def primary(registry):
    return impute_registry(registry, method="multilevel", cluster_residual_variance=False, **FAST)


def settings(families=("delta-dropout", "early-dropout"), **kw):
    return SensitivitySettings(families=families, deltas_sd=GRID, bisection_steps=3, **FAST, **kw)


@pytest.fixture(scope="module")
def result(registry, primary):
    # a small relevant difference so that the outcome's shift reaches a tipping point within the grid
    return run_sensitivity(registry, settings(relevant_difference=0.015), workers=1, joint_fitter=None,
                           primary_imputation=primary, cluster_residual_variance=False)


def focus_of(rows, term="x"):
    row = rows.loc[rows["term"] == term].iloc[0]
    return float(row.estimate), float(row.ci_lower), float(row.ci_upper)


def test_sens_drop_001_planning(registry, frame, tmp_path):
    """SENS-DROP-001: the family only with time and post-dropout cells; names and references."""
    variables = dropout_variables(registry)
    assert list(variables) == ["y", "x"] and all(c.n_cells > 0 for c in variables.values())
    plan = plan_dropout(registry, settings())
    names = [sc.name for sc in plan]
    assert names[0] == REFERENCE and plan[0].reference == "primary"
    for variable in ("y", "x"):
        assert [n for n in names if n.startswith(f"delta-dropout:{variable}:")] == [
            f"delta-dropout:{variable}:{d:+g}sd" for d in GRID]
    assert all(sc.reference == REFERENCE for sc in plan if sc.family == "delta-dropout" and sc.name != REFERENCE)
    assert names[-1] == EARLY_SCENARIO and early_dropout_patients(registry)[0]
    assert "delta-dropout:y:+0.5sd" in names
    # default settings: appended after the other families, which are planned as before
    everything = plan_all(registry, SensitivitySettings())
    assert [sc.name for sc in everything][:len(plan_scenarios(registry, SensitivitySettings()))] == \
        [sc.name for sc in plan_scenarios(registry, SensitivitySettings())]
    # nothing missing after dropout: neither family, and a note
    filled = frame.copy()
    for variable in ("x", "y"):
        mask = dropout_cells(frame, variable, cluster="patient", time="month").mask
        filled.loc[mask, variable] = 0.0
    no_dropout = write_registry(tmp_path / "filled", filled)
    assert dropout_variables(no_dropout) == {} and plan_dropout(no_dropout, settings()) == []
    from hmlib.steps.sensitivity_dropout import dropout_plan_notes
    assert "did not run" in dropout_plan_notes(no_dropout, settings())[0]
    # no time: nothing
    no_time = write_registry(tmp_path / "no_time", frame, time=None, random_slopes=None)
    assert plan_dropout(no_time, settings()) == [] and dropout_variables(no_time) == {}


def test_sens_drop_002_shift_only_post_dropout(registry, primary):
    """SENS-DROP-002: exactly delta x SD on the post-dropout imputed cells, nothing else moves."""
    frame = registry.frame
    completed = list(primary.completed)
    for variable in ("y", "x"):
        shifted, units, cells = shifted_after_dropout(registry, primary, variable, -0.75)
        assert units == pytest.approx(-0.75 * float(frame[variable].dropna().std(ddof=1)))
        assert cells.n_cells > 0 and cells.n_intermittent_cells > 0
        imputed = primary.imputed_mask[variable].to_numpy()
        assert not (cells.mask & ~imputed).any()          # post-dropout cells are imputed cells
        library = shift_after_dropout(completed, frame, variable, units, cluster="patient", time="month")
        for before, after, lib in zip(completed, shifted.completed, library):
            diff = after[variable].to_numpy(dtype=float) - before[variable].to_numpy(dtype=float)
            assert np.allclose(diff[cells.mask], units)
            assert np.all(diff[~cells.mask] == 0)           # recorded and intermittent imputed values untouched
            np.testing.assert_array_equal(after[variable].to_numpy(dtype=float), lib[variable].to_numpy(dtype=float))
            other = "x" if variable == "y" else "y"
            np.testing.assert_array_equal(after[other].to_numpy(dtype=float), before[other].to_numpy(dtype=float))


def _kept_analysis(registry, completed, mask):
    p = registry.params
    pooled = analyse_imputations(SimpleNamespace(completed=completed, imputed_mask=mask, method="multilevel"),
                                 outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                 family=p.outcome_family, levels=registry.levels, delete_imputed_outcomes=False,
                                 higher_levels=p.higher_levels, random_slopes=p.random_slopes)
    return pooled.to_frame()


def test_sens_drop_003_reference_keeps_imputed_outcomes(registry, primary, result):
    """SENS-DROP-003: delta = 0 is the un-shifted analysis with imputed outcomes kept, not the primary."""
    ref = result.grid.loc[result.grid["scenario"] == REFERENCE]
    direct = _kept_analysis(registry, list(primary.completed), primary.imputed_mask)
    for term in ("x", "month", "sd(patient)", "sd(month|patient)"):
        assert focus_of(ref, term) == pytest.approx(focus_of(direct, term), abs=1e-10), term
    assert int(ref["n_patients"].iloc[0]) == len(registry.frame)                 # every row analysed
    assert result.n_patients_primary == int((~primary.imputed_mask["y"]).sum())  # the primary deletes them
    assert focus_of(ref) != pytest.approx(focus_of(result.primary), abs=1e-6)
    shifted = result.scenarios.loc[result.scenarios["family"] == "delta-dropout"]
    assert set(shifted.loc[shifted["scenario"] != REFERENCE, "reference"]) == {REFERENCE}
    # the reference itself is shown against the primary but not judged in the verdict's changes
    assert "delta-dropout" not in set(result.changed()["family"])


def test_sens_drop_004_tipping_point_matches_library(registry, primary, result):
    """SENS-DROP-004: the step's tipping point equals dropout_tipping_point on the same completed sets."""
    p = registry.params
    mask = primary.imputed_mask

    def analyse(frames):
        est, lo, hi = focus_of(_kept_analysis(registry, frames, mask))
        return {"estimate": est, "ci_lower": lo, "ci_upper": hi}

    library = dropout_tipping_point(list(primary.completed), registry.frame, variable="y", outcome="y",
                                    predictors=list(p.predictors), cluster="patient", time="month", focus="x",
                                    rule=result.rule.focus_rule(["x"]), deltas_sd=GRID, bisection_steps=3,
                                    analyse=analyse)
    step = result.dropout["y"]
    assert step["scale"] == pytest.approx(library.scale)
    assert any(library.tipping[side]["found"] for side in ("positive", "negative")), "the test needs a tipping point"
    for side in ("positive", "negative"):
        ours, theirs = step["tipping"][side], library.tipping[side]
        assert ours["found"] == theirs["found"], side
        if theirs["found"]:
            assert ours["delta_sd"] == pytest.approx(theirs["delta_sd"], abs=1e-12)
            assert ours["delta_units"] == pytest.approx(theirs["delta_units"], abs=1e-9)
            assert ours["bracket_sd"] == pytest.approx(theirs["bracket_sd"], abs=1e-12)
            assert ours["estimate"] == pytest.approx(theirs["estimate"], abs=1e-10)
            assert ours["change"] == theirs["change"]


def test_sens_drop_005_verdict_and_narrative(result, tmp_path):
    """SENS-DROP-005: coverage, verdict, narrative, artifact and methods name the family."""
    coverage = {c.family: c for c in family_coverage(result)}
    assert coverage["delta-dropout"].status == "ran" and coverage["delta-dropout"].checked_delta == 1.0
    assert coverage["early-dropout"].status == "ran"
    assert "delta-dropout" in FAMILY_TEXT and "early-dropout" in FAMILY_TEXT
    text = "\n".join(result.narrative())
    assert "MNAR after dropout (y shifted after each patient's last recorded visit)" in text
    assert "patients who left the study would have scored" in text and "than MAR predicts" in text
    assert "its own delta = 0 analysis, which keeps the rows with an imputed outcome" in text
    tip = min((t for t in result.dropout["y"]["tipping"].values() if t["found"]), key=lambda t: abs(t["delta_sd"]))
    assert f"{tip['delta_sd']:+.2f} SD" in text
    verdict = result.verdict()
    assert "MNAR after dropout (y shifted after each patient's last recorded visit)" in verdict   # stated, in any case
    if abs(tip["delta_sd"]) <= result.settings.plausible_delta_sd:
        assert verdict.startswith("not robust") and "the MAR assumption after dropout" in verdict
    else:
        assert not verdict.startswith("robust") or "nor a shift after dropout within" in verdict
    artifact = result.to_artifact()
    modes = {t.mode for t in artifact.dropout_tipping}
    assert modes == {"dropout:y", "dropout:x"}
    assert SensitivityArtifact.from_json(artifact.to_json()) == artifact
    methods = " ".join(methods_text(artifact, SimpleNamespace(noun="patient", min_cell=5, versions={})))
    assert "MNAR delta adjustment after dropout" in methods and "imputed outcome rows kept" in methods
    assert "early dropout" in methods
    rows = result.estimates
    assert {"sensitivity:delta-dropout:y:+0.5sd", "sensitivity:delta-dropout:x:-1sd",
            f"sensitivity:{REFERENCE}", f"sensitivity:{EARLY_SCENARIO}"} <= set(rows["method"])


def test_sens_drop_006_early_dropout(registry, result):
    """SENS-DROP-006: exactly the early dropouts left out, then re-imputed and re-analysed."""
    frame = registry.frame
    patients, cutoff = early_dropout_patients(registry)
    assert cutoff == frame["month"].median()
    last = frame.loc[frame["y"].notna()].groupby("patient")["month"].max()
    dropped = set(frame.loc[dropout_cells(frame, "y", cluster="patient", time="month").mask, "patient"])
    assert set(patients) == {c for c in dropped if last[c] < cutoff}
    row = result.scenarios.set_index("scenario").loc[EARLY_SCENARIO]
    assert row["status"] == "ok" and row["n_clusters_excluded"] == len(patients)
    assert list(row["excluded_clusters"]) == []          # their identifiers are not published
    assert row["n_patients_excluded"] == int(frame["patient"].isin(patients).sum())   # their rows (visits)
    grid = result.grid.loc[result.grid["scenario"] == EARLY_SCENARIO]
    assert int(grid["n_clusters"].iloc[0]) == registry.n_clusters - len(patients)
    assert focus_of(grid) != pytest.approx(focus_of(result.primary), abs=1e-8)
    # the clusters are patients: a small number of them left out is suppressed in what the report shows
    shown = result.scenario_table().set_index("scenario").loc[EARLY_SCENARIO, "n_clusters_excluded"]
    assert result.clusters_are_patients
    assert shown == (len(patients) if len(patients) >= result.min_cell else "suppressed"), shown


def test_sens_drop_007_nothing_changes_without_time(frame, tmp_path):
    """SENS-DROP-007: without time, asking for the dropout families changes nothing."""
    no_time = write_registry(tmp_path / "no_time", frame, time=None, random_slopes=None)
    assert [sc.name for sc in plan_all(no_time, SensitivitySettings())] == \
        [sc.name for sc in plan_scenarios(no_time, SensitivitySettings())]
    primary = impute_registry(no_time, method="multilevel", cluster_residual_variance=False, **FAST)
    runs = [run_sensitivity(no_time, settings(families), workers=1, joint_fitter=None, primary_imputation=primary,
                            cluster_residual_variance=False)
            for families in (("delta-global",), ("delta-global", "delta-dropout", "early-dropout"))]
    before, after = runs
    assert before.scenarios["scenario"].tolist() == after.scenarios["scenario"].tolist()
    assert before.estimates.equals(after.estimates)
    assert before.narrative() == after.narrative() and before.verdict() == after.verdict()
    assert [c.family for c in family_coverage(after)] == [c.family for c in family_coverage(before)]
    assert after.dropout == {} and after.dropout_tipping_table().empty
    assert recorded_sd(frame["y"]) > 0


def test_sens_drop_009_parallel_equals_serial(registry, primary, result):
    """SENS-DROP-009: the dropout tasks and bisections run in worker processes as they do here."""
    import pandas as pd

    parallel = run_sensitivity(registry, settings(relevant_difference=0.015), workers=2, joint_fitter=None,
                               primary_imputation=primary, cluster_residual_variance=False)
    assert parallel.workers == 2
    pd.testing.assert_frame_equal(parallel.grid, result.grid, check_exact=True)
    pd.testing.assert_frame_equal(parallel.delta_curve, result.delta_curve, check_exact=True)
    pd.testing.assert_frame_equal(parallel.dropout_tipping_table(), result.dropout_tipping_table(), check_exact=True)


def test_sens_drop_010_figure(result, frame, tmp_path):
    """SENS-DROP-010: the dropout tipping-point figure, and none without the family."""
    import io

    from hmlib.figures import style

    fig = result.figures()["dropout"][0]
    key, text = style.caption_of(fig)
    assert key == "dropout-tipping-point" and "after a patient's last recorded visit" in text
    fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    assert style.smallest_font(fig) >= style.MIN_FONT_PT
    assert fig.get_figwidth() <= style.MAX_WIDTH_IN + 1e-9 and style.overlapping_ticks(fig) == 0
    assert not (fig._suptitle and fig._suptitle.get_text())
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["MNAR after dropout: y", "MNAR after dropout: x"]
    tip = result.dropout["y"]["tipping"]
    found = [t["delta_sd"] for t in tip.values() if t["found"]]
    marked = [line.get_xdata()[0] for line in panels[0].get_lines() if line.get_linestyle() == "--"]
    assert marked == pytest.approx(found)
    no_time = write_registry(tmp_path / "no_time", frame, time=None, random_slopes=None)
    plain = run_sensitivity(no_time, settings(("delta-global",)), workers=1, joint_fitter=None)
    assert set(plain.figures()) == {"scenarios", "tipping"}


@pytest.mark.slow
def test_sens_drop_008_report_on_cdystonia(tmp_path, monkeypatch):
    """SENS-DROP-008: see the module docstring."""
    from hmlib.report.runner import run_report
    from hmlib.results import read_estimates

    # the notebooks' kernel imports the hmlib under test (a git worktree's, not an installed one)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    result = run_report(REPO / "params" / "cdystonia_time.yaml", fast=True, reports_root=tmp_path / "reports")
    assert result.status == "complete", result.message
    methods = set(read_estimates(result.output_dir / "estimates.csv")["method"])
    assert {f"sensitivity:delta-dropout:twstrs:{d:+g}sd" for d in (-1, -0.5, 0.5, 1)} <= methods
    assert f"sensitivity:{REFERENCE}" in methods and f"sensitivity:{EARLY_SCENARIO}" in methods
    artifact = SensitivityArtifact.read(result.output_dir)
    assert {t.mode for t in artifact.dropout_tipping} == {"dropout:twstrs"}
    assert any(f.family == "delta-dropout" and f.status == "ran" for f in artifact.families_run)
    assert "MNAR after dropout (twstrs" in " ".join(artifact.narrative)
    assert "MNAR after dropout (twstrs" in artifact.verdict
    text = " ".join(re.sub(r"<[^>]+>", " ", unescape(result.report.read_text())).split())
    assert "MNAR delta adjustment after dropout" in text                                         # methods
    assert "tipping point after dropout" in text.lower() and "Tipping points of the delta after dropout" in text
    # key messages: the dropout result in one sentence (no tipping point within the default +-1 SD here)
    assert ("After a patient's dropout: no shift of their unrecorded twstrs values up to 1 SD higher or lower than "
            "MAR implies changes the conclusion.") in text
    assert dataclasses.is_dataclass(artifact)


def test_sens_drop_011_key_message():
    """SENS-DROP-011: see the module docstring."""
    from types import SimpleNamespace

    from hmlib.report.key_messages import _dropout_message

    def tip(direction, found, delta_sd=None, units=None):
        return SimpleNamespace(mode="dropout:twstrs", direction=direction, found=found, delta_sd=delta_sd,
                               delta_units=units, grid_max_sd=1.0)

    found = {"sensitivity": SimpleNamespace(dropout_tipping=(tip("positive", True, 0.8, 10.2),
                                                             tip("negative", True, -0.4, -5.1)))}
    assert _dropout_message(found) == ["After a patient's dropout: the conclusion changes if their unrecorded twstrs "
                                       "values are 0.4 SD (5.1 twstrs units) lower than MAR implies."]
    none = {"sensitivity": SimpleNamespace(dropout_tipping=(tip("positive", False), tip("negative", False)))}
    assert "no shift of their unrecorded twstrs values up to 1 SD" in _dropout_message(none)[0]
    assert _dropout_message({"sensitivity": SimpleNamespace(dropout_tipping=())}) == []


def test_sens_drop_012_growing_form(registry, primary, frame, tmp_path):
    """SENS-DROP-012: see the module docstring."""
    from hmlib.figures import style
    from hmlib.report.key_messages import _dropout_message
    from hmlib.report.labels import DROPOUT_FORM_LABELS
    from hmlib.report.tables import prepare_table
    from hmlib.steps.sensitivity_dropout import dropout_introduction

    p = registry.params
    interval = visit_interval(frame, cluster="patient", time="month")
    assert interval == 3.0
    completed = list(primary.completed)
    shifted, units, cells = shifted_after_dropout(registry, primary, "y", -0.75, form="growing")
    library = shift_after_dropout(completed, frame, "y", units / interval, cluster="patient", time="month",
                                  form="growing")
    for before, after, lib in zip(completed, shifted.completed, library):
        diff = after["y"].to_numpy(dtype=float) - before["y"].to_numpy(dtype=float)
        np.testing.assert_allclose(diff[cells.mask], units * cells.time_since_last[cells.mask] / 3.0)
        assert np.all(diff[~cells.mask] == 0)
        assert len(set(np.round(diff[cells.mask], 9))) > 1          # it grows: not one shift for all
        np.testing.assert_allclose(after["y"].to_numpy(dtype=float), lib["y"].to_numpy(dtype=float), rtol=0,
                                   atol=1e-12)

    result = run_sensitivity(registry, settings(("delta-dropout",), relevant_difference=0.015,
                                                dropout_form="growing"),
                             workers=1, joint_fitter=None, primary_imputation=primary, cluster_residual_variance=False)
    info = result.dropout["y"]
    assert info["form"] == "growing" and info["interval"] == 3.0 and info["interval_words"] == "3 units of month"
    assert result.dropout_interval_words() == "3 units of month"
    mask = primary.imputed_mask

    def analyse(frames):
        est, lo, hi = focus_of(_kept_analysis(registry, frames, mask))
        return {"estimate": est, "ci_lower": lo, "ci_upper": hi}

    lib = dropout_tipping_point(completed, frame, variable="y", outcome="y", predictors=list(p.predictors),
                                cluster="patient", time="month", focus="x", rule=result.rule.focus_rule(["x"]),
                                deltas_sd=tuple(d / interval for d in GRID), bisection_steps=3, analyse=analyse,
                                form="growing")
    assert any(lib.tipping[side]["found"] for side in ("positive", "negative")), "the test needs a tipping point"
    for side in ("positive", "negative"):
        ours, theirs = info["tipping"][side], lib.tipping[side]
        assert ours["found"] == theirs["found"], side
        if theirs["found"]:
            assert ours["delta_sd"] == pytest.approx(theirs["delta_sd"] * interval, abs=1e-12)
            assert ours["estimate"] == pytest.approx(theirs["estimate"], abs=1e-10)
    text = "\n".join(result.narrative())
    assert "the shift growing with the time since it" in text and "SD per 3 units of month" in text
    assert "for every 3 units of month since their last recorded visit" in text
    artifact = result.to_artifact()
    assert artifact.settings.dropout_form == "growing"
    assert SensitivityArtifact.from_json(artifact.to_json()) == artifact
    methods = " ".join(methods_text(artifact, SimpleNamespace(noun="patient", min_cell=5, versions={})))
    assert "a shift growing with the time away" in methods and "the same at every later visit" not in methods
    assert "per visit interval since their last recorded visit" in _dropout_message({"sensitivity": artifact})[0]
    from hmlib.report.checklist import _after_dropout
    assert "SD per visit interval" in _after_dropout(artifact)
    assert result.dropout_tipping_caption().endswith("(shifts in SDs per visit interval of 3 units of month, and "
                                                     "in units per interval)")
    # the table's headers and the section's opening words say "per interval" too (the notebook passes these)
    header = prepare_table(result.dropout_tipping_table(), noun="patient",
                           labels=DROPOUT_FORM_LABELS[result.settings.dropout_form]).headers
    assert "Shift (SD per interval)" in header and "Shift (units per interval)" in header and "Shift (SD)" not in header
    assert "per visit interval" in dropout_introduction(result.settings.dropout_form)
    assert "the same at every later visit" not in dropout_introduction(result.settings.dropout_form)
    fig = result.figures()["dropout"][0]
    assert "for every 3 units of month since that visit" in style.caption_of(fig)[1]
    assert fig.axes[0].get_xlabel() == "delta (SDs of the recorded values per 3 units of month)"
    # the constant form (default) says nothing of the kind
    plain = run_sensitivity(registry, settings(("delta-dropout",)), workers=1, joint_fitter=None,
                            primary_imputation=primary, cluster_residual_variance=False)
    constant = methods_text(plain.to_artifact(), SimpleNamespace(noun="patient", min_cell=5, versions={}))
    assert "the same at every later visit" in " ".join(constant)
    assert plain.dropout_tipping_caption() == "Tipping points of the delta after dropout"
    assert plain.dropout_interval_words() is None
    header = prepare_table(plain.dropout_tipping_table(), noun="patient",
                           labels=DROPOUT_FORM_LABELS[plain.settings.dropout_form]).headers
    assert "Largest shift tried (SD)" in header and not any("per interval" in h for h in header)
    assert "the same at every later visit" in dropout_introduction(plain.settings.dropout_form)
    assert "per visit interval" not in _after_dropout(plain.to_artifact())

    # params: the form is read, checked, and needs time
    from hmlib.params import DROPOUT_DELTA_FORMS
    from hmlib.stats.dropout_delta import SHIFT_FORMS
    assert DROPOUT_DELTA_FORMS == SHIFT_FORMS        # params (kept free of hmlib.stats) lists the library's forms
    grown = write_registry(tmp_path / "grown", frame, sensitivity={"dropout_delta_form": "growing"})
    assert grown.params.sensitivity.dropout_delta_form == "growing"
    assert registry.params.sensitivity.dropout_delta_form == "constant"
    with pytest.raises(ParamsError, match=r"dropout_delta_form.*\['constant', 'growing'\].*'linear'"):
        write_registry(tmp_path / "bad", frame, sensitivity={"dropout_delta_form": "linear"})
    with pytest.raises(ParamsError, match="needs repeated measures: name the visit time column"):
        write_registry(tmp_path / "no_time_growing", frame, time=None, random_slopes=None,
                       sensitivity={"dropout_delta_form": "growing"})
    with pytest.raises(ParamsError, match="dropout_form must be one of"):
        SensitivitySettings(dropout_form="linear")
