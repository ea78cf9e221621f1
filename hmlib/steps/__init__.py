"""The steps of the report: one module each, listed once in :data:`STEPS`.

Each module ``hmlib.steps.<key>`` defines its typed artifact, its result and
``STEP`` (:class:`hmlib.steps.base.Step`); see :mod:`hmlib.steps.base` for
the contract and for how to add a step.
"""

from __future__ import annotations

from hmlib.exceptions import HmlibError
from hmlib.steps import complete_case, diagnose, imputation, joint_model, sensitivity
from hmlib.steps.base import Step, StepContext, StepResult

__all__ = ["STEPS", "get_step", "step_keys", "Step", "StepContext", "StepResult"]

#: The report's steps, in order. Adding a step adds one line here.
STEPS: tuple[Step, ...] = (
    diagnose.STEP,
    complete_case.STEP,
    imputation.STEP,
    joint_model.STEP,
    sensitivity.STEP,
)


def step_keys() -> list[str]:
    """The keys of the steps, in order."""
    return [s.key for s in STEPS]


def get_step(key: str) -> Step:
    """The step with this key; HmlibError listing the keys otherwise."""
    for step in STEPS:
        if step.key == key:
            return step
    raise HmlibError(f"unknown step '{key}'; steps are: {', '.join(step_keys())}.")
