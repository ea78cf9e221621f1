"""The missingness indicator counted per cluster, and the argument checks every analysis here shares.

Each analysis of :mod:`hmlib.stats.missingness` starts from the same
per-cluster counts (patients and missing values per cluster and variable),
made by :func:`missing_counts`, and refuses the same bad input with the same
message (:func:`check_columns`, :func:`check_level`, :func:`cluster_index`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, FitError, ParamsError

__all__ = ["check_columns", "check_level", "check_higher_levels", "missing_indicator", "level_label", "cluster_index",
           "missing_counts", "is_numeric"]


def check_columns(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """DataError unless ``frame`` is a DataFrame holding every one of ``columns``.

    Parameters
    ----------
    frame : pandas.DataFrame
    columns : sequence of str
    where : str
        The analysis, named at the start of the message.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: column(s) {missing} not in the data "
                        f"(columns: {list(frame.columns)[:20]}).")


def check_level(level: float) -> float:
    """A confidence or coverage level as a float strictly between 0 and 1 (ParamsError otherwise)."""
    if not 0.0 < float(level) < 1.0:
        raise ParamsError(f"level must be between 0 and 1, got {level!r}.")
    return float(level)


def check_higher_levels(higher_levels: Sequence[str], where: str) -> list:
    """The levels above the cluster as a list; ParamsError naming ``where`` when there are none."""
    higher = list(higher_levels)
    if not higher:
        raise ParamsError(f"{where} needs at least one level above the cluster.")
    return higher


def missing_indicator(frame: pd.DataFrame, variable: str) -> np.ndarray:
    """``variable``'s missingness indicator (1.0 where missing) over every row; FitError when it is constant."""
    y = frame[variable].isna().to_numpy(dtype=float)
    if y.min() == y.max():
        state = "missing" if y[0] else "recorded"
        raise FitError(f"{variable} is {state} for every patient; its missingness cannot be modelled.")
    return y


def level_label(level: float) -> str:
    """A level as it is written in labels and sentences: ``0.95 -> "95%"``, ``0.998 -> "99.8%"``."""
    return f"{100 * level:.10g}%"


def cluster_index(frame: pd.DataFrame, cluster: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique cluster labels and each row's position among them.

    Parameters
    ----------
    frame : pandas.DataFrame
    cluster : str
        Cluster column.
    where : str
        The analysis, named in the message.

    Returns
    -------
    labels : numpy.ndarray of object
        Sorted labels (as text when the labels cannot be sorted as they are).
    codes : numpy.ndarray of int64
        Position of each row's label in ``labels``.

    Raises
    ------
    DataError
        A row has no cluster label.
    """
    values = frame[cluster]
    if values.isna().any():
        raise DataError(f"{where}: {int(values.isna().sum())} row(s) have no {cluster}; "
                        "every patient needs a cluster label (drop or label those rows first).")
    try:
        codes, labels = pd.factorize(values, sort=True)
    except TypeError:
        codes, labels = pd.factorize(values.astype(str), sort=True)
    return np.asarray(labels, dtype=object), np.asarray(codes, dtype=np.int64)


def missing_counts(frame: pd.DataFrame, variables: Sequence[str], cluster: str,
                   where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patients and missing values per cluster and variable.

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
    cluster : str
    where : str
        The analysis, named in error messages.

    Returns
    -------
    labels : numpy.ndarray
        Sorted cluster labels (``m``).
    sizes : numpy.ndarray of int
        Patients per cluster (``m``).
    missing : numpy.ndarray of int64
        Missing values, clusters x variables (``m x v``).
    """
    check_columns(frame, [cluster, *variables], where)
    labels, codes = cluster_index(frame, cluster, where)
    m = labels.size
    sizes = np.bincount(codes, minlength=m)
    missing = np.column_stack([
        np.bincount(codes, weights=frame[v].isna().to_numpy(dtype=float), minlength=m)
        for v in variables
    ]).astype(np.int64) if len(variables) else np.zeros((m, 0), dtype=np.int64)
    return labels, sizes, missing


def is_numeric(series: pd.Series) -> bool:
    """Whether a column enters a model as a number (numeric or boolean dtype) rather than as levels."""
    return bool(pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))
