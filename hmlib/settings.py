"""One table of the run sizes that ``fast`` changes.

``fast: true`` in a params file (or ``hmreport run --fast``) gives small
settings for tests and quick looks, never for reporting. Every step reads its
sizes from :func:`run_sizes`; no other module holds a fast/full number.

Examples
--------
>>> run_sizes(fast=False).imputations
20
>>> run_sizes(fast=True).joint_missing_values
'latent'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunSizes", "FULL", "FAST", "run_sizes"]


@dataclass(frozen=True)
class RunSizes:
    """The sizes of one run.

    Attributes
    ----------
    imputations : int
        Imputed data sets per imputation method (steps 3 and 5).
    iterations : int
        Chained-equations iterations per imputation.
    transport_imputations, transport_iterations : int
        The same for the transport check of step 3. In fast mode it keeps
        10 imputations, not 5: its per-cluster coverage is computed from the
        draws of each masked cluster and is too coarse with fewer.
    joint_draws, joint_tune, joint_chains : int
        Posterior draws and tuning steps per chain, and chains, of the joint
        model (step 4).
    joint_missing_values : {"marginal", "latent"}
        How the joint model treats missing predictor values: integrated out
        (full runs) or sampled as latent parameters (a quicker build for fast
        runs, whose short chains may then miss the convergence gate).
    scenario_iterations : int
        Chained-equations iterations of a sensitivity scenario that
        re-imputes (step 5: exclusion, leave-out, stratified): its chains
        start from the primary imputation's completed data sets, so a few
        iterations replace the ``iterations`` of a cold start
        (``bench/sensitivity_warm_start.py`` measures warm against cold).
    joint_time_budget_minutes : float
        Wall time the joint model may take in all when its first run misses
        the convergence gate and is extended automatically
        (:mod:`hmlib.stats.joint.fit`); 0 never extends (fast runs: quick
        looks accept a flagged fit). The params' ``joint_model:
        {time_budget_minutes: ...}`` overrides it.
    """

    imputations: int
    iterations: int
    transport_imputations: int
    transport_iterations: int
    joint_draws: int
    joint_tune: int
    joint_chains: int
    joint_missing_values: str
    scenario_iterations: int
    joint_time_budget_minutes: float


FULL = RunSizes(imputations=20, iterations=10, transport_imputations=20, transport_iterations=10,
                joint_draws=1000, joint_tune=1000, joint_chains=2, joint_missing_values="marginal",
                scenario_iterations=3, joint_time_budget_minutes=20.0)
FAST = RunSizes(imputations=5, iterations=5, transport_imputations=10, transport_iterations=5,
                joint_draws=500, joint_tune=500, joint_chains=2, joint_missing_values="latent",
                scenario_iterations=2, joint_time_budget_minutes=0.0)


def run_sizes(fast: bool) -> RunSizes:
    """The sizes for a fast (``True``) or full (``False``) run."""
    return FAST if fast else FULL
