"""One change point in a sequence of binomial rates: a likelihood-ratio scan with a permutation p-value.

Periods ``1..P`` in calendar order have ``k_p`` missing values out of
``n_p``. For each split after period ``c`` the statistic is the binomial
likelihood ratio of two rates (before, after) against one:

``LR_c = 2 [l(K_1, N_1) + l(K_2, N_2) - l(K, N)]``, ``l(k, n) = k log(k / n) + (n - k) log(1 - k / n)``

and the scan statistic is ``max_c LR_c`` over the splits leaving at least
``min_visits`` visits on each side (Worsley 1983's maximum likelihood ratio
for one change in binomial sequences). Its null distribution is not
chi-square (the maximum over splits is larger), so the p-value is by
permutation: under "one rate throughout" every arrangement of the ``K``
missing values among the ``N`` visits is equally likely given the totals,
so the period counts are redrawn from the multivariate hypergeometric
distribution (``numpy.random.Generator.multivariate_hypergeometric``) and
``p = (1 + #{max LR* >= max LR}) / (B + 1)``.

This treats visits as exchangeable. Visits of one patient are not
independent (a patient who misses one visit misses others), so when
missingness clusters in patients the permutation distribution is too
narrow and the p-value too small: the scan is a screen that points at a
period worth a look, not a test of a documentation change.

References
----------
Worsley KJ (1983). The power of likelihood ratio and cumulative sum tests
for a change in a binomial probability. Biometrika 70(2):455-464.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmlib.exceptions import DataError, ParamsError

__all__ = ["ChangePointResult", "binomial_change_point", "split_statistics"]


def _loglik(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood at the MLE, ``0 log 0 = 0``, vectorised."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, k / np.where(n > 0, n, 1), 0.0)
        a = np.where(k > 0, k * np.log(np.where(p > 0, p, 1.0)), 0.0)
        b = np.where(n - k > 0, (n - k) * np.log(np.where(p < 1, 1.0 - p, 1.0)), 0.0)
    return a + b


def split_statistics(k: np.ndarray, n: np.ndarray, min_visits: int = 1) -> np.ndarray:
    """``LR_c`` for each split after period ``c`` (last axis), NaN where a side has fewer than ``min_visits``.

    Parameters
    ----------
    k, n : numpy.ndarray, shape (..., P)
        Missing values and visits per period.
    min_visits : int

    Returns
    -------
    numpy.ndarray, shape (..., P - 1)
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    k1 = np.cumsum(k, axis=-1)[..., :-1]
    n1 = np.cumsum(n, axis=-1)[..., :-1]
    big_k = k.sum(axis=-1, keepdims=True)
    big_n = n.sum(axis=-1, keepdims=True)
    lr = 2.0 * (_loglik(k1, n1) + _loglik(big_k - k1, big_n - n1) - _loglik(big_k, big_n))
    ok = (n1 >= min_visits) & (big_n - n1 >= min_visits)
    return np.where(ok, np.maximum(lr, 0.0), np.nan)


@dataclass(frozen=True)
class ChangePointResult:
    """The most likely single change in a sequence of rates, and how unusual it is.

    Attributes
    ----------
    split : int or None
        Index of the last period before the change (None when no split is allowed).
    statistic : float
        ``max LR`` over the allowed splits.
    p_value : float
        Permutation p-value of the maximum (visits treated as exchangeable; a screen).
    n_permutations : int
    rate_before, rate_after : float
        Pooled rates of the two segments.
    visits_before, visits_after : int
    method : str
    """

    split: int | None
    statistic: float
    p_value: float
    n_permutations: int
    rate_before: float
    rate_after: float
    visits_before: int
    visits_after: int
    method: str = "binomial likelihood-ratio scan, one change point, permutation p-value (visits exchangeable)"


def binomial_change_point(k, n, *, n_permutations: int = 999, seed=None, min_visits: int = 1,
                          null_counts=None) -> ChangePointResult:
    """Scan a sequence of binomial counts for one change in rate.

    Parameters
    ----------
    k, n : array_like, shape (P,)
        Missing values and visits per period, in calendar order (periods
        without visits may be included; they never separate anything).
    n_permutations : int, default 999
        Permutations for the p-value.
    seed : int, numpy.random.Generator or None
        Source of the permutations.
    min_visits : int, default 1
        Fewest visits on either side of a split.
    null_counts : pair of numpy.ndarray, optional
        ``(k*, n*)``, each shape (B, P'), counts from the caller's own
        permutations (e.g. of whole patients in calendar time, which keeps
        the visits of a patient together); then ``n_permutations`` and
        ``seed`` are not used.

    Returns
    -------
    ChangePointResult

    Raises
    ------
    DataError
        Counts that are not whole numbers with ``0 <= k <= n``; fewer than two periods.
    ParamsError
        ``n_permutations`` or ``min_visits`` below 1.

    References
    ----------
    Worsley (1983), Biometrika 70(2). See the module docstring.

    Examples
    --------
    >>> res = binomial_change_point([8, 9, 7, 2, 1, 2, 3], [20, 20, 20, 20, 20, 20, 20], seed=1)
    >>> res.split, round(res.rate_before, 3), round(res.rate_after, 3)
    (2, 0.4, 0.1)
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if k.ndim != 1 or k.shape != n.shape or k.size < 2:
        raise DataError("binomial_change_point: k and n must be sequences of the same length, at least 2 periods.")
    if (k < 0).any() or (k > n).any() or (k != np.round(k)).any() or (n != np.round(n)).any():
        raise DataError("binomial_change_point: need whole counts with 0 <= k <= n in every period.")
    if isinstance(n_permutations, bool) or int(n_permutations) < 1 or int(min_visits) < 1:
        raise ParamsError("binomial_change_point: n_permutations and min_visits must be at least 1.")
    lr = split_statistics(k, n, int(min_visits))
    if np.isnan(lr).all():
        return ChangePointResult(None, float("nan"), float("nan"), 0, float("nan"), float("nan"), 0, 0)
    split = int(np.nanargmax(lr))
    statistic = float(lr[split])
    method = ChangePointResult.method
    if null_counts is None:
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_hypergeometric(n.astype(np.int64), int(k.sum()), size=int(n_permutations))
        null_stats = split_statistics(draws, np.broadcast_to(n, draws.shape), int(min_visits))
    else:
        null_stats = split_statistics(null_counts[0], null_counts[1], int(min_visits))
        n_permutations = null_stats.shape[0]
        method = "binomial likelihood-ratio scan, one change point, permutation p-value (caller's permutations)"
    with np.errstate(invalid="ignore"):
        null_max = np.nan_to_num(np.nanmax(np.where(np.isnan(null_stats), -np.inf, null_stats), axis=1),
                                 neginf=0.0)
    # a tolerance so that ties in floating point count as ties
    exceed = int((null_max >= statistic - 1e-9 * max(1.0, statistic)).sum())
    k1, n1 = k[: split + 1].sum(), n[: split + 1].sum()
    k2, n2 = k[split + 1:].sum(), n[split + 1:].sum()
    return ChangePointResult(split=split, statistic=statistic, p_value=(1 + exceed) / (int(n_permutations) + 1),
                             n_permutations=int(n_permutations), rate_before=float(k1 / n1),
                             rate_after=float(k2 / n2), visits_before=int(n1), visits_after=int(n2),
                             method=method)
