"""Coding predictors into design matrices, and fitting the analysis model.

Numeric predictors enter as they are. Categorical predictors use treatment
coding: the first level (sorted) is the reference and each other level gets a
0/1 column named ``name[level]`` (the term names of ``estimates.csv``; lme4
calls the same column ``namelevel``). Levels are fixed once for the whole
registry (:attr:`hmlib.data.Registry.levels`) so that a subset (complete
cases, one imputed data set) is coded the same way as the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.exceptions import FitError
from hmlib.stats.mixed import fit_random_intercept
from hmlib.stats.mixed.nested_intercepts import fit_nested_intercepts
from hmlib.stats.mixed.prepare import check_rank

__all__ = ["DesignMatrix", "design_matrix", "fit_design", "fit_analysis_model", "check_full_rank", "ordinal_ranks",
           "outermost_first"]


@dataclass(frozen=True)
class DesignMatrix:
    """A design matrix and the names of its columns.

    Attributes
    ----------
    X : numpy.ndarray
        n x p float matrix, intercept column first when requested.
    term_names : tuple of str
    rows : numpy.ndarray
        Boolean mask over the input frame: rows used (no missing value in any
        model column).
    """

    X: np.ndarray
    term_names: tuple
    rows: np.ndarray


def design_matrix(frame: pd.DataFrame, predictors, levels: dict | None = None, *,
                  intercept: bool = True, extra_rows_mask=None) -> DesignMatrix:
    """Build the design matrix of ``predictors`` from ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
    predictors : sequence of str
    levels : dict, optional
        ``{column: levels}`` for categorical predictors; a column not listed
        is categorical when its dtype is not numeric (levels then sorted).
    intercept : bool
        Add a leading ``Intercept`` column.
    extra_rows_mask : array of bool, optional
        Further rows to require (e.g. outcome observed).

    Returns
    -------
    DesignMatrix
        Rows with a missing value in any predictor are left out (listwise).
    """
    levels = dict(levels or {})
    rows = np.ones(len(frame), dtype=bool)
    if extra_rows_mask is not None:
        rows &= np.asarray(extra_rows_mask, dtype=bool)
    for col in predictors:
        rows &= frame[col].notna().to_numpy()
    columns: list[np.ndarray] = []
    names: list[str] = []
    if intercept:
        columns.append(np.ones(int(rows.sum())))
        names.append("Intercept")
    for col in predictors:
        series = frame[col]
        if col in levels or not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            found = levels.get(col) or sorted(series.dropna().astype(str).unique().tolist())
            values = series.astype(str).to_numpy()[rows]
            for level in found[1:]:
                columns.append((values == str(level)).astype(float))
                names.append(f"{col}[{level}]")
        else:
            columns.append(series.to_numpy(dtype=float)[rows])
            names.append(col)
    X = np.column_stack(columns) if columns else np.empty((int(rows.sum()), 0))
    return DesignMatrix(X=X, term_names=tuple(names), rows=rows)


def outermost_first(frame: pd.DataFrame, higher_levels, *, rows=None) -> list:
    """The levels above the cluster, outermost first: a level nested in another has more units.

    ``hmlib.data`` checks that the levels nest (and do not group the clusters
    identically), so ordering by the number of units is ordering by nesting.

    Parameters
    ----------
    frame : pandas.DataFrame
    higher_levels : sequence of str
        Columns of the levels, in any order.
    rows : array of bool, optional
        Count units among these rows only (e.g. the rows a model uses).

    Returns
    -------
    list of str

    Examples
    --------
    >>> frame = pd.DataFrame({"region": ["n", "s", "e", "w"], "country": ["A", "A", "B", "B"]})
    >>> outermost_first(frame, ["region", "country"])
    ['country', 'region']
    """
    def units(name):
        values = frame[name] if rows is None else frame.loc[rows, name]
        return values.nunique()

    return sorted(higher_levels, key=units)


def fit_design(frame: pd.DataFrame, design: DesignMatrix, *, outcome: str, cluster: str,
               family: str, nagq: int = 1, higher_levels=(), random_slopes=()):
    """Fit ``outcome ~ design + (1 | cluster)`` on the design's rows.

    With ``higher_levels`` (columns, in any order: they are nested outermost
    first by their number of units) the clusters sit in units of those
    levels, each with its random intercept:
    ``(1 | country) + (1 | country:hospital)``
    (:func:`hmlib.stats.mixed.nested_intercepts.fit_nested_intercepts`,
    Laplace for binomial). With ``random_slopes`` (numeric columns of the
    frame, usually also among the design's terms) each cluster has a random
    slope on each, correlated with its intercept (unstructured covariance):
    ``(1 + week | patient)``, also with higher levels.

    Returns
    -------
    hmlib.stats.mixed.RandomInterceptFit
        A :class:`~hmlib.stats.mixed.nested_intercepts.NestedInterceptFit` with higher levels or slopes.
    """
    if design.X.shape[0] == 0:
        raise FitError(f"no row has {outcome}, {', '.join(design.term_names)} and {cluster} all recorded.")
    y = frame[outcome].to_numpy(dtype=float)[design.rows]
    groups = frame[cluster].to_numpy()[design.rows]
    if higher_levels or random_slopes:
        higher = {name: frame[name].to_numpy()[design.rows]
                  for name in outermost_first(frame, higher_levels, rows=design.rows)}
        slopes = {name: frame[name].to_numpy(dtype=float)[design.rows] for name in random_slopes}
        return fit_nested_intercepts(y, design.X, groups, higher, family=family, term_names=design.term_names,
                                     cluster_name=cluster, nagq=nagq, slopes=slopes)
    return fit_random_intercept(y, design.X, groups, family=family, nagq=nagq,
                                term_names=design.term_names, cluster_name=cluster)


def fit_analysis_model(frame: pd.DataFrame, *, outcome: str, predictors, cluster: str,
                       family: str, levels: dict | None = None, nagq: int = 1, higher_levels=(), random_slopes=()):
    """Fit ``outcome ~ predictors + (1 | cluster)`` on the rows with no missing value.

    Parameters
    ----------
    frame : pandas.DataFrame
    outcome, cluster : str
    predictors : sequence of str
    family : {"binomial", "gaussian"}
    levels : dict, optional
        Categorical levels (see :func:`design_matrix`).
    nagq : int
        1 for Laplace; more for adaptive Gauss-Hermite (binomial, one level only).
    higher_levels : sequence of str
        Columns of the levels above the cluster: nested random intercepts
        (see :func:`fit_design`).
    random_slopes : sequence of str
        Numeric columns with a random slope per cluster (see :func:`fit_design`); rows missing one are
        left out like rows missing a predictor.

    Returns
    -------
    hmlib.stats.mixed.RandomInterceptFit

    Raises
    ------
    FitError
        No complete rows, or the model cannot be fitted.
    """
    rows = frame[outcome].notna() & frame[cluster].notna()
    for name in (*higher_levels, *random_slopes):
        rows &= frame[name].notna()
    design = design_matrix(frame, predictors, levels, extra_rows_mask=rows)
    return fit_design(frame, design, outcome=outcome, cluster=cluster, family=family, nagq=nagq,
                      higher_levels=tuple(higher_levels), random_slopes=tuple(random_slopes))


def check_full_rank(design: DesignMatrix) -> None:
    """Raise FitError naming the linearly dependent columns when ``design`` is rank deficient.

    The same check the fitter makes (:func:`hmlib.stats.mixed.prepare.check_rank`), available before any
    model is fitted.
    """
    X = np.asarray(design.X, dtype=float)
    if not len(X):
        return
    check_rank(np.linalg.qr(X)[1] if X.shape[0] >= X.shape[1] else X, X.shape[0], tuple(design.term_names))


def ordinal_ranks(column: str, levels, order=None) -> np.ndarray:
    """Rank (0 = lowest) of each of ``levels`` on an ordinal scale.

    Parameters
    ----------
    column : str
        For the error message.
    levels : sequence
        The levels in the registry's order (the first the reference of the treatment coding).
    order : sequence, optional
        The levels from lowest to highest. None: as numbers when every level
        reads as a number, else in the order of ``levels``.

    Returns
    -------
    numpy.ndarray of int

    Raises
    ------
    FitError
        ``order`` does not list every level exactly once.

    Examples
    --------
    >>> ordinal_ranks("gcs", ["13-15", "3-8", "9-12"], ["3-8", "9-12", "13-15"]).tolist()
    [2, 0, 1]
    >>> ordinal_ranks("grade", ["1", "10", "2"]).tolist()
    [0, 2, 1]
    """
    found = [str(level) for level in levels]
    if order is None:
        try:
            numbers = [float(level) for level in found]
        except ValueError:
            return np.arange(len(found))
        return np.argsort(np.argsort(numbers, kind="stable"), kind="stable")
    order = [str(level) for level in order]
    if sorted(order) != sorted(found):
        raise FitError(f"the ordinal order of '{column}' lists {order}, but its levels are {found}; list every "
                       "level once, lowest first.")
    return np.array([order.index(level) for level in found])
