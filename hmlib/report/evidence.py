"""What the report's summary sections are written from: the params as run, the steps' typed artifacts
and ``estimates.csv`` of one report folder.

:func:`collect_evidence` reads every step's artifact through the step registry
(:data:`hmlib.steps.STEPS`), so the summary, the methods and the checklist
read typed fields: a renamed or missing field is an
:class:`~hmlib.exceptions.ArtifactError`, never a silent gap in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hmlib.methods import FLAGS, METHODS, interval_name
from hmlib.params import Params
from hmlib.results import read_estimates
from hmlib.steps import STEPS
from hmlib.wording import cluster_noun, plural, row_noun

__all__ = ["ReportEvidence", "collect_evidence", "focus_terms", "focus_rows", "estimate_text", "SUMMARY_METHODS"]

#: Methods of ``estimates.csv`` compared in the summary, in this order (flagged variants included).
SUMMARY_METHODS = tuple(k for m in METHODS for k in (m.key, *(f"{m.key}:{flag}" for flag in FLAGS)))


@dataclass(frozen=True)
class ReportEvidence:
    """The inputs of the summary sections.

    Attributes
    ----------
    params : hmlib.params.Params
        The params as run.
    artifacts : dict
        Step key -> its typed artifact, or None when the step's artifact is absent.
    estimates : pandas.DataFrame
        ``estimates.csv``.
    versions : dict
        Package versions.
    hmlib_version, python_version : str
    focus_sd : float, optional
        SD of the recorded focus values (numeric focus): the default unit of its effect.
    """

    params: Params
    artifacts: dict
    estimates: pd.DataFrame
    versions: dict = field(default_factory=dict)
    hmlib_version: str = ""
    python_version: str = ""
    focus_sd: float | None = None

    def __getitem__(self, key: str):
        """The typed artifact of step ``key`` (None when absent)."""
        return self.artifacts[key]

    @property
    def absent(self) -> list:
        """Keys of steps whose artifact is absent, in step order."""
        return [key for key, record in self.artifacts.items() if record is None]

    @property
    def noun(self) -> str:
        return cluster_noun(self.params.cluster)

    @property
    def rows(self) -> str:
        """The extract's rows in the plural: ``"visits"`` with a visit ``time``, else ``"patients"``."""
        return plural(row_noun(self.params.time))

    @property
    def min_cell(self) -> int:
        return int(self.params.privacy.min_cell)

    @property
    def focus(self) -> str | None:
        return str(self.params.focus) if self.params.focus else None

    @property
    def focus_reference(self) -> str | None:
        """A categorical focus's reference level (the first of ``focus_levels`` in step 2's or step 3's record),
        or ``None``."""
        for key in ("complete_case", "imputation"):
            levels = getattr(self.artifacts.get(key), "focus_levels", None)
            if levels:
                return str(levels[0])
        return None


def collect_evidence(output_dir: str | Path, *, params: Params, versions: dict | None = None,
                     hmlib_version: str = "", python_version: str = "", focus_sd: float | None = None
                     ) -> ReportEvidence:
    """Read the typed artifacts and ``estimates.csv`` of a report folder."""
    output_dir = Path(output_dir)
    artifacts = {step.key: step.read_artifact(output_dir) for step in STEPS}
    return ReportEvidence(params=params, artifacts=artifacts, estimates=read_estimates(output_dir / "estimates.csv"),
                          versions=dict(versions or {}), hmlib_version=hmlib_version, python_version=python_version,
                          focus_sd=focus_sd)


def focus_terms(terms, focus: str | None) -> list[str]:
    """Terms of ``estimates.csv`` that belong to the focus variable (``x`` or ``x[level]``)."""
    if not focus:
        return []
    return [t for t in terms if t == focus or str(t).startswith(f"{focus}[")]


def focus_rows(estimates: pd.DataFrame, focus) -> pd.DataFrame:
    """The focus variable's rows of the compared methods, by term and method order."""
    terms = focus_terms(estimates["term"].unique(), focus)
    rows = estimates.loc[estimates["method"].isin(SUMMARY_METHODS) & estimates["term"].isin(terms)].copy()
    rows["order"] = rows["method"].map(list(SUMMARY_METHODS).index)
    return rows.sort_values(["term", "order"])


def estimate_text(row) -> str:
    """``0.357 (95% CrI 0.157 to 0.564)``: the estimate and its interval, named by the method's kind."""
    return (f"{row['estimate']:.3f} ({interval_name(row['method'])} {row['ci_lower']:.3f} "
            f"to {row['ci_upper']:.3f})")

