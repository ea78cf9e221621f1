"""The notebooks as a user opens them in JupyterLab: stored clean, and runnable top to bottom as they are.

NB-CLEAN-001    every notebook is stored without outputs or execution counts, with one tagged parameters cell
NB-DEFAULT-001  every notebook runs top to bottom in a kernel with its default parameters (the full-settings
                demo), executed by nbclient without papermill, in order, from the notebooks folder of a
                project copy; each writes its artifact, and the joint model passes its convergence gate
"""

from __future__ import annotations

import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from hmlib.report.parameters import parameters_cell_source
from hmlib.simulate.demo import write_demo
from hmlib.steps import STEPS, get_step

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_nb_clean_001_stored_without_outputs():
    """NB-CLEAN-001: one notebook per step of the registry; no outputs, no execution counts; exactly one cell tagged 'parameters'
    and it sets the defaults that run the demo in JupyterLab (params_path None: ../params/demo.yaml; every key None)."""
    assert [nb.name for nb in NOTEBOOKS] == [s.notebook for s in STEPS]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), path.name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert tagged[0].source == parameters_cell_source()
        assert "params_path = None" in tagged[0].source and "fast = None" in tagged[0].source


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
    for step in STEPS:
        path = project / "notebooks" / step.notebook
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=900, kernel_name="python3",
                                resources={"metadata": {"path": str(project / "notebooks")}})
        client.execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, path.name
        assert step.read_artifact(out) is not None, f"{path.name} wrote no artifact"
    joint = get_step("joint_model").read_artifact(out)
    assert joint.converged is True, joint.convergence_message
    sensitivity = get_step("sensitivity").read_artifact(out)
    priors = [s for s in sensitivity.scenarios if s.family == "prior"]
    assert len(priors) == 4 and all(s.status == "ok" for s in priors)
    for path in sorted((project / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
