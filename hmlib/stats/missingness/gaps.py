"""Where the holes are: structural versus sporadic gaps per cluster, and missing-data patterns.

Definitions (structural share, pooling of small patterns) are in
:mod:`hmlib.stats.missingness` ("Structural and sporadic gaps",
"Missing-data patterns").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import ParamsError
from hmlib.stats.missingness.counts import check_columns, missing_counts

__all__ = ["GapResult", "classify_gaps", "missingness_patterns"]


@dataclass(frozen=True)
class GapResult:
    """Complete, sporadic and structural gaps per cluster and variable.

    Attributes
    ----------
    table : pandas.DataFrame
        ``cluster, variable, n, n_missing, share_missing, gap_type``.
    summary : pandas.DataFrame
        One row per variable: ``variable, n_clusters, n_complete,
        n_sporadic, n_structural, structural_clusters`` (tuple of labels),
        ``n_missing, n_missing_structural, share_of_missing_structural``.
    structural_share : float
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    structural_share: float


def classify_gaps(frame: pd.DataFrame, variables: Sequence[str], cluster: str, *,
                  structural_share: float = 0.9) -> GapResult:
    """Classify each cluster's gap in each variable as complete, sporadic or structural.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str
    structural_share : float, default 0.9
        A cluster's gap is *structural* when the variable is missing for every
        patient of the cluster, or when its share missing is above this value
        (strictly). *Complete*: nothing missing. Otherwise *sporadic*.

    Returns
    -------
    GapResult
    """
    if not 0.0 <= float(structural_share) <= 1.0:
        raise ParamsError(f"structural_share must be between 0 and 1, got {structural_share!r}.")
    variables = list(variables)
    labels, sizes, missing = missing_counts(frame, variables, cluster, "classify_gaps")
    share = missing / sizes[:, None]
    structural = (missing == sizes[:, None]) | (share > structural_share)
    gap = np.where(missing == 0, "complete", np.where(structural, "structural", "sporadic"))
    m, v = missing.shape
    table = pd.DataFrame({
        "cluster": np.tile(labels, v),
        "variable": np.repeat(np.array(variables, dtype=object), m),
        "n": np.tile(sizes, v),
        "n_missing": missing.T.ravel(),
        "share_missing": share.T.ravel(),
        "gap_type": gap.T.ravel(),
    })
    rows = []
    for j, var in enumerate(variables):
        is_structural = gap[:, j] == "structural"
        total = int(missing[:, j].sum())
        in_structural = int(missing[is_structural, j].sum())
        rows.append({
            "variable": var,
            "n_clusters": m,
            "n_complete": int((gap[:, j] == "complete").sum()),
            "n_sporadic": int((gap[:, j] == "sporadic").sum()),
            "n_structural": int(is_structural.sum()),
            "structural_clusters": tuple(labels[is_structural]),
            "n_missing": total,
            "n_missing_structural": in_structural,
            "share_of_missing_structural": in_structural / total if total else np.nan,
        })
    return GapResult(table=table, summary=pd.DataFrame(rows), structural_share=float(structural_share))



def missingness_patterns(frame: pd.DataFrame, variables: Sequence[str], *, min_cell: int = 11) -> pd.DataFrame:
    """Counts of each pattern of missing values, small patterns pooled.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    min_cell : int, default 11
        Patterns of fewer patients are pooled into
        ``"other patterns (each < min_cell)"``; if that pool has from 1 to
        ``min_cell - 1`` patients, the next smallest patterns join it.

    Returns
    -------
    pandas.DataFrame
        ``pattern, n_missing_variables, n_patterns, count, share``, sorted by
        count (the pooled row last). ``pattern`` lists the missing variables
        in the order given, or is ``"complete"``; ``n_patterns`` is 1 except
        for the pooled row; ``n_missing_variables`` is NaN for the pooled row.
    """
    variables = list(variables)
    check_columns(frame, variables, "missingness_patterns")
    if not isinstance(min_cell, (int, np.integer)) or min_cell < 1:
        raise ParamsError(f"min_cell must be a whole number >= 1, got {min_cell!r}.")
    n_total = len(frame)
    columns = ["pattern", "n_missing_variables", "n_patterns", "count", "share"]
    if n_total == 0:
        return pd.DataFrame({c: [] for c in columns})
    if variables:
        isna = frame[variables].isna().to_numpy()
        # rows -> pattern codes without Python loops over patients
        uniq, inverse = np.unique(isna, axis=0, return_inverse=True)
        counts = np.bincount(inverse.ravel(), minlength=uniq.shape[0])
    else:
        uniq = np.zeros((1, 0), dtype=bool)
        counts = np.array([n_total])
    names = [", ".join(v for v, miss in zip(variables, row) if miss) or "complete" for row in uniq]
    table = pd.DataFrame({"pattern": names, "n_missing_variables": uniq.sum(axis=1).astype(float),
                          "n_patterns": 1, "count": counts})
    table = table.sort_values(["count", "pattern"], ascending=[False, True], kind="stable")
    small = table["count"] < min_cell
    # pool the smallest published patterns too while the pool itself is a small cell
    while 0 < table.loc[small, "count"].sum() < min_cell and (~small).any():
        smallest = table.loc[~small, "count"].idxmin()
        small.loc[smallest] = True
    published = table.loc[~small].copy()
    if small.any():
        pooled = pd.DataFrame({
            "pattern": [f"other patterns (each < {min_cell})"],
            "n_missing_variables": [np.nan],
            "n_patterns": [int(small.sum())],
            "count": [int(table.loc[small, "count"].sum())],
        })
        published = pd.concat([published, pooled], ignore_index=True)
    published = published.reset_index(drop=True)
    published["count"] = published["count"].astype(np.int64)
    published["n_patterns"] = published["n_patterns"].astype(np.int64)
    published["share"] = published["count"] / n_total
    return published[columns]
