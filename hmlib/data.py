"""Checking the registry extract against the params.

:mod:`hmlib.reading` reads the model columns as text; here every check runs
before any model is fitted, and each failure names the column, how many values
are affected, an example value and the fix. Problems that the report should
*show* rather than refuse (a cluster of one patient, a variable never recorded
in a site, missing-value codes read as missing) become notices, carried into
the report.

Coding rules: a column whose recorded values are mostly numbers is numeric,
and any other text in it is an error naming examples; numbers never become
categories unless the column is listed in ``categorical``; ``inf`` is an
error; a categorical column's labels are trimmed, and labels that differ only
in letter case get a notice (they stay separate levels). Cluster ids are
text.

The input file is only read. The analysis frame returned holds the model
columns; rows with a missing cluster id are excluded from it, and their number
is reported.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError, FitError
from hmlib.params import Params
from hmlib.privacy import pseudonymize_clusters
from hmlib.reading import DELIMITERS, RawExtract, parse_numbers, read_extract
from hmlib.results import load_truth
from hmlib.stats.design import check_full_rank, design_matrix
from hmlib.wording import FEW_CLUSTERS, count_text, few_clusters_caveat

__all__ = ["Registry", "Notice", "load_registry"]

#: A categorical predictor with more levels than this is almost certainly an
#: identifier or free text, not a predictor.
MAX_LEVELS = 50
#: Share of recorded values that must parse as numbers for a text column to be
#: numeric ("numbers with some text in them" is then an error naming the text).
NUMERIC_SHARE = 0.5
_TRUE_FALSE = {"true": 1.0, "false": 0.0}


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
    time_values : pandas.Series or None
        The params' ``time`` column, checked (floats, or datetime64 for
        dates), aligned with ``frame``; None without ``time``. Kept out of
        ``frame`` so that steps that do not use time see the same frame.
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
    time_values: pd.Series | None = field(default=None, repr=False)

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


def _plain(value) -> str:
    """A value as the user wrote it: Python scalars, no numpy reprs."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return repr(value) if isinstance(value, str) else str(value)


def _example(values: pd.Series) -> str:
    return _plain(values.iloc[0]) if len(values) else "?"


def _examples(values: pd.Series, k: int = 3) -> str:
    shown = list(dict.fromkeys(values.tolist()))
    text = ", ".join(_plain(v) for v in shown[:k])
    return text + (f" and {len(shown) - k} other value(s)" if len(shown) > k else "")


