"""The runner: step selection, failure handling, and the command line."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO
from hmlib.cli import main
from hmlib.exceptions import HmlibError, StepFailed
from hmlib.report.runner import resolve_steps, run_report
from hmlib.steps import STEPS


def test_run_001_step_selection(tmp_path):
    """RUN-001: --only names real steps; unknown and unbuilt steps are refused with the reason."""
    keys = [s.key for s in STEPS]
    assert keys == ["diagnose", "complete_case", "imputation", "joint_model", "sensitivity"]
    assert [s.key for s in resolve_steps("diagnose", tmp_path)] == ["diagnose"]
    with pytest.raises(HmlibError, match="unknown step 'diagnosis'"):
        resolve_steps("diagnosis", tmp_path)
    unbuilt = [s for s in STEPS if not (REPO / "notebooks" / s.notebook).is_file()]
    for step in unbuilt:
        with pytest.raises(HmlibError, match=f"not built yet .*{step.notebook} is absent"):
            resolve_steps(step.key, tmp_path)


def test_run_002_failed_step_leaves_previous_report(tmp_path, monkeypatch, write_case):
    """RUN-002: a failing notebook stops the run, is rendered with its error, and the old
    report.html is not overwritten; the error names notebook and cell."""
    fixtures = tmp_path / "nbs"
    shutil.copytree(REPO / "tests" / "fixtures" / "broken_notebooks", fixtures)
    monkeypatch.setenv("HMLIB_NOTEBOOKS", str(fixtures))
    params = write_case()
    out = tmp_path / "reports"
    (out / "case").mkdir(parents=True)
    (out / "case" / "report.html").write_text("PREVIOUS COMPLETE REPORT")
    with pytest.raises(StepFailed) as err:
        run_report(params, reports_root=out)
    message = str(err.value)
    assert "notebooks/01_diagnose.ipynb, cell [4]" in message
    assert "ValueError: deliberate failure in the fixture" in message
    assert (out / "case" / "report.html").read_text() == "PREVIOUS COMPLETE REPORT"
    failed = (out / "case" / "FAILED-diagnose.html").read_text()
    assert "deliberate failure in the fixture" in failed
    status = json.loads((out / "case" / "run-status.json").read_text())
    assert status["status"] == "failed" and status["failed_step"] == "diagnose"


def test_run_003_bad_input_fails_before_any_work(tmp_path, write_case):
    """RUN-003: a data error is raised before the output folder is created."""
    params = write_case(predictors=["agee"])
    out = tmp_path / "reports"
    with pytest.raises(HmlibError, match="column 'agee'"):
        run_report(params, reports_root=out)
    assert not out.exists()


def test_cli_001_validate_ok_and_errors(write_case, capsys):
    """CLI-001: `hmreport validate` prints a summary (exit 0) or one error line (exit 2)."""
    assert main(["validate", str(write_case())]) == 0
    out = capsys.readouterr().out
    assert "OK: 300 patients in 12 clusters" in out and "incomplete variables: lab" in out
    assert main(["validate", str(write_case(outcome_family="poisson"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hmreport: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_results_001_truth_columns():
    """RESULTS-001: with_truth adds the true value and whether each interval covers it (NA if unknown)."""
    import pandas as pd

    from hmlib.results import with_truth

    est = pd.DataFrame({"method": "m", "term": ["a", "b", "c"], "estimate": [1.0, 2.0, 3.0],
                        "std_error": 0.1, "ci_lower": [0.8, 1.8, 2.8], "ci_upper": [1.2, 2.2, 3.2],
                        "n_patients": 10, "n_clusters": 2})
    out = with_truth(est, {"a": 1.1, "b": 5.0})
    assert out["truth"].tolist()[:2] == [1.1, 5.0] and pd.isna(out["truth"].iloc[2])
    assert out["covers_truth"].tolist()[:2] == [True, False] and pd.isna(out["covers_truth"].iloc[2])
