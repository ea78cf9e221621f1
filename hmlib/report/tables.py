"""Tables as the reviewer reads them: labelled, rounded, narrow, downloadable.

:func:`prepare_table` turns an aggregated table of a step into what the
report shows: human column labels (:mod:`hmlib.report.labels`), numbers to
significant digits, shares as percentages, p-values as ``<0.001``, yes/no
for flags, blank cells for missing values (never ``None``, ``<NA>``,
``nan``, ``()`` or a Python list), and lower/upper columns joined into one
"95% CI" column. A text column whose cells run long (notes of a few
sentences) leaves the grid and is listed under the table, keyed by the
row's first cell, so no table grows wider than the page.

:func:`table_html` writes the block: a numbered caption (numbered when the
page is assembled, :mod:`hmlib.report.page`), the table, and a link that
downloads the same rows as CSV. The CSV travels inside the page as a
``data:`` URI, so the report stays one self-contained file; it holds the
same columns with full precision (shares as percentages, intervals as two
columns). Tables longer than :data:`COLLAPSE_ROWS` rows are folded in a
``<details>`` element (their header row sorts on click).

Everything from the data is HTML-escaped here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import numbers
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.report.labels import INTERVAL_PAIRS, column_label, method_cell

__all__ = ["PreparedTable", "prepare_table", "table_html", "data_uri", "significant", "COLLAPSE_ROWS",
           "LONG_TEXT_CHARS", "slug"]

#: Tables with more rows are folded (``<details>``) and sortable.
COLLAPSE_ROWS = 12
#: A text column with a cell longer than this leaves the grid and is listed under the table.
LONG_TEXT_CHARS = 150
#: Rows shown in the page at most (the CSV always holds every row).
MAX_ROWS = 500
#: A word longer than this (a long name without spaces) may break anywhere in its cell.
LONG_WORD_CHARS = 24
#: Tables with this many columns or more get narrower cell padding on screen (step 5's scenario table: 11 columns,
#: 922 px in a 910 px column once step 1's hidden site sizes made its patient counts read "suppressed").
WIDE_COLUMNS = 10
#: Text cells up to this long are not wrapped.
SHORT_TEXT_CHARS = 16


@dataclass
class PreparedTable:
    """A table ready for the page.

    Attributes
    ----------
    headers : list of str
        Shown headers (intervals joined).
    cells : list of list of str
        Shown text, row by row.
    sort_keys : list of list
        Per cell a number to sort on, or None (text sorts by its text).
    numeric : list of bool
        Per shown column: numbers (right-aligned).
    csv_text : str
        Every row, full precision, one column per value.
    notes : list of (str, str, str)
        ``(row key, column label, text)`` of long texts moved out of the grid.
    empty : list of str
        Labels of columns left out because no row has a value (said in the caption).
    """

    headers: list
    cells: list
    sort_keys: list
    numeric: list
    csv_text: str
    notes: list = field(default_factory=list)
    empty: list = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        """Rows of the table."""
        return len(self.cells)


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, np.floating) and np.isnan(value):
        return True
    return False


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not _is_missing(value)


def significant(value, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, in plain decimals (e-notation only below 1e-4 or for huge values);
    whole numbers with thousands separators."""
    if not _is_number(value):
        return ""
    v = float(value)
    if math.isinf(v):
        return "infinite" if v > 0 else "minus infinite"
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    if abs(v) < 1e-4:
        return f"{v:.{max(digits - 1, 1)}e}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(v))), 0)
    return f"{v:.{decimals}f}"


def _share_text(v: float) -> str:
    pct = 100.0 * v
    if pct == 0 or pct == 100:
        return f"{pct:.0f}"
    if abs(pct) < 0.1:
        return "<0.1" if pct > 0 else ">-0.1"
    return f"{pct:.1f}"


def _p_text(v: float) -> str:
    if v < 0.001:
        return "<0.001"
    return significant(v, 2)


def _listed(value, digits: int) -> str:
    items = [significant(v, digits) if _is_number(v) else str(v).strip() for v in value if not _is_missing(v)]
    return ", ".join(items)


def _cell_text(value, kind: str | None, digits: int, *, method: bool = False) -> str:
    """One cell as shown."""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return _listed(list(value), digits)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell_text(v, None, digits)}" for k, v in value.items())
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str):
        text = value.strip()
        return method_cell(text) if method else text
    if _is_number(value):
        v = float(value)
        if kind == "share":
            return _share_text(v)
        if kind == "pvalue":
            return _p_text(v)
        if kind == "count" and v.is_integer():
            return f"{int(v):,}"
        return significant(v, digits)
    return str(value)


def _csv_value(value, kind: str | None, *, method: bool = False):
    """One cell for the CSV: full precision, same units as shown."""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return "; ".join(str(v) for v in value if not _is_missing(v))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str):
        return method_cell(value.strip()) if method else value.strip()
    if _is_number(value):
        v = float(value)
        if kind == "share":
            return format(100.0 * v, ".12g")
        if v.is_integer() and abs(v) < 1e15 and kind in ("count", None):
            return str(int(v))
        return repr(v)
    return str(value)


