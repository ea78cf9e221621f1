"""Step 4, the joint Bayesian model of the data and the missingness.

The model, its fit and its summaries are in :mod:`hmlib.stats.joint_model`;
this module fits it with the run's sizes, writes the step's artifact (small
cells suppressed), its estimates and the posterior draws of its parameters
(``artifacts/joint_posterior.npz``, no data row), which step 5 reweights to
other priors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from hmlib.artifacts import Artifact, artifact_path
from hmlib.figures import joint_model as figures
from hmlib.methods import NOT_CONVERGED
from hmlib.privacy import suppress_cluster_counts
from hmlib.results import read_estimates, to_jsonable
from hmlib.stats.joint_model import JointModelResult, fit_joint_model, model_fingerprint
from hmlib.steps.base import Step, StepContext

__all__ = ["JointModelArtifact", "JointStepResult", "run", "STEP", "POSTERIOR_FILE"]

#: The saved parameter draws, beside the artifact.
POSTERIOR_FILE = "joint_posterior.npz"


@dataclass(frozen=True)
class JointModelArtifact(Artifact):
    """The record of step 4 (``artifacts/joint_model.json``)."""

    KEY: ClassVar[str] = "joint_model"
    VERSION: ClassVar[int] = 1

    cluster: str
    converged: bool
    convergence_message: str
    correlation: dict | None
    divergences: int
    ess_per_second: dict
    estimates: list
    family: str
    focus: str
    imputed_in_unmeasured: dict | None
    method: str
    n_clusters: int
    n_dropped_outcome: int
    n_patients: int
    narrative: list
    outcome: str
    partial_pooling: list
    posterior_predictive: list
    priors: list
    settings: dict
    summary: list
    timing: dict

    def alert(self) -> str | None:
        """The line the runner prints when the convergence gate failed."""
        if self.converged:
            return None
        return (f"joint_model NOT CONVERGED: {self.convergence_message} "
                f"Its estimates are flagged ':{NOT_CONVERGED}' in estimates.csv.")


@dataclass
class JointStepResult:
    """Step 4's result: the fitted joint model and the report's privacy threshold."""

    fit: JointModelResult
    min_cell: int
    estimates_path: object = None
    truth: dict | None = None

    @property
    def estimates(self) -> pd.DataFrame:
        return self.fit.to_estimates()

    @property
    def converged(self) -> bool:
        return self.fit.converged

    def narrative(self) -> list[str]:
        return self.fit.narrative()

    def to_artifact(self) -> JointModelArtifact:
        return JointModelArtifact.from_json(to_jsonable(self.fit.to_dict(min_cell=self.min_cell)))

    def partial_pooling_table(self) -> pd.DataFrame:
        """Partial pooling by cluster, counts below the small-cell threshold suppressed."""
        return suppress_cluster_counts(self.fit.partial_pooling(), n_column="n_patients",
                                       observed_column="n_observed", min_cell=self.min_cell,
                                       derived_from_observed=["raw_mean", "raw_effect"])

    def figures(self) -> dict:
        """Step 4's figures by section: methods, pooling, checks, correlation."""
        fit = self.fit
        others = read_estimates(self.estimates_path) if self.estimates_path is not None else fit.to_estimates()
        out = {"methods": [figures.coefficient_forest(others, truth=self.truth or None)],
               "pooling": [figures.shrinkage_plot(fit, min_cell=self.min_cell)],
               "checks": [figures.ppc_by_cluster(fit)], "correlation": []}
        if fit.imputed_in_unmeasured():
            out["checks"].append(figures.imputed_distribution(fit))
        if fit.correlation is not None:
            out["correlation"].append(figures.correlation_posterior(fit))
        return out


def run(ctx: StepContext) -> JointStepResult:
    """Fit the joint model with the run's sizes; write the artifact, estimates and posterior draws."""
    p, sizes = ctx.params, ctx.sizes
    fit = fit_joint_model(ctx.registry, seed=p.seed, fast=p.fast, draws=sizes.joint_draws, tune=sizes.joint_tune,
                          chains=sizes.joint_chains, missing_values=sizes.joint_missing_values)
    result = JointStepResult(fit, int(p.privacy.min_cell), ctx.estimates_path, ctx.truth)
    ctx.write(STEP, result)
    fit.posterior_draws(model_fingerprint(ctx.registry)).save(artifact_path(ctx.output_dir, "joint_posterior")
                                                              .with_name(POSTERIOR_FILE))
    return result


STEP = Step(key="joint_model", number=4, title="Joint Bayesian model with partial pooling",
            notebook="04_joint_model.ipynb", artifact=JointModelArtifact, run=run, needs=("diagnose",),
            methods=("joint_bayes",), summary_name="step 4 (joint Bayesian model)", extra_files=(POSTERIOR_FILE,))
