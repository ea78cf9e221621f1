"""The notebooks as a user opens them in JupyterLab: stored clean, and runnable top to bottom as they are.

NB-CLEAN-001    every notebook is stored without outputs or execution counts, with one tagged parameters cell
NB-DEFAULT-001  every notebook runs top to bottom in a kernel with its default parameters (the full-settings
                demo), executed by nbclient without papermill, in order, from the notebooks folder of a
                project copy; each writes its artifact, and the joint model passes its convergence gate
"""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from hmlib.demo import write_demo

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACT = {"01": "diagnose", "02": "complete_case", "03": "imputation", "04": "joint_model", "05": "sensitivity"}


def test_nb_clean_001_stored_without_outputs():
    """NB-CLEAN-001: five notebooks; no outputs, no execution counts; exactly one cell tagged 'parameters'
    and it sets the demo defaults (so that JupyterLab runs the demo)."""
    assert [nb.name[:2] for nb in NOTEBOOKS] == list(ARTIFACT)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), path.name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert 'params_path = "../params/demo.yaml"' in tagged[0].source and "fast = False" in tagged[0].source


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project layout: notebooks/, params/demo.yaml and data/demo/ (the demo, as `make report`)."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    write_demo(root)
    return root


def test_nb_default_001_every_notebook_runs_with_its_defaults(project):
    """NB-DEFAULT-001: nbclient (no papermill, no injected parameters) runs 01..05 as stored; no cell errors
    (nbclient raises on the first); each notebook writes its artifact into the default output folder; the
    stored copies stay without outputs; the full-settings joint model passes the gate."""
    out = project / "reports" / "demo"
    for path in sorted((project / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": str(project / "notebooks")}})
        client.execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, path.name
        artifact = out / "artifacts" / f"{ARTIFACT[path.name[:2]]}.json"
        assert artifact.is_file(), f"{path.name} wrote no {artifact.name}"
    joint = json.loads((out / "artifacts" / "joint_model.json").read_text())
    assert joint["converged"] is True, joint.get("convergence_message")
    sensitivity = json.loads((out / "artifacts" / "sensitivity.json").read_text())
    priors = [s for s in sensitivity["scenarios"] if s["family"] == "prior"]
    assert len(priors) == 4 and all(s["status"] == "ok" for s in priors)
    for path in sorted((project / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