def _kind(series: pd.Series, declared: str | None) -> str | None:
    if declared is not None:
        return declared
    if pd.api.types.is_bool_dtype(series):
        return "flag"
    if pd.api.types.is_integer_dtype(series):
        return "count"
    if pd.api.types.is_float_dtype(series):
        return "number"
    return None


def _interval_pairs(columns: list) -> dict:
    """``{lower column: (upper column, header)}`` for the interval pairs present."""
    found = {}
    for (lower, upper), header in INTERVAL_PAIRS.items():
        if lower in columns and upper in columns:
            found[lower] = (upper, header)
    return found


def _interval_kind(columns: list, lower: str, kinds: dict) -> str | None:
    """An interval is written like the estimate before it (a share's interval as percentages)."""
    position = columns.index(lower)
    for name in reversed(columns[:position]):
        if name in ("std_error", "raw_se"):
            continue
        return kinds.get(name) if kinds.get(name) in ("share", "number") else "number"
    return "number"


def _interval_text(low, high, kind, digits) -> str:
    if isinstance(low, str) or isinstance(high, str):
        return low if isinstance(low, str) else high
    if not (_is_number(low) and _is_number(high)):
        return ""
    return f"{_cell_text(low, kind, digits)} to {_cell_text(high, kind, digits)}"


def prepare_table(frame: pd.DataFrame, *, noun: str = "cluster", digits: int = 3,
                  index: bool = False, labels: dict | None = None, long_text_below: bool = True) -> PreparedTable:
    """Labels, rounding and plain values for an aggregated table (module docstring).

    Parameters
    ----------
    frame : pandas.DataFrame
        Aggregated results only.
    noun : str
        The report's word for a cluster (column labels).
    digits : int
        Significant digits of numbers.
    index : bool
        Keep the index as the first column.
    labels : dict, optional
        ``{code name: ColumnLabel}`` for columns of this table only (before the label table).
    long_text_below : bool
        List long texts under the table (default); False keeps them in the grid (a table of answers).

    Returns
    -------
    PreparedTable
    """
    table = frame.reset_index() if index else frame
    table = table.loc[:, ~pd.Index(table.columns).duplicated()]
    columns = [str(c) for c in table.columns]
    table = table.set_axis(columns, axis=1)
    own = dict(labels or {})
    labels = {c: own[c] if c in own else column_label(c, noun=noun, columns=columns) for c in columns}
    kinds = {c: _kind(table[c], labels[c].kind) for c in columns}
    pairs = _interval_pairs(columns)
    uppers = {upper for upper, _ in pairs.values()}
    long_text = [c for c in columns if long_text_below and c not in pairs and c not in uppers
                 and table[c].dtype == object
                 and any(len(_cell_text(v, None, digits)) > LONG_TEXT_CHARS for v in table[c])]
    # a column without a single value (R-hat of a run too short for it) says nothing: leave it out, say so
    empty = [c for c in columns[1:] if len(table) and not any(_cell_text(v, None, digits) for v in table[c])
             and c not in pairs and c not in uppers]
    shown = [c for c in columns if c not in uppers and c not in long_text and c not in empty]
    method_cols = {c for c in columns if c == "method"}
    headers, numeric = [], []
    for c in shown:
        if c in pairs:
            headers.append(pairs[c][1])
            numeric.append(True)
        else:
            headers.append(labels[c].text)
            numeric.append(kinds[c] in ("count", "share", "number", "pvalue")
                           or bool(len(table) and table[c].map(_is_number).mean() > 0.5))
    cells, sort_keys = [], []
    for _, row in table.iterrows():
        texts, keys = [], []
        for c in shown:
            if c in pairs:
                upper = pairs[c][0]
                kind = _interval_kind(columns, c, kinds)
                texts.append(_interval_text(row[c], row[upper], kind, digits))
                keys.append(float(row[c]) if _is_number(row[c]) else None)
            else:
                texts.append(_cell_text(row[c], kinds[c], digits, method=c in method_cols))
                keys.append(float(row[c]) if _is_number(row[c]) else None)
        cells.append(texts)
        sort_keys.append(keys)
    notes = []
    key_col = shown[0] if shown else None
    for _, row in table.iterrows():
        for c in long_text:
            text = _cell_text(row[c], None, digits)
            if text:
                key = _cell_text(row[key_col], kinds[key_col], digits, method=key_col in method_cols) if key_col else ""
                notes.append((key, labels[c].text, text))
    csv_columns, csv_headers = [], []
    for c in columns:
        if c in empty:
            continue
        if c in pairs:
            csv_columns.append((c, _interval_kind(columns, c, kinds)))
            csv_headers.append(f"{pairs[c][1]} lower")
        elif c in uppers:
            lower = next(lo for lo, (up, _) in pairs.items() if up == c)
            csv_columns.append((c, _interval_kind(columns, lower, kinds)))
            csv_headers.append(f"{pairs[lower][1]} upper")
        else:
            csv_columns.append((c, kinds[c]))
            csv_headers.append(labels[c].text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_headers)
    for _, row in table.iterrows():
        writer.writerow([_csv_value(row[c], kind, method=c in method_cols) for c, kind in csv_columns])
    return PreparedTable(headers, cells, sort_keys, numeric, buffer.getvalue(), notes,
                         [labels[c].text for c in empty])


