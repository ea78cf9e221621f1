"""Step 1 for a categorical focus: its recorded levels by cluster, beside its missingness.

The statistics are :func:`hmlib.stats.missingness.level_counts_by_cluster` and
:func:`hmlib.stats.missingness.level_mix`; the per-cluster level counts are
suppressed together with every other per-cluster count of step 1
(:func:`hmlib.steps.diagnose_tables.publish_tables`), so this module only
holds the published result (:class:`FocusLevels`), its typed record
(:class:`FocusLevelsRecord`) and its sentences (:func:`level_sentences`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.exceptions import DataError
from hmlib.stats.missingness import LevelMixResult, level_mix

__all__ = ["FocusLevels", "FocusLevelsRecord", "focus_levels", "level_sentences"]


@dataclass(frozen=True)
class FocusLevels:
    """A categorical focus's levels as step 1 publishes them.

    Attributes
    ----------
    variable : str
    levels : tuple of str
        In order (the first is the analysis model's reference level).
    table : pandas.DataFrame
        Published shares by cluster
        (:attr:`hmlib.steps.diagnose_tables.PublishedTables.level_shares`):
        ``cluster, n_recorded, share_missing`` and one column per level; NaN
        = suppressed.
    mix : hmlib.stats.missingness.LevelMixResult
        The level mix between clusters and its relation to missingness.
    """

    variable: str
    levels: tuple
    table: pd.DataFrame
    mix: LevelMixResult

    def to_dict(self) -> dict:
        """JSON-ready fields of :class:`FocusLevelsRecord`."""
        return {"variable": self.variable, "levels": list(self.levels), "mix": self.mix.to_dict(),
                "table": self.table.to_dict(orient="records")}


@dataclass(frozen=True)
class LevelCorrelation(Record):
    """Spearman correlation over clusters of the share missing with one level's share of the recorded values."""

    rho: float | None
    p_value: float | None


@dataclass(frozen=True)
class LevelMixRecord(Record):
    """:class:`hmlib.stats.missingness.LevelMixResult` as recorded."""

    variable: str
    levels: tuple[str, ...]
    overall_shares: dict[str, float]
    chi2: float | None
    df: int
    p_value: float | None
    cramers_v: float | None
    n_clusters_tested: int
    sparse: bool
    missing_correlation: dict[str, LevelCorrelation]
    n_clusters_correlated: int
    min_recorded: int


@dataclass(frozen=True)
class FocusLevelsRecord(Record):
    """A categorical focus's levels by cluster in ``artifacts/diagnose.json`` (published values only)."""

    variable: str
    levels: tuple[str, ...]
    mix: LevelMixRecord
    table: list  # displayed only: one column per level, named by the level


def focus_levels(variable: str, levels, counts: pd.DataFrame | None, published: pd.DataFrame | None,
                 min_cell: int, notes: list) -> FocusLevels | None:
    """The published levels of a categorical focus, or None (not broken down; noted by the tables).

    Parameters
    ----------
    variable : str
    levels : sequence of str
    counts, published : pandas.DataFrame or None
        :attr:`~hmlib.steps.diagnose_tables.PublishedTables.level_counts` and
        ``level_shares``.
    min_cell : int
        Clusters with fewer recorded values are left out of the correlations.
    notes : list of str
        Appended to when the statistics cannot be computed.
    """
    if counts is None or published is None:
        return None
    try:
        mix = level_mix(counts, variable, min_recorded=min_cell)
    except DataError as err:
        notes.append(f"The levels of {variable} were not described: {err}")
        return None
    return FocusLevels(variable=variable, levels=tuple(str(level) for level in levels), table=published, mix=mix)


def _p(p: float) -> str:
    return "p not available" if not np.isfinite(p) else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def level_sentences(levels: FocusLevels | None, cluster_noun: str) -> list[str]:
    """Step 1's sentences on a categorical focus's recorded levels (published numbers only)."""
    if levels is None:
        return []
    mix, var, noun = levels.mix, levels.variable, cluster_noun
    shares = ", ".join(f"{level} {100 * mix.overall_shares[level]:.0f}%" for level in levels.levels)
    out = [f"Among the recorded values of {var}: {shares} (missing values are not in these shares: their "
           "levels are unknown)."]
    table = levels.table
    ranges = []
    for level in levels.levels:
        values = table.loc[table["n_recorded"] >= mix.min_recorded, level].dropna()
        if len(values) >= 2:
            ranges.append(f"{level} {100 * values.min():.0f}-{100 * values.max():.0f}%")
    spread = (f"; across {noun}s with at least {mix.min_recorded} recorded values the shares range "
              f"{', '.join(ranges)}" if ranges else "")
    rough = " (many sparse cells: the p-value is approximate)" if mix.sparse else ""
    if np.isfinite(mix.p_value) and mix.p_value < 0.05:
        out.append(f"The mix of recorded {var} levels differs between {noun}s (chi-square test of homogeneity "
                   f"{_p(mix.p_value)}{rough}, Cramer's V {mix.cramers_v:.2f}){spread}: a {noun}'s missing values "
                   f"are better imputed from its own mix than from the pooled one.")
    elif np.isfinite(mix.p_value):
        out.append(f"The mix of recorded {var} levels does not clearly differ between {noun}s (chi-square test "
                   f"of homogeneity {_p(mix.p_value)}{rough}, Cramer's V {mix.cramers_v:.2f}){spread}.")
    linked = [(level, rho, p) for level, (rho, p) in mix.missing_correlation.items() if np.isfinite(p) and p < 0.05]
    base = f"over {mix.n_clusters_correlated} {noun}s with at least {mix.min_recorded} recorded values"
    if linked:
        parts = [f"{level} {'more' if rho > 0 else 'less'} often (Spearman {rho:+.2f}, {_p(p)})"
                 for level, rho, p in linked]
        out.append(f"{noun.capitalize()}s that miss {var} more often record {', '.join(parts)}, {base}: the "
                   f"recorded values of poorly documenting {noun}s differ from those of well-documenting ones, "
                   "so the missing values need not resemble the recorded ones either.")
    elif any(np.isfinite(p) for _, p in mix.missing_correlation.values()):
        out.append(f"No level's share of the recorded values is clearly related to how often a {noun} misses "
                   f"{var} (Spearman, all p >= 0.05, {base}).")
    return out
