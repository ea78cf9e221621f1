"""One small-cell decision across the report: later steps hide at least what step 1 hides.

Step 1 publishes, per cluster, the size and each incomplete variable's
missing and recorded counts, with primary and complementary suppression
(:func:`hmlib.steps.diagnose_tables.hidden_cells`). Later steps show
per-cluster counts of their own: step 2 the cluster sizes it retains from,
step 3 the focus variable's recorded values per cluster (transport check,
distributions), step 4 the observed values behind each cluster's partial
pooling and predictive check, step 5 the patients a leave-out scenario
drops. Each table is suppressed on its own terms too, but those decisions
differ: a recorded count shown in step 3 beside the cluster size shown in
step 1 gives back a missing count step 1 hid.

:func:`hidden_counts` recomputes step 1's decision from the same checked
data (it is deterministic) and the later steps pass it to
:func:`hmlib.privacy.suppress_counts` as cells hidden from the start
(``hidden=``), so complementary suppression then protects them within each
table as well. Hiding more than step 1 is always allowed; hiding less is
what this module prevents (tested by PRIV-CROSS-001 on the demo report).

With ``higher_levels`` step 1 also publishes counts by unit (country sizes,
missing and recorded counts: :mod:`hmlib.steps.diagnose_units`); the same
record holds which of those it hides (``level=`` of the methods), and step 2
hides at least those in its retention tables by unit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.stats.design import outermost_first
from hmlib.stats.missingness import missingness_overview
from hmlib.steps.diagnose_tables import hidden_cells, publish_overview
from hmlib.steps.diagnose_units import missingness_by_unit

__all__ = ["HiddenCounts", "hidden_counts"]


@dataclass(frozen=True)
class HiddenCounts:
    """Which per-cluster counts step 1 hides (cluster labels as text).

    Attributes
    ----------
    min_cell : int
    sizes : frozenset of str
        Clusters whose size is hidden.
    counts : dict
        Variable -> clusters whose missing or recorded count of it is
        hidden (either one gives the other back beside the size).
    unit_sizes, unit_counts : dict
        The same by higher level (``{level: frozenset}`` and ``{level:
        {variable: frozenset}}``) for step 1's counts by unit; a variable
        step 1 does not break down by a level has no entry (nothing of it
        is published by unit). Empty without higher levels.
    """

    min_cell: int
    sizes: frozenset
    counts: dict
    unit_sizes: dict = field(default_factory=dict)
    unit_counts: dict = field(default_factory=dict)

    def size_hidden(self, clusters: Iterable, level: str | None = None) -> np.ndarray:
        """For each cluster label (unit label of ``level``): its size is hidden in step 1."""
        sizes = self.sizes if level is None else self.unit_sizes.get(level, frozenset())
        return np.array([str(c) in sizes for c in clusters], dtype=bool)

    def count_hidden(self, clusters: Iterable, variable: str, level: str | None = None) -> np.ndarray:
        """For each cluster label (unit label of ``level``): a count of ``variable`` in it (missing, recorded
        or size) is hidden in step 1."""
        counts = self.counts if level is None else self.unit_counts.get(level, {})
        hidden = counts.get(variable, frozenset())
        return np.array([str(c) in hidden for c in clusters], dtype=bool) | self.size_hidden(clusters, level)

    def mask(self, table: pd.DataFrame, columns: dict, *, cluster_column: str = "cluster") -> pd.DataFrame:
        """The ``hidden=`` frame of :func:`hmlib.privacy.suppress_counts` for a per-cluster table.

        Parameters
        ----------
        table : pandas.DataFrame
            One or more rows per cluster, with ``cluster_column``.
        columns : dict
            Count column -> the variable it counts (``None``: the cluster's
            size, i.e. a count of patients).

        Returns
        -------
        pandas.DataFrame of bool
            Same index as ``table``; one column per entry of ``columns``.
        """
        clusters = table[cluster_column].tolist()
        return pd.DataFrame({col: (self.size_hidden(clusters) if var is None else self.count_hidden(clusters, var))
                             for col, var in columns.items()}, index=table.index)


def hidden_counts(registry) -> HiddenCounts:
    """Step 1's small-cell decision for a checked registry (the same call step 1 makes).

    Parameters
    ----------
    registry : hmlib.data.Registry

    Returns
    -------
    HiddenCounts
    """
    p = registry.params
    frame = registry.frame
    min_cell = int(p.privacy.min_cell)
    predictors = list(p.predictors)
    variables = [p.outcome] + [v for v in predictors if v != p.outcome]
    overview_raw = missingness_overview(frame, variables, p.cluster)
    incomplete = [v for v, k in zip(variables, overview_raw["n_missing"]) if k > 0]
    if not incomplete:
        return HiddenCounts(min_cell=min_cell, sizes=frozenset(), counts={})
    cells = hidden_cells(frame, incomplete, p.cluster, overview=publish_overview(overview_raw, min_cell),
                         min_cell=min_cell)
    table = cells.table
    labels = table["cluster"].astype(str).to_numpy()
    variable = table["variable"].to_numpy()
    sizes = frozenset(labels[cells.n])
    counts = {}
    for var in incomplete:
        rows = variable == var
        if var in cells.no_breakdown:
            hidden = rows
        else:
            hidden = rows & (cells.missing | cells.observed)
        counts[var] = frozenset(labels[hidden])
    broken_down = [v for v in incomplete if v not in cells.no_breakdown]
    by_unit = missingness_by_unit(frame, cells, broken_down, p.cluster, outermost_first(frame, p.higher_levels),
                                  min_cell=min_cell, notes=[])
    return HiddenCounts(min_cell=min_cell, sizes=sizes, counts=counts,
                        unit_sizes={level: res.hidden_units() for level, res in by_unit.items()},
                        unit_counts={level: {v: res.hidden_units(v) for v in res.variables}
                                     for level, res in by_unit.items()})
