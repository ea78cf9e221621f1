"""The notebooks as papermill and JupyterLab users run them (issue #13, "papermill and JupyterLab conventions").

NB-PARAM-001  every parameters cell declares params_path, output_dir and every params key (papermill sees
              them all); the setup cell hands the namespace to open_step; no other cell binds a parameter
NB-PARAM-002  a params file given as papermill parameters (what -f passes) is that params file: same data,
              same fingerprint as the file itself, nothing taken from the demo
NB-PARAM-003  single keys merge over params_path (default: the demo); mappings key by key; YAML text for
              lists; a new data file drops the file's truth; errors name the fix
NB-PARAM-004  an unknown parameter is an error naming the close match; the names are read from the cell
              papermill injects (its own translator's text)
NB-PARAM-005  relative paths resolve against the notebook's folder from the project root or notebooks/,
              an input found only in the working directory is read from there, a missing one names both
NB-STALE-001  a step run on its own over an assembled report marks it STALE (not without a report, not
              under hmreport run); --only reruns the marked step; `hmreport status` shows it
NB-STALE-002  hmreport run --only reruns a step run on its own and clears the mark (slow)
NB-PM-001     papermill CLI from the project root with -f params/x.yaml analyses x (slow)
NB-PM-002     papermill CLI from notebooks/ with -p params_path/-p seed/-p privacy runs the merged params (slow)
NB-PM-003     papermill CLI with an unknown -p fails, naming it and the close match, and writes nothing (slow)
NB-HTML-001   the rendered step HTML loads nothing from the network (offline template)
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import REPO
from hmlib.cli import main
from hmlib.data import load_registry
from hmlib.exceptions import ParamsError
from hmlib.params import KEYS, load_params, params_from_mapping
from hmlib.progress import CHANNEL_NAME
from hmlib.report.notebook import open_step
from hmlib.report.parameters import (check_parameter_names, injected_names, notebook_folder, parameter_names,
                                     parameters_cell_source, params_from_parameters, resolve_output_dir)
from hmlib.report.runner import resolve_steps
from hmlib.report.staleness import STALE_NAME, clear_stale_mark, report_state, steps_run_alone
from hmlib.simulate.registries import small_registry
from hmlib.steps import STEPS

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CASE = {"name": "case", "data": "../data/registry.csv", "cluster": "site", "outcome": "died",
        "outcome_family": "binomial", "predictors": ["age", "sex", "lab"], "seed": 3, "fast": True}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project layout: notebooks/ (copied), params/case.yaml, data/registry.csv and a demo-like
    params/demo.yaml (with a truth file); the working directory is its root."""
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "data").mkdir()
    small_registry().to_csv(tmp_path / "data" / "registry.csv", index=False)
    (tmp_path / "data" / "truth.json").write_text("{}")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "case.yaml").write_text(yaml.safe_dump(CASE, sort_keys=False))
    demo = {**CASE, "name": "demo", "truth": "../data/truth.json", "fast": False}
    (tmp_path / "params" / "demo.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_nb_param_001_every_notebook_declares_every_parameter():
    """NB-PARAM-001: the parameters cell is parameters_cell_source() (tools/sync_parameters_cells.py
    writes it) and papermill's own inspection finds every parameter in it, so valid keys raise no
    'Passed unknown parameter'; the setup cell passes globals() to open_step; no other cell assigns a
    parameter name (re-running a cell in JupyterLab would turn a loop variable into a parameter)."""
    from papermill import inspect_notebook

    assert parameter_names() == ["params_path", "output_dir", *KEYS]
    for path, step in zip(NOTEBOOKS, STEPS):
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0].source == parameters_cell_source(), path.name
        assert list(inspect_notebook(str(path))) == parameter_names(), path.name
        code = [c.source for c in nb.cells if c.cell_type == "code" and c is not tagged[0]]
        assert any(f'open_step("{step.key}", globals())' in source for source in code), path.name
        bound = {node.id for source in code for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
        assert not bound & set(parameter_names()), (path.name, bound & set(parameter_names()))


def test_nb_param_002_a_params_file_as_papermill_parameters_is_that_file(project):
    """NB-PARAM-002: the mapping papermill -f reads from params/case.yaml (yaml.safe_load) gives the same
    params as the file: data resolved from the notebook's folder, same fingerprint (so hmreport reuses
    the artifacts), no truth from the demo, output in reports/case/."""
    injected = yaml.safe_load((project / "params" / "case.yaml").read_text())
    values = {name: None for name in parameter_names()} | injected
    from_parameters = params_from_parameters(values, notebook="01_diagnose.ipynb")
    from_file = load_params(project / "params" / "case.yaml")
    assert from_parameters.data == from_file.data == (project / "data" / "registry.csv").resolve()
    assert from_parameters.fingerprint == from_file.fingerprint
    assert from_parameters.truth is None and from_parameters.name == "case"
    folder = notebook_folder("01_diagnose.ipynb")
    assert resolve_output_dir(None, from_parameters, folder) == (project / "reports" / "case").resolve()


def test_nb_param_003_single_keys_merge_over_the_params_file(project):
    """NB-PARAM-003: -p focus/seed merge over the demo (default params_path); privacy merges key by key;
    YAML text is read for list and mapping keys (joint_model, effect_units too); a new data file drops the demo's truth; a data file without
    params_path is a params set of its own and needs a name; a bad value names the parameters."""
    demo = load_params(project / "params" / "demo.yaml")
    merged = params_from_parameters({"focus": "age", "seed": 11}, notebook="01_diagnose.ipynb")
    assert merged.focus == "age" and merged.seed == 11 and merged.name == "demo"
    assert merged.truth == demo.truth and merged.fingerprint != demo.fingerprint
    expected = params_from_mapping({**demo.raw, "focus": "age", "seed": 11}, source=demo.source)
    assert merged.fingerprint == expected.fingerprint
    privacy = params_from_parameters({"privacy": "{min_cell: 5}", "predictors": "[age, lab]",
                                      "params_path": "../params/case.yaml"}, notebook="01_diagnose.ipynb")
    assert privacy.privacy.min_cell == 5 and privacy.privacy.pseudonymize_clusters is False
    assert privacy.predictors == ("age", "lab") and privacy.name == "case"
    budget = params_from_parameters({"joint_model": "{time_budget_minutes: 5}", "params_path": "../params/case.yaml",
                                     "effect_units": "{lab: {per: 10, unit: mg/dl}}"}, notebook="04_joint_model.ipynb")
    assert budget.joint_model.time_budget_minutes == 5.0 and budget.effect_units["lab"].per == 10
    moved = params_from_parameters({"data": "../data/registry.csv", "params_path": "../params/demo.yaml"},
                                   notebook="01_diagnose.ipynb")
    assert moved.truth is None and moved.name == "demo"
    with pytest.raises(ParamsError, match="no 'name'.*-p name"):
        params_from_parameters({k: v for k, v in CASE.items() if k != "name"}, notebook="01_diagnose.ipynb")
    with pytest.raises(ParamsError, match="parameters seed of 01_diagnose.ipynb: 'seed' must be"):
        params_from_parameters({"seed": "soon"}, notebook="01_diagnose.ipynb")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params_from_parameters({"predictors": "[age, "}, notebook="01_diagnose.ipynb")


def test_nb_param_004_unknown_parameters_are_errors():
    """NB-PARAM-004: injected_names reads the names from papermill's own injected cell (its translator,
    black-formatted when black is installed), the last one in the history; an unknown name is refused
    with the close match; known names pass; no papermill cell, no names."""
    from papermill.translators import translate_parameters

    cell = translate_parameters("python3", "python", {"foccus": "sbp", "seed": 7, "privacy": {"min_cell": 5}},
                                "Parameters")
    history = ["", parameters_cell_source(), "# Parameters\nold_name = 1\n", cell, "step = 1"]
    assert injected_names(history) == ["foccus", "seed", "privacy"]
    assert injected_names(["", "x = 1"]) == [] and injected_names(None) == []
    with pytest.raises(ParamsError, match="unknown parameter 'foccus' given to 01_diagnose.ipynb. Did you "
                                          "mean 'focus'?"):
        check_parameter_names(injected_names(history), "01_diagnose.ipynb")
    check_parameter_names(["params_path", "output_dir", *KEYS], "01_diagnose.ipynb")
    with pytest.raises(ParamsError, match="unknown parameter 'foccus'"):
        open_step("diagnose", {"_ih": history})


def test_nb_param_005_paths_from_the_root_or_the_notebooks_folder(project, monkeypatch):
    """NB-PARAM-005: from the project root and from notebooks/ the notebook's folder is the copy's
    notebooks/ and ../params/case.yaml is found; a path relative to the working directory only is read
    from there; a missing file names both places."""
    assert notebook_folder("01_diagnose.ipynb") == (project / "notebooks").resolve()
    from_root = params_from_parameters({"params_path": "../params/case.yaml"}, notebook="01_diagnose.ipynb")
    assert from_root.source == (project / "params" / "case.yaml").resolve()
    cwd_only = params_from_parameters({"params_path": "params/case.yaml"}, notebook="01_diagnose.ipynb")
    assert cwd_only.source == from_root.source
    monkeypatch.chdir(project / "notebooks")
    assert notebook_folder("01_diagnose.ipynb") == (project / "notebooks").resolve()
    assert params_from_parameters({"params_path": "../params/case.yaml"},
                                  notebook="01_diagnose.ipynb").source == from_root.source
    with pytest.raises(ParamsError, match="neither in the notebook's folder .* nor in the working directory"):
        params_from_parameters({"params_path": "nowhere.yaml"}, notebook="01_diagnose.ipynb")


def test_nb_stale_001_a_step_run_alone_marks_the_report_stale(project, capsys):
    """NB-STALE-001: run on its own (in-process, as in a kernel without hmreport) over a folder with a
    report.html, step 1 writes STALE naming itself and the rebuild command, and says so; without a
    report nothing is marked; with the progress channel (hmreport run's staging folder) nothing is
    marked; --only complete_case then reruns diagnose; hmreport status shows it; clearing removes it."""
    params = project / "params" / "case.yaml"
    fresh = project / "reports" / "fresh"
    open_step("diagnose", params, fresh).run()
    assert not (fresh / STALE_NAME).exists()
    staged = project / "reports" / "staged"
    staged.mkdir(parents=True)
    (staged / "report.html").write_text("REPORT")
    (staged / CHANNEL_NAME).write_text("")
    open_step("diagnose", params, staged).run()
    assert not (staged / STALE_NAME).exists()
    folder = project / "reports" / "case"
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("REPORT")
    capsys.readouterr()
    open_step("diagnose", params, folder).run()
    said = capsys.readouterr().out
    assert "no longer shows its results and is marked stale" in said and f"hmreport run {params}" in said
    assert steps_run_alone(folder) == ["diagnose"]
    text = (folder / STALE_NAME).read_text()
    assert text.startswith("report.html in this folder is STALE") and "01_diagnose.ipynb" in text
    assert [s.key for s in resolve_steps("complete_case", folder)] == ["diagnose", "complete_case"]
    assert "STALE: diagnose run on their own" in report_state(folder)
    assert main(["status", "--out", str(project / "reports")]) == 0
    assert "case: never run by hmreport; STALE: diagnose" in capsys.readouterr().out
    clear_stale_mark(folder)
    assert steps_run_alone(folder) == [] and "STALE" not in report_state(folder)


@pytest.mark.slow
def test_nb_stale_002_hmreport_reruns_the_step_and_clears_the_mark(project, capsys):
    """NB-STALE-002: after `hmreport run --only diagnose` and diagnose run on its own, `hmreport run
    --only complete_case` says diagnose runs again, runs both, and leaves no STALE behind."""
    params = project / "params" / "case.yaml"
    out = project / "reports"
    assert main(["run", str(params), "--only", "diagnose", "--out", str(out)]) == 0
    open_step("diagnose", params, out / "case").run()
    assert steps_run_alone(out / "case") == ["diagnose"]
    capsys.readouterr()
    assert main(["run", str(params), "--only", "complete_case", "--out", str(out)]) == 0
    said = capsys.readouterr().err
    assert "diagnose: run on its own since the last report (STALE); it runs again" in said
    assert "[1/2] diagnose: running" in said and "[2/2] complete_case: running" in said
    assert not (out / "case" / STALE_NAME).exists()
    assert report_state(out / "case").startswith("case: complete (")


def _papermill(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "papermill", *args, "--no-progress-bar"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_nb_pm_001_papermill_f_from_the_root_analyses_that_file(project):
    """NB-PM-001: `papermill notebooks/01_diagnose.ipynb out.ipynb -f params/case.yaml` from the project
    root (exit 0) writes reports/case/ from case's data, with case.yaml's own params fingerprint."""
    done = _papermill(["notebooks/01_diagnose.ipynb", "out.ipynb", "-f", "params/case.yaml"], project)
    assert done.returncode == 0, done.stderr[-2000:]
    envelope = json.loads((project / "reports" / "case" / "artifacts" / "diagnose.json").read_text())
    registry = load_registry(load_params(project / "params" / "case.yaml"))
    assert envelope["inputs"] == {"data_sha256": registry.data_sha256, "params_sha256": registry.params.fingerprint}
    assert not (project / "reports" / "demo").exists()


@pytest.mark.slow
def test_nb_pm_002_papermill_p_from_notebooks_merges_keys(project):
    """NB-PM-002: from notebooks/, `-p params_path ../params/case.yaml -p seed 11 -p privacy "{min_cell:
    5}"` runs case with seed 11 and min_cell 5 (the artifact's params fingerprint is the merged one)."""
    done = _papermill(["01_diagnose.ipynb", str(project / "out.ipynb"), "-p", "params_path", "../params/case.yaml",
                       "-p", "seed", "11", "-p", "privacy", "{min_cell: 5}"], project / "notebooks")
    assert done.returncode == 0, done.stderr[-2000:]
    envelope = json.loads((project / "reports" / "case" / "artifacts" / "diagnose.json").read_text())
    base = load_params(project / "params" / "case.yaml")
    merged = params_from_mapping({**base.raw, "seed": 11, "privacy": {"min_cell": 5}}, source=base.source)
    recorded = envelope["inputs"]["params_sha256"]
    assert recorded == load_registry(merged).params.fingerprint != load_registry(base).params.fingerprint


@pytest.mark.slow
def test_nb_pm_003_papermill_unknown_parameter_fails(project):
    """NB-PM-003: `-p foccus lab` stops the notebook at its setup cell (exit non-zero) with the error
    naming 'foccus' and 'focus'; no report folder is written."""
    done = _papermill(["notebooks/01_diagnose.ipynb", "out.ipynb", "-f", "params/case.yaml", "-p", "foccus", "lab"],
                      project)
    assert done.returncode != 0
    assert "unknown parameter 'foccus' given to 01_diagnose.ipynb. Did you mean 'focus'?" in done.stderr
    assert not (project / "reports").exists()


def test_nb_html_001_rendered_step_html_is_offline(tmp_path):
    """NB-HTML-001: a step notebook rendered by the report's exporter has no <script src>, no stylesheet
    link and no @import from the network (require.js, MathJax and mermaid loaders are left out)."""
    from hmlib.report.assemble import render_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## A step\n\n$x^2$ and text"),
                                         nbformat.v4.new_code_cell("1 + 1", outputs=[])])
    nbformat.write(nb, tmp_path / "step.ipynb")
    page = render_notebook(tmp_path / "step.ipynb", tmp_path / "01_step.html").read_text()
    assert "A step" in page
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", page)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", page)
    assert not re.search(r"@import\s+url\([\"']?(https?:)?//", page)
    assert "require.min.js" not in page and "MathJax.js" not in page and "mermaid" not in page.lower()
