"""Small cells across nested levels: a unit's counts are the sums of its members' counts.

A table by country published beside a table by hospital adds one relation
per country and count column: the country's count is the sum of its
hospitals' counts. Two attacks follow, and this module blocks both along
each published relation (as :mod:`hmlib.privacy` does within one table):

* **A unit total shown gives back its members' hidden cells**: the country
  count less its hospitals' shown counts is the sum of its hidden ones. With
  one hidden hospital cell that *is* the cell; with several, a sum below
  ``min_cell`` plus one per other hidden cell says each is small
  (:func:`exposed_by_totals`; the "protection interval" of
  :mod:`hmlib.privacy`).
* **A unit cell hidden by complementary suppression that its members give
  back**: a country count whose hospital cells are all shown is their sum,
  so hiding it protects nothing (call it *public*).
  :func:`suppress_unit_counts` suppresses the unit table around the
  members' decision, which it keeps as it is, and checks every relation of
  the unit table counting only cells that hide something (hidden and not
  public): the hidden members' cells inside the hidden units of a column,
  and inside a row whose total is shown, must be protected (two or more,
  their sum less one per other cell at least ``min_cell``); a total hidden
  with all its parts known is hidden in vain. An unprotected relation gets
  the shown, non-public cell hiding most members' counts hidden from the
  start, and the table is suppressed again until every relation is
  protected, or no such cell is left (the column then *fails*: the caller
  must not publish it).

Terms
    *Members* are the rows of the finer table (hospitals), *units* the rows
    of the coarser one (countries); *atoms* are the members' hidden cells.
    The members' table is assumed to publish column totals and to be
    protected on its own (:func:`hmlib.privacy.suppress_counts`), so the
    sum of all atoms of a column is known and protected.

As in :mod:`hmlib.privacy`, this prevents recovery by subtraction along each
published relation; it does not solve the full linear-programming problem.
Step 2 (:mod:`hmlib.steps.complete_case_levels`) uses :func:`exposed_by_totals`
for its retention tables, step 1 (:mod:`hmlib.steps.diagnose_units`)
:func:`suppress_unit_counts` for its heatmap and funnels by higher unit.

References
----------
Hundepool A, Domingo-Ferrer J, Franconi L, et al. *Statistical Disclosure
Control*. Wiley, 2012, chapter 4 (linked and hierarchical tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.privacy import SuppressedTable, suppress_counts

__all__ = ["exposed_by_totals", "UnitSuppression", "suppress_unit_counts"]


def _atoms(units: pd.Series, values: pd.DataFrame, hidden: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per unit and column of ``hidden``: the number of members' hidden cells and their sum."""
    flags = hidden.to_numpy(dtype=bool)
    cells = values[list(hidden.columns)].to_numpy(dtype=float)
    key = units.to_numpy()
    count = pd.DataFrame(flags.astype(int), columns=hidden.columns).groupby(key, observed=True).sum()
    total = pd.DataFrame(np.where(flags, cells, 0.0), columns=hidden.columns).groupby(key, observed=True).sum()
    return count, total


