"""The imputation problem: the model columns of a data set, checked and coded for the engine.

:func:`build_problem` checks the roles and the data (every :class:`~hmlib.exceptions.DataError`
of :func:`hmlib.stats.imputation.impute` comes from here), codes each model column as a
:class:`Variable` (floats; categorical levels as codes; cluster covariates one value per
cluster) and gathers what the chained equations need into a :class:`Problem`: cluster codes,
higher-level indicators, strata, and the records the draws add to while running (notes,
stratum fall-backs, cluster means left out, extrapolation). :func:`model_description` names
each variable's imputation model as mice would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError

__all__ = ["Variable", "Notes", "Problem", "build_problem", "model_description"]


@dataclass(eq=False)
class Variable:
    """One model column, coded as floats (categorical: level codes)."""

    name: str
    level: int                # 1 = patient, 2 = cluster
    kind: str                 # "continuous" | "binary" | "categorical"
    values: np.ndarray        # n (level 1) or J (level 2); NaN where missing
    missing: np.ndarray       # bool, same length
    categories: tuple = ()    # original labels of the codes (coded columns only)

    @property
    def n_categories(self) -> int:
        """Levels of a categorical variable; 2 for the others."""
        return len(self.categories) if self.kind == "categorical" else 2

    def features(self, x: np.ndarray) -> np.ndarray:
        """Design columns of values ``x``: the value, or indicators of the non-reference levels."""
        if self.kind == "categorical":
            return (x[:, None] == np.arange(1, self.n_categories)[None, :]).astype(float)
        return x[:, None]

    def feature_names(self) -> list:
        """Names of :meth:`features` (``name`` or ``name[level]``)."""
        if self.kind == "categorical":
            return [f"{self.name}[{c}]" for c in self.categories[1:]]
        return [self.name]


class Notes:
    """Ordered, de-duplicated notes."""

    def __init__(self):
        self._items: dict[str, None] = {}

    def add(self, text: str) -> None:
        """Add a note (a repeat is kept once, where it first came)."""
        self._items.setdefault(text, None)

    def items(self) -> list:
        """The notes in the order they first came."""
        return list(self._items)


@dataclass(eq=False)
class Problem:
    """What the chained equations of one call of ``impute`` work on, and what they record."""

    method: str
    continuous: str
    hetero: bool
    cluster_means: bool
    donors: int
    n: int
    J: int
    codes: np.ndarray
    sizes: np.ndarray
    level1: list
    level2: list
    higher: np.ndarray        # J x H indicator columns of the higher-level units (all of them)
    higher_names: list
    strata: np.ndarray | None
    strata_rows: list
    strata_labels: list
    notes: Notes
    broken: dict              # var -> {stratum label: reason}
    state: dict | None = None  # sampler state of the current chain (Gibbs variances, warm starts)
    fixed: dict = field(default_factory=dict)           # (var, key) -> what every chain computes alike
    means_dropped: dict = field(default_factory=dict)   # var -> {"clusters", "cluster_columns", "needed"}
    extrapolated: dict = field(default_factory=dict)    # var -> largest excess beyond the observed range (SDs)
    # three-level multilevel imputation: the level directly above the cluster as a random intercept
    random_level: str | None = None                     # its column
    higher_codes: np.ndarray | None = None              # J: each cluster's unit of it (0 .. K-1)
    K: int = 0                                          # its number of units
    # multilevel imputation with random slopes (2l.pan type 2) on these complete patient-level columns
    random_slopes: tuple = ()

    @property
    def visit(self) -> list:
        """Variables with missing values, in the order the chained equations visit them."""
        return [v for v in [*self.level1, *self.level2] if v.missing.any()]

    def fixed_cache(self, var: Variable, key) -> dict | None:
        """A store shared by all chains for ``var``'s model ``key``, when no imputation changes its design.

        That is when ``var`` is the only variable with missing values: its
        predictors are then the same in every iteration of every chain, so a
        deterministic fit of its observed rows (or their sufficient
        statistics) is the same each time and is made once. None otherwise.
        """
        if any(v is not var and v.missing.any() for v in [*self.level1, *self.level2]):
            return None
        return self.fixed.setdefault((var.name, key), {})


# --------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------
def _code_variable(name, series: pd.Series, kind: str, levels):
    """Return (kind, values, categories) for one column."""
    missing = series.isna().to_numpy()
    if kind == "categorical":
        # each row's text, then the distinct texts (in order of first appearance) coded once: the
        # codes and labels of mapping every row's text, without a dictionary lookup per row
        present = series[~missing]
        text_codes, distinct = pd.factorize(present.astype(str), sort=False)
        distinct_text = [str(t) for t in distinct]
        cats = list(levels) if levels is not None else sorted(distinct_text)
        cats = [str(c) for c in cats]
        index = {c: i for i, c in enumerate(cats)}
        unknown = sorted(set(distinct_text) - set(index))
        if unknown:
            raise DataError(f"column '{name}' has value(s) {unknown[:3]} that are not among its levels "
                            f"{cats}; add them to the levels or recode them.")
        codes = np.full(len(series), np.nan)
        codes[~missing] = np.array([index[t] for t in distinct_text], dtype=float)[text_codes]
        first_row = dict(zip(distinct_text, np.unique(text_codes, return_index=True)[1]))
        originals = [present.iloc[first_row[c]] if c in first_row else c for c in cats]
        # one level: a constant (dropped from every design; missing cells get that level)
        return ("categorical" if len(cats) > 2 else "binary"), codes, tuple(originals)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~missing & np.isnan(values)
    if bad.any():
        raise DataError(f"column '{name}' is numeric but {int(bad.sum())} value(s) are not numbers, e.g. "
                        f"{series[bad].iloc[0]!r}; declare it categorical or fix the values.")
    observed = values[~missing]
    if observed.size and np.all(np.isin(observed, (0.0, 1.0))):
        return "binary", values, ()
    return "continuous", values, ()


def _infer_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def build_problem(frame, *, method, cluster, outcome, outcome_family, predictors, kinds, levels,
                  cluster_covariates, higher_levels, continuous, hetero, cluster_means, strata, donors,
                  higher_effects="random", random_slopes=()):
    """Check and code the model columns of ``frame``; the arguments are those of :func:`~.chained.impute`.

    Returns
    -------
    problem : Problem
    strata_name : str or None
        The column that defines the strata (``method="stratified"``), else None.

    Raises
    ------
    DataError, ValueError
        As :func:`hmlib.stats.imputation.impute`.
    """
    levels = dict(levels or {})
    kinds = dict(kinds or {})
    notes = Notes()
    codes, J = _cluster_codes(frame, cluster)
    sizes = np.bincount(codes, minlength=J).astype(float)
    if outcome_family not in ("binomial", "gaussian"):
        raise ValueError(f"outcome_family must be 'binomial' or 'gaussian', got {outcome_family!r}.")
    level1_cols = [*predictors, outcome]
    level2_cols = list(cluster_covariates)
    if method == "flat":
        level1_cols, level2_cols = [*level1_cols, *level2_cols], []
    level1, level2 = [], []
    for col in [*level1_cols, *level2_cols]:
        var = _coded_variable(frame, col, kinds, levels, outcome=outcome, outcome_family=outcome_family,
                              codes=codes if col in level2_cols else None, J=J, notes=notes)
        (level2 if var.level == 2 else level1).append(var)
    random_level, higher_codes, K = None, None, 0
    higher_levels = list(higher_levels)
    slopes = _checked_slopes(frame, random_slopes, predictors) if method == "multilevel" else ()
    if slopes and hetero:
        notes.add("cluster_residual_variance does not combine with random slopes; a common residual variance "
                  "is used.")
        hetero = False
    if method == "multilevel" and higher_effects == "random" and higher_levels:
        # the level directly above the cluster (most units) gets random intercepts; those above it stay fixed
        random_level = max(higher_levels, key=lambda col: (frame[col].nunique(), -higher_levels.index(col)))
        higher_codes, K = _higher_unit_codes(frame, random_level, codes, J)
    higher, higher_names = _higher_level_indicators(frame, higher_levels, codes, J)
    strata_codes, strata_rows, strata_labels, strata_name = None, [], [], None
    if method == "stratified":
        strata_name = _strata_column(frame, strata, cluster, cluster_covariates, kinds, notes)
        s_codes, s_labels = pd.factorize(frame[strata_name], sort=True)
        strata_codes = s_codes.astype(np.intp)
        order = np.argsort(strata_codes, kind="stable")
        bounds = np.searchsorted(strata_codes[order], np.arange(len(s_labels) + 1))
        strata_rows = [order[bounds[s]:bounds[s + 1]] for s in range(len(s_labels))]
        strata_labels = [str(x) for x in s_labels]
    if hetero and method != "multilevel":
        notes.add("cluster_residual_variance applies to multilevel imputation only; ignored.")
    return Problem(method=method, continuous=continuous, hetero=bool(hetero and method == "multilevel"),
                   cluster_means=cluster_means, donors=int(donors), n=len(frame), J=J, codes=codes, sizes=sizes,
                   level1=level1, level2=level2, higher=higher, higher_names=higher_names,
                   strata=strata_codes, strata_rows=strata_rows, strata_labels=strata_labels,
                   notes=notes, broken={}, random_level=random_level, higher_codes=higher_codes, K=K,
                   random_slopes=slopes), strata_name


def _checked_slopes(frame, random_slopes, predictors) -> tuple:
    """The random-slope columns: patient-level predictors recorded in every row (DataError otherwise)."""
    slopes = tuple(str(s) for s in random_slopes)
    for col in slopes:
        if col not in predictors:
            raise DataError(f"random slope '{col}' is not among the predictors {list(predictors)}; a random slope "
                            "varies a predictor's effect between clusters.")
        if frame[col].isna().any():
            raise DataError(f"random slope '{col}' has {int(frame[col].isna().sum())} missing values; a random "
                            "slope (the visit time) must be recorded in every row.")
    return slopes


def _cluster_codes(frame, cluster: str):
    """Codes 0..J-1 of the clusters (sorted labels) and J; DataError when missing or single."""
    groups = frame[cluster]
    if groups.isna().any():
        raise DataError(f"the cluster column '{cluster}' is missing in {int(groups.isna().sum())} row(s); "
                        "remove those rows first (hmlib.data.load_registry does).")
    codes, labels = pd.factorize(groups, sort=True)
    J = len(labels)
    if J < 2:
        raise DataError(f"the cluster column '{cluster}' has a single value; imputation by cluster needs "
                        "at least 2 clusters.")
    return codes.astype(np.intp), J


def _coded_variable(frame, col: str, kinds: dict, levels: dict, *, outcome: str, outcome_family: str,
                    codes, J: int, notes: Notes) -> Variable:
    """One model column as a :class:`Variable`: patient level, or cluster level when ``codes`` is given."""
    series = frame[col]
    if series.isna().all():
        raise DataError(f"'{col}' is missing in all {len(frame)} rows; it cannot be imputed. Remove it from the "
                        "model or check the export.")
    kind = kinds.get(col) or _infer_kind(series)
    if col == outcome:
        kind = "numeric"
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"kinds['{col}'] must be 'numeric' or 'categorical', got {kind!r}.")
    coded_kind, values, cats = _code_variable(col, series, kind, levels.get(col))
    if col == outcome:
        if outcome_family == "binomial" and coded_kind != "binary":
            raise DataError(f"the outcome '{outcome}' must be 0/1 for outcome_family: binomial.")
        if outcome_family == "gaussian":
            coded_kind = "continuous"
    missing = np.isnan(values)
    if codes is None:
        return Variable(col, 1, coded_kind, values, missing, cats)
    per_cluster = pd.Series(values).groupby(codes)
    distinct = per_cluster.nunique(dropna=True)
    if (distinct > 1).any():
        raise DataError(f"cluster covariate '{col}' varies within {int((distinct > 1).sum())} "
                        "cluster(s); a cluster-level column must be constant within each cluster.")
    cluster_values = per_cluster.first().reindex(range(J)).to_numpy(dtype=float)
    partial = int((missing & ~np.isnan(cluster_values[codes])).sum())
    if partial:
        notes.add(f"'{col}' was missing in {partial} row(s) of clusters that record it elsewhere; "
                  "those rows took their cluster's value before imputation.")
    return Variable(col, 2, coded_kind, cluster_values, np.isnan(cluster_values), cats)


def _higher_unit_codes(frame, col: str, codes, J: int):
    """Each cluster's unit of ``col`` as a code ``0 .. K-1`` (units sorted), and ``K``."""
    unit = _cluster_units(frame, col, codes, J)
    labels, inverse = np.unique(unit.astype(str), return_inverse=True)
    return inverse.astype(np.intp), int(labels.size)


