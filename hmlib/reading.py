"""Reading a registry extract as users export it (SAS, Stata, Excel, EHR systems).

:func:`read_extract` reads the model columns of a CSV or Parquet file and
returns them as text-cleaned columns plus :class:`~hmlib.data.Notice`-ready
facts; :mod:`hmlib.data` then checks them against the params. Everything that
reading *changes* is said, never done silently:

- the file is read once: its SHA-256 is computed from the same bytes;
- CSV: the encoding is UTF-8 (a byte-order mark is allowed) unless the params
  name another (``encoding: latin-1``); an undecodable byte is an error naming
  its line and column. The delimiter (comma, semicolon, tab or bar) is
  recognised from the header line, and a non-comma one is reported;
- duplicate column headers are an error (pandas would rename the second one
  and it would silently be ignored);
- every value is read as text, cluster ids included, so ``003`` and ``3`` stay
  two clusters and no ``17.0`` appears; surrounding spaces are trimmed (and
  labels that only differed by spaces are reported);
- missing-value codes (:data:`MISSING_CODES`, e.g. ``.``, ``NA``, ``n/a``,
  ``-``, ``?``, Stata's ``.a`` to ``.z``, plus the params' ``missing_codes``)
  become missing, with their counts per column;
- decimal commas (``0,5``) are read as decimal numbers when every number in the
  column is written that way, and reported.

Whether a column is numeric or categorical, and every check of the values,
is decided in :mod:`hmlib.data`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError

__all__ = ["MISSING_CODES", "RawExtract", "read_extract", "read_header", "parse_numbers", "DELIMITERS"]

#: Codes read as missing in any column (compared after trimming; words in any letter case).
MISSING_CODES = ("", ".", "-", "--", "?", "NA", "N/A", "N.A.", "NaN", "NULL", "None", "#N/A", "#NULL!",
                 "missing", "(missing)", *(f".{c}" for c in "abcdefghijklmnopqrstuvwxyz"))
_MISSING_LOWER = {c.lower() for c in MISSING_CODES}
#: Delimiters recognised in a CSV header line, with their names.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d+,\d+|\d+|,\d+)$")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class RawExtract:
    """The model columns of an extract, as text, and what reading did to them.

    Attributes
    ----------
    frame : pandas.DataFrame
        One column per requested column, as object (text, ``None`` for
        missing) for CSV, or as stored for typed Parquet columns (text columns
        cleaned as for CSV); the cluster column is always text.
    n_rows : int
        Rows in the file.
    sha256 : str
        SHA-256 of the file's bytes.
    columns : list of str
        Every column name in the file, in order.
    delimiter : str or None
        The CSV delimiter (None for Parquet).
    missing_codes : dict
        ``{column: {code: count}}`` of codes read as missing (empty cells not counted).
    decimal_comma : list of str
        Columns read with decimal commas.
    trimmed_labels : dict
        ``{column: n}`` of values that had surrounding spaces (in model columns).
    merged_by_trimming : dict
        ``{column: [label, ...]}``: labels that only differed by surrounding spaces.
    """

    frame: pd.DataFrame
    n_rows: int
    sha256: str
    columns: list
    delimiter: str | None = None
    missing_codes: dict = field(default_factory=dict)
    decimal_comma: list = field(default_factory=list)
    trimmed_labels: dict = field(default_factory=dict)
    merged_by_trimming: dict = field(default_factory=dict)


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} for {path.name}; use e.g. utf-8 or latin-1.") from None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start: exc.start + 1].hex().upper()
        guess = ""
        try:
            guess = f" (in Latin-1 that byte is {data[exc.start:exc.start + 1].decode('latin-1')!r})"
        except UnicodeDecodeError:
            pass
        raise DataError(
            f"{path.name} is not valid {encoding}: line {line}, column {column} holds byte 0x{byte}{guess}. "
            "Save the file as UTF-8 (Excel: 'CSV UTF-8'; SAS: encoding='utf-8'), or name its encoding in the "
            "params file, e.g. 'encoding: latin-1'."
        ) from None
    return text


def read_header(text: str, path: Path) -> tuple[list, str]:
    """The header's column names and the delimiter recognised from it.

    Raises
    ------
    DataError
        No header, or duplicate column names.
    """
    first = text.split("\n", 1)[0].rstrip("\r")
    if not first.strip():
        raise DataError(f"{path.name} has no header line (the first line is empty); export it with column names.")
    counts = {d: next(csv.reader([first], delimiter=d)).__len__() for d in DELIMITERS}
    delimiter = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    names = [n.strip() for n in next(csv.reader([first], delimiter=delimiter))]
    seen, dups = set(), []
    for name in names:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    if dups:
        raise DataError(
            f"{path.name} has duplicate column header(s): {', '.join(repr(d) for d in dups)}. Each column "
            "needs its own name: rename or delete the copies in the export."
        )
    if "" in names:
        raise DataError(f"{path.name}: column {names.index('') + 1} has no header; name it or delete it.")
    return names, delimiter


def _clean_text(values: pd.Series, column: str, extra_codes: set, raw: RawExtract) -> pd.Series:
    """Trim, and turn missing codes into None, counting what changed."""
    present = values.notna()
    text = values.astype(object).where(present, None)
    as_str = text[present].astype(str)
    stripped = as_str.str.strip()
    changed = int((stripped != as_str).sum())
    if changed:
        raw.trimmed_labels[column] = changed
        originals = set(as_str)
        merged = sorted({s for s, o in zip(stripped, as_str) if s != o and s in originals})
        if merged:
            raw.merged_by_trimming[column] = merged
    lower = stripped.str.lower()
    is_code = lower.isin(_MISSING_LOWER) | stripped.isin(extra_codes)
    if is_code.any():
        codes = stripped[is_code & (stripped != "")].value_counts()
        if len(codes):
            raw.missing_codes[column] = {str(k): int(v) for k, v in codes.items()}
    out = pd.Series(None, index=values.index, dtype=object)
    keep = stripped[~is_code]
    out.loc[keep.index] = keep.to_numpy()
    return out


def parse_numbers(text: pd.Series) -> tuple[pd.Series, bool]:
    """Text as numbers: ``(floats with NaN where not a number, decimal_comma_used)``.

    Decimal commas are used only when every number-like value in the column
    is written with a comma (or is a whole number) and none with a point.
    """
    present = text.dropna().astype(str)
    values = pd.to_numeric(present.where(present.str.match(_PLAIN_NUMBER.pattern) | present.str.lower().isin(
        ["inf", "-inf", "+inf", "infinity", "-infinity", "nan"]), None), errors="coerce")
    comma = present.str.match(_DECIMAL_COMMA.pattern) & present.str.contains(",", regex=False)
    decimal_comma = bool(comma.any()) and not present.str.contains(".", regex=False).any()
    if decimal_comma:
        values = values.where(~comma, pd.to_numeric(present[comma].str.replace(",", ".", regex=False),
                                                     errors="coerce"))
    out = pd.Series(np.nan, index=text.index, dtype=float)
    out.loc[values.index] = values.astype(float)
    return out, decimal_comma


def _read_csv(data: bytes, path: Path, columns, encoding: str, raw_columns: list) -> tuple[pd.DataFrame, str]:
    text = _decode(data, path, encoding)
    names, delimiter = read_header(text, path)
    raw_columns.extend(names)
    wanted = [c for c in columns if c in names]
    _check_row_lengths(text, delimiter, len(names), path)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_filter=False,
                            usecols=wanted, skipinitialspace=False, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no columns or rows; export the registry again.") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise DataError(
            f"cannot read {path.name} as a {DELIMITERS[delimiter]}-separated file: {detail}. A line has more "
            "fields than the header: check for unquoted delimiters inside values."
        ) from None
    frame.columns = [c.strip() for c in frame.columns]
    return frame, delimiter


def _check_row_lengths(text: str, delimiter: str, n_columns: int, path: Path) -> None:
    """A row with more fields than the header would shift values into the wrong columns: refuse it."""
    for line_number, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1):
        if len(row) > n_columns and any(field.strip() for field in row[n_columns:]):
            raise DataError(
                f"cannot read {path.name} as a {DELIMITERS[delimiter]}-separated file: line {line_number} has "
                f"{len(row)} fields but the header has {n_columns}. Check for unquoted delimiters inside values "
                "(quote such values in the export)."
            )


def read_extract(path: str | Path, columns, *, cluster: str, encoding: str = "utf-8",
                 missing_codes=()) -> RawExtract:
    """Read the named columns of a CSV or Parquet extract (module docstring).

    Parameters
    ----------
    path : str or pathlib.Path
    columns : sequence of str
        The model columns; those absent from the file are left out of the
        frame (:mod:`hmlib.data` names them, with the file's columns).
    cluster : str
        The cluster column (always text).
    encoding : str
        Encoding of a CSV file.
    missing_codes : sequence of str
        Further codes read as missing (the params' ``missing_codes``).

    Returns
    -------
    RawExtract

    Raises
    ------
    DataError
        The file is absent, empty, not decodable, has duplicate headers or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        hint = " Run `hmreport demo` first to write the demo registry." if "demo" in path.name else ""
        raise DataError(f"data file not found: {path}.{hint} Check 'data' in the params file.")
    data = path.read_bytes()
    if not data:
        raise DataError(f"data file {path} is empty (0 bytes); export the registry again.")
    sha = hashlib.sha256(data).hexdigest()
    raw_columns: list = []
    delimiter = None
    if path.suffix.lower() == ".csv":
        if b"\x00" in data[:65536]:
            raise DataError(
                f"cannot read {path.name}: it holds binary data, not comma-separated text. Is it a spreadsheet or "
                "another file saved under a .csv name? Export the registry as CSV (UTF-8) or Parquet."
            )
        frame, delimiter = _read_csv(data, path, columns, encoding, raw_columns)
    else:
        frame = _read_parquet(data, path, columns, raw_columns)
    if frame.shape[0] == 0:
        raise DataError(f"data file {path} has a header but no rows; export the registry again.")
    raw = RawExtract(frame=frame, n_rows=int(len(frame)), sha256=sha, columns=raw_columns, delimiter=delimiter)
    extra = {str(c).strip() for c in missing_codes}
    cleaned = {}
    for col in frame.columns:
        series = frame[col]
        if col == cluster and not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
            series = _typed_labels_as_text(series)
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            cleaned[col] = _clean_text(series, col, extra, raw)
        else:
            cleaned[col] = series
    raw.frame = pd.DataFrame(cleaned, index=frame.index)
    return raw


def _typed_labels_as_text(series: pd.Series) -> pd.Series:
    """Typed cluster ids (Parquet) as text: whole floats without '.0'."""
    values = series.astype(object)
    if pd.api.types.is_float_dtype(series):
        whole = series.dropna() % 1 == 0
        if whole.all():
            values = series.astype("Int64").astype(object)
    return values.where(series.notna(), None).map(lambda v: None if v is None or v is pd.NA else str(v))


def _read_parquet(data: bytes, path: Path, columns, raw_columns: list) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path}: {first}. Check that it is a valid Parquet file.") from None
    names = list(table.column_names)
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DataError(f"{path.name} has duplicate column name(s): {', '.join(map(repr, dups))}; rename them.")
    raw_columns.extend(names)
    wanted = [c for c in columns if c in names]
    return table.select(wanted).to_pandas()