class _Checker:
    """The checks of one extract against its params; collects notices as it goes."""

    def __init__(self, params: Params, raw: RawExtract):
        self.params = params
        self.raw = raw
        self.frame = raw.frame.copy()
        self.notices: list[Notice] = []
        self.kinds: dict[str, str] = {}
        self.levels: dict[str, list] = {}
        self.min_cell = int(params.privacy.min_cell)

    def notice(self, code: str, message: str) -> None:
        self.notices.append(Notice(code, message))

    # ------------------------------------------------------------------ reading
    def reading_notices(self) -> None:
        raw, mc = self.raw, self.min_cell
        if raw.delimiter is not None and raw.delimiter != ",":
            self.notice("delimiter", f"{self.params.data.name} was read as a {DELIMITERS[raw.delimiter]}-separated "
                                     "file.")
        for col, codes in raw.missing_codes.items():
            listed = ", ".join(f"{code!r} ({count_text(n, mc)})" for code, n in codes.items())
            self.notice("missing-codes", f"In '{col}', {listed} were read as missing values.")
        for col, labels in raw.merged_by_trimming.items():
            self.notice("trimmed-labels", f"In '{col}', labels that differed only by spaces before or after them "
                                          f"were read as one: {', '.join(map(repr, labels[:5]))}.")

    def numbers(self, col: str) -> pd.Series | None:
        """The column as numbers, or None when it is text (categorical).

        Raises DataError for a column of mostly numbers with text in it, and for infinite values.
        """
        series = self.frame[col]
        if pd.api.types.is_bool_dtype(series):
            return series.astype(float)
        if pd.api.types.is_numeric_dtype(series):
            values = series.astype(float)
        else:
            present = series.dropna().astype(str)
            if not len(present):
                return pd.Series(np.nan, index=series.index)
            lower = present.str.lower()
            if lower.isin(list(_TRUE_FALSE)).all():
                self.notice("true-false", f"'{col}' holds TRUE/FALSE values; they were read as 1/0.")
                return lower.map(_TRUE_FALSE).reindex(series.index).astype(float)
            values, comma = parse_numbers(series)
            parsed = values.loc[present.index].notna()
            if parsed.mean() < NUMERIC_SHARE:
                if parsed.any():
                    self.notice("numbers-in-text", f"'{col}' is mostly text; the values that look like numbers "
                                                   f"(e.g. {_examples(present[parsed], 2)}) are read as labels.")
                return None
            bad = present[~parsed]
            if len(bad):
                raise DataError(
                    f"column '{col}' holds numbers but {len(bad):,} value(s) are text, "
                    f"e.g. {_examples(bad)}. Replace them with numbers, leave the cells empty where the value is "
                    "missing, or list such codes under 'missing_codes' in the params file."
                )
            if comma:
                self.notice("decimal-comma", f"'{col}' is written with decimal commas (e.g. "
                                             f"{_example(present[present.str.contains(',')])}); read as decimal "
                                             "numbers.")
        infinite = np.isinf(values)
        if infinite.any():
            raise DataError(
                f"column '{col}' holds {int(infinite.sum()):,} infinite value(s) ('inf'); "
                "a measurement cannot be infinite. Fix the export, or leave the cells empty if they are missing."
            )
        return values

    # ------------------------------------------------------------------ columns
    def require_columns(self) -> None:
        params = self.params
        present = set(self.raw.columns)
        missing_cols = [c for c in params.read_columns if c not in present]
        if not missing_cols:
            return
        col = missing_cols[0]
        names = [str(c) for c in self.raw.columns]
        close = difflib.get_close_matches(col, names, n=1) or [n for n in names if n.lower() == col.lower()]
        hint = f" Did you mean '{close[0]}'?" if close else ""
        shown = ", ".join(names[:15]) + (" ..." if len(names) > 15 else "")
        how = f" (read as {DELIMITERS[self.raw.delimiter]}-separated)" if self.raw.delimiter else ""
        raise DataError(
            f"column '{col}' named in {params.source.name} is not in {params.data.name}.{hint} "
            f"The file has{how}: {shown}. Fix the name in the params file."
        )

    def clusters(self) -> int:
        """Exclude rows without a cluster id; at least two clusters. Returns the rows excluded."""
        frame, cluster = self.frame, self.params.cluster
        no_cluster = frame[cluster].isna()
        n_excluded = int(no_cluster.sum())
        if n_excluded == len(frame):
            raise DataError(f"the cluster column '{cluster}' is empty in every row; check 'cluster' in the params.")
        if n_excluded:
            self.notice("missing-cluster-id", f"{count_text(n_excluded, self.min_cell)} row(s) have no value in "
                                              f"the cluster column '{cluster}' and are excluded from every analysis "
                                              "(a patient cannot be placed in a cluster).")
            self.frame = frame.loc[~no_cluster].copy()
        n_clusters = self.frame[cluster].nunique()
        if n_clusters < 2:
            raise DataError(
                f"the cluster column '{cluster}' has a single value ({_example(self.frame[cluster])}); "
                "a hierarchical model needs at least two clusters. Check 'cluster' in the params."
            )
        if n_clusters < FEW_CLUSTERS:
            self.notice("few-clusters", few_clusters_caveat(n_clusters))
        return n_excluded

    def outcome(self) -> None:
        params, frame = self.params, self.frame
        outcome = params.outcome
        y = frame[outcome]
        if y.isna().all():
            raise DataError(f"the outcome '{outcome}' is missing in every row; check 'outcome' in the params.")
        if params.outcome_family == "binomial":
            present = y.dropna()
            lower = present.astype(str).str.lower()
            if pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
                values = y.astype(float)
            elif len(present) and lower.isin(list(_TRUE_FALSE)).all():
                values = lower.map(_TRUE_FALSE).reindex(y.index).astype(float)
            else:
                values = parse_numbers(y)[0]
            bad = present[~values.loc[present.index].isin([0.0, 1.0])]
            if len(bad):
                raise DataError(
                    f"the outcome '{outcome}' must be 0/1 for outcome_family: binomial, but {len(bad):,} "
                    f"value(s) are not, e.g. {_examples(bad)}. Recode it to 0 (no event) / 1 (event), or use "
                    "outcome_family: gaussian for a continuous outcome."
                )
        else:
            values = self.numbers(outcome)
            if values is None:
                raise DataError(
                    f"the outcome '{outcome}' is text (e.g. {_example(y.dropna())}) but outcome_family is "
                    "gaussian; give a numeric outcome, or a 0/1 outcome with outcome_family: binomial."
                )
        frame[outcome] = values
        if frame[outcome].nunique(dropna=True) < 2:
            raise DataError(
                f"the outcome '{outcome}' takes a single value ({_example(frame[outcome].dropna())}) "
                "in every row where it is recorded; there is nothing to model."
            )
        self.kinds[outcome] = "numeric"

    def code_column(self, col: str, role: str) -> str:
        """Code a predictor or cluster covariate as float or as a Categorical with sorted levels."""
        forced = col in self.params.categorical
        if not forced:
            values = self.numbers(col)
            if values is not None:
                self.frame[col] = values
                return "numeric"
        series = self.frame[col]
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
        by_case: dict[str, list] = {}
        for label in found:
            by_case.setdefault(str(label).lower(), []).append(label)
        variants = [labels for labels in by_case.values() if len(labels) > 1]
        if variants:
            shown = "; ".join(" / ".join(map(repr, labels)) for labels in variants[:3])
            self.notice("case-variants", f"'{col}' has labels that differ only in letter case ({shown}); they are "
                                         "kept as separate levels. Recode them in the export if they mean the same.")
        self.frame[col] = pd.Categorical(text, categories=found)
        self.levels[col] = found
        return "categorical"

    def predictors(self) -> None:
        frame = self.frame
        for col in self.params.predictors:
            if frame[col].isna().all():
                raise DataError(
                    f"predictor '{col}' is missing in all {len(frame)} rows; remove it from 'predictors' "
                    "or check the export."
                )
            self.kinds[col] = self.code_column(col, "predictor")
            if self.frame[col].nunique(dropna=True) < 2:
                raise DataError(
                    f"predictor '{col}' takes a single value ({_example(self.frame[col].dropna())}) in every row "
                    "where it is recorded; a constant cannot be a predictor. Remove it from 'predictors'."
                )

    def ordinal_columns(self) -> None:
        """Each ``ordinal`` predictor is categorical, and an order given for it lists exactly its levels."""
        for col, order in self.params.ordinal.items():
            if self.kinds.get(col) != "categorical":
                raise DataError(f"'{col}' is listed under 'ordinal' but is read as numbers; add it to 'categorical' "
                                "as well (its numbers are then levels), or remove it from 'ordinal'.")
            found = [str(v) for v in self.levels[col]]
            if order is not None and sorted(order) != sorted(found):
                raise DataError(f"'ordinal.{col}' lists {list(order)}, but '{col}' has the levels {found}; list "
                                "every level once, lowest first.")

    def cluster_level_columns(self) -> None:
        frame, cluster = self.frame, self.params.cluster
        for col in self.params.cluster_covariates:
            per_cluster = frame.groupby(cluster, observed=True)[col].nunique(dropna=True)
            varying = per_cluster[per_cluster > 1]
            if len(varying):
                raise DataError(
                    f"cluster covariate '{col}' varies within {len(varying)} cluster(s) (e.g. cluster "
                    f"{_plain(varying.index[0])} has {int(varying.iloc[0])} different values); a cluster-level "
                    "column must be constant within each cluster. Move it to 'predictors' if it is "
                    "patient-level."
                )
            if frame[col].isna().all():
                raise DataError(f"cluster covariate '{col}' is missing in every row; remove it or check the export.")
            self.kinds[col] = self.code_column(col, "cluster covariate")
        for col in self.params.higher_levels:
            per_cluster = frame.groupby(cluster, observed=True)[col].nunique(dropna=True)
            crossing = per_cluster[per_cluster > 1]
            if len(crossing):
                raise DataError(
                    f"clusters are not nested in '{col}': {len(crossing)} cluster(s) belong to more than one "
                    f"'{col}' (e.g. cluster {_plain(crossing.index[0])}). Each cluster must sit in one "
                    "higher-level unit; check 'cluster' and 'higher_levels'."
                )
        self._check_higher_nesting()
        for col in self.params.higher_levels:
            units = int(frame[col].nunique(dropna=True))
            if units < FEW_CLUSTERS:
                self.notice("few-higher-units",
                            f"'{col}' has only {units} unit(s): the SD between them (the analysis model's random "
                            "intercept per unit) is barely estimable from so few and can come out as 0 or far too "
                            f"large. With fewer than {FEW_CLUSTERS}, consider taking '{col}' out of "
                            f"'higher_levels' and adding it to 'predictors' and 'categorical' (a fixed effect per "
                            "unit) instead.")

    def _check_higher_nesting(self) -> None:
        """Two higher levels must be nested, one in the other (region in country), and group differently."""
        frame, higher = self.frame, list(self.params.higher_levels)
        for i, a in enumerate(higher):
            for b in higher[i + 1:]:
                pairs = frame[[a, b]].dropna().drop_duplicates()
                a_in_b = not pairs[a].duplicated().any()
                b_in_a = not pairs[b].duplicated().any()
                if a_in_b and b_in_a:
                    raise DataError(f"higher levels '{a}' and '{b}' group the clusters identically; keep one of "
                                    "them in 'higher_levels'.")
                if not (a_in_b or b_in_a):
                    raise DataError(f"higher levels '{a}' and '{b}' are not nested in each other (units of each "
                                    f"span several units of the other); list only levels nested in one another "
                                    "(e.g. region within country) in 'higher_levels'.")

    def random_slope_columns(self) -> None:
        """Each random slope is numeric, recorded in every row and varies within clusters (DataError otherwise)."""
        frame, cluster = self.frame, self.params.cluster
        for col in self.params.random_slopes:
            if self.kinds.get(col) != "numeric":
                raise DataError(f"the random slope '{col}' is not numeric (its values are read as categories); a "
                                "random slope needs numbers such as weeks since enrolment. Recode it, or remove it "
                                "from 'random_slopes'.")
            absent = frame[col].isna()
            if absent.any():
                raise DataError(f"the random slope '{col}' is missing in {count_text(int(absent.sum()), self.min_cell)} "
                                f"row(s); hmlib imputes predictors, but a random slope (the visit time) must be "
                                f"recorded in every row. Fill in '{col}' from the visit schedule, or drop those rows "
                                "from the extract.")
            spread = frame.groupby(cluster, observed=True)[col].nunique()
            if not (spread > 1).any():
                raise DataError(f"the random slope '{col}' never varies within a {cluster}: a slope per {cluster} "
                                f"needs several values of '{col}' in a {cluster} (e.g. visit weeks within a "
                                f"patient). Remove '{col}' from 'random_slopes' (it stays a predictor).")

    def time_column(self) -> pd.Series | None:
        """The ``time`` column as floats or dates; it varies within clusters; repeated (cluster, time) counted.

        Raises DataError for a column that is neither numbers nor dates, a missing time, or a time that never
        varies within a cluster (a patient-level column). Repeated (cluster, time) rows are a notice: step 1
        counts each such visit once.
        """
        params, frame = self.params, self.frame
        col, cluster = params.time, params.cluster
        if col is None:
            return None
        fix = (f"Give each visit's time in '{col}' (e.g. weeks since enrolment, or dates as YYYY-MM-DD), or "
               "remove 'time' from the params file.")
        absent = frame[col].isna()
        if absent.any():
            raise DataError(f"the time column '{col}' is empty in {count_text(int(absent.sum()), self.min_cell)} "
                            f"row(s); every visit needs a time. {fix}")
        values = self._time_values(col, fix)
        per_cluster = values.groupby(frame[cluster].to_numpy()).nunique()
        if not (per_cluster > 1).any():
            raise DataError(f"the time column '{col}' never varies within a {cluster}: each {cluster} has a "
                            f"single time, so it is not the time of repeated visits (an enrolment date, say). "
                            f"With time, the cluster is the patient ('cluster: patient_id') and each row a "
                            f"visit. {fix}")
        repeated = pd.DataFrame({"c": frame[cluster].to_numpy(), "t": values.to_numpy()}).duplicated()
        if repeated.any():
            n = int(repeated.sum())
            self.notice("duplicate-visits",
                        f"{count_text(n, self.min_cell)} row(s) repeat the ({cluster}, {col}) of another row; "
                        f"step 1's diagnostics over time count each such visit once (a variable as recorded if "
                        "any of its rows has it). Check the export for duplicated visits.")
        return values

    def _time_values(self, col: str, fix: str) -> pd.Series:
        """``col`` as floats (numbers) or datetime64 (dates written as text); DataError otherwise."""
        series = self.frame[col]
        if pd.api.types.is_datetime64_any_dtype(series):
            return series
        if col in self.params.predictors and self.kinds.get(col) == "numeric":
            return series.astype(float)  # already read as a numeric predictor
        if col not in self.params.predictors:
            try:
                numbers = self.numbers(col)
            except DataError:
                numbers = None
            if numbers is not None:
                return numbers.astype(float)
        text = series.astype(str).str.strip()
        dates = pd.to_datetime(text, errors="coerce", format="ISO8601")
        bad = text[dates.isna()]
        if len(bad) == len(text):
            raise DataError(f"the time column '{col}' holds neither numbers nor dates (e.g. "
                            f"{_examples(series)}). {fix}")
        if len(bad):
            raise DataError(f"the time column '{col}' holds dates, but {len(bad):,} value(s) are not dates, e.g. "
                            f"{_examples(bad)}. {fix}")
        return dates

    def collinearity(self) -> None:
        """Predictors that are linearly dependent cannot be estimated.

        Dependent in the complete cases and still dependent with every patient (missing values filled with
        the column's mean, which keeps an exact relation between two columns recorded together): an error,
        now. Dependent in the complete cases only: a notice (the complete-case model cannot be estimated;
        the imputation methods use every patient).
        """
        params = self.params
        complete = self.frame.dropna(subset=[params.outcome, *params.predictors])
        if len(complete) < 2:
            return
        try:
            check_full_rank(design_matrix(complete, params.predictors, self.levels))
            return
        except FitError as exc:
            detail = str(exc).split(": ", 1)[-1]
        filled = self.frame.copy()
        for col in params.predictors:
            if self.kinds.get(col) == "numeric":
                filled[col] = filled[col].fillna(filled[col].mean())
            else:
                filled[col] = filled[col].fillna(filled[col].mode().iloc[0])
        try:
            check_full_rank(design_matrix(filled, params.predictors, self.levels))
        except FitError:
            raise DataError(f"the predictors are collinear, so the analysis model cannot be estimated: {detail}") \
                from None
        self.notice("collinear-complete-cases",
                    f"Among the {len(complete):,} complete cases the predictors are collinear ({detail.split('. ')[0]}): "
                    "the complete-case model cannot be estimated; the imputation methods use every patient.")

    def structure_notices(self) -> tuple:
        """Singletons, the focus variable, structural gaps. Returns (singletons, focus)."""
        params, frame, cluster = self.params, self.frame, self.params.cluster
        sizes = frame.groupby(cluster, observed=True).size()
        singletons = tuple(sizes.index[sizes == 1].tolist())
        if singletons:
            self.notice("singleton-clusters",
                        f"{len(singletons)} of {len(sizes)} clusters have a single patient; they are kept (they "
                        "inform the fixed effects and are shrunk fully towards the average cluster) but carry "
                        "almost no information about between-cluster variation.")
        focus = params.focus
        predictors_missing = {c: int(frame[c].isna().sum()) for c in params.predictors}
        if focus is None:
            most = max(params.predictors, key=lambda c: predictors_missing[c])
            focus = most if predictors_missing[most] > 0 else params.predictors[0]
            reason = "most missing values" if predictors_missing[most] > 0 else "first predictor; none is incomplete"
            self.notice("focus-chosen", f"Focus variable: '{focus}' ({reason}).")
        if predictors_missing[focus] == 0:
            self.notice("focus-complete", f"The focus variable '{focus}' has no missing values; the imputation "
                                          "steps have little to do.")
        for col in [params.outcome, *params.predictors]:
            present = frame[col].notna().groupby(frame[cluster], observed=True).sum()
            never = present[present == 0]
            if len(never):
                self.notice("structural-gap",
                            f"'{col}' is never recorded in {len(never)} of {len(present)} clusters (a structural "
                            "gap); complete-case analysis drops these clusters entirely, and imputation there relies "
                            "on the other clusters only.")
        return singletons, focus


