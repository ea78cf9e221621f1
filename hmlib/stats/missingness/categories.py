"""A categorical variable's recorded levels by cluster, beside its missingness.

When the focus variable is categorical, step 1 asks two more questions of the
recorded values: does the mix of levels differ between clusters, and do the
clusters that miss the variable more often record a different mix? The
missing values' own levels are unknown, so these are statements about the
recorded values only; a link between the two is a warning that the missing
values may not be like the recorded ones of the same cluster type (and that
flat imputation, which ignores the clusters, draws them from the wrong mix).

Terms
-----
level counts by cluster
    Per cluster: its size ``n``, its missing count, and the count of each
    level among its recorded values (:func:`level_counts_by_cluster`).
level mix between clusters
    Pearson's chi-square test of homogeneity of the level distribution over
    the clusters with at least one recorded value, with Cramer's V
    (``sqrt(chi2 / (N (min(J, K) - 1)))``) as its size; with many sparse
    cells the chi-square p-value is approximate (the step says so).
missingness against the level mix
    For each level, the Spearman correlation over clusters between the
    cluster's share missing and the level's share among its recorded values,
    over the clusters with at least ``min_recorded`` recorded values and some
    patients (a screening number, as the correlations of
    :mod:`hmlib.stats.missingness.outcome_correlation`).

Nothing here suppresses small counts: :mod:`hmlib.steps.diagnose_tables`
decides what is published.

References
----------
Agresti A (2013). Categorical Data Analysis, 3rd ed., section 3.2 (tests of
homogeneity) and 2.4.5 (Cramer's V). Wiley.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError

__all__ = ["level_counts_by_cluster", "LevelMixResult", "level_mix"]


def level_counts_by_cluster(frame: pd.DataFrame, variable: str, cluster: str,
                            levels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per cluster: size, missing count and the count of each recorded level.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient rows (not modified); no missing cluster labels.
    variable : str
        A categorical column.
    cluster : str
    levels : sequence of str, optional
        The variable's levels in order; default its sorted recorded values.

    Returns
    -------
    pandas.DataFrame
        Index: the cluster labels (sorted); columns ``n``, ``n_missing``,
        ``n_recorded`` and one count column per level (named by the level,
        in level order).

    Raises
    ------
    DataError
        A recorded value is not among ``levels``.

    Examples
    --------
    >>> frame = pd.DataFrame({"site": ["A", "A", "A", "B"], "band": ["low", None, "high", "low"]})
    >>> level_counts_by_cluster(frame, "band", "site", ["low", "high"]).to_dict(orient="list")
    {'n': [3, 1], 'n_missing': [1, 0], 'n_recorded': [2, 1], 'low': [1, 1], 'high': [1, 0]}
    """
    present = frame[variable].notna().to_numpy()
    recorded = frame[variable].astype(object)[present].astype(str)
    levels = [str(level) for level in (levels if levels is not None else sorted(recorded.unique()))]
    unknown = sorted(set(recorded.unique()) - set(levels))
    if unknown:
        raise DataError(f"'{variable}' has value(s) {unknown[:3]} that are not among its levels {levels}.")
    labels = frame[cluster].to_numpy()
    sizes = pd.Series(labels).value_counts().sort_index()
    table = pd.DataFrame({"n": sizes.to_numpy()}, index=sizes.index)
    counts = pd.crosstab(labels[present], recorded.to_numpy())
    counts = counts.reindex(index=table.index, columns=levels, fill_value=0)
    table["n_recorded"] = counts.sum(axis=1).astype(int)
    table["n_missing"] = table["n"] - table["n_recorded"]
    table = table[["n", "n_missing", "n_recorded"]]
    for level in levels:
        table[level] = counts[level].astype(int)
    table.index.name = None
    return table