def _cluster_units(frame, col: str, codes, J: int) -> np.ndarray:
    """The unit of ``col`` of each cluster (``J`` labels as text); refuses gaps and clusters in two units."""
    series = frame[col]
    if series.isna().any():
        raise DataError(f"higher-level column '{col}' is missing in {int(series.isna().sum())} row(s); "
                        "each cluster must belong to a known higher-level unit.")
    per_cluster = pd.Series(series.astype(str).to_numpy()).groupby(codes)
    if (per_cluster.nunique() > 1).any():
        raise DataError(f"clusters are not nested in '{col}': some cluster belongs to more than one "
                        f"'{col}'.")
    return per_cluster.first().reindex(range(J)).to_numpy()


def _higher_level_indicators(frame, higher_levels, codes, J: int):
    """``J x H`` indicator columns of the higher-level units (first unit the reference) and their names."""
    higher_blocks, higher_names = [], []
    for col in higher_levels:
        unit = _cluster_units(frame, col, codes, J)
        units = sorted(set(unit.tolist()))
        for u in units[1:]:
            higher_blocks.append((unit == u).astype(float))
            higher_names.append(f"{col}[{u}]")
    higher = np.column_stack(higher_blocks) if higher_blocks else np.empty((J, 0))
    return higher, higher_names


