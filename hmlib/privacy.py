"""Small-cell suppression and cluster pseudonyms for everything the report shows.

Primary suppression
    A count from 1 to ``min_cell - 1`` is suppressed. Zero is not sensitive
    and is shown (a zero count identifies nobody).

Complementary suppression
    A published table is a set of additive relations between cells:

    * *row relations*: in each row the ``parts`` columns add up to the
      ``total_column`` (for example ``n_missing + n_observed = n``);
    * *column relations*: within each group of rows (``group_columns``, or the
      whole table) the cells of a count column add up to a column total that
      is assumed to be published somewhere (in the same table or in another
      table of the report; the conservative assumption).

    With a published total, ``h`` hidden cells (each at least 1) summing to
    ``S`` are each at most ``S - (h - 1)``. A relation is protected when
    ``h >= 2`` and ``S - (h - 1) >= min_cell``: no hidden cell can be
    recovered by subtraction, nor shown to be below ``min_cell`` (the
    "protection interval" of Hundepool et al. 2012, ch. 4, in its simplest
    form). An unprotected relation gets one more complement: the smallest
    positive shown part that is large enough (else the largest), then the row
    total if no part is left; zeros are never chosen (hiding a zero gains
    nothing). A hidden total whose parts are all shown gets its smallest
    positive part hidden. Passes repeat until every relation is protected.
    A column block that cannot be protected (e.g. ten clusters with one
    missing value each and zeros elsewhere) is hidden entirely and listed in
    ``unprotectable``; its block total must then not be published elsewhere
    if it is small or the block has one row.

    This prevents exact recovery and the "this one must be small" inference
    along each published relation. It does not solve the full
    linear-programming problem, so combining several relations (or other
    published facts such as a gap type) can still narrow a hidden cell to an
    interval. All suppressed cells carry the same label, so a reader cannot
    tell a primary (small) cell from a complementary one.

Derived values
    Every derived column (a share, a confidence limit) listed in
    ``derived_columns`` is suppressed whenever one of the counts it is
    computed from is suppressed.

Pseudonyms
    :func:`pseudonymize_clusters` replaces cluster labels by codes such as
    ``"Cluster K07"``: drawn at random (from a seeded generator) without
    replacement, so neither their alphabetical order nor their numbers reveal
    the original order or the cluster sizes. The same seed and the same set of
    labels always give the same pseudonyms; keep the seed out of the report.

References
----------
Hundepool A, Domingo-Ferrer J, Franconi L, et al. *Statistical Disclosure
Control*. Wiley, 2012, chapter 4 (magnitude and frequency tables).
Centers for Medicare & Medicaid Services. *Cell size suppression policy*
(no cell of 1-10, nor any value from which such a cell can be derived).
"""

from __future__ import annotations

import string
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, ParamsError
from hmlib.results import json_scalar

__all__ = [
    "SUPPRESSED_LABEL",
    "SuppressedTable",
    "suppress_counts",
    "pseudonymize_clusters",
    "suppress_cluster_counts",
]

#: The one label every suppressed cell gets (primary and complementary alike).
SUPPRESSED_LABEL = "suppressed"


@dataclass(frozen=True)
class SuppressedTable:
    """A table made safe to publish, with the record of what was hidden.

    Attributes
    ----------
    display : pandas.DataFrame
        Copy of the input in which every suppressed cell holds ``label``
        (those columns have object dtype); other cells keep their values.
    values : pandas.DataFrame
        Copy of the input in which every suppressed cell is NaN (numeric
        columns stay numeric, ready for figures).
    mask : pandas.DataFrame
        Boolean, same index as the input, one column per count, total and
        derived column: True where the cell is suppressed.
    primary : pandas.DataFrame
        Boolean, count and total columns only: True where the count itself
        was from 1 to ``min_cell - 1``.
    min_cell : int
    label : str
    unprotectable : tuple of str
        Column blocks that complements could not protect and that were
        therefore hidden entirely (e.g. a block of one row, or small counts
        among zeros). Empty in the ordinary case. The total of such a block
        must not be published elsewhere when it is small or when the block
        has a single row (its cell *is* the total).
    """

    display: pd.DataFrame
    values: pd.DataFrame
    mask: pd.DataFrame
    primary: pd.DataFrame
    min_cell: int
    label: str = SUPPRESSED_LABEL
    unprotectable: tuple = field(default_factory=tuple)

    @property
    def n_primary(self) -> int:
        """Number of cells suppressed because they are small."""
        return int(self.primary.to_numpy().sum())

    @property
    def n_complementary(self) -> int:
        """Number of count cells suppressed only to protect a small one."""
        counts = self.mask[self.primary.columns].to_numpy()
        return int(counts.sum()) - self.n_primary

    def to_records(self) -> list[dict]:
        """Rows as JSON-ready dicts: suppressed and missing numbers are ``None``.

        Each record carries a ``"suppressed"`` list naming its suppressed
        fields, so that a ``None`` for "hidden" is told apart from a ``None``
        for "undefined" (e.g. a confidence limit of an empty cell).
        """
        records = []
        mask_cols = list(self.mask.columns)
        mask_values = self.mask.to_numpy()
        for i, (_, row) in enumerate(self.values.iterrows()):
            record = {str(k): json_scalar(v) for k, v in row.items()}
            record["suppressed"] = [c for c, m in zip(mask_cols, mask_values[i]) if m]
            records.append(record)
        return records


