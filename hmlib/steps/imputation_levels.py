"""Step 3 for a categorical focus: observed and imputed levels in the clusters with most missing values.

A numeric focus gets histograms of its observed and imputed values
(:func:`hmlib.steps.imputation.imputation_step`); a categorical one gets,
per chosen cluster, the share of each level among the observed values and
among each method's imputed values (all ``m`` imputations together). Flat
imputation draws a cluster's missing levels from the pooled mix; multilevel
imputation from the cluster's own, shrunk towards the pooled one: the table
shows which happened.

Privacy: a cluster's observed shares are published only when every level
count among its observed values is 0 or at least ``min_cell`` (the shares and
the published observed count would otherwise give a small count back);
imputed shares are averages of model draws, not patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["LEVEL_DISTRIBUTION_COLUMNS", "level_distributions"]

#: Columns of the table of observed and imputed level shares.
LEVEL_DISTRIBUTION_COLUMNS = ["cluster", "source", "level", "share"]


def level_distributions(frame: pd.DataFrame, runs, focus: str, cluster: str, chosen, levels,
                        min_cell: int) -> pd.DataFrame:
    """Observed and imputed level shares of a categorical focus in the chosen clusters.

    Parameters
    ----------
    frame : pandas.DataFrame
        The analysis frame (patients).
    runs : sequence of hmlib.steps.imputation_result.MethodRun
        The methods that ran (their completed data sets, in memory).
    focus, cluster : str
    chosen : sequence
        Cluster labels to describe.
    levels : sequence of str
        The focus's levels in order.
    min_cell : int

    Returns
    -------
    pandas.DataFrame
        :data:`LEVEL_DISTRIBUTION_COLUMNS`: one row per cluster, source
        (``"observed"`` or a method label) and level; a cluster's observed
        rows are left out when they would reveal a count below ``min_cell``,
        and absent when it has no observed value.
    """
    levels = [str(level) for level in levels]
    labels = frame[cluster].to_numpy()
    values = frame[focus].astype(object)
    missing = values.isna().to_numpy()
    text = values.where(~missing, None).map(lambda v: None if v is None else str(v)).to_numpy()
    rows = []
    for label in chosen:
        in_cluster = labels == label
        observed = text[in_cluster & ~missing]
        counts = np.array([(observed == level).sum() for level in levels])
        if observed.size and not ((counts > 0) & (counts < min_cell)).any():
            rows.extend((label, "observed", level, c / observed.size) for level, c in zip(levels, counts))
        rows_missing = in_cluster & missing
        if not rows_missing.any():
            continue
        for run in runs:
            imputed = np.concatenate([done[focus].astype(object).to_numpy()[rows_missing].astype(str)
                                      for done in run.imputation.completed])
            rows.extend((label, run.label, level, float((imputed == level).mean())) for level in levels)
    return pd.DataFrame(rows, columns=LEVEL_DISTRIBUTION_COLUMNS)
