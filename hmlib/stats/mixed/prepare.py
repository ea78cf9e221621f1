"""Checking the inputs of a fit and preparing them: rows sorted by cluster, orthogonalised design.

:func:`prepare` turns ``y, X, groups`` into a :class:`Prepared` problem (or
raises :class:`~hmlib.exceptions.FitError` saying what to fix); the
gaussian and binomial fitters work on that. See :mod:`hmlib.stats.mixed`
for why the design is replaced by ``Xs = Q sqrt(n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg

from hmlib.exceptions import FitError

__all__ = ["FAMILIES", "Prepared", "prepare", "readonly", "check_rank"]

#: The model families the fitter knows.
FAMILIES = ("gaussian", "binomial")
# A column is "collinear" when it is reproduced by the others to this relative
# precision (R's lm() uses the same tolerance for its pivoted QR).
_COLLINEAR_TOL = 1e-7


@dataclass(frozen=True, eq=False)
class Prepared:
    """A checked fitting problem, rows sorted by cluster.

    Attributes
    ----------
    y : numpy.ndarray
        Outcome, sorted by cluster.
    Xs : numpy.ndarray
        ``Q sqrt(n)`` from the thin QR decomposition of X, sorted by cluster
        (``Xs'Xs = n I``).
    to_original : numpy.ndarray
        ``beta = to_original @ beta_s``.
    codes : numpy.ndarray
        Cluster index of each (sorted) row.
    starts : numpy.ndarray
        First row of each cluster.
    sizes : numpy.ndarray
        Rows per cluster.
    labels : numpy.ndarray
        Sorted unique cluster labels.
    term_names : tuple of str
    """

    y: np.ndarray
    Xs: np.ndarray
    to_original: np.ndarray
    codes: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    term_names: tuple

    @property
    def n(self) -> int:
        """Rows."""
        return self.y.shape[0]

    @property
    def m(self) -> int:
        """Clusters."""
        return self.sizes.shape[0]

    def seg_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of rows of ``values`` within each cluster (axis 0)."""
        return np.add.reduceat(values, self.starts, axis=0)


def _as_float_array(values, what: str, ndim: int) -> np.ndarray:
    try:
        if isinstance(values, (pd.Series, pd.DataFrame)):
            # nullable dtypes (Int64, boolean, Float64) hold pd.NA: make it NaN first
            arr = values.to_numpy(dtype=float, na_value=np.nan)
        else:
            arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise FitError(f"{what} must be numeric ({exc}). Code categorical variables as 0/1 columns "
                       "before fitting.") from None
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != ndim:
        raise FitError(f"{what} must be {ndim}-dimensional, got shape {arr.shape}.")
    return arr


def check_rank(r: np.ndarray, n: int, names: tuple) -> None:
    """Raise FitError naming the columns involved if X (with QR factor ``r``) is rank deficient.

    The singular values of X with unit-norm columns are those of ``r`` with
    unit-norm columns (X = QR), so only the p x p factor is decomposed.
    """
    p = r.shape[1]
    if p > n:
        raise FitError(f"X has more columns ({p}) than rows ({n}): the fixed effects are not "
                       "identifiable. Use fewer predictors or more data.")
    norms = np.sqrt(np.einsum("ij,ij->j", r, r))
    zero = [names[j] for j in range(p) if norms[j] == 0]
    if zero:
        raise FitError(f"X is rank deficient: column(s) {', '.join(map(repr, zero))} are all zero. "
                       "Drop them from the model.")
    _, sv, vt = np.linalg.svd(r / norms)
    small = sv < _COLLINEAR_TOL * sv[0]
    if small.any():
        null = vt[small]
        involved = np.flatnonzero(np.abs(null).max(axis=0) > 1e-3)
        cols = ", ".join(repr(names[j]) for j in involved)
        raise FitError(f"X is rank deficient (collinear columns): {cols} are linearly dependent "
                       f"({int(small.sum())} redundant column(s)). Drop one of them, or merge "
                       "categories that never differ, and refit.")


def prepare(y, X, groups, family: str, term_names) -> Prepared:
    """Check ``y, X, groups`` and prepare them for the fitters.

    Parameters
    ----------
    y, X, groups, family, term_names
        As for :func:`hmlib.stats.mixed.fit_random_intercept`.

    Returns
    -------
    Prepared

    Raises
    ------
    FitError
        Each problem named with what to do: no rows, lengths that differ,
        NaN or infinite values, missing cluster labels, a binomial outcome
        that is not 0/1 or is constant, fewer than 2 clusters, a rank
        deficient X (the collinear columns named), an unknown family.
    """
    if family not in FAMILIES:
        raise FitError(f"unknown family {family!r}: use 'gaussian' or 'binomial'.")
    if term_names is None and isinstance(X, pd.DataFrame):
        term_names = tuple(str(c) for c in X.columns)
    y = _as_float_array(y, "y", 1)
    X = _as_float_array(X, "X", 2)
    if isinstance(groups, (pd.Series, pd.Index)):
        groups = groups.to_numpy()
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise FitError(f"groups must be 1-dimensional, got shape {groups.shape}.")
    n = y.shape[0]
    if n == 0 or X.shape[0] == 0 or groups.shape[0] == 0:
        raise FitError("no rows to fit: y, X and groups must have at least one row "
                       "(check that the complete-case filter left some data).")
    if X.shape[0] != n or groups.shape[0] != n:
        raise FitError(f"length mismatch: y has {n} rows, X has {X.shape[0]}, groups has "
                       f"{groups.shape[0]}. Build them from the same rows.")
    p = X.shape[1]
    if p == 0:
        raise FitError("X has no columns: include at least an intercept column.")
    names = tuple(f"x{j}" for j in range(p)) if term_names is None else tuple(str(t) for t in term_names)
    if len(names) != p:
        raise FitError(f"term_names has {len(names)} names but X has {p} columns.")
    if not np.isfinite(y).all():
        raise FitError(f"y has {int((~np.isfinite(y)).sum())} missing or infinite value(s): "
                       "drop those rows (or impute) before fitting.")
    bad_cols = [names[j] for j in range(p) if not np.isfinite(X[:, j]).all()]
    if bad_cols:
        raise FitError(f"X has missing or infinite values in column(s) "
                       f"{', '.join(map(repr, bad_cols))}: drop those rows (or impute) before fitting.")
    if groups.dtype.kind in "fc":
        bad_groups = ~np.isfinite(groups)
    else:
        bad_groups = np.asarray(pd.isna(groups), dtype=bool)
    if bad_groups.any():
        raise FitError(f"groups has {int(bad_groups.sum())} missing cluster label(s): "
                       "drop those rows before fitting.")
    if family == "binomial":
        if not np.isin(y, (0.0, 1.0)).all():
            raise FitError("binomial y must be 0/1; found values "
                           f"{np.unique(y[~np.isin(y, (0.0, 1.0))])[:5].tolist()}.")
        if y.min() == y.max():
            raise FitError(f"binomial y is constant (all {int(y[0])}): there is nothing to model.")
    try:
        codes, uniques = pd.factorize(groups, sort=True)
    except TypeError as exc:
        raise FitError(f"cluster labels cannot be sorted ({exc}); use labels of one type "
                       "(all strings or all integers).") from None
    labels = np.asarray(uniques)
    m = labels.shape[0]
    if m < 2:
        raise FitError(f"only {m} cluster: a cluster variance needs at least 2 clusters. "
                       "Fit an ordinary regression instead.")
    if X.shape[1] > n:
        check_rank(X, n, names)  # raises: more columns than rows
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    y = y[order]
    X = X[order]
    sizes = np.bincount(codes, minlength=m)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    q, r = np.linalg.qr(X)
    check_rank(r, n, names)
    root_n = np.sqrt(n)
    to_original = linalg.solve_triangular(r, np.eye(p)) * root_n
    return Prepared(y=y, Xs=q * root_n, to_original=to_original, codes=codes, starts=starts,
                     sizes=sizes, labels=labels, term_names=names)


def readonly(*arrays):
    """Make the arrays of a result read-only (a frozen result holds them without copying)."""
    for a in arrays:
        a.setflags(write=False)
