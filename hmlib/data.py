"""Reading the registry extract and checking it against the params.

Every check runs before any model is fitted, and each failure names the
column, how many values are affected, an example value and the fix. Problems
that the report should *show* rather than refuse (a cluster of one patient, a
variable never recorded in a site) become notices, carried into the report.

The input file is only read. The analysis frame returned is a copy holding
the model columns; rows with a missing cluster id are excluded from it, and
their number is reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError
from hmlib.params import Params

__all__ = ["Registry", "Notice", "read_table", "load_registry", "file_sha256"]

#: A categorical predictor with more levels than this is almost certainly an
#: identifier or free text, not a predictor.
MAX_LEVELS = 50
#: Share of non-missing values that must parse as numbers for a text column to
#: be treated as "numbers with some text in them" (an error) rather than as a
#: categorical column.
NUMERIC_SHARE = 0.8


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the run.

    Attributes
    ----------
    code : str
        Stable identifier (e.g. ``"singleton-clusters"``).
    message : str
        Plain-language sentence, numbers included. Contains no patient-level
        values; cluster labels only where the count is not small.
    """

    code: str
    message: str


@dataclass(frozen=True)
class Registry:
    """A checked analysis frame and what was learnt while checking it.

    Attributes
    ----------
    params : Params
        The params, with ``focus`` resolved.
    frame : pandas.DataFrame
        Copy of the model columns; rows with a missing cluster id removed;
        categorical predictors as pandas ``Categorical`` with sorted levels.
    kinds : dict
        ``{column: "numeric" | "categorical"}`` for outcome, predictors and cluster covariates.
    levels : dict
        ``{column: [levels...]}`` for categorical columns (sorted; the
        first is the reference level).
    n_rows_read : int
        Rows in the file.
    n_excluded_missing_cluster : int
        Rows excluded because the cluster id was missing.
    singleton_clusters : tuple
        Labels of clusters with a single row (kept).
    notices : tuple of Notice
    data_sha256 : str
        SHA-256 of the input file (for the reproducibility appendix).
    cluster_labels : dict
        Original label -> shown label, when clusters were pseudonymised;
        empty otherwise. Never written to the report.
    """

    params: Params
    frame: pd.DataFrame
    kinds: dict
    levels: dict
    n_rows_read: int
    n_excluded_missing_cluster: int
    singleton_clusters: tuple
    notices: tuple
    data_sha256: str
    cluster_labels: dict = field(default_factory=dict, repr=False)

    @property
    def n_patients(self) -> int:
        """Rows in the analysis frame."""
        return int(len(self.frame))

    @property
    def n_clusters(self) -> int:
        """Distinct clusters in the analysis frame."""
        return int(self.frame[self.params.cluster].nunique())

    @property
    def incomplete_variables(self) -> tuple[str, ...]:
        """Outcome and predictors with at least one missing value."""
        cols = [self.params.outcome, *self.params.predictors]
        return tuple(c for c in cols if self.frame[c].isna().any())


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, with clear errors.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    DataError
        The file does not exist, cannot be parsed, or holds no rows.
    """
    path = Path(path)
    if not path.is_file():
        hint = " Run `hmreport demo` first to write the demo registry." if "demo" in path.name else ""
        raise DataError(f"data file not found: {path}.{hint} Check 'data' in the params file.")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes); export the registry again.")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, low_memory=False)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no columns or rows; export the registry again.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot read {path}: {first}. Check that it is a valid "
            f"{'CSV (comma-separated, UTF-8)' if path.suffix.lower() == '.csv' else 'Parquet'} file."
        ) from None
    if frame.shape[0] == 0:
        raise DataError(f"data file {path} has a header but no rows; export the registry again.")
    return frame


def _example(values: pd.Series) -> str:
    return repr(values.iloc[0]) if len(values) else "?"


def _numeric_or_categorical(frame: pd.DataFrame, col: str, forced_categorical: bool) -> str:
    """Decide how a column is coded; raise on numbers mixed with text."""
    series = frame[col]
    if forced_categorical:
        return "categorical"
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return "numeric"
    present = series.dropna()
    as_text = present.astype(str).str.strip()
    parsed = pd.to_numeric(as_text, errors="coerce")
    if len(present) and parsed.notna().mean() >= NUMERIC_SHARE:
        bad = as_text[parsed.isna()]
        raise DataError(
            f"column '{col}' holds numbers but {len(bad)} value(s) are text, e.g. {_example(bad)}. "
            "Replace them with numbers, or leave the cell empty if the value is missing "
            "(empty cells are read as missing)."
        )
    return "categorical"


def _code_column(frame: pd.DataFrame, col: str, forced_categorical: bool, levels: dict,
                 role: str) -> str:
    """Code ``frame[col]`` in place as float or as a Categorical with sorted levels.

    Records the levels of a categorical column in ``levels`` and returns its
    kind. Raises on numbers mixed with text, or on too many levels.
    """
    series = frame[col]
    kind = _numeric_or_categorical(frame, col, forced_categorical)
    if kind == "numeric":
        frame[col] = pd.to_numeric(series, errors="coerce").astype("float")
        return kind
    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")  # 1.0 -> "1": levels read as written
    text = series.astype("string").str.strip().astype(object).where(series.notna(), None)
    found = sorted(text.dropna().unique().tolist(), key=str)
    if len(found) > MAX_LEVELS:
        raise DataError(
            f"{role} '{col}' is text with {len(found)} different values (e.g. {found[0]!r}); "
            f"a categorical column may have at most {MAX_LEVELS}. Is it an identifier or free "
            f"text? Remove it from the params."
        )
    frame[col] = pd.Categorical(text, categories=found)
    levels[col] = found
    return kind


def load_registry(params: Params) -> Registry:
    """Read the data file named in ``params`` and check it.

    Checks, in order: the file reads and has rows; every named column exists;
    the cluster id (rows with a missing id are excluded and counted); the
    outcome (0/1 for binomial, numeric for gaussian, not constant, not all
    missing); each predictor (numbers without stray text, or a categorical
    column with a sensible number of levels; not constant; not all missing);
    cluster covariates constant within clusters; clusters nested in the higher
    levels; at least two clusters; the focus variable.

    Parameters
    ----------
    params : Params

    Returns
    -------
    Registry

    Raises
    ------
    DataError
        With the column, the count, an example value and the fix.
    """
    raw = read_table(params.data)
    sha = file_sha256(params.data)
    n_read = int(len(raw))

    missing_cols = [c for c in params.model_columns if c not in raw.columns]
    if missing_cols:
        import difflib

        col = missing_cols[0]
        close = difflib.get_close_matches(col, [str(c) for c in raw.columns], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        shown = ", ".join(map(str, list(raw.columns)[:15])) + (" ..." if raw.shape[1] > 15 else "")
        raise DataError(
            f"column '{col}' named in {params.source.name} is not in {params.data.name}.{hint} "
            f"The file has: {shown}. Fix the name in the params file."
        )

    frame = raw.loc[:, list(params.model_columns)].copy()
    notices: list[Notice] = []
    cluster = params.cluster

    no_cluster = frame[cluster].isna()
    n_excluded = int(no_cluster.sum())
    if n_excluded == len(frame):
        raise DataError(f"the cluster column '{cluster}' is empty in every row; check 'cluster' in the params.")
    if n_excluded:
        notices.append(Notice(
            "missing-cluster-id",
            f"{n_excluded} row(s) have no value in the cluster column '{cluster}' and are excluded "
            "from every analysis (a patient cannot be placed in a cluster).",
        ))
        frame = frame.loc[~no_cluster].copy()
    if frame[cluster].nunique() < 2:
        raise DataError(
            f"the cluster column '{cluster}' has a single value ({_example(frame[cluster])}); "
            "a hierarchical model needs at least two clusters. Check 'cluster' in the params."
        )

    kinds: dict[str, str] = {}
    levels: dict[str, list] = {}

    outcome = params.outcome
    y = frame[outcome]
    if y.isna().all():
        raise DataError(f"the outcome '{outcome}' is missing in every row; check 'outcome' in the params.")
    if params.outcome_family == "binomial":
        present = y.dropna()
        if pd.api.types.is_bool_dtype(present):
            frame[outcome] = y.astype("float")
        else:
            numeric = pd.to_numeric(present, errors="coerce")
            bad = present[numeric.isna() | ~numeric.isin([0, 1])]
            if len(bad):
                raise DataError(
                    f"the outcome '{outcome}' must be 0/1 for outcome_family: binomial, but {len(bad)} "
                    f"value(s) are not, e.g. {_example(bad)}. Recode it to 0 (no event) / 1 (event), "
                    "or use outcome_family: gaussian for a continuous outcome."
                )
            frame[outcome] = pd.to_numeric(y, errors="coerce").astype("float")
    else:
        if _numeric_or_categorical(frame, outcome, False) != "numeric":
            raise DataError(
                f"the outcome '{outcome}' is text (e.g. {_example(y.dropna())}) but outcome_family is "
                "gaussian; give a numeric outcome, or a 0/1 outcome with outcome_family: binomial."
            )
        frame[outcome] = pd.to_numeric(y, errors="coerce").astype("float")
    if frame[outcome].nunique(dropna=True) < 2:
        raise DataError(
            f"the outcome '{outcome}' takes a single value ({_example(frame[outcome].dropna())}) "
            "in every row where it is recorded; there is nothing to model."
        )
    kinds[outcome] = "numeric"

    for col in params.predictors:
        if frame[col].isna().all():
            raise DataError(
                f"predictor '{col}' is missing in all {len(frame)} rows; remove it from 'predictors' "
                "or check the export."
            )
        kinds[col] = _code_column(frame, col, col in params.categorical, levels, "predictor")
        if frame[col].nunique(dropna=True) < 2:
            raise DataError(
                f"predictor '{col}' takes a single value ({_example(frame[col].dropna())}) in every row "
                "where it is recorded; a constant cannot be a predictor. Remove it from 'predictors'."
            )

    for col in params.cluster_covariates:
        per_cluster = frame.groupby(cluster, observed=True)[col].nunique(dropna=True)
        varying = per_cluster[per_cluster > 1]
        if len(varying):
            raise DataError(
                f"cluster covariate '{col}' varies within {len(varying)} cluster(s) (e.g. cluster "
                f"{varying.index[0]!r} has {int(varying.iloc[0])} different values); a cluster-level "
                "column must be constant within each cluster. Move it to 'predictors' if it is "
                "patient-level."
            )
        if frame[col].isna().all():
            raise DataError(f"cluster covariate '{col}' is missing in every row; remove it or check the export.")
        kinds[col] = _code_column(frame, col, col in params.categorical, levels, "cluster covariate")

    for col in params.higher_levels:
        per_cluster = frame.groupby(cluster, observed=True)[col].nunique(dropna=True)
        crossing = per_cluster[per_cluster > 1]
        if len(crossing):
            raise DataError(
                f"clusters are not nested in '{col}': {len(crossing)} cluster(s) belong to more than one "
                f"'{col}' (e.g. cluster {crossing.index[0]!r}). Each cluster must sit in one higher-level "
                "unit; check 'cluster' and 'higher_levels'."
            )

    sizes = frame.groupby(cluster, observed=True).size()
    singletons = tuple(sizes.index[sizes == 1].tolist())
    if singletons:
        notices.append(Notice(
            "singleton-clusters",
            f"{len(singletons)} of {len(sizes)} clusters have a single patient; they are kept (they "
            "inform the fixed effects and are shrunk fully towards the average cluster) but carry "
            "almost no information about between-cluster variation.",
        ))

    focus = params.focus
    predictors_missing = {c: int(frame[c].isna().sum()) for c in params.predictors}
    if focus is None:
        most = max(params.predictors, key=lambda c: predictors_missing[c])
        focus = most if predictors_missing[most] > 0 else params.predictors[0]
        reason = "most missing values" if predictors_missing[most] > 0 else "first predictor; none is incomplete"
        notices.append(Notice("focus-chosen", f"Focus variable: '{focus}' ({reason})."))
    if predictors_missing[focus] == 0:
        notices.append(Notice(
            "focus-complete",
            f"The focus variable '{focus}' has no missing values; the imputation steps have little to do.",
        ))

    for col in [outcome, *params.predictors]:
        present = frame[col].notna().groupby(frame[cluster], observed=True).sum()
        never = present[present == 0]
        if len(never):
            notices.append(Notice(
                "structural-gap",
                f"'{col}' is never recorded in {len(never)} of {len(present)} clusters (a structural gap); "
                "complete-case analysis drops these clusters entirely, and imputation there relies on the "
                "other clusters only.",
            ))

    mapping: dict = {}
    if params.privacy.pseudonymize_clusters:
        from hmlib.privacy import pseudonymize_clusters

        mapping = pseudonymize_clusters(sorted(frame[cluster].unique().tolist(), key=str), seed=params.seed)
        frame[cluster] = frame[cluster].map(mapping)
        singletons = tuple(mapping[s] for s in singletons)

    frame = frame.reset_index(drop=True)
    resolved = params if params.focus == focus else params.with_overrides(focus=focus)
    return Registry(
        params=resolved, frame=frame, kinds=kinds, levels=levels, n_rows_read=n_read,
        n_excluded_missing_cluster=n_excluded, singleton_clusters=singletons,
        notices=tuple(notices), data_sha256=sha, cluster_labels=mapping,
    )