def _check_counts(table: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"suppress_counts: column(s) {missing} are not in the table "
                        f"(columns: {list(table.columns)}).")
    try:
        values = table[list(columns)].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise DataError(f"suppress_counts: count columns {list(columns)} must be numeric.") from err
    if np.isnan(values).any():
        raise DataError("suppress_counts: count columns contain missing values; "
                        "counts must be whole numbers >= 0.")
    if (values < 0).any() or (values != np.round(values)).any():
        raise DataError("suppress_counts: counts must be whole numbers >= 0.")
    return values


def _given_hidden(hidden: pd.DataFrame, index, col_index: dict, n_cols: int) -> np.ndarray:
    """The cells hidden by an earlier decision, flattened as :func:`suppress_counts` flattens its cells."""
    given = np.zeros((len(index), n_cols), dtype=bool)
    for c in hidden.columns:
        if c not in col_index:
            raise DataError(f"suppress_counts: hidden column {c!r} is not a count column.")
        given[:, col_index[c]] = hidden[c].reindex(index, fill_value=False).to_numpy(dtype=bool)
    return given.ravel()


def suppress_counts(
    table: pd.DataFrame,
    count_columns: Sequence[str],
    min_cell: int = 11,
    *,
    total_column: str | None = None,
    parts: Sequence[Sequence[str]] | None = None,
    group_columns: Sequence[str] | None = None,
    column_totals: bool = True,
    derived_columns: Mapping[str, Sequence[str]] | None = None,
    label: str = SUPPRESSED_LABEL,
    hidden: pd.DataFrame | None = None,
) -> SuppressedTable:
    """Suppress small counts, and the cells that would reveal them.

    Parameters
    ----------
    table : pandas.DataFrame
        Aggregated table (one row per cluster, per variable, ...). Not
        modified.
    count_columns : sequence of str
        Columns holding counts of people. Each is checked for small cells.
    min_cell : int, default 11
        Counts from 1 to ``min_cell - 1`` are suppressed.
    total_column : str, optional
        Row total (also a count, also checked). With it, each list in
        ``parts`` must add up to it in every row (checked).
    parts : sequence of sequence of str, optional
        Row partitions of ``total_column``, e.g.
        ``[["n_missing", "n_observed"]]``, or one pair per variable in a wide
        table. Default: ``[count_columns]`` when ``total_column`` is given.
    group_columns : sequence of str, optional
        Rows with equal values here form one block whose column totals are
        assumed published. Default: the whole table is one block.
    column_totals : bool, default True
        False when the column sums of this table mean nothing and are
        published nowhere (e.g. one row per variable).
    derived_columns : mapping of str to sequence of str, optional
        ``{derived: [counts it is computed from]}``; a derived cell is
        suppressed when any of its counts is.
    label : str
        Shown in ``display`` for every suppressed cell.
    hidden : pandas.DataFrame of bool, optional
        Count cells already hidden by an earlier decision (same index as
        ``table``; columns among the count columns and ``total_column``):
        they count as suppressed from the start, so that the cells of this
        table are protected around them (e.g. level counts whose total is a
        count hidden in another published table).

    Returns
    -------
    SuppressedTable

    Raises
    ------
    ParamsError
        ``min_cell`` below 1.
    DataError
        Missing columns, counts that are not whole numbers >= 0, or parts
        that do not add up to the total.

    Examples
    --------
    >>> t = pd.DataFrame({"n": [40, 50, 60], "n_missing": [3, 20, 30],
    ...                   "n_observed": [37, 30, 30]})
    >>> s = suppress_counts(t, ["n_missing", "n_observed"], total_column="n")
    >>> s.display["n_missing"].tolist()
    ['suppressed', 'suppressed', 30]
    """
    if not isinstance(min_cell, (int, np.integer)) or isinstance(min_cell, bool) or min_cell < 1:
        raise ParamsError(f"min_cell must be a whole number >= 1, got {min_cell!r}.")
    count_columns = list(count_columns)
    all_counts = count_columns + ([total_column] if total_column and total_column not in count_columns else [])
    values = _check_counts(table, all_counts)
    n_rows, n_cols = values.shape
    col_index = {c: j for j, c in enumerate(all_counts)}

    # Relations as (member cells, index of the total member or -1, description).
    # Cells are (row, column) pairs flattened to row * n_cols + column.
    relations: list[tuple[np.ndarray, int, str]] = []
    if total_column is not None:
        if parts is None:
            parts = [count_columns]
        t = col_index[total_column]
        for part in parts:
            part = list(part)
            unknown = [c for c in part if c not in col_index]
            if unknown:
                raise DataError(f"suppress_counts: parts {unknown} are not among the count columns.")
            sums = values[:, [col_index[c] for c in part]].sum(axis=1)
            bad = np.flatnonzero(sums != values[:, t])
            if bad.size:
                raise DataError(f"suppress_counts: {' + '.join(part)} does not equal {total_column} "
                                f"in {bad.size} row(s) (first: row {bad[0]}).")
            for r in range(n_rows):
                members = np.array([r * n_cols + col_index[c] for c in part] + [r * n_cols + t])
                relations.append((members, len(part), f"row {r}: {' + '.join(part)} = {total_column}"))
    elif parts is not None:
        raise DataError("suppress_counts: parts need a total_column.")
    if column_totals and n_rows:
        if group_columns:
            keys = table[list(group_columns)].astype(str).agg("\x1f".join, axis=1).to_numpy()
            _, block = np.unique(keys, return_inverse=True)
        else:
            block = np.zeros(n_rows, dtype=int)
        for b in np.unique(block):
            rows = np.flatnonzero(block == b)
            for c in all_counts:
                members = rows * n_cols + col_index[c]
                relations.append((members, -1, f"column {c}, block {b}"))

    flat = values.ravel()
    primary = (flat >= 1) & (flat < min_cell)
    suppressed = primary.copy()
    if hidden is not None:
        suppressed |= _given_hidden(hidden, table.index, col_index, n_cols)
    given_up: set[int] = set()
    unprotectable: list[str] = []
    changed = True
    while changed:
        changed = False
        for index, (members, total_pos, description) in enumerate(relations):
            if index in given_up:
                continue
            is_part = np.arange(members.size) != total_pos
            parts = members[is_part]
            hidden = suppressed[parts]
            h = int(hidden.sum())
            if total_pos >= 0 and suppressed[members[total_pos]]:
                if h:
                    continue
                # a hidden total with every part shown is their sum
                candidates = [m for m in parts if flat[m] >= 1]
                if candidates:
                    suppressed[min(candidates, key=lambda m: (flat[m], m))] = True
                    changed = True
                continue
            if h == 0:
                continue
            hidden_sum = float(flat[parts][hidden].sum())
            # hidden cells are >= 1, so each is at most hidden_sum - (h - 1): require that
            # bound to reach min_cell (and h >= 2, else the cell is the difference itself)
            if h >= 2 and hidden_sum - (h - 1) >= min_cell:
                continue
            needed = max(1.0, min_cell - hidden_sum + h)
            candidates = [m for m in parts if not suppressed[m] and flat[m] >= 1]
            if candidates:
                enough = [m for m in candidates if flat[m] >= needed]
                chosen = (min(enough, key=lambda m: (flat[m], m)) if enough
                          else max(candidates, key=lambda m: (flat[m], -m)))
            elif total_pos >= 0:
                chosen = members[total_pos]
            else:
                # nothing left to hide beside the small cells: hide the whole column block
                suppressed[parts] = True
                given_up.add(index)
                unprotectable.append(description)
                changed = True
                continue
            suppressed[chosen] = True
            changed = True

    supp = suppressed.reshape(n_rows, n_cols)
    mask = pd.DataFrame(supp, index=table.index, columns=all_counts)
    primary_frame = pd.DataFrame(primary.reshape(n_rows, n_cols), index=table.index, columns=all_counts)
    for derived, sources in (derived_columns or {}).items():
        if derived not in table.columns:
            raise DataError(f"suppress_counts: derived column {derived!r} is not in the table.")
        unknown = [c for c in sources if c not in col_index]
        if unknown:
            raise DataError(f"suppress_counts: derived column {derived!r} depends on {unknown}, "
                            "which are not count columns.")
        mask[derived] = supp[:, [col_index[c] for c in sources]].any(axis=1)

    shown = table.copy()
    display = table.copy()
    for col in mask.columns:
        hide = mask[col].to_numpy()
        shown[col] = shown[col].astype(float).where(~hide)
        display[col] = display[col].astype(object).where(~hide, label)
    return SuppressedTable(display=display, values=shown, mask=mask, primary=primary_frame,
                           min_cell=int(min_cell), label=label, unprotectable=tuple(unprotectable))


