"""The one line a step notebook needs: checked inputs and its step, ready to run.

Every step notebook starts with its papermill ``parameters`` cell, then::

    from hmlib.report import display as show
    from hmlib.report.notebook import open_step

    step = open_step("diagnose", params_path, output_dir, fast)
    result = step.run()

:func:`open_step` checks the params and the data (every check, before any
work) and silences library deprecation chatter; :meth:`NotebookStep.run` runs
the step, which writes its own artifact and estimates. The rest of the
notebook shows ``result``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hmlib.report.display import set_context
from hmlib.steps import get_step
from hmlib.steps.base import Step, StepContext, quiet_library_warnings
from hmlib.wording import cluster_noun

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

    def run(self):
        """Run the step (it writes its own outputs) and return its result."""
        return self.step.run(self.ctx)


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
    ctx = StepContext.open(params_path, output_dir, fast=fast)
    set_context(noun=cluster_noun(ctx.params.cluster))
    return NotebookStep(get_step(key), ctx)