def data_uri(text: str, mime: str = "text/csv") -> str:
    """``text`` as a base64 ``data:`` URI (UTF-8)."""
    return f"data:{mime};charset=utf-8;base64,{base64.b64encode(text.encode('utf-8')).decode('ascii')}"


def slug(text: str, max_chars: int = 48) -> str:
    """A lower-case id fragment of ``text`` (letters, digits and hyphens)."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return out[:max_chars].rstrip("-") or "item"


def _grid_html(prepared: PreparedTable, rows: int, sortable: bool) -> str:
    esc = html.escape
    head = "".join(f'<th class="{"hm-num" if num else "hm-text"}" scope="col">{esc(h)}</th>'
                   for h, num in zip(prepared.headers, prepared.numeric))
    body = []
    for texts, keys in zip(prepared.cells[:rows], prepared.sort_keys[:rows]):
        tds = []
        for text, key, num in zip(texts, keys, prepared.numeric):
            attr = f' data-v="{key!r}"' if key is not None and math.isfinite(key) else ""
            cls = "hm-num" if num else "hm-text"
            if not num and any(len(word) > LONG_WORD_CHARS for word in text.split()):
                cls += " hm-longword"
            elif not num and len(text) <= SHORT_TEXT_CHARS:
                cls += " hm-short"  # "Site 01", "flat MI": kept on one line
            tds.append(f'<td class="{cls}"{attr}>{esc(text)}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    cls = "hm-table hm-sortable" if sortable else "hm-table"
    if len(prepared.headers) >= WIDE_COLUMNS:
        cls += " hm-wide"  # narrower cell padding on screen (print pads every table so)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _notes_html(prepared: PreparedTable) -> str:
    if not prepared.notes:
        return ""
    esc = html.escape
    items = "".join(f"<dt>{esc(key)}</dt><dd>{esc(text)}</dd>" for key, _, text in prepared.notes)
    labels = sorted({label.lower() for _, label, _ in prepared.notes})
    return (f'<details class="hm-table-notes"><summary>{esc(", ".join(labels)).capitalize()} '
            f"({len(prepared.notes)} rows)</summary><dl>{items}</dl></details>")


def table_html(prepared: PreparedTable, *, caption: str, key: str, filename: str | None = None,
               collapse_rows: int | None = COLLAPSE_ROWS, max_rows: int = MAX_ROWS) -> str:
    """The table block: numbered caption, table (folded when long), notes and the CSV link.

    Parameters
    ----------
    prepared : PreparedTable
    caption : str
        Plain text (escaped here).
    key : str
        Id of the block (``tbl-<key>``; made unique when the page is assembled).
    filename : str, optional
        Name of the downloaded CSV (default ``<key>.csv``).
    collapse_rows : int or None
        Longer tables are folded in ``<details>`` and sortable; None: never folded.
    max_rows : int
        Rows shown in the page; the CSV holds all.
    """
    esc = html.escape
    n = prepared.n_rows
    shown = min(n, max_rows)
    note = f" The page shows the first {shown} of {n} rows; the CSV holds all." if n > shown else ""
    if prepared.empty:
        note += f" Left out, as no row has a value: {', '.join(prepared.empty)}."
    fold = collapse_rows is not None and n > collapse_rows
    filename = filename or f"{slug(key)}.csv"
    link = (f'<p class="hm-download"><a download="{esc(filename)}" href="{data_uri(prepared.csv_text)}">'
            f"Download this table as CSV</a> ({n} row{'s' if n != 1 else ''})</p>")
    number = '<span class="hm-number" data-hm-kind="table">Table.</span>'
    grid = f'<div class="hm-table-scroll">{_grid_html(prepared, shown, sortable=fold)}</div>'
    ident = f"tbl-{slug(key)}"
    if fold:
        return (f'<details class="hm-table-block hm-long" id="{ident}" data-hm-num="table">'
                f'<summary class="hm-caption">{number} {esc(caption)}{esc(note)} '
                f'<span class="hm-rows">({n} rows: click to show; sortable)</span></summary>'
                f"{grid}{_notes_html(prepared)}{link}</details>")
    return (f'<div class="hm-table-block" id="{ident}" data-hm-num="table">'
            f'<p class="hm-caption">{number} {esc(caption)}{esc(note)}</p>'
            f"{grid}{_notes_html(prepared)}{link}</div>")
