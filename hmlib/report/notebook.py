"""The one line a step notebook needs: checked parameters and inputs, and its step, ready to run.

Every step notebook starts with its papermill ``parameters`` cell
(:func:`hmlib.report.parameters.parameters_cell_source`), then::

    from hmlib.report import display as show
    from hmlib.report.notebook import open_step

    step = open_step("diagnose", globals())
    result = step.run()

:func:`open_step` reads the notebook's parameters from its namespace,
refuses a parameter papermill injected that the notebooks do not have, puts
the params together (:mod:`hmlib.report.parameters`: ``-f params/x.yaml``,
``-p key value``, paths from the repository root or ``notebooks/``), checks
them and the data (every check, before any work) and silences library
deprecation chatter. :meth:`NotebookStep.run` runs the step, which writes
its own artifact and estimates, and shows its progress: to ``hmreport run``
through the staging folder's progress channel, otherwise as a line under the
cell (:mod:`hmlib.progress`). A step run on its own marks the folder's
assembled report stale (:mod:`hmlib.report.staleness`). The rest of the
notebook shows ``result``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hmlib.data import load_registry
from hmlib.progress import CHANNEL_NAME, FileSink, NotebookSink, TerminalPrinter, listening
from hmlib.report.parameters import (check_parameter_names, injected_names, notebook_folder,
                                     params_from_parameters, resolve_output_dir)
from hmlib.report.staleness import mark_report_stale
from hmlib.steps import get_step
from hmlib.steps.base import Step, StepContext, quiet_library_warnings

__all__ = ["NotebookStep", "open_step"]


@dataclass
class NotebookStep:
    """A step bound to its inputs.

    Attributes
    ----------
    step : hmlib.steps.base.Step
    ctx : hmlib.steps.base.StepContext
    """

    step: Step
    ctx: StepContext

    @property
    def params(self):
        """The params as run."""
        return self.ctx.params

    @property
    def run_by_hmreport(self) -> bool:
        """Whether ``hmreport run`` executes this notebook (its staging folder holds the progress channel)."""
        return (self.ctx.output_dir / CHANNEL_NAME).is_file()

    def run(self):
        """Run the step (it writes its own outputs), showing its progress; return its result.

        Run on its own (not by ``hmreport run``), the step marks the report
        folder's ``report.html`` stale and says so.
        """
        by_runner = self.run_by_hmreport
        sink = FileSink(self.ctx.output_dir / CHANNEL_NAME) if by_runner else _interactive_sink()
        with listening(sink):
            result = self.step.run(self.ctx)
        if not by_runner:
            notice = mark_report_stale(self.ctx.output_dir, self.step, self.params.source)
            if notice:
                print(notice)
        return result


def _interactive_sink():
    """A line under the running cell in a notebook kernel; a live line on stderr elsewhere."""
    shell = sys.modules.get("IPython")
    shell = shell.get_ipython() if shell is not None else None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return NotebookSink()
    return TerminalPrinter(sys.stderr)


def open_step(key: str, parameters: Mapping | str | Path | None = None, output_dir: str | Path | None = None,
              fast: bool | None = None) -> NotebookStep:
    """Check the parameters and the inputs and bind step ``key`` to them.

    Parameters
    ----------
    key : str
        Step key (``"diagnose"``, ...).
    parameters : mapping, str or pathlib.Path, optional
        The notebook's namespace (``globals()``): its parameters cell's names
        (:func:`hmlib.report.parameters.parameter_names`) are read from it, and
        the names papermill injected are checked. A path is taken as
        ``params_path`` (then ``output_dir`` and ``fast`` as given here).
    output_dir : str or pathlib.Path, optional
        With a path as ``parameters``: the report folder.
    fast : bool, optional
        With a path as ``parameters``: overrides the params file's ``fast``.

    Raises
    ------
    hmlib.exceptions.ParamsError
        An unknown parameter, a params file or data file not found, or a bad value.
    hmlib.exceptions.DataError
        The data do not fit the params.
    """
    step = get_step(key)
    if isinstance(parameters, Mapping):
        values = parameters
        check_parameter_names(injected_names(values.get("_ih")), step.notebook)
    else:
        values = {"params_path": parameters, "output_dir": output_dir, "fast": fast}
    quiet_library_warnings()
    folder = notebook_folder(step.notebook)
    params = params_from_parameters(values, notebook=step.notebook, folder=folder)
    registry = load_registry(params)
    return NotebookStep(step, StepContext(registry, resolve_output_dir(values.get("output_dir"), params, folder)))
