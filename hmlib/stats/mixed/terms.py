"""The random-effects structure of the general mixed model, and the design prepared from it.

A model has one or more grouping factors, nested: the first is the outermost
(country), each next one lies within the one before (hospital within
country). A cluster of level ``k`` is the combination of the labels of levels
``0..k``, as lme4's ``(1 | country) + (1 | country:hospital)``: a hospital
label may repeat in different countries. Each level has a random intercept
and optionally random slopes (columns whose effect varies between its
clusters), with an unstructured covariance matrix of its ``q_k`` effects.

:class:`RandomLevel` and :class:`RandomEffects` describe the structure (the
public input of :func:`hmlib.stats.mixed.fit_mixed`); :func:`prepare_nested`
checks it against the data and returns a :class:`NestedDesign`: rows sorted
by cluster at every level (lexicographically), the indices that tie each
cluster to its parent and to its rows, and the slope columns standardised
(centred at their mean when the level has an intercept, divided by their SD),
with the matrices that map standardised effects back to the user's scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.exceptions import FitError
from hmlib.stats.mixed.prepare import Prepared, prepare

__all__ = ["RandomLevel", "RandomEffects", "NestedDesign", "prepare_nested"]


@dataclass(frozen=True, eq=False)
class RandomLevel:
    """One grouping factor: its name, the cluster label of each row, and its random effects.

    Parameters
    ----------
    name : str
        Name of the grouping variable, used in the terms ``sd(<name>)``,
        ``sd(<slope>|<name>)`` and ``cor(<slope>|<name>)``.
    groups : array_like, shape (n,)
        Cluster label of each row (any sortable hashable values). Within a
        nested structure the label need only be unique within the enclosing
        cluster.
    slopes : mapping of str to array_like, optional
        Random slopes: name -> values of the column (shape (n,)), e.g.
        ``{"time": visit_day / 365}``. Their covariance with the intercept
        and with each other is estimated (unstructured).
    intercept : bool
        Whether the level has a random intercept (default True).
    """

    name: str
    groups: object
    slopes: dict = field(default_factory=dict)
    intercept: bool = True

    @property
    def columns(self) -> tuple:
        """Names of the level's random effects: ``"Intercept"`` first, then the slopes."""
        return (("Intercept",) if self.intercept else ()) + tuple(str(s) for s in self.slopes)


@dataclass(frozen=True, eq=False)
class RandomEffects:
    """The random-effects structure: nested grouping levels, outermost first.

    Parameters
    ----------
    levels : sequence of RandomLevel
        ``[country, hospital]`` for hospitals within countries; a single
        level for ``(1 + time | patient)``. Each level is nested in the one
        before: crossed factors (``(1 | patient) + (1 | rater)`` with raters
        shared across patients) are not supported and would be fitted as
        nested (raters within patients). The same grouping may be given
        twice, e.g. an intercept level and a slope level without intercept
        for lme4's uncorrelated ``(1 | patient) + (0 + time | patient)``.

    Examples
    --------
    >>> country = ["A", "A", "B", "B"]
    >>> hospital = [1, 2, 1, 2]
    >>> structure = RandomEffects.nested(("country", country), ("hospital", hospital))
    >>> [level.name for level in structure.levels]
    ['country', 'hospital']
    """

    levels: tuple

    def __post_init__(self):
        levels = tuple(self.levels)
        if not levels:
            raise FitError("RandomEffects needs at least one grouping level.")
        for level in levels:
            if not isinstance(level, RandomLevel):
                raise FitError(f"RandomEffects takes RandomLevel objects, got {type(level).__name__}.")
            if not level.columns:
                raise FitError(f"level {level.name!r} has neither an intercept nor slopes.")
        names = [str(level.name) for level in levels]
        if len(set(names)) != len(names):
            raise FitError(f"grouping level names must differ, got {names}.")
        object.__setattr__(self, "levels", levels)

    @classmethod
    def nested(cls, *named_groups) -> "RandomEffects":
        """Random intercepts at nested levels: ``nested(("country", c), ("hospital", h))``."""
        return cls(tuple(RandomLevel(str(name), groups) for name, groups in named_groups))