def _sort_key(label: Hashable):
    return (type(label).__name__, label)


def pseudonymize_clusters(labels: Iterable[Hashable], *, seed: int,
                          prefix: str = "Cluster") -> dict[Hashable, str]:
    """Map cluster labels to stable, uninformative pseudonyms.

    Parameters
    ----------
    labels : iterable
        Cluster labels (duplicates allowed; e.g. the cluster column).
    seed : int
        Seed of the generator that draws the codes. Same seed and same set of
        labels give the same mapping, whatever the order of ``labels``.
    prefix : str
        Word in front of the code.

    Returns
    -------
    dict
        ``{label: "Cluster K07"}``: a letter and two digits (three digits
        when there are more than 2,574 clusters), drawn without replacement,
        so the codes' order says nothing about the labels' order or sizes.

    Raises
    ------
    DataError
        A label is missing (NaN / None).
    """
    values = pd.unique(pd.Series(list(labels), dtype=object))
    if any(pd.isna(v) for v in values):
        raise DataError("pseudonymize_clusters: a cluster label is missing; "
                        "drop or label those rows first.")
    try:
        unique = sorted(values, key=_sort_key)
    except TypeError:
        unique = sorted(values, key=lambda v: (type(v).__name__, str(v)))
    digits = 2 if len(unique) <= 26 * 99 else 3
    per_letter = 10 ** digits - 1
    rng = np.random.default_rng(seed)
    codes = rng.choice(26 * per_letter, size=len(unique), replace=False)
    return {
        label: f"{prefix} {string.ascii_uppercase[code // per_letter]}{code % per_letter + 1:0{digits}d}"
        for label, code in zip(unique, codes)
    }


