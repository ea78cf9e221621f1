"""Data preparation of the joint model: which predictor is complete, binary, categorical or continuous.

:func:`prepare_joint_data` turns a frame into :class:`JointData`, the arrays
the model is built from: the outcome on the model's scale (a gaussian outcome
standardised), the cluster index of each row, the standardised design ``Z``
of the complete predictors (categorical ones treatment coded), and one
:class:`ContinuousPredictor`, :class:`BinaryPredictor` or
:class:`CategoricalPredictor` (three or more levels, nominal or ordinal) per
incomplete predictor. It holds patient-level arrays and is never written out.

A positive, right-skewed incomplete variable (all observed values > 0 and
sample skewness above :data:`LOGNORMAL_SKEWNESS`) gets a lognormal submodel
(:func:`choose_distribution`) unless ``distributions`` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import FitError
from hmlib.stats.design import ordinal_ranks, outermost_first

__all__ = ["LOGNORMAL_SKEWNESS", "ContinuousPredictor", "BinaryPredictor", "CategoricalPredictor", "JointData",
           "choose_distribution", "prepare_joint_data"]

#: A positive incomplete variable whose observed sample skewness exceeds this
#: is modelled as lognormal (override with ``distributions=``).
LOGNORMAL_SKEWNESS = 1.0


@dataclass(frozen=True, eq=False)
class ContinuousPredictor:
    """An incomplete continuous predictor and its submodel.

    Attributes
    ----------
    name : str
    distribution : {"normal", "lognormal"}
    centre, scale : float
        Standardisation used in the outcome model (original scale).
    sub_centre, sub_scale : float
        Standardisation of the submodel response (of ``log(x)`` when lognormal).
    values : numpy.ndarray
        Original scale, NaN where missing.
    response : numpy.ndarray
        Submodel scale, standardised, NaN where missing.
    observed : numpy.ndarray of bool
    mode : {"marginal", "latent"}
        Missing values integrated out, or latent parameters.
    """

    name: str
    distribution: str
    centre: float
    scale: float
    sub_centre: float
    sub_scale: float
    values: np.ndarray
    response: np.ndarray
    observed: np.ndarray
    mode: str

    def to_outcome_scale(self, sub_value):
        """Submodel-scale value(s) -> standardised original-scale value(s) (numpy)."""
        raw = sub_value * self.sub_scale + self.sub_centre
        if self.distribution == "lognormal":
            raw = np.exp(raw)
        return (raw - self.centre) / self.scale

    def to_original(self, sub_value):
        """Submodel-scale value(s) -> original-scale value(s) (numpy)."""
        raw = sub_value * self.sub_scale + self.sub_centre
        return np.exp(raw) if self.distribution == "lognormal" else raw


@dataclass(frozen=True, eq=False)
class BinaryPredictor:
    """An incomplete binary predictor (0/1 numeric or a two-level category).

    Attributes
    ----------
    name : str
        The column.
    term : str
        Its outcome term (``sex[male]`` for a category, the column for 0/1).
    values : numpy.ndarray
        0/1, NaN where missing.
    observed : numpy.ndarray of bool
    """

    name: str
    term: str
    values: np.ndarray
    observed: np.ndarray


@dataclass(frozen=True, eq=False)
class CategoricalPredictor:
    """An incomplete categorical predictor with three or more levels.

    In the outcome model it is treatment coded (one term per non-reference
    level, as in the analysis model); its own submodel is a baseline-category
    logit (nominal) or a cumulative logit (ordinal), with cluster random
    intercepts (and random slopes when the model has them,
    :mod:`hmlib.stats.joint.slopes`), and its missing values are summed out
    over its levels.

    Attributes
    ----------
    name : str
        The column.
    levels : tuple of str
        The levels, the first the reference (and, ordinal, in their order).
    terms : tuple of str
        Its outcome terms, ``name[level]`` for each non-reference level.
    codes : numpy.ndarray
        Level index 0..K-1 per row (float), NaN where missing.
    observed : numpy.ndarray of bool
    ordinal : bool
        Cumulative-logit submodel (True) or baseline-category logit (False).
    ranks : numpy.ndarray or None
        Ordinal: the rank of each level (index into ``levels``) on the
        ordinal scale, 0 the lowest; the submodel works on ranks, the
        outcome model on ``levels``. None for a nominal predictor.
    """

    name: str
    levels: tuple
    terms: tuple
    codes: np.ndarray
    observed: np.ndarray
    ordinal: bool
    ranks: np.ndarray | None = None

    @property
    def n_levels(self) -> int:
        """Number of levels K."""
        return len(self.levels)

    def indicators(self) -> np.ndarray:
        """Rows x (K - 1) treatment-coded columns, 0 where missing."""
        codes = np.where(self.observed, self.codes, -1)
        return (codes[:, None] == np.arange(1, self.n_levels)[None, :]).astype(float)


@dataclass(frozen=True, eq=False)
class LevelAbove:
    """A level above the cluster (params ``higher_levels``): its column, each cluster's unit, the units' labels."""

    name: str
    parent: np.ndarray          # J: the unit (0 .. n_units - 1) of each cluster
    labels: np.ndarray          # n_units labels, sorted

    @property
    def n_units(self) -> int:
        return int(self.labels.size)


@dataclass(frozen=True, eq=False)
class JointData:
    """Arrays and metadata of one joint model (built by :func:`prepare_joint_data`).

    Holds patient-level arrays; it is never written out. The main attributes
    are ``y`` (outcome, on the model's scale), ``codes`` (cluster index per
    row), ``cluster_labels``, ``Z`` (standardised complete design without
    intercept), ``z_terms``, ``continuous``, ``binaries`` and
    ``categoricals`` (incomplete predictors), ``focus`` and ``focus_kind``
    (``"continuous"``, ``"binary"``, ``"categorical"`` or ``"complete"``),
    ``term_order`` (outcome terms in the user's predictor order), ``higher``
    (the levels above the cluster, outermost first: :class:`LevelAbove`), ``slopes`` (the predictors with
    a random slope at the cluster level, each a complete numeric column of ``Z``:
    :mod:`hmlib.stats.joint.slopes`).
    """

    outcome: str
    family: str
    cluster: str
    y: np.ndarray
    y_centre: float
    y_scale: float
    codes: np.ndarray
    cluster_labels: np.ndarray
    Z: np.ndarray
    z_terms: tuple
    z_centre: np.ndarray
    z_scale: np.ndarray
    continuous: tuple
    binaries: tuple
    focus: str
    focus_kind: str
    term_order: tuple
    missingness_model: bool
    n_dropped_outcome: int
    predictors: tuple
    categoricals: tuple = ()
    higher: tuple = ()
    slopes: tuple = ()

    @property
    def slope_columns(self) -> tuple:
        """Positions in ``Z`` of the random-slope predictors (``slopes``)."""
        return tuple(self.z_terms.index(name) for name in self.slopes)

    @property
    def n(self) -> int:
        """Rows in the model."""
        return int(self.y.size)

    @property
    def n_clusters(self) -> int:
        """Clusters in the model."""
        return int(self.cluster_labels.size)

    @property
    def outcome_terms(self) -> tuple:
        """Outcome coefficients in model order: complete, continuous, binary, categorical (one per level)."""
        return (*self.z_terms, *(c.name for c in self.continuous), *(b.term for b in self.binaries),
                *(t for c in self.categoricals for t in c.terms))

    @property
    def incomplete(self) -> tuple:
        """Every incomplete predictor: continuous, binary, categorical."""
        return (*self.continuous, *self.binaries, *self.categoricals)

    def categorical_columns(self, k: int) -> np.ndarray:
        """Positions in the outcome coefficient vector of categorical predictor ``k``'s terms."""
        start = self.Z.shape[1] + len(self.continuous) + len(self.binaries) + \
            sum(c.n_levels - 1 for c in self.categoricals[:k])
        return np.arange(start, start + self.categoricals[k].n_levels - 1)

    @property
    def focus_missing(self) -> np.ndarray:
        """Per row: the focus value is missing (all False for a complete focus)."""
        var = self.focus_variable
        return np.zeros(self.n, bool) if var is None else ~var.observed

    @property
    def focus_variable(self):
        """The focus's incomplete-predictor record (continuous, binary or categorical); None when it is complete."""
        for var in self.incomplete:
            if var.name == self.focus:
                return var
        return None

    @property
    def focus_term(self):
        """The outcome term of the focus variable (None if it is not a predictor term).

        A categorical focus has one term per non-reference level: this is the
        first (:attr:`focus_terms` has them all).
        """
        terms = self.focus_terms
        return terms[0] if terms else None

    @property
    def focus_terms(self) -> tuple:
        """Every outcome term of the focus variable (one per non-reference level for a categorical one)."""
        var = self.focus_variable
        if var is None:
            if self.focus in self.term_order:
                return (self.focus,)
            return tuple(t for t in self.term_order if t.startswith(f"{self.focus}["))
        if isinstance(var, CategoricalPredictor):
            return var.terms
        return (var.term,) if isinstance(var, BinaryPredictor) else (var.name,)

    def submodel_key(self, key: str) -> str:
        """User-facing submodel name (outcome, missingness or a predictor) -> internal key (``x<k>``, ``b<k>``)."""
        if key in ("outcome", "missingness"):
            return key
        for k, var in enumerate(self.continuous):
            if var.name == key:
                return f"x{k}"
        for k, var in enumerate(self.binaries):
            if var.name == key:
                return f"b{k}"
        for k, var in enumerate(self.categoricals):
            if var.name == key:
                return f"c{k}"
        raise FitError(f"parameterisation names {key!r}, which is not 'outcome', 'missingness' or an "
                       "incomplete predictor.")

    def display_key(self, key: str) -> str:
        """Internal submodel key -> user-facing name (the inverse of :meth:`submodel_key`)."""
        if key.endswith("@above"):
            return f"{self.display_key(key[:-len('@above')])} (levels above the cluster)"
        if key.startswith("x") and key[1:].isdigit():
            return self.continuous[int(key[1:])].name
        if key.startswith("b") and key[1:].isdigit():
            return self.binaries[int(key[1:])].name
        if key.startswith("c") and key[1:].isdigit():
            return self.categoricals[int(key[1:])].name
        return key


def choose_distribution(values) -> str:
    """``"lognormal"`` for positive right-skewed values, else ``"normal"``.

    The rule: every observed value > 0 and the sample skewness (bias
    corrected) above :data:`LOGNORMAL_SKEWNESS`.
    """
    present = np.asarray(values, dtype=float)
    present = present[np.isfinite(present)]
    if present.size < 3 or np.any(present <= 0):
        return "normal"
    return "lognormal" if stats.skew(present, bias=False) > LOGNORMAL_SKEWNESS else "normal"


def prepare_joint_data(frame: pd.DataFrame, *, outcome: str, predictors, cluster: str, family: str,
                       levels: dict | None = None, focus: str | None = None,
                       distributions: dict | None = None, missing_values: str = "marginal",
                       missingness_model: bool = True, ordinal=None, higher_levels=(),
                       random_slopes=()) -> JointData:
    """Standardise and index the data of the joint model.

    Parameters
    ----------
    frame : pandas.DataFrame
        Read only; a copy is used.
    outcome, cluster : str
    predictors : sequence of str
    family : {"binomial", "gaussian"}
    levels : dict, optional
        ``{column: levels}`` of categorical predictors (first = reference).
    focus : str, optional
        The incomplete predictor the report centres on (default: the one with
        most missing values).
    distributions : dict, optional
        ``{column: "normal" | "lognormal"}`` overrides of :func:`choose_distribution`.
    missing_values : {"marginal", "latent"}
        Integrate the focus variable's missing values out (default) or make
        them latent parameters as brms does.
    missingness_model : bool
        Add the shared-parameter missingness submodel (needs an incomplete focus).
    ordinal : sequence of str or dict, optional
        Categorical predictors whose submodel is a cumulative logit
        (ordinal) instead of a baseline-category logit (nominal): names, or
        ``{column: levels from lowest to highest}``. With names only the
        levels are ordered as numbers when they all read as numbers, else as
        in ``levels``. The outcome model codes them by ``levels`` either way.
    higher_levels : sequence of str, optional
        Columns of levels above the cluster (each cluster in one unit of
        each): every submodel gets nested random intercepts for them
        (:mod:`hmlib.stats.joint.model`).
    random_slopes : sequence of str, optional
        Predictors with a random slope at the cluster level (usually time):
        complete numeric predictors that vary within clusters
        (:mod:`hmlib.stats.joint.slopes`); with ``higher_levels`` those
        levels keep random intercepts only.

    Returns
    -------
    JointData

    Raises
    ------
    FitError
        Unknown family or mode, a predictor that cannot be modelled (a
        lognormal variable with values <= 0; an ordinal column that is not
        categorical, or whose order does not list its levels), fewer than two
        clusters; a random slope that is not a complete numeric predictor
        varying within clusters, or random slopes with levels above the
        cluster.
    """
    predictors = tuple(predictors)
    levels = dict(levels or {})
    distributions = dict(distributions or {})
    ordinal = dict(ordinal) if isinstance(ordinal, dict) else {name: None for name in (ordinal or ())}
    _check_arguments(frame, outcome=outcome, predictors=predictors, cluster=cluster, family=family,
                     distributions=distributions, missing_values=missing_values)
    for col in ordinal:
        if col not in predictors:
            raise FitError(f"ordinal names '{col}', which is not a predictor ({list(predictors)}).")
        if not _is_categorical(frame[col], col, levels):
            raise FitError(f"ordinal names '{col}', which is numeric; list it under 'categorical' too, or "
                           "remove it from 'ordinal'.")
    higher_levels = outermost_first(frame, list(higher_levels))
    missing_cols = [c for c in higher_levels if c not in frame.columns]
    if missing_cols:
        raise FitError(f"column(s) {missing_cols} not in the data.")
    data, n_dropped = _rows_with_outcome(frame, outcome, cluster, (*predictors, *higher_levels))
    codes, labels = pd.factorize(data[cluster], sort=True)
    if labels.size < 2:
        raise FitError(f"the joint model needs at least two clusters in '{cluster}'; found {labels.size}.")
    higher = tuple(_level_above(data, name, codes, labels.size) for name in higher_levels)
    y, y_centre, y_scale = _outcome_on_model_scale(data[outcome], outcome, family)

    columns = _Columns(ordinal=ordinal)
    for col in predictors:
        columns.add(data[col], col, levels, distributions)
    focus, focus_kind = columns.resolve_focus(focus, predictors)
    continuous = columns.continuous
    if missing_values == "marginal":
        continuous = [c if c.name != focus else replace(c, mode="marginal") for c in continuous]

    Z = np.column_stack(columns.z_cols) if columns.z_cols else np.empty((len(data), 0))
    slopes = (random_slopes,) if isinstance(random_slopes, str) else tuple(random_slopes or ())
    slopes = _check_slopes(slopes, predictors, tuple(columns.z_terms), Z, codes)
    return JointData(
        outcome=outcome, family=family, cluster=cluster, y=y, y_centre=y_centre, y_scale=y_scale,
        codes=codes.astype(np.int64), cluster_labels=np.asarray(labels), Z=Z, z_terms=tuple(columns.z_terms),
        z_centre=np.asarray(columns.z_centre, float), z_scale=np.asarray(columns.z_scale, float),
        continuous=tuple(continuous), binaries=tuple(columns.binaries), focus=focus, focus_kind=focus_kind,
        term_order=tuple(columns.term_order),
        missingness_model=bool(missingness_model and focus_kind != "complete"),
        n_dropped_outcome=n_dropped, predictors=predictors, categoricals=tuple(columns.categoricals),
        higher=higher, slopes=slopes,
    )


def _check_slopes(slopes: tuple, predictors: tuple, z_terms: tuple, Z: np.ndarray, codes: np.ndarray) -> tuple:
    """The random slopes, checked: complete numeric predictors varying within clusters (FitError otherwise)."""
    if not slopes:
        return ()
    if len(set(slopes)) < len(slopes):
        raise FitError(f"random_slopes lists a column twice: {list(slopes)}.")
    for name in slopes:
        if name not in predictors:
            raise FitError(f"random slope '{name}' is not a predictor ({list(predictors)}); a random slope needs "
                           "its fixed effect.")
        if name not in z_terms:
            raise FitError(f"random slope '{name}' must be a numeric predictor recorded in every row used; the joint "
                           "model does not take random slopes on categorical or incomplete predictors (issue #16).")
        column = Z[:, z_terms.index(name)]
        spread = pd.Series(column).groupby(codes).agg(lambda v: v.max() - v.min())
        if not (spread > 0).any():
            raise FitError(f"random slope '{name}' does not vary within any cluster; it cannot have a random slope.")
    return slopes


def _level_above(data: pd.DataFrame, name: str, codes: np.ndarray, J: int) -> LevelAbove:
    """Each cluster's unit of the level ``name``; FitError when a cluster is in two units or has none."""
    units = data[name].astype(str).where(data[name].notna())
    per_cluster = units.groupby(codes)
    if units.isna().any() or (per_cluster.nunique() > 1).any():
        raise FitError(f"every cluster must sit in exactly one unit of '{name}' (a level above the cluster).")
    parent, labels = pd.factorize(per_cluster.first().reindex(range(J)), sort=True)
    if labels.size < 2:
        raise FitError(f"the level '{name}' above the cluster has one unit; it cannot have a random intercept.")
    return LevelAbove(name=name, parent=parent.astype(np.int64), labels=np.asarray(labels))


def _check_arguments(frame: pd.DataFrame, *, outcome: str, predictors: tuple, cluster: str, family: str,
                     distributions: dict, missing_values: str) -> None:
    """FitError for a family, mode, distribution or column the model cannot take."""
    if family not in ("binomial", "gaussian"):
        raise FitError(f"family must be 'binomial' or 'gaussian', got {family!r}.")
    if missing_values not in ("marginal", "latent"):
        raise FitError(f"missing_values must be 'marginal' or 'latent', got {missing_values!r}.")
    unknown = sorted(set(distributions) - set(predictors))
    if unknown:
        raise FitError(f"distributions names {unknown}, which are not predictors ({list(predictors)}).")
    for col, dist in distributions.items():
        if dist not in ("normal", "lognormal"):
            raise FitError(f"distribution of '{col}' must be 'normal' or 'lognormal', got {dist!r}.")
    missing_cols = [c for c in (outcome, cluster, *predictors) if c not in frame.columns]
    if missing_cols:
        raise FitError(f"column(s) {missing_cols} not in the data.")


def _rows_with_outcome(frame: pd.DataFrame, outcome: str, cluster: str, predictors: tuple):
    """A copy of the model columns for the rows with outcome and cluster recorded, and how many were left out."""
    data = frame.loc[:, list(dict.fromkeys([cluster, outcome, *predictors]))].copy()
    keep = data[outcome].notna().to_numpy() & data[cluster].notna().to_numpy()
    n_dropped = int((~keep).sum())
    data = data.loc[keep].reset_index(drop=True)
    if len(data) == 0:
        raise FitError(f"no row has '{outcome}' and '{cluster}' recorded.")
    return data, n_dropped


def _outcome_on_model_scale(series: pd.Series, outcome: str, family: str):
    """``(y, centre, scale)``: 0/1 as they are for a binomial outcome, standardised for a gaussian one."""
    y_raw = series.to_numpy(dtype=float)
    if family == "binomial":
        if not np.isin(y_raw, (0.0, 1.0)).all():
            raise FitError(f"the outcome '{outcome}' must be 0/1 for a binomial model.")
        return y_raw, 0.0, 1.0
    y_centre, y_scale = float(y_raw.mean()), float(y_raw.std())
    if not y_scale > 0:
        raise FitError(f"the outcome '{outcome}' is constant.")
    return (y_raw - y_centre) / y_scale, y_centre, y_scale


def _is_categorical(series: pd.Series, name: str, levels: dict) -> bool:
    return name in levels or not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


@dataclass
class _Columns:
    """The predictors sorted, in the user's order, into the complete design and the incomplete submodels."""

    z_cols: list = field(default_factory=list)
    z_terms: list = field(default_factory=list)
    z_centre: list = field(default_factory=list)
    z_scale: list = field(default_factory=list)
    continuous: list = field(default_factory=list)
    binaries: list = field(default_factory=list)
    term_order: list = field(default_factory=list)
    n_missing: dict = field(default_factory=dict)
    categoricals: list = field(default_factory=list)
    ordinal: dict = field(default_factory=dict)

    def add(self, series: pd.Series, col: str, levels: dict, distributions: dict) -> None:
        """Sort one predictor (FitError when the model cannot take it)."""
        missing = series.isna().to_numpy()
        self.n_missing[col] = int(missing.sum())
        if missing.all():
            raise FitError(f"predictor '{col}' has no recorded value among rows with the outcome recorded.")
        if _is_categorical(series, col, levels):
            self._add_categorical(series, col, levels, missing)
        else:
            self._add_numeric(series, col, distributions, missing)

    def _add_complete(self, values: np.ndarray, term: str, centre: float, scale: float) -> None:
        self.z_cols.append(values)
        self.z_terms.append(term)
        self.term_order.append(term)
        self.z_centre.append(centre)
        self.z_scale.append(scale)

    def _add_categorical(self, series: pd.Series, col: str, levels: dict, missing: np.ndarray) -> None:
        found = [str(v) for v in (levels.get(col) or sorted(series.dropna().astype(str).unique()))]
        text = series.astype(str).to_numpy()
        if not missing.any():
            for level in found[1:]:
                self._add_complete((text == level).astype(float), f"{col}[{level}]", 0.0, 1.0)
            return
        if len(found) < 2:
            raise FitError(f"predictor '{col}' has a single recorded level ({found[0]!r}); there is nothing to "
                           "model. Remove it from the predictors.")
        if len(found) > 2:
            index = {level: i for i, level in enumerate(found)}
            unknown = sorted(set(text[~missing]) - set(index))
            if unknown:
                raise FitError(f"predictor '{col}' has values {unknown[:3]} that are not among its levels {found}.")
            codes = np.array([np.nan if m else index[t] for t, m in zip(text, missing)], dtype=float)
            ranks = ordinal_ranks(col, found, self.ordinal[col]) if col in self.ordinal else None
            terms = tuple(f"{col}[{level}]" for level in found[1:])
            self.categoricals.append(CategoricalPredictor(col, tuple(found), terms, codes, ~missing,
                                                          ordinal=ranks is not None, ranks=ranks))
            self.term_order.extend(terms)
            return
        values = np.where(missing, np.nan, (text == found[1]).astype(float))
        term = f"{col}[{found[1]}]"
        self.binaries.append(BinaryPredictor(col, term, values, ~missing))
        self.term_order.append(term)

    def _add_numeric(self, series: pd.Series, col: str, distributions: dict, missing: np.ndarray) -> None:
        values = series.to_numpy(dtype=float)
        if not missing.any():
            centre, scale = float(values.mean()), float(values.std())
            if not scale > 0:
                raise FitError(f"predictor '{col}' is constant among the rows used.")
            self._add_complete((values - centre) / scale, col, centre, scale)
            return
        present = values[~missing]
        if np.isin(present, (0.0, 1.0)).all() and col not in distributions:
            self.binaries.append(BinaryPredictor(col, col, values, ~missing))
            self.term_order.append(col)
            return
        dist = distributions.get(col) or choose_distribution(present)
        if dist == "lognormal" and np.any(present <= 0):
            raise FitError(f"'{col}' has values <= 0, so it cannot be lognormal; use distributions={{'{col}': "
                           "'normal'}.")
        centre, scale = float(present.mean()), float(present.std())
        if not scale > 0:
            raise FitError(f"predictor '{col}' is constant where recorded.")
        sub = np.log(present) if dist == "lognormal" else present
        sub_centre, sub_scale = float(sub.mean()), float(sub.std())
        response = np.full(values.size, np.nan)
        response[~missing] = (sub - sub_centre) / sub_scale
        self.continuous.append(ContinuousPredictor(col, dist, centre, scale, sub_centre, sub_scale, values,
                                                   response, ~missing, "latent"))
        self.term_order.append(col)

    def resolve_focus(self, focus: str | None, predictors: tuple) -> tuple[str, str]:
        """The focus (default: the incomplete predictor with most missing values) and its kind."""
        incomplete = [v.name for v in (*self.continuous, *self.binaries, *self.categoricals)]
        if focus is None:
            focus = max(incomplete, key=lambda c: self.n_missing[c]) if incomplete else predictors[0]
        elif focus not in predictors:
            raise FitError(f"focus '{focus}' is not one of the predictors {list(predictors)}.")
        focus_kind = ("continuous" if focus in [c.name for c in self.continuous]
                      else "binary" if focus in [b.name for b in self.binaries]
                      else "categorical" if focus in [c.name for c in self.categoricals] else "complete")
        return focus, focus_kind
