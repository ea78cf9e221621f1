"""Step 1, diagnose: where and how data are missing, by variable and by cluster.

The statistics are in :mod:`hmlib.stats.missingness`; this module runs them
on the checked registry, adds what was learnt while reading the extract, and
writes the step's artifact (no estimates: step 1 fits no analysis model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from hmlib.artifacts import Artifact
from hmlib.figures import diagnose as figures
from hmlib.results import ESTIMATE_COLUMNS, to_jsonable
from hmlib.stats.missingness import DiagnoseResult, diagnose
from hmlib.wording import cluster_noun
from hmlib.steps.base import Step, StepContext

__all__ = ["DiagnoseArtifact", "DiagnoseStepResult", "run", "STEP"]


@dataclass(frozen=True)
class DiagnoseArtifact(Artifact):
    """The record of step 1 (``artifacts/diagnose.json``)."""

    KEY: ClassVar[str] = "diagnose"
    VERSION: ClassVar[int] = 1

    by_cluster: list
    cluster_variation: dict
    cluster_variation_without_structural: dict
    focus_variation_adjusted: dict
    funnels: dict
    gap_summary: list
    heatmap: dict
    incomplete_variables: list
    input_notices: list
    missingness_predictors: dict
    n_clusters: int
    n_excluded_missing_cluster: int
    n_patients: int
    n_rows_read: int
    narrative: list
    notes: list
    outcome_correlation: dict
    overview: list
    patterns: list
    settings: dict
    variables: list


@dataclass
class DiagnoseStepResult:
    """Step 1's result: the diagnosis and the facts of reading the extract.

    Attributes
    ----------
    diagnosis : hmlib.stats.missingness.DiagnoseResult
        Published (small cells suppressed) tables and models.
    input_notices : list of str
        Notices raised while checking the extract.
    n_rows_read, n_excluded_missing_cluster : int
    """

    diagnosis: DiagnoseResult
    input_notices: list
    n_rows_read: int
    n_excluded_missing_cluster: int

    @property
    def estimates(self) -> pd.DataFrame:
        """Step 1 writes no estimates."""
        return pd.DataFrame(columns=list(ESTIMATE_COLUMNS))

    def narrative(self) -> list[str]:
        return self.diagnosis.narrative()

    def to_artifact(self) -> DiagnoseArtifact:
        payload = {**self.diagnosis.to_dict(), "input_notices": list(self.input_notices),
                   "n_rows_read": self.n_rows_read,
                   "n_excluded_missing_cluster": self.n_excluded_missing_cluster}
        return DiagnoseArtifact.from_json(to_jsonable(payload))

    def figures(self) -> dict:
        """``{"by_cluster": [heatmap, bars and funnel per variable], "patterns": [...]}``."""
        d = self.diagnosis
        noun = d.cluster_noun
        out = {"by_cluster": [], "patterns": []}
        if not d.incomplete:
            return out
        out["by_cluster"].append(figures.missingness_heatmap(d.heatmap, cluster_noun=noun))
        published = d.by_cluster.values if d.by_cluster is not None else None
        for var, funnel in d.funnels.items():
            if published is not None and (published["variable"] == var).any():
                out["by_cluster"].append(figures.cluster_missingness_bars(
                    published, var, overall_rate=funnel.overall_rate, cluster_noun=noun))
            out["by_cluster"].append(figures.funnel_plot(funnel, cluster_noun=noun))
        out["patterns"].append(figures.pattern_plot(d.patterns, list(d.incomplete)))
        return out


def run(ctx: StepContext) -> DiagnoseStepResult:
    """Run step 1 on the checked inputs and write its artifact."""
    registry, p = ctx.registry, ctx.params
    diagnosis = diagnose(registry.frame, cluster=p.cluster, outcome=p.outcome, outcome_family=p.outcome_family,
                         predictors=p.predictors, focus=p.focus, min_cell=p.privacy.min_cell,
                         structural_share=p.diagnose.structural_share, cluster_noun=cluster_noun(p.cluster))
    result = DiagnoseStepResult(diagnosis, [n.message for n in registry.notices], registry.n_rows_read,
                                registry.n_excluded_missing_cluster)
    ctx.write(STEP, result)
    return result


STEP = Step(key="diagnose", number=1, title="Diagnose: where and how data are missing",
            notebook="01_diagnose.ipynb", artifact=DiagnoseArtifact, run=run,
            summary_name="step 1 (diagnose)")
