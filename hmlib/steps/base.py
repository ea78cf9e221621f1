"""The step contract: what a step is, what it is given, what it returns and writes.

A step of the report is defined once, by a :class:`Step` in its module
(``hmlib/steps/<key>.py``) and one line in :data:`hmlib.steps.STEPS`. The
runner, the command line, the report's summary and the tests read that
registry; nothing else lists the steps.

Every step has the same shape:

- ``run(ctx: StepContext) -> StepResult``: computes the step on the checked
  inputs of ``ctx`` and writes its own outputs (:meth:`StepContext.write`:
  its typed artifact and its rows of ``estimates.csv``), so that its notebook
  only calls it and shows the result;
- the result follows :class:`StepResult`: ``estimates`` (rows of the
  estimates contract), ``narrative()`` (generated sentences),
  ``to_artifact()`` (the typed record, :mod:`hmlib.artifacts`) and
  ``figures()`` (named figures, in reading order).

Adding a step: write ``hmlib/steps/<key>.py`` with its artifact class, its
result class and ``STEP = Step(...)``; write ``notebooks/NN_<key>.ipynb``
(parameters cell, ``open_step("<key>", ...)``, sections showing the result);
add ``<key>.STEP`` to :data:`hmlib.steps.STEPS`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from hmlib.artifacts import Artifact, artifact_path
from hmlib.data import Registry, load_registry
from hmlib.methods import base_method
from hmlib.params import load_params
from hmlib.results import (atomic_write_text, load_complete_data_terms, load_truth, read_estimates,
                           update_estimates)
from hmlib.settings import RunSizes, run_sizes

__all__ = ["Step", "StepContext", "StepResult", "notebook_dir"]


def notebook_dir() -> Path:
    """Folder of the step notebooks (``$HMLIB_NOTEBOOKS`` or the repository's ``notebooks/``)."""
    env = os.environ.get("HMLIB_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "notebooks"


@runtime_checkable
class StepResult(Protocol):
    """What every step's ``run`` returns.

    Attributes
    ----------
    estimates : pandas.DataFrame
        The step's rows of ``estimates.csv`` (contract columns; may be empty).
    """

    estimates: pd.DataFrame

    def narrative(self) -> list[str]:
        """The step's findings as generated sentences (plain text)."""

    def to_artifact(self) -> Artifact:
        """The typed, aggregated record later steps and the report read."""

    def figures(self) -> dict:
        """The step's figures by name, in reading order (``{name: Figure}``)."""


@dataclass(frozen=True)
class Step:
    """One step of the report, defined once.

    Attributes
    ----------
    key : str
        Name used by ``--only``, for ``artifacts/<key>.json`` and for the module.
    number : int
        Position in the report.
    title : str
        Section title.
    notebook : str
        File name in ``notebooks/``.
    artifact : type of Artifact
        The step's typed record.
    run : callable
        ``run(ctx) -> StepResult``; writes the step's outputs.
    needs : tuple of str
        Keys of steps whose artifacts this step reads.
    methods : tuple of str
        Methods of ``estimates.csv`` this step owns: a run replaces all of
        their rows (a method that failed this time keeps no stale row).
    summary_name : str
        How the report names the step when it is absent (``"step 1 (diagnose)"``).
    extra_files : tuple of str
        Further files the step writes into ``artifacts/`` (removed with its artifact).
    methods_text : callable
        ``methods_text(record, ev) -> list of str``: the step's paragraph(s) of the report's methods
        section, written from its artifact (``ev``: :class:`hmlib.report.evidence.ReportEvidence`).
    absent_methods_text : str
        The methods section's sentence when the step's artifact is absent.
    uses_workers : bool
        The step hands tasks to :mod:`hmlib.parallel` (the runner then
        provides a Dask cluster for the run).
    """

    key: str
    number: int
    title: str
    notebook: str
    artifact: type
    run: Callable
    needs: tuple = ()
    methods: tuple = ()
    summary_name: str = ""
    extra_files: tuple = ()
    methods_text: Callable | None = None
    absent_methods_text: str = ""
    uses_workers: bool = False

    @property
    def anchor(self) -> str:
        """HTML anchor of the step's section in the report."""
        return f"step-{self.number}-{self.key.replace('_', '-')}"

    @property
    def rendered_name(self) -> str:
        """File name of the step's rendered HTML (``01_diagnose.html``)."""
        return f"{self.number:02d}_{self.key}.html"

    @property
    def notebook_path(self) -> Path:
        """The step's notebook in :func:`notebook_dir`."""
        return notebook_dir() / self.notebook

    @property
    def is_built(self) -> bool:
        """A step is built when its notebook exists (the report says "not built yet" otherwise)."""
        return self.notebook_path.is_file()

    def artifact_path(self, output_dir: str | Path) -> Path:
        """``<output_dir>/artifacts/<key>.json``."""
        return artifact_path(output_dir, self.key)

    def read_artifact(self, output_dir: str | Path):
        """The step's typed record in ``output_dir``, or ``None`` when it has not run."""
        return self.artifact.read(output_dir)


@dataclass
class StepContext:
    """What a step is given: the checked inputs, the output folder and the run sizes.

    Attributes
    ----------
    registry : hmlib.data.Registry
        The checked inputs (params with the focus resolved, analysis frame).
    output_dir : pathlib.Path
        ``reports/<name>/``.
    sizes : hmlib.settings.RunSizes
        Imputations, iterations and sampler sizes for this run (fast or full).
    """

    registry: Registry
    output_dir: Path
    sizes: RunSizes = field(default=None)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.sizes is None:
            self.sizes = run_sizes(bool(self.registry.params.fast))

    @classmethod
    def open(cls, params_path: str | Path, output_dir: str | Path, fast: bool | None = None) -> "StepContext":
        """Check the params and the data (every check, before any work) and make a context.

        Parameters
        ----------
        params_path : str or pathlib.Path
        output_dir : str or pathlib.Path
        fast : bool, optional
            Overrides the params file's ``fast``.
        """
        return cls(load_registry(load_params(params_path, fast=fast)), Path(output_dir))

    @property
    def params(self):
        """The params as run (:class:`hmlib.params.Params`)."""
        return self.registry.params

    @property
    def estimates_path(self) -> Path:
        """``estimates.csv`` of this report."""
        return self.output_dir / "estimates.csv"

    @cached_property
    def truth(self) -> dict:
        """True values by term (simulated data), or ``{}``."""
        return load_truth(self.params.truth)

    @cached_property
    def complete_data(self) -> dict:
        """The analysis model on the simulated registry before values went missing, or ``{}``."""
        return load_complete_data_terms(self.params.truth)

    @property
    def inputs(self) -> dict:
        """What this run's results are made from: the data file's and the params' SHA-256."""
        return {"data_sha256": self.registry.data_sha256, "params_sha256": self.params.fingerprint}

    def read(self, artifact: type):
        """The typed record of an earlier step (``ctx.read(DiagnoseArtifact)``), or ``None``."""
        return artifact.read(self.output_dir)

    def write(self, step: Step, result) -> pd.DataFrame:
        """Write a step's outputs: its artifact and its rows of ``estimates.csv``.

        All earlier rows of the step's methods (``step.methods``, flagged
        variants included) are replaced by ``result.estimates``; other steps'
        rows are kept. Returns the full estimates table as written.
        """
        result.to_artifact().write(self.output_dir, inputs=self.inputs)
        rows = result.estimates
        foreign = sorted({m for m in rows["method"] if base_method(m) not in step.methods})
        if foreign:
            raise ValueError(f"step '{step.key}' wrote rows of methods it does not own: {foreign}")
        current = read_estimates(self.estimates_path)
        stale = current["method"].map(base_method).isin(step.methods)
        if stale.any() or not self.estimates_path.is_file():
            atomic_write_text(self.estimates_path, current.loc[~stale].to_csv(index=False))
        if not len(rows):
            return read_estimates(self.estimates_path)
        return update_estimates(self.estimates_path, rows)


def quiet_library_warnings() -> None:
    """Keep library deprecation chatter (pandas, arviz) out of notebook output."""
    warnings.filterwarnings("ignore", category=FutureWarning)