@dataclass(frozen=True)
class LevelMixResult:
    """How the recorded levels are mixed across clusters, and how the mix relates to missingness.

    Attributes
    ----------
    variable : str
    levels : tuple of str
    overall_shares : dict
        ``{level: share among all recorded values}``.
    chi2, df, p_value : float
        Test of homogeneity of the level mix over the clusters with a recorded value.
    cramers_v : float
    n_clusters_tested : int
        Clusters with at least one recorded value.
    sparse : bool
        More than 20% of the expected cell counts are below 5 (the chi-square
        p-value is then rough; Cochran's rule).
    missing_correlation : dict
        ``{level: (spearman rho, p-value)}`` over the clusters with at least
        ``min_recorded`` recorded values; NaN with fewer than 5 such clusters
        or no variation.
    n_clusters_correlated : int
        The clusters the correlations use.
    min_recorded : int
    """

    variable: str
    levels: tuple
    overall_shares: dict
    chi2: float
    df: int
    p_value: float
    cramers_v: float
    n_clusters_tested: int
    sparse: bool
    missing_correlation: dict
    n_clusters_correlated: int
    min_recorded: int

    def to_dict(self) -> dict:
        """JSON-ready fields (correlations as ``{level: {"rho", "p_value"}}``)."""
        return {
            "variable": self.variable, "levels": list(self.levels), "overall_shares": dict(self.overall_shares),
            "chi2": self.chi2, "df": self.df, "p_value": self.p_value, "cramers_v": self.cramers_v,
            "n_clusters_tested": self.n_clusters_tested, "sparse": self.sparse,
            "missing_correlation": {k: {"rho": r, "p_value": p} for k, (r, p) in self.missing_correlation.items()},
            "n_clusters_correlated": self.n_clusters_correlated, "min_recorded": self.min_recorded,
        }


def level_mix(counts: pd.DataFrame, variable: str, *, min_recorded: int = 11) -> LevelMixResult:
    """Test whether the recorded levels' mix differs between clusters, and relate it to missingness.

    Parameters
    ----------
    counts : pandas.DataFrame
        :func:`level_counts_by_cluster`.
    variable : str
        The variable's name (for the result).
    min_recorded : int, default 11
        Clusters with fewer recorded values are left out of the correlations
        (their shares are too noisy to rank; the step passes its small-cell
        threshold).

    Returns
    -------
    LevelMixResult

    Raises
    ------
    DataError
        No recorded value at all.

    References
    ----------
    Agresti A (2013), Categorical Data Analysis, 3rd ed., 3.2 and 2.4.5.
    """
    levels = [c for c in counts.columns if c not in ("n", "n_missing", "n_recorded")]
    observed = counts.loc[counts["n_recorded"] > 0, levels].to_numpy(dtype=float)
    total = observed.sum()
    if total == 0:
        raise DataError(f"'{variable}' has no recorded value; its levels cannot be described.")
    shares = {level: float(observed[:, k].sum() / total) for k, level in enumerate(levels)}
    used = observed[:, observed.sum(axis=0) > 0]
    if used.shape[0] >= 2 and used.shape[1] >= 2:
        expected = used.sum(axis=1, keepdims=True) * used.sum(axis=0, keepdims=True) / used.sum()
        chi2 = float(((used - expected) ** 2 / expected).sum())
        df = (used.shape[0] - 1) * (used.shape[1] - 1)
        p_value = float(stats.chi2.sf(chi2, df))
        cramers_v = float(np.sqrt(chi2 / (used.sum() * (min(used.shape) - 1))))
        sparse = bool((expected < 5).mean() > 0.2)
    else:
        chi2, df, p_value, cramers_v, sparse = float("nan"), 0, float("nan"), float("nan"), False
    big = counts.loc[counts["n_recorded"] >= min_recorded]
    correlation = {}
    for level in levels:
        missing_share = (big["n_missing"] / big["n"]).to_numpy(dtype=float)
        level_share = (big[level] / big["n_recorded"]).to_numpy(dtype=float)
        if len(big) >= 5 and np.ptp(missing_share) > 0 and np.ptp(level_share) > 0:
            rho, p = stats.spearmanr(missing_share, level_share)
            correlation[level] = (float(rho), float(p))
        else:
            correlation[level] = (float("nan"), float("nan"))
    return LevelMixResult(variable=variable, levels=tuple(levels), overall_shares=shares, chi2=chi2, df=int(df),
                          p_value=p_value, cramers_v=cramers_v, n_clusters_tested=int(used.shape[0]),
                          sparse=sparse, missing_correlation=correlation, n_clusters_correlated=int(len(big)),
                          min_recorded=int(min_recorded))
