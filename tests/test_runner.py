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


def _envelope(folder: Path, key: str, inputs: dict) -> None:
    """A stored artifact of step ``key`` made from ``inputs`` (its record is not read by these tests)."""
    path = folder / "artifacts" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": key, "version": 1, "inputs": inputs, "record": {}}))


def test_run_004_interrupted_run_leaves_the_folder_as_it_was(tmp_path, monkeypatch, write_case):
    """RUN-004: Ctrl-C during a step marks the run 'interrupted' with the steps done before it, leaves
    report.html, artifacts and estimates.csv as they were, and leaves no staging folder behind; while the run
    went, run-status.json said 'running' with each finished step's seconds."""
    from hmlib.report import runner

    params = write_case()
    out = tmp_path / "reports"
    folder = out / "case"
    (folder / "artifacts").mkdir(parents=True)
    (folder / "report.html").write_text("PREVIOUS COMPLETE REPORT")
    (folder / "estimates.csv").write_text("method,term\nold,row\n")
    calls, seen = [], []          # the steps run, and run-status.json as each started

    def fake_execute(step, staging, params, kernel_name):
        calls.append(step.key)
        seen.append(json.loads((folder / "run-status.json").read_text()))
        (staging / "estimates.csv").write_text("method,term\nnew,row\n")
        _envelope(staging, step.key, {"data_sha256": "new"})
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_execute", fake_execute)
    with pytest.raises(KeyboardInterrupt):
        run_report(params, reports_root=out)
    assert calls == ["diagnose", "complete_case"]
    assert (folder / "report.html").read_text() == "PREVIOUS COMPLETE REPORT"
    assert (folder / "estimates.csv").read_text() == "method,term\nold,row\n"
    assert not (folder / "artifacts" / "diagnose.json").exists()
    assert not list(folder.glob(".run-*"))
    status = json.loads((folder / "run-status.json").read_text())
    assert status["status"] == "interrupted" and list(status["steps"]) == ["diagnose"]
    # while it ran, the status said so, with the steps done so far (read by bench/bench_scale.py)
    assert [(s["status"], list(s["steps"])) for s in seen] == [("running", []), ("running", ["diagnose"])]


def test_run_005_results_of_other_inputs_are_rerun_or_left_out(tmp_path, write_case):
    """RUN-005: an artifact made from another data file or other params is stale: a step that needs it
    reruns it; one that does not leaves it out of the report."""
    from hmlib.report.runner import stale_steps

    params = write_case()
    from hmlib.data import load_registry
    from hmlib.params import load_params

    reg = load_registry(load_params(params))
    now = {"data_sha256": reg.data_sha256, "params_sha256": reg.params.fingerprint}
    old = {**now, "data_sha256": "0" * 64}
    _envelope(tmp_path, "diagnose", old)
    _envelope(tmp_path, "complete_case", now)
    assert [s.key for s in stale_steps(tmp_path, now)] == ["diagnose"]
    # imputation needs diagnose: the stale diagnose is rerun first
    assert [s.key for s in resolve_steps("imputation", tmp_path, now)] == ["diagnose", "imputation"]
    assert [s.key for s in resolve_steps("complete_case", tmp_path, now)] == ["complete_case"]
    # other params (here the seed) give another fingerprint
    assert load_params(params).fingerprint != load_params(write_case(seed=4)).fingerprint


def test_run_006_output_and_selection_problems_are_one_line(tmp_path, write_case, capsys):
    """RUN-006: `--only ,`, an --out that is a file, an unwritable folder and two params files with one name
    each get one clear line (exit 2), before any work."""
    params = write_case()
    assert main(["run", str(params), "--only", ",", "--out", str(tmp_path / "r")]) == 2
    assert "--only names no step" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["run", str(params), "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    twin = tmp_path / "twin.yaml"
    twin.write_text(params.read_text())
    assert main(["run", str(params), str(twin), "--out", str(tmp_path / "r")]) == 2
    assert "both have name: case" in capsys.readouterr().err
    assert not (tmp_path / "r" / "case" / "artifacts").exists()


def test_run_007_several_params_files_side_by_side_on_one_cluster(tmp_path, monkeypatch, write_case, capsys):
    """RUN-007: two params files run side by side (overlapping in time, their terminal lines prefixed with the
    report's name), their steps see the run's one Dask cluster as $HMLIB_SCHEDULER (restored afterwards), the
    index is written; when one fails the other still completes and the failure is raised naming it."""
    import os
    import threading
    import time
    from pathlib import Path

    from hmlib.parallel import SCHEDULER_ENV, local_cores
    from hmlib.report import runner

    first = write_case(name="alpha")
    second = tmp_path / "beta.yaml"
    second.write_text(first.read_text().replace("name: alpha", "name: beta"))
    seen = {}

    def fake_run_report(path, *, registry, reports_root, **kwargs):
        name = registry.params.name
        start = time.monotonic()
        runner._say("[1/1] imputation: running 03_imputation.ipynb ...")
        time.sleep(1.0)
        seen[name] = (start, time.monotonic(), os.environ.get(SCHEDULER_ENV), threading.current_thread().name)
        if kwargs.get("show_code") and name == "alpha":
            raise StepFailed("step 'imputation' failed (deliberately, in this test)")
        return runner.RunResult(name, Path(reports_root) / name, None, "complete")

    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    monkeypatch.setattr(runner, "run_report", fake_run_report)
    out = tmp_path / "reports"
    results = runner.run_many([first, second], only="imputation", reports_root=out)
    assert [r.name for r in results] == ["alpha", "beta"] and (out / "index.html").is_file()
    (a0, a1, a_env, a_thread), (b0, b1, b_env, b_thread) = seen["alpha"], seen["beta"]
    if local_cores() > 1:
        assert a0 < b1 and b0 < a1 and a_thread != b_thread            # side by side
        assert a_env and a_env == b_env and a_env.startswith("tcp://127.0.0.1:")
    assert os.environ.get(SCHEDULER_ENV) is None
    err = capsys.readouterr().err
    assert "[alpha] [1/1] imputation: running" in err and "[beta] [1/1] imputation: running" in err
    with pytest.raises(StepFailed, match="deliberately") as failure:
        runner.run_many([first, second], only="diagnose", reports_root=out, show_code=True)
    assert "Reports completed: beta." in failure.value.__notes__
