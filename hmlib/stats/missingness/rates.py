"""Missing rates by variable and by cluster, with Wilson intervals.

The descriptive tables of step 1: :func:`missingness_overview` (one row per
variable), :func:`missingness_by_cluster` (one row per cluster and variable)
and :func:`missingness_heatmap_table` (clusters x variables), built on the
score interval of :func:`wilson_interval` (Wilson 1927; Newcombe 1998,
method 3). The tables are not suppressed: hmlib.steps.diagnose publishes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError
from hmlib.stats.missingness.counts import check_level, missing_counts

__all__ = ["wilson_interval", "missingness_by_cluster", "missingness_overview", "missingness_heatmap_table"]


def wilson_interval(k, n, level: float = 0.95):
    """Wilson score interval for a binomial proportion ``k / n`` (vectorised).

    Parameters
    ----------
    k, n : array_like
        Successes and trials (broadcast together); ``0 <= k <= n``.
    level : float, default 0.95
        Confidence level.

    Returns
    -------
    lower, upper : float or numpy.ndarray
        Interval limits (NaN where ``n`` is 0). Scalars for scalar input.

    Raises
    ------
    DataError
        ``k`` outside ``[0, n]`` or negative ``n``.

    References
    ----------
    Wilson (1927); Newcombe (1998), method 3.

    Examples
    --------
    >>> lo, hi = wilson_interval(3, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.1078, 0.6032)
    """
    level = check_level(level)
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    if (n_arr < 0).any() or (k_arr < 0).any() or (k_arr > n_arr).any():
        raise DataError("wilson_interval: need 0 <= k <= n.")
    z = stats.norm.ppf(0.5 + level / 2.0)
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        denom = 1.0 + z2 / n_arr
        centre = (p + z2 / (2.0 * n_arr)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n_arr + z2 / (4.0 * n_arr * n_arr)) / denom
        lower = np.where(k_arr == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
        upper = np.where(k_arr == n_arr, 1.0, np.clip(centre + half, 0.0, 1.0))
    lower = np.where(n_arr > 0, lower, np.nan)
    upper = np.where(n_arr > 0, upper, np.nan)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper



def missingness_by_cluster(frame: pd.DataFrame, variables: Sequence[str], cluster: str, *,
                           level: float = 0.95) -> pd.DataFrame:
    """Missing values per cluster and variable, with Wilson intervals.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    variables : sequence of str
        Variables to count missing values of.
    cluster : str
        Cluster column (no missing labels).
    level : float, default 0.95
        Level of the Wilson interval of the share missing.

    Returns
    -------
    pandas.DataFrame
        One row per variable and cluster (variables in the order given,
        clusters sorted): ``cluster, variable, n, n_missing, n_observed,
        share_missing, ci_lower, ci_upper``.

    Raises
    ------
    DataError
        Unknown columns or rows without a cluster label.
    """
    variables = list(variables)
    labels, sizes, missing = missing_counts(frame, variables, cluster, "missingness_by_cluster")
    m, v = missing.shape
    n = np.tile(sizes, v)
    k = missing.T.ravel()
    lower, upper = wilson_interval(k, n, level)
    return pd.DataFrame({
        "cluster": np.tile(labels, v),
        "variable": np.repeat(np.array(variables, dtype=object), m),
        "n": n,
        "n_missing": k,
        "n_observed": n - k,
        "share_missing": k / n,
        "ci_lower": lower,
        "ci_upper": upper,
    })


def missingness_overview(frame: pd.DataFrame, variables: Sequence[str], cluster: str, *,
                         level: float = 0.95) -> pd.DataFrame:
    """Missing values per variable, and in how many clusters.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str
    level : float, default 0.95

    Returns
    -------
    pandas.DataFrame
        One row per variable, in the order given: ``variable, n, n_missing,
        n_observed, share_missing, ci_lower, ci_upper, n_clusters,
        n_clusters_any_missing, n_clusters_all_missing``.
    """
    variables = list(variables)
    labels, sizes, missing = missing_counts(frame, variables, cluster, "missingness_overview")
    n_total = int(sizes.sum())
    k = missing.sum(axis=0)
    lower, upper = wilson_interval(k, np.full(k.shape, n_total), level)
    return pd.DataFrame({
        "variable": variables,
        "n": np.full(len(variables), n_total, dtype=np.int64),
        "n_missing": k,
        "n_observed": n_total - k,
        "share_missing": k / n_total if n_total else np.full(len(variables), np.nan),
        "ci_lower": lower,
        "ci_upper": upper,
        "n_clusters": np.full(len(variables), labels.size, dtype=np.int64),
        "n_clusters_any_missing": (missing > 0).sum(axis=0),
        "n_clusters_all_missing": (missing == sizes[:, None]).sum(axis=0),
    })


def missingness_heatmap_table(frame: pd.DataFrame, variables: Sequence[str], cluster: str) -> pd.DataFrame:
    """Share missing, clusters x variables, for a heatmap.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str

    Returns
    -------
    pandas.DataFrame
        Index: cluster labels (named after ``cluster``), ordered by overall
        missingness over the variables (missing cells / (n x variables)),
        most missing first, ties by label; columns: the variables.
    """
    variables = list(variables)
    labels, sizes, missing = missing_counts(frame, variables, cluster, "missingness_heatmap_table")
    share = missing / sizes[:, None]
    overall = missing.sum(axis=1) / (sizes * max(len(variables), 1))
    order = np.lexsort((np.arange(labels.size), -overall))
    table = pd.DataFrame(share[order], index=pd.Index(labels[order], name=cluster), columns=variables)
    return table
