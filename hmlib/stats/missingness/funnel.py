"""Funnel plots of cluster missing rates: exact binomial control limits around the pooled rate.

The limits are exact binomial quantiles with Spiegelhalter's (2005)
interpolation, without overdispersion adjustment; the formula and its
reasons are in :mod:`hmlib.stats.missingness` ("Funnel plot").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError, ParamsError
from hmlib.stats.missingness.counts import check_level, level_label, missing_counts

__all__ = ["binomial_control_limits", "FunnelResult", "missingness_funnel", "limit_tag"]


def binomial_control_limits(p0: float, n, level: float):
    """Exact binomial funnel limits for a proportion, interpolated (Spiegelhalter 2005).

    Parameters
    ----------
    p0 : float
        Target (pooled) proportion.
    n : array_like
        Cluster sizes (>= 1).
    level : float
        Two-sided coverage, e.g. 0.95 or 0.998.

    Returns
    -------
    lower, upper : numpy.ndarray
        Limits on the proportion scale.

    Examples
    --------
    >>> lo, hi = binomial_control_limits(0.5, [100], 0.95)
    >>> bool(0.39 < lo[0] < 0.41 and 0.59 < hi[0] < 0.61)
    True
    """
    level = check_level(level)
    n = np.asarray(n, dtype=float)
    if (n < 1).any():
        raise DataError("binomial_control_limits: cluster sizes must be >= 1.")
    if not 0.0 <= p0 <= 1.0:
        raise DataError(f"binomial_control_limits: p0 must be in [0, 1], got {p0}.")

    def limit(q):
        r = stats.binom.ppf(q, n, p0)
        f_r = stats.binom.cdf(r, n, p0)
        f_below = stats.binom.cdf(r - 1, n, p0)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(f_r > f_below, (f_r - q) / (f_r - f_below), 0.0)
        return np.clip((r - a) / n, 0.0, 1.0)

    tail = (1.0 - level) / 2.0
    return limit(tail), limit(1.0 - tail)


@dataclass(frozen=True)
class FunnelResult:
    """Funnel-plot data for one variable.

    Attributes
    ----------
    variable : str
    overall_rate : float
        Pooled share missing (the funnel's centre line).
    n_total, n_missing_total : int
    levels : tuple of float
        Coverages of the control limits, inner first.
    method : str
        How the limits were computed.
    table : pandas.DataFrame
        One row per cluster: ``cluster, n, n_missing, rate``, for each level
        ``lower_<pct>, upper_<pct>`` (e.g. ``lower_95``, ``upper_99.8``) and
        ``position`` (``"above 99.8%"``, ``"above 95%"``, ``"within 95%"``,
        ``"below 95%"``, ``"below 99.8%"``).
    curve : pandas.DataFrame
        The limits over a grid of sizes, for drawing: ``n`` and the same
        ``lower_*``/``upper_*`` columns.
    above, below : tuple
        Clusters beyond the outermost limit, most extreme first.
    """

    variable: str
    overall_rate: float
    n_total: int
    n_missing_total: int
    levels: tuple
    method: str
    table: pd.DataFrame
    curve: pd.DataFrame
    above: tuple
    below: tuple

    @property
    def outer_level(self) -> float:
        """The outermost coverage: a cluster beyond it is an outlier."""
        return max(self.levels)


def limit_tag(level: float) -> str:
    """Suffix of a level's limit columns: ``0.95 -> "95"`` (``lower_95``), ``0.998 -> "99.8"``."""
    return f"{100 * level:.10g}"


def missingness_funnel(frame: pd.DataFrame, variable: str, cluster: str, *,
                       levels: Sequence[float] = (0.95, 0.998)) -> FunnelResult:
    """Cluster missing rates against cluster size, with binomial control limits.

    Parameters
    ----------
    frame : pandas.DataFrame
    variable : str
    cluster : str
    levels : sequence of float, default (0.95, 0.998)
        Coverages of the control limits. The outermost defines outliers.

    Returns
    -------
    FunnelResult

    Notes
    -----
    Exact binomial limits with interpolation (Spiegelhalter 2005) around the
    pooled rate; no overdispersion adjustment (see the module docstring).
    """
    levels = tuple(sorted(check_level(lv) for lv in levels))
    if not levels:
        raise ParamsError("missingness_funnel: give at least one level.")
    labels, sizes, missing = missing_counts(frame, [variable], cluster, "missingness_funnel")
    k = missing[:, 0]
    n_total = int(sizes.sum())
    p0 = float(k.sum() / n_total)
    rate = k / sizes
    table = pd.DataFrame({"cluster": labels, "n": sizes, "n_missing": k, "rate": rate})
    grid = np.unique(np.round(np.geomspace(1, max(int(sizes.max()), 2) * 1.05, 300)).astype(int))
    curve = pd.DataFrame({"n": grid})
    position = np.full(labels.size, f"within {level_label(levels[0])}", dtype=object)
    eps = 1e-12
    for level in levels:
        tag = limit_tag(level)
        lo, hi = binomial_control_limits(p0, sizes, level)
        table[f"lower_{tag}"] = lo
        table[f"upper_{tag}"] = hi
        glo, ghi = binomial_control_limits(p0, grid, level)
        curve[f"lower_{tag}"] = glo
        curve[f"upper_{tag}"] = ghi
        # later (wider) levels overwrite: a cluster is placed by its most extreme limit
        position = np.where(rate > hi + eps, f"above {level_label(level)}", position)
        position = np.where(rate < lo - eps, f"below {level_label(level)}", position)
    table["position"] = position
    outer = level_label(levels[-1])
    distance = rate - p0
    above_idx = [i for i in np.argsort(-distance, kind="stable") if position[i] == f"above {outer}"]
    below_idx = [i for i in np.argsort(distance, kind="stable") if position[i] == f"below {outer}"]
    return FunnelResult(
        variable=variable, overall_rate=p0, n_total=n_total, n_missing_total=int(k.sum()),
        levels=levels,
        method="exact binomial limits around the pooled rate, interpolated (Spiegelhalter 2005)",
        table=table, curve=curve,
        above=tuple(labels[i] for i in above_idx), below=tuple(labels[i] for i in below_idx),
    )
