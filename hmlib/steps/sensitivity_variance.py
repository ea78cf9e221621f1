"""The residual variance of every multilevel imputation of step 5, and where the choice came from.

Step 3 decides between a common residual variance (``2l.pan``) and one per
cluster (``2l.norm``) (:func:`hmlib.steps.imputation.residual_variance_check`);
step 5's primary analysis and every scenario that re-imputes use its choice,
read from its artifact (:func:`residual_variance_choice`). When step 3 has
not run, the same check decides it here, by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmlib.artifacts import Record
from hmlib.exceptions import ParamsError
from hmlib.steps.imputation import ImputationArtifact, choose_residual_variance
from hmlib.wording import cluster_noun

__all__ = ["SensitivityVarianceChoice", "residual_variance_choice"]


# --------------------------------------------------------------------------
# The residual variance of every multilevel imputation
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivityVarianceChoice(Record):
    """The residual variance of every multilevel imputation of step 5, and where the choice came from.

    Attributes
    ----------
    cluster_specific : bool
        Cluster-specific residual variances (2l.norm) when True, a common
        one (2l.pan) when False.
    source : {"step 3", "checked here", "caller"}
        Read from step 3's artifact; decided here by step 3's check (step 3
        had not run); or set by the caller of :func:`run_sensitivity`.
    text : str
        The sentence the result's notes carry.
    """

    cluster_specific: bool
    source: str
    text: str

    @property
    def model(self) -> str:
        """``"2l.norm"`` or ``"2l.pan"``."""
        return "2l.norm" if self.cluster_specific else "2l.pan"


def _variance_words(cluster_specific: bool) -> str:
    return ("cluster-specific residual variances (2l.norm)" if cluster_specific
            else "a common residual variance (2l.pan)")


def _step3_choice(artifact: ImputationArtifact) -> bool | None:
    """The multilevel method's ``cluster_residual_variance`` in step 3's record (None if not recorded)."""
    for method in artifact.methods:
        if method.method == "multilevel_mi" and "cluster_residual_variance" in method.options:
            return bool(method.options["cluster_residual_variance"])
    if artifact.residual_variance is not None:
        return bool(artifact.residual_variance.heterogeneous)
    return None


def residual_variance_choice(registry, imputation_artifact=None, cluster_residual_variance="auto"
                             ) -> SensitivityVarianceChoice:
    """The residual variance step 5 imputes with: step 3's, the caller's, or step 3's rule applied here.

    Parameters
    ----------
    registry : hmlib.data.Registry
    imputation_artifact : hmlib.steps.imputation.ImputationArtifact, optional
        Step 3's record; its multilevel method's choice is used when given.
    cluster_residual_variance : bool or "auto"
        True/False: set by the caller (wins over step 3). "auto": step 3's
        choice, or, without step 3's record, :func:`hmlib.steps.imputation.residual_variance_check`
        on the focus variable as step 3 runs it (a numeric, non-binary focus;
        a common variance when the check cannot run or does not reject).

    Returns
    -------
    SensitivityVarianceChoice
    """
    scope = "the primary analysis and every scenario that re-imputes"
    if not isinstance(cluster_residual_variance, str):
        hetero = bool(cluster_residual_variance)
        return SensitivityVarianceChoice(hetero, "caller", f"The multilevel imputations ({scope}) use "
                                                        f"{_variance_words(hetero)}, as set by the caller.")
    if cluster_residual_variance != "auto":
        raise ParamsError("cluster_residual_variance must be True, False or 'auto', "
                          f"got {cluster_residual_variance!r}.")
    chosen = _step3_choice(imputation_artifact) if imputation_artifact is not None else None
    if chosen is not None:
        return SensitivityVarianceChoice(chosen, "step 3", f"The multilevel imputations ({scope}) use "
                                                        f"{_variance_words(chosen)}, as step 3 chose.")
    p = registry.params
    lead = f"Step 3 has not run, so its residual-variance rule was applied here, for {scope}. "
    decided = choose_residual_variance(registry, "auto")  # step 3's own rule
    check = decided.check
    if check is None:
        why = " ".join(decided.notes) or f"The focus variable {p.focus} is not continuous."
        return SensitivityVarianceChoice(False, "checked here", lead + f"{why} The multilevel imputation uses "
                                         f"{_variance_words(False)}.")
    if not np.isfinite(check.p_value):
        return SensitivityVarianceChoice(False, "checked here", lead + f"Fewer than 2 {cluster_noun(p.cluster)}s "
                                         "have enough complete rows to test, so the multilevel imputation uses "
                                         f"{_variance_words(False)}.")
    return SensitivityVarianceChoice(decided.heterogeneous, "checked here", lead + check.sentence())
