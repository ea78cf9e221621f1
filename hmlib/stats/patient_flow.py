"""Patients and clusters from the extract to each analysis: the numbers of a CONSORT-style flow.

Complete-case analysis keeps a row only when the outcome and every predictor
are recorded. :func:`patient_flow` counts, in the order of the model's
variables (outcome first, then the predictors as listed), how many patients
each variable *newly* excludes: a patient missing several variables is
counted once, under the first of them in that order, so the exclusions add
up to ``n_patients - n_complete``. It also counts the clusters still
represented after each exclusion and the clusters lost entirely. Analyses
that impute (multilevel multiple imputation, the joint model) use every
patient of the extract.

No suppression here (:mod:`hmlib.steps.complete_case` publishes the flow with
small counts suppressed).

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"site": ["a", "a", "b", "b"], "y": [1, None, 0, 1], "x": [None, 1.0, None, 2.0]})
>>> flow = patient_flow(frame, "site", ["y", "x"])
>>> flow.exclusions["n_excluded"].tolist(), flow.n_complete, flow.n_clusters_lost
([1, 2], 1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PatientFlow", "patient_flow"]


@dataclass(frozen=True)
class PatientFlow:
    """Counts of a complete-case flow (raw: nothing suppressed).

    Attributes
    ----------
    n_patients, n_clusters : int
        In the extract (the analysis frame).
    exclusions : pandas.DataFrame
        One row per model variable, in order: ``variable``, ``n_excluded``
        (patients newly excluded for a missing value of it, overlaps counted
        once under the first variable), ``n_missing`` (all patients missing it),
        ``n_remaining`` and ``n_clusters_remaining`` after this exclusion.
    n_complete, n_clusters_complete : int
        Patients and clusters in the complete-case analysis.
    n_clusters_lost : int
        Clusters without a single complete case.
    """

    n_patients: int
    n_clusters: int
    exclusions: pd.DataFrame
    n_complete: int
    n_clusters_complete: int
    n_clusters_lost: int

    @property
    def n_excluded(self) -> int:
        """Patients excluded from the complete-case analysis (missing any model variable)."""
        return self.n_patients - self.n_complete


def patient_flow(frame: pd.DataFrame, cluster: str, variables) -> PatientFlow:
    """Count the flow from the extract to the complete-case analysis.

    Parameters
    ----------
    frame : pandas.DataFrame
        The analysis frame (one row per patient).
    cluster : str
        The cluster column (recorded in every row).
    variables : sequence of str
        The model's variables in the order exclusions are counted (outcome
        first, then the predictors).

    Returns
    -------
    PatientFlow
    """
    variables = list(dict.fromkeys(variables))
    labels = frame[cluster].to_numpy()
    remaining = np.ones(len(frame), dtype=bool)
    rows = []
    for variable in variables:
        missing = frame[variable].isna().to_numpy()
        newly = remaining & missing
        remaining &= ~missing
        rows.append({"variable": variable, "n_excluded": int(newly.sum()), "n_missing": int(missing.sum()),
                     "n_remaining": int(remaining.sum()),
                     "n_clusters_remaining": int(pd.unique(labels[remaining]).size)})
    n_clusters = int(pd.unique(labels).size)
    n_clusters_complete = int(pd.unique(labels[remaining]).size)
    exclusions = pd.DataFrame(rows, columns=["variable", "n_excluded", "n_missing", "n_remaining",
                                             "n_clusters_remaining"])
    return PatientFlow(n_patients=int(len(frame)), n_clusters=n_clusters, exclusions=exclusions,
                       n_complete=int(remaining.sum()), n_clusters_complete=n_clusters_complete,
                       n_clusters_lost=n_clusters - n_clusters_complete)
