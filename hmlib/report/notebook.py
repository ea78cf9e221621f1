"""The one line a step notebook needs: checked inputs and its step, ready to run.

Every step notebook starts with its papermill ``parameters`` cell, then::

    from hmlib.report import display as show
    from hmlib.report.notebook import open_step

    step = open_step("diagnose", params_path, output_dir, fast)
    result = step.run()

:func:`open_step` checks the params and the data (every check, before any
work) and silences library deprecation chatter; :meth:`NotebookStep.run` runs
the step, which writes its own artifact and estimates, and shows its
progress: to ``hmreport run`` through the staging folder's progress channel,
otherwise as a line under the cell (:mod:`hmlib.progress`). The rest of the
notebook shows ``result``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hmlib.progress import CHANNEL_NAME, FileSink, NotebookSink, TerminalPrinter, listening

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
        """Run the step (it writes its own outputs), showing its progress; return its result."""
        sink = FileSink(self.ctx.output_dir / CHANNEL_NAME) if self.run_by_hmreport else _interactive_sink()
        with listening(sink):
            return self.step.run(self.ctx)


def _interactive_sink():
    """A line under the running cell in a notebook kernel; a live line on stderr elsewhere."""
    shell = sys.modules.get("IPython")
    shell = shell.get_ipython() if shell is not None else None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return NotebookSink()
    return TerminalPrinter(sys.stderr)


def open_step(key: str, params_path: str | Path, output_dir: str | Path, fast: bool | None = None) -> NotebookStep:
    """Check the inputs and bind step ``key`` to them.

    Parameters
    ----------
    key : str
        Step key (``"diagnose"``, ...).
    params_path, output_dir : str or pathlib.Path
        The notebook's parameters.
    fast : bool, optional
        Overrides the params file's ``fast``.
    """
    quiet_library_warnings()
    return NotebookStep(get_step(key), StepContext.open(params_path, output_dir, fast=fast))