def load_registry(params: Params) -> Registry:
    """Read the data file named in ``params`` and check it.

    Checks, in order: the file reads and has rows (:func:`hmlib.reading.read_extract`);
    every named column exists; the cluster id (rows with a missing id are
    excluded and counted; at least two clusters); the outcome (0/1 for
    binomial, numeric for gaussian, not constant, not all missing); each
    predictor (numbers without stray text, or a categorical column with a
    sensible number of levels; not constant; not all missing); cluster
    covariates constant within clusters; clusters nested in the higher
    levels; the ``time`` column when given (numbers or dates, no missing
    time, varying within clusters; repeated (cluster, time) rows a
    notice); each random slope (numeric, recorded in every row, varying
    within clusters); the focus variable.

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
    raw = read_extract(params.data, params.read_columns, cluster=params.cluster, encoding=params.encoding,
                       missing_codes=params.missing_codes)
    load_truth(params.truth)  # a truth file named in the params must be valid
    checker = _Checker(params, raw)
    checker.require_columns()
    checker.frame = checker.frame.loc[:, list(params.read_columns)]
    checker.reading_notices()
    n_excluded = checker.clusters()
    checker.outcome()
    checker.predictors()
    checker.ordinal_columns()
    checker.cluster_level_columns()
    checker.random_slope_columns()
    time_values = checker.time_column()
    checker.collinearity()
    singletons, focus = checker.structure_notices()

    frame, cluster = checker.frame, params.cluster
    if params.time is not None and params.time not in params.model_columns:
        frame = frame.drop(columns=[params.time])
    mapping: dict = {}
    if params.privacy.pseudonymize_clusters:
        mapping = pseudonymize_clusters(sorted(frame[cluster].unique().tolist(), key=str), seed=params.seed)
        frame[cluster] = frame[cluster].map(mapping)
        singletons = tuple(mapping[s] for s in singletons)

    frame = frame.reset_index(drop=True)
    if time_values is not None:
        time_values = time_values.reset_index(drop=True).rename(params.time)
    resolved = params if params.focus == focus else params.with_overrides(focus=focus)
    return Registry(
        params=resolved, frame=frame, kinds=checker.kinds, levels=checker.levels, n_rows_read=raw.n_rows,
        n_excluded_missing_cluster=n_excluded, singleton_clusters=singletons,
        notices=tuple(checker.notices), data_sha256=raw.sha256, cluster_labels=mapping, time_values=time_values,
    )