@dataclass(frozen=True, eq=False)
class NestedDesign:
    """A checked problem with nested random effects, rows sorted by cluster at every level.

    Attributes
    ----------
    base : Prepared
        Outcome, orthogonalised fixed-effects design and term names, rows in
        the sorted order (its clusters are those of the innermost level).
    level_names : tuple of str
    columns : tuple of tuple of str
        Names of each level's random effects (``"Intercept"``, slopes).
    q : tuple of int
        Random effects per cluster at each level.
    offsets : tuple of int
        Position of each level's first effect in a chain of effects (the
        effects of one innermost cluster and of all its ancestors, levels
        0..L-1 in order); ``offsets[k] = q_0 + ... + q_{k-1}``.
    covariates : numpy.ndarray, shape (n, d)
        The distinct random-effect columns, standardised (the intercept's
        column of ones first when any level has an intercept).
    coord_covariate : numpy.ndarray, shape (Q,)
        Column of ``covariates`` for each effect of the chain.
    row_codes, row_starts : tuple of numpy.ndarray
        Per level: cluster index of each row; first row of each cluster.
    leaf_starts : tuple of numpy.ndarray
        Per level: first innermost cluster of each cluster.
    child_starts : tuple of numpy.ndarray
        Per level ``k < L-1``: first level-``k+1`` cluster of each cluster.
    ancestors : tuple of tuple of numpy.ndarray
        ``ancestors[k][j]``: index of the level-``j`` ancestor of each
        level-``k`` cluster, for ``j <= k`` (``j = k``: the cluster itself).
    labels, sizes : tuple of numpy.ndarray
        Per level: each cluster's own label, and its number of rows.
    to_user : tuple of numpy.ndarray
        Per level: ``A_k`` with (user-scale effects) = ``A_k`` (standardised
        effects).
    """

    base: Prepared
    level_names: tuple
    columns: tuple
    q: tuple
    offsets: tuple
    covariates: np.ndarray
    coord_covariate: np.ndarray
    row_codes: tuple
    row_starts: tuple
    leaf_starts: tuple
    child_starts: tuple
    ancestors: tuple
    labels: tuple
    sizes: tuple
    to_user: tuple

    @property
    def n_levels(self) -> int:
        """Number of grouping levels L."""
        return len(self.q)

    @property
    def chain_size(self) -> int:
        """Q, the random effects in one innermost cluster's chain."""
        return int(sum(self.q))

    @property
    def n_clusters(self) -> tuple:
        """Clusters per level."""
        return tuple(int(s.size) for s in self.sizes)

    def coords(self, k: int) -> np.ndarray:
        """Positions of level ``k``'s effects in the chain."""
        return np.arange(self.offsets[k], self.offsets[k] + self.q[k])

    def leaf_to_level(self, values: np.ndarray, k: int) -> np.ndarray:
        """Sum per-innermost-cluster values (axis 0) over the clusters of level ``k``."""
        if k == self.n_levels - 1:
            return values
        return np.add.reduceat(values, self.leaf_starts[k], axis=0)

    def row_sums(self, values: np.ndarray) -> np.ndarray:
        """Sum of rows (axis 0) within each innermost cluster."""
        return np.add.reduceat(values, self.row_starts[-1], axis=0)

    def random_part(self, effects) -> np.ndarray:
        """Random part of the linear predictor, ``sum_k v_ik' b_{k, cluster_k(i)}``.

        Parameters
        ----------
        effects : sequence of numpy.ndarray
            Per level, (m_k, q_k) effects on the standardised scale.
        """
        total = np.zeros(self.base.n)
        for k, b in enumerate(effects):
            codes = self.row_codes[k]
            for j, c in enumerate(self.coords(k)):
                column = self.coord_covariate[c]
                values = b[:, j][codes]
                if column == 0:  # the intercept's column of ones
                    total += values
                else:
                    total += values * self.covariates[:, column]
        return total


def _labels(values, what: str, n: int) -> np.ndarray:
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] != n:
        raise FitError(f"{what} must have one label per row ({n}), got shape {values.shape}.")
    missing = ~np.isfinite(values) if values.dtype.kind in "fc" else np.asarray(pd.isna(values), dtype=bool)
    if missing.any():
        raise FitError(f"{what} has {int(missing.sum())} missing label(s): drop those rows before fitting.")
    try:
        codes, _ = pd.factorize(values, sort=True)
    except TypeError as exc:
        raise FitError(f"{what} labels cannot be sorted ({exc}); use labels of one type.") from None
    return codes


def _slope(values, what: str, n: int) -> np.ndarray:
    try:
        if isinstance(values, (pd.Series, pd.DataFrame)):
            arr = values.to_numpy(dtype=float, na_value=np.nan)
        else:
            arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise FitError(f"{what} must be numeric ({exc}).") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise FitError(f"{what} must have one value per row ({n}), got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise FitError(f"{what} has {int((~np.isfinite(arr)).sum())} missing or infinite value(s): "
                       "drop those rows before fitting.")
    return arr


def _nested_codes(structure: RandomEffects, n: int):
    """Cluster index per row at each level; level k's clusters are the label tuples of levels 0..k."""
    codes = []
    previous = np.zeros(n, dtype=np.int64)
    for level in structure.levels:
        own = _labels(level.groups, f"groups of level {level.name!r}", n)
        key = previous * (int(own.max()) + 1) + own
        code, _ = pd.factorize(key, sort=True)   # hashing, then sorting only the distinct keys
        if code.max() < 1:
            raise FitError(f"level {level.name!r} has only 1 cluster: a variance needs at least 2. "
                           "Drop the level.")
        codes.append(code)
        previous = code
    return codes