def _strata_column(frame, strata, cluster: str, cluster_covariates, kinds: dict, notes: Notes) -> str:
    """The column whose values are the strata of stratified imputation (package docstring)."""
    strata_name = strata
    if strata_name is None:
        candidates = [c for c in cluster_covariates
                      if (kinds.get(c) or _infer_kind(frame[c])) == "categorical" and frame[c].notna().all()]
        strata_name = candidates[0] if candidates else cluster
    elif strata_name != cluster and strata_name not in cluster_covariates:
        raise ValueError(f"strata must be the cluster column '{cluster}' or one of the cluster "
                         f"covariates {list(cluster_covariates)}, got {strata_name!r}.")
    if strata_name != cluster and frame[strata_name].isna().any():
        notes.add(f"Stratified imputation: '{strata_name}' has missing values, so the strata are the "
                  f"clusters ('{cluster}') instead.")
        strata_name = cluster
    return strata_name


def model_description(problem: Problem, var: Variable) -> str:
    """The imputation model of ``var`` in words, named as mice's methods (``2l.pan: ...``)."""
    cont = problem.continuous
    if var.level == 2:
        body = {"continuous": "2lonly.pmm" if cont == "pmm" else "2lonly.norm",
                "binary": "2lonly logistic", "categorical": "2lonly baseline-category logits"}[var.kind]
        return f"{body}: one value per cluster, from cluster means and cluster covariates"
    if problem.method == "multilevel":
        base = {"continuous": ("2l.pmm: random-intercept normal (Gibbs), predictive mean matching"
                               if cont == "pmm" else
                               "2l.norm: random-intercept normal, cluster-specific residual variances (Gibbs)"
                               if problem.hetero else "2l.pan: random-intercept normal (Gibbs)"),
                "binary": "2l.bin: random-intercept logistic",
                "categorical": "baseline-category logits, 2l.bin per level against the baseline"}[var.kind]
        if problem.random_level is not None:
            base += (f", random intercepts for the cluster and for '{problem.random_level}' (three levels; "
                     f"{problem.random_level} means among the predictors)")
        slopes = ", ".join(problem.random_slopes)
        if problem.random_slopes and var.kind == "continuous":
            base = base.replace("random-intercept normal", f"random intercept and slopes on {slopes} (unstructured "
                                "covariance), normal")
        elif problem.random_slopes:
            base = (base.replace("random-intercept logistic", f"random intercept and slopes on {slopes} (unstructured "
                                 "covariance), logistic (Gibbs sampler, Polya-Gamma augmented)")
                    if var.kind == "binary" else base + f", each with a random intercept and slopes on {slopes}")
        dropped = problem.means_dropped.get(var.name)
        if not problem.cluster_means:
            return base
        if dropped is None:
            return base + " with cluster means"
        return base + f" without cluster means (only {dropped['clusters']} clusters observe it)"
    single = {"continuous": "pmm" if cont == "pmm" else "norm (Bayesian linear regression)",
              "binary": "logistic regression", "categorical": "baseline-category logits, a logistic regression per level against the baseline"}
    where = {"flat": "clusters ignored", "stratified": "fitted within each stratum",
             "fixed_effects": "with one intercept per cluster"}[problem.method]
    return f"{single[var.kind]}, {where}"