def suppress_cluster_counts(table: pd.DataFrame, *, n_column: str, observed_column: str,
                            min_cell: int = 11, derived_from_observed=(),
                            hidden: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-cluster table with its patient and observed counts made safe to show.

    The count of unobserved values (``n_column - observed_column``) is
    protected too: it is computed, suppressed with the others (complementary
    suppression over the row relation and the column totals) and dropped
    again, so no hidden count can be recovered by subtraction.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per cluster (not modified).
    n_column, observed_column : str
        Patients in the cluster, and those with the value observed.
    min_cell : int
    derived_from_observed : sequence of str
        Columns computed from the observed values (e.g. a cluster's observed
        mean): hidden wherever the observed count is, since a mean of one or
        two values is a patient's value.
    hidden : pandas.DataFrame of bool, optional
        Cells already hidden by an earlier decision (``n_column`` and/or
        ``observed_column``), as in :func:`suppress_counts`.

    Returns
    -------
    pandas.DataFrame
        The display table (suppressed cells labelled ``"suppressed"``).
    """
    work = table.copy()
    if work.empty:  # nothing to show (e.g. no incomplete variable): nothing to protect
        return work
    work["_n_unobserved"] = work[n_column] - work[observed_column]
    safe = suppress_counts(work, [observed_column, "_n_unobserved"], min_cell, total_column=n_column,
                           parts=[[observed_column, "_n_unobserved"]],
                           derived_columns={c: [observed_column] for c in derived_from_observed},
                           hidden=hidden)
    return safe.display.drop(columns=["_n_unobserved"])