def _standardise(structure: RandomEffects, n: int):
    """Distinct covariates (ones first), the column of each chain effect, and the maps to the user's scale."""
    slope_values, centre_ok = {}, {}
    for level in structure.levels:
        for name, values in level.slopes.items():
            arr = _slope(values, f"slope {name!r} of level {level.name!r}", n)
            if name in slope_values and not np.array_equal(slope_values[name], arr):
                raise FitError(f"slope {name!r} is given with different values at two levels.")
            slope_values[name] = arr
            centre_ok[name] = centre_ok.get(name, True) and level.intercept
    names = list(slope_values)
    centres, scales, columns = {}, {}, [np.ones(n)]
    for name in names:
        arr = slope_values[name]
        centres[name] = float(arr.mean()) if centre_ok[name] else 0.0
        scales[name] = float(np.sqrt(np.mean((arr - centres[name]) ** 2)))
        if not scales[name] > 1e-12 * max(1.0, abs(centres[name])):
            raise FitError(f"slope {name!r} is constant: its random effect is not identifiable.")
        columns.append((arr - centres[name]) / scales[name])
    covariate_of = {"Intercept": 0, **{name: j + 1 for j, name in enumerate(names)}}
    coord_covariate, to_user = [], []
    for level in structure.levels:
        cols = level.columns
        coord_covariate.extend(covariate_of[c] for c in cols)
        A = np.eye(len(cols))
        for j, c in enumerate(cols):
            if c == "Intercept":
                continue
            A[j, j] = 1.0 / scales[c]
            if level.intercept:
                A[0, j] = -centres[c] / scales[c]
        to_user.append(A)
    return np.column_stack(columns), np.asarray(coord_covariate, dtype=np.intp), tuple(to_user)


def _starts(codes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])


def prepare_nested(y, X, structure: RandomEffects, family: str, term_names) -> NestedDesign:
    """Check the data against the random-effects structure and prepare the design.

    Parameters
    ----------
    y, X, family, term_names
        As for :func:`hmlib.stats.mixed.fit_random_intercept`.
    structure : RandomEffects

    Returns
    -------
    NestedDesign

    Raises
    ------
    FitError
        Everything :func:`~hmlib.stats.mixed.prepare.prepare` checks, and:
        labels or slopes of the wrong length, missing, or not sortable; a
        level with one cluster; a constant slope; a gaussian model with as
        many random effects at a level as rows (residual variance not
        identifiable).
    """
    if not isinstance(structure, RandomEffects):
        raise FitError(f"groups must be a RandomEffects structure, got {type(structure).__name__}.")
    n = int(np.shape(y)[0]) if np.ndim(y) else 0
    if n == 0:
        raise FitError("no rows to fit: y must have at least one row.")
    codes = _nested_codes(structure, n)
    covariates, coord_covariate, to_user = _standardise(structure, n)
    base = prepare(y, X, codes[-1], family, term_names)
    order = np.argsort(codes[-1], kind="stable")   # the order prepare() sorts by
    codes = [c[order] for c in codes]
    if not np.array_equal(base.codes, codes[-1]):  # pragma: no cover - guards prepare()'s contract
        raise FitError("internal error: rows could not be sorted consistently by cluster.")
    covariates = np.asfortranarray(covariates[order])   # columns contiguous: they are used one at a time
    q = tuple(len(level.columns) for level in structure.levels)
    if family == "gaussian":
        for level, k_codes, qk in zip(structure.levels, codes, q):
            if (k_codes.max() + 1) * qk >= n:
                raise FitError(f"level {level.name!r} has {int(k_codes.max() + 1) * qk} random effects for "
                               f"{n} rows: the random effects and the residual variance are not identifiable.")
    row_starts = tuple(_starts(c) for c in codes)
    leaf_rows = row_starts[-1]
    n_levels = len(q)
    leaf_starts = tuple(_starts(codes[k][leaf_rows]) for k in range(n_levels))
    child_starts = tuple(_starts(codes[k][row_starts[k + 1]]) for k in range(n_levels - 1))
    ancestors = tuple(tuple(codes[j][row_starts[k]] for j in range(k + 1)) for k in range(n_levels))
    labels = []
    for k, level in enumerate(structure.levels):
        raw = level.groups.to_numpy() if isinstance(level.groups, (pd.Series, pd.Index)) else np.asarray(level.groups)
        labels.append(raw[order][row_starts[k]])
    sizes = tuple(np.diff(np.r_[s, n]) for s in row_starts)
    return NestedDesign(
        base=base, level_names=tuple(str(level.name) for level in structure.levels),
        columns=tuple(level.columns for level in structure.levels), q=q,
        offsets=tuple(int(v) for v in np.r_[0, np.cumsum(q)[:-1]]), covariates=covariates,
        coord_covariate=coord_covariate, row_codes=tuple(codes), row_starts=row_starts,
        leaf_starts=leaf_starts, child_starts=child_starts, ancestors=ancestors,
        labels=tuple(labels), sizes=sizes, to_user=to_user)
