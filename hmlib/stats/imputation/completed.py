"""The m completed data sets of an imputation, kept as the data once plus the imputed cells.

An imputation of a registry of ``n`` patients makes ``m`` completed data sets
that differ only in the cells that were missing. Holding ``m`` full copies
costs ``m`` times the data (20 x 1,000,000 rows x the model columns is
gigabytes, and a copy more for every worker process it is sent to);
:class:`CompletedData` holds the data once and, per imputed column, an
``m x (missing cells)`` array, and builds data set ``k`` as a DataFrame when
it is asked for (``completed[k]``, iteration). The frames are the ones the
engine always returned: the model columns of the input in input order and
index, only the missing cells filled, categorical columns with their dtype and
levels, imputed numeric columns as float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ImputedColumn", "CompletedData"]


@dataclass(frozen=True, eq=False)
class ImputedColumn:
    """The imputed cells of one column in each of the m data sets.

    Attributes
    ----------
    name : str
    rows : numpy.ndarray of bool
        The rows (of the data) whose cell was missing.
    values : numpy.ndarray, shape (m, rows.sum())
        The filled values as the engine codes them (categorical: level codes).
    categories : tuple
        Original labels of the codes (categorical and coded binary columns), else empty.
    """

    name: str
    rows: np.ndarray
    values: np.ndarray
    categories: tuple = ()

    def labels(self, k: int) -> np.ndarray:
        """The filled values of data set ``k`` as they appear in the frame (labels for coded columns)."""
        filled = self.values[k]
        if not self.categories:
            return filled.astype(float)
        cats = np.empty(len(self.categories), dtype=object)
        cats[:] = list(self.categories)
        return cats[filled.astype(int)]


class CompletedData(Sequence):
    """m completed data sets: ``base`` (the data with its gaps) and the :class:`ImputedColumn` of each gap.

    A read-only sequence of DataFrames; each access builds a new frame.

    Parameters
    ----------
    base : pandas.DataFrame
        The model columns of the data, gaps included (not modified).
    columns : sequence of ImputedColumn
        One per column with missing cells, in the engine's visiting order.
    m : int
        Number of data sets.
    """

    def __init__(self, base: pd.DataFrame, columns, m: int):
        self.base = base
        self.columns = tuple(columns)
        self.m = int(m)

    def __len__(self) -> int:
        return self.m

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.m))]
        k = int(k)
        if k < 0:
            k += self.m
        if not 0 <= k < self.m:
            raise IndexError(f"data set {k} of {self.m}")
        return self._frame(k)

    def _frame(self, k: int) -> pd.DataFrame:
        base = self.base
        out = base.copy()
        for column in self.columns:
            rows = column.rows
            filled = column.labels(k)
            col = out[column.name]
            if not column.categories:
                # imputed numbers need not be integers: numeric columns come back as float64
                col = pd.Series(pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan),
                                index=col.index, name=col.name)
                col[rows] = filled
            elif isinstance(col.dtype, pd.CategoricalDtype):
                col = col.copy()
                col[rows] = filled
            else:
                col = col.astype(object)
                col[rows] = filled
                try:
                    col = col.astype(base[column.name].dtype)
                except (TypeError, ValueError):
                    pass
            out[column.name] = col
        return out

    def imputed(self, name: str) -> ImputedColumn | None:
        """The imputed cells of column ``name`` (None when it had no missing cell)."""
        for column in self.columns:
            if column.name == name:
                return column
        return None

    def shifted(self, name: str, shift_by_row) -> "CompletedData":
        """The same data sets with the imputed cells of numeric column ``name`` shifted (row-wise shifts)."""
        out = []
        for column in self.columns:
            if column.name == name:
                if column.categories:
                    raise ValueError(f"'{name}' is categorical; only numeric imputed values can be shifted.")
                shift = np.broadcast_to(np.asarray(shift_by_row, dtype=float), column.rows.shape)[column.rows]
                column = ImputedColumn(column.name, column.rows, column.values + shift[None, :], column.categories)
            out.append(column)
        return CompletedData(self.base, out, self.m)