def exposed_by_totals(units: pd.Series, values: pd.DataFrame, hidden: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """Units whose total would give back their members' hidden cells.

    A unit's total less its members' shown cells is the sum of its hidden
    ones: unsafe with one hidden cell, or with hidden cells whose sum less
    one per other hidden cell is below ``min_cell``.

    Parameters
    ----------
    units : pandas.Series
        The unit of each member row (aligned with ``values`` and ``hidden``).
    values : pandas.DataFrame
        The members' counts (at least the columns of ``hidden``).
    hidden : pandas.DataFrame of bool
        The members' hidden cells.
    min_cell : int

    Returns
    -------
    pandas.DataFrame of bool
        One row per unit (indexed by unit label, sorted), one column per column of ``hidden``: True where
        the unit's total in that column must not be shown.

    Examples
    --------
    >>> units = pd.Series(["X", "X", "Y", "Y"])
    >>> values = pd.DataFrame({"n": [40, 30, 25, 25]})
    >>> hidden = pd.DataFrame({"n": [True, False, True, True]})
    >>> exposed_by_totals(units, values, hidden, 11)["n"].tolist()
    [True, False]
    """
    count, total = _atoms(units, values, hidden)
    return ((count >= 1) & ((count < 2) | (total - (count - 1) < min_cell))).astype(bool)


@dataclass(frozen=True)
class UnitSuppression:
    """The unit table as published around its members' decision (:func:`suppress_unit_counts`).

    Attributes
    ----------
    table : hmlib.privacy.SuppressedTable
        The unit counts (index: unit labels, sorted), suppressed.
    public : pandas.DataFrame of bool
        Unit cells whose members' cells are all shown (their sum is known whatever the unit table shows).
    failed : tuple of str
        Count columns that could not be protected: not to be published at all.
    """

    table: SuppressedTable
    public: pd.DataFrame
    failed: tuple


def _best(candidates: np.ndarray, weight: np.ndarray) -> int | None:
    """The candidate hiding most (largest atom sum), first on ties; None without one."""
    rows = np.flatnonzero(candidates)
    return int(rows[np.argmax(weight[rows])]) if rows.size else None


def _leaks(mask: pd.DataFrame, public: pd.DataFrame, count: pd.DataFrame, total: pd.DataFrame, *, total_column,
           parts, min_cell: int) -> tuple[pd.DataFrame, set]:
    """Cells to hide more for the relations not protected when only non-public hidden cells count, and the
    columns for which no such cell is left."""
    effective = mask[list(public.columns)] & ~public
    add = pd.DataFrame(False, index=mask.index, columns=public.columns)
    failed: set = set()

    def protected(rows, columns) -> bool:
        h = int(count.loc[rows, columns].to_numpy()[effective.loc[rows, columns].to_numpy()].sum())
        s = float(total.loc[rows, columns].to_numpy()[effective.loc[rows, columns].to_numpy()].sum())
        return h >= 2 and s - (h - 1) >= min_cell

    for column in public.columns:
        hid = effective[column].to_numpy()
        shown = ~mask[column].to_numpy() & ~public[column].to_numpy()
        if not hid.any() or (hid.sum() >= 2 and protected(mask.index[hid], [column])) or not shown.any():
            continue  # with no shown cell left, the column's atoms are protected by the members' column total
        add.iloc[_best(shown, total[column].to_numpy()), add.columns.get_loc(column)] = True
    for part in parts or []:
        members = [*part, total_column]
        for r, unit in enumerate(mask.index):
            hid = effective.loc[unit, members].to_numpy()
            parts_hidden = int(hid[:-1].sum())
            if hid[-1]:
                ok = parts_hidden >= 1
            else:
                ok = parts_hidden == 0 or (parts_hidden >= 2 and protected([unit], [c for c, h in zip(members, hid)
                                                                                    if h]))
            if ok:
                continue
            shown = ~mask.loc[unit, members].to_numpy(dtype=bool) & ~public.loc[unit, members].to_numpy(dtype=bool)
            k = _best(shown, total.loc[unit, members].to_numpy())
            if k is None:
                failed.update(part)
            else:
                add.iloc[r, add.columns.get_loc(members[k])] = True
    return add, failed


def suppress_unit_counts(members: pd.DataFrame, member_hidden: pd.DataFrame, units: pd.Series,
                         count_columns: Sequence[str], min_cell: int, *, total_column: str,
                         parts: Sequence[Sequence[str]], hidden: pd.DataFrame | None = None) -> UnitSuppression:
    """Sum the members' counts by unit and suppress that table around the members' decision (module docstring).

    Parameters
    ----------
    members : pandas.DataFrame
        The members' counts: ``count_columns`` and ``total_column``.
    member_hidden : pandas.DataFrame of bool
        The members' hidden cells (same index and columns), kept as they are.
    units : pandas.Series
        The unit of each member (same index).
    count_columns : sequence of str
    min_cell : int
    total_column : str
    parts : sequence of sequence of str
        Row partitions of ``total_column`` (:func:`hmlib.privacy.suppress_counts`).
    hidden : pandas.DataFrame of bool, optional
        Unit cells to hide from the start (index: unit labels), e.g. what a finer published level exposes.

    Returns
    -------
    UnitSuppression
    """
    columns = [*count_columns, total_column]
    unit_values = members[columns].groupby(units.to_numpy(), observed=True).sum()
    count, total = _atoms(units, members, member_hidden[columns])
    public = (count == 0).reindex(unit_values.index)
    given = exposed_by_totals(units, members, member_hidden[columns], min_cell).reindex(unit_values.index)
    if hidden is not None:
        given |= hidden.reindex(index=unit_values.index, columns=columns, fill_value=False).astype(bool)
    table = unit_values.reset_index(drop=True)
    while True:  # every round hides one more cell that hides something, so it ends
        safe = suppress_counts(table, count_columns, min_cell, total_column=total_column, parts=parts,
                               hidden=given.reset_index(drop=True))
        mask = safe.mask.set_axis(unit_values.index)
        add, failed = _leaks(mask, public, count, total, total_column=total_column, parts=parts,
                             min_cell=min_cell)
        if failed or not (add & ~given).any().any():
            break
        given |= add
    published = SuppressedTable(display=safe.display.set_axis(unit_values.index),
                                values=safe.values.set_axis(unit_values.index), mask=mask,
                                primary=safe.primary.set_axis(unit_values.index), min_cell=safe.min_cell,
                                label=safe.label, unprotectable=safe.unprotectable)
    return UnitSuppression(table=published, public=public, failed=tuple(sorted(failed)))
