"""The statistics of the sensitivity analysis: changed conclusions, delta adjustment, tipping points.

Step 5 (:mod:`hmlib.steps.sensitivity`) varies one assumption at a time and
asks whether the conclusion about a coefficient changes. This module holds
the parts that are plain statistics, on numbers, frames and imputation
results (no registry, no privacy):

Changed conclusion (:class:`ChangeRule`, :func:`conclusion_change`)
    Judged on the scale of the uncertainty and of a clinically relevant
    difference ``R`` (on the coefficient's own scale), never by the relative
    move of an estimate (an estimate near 0 moves by 200% without meaning
    anything). A result changes the conclusion of its reference when

    (a) the 95% interval's decision about the null (default 0) flips -- it
        now includes the null, or now excludes it -- and the estimate moved by
        at least ``negligible_share * R`` (default half of ``R``; a smaller
        shift that tips a borderline interval is negligible);
    (b) the estimate moved by at least ``R``; or
    (c) the estimate changed direction with both intervals excluding the null.

    For a standard deviation only (b) applies. The step resolves ``R`` from
    the params' clinically relevant difference on the reported scale
    (:mod:`hmlib.steps.sensitivity_rule`).

MNAR delta adjustment (:func:`cluster_deltas`, :func:`shift_imputed`)
    The imputed values of one variable (and only those) are shifted by
    ``delta`` after imputation, and the analysis is re-run (van Buuren 2018,
    sec. 3.9.1; Leacy et al. 2017; Cro et al. 2020). Cluster-specific mode:
    cluster ``j``'s imputed values move by ``delta_j = delta s_j / s_bar``,
    where ``s_j`` is the cluster's share of missing values and ``s_bar`` the
    mean of ``s_j`` over the imputed cells, so that the average shift of an
    imputed value is ``delta`` in both modes and clusters that record less
    drift further (their unrecorded patients are the more selected). The
    imputation model is not re-run, so the other imputed variables do not
    see the shift (the standard "delta adjustment" after imputation).
    ``delta = 0`` reproduces the unshifted analysis exactly.

MNAR delta adjustment of a categorical variable (:func:`category_imputation_model`, :func:`shift_imputed_categories`)
    The pattern-mixture model on the log-odds scale (Leacy et al. 2017;
    Carpenter & Kenward 2013, ch. 10): patients whose value was not
    recorded have ``e^delta`` times the odds of recorded patients like them
    (same cluster, outcome and other predictors). Nominal: the odds of each
    non-reference level against the reference, ``q_k = p_k e^{delta [k > 0]}
    / sum_l p_l e^{delta [l > 0]}``. Ordinal: the odds of a higher category,
    ``logit Q(rank >= r) = logit P(rank >= r) + delta`` for every cut ``r``
    (a proportional-odds shift). ``p`` is the imputation model's distribution
    of the missing value; it is refitted on each completed data set (one
    random-intercept logistic model per non-reference level against the
    reference, on the recorded values, with the other predictors, the outcome
    and the cluster covariates as predictors: a baseline-category logit by
    individualised regressions, Begg & Gray 1984), with coefficients and
    cluster intercepts drawn from their approximate posterior as mice's
    ``2l.bin`` does. Each imputed category is then redrawn from ``q`` by
    inverting its cumulative distribution at a uniform ``u`` coupled to the
    value the primary imputation drew (``u`` uniform within that value's
    interval of ``p``'s cumulative distribution): ``delta = 0`` reproduces
    the primary imputations exactly, the same ``u`` serves every delta
    (common random numbers, so that the estimates move smoothly with delta),
    and when the primary value was drawn from ``p`` the redrawn one follows
    ``q`` exactly. Cluster-specific mode: ``delta_j`` as above. Only the
    imputed values of the variable move; the imputation model is not re-run.

Tipping point (:func:`first_change_on_grid`, :func:`refine_tipping_point`, :func:`find_tipping_point`)
    On each side of 0, the smallest ``|delta|`` on a grid at which the
    conclusion changes, refined by bisection between it and the largest
    unchanged ``|delta|`` before it (``steps`` halvings: 6 shrink the bracket
    64-fold). The reported tipping point is the smallest ``|delta|`` *found*
    to change the conclusion; the conclusion at every smaller grid value is
    unchanged. The step runs the grid and the bisections in parallel and
    summarises them with :func:`tipping_point_summary`, as
    :func:`find_tipping_point` does sequentially.

References
----------
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., sec. 3.9
(sensitivity analysis, delta adjustment).
Leacy FP, Floyd S, Yates TA, White IR (2017). Analyses of sensitivity to the
missing-at-random assumption using multiple imputation with delta adjustment:
application to a tuberculosis/HIV prevalence survey with incomplete HIV-status
data. Am J Epidemiol 185(4):304-315.
Cro S, Morris TP, Kenward MG, Carpenter JR (2020). Sensitivity analysis for
clinical trials with missing continuous outcome data using controlled multiple
imputation: a practical guide. Stat Med 39:2815-2842.
Carpenter JR, Kenward MG (2013). Multiple Imputation and its Application.
Wiley, ch. 10 (sensitivity analysis via pattern-mixture models).
Begg CB, Gray R (1984). Calculation of polychotomous logistic regression
parameters using individualized regressions. Biometrika 71:11-18.

Examples
--------
>>> conclusion_change(0.5, -0.1, 1.1, 0.7, 0.1, 1.3, relevant_difference=0.2)
'interval now includes 0'
>>> conclusion_change(0.0007, -0.02, 0.021, 0.0002, -0.02, 0.02, relevant_difference=0.002)
''
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from hmlib.exceptions import FitError
from hmlib.stats.design import design_matrix
from hmlib.stats.mixed import fit_random_intercept

__all__ = ["ChangeRule", "conclusion_change", "cluster_deltas", "shift_imputed", "CategoryImputationModel",
           "category_imputation_model", "tilt_categories", "redraw_categories", "coupled_uniforms",
           "shift_imputed_categories",
           "category_delta_text", "judge_point", "judge_value", "first_change_on_grid", "refine_tipping_point",
           "tipping_point_summary", "find_tipping_point"]


# --------------------------------------------------------------------------
# Changed conclusion
# --------------------------------------------------------------------------
def conclusion_change(estimate, ci_lower, ci_upper, ref_estimate, ref_lower, ref_upper, *,
                      relevant_difference: float, negligible_share: float = 0.5, null_value: float = 0.0,
                      use_null: bool = True) -> str:
    """Why a result's conclusion differs from the reference's ("" if it does not); rule in the module docstring.

    Parameters
    ----------
    estimate, ci_lower, ci_upper : float
        The scenario's estimate and interval.
    ref_estimate, ref_lower, ref_upper : float
        The reference's.
    relevant_difference : float
        ``R``: the smallest clinically relevant move of the estimate, on the
        estimate's own scale (> 0).
    negligible_share : float
        A significance flip counts only with a move of at least this share of ``R``.
    null_value : float
    use_null : bool
        Apply the interval criteria (False for an SD).

    Returns
    -------
    str
        ``""``, or e.g. ``"interval now includes 0"``, ``"estimate changed direction"``,
        ``"estimate moved by 0.31 (relevant difference 0.223)"``.

    Examples
    --------
    >>> conclusion_change(0.9, 0.6, 1.2, 0.5, 0.2, 0.8, relevant_difference=0.223)
    'estimate moved by 0.4 (relevant difference 0.223)'
    """
    if not relevant_difference > 0:
        raise ValueError(f"relevant_difference must be > 0, got {relevant_difference!r}.")
    values = np.asarray([estimate, ci_lower, ci_upper, ref_estimate, ref_lower, ref_upper], dtype=float)
    if not np.all(np.isfinite(values[[0, 3]])):
        return ""
    moved = abs(float(estimate) - float(ref_estimate))
    if use_null and np.all(np.isfinite(values)):
        ref_excludes = not (ref_lower <= null_value <= ref_upper)
        excludes = not (ci_lower <= null_value <= ci_upper)
        if excludes and ref_excludes and np.sign(estimate - null_value) != np.sign(ref_estimate - null_value):
            return "estimate changed direction"
        if excludes != ref_excludes and moved >= negligible_share * relevant_difference:
            return f"interval now {'excludes' if excludes else 'includes'} {null_value:g}"
    if moved >= relevant_difference:
        return f"estimate moved by {moved:.3g} (relevant difference {relevant_difference:.3g})"
    return ""


@dataclass(frozen=True)
class ChangeRule:
    """:func:`conclusion_change` with its thresholds bound (picklable: it travels to worker processes).

    Attributes
    ----------
    relevant_difference : float
        ``R`` on the scale of the estimate judged.
    negligible_share : float
        A significance flip counts with a move of at least ``negligible_share * R``.
    null_value : float
    use_null : bool
        False for a standard deviation (only the move counts).
    """

    relevant_difference: float
    negligible_share: float = 0.5
    null_value: float = 0.0
    use_null: bool = True

    def __call__(self, estimate, ci_lower, ci_upper, ref_estimate, ref_lower, ref_upper) -> str:
        return conclusion_change(estimate, ci_lower, ci_upper, ref_estimate, ref_lower, ref_upper,
                                 relevant_difference=self.relevant_difference,
                                 negligible_share=self.negligible_share, null_value=self.null_value,
                                 use_null=self.use_null)


# --------------------------------------------------------------------------
# Delta adjustment
# --------------------------------------------------------------------------
def cluster_deltas(frame: pd.DataFrame, cluster: str, variable: str, delta: float, *,
                   mode: str = "global") -> pd.Series:
    """The shift of each cluster's imputed values.

    Parameters
    ----------
    frame : pandas.DataFrame
        The incomplete data (missing cells = cells that are imputed).
    cluster, variable : str
    delta : float
        Shift in the variable's units.
    mode : {"global", "cluster"}
        ``"global"``: ``delta`` everywhere. ``"cluster"``: ``delta s_j / s_bar``
        with ``s_j`` the cluster's share of missing values and ``s_bar`` the
        mean of ``s_j`` over the missing cells (so the mean shift of an
        imputed value is ``delta``).

    Returns
    -------
    pandas.Series
        Indexed by cluster label.
    """
    missing = frame[variable].isna()
    share = missing.groupby(frame[cluster], observed=True).mean()
    if mode == "global":
        return pd.Series(float(delta), index=share.index)
    if mode != "cluster":
        raise ValueError(f"mode must be 'global' or 'cluster', got {mode!r}.")
    per_cell = frame.loc[missing, cluster].map(share)
    s_bar = float(per_cell.mean()) if len(per_cell) else 1.0
    return float(delta) * share / s_bar


def shift_imputed(result, variable: str, shift_by_row) -> object:
    """A copy of an imputation result with the imputed cells of ``variable`` shifted.

    Parameters
    ----------
    result : hmlib.stats.imputation.ImputationResult
    variable : str
        A numeric imputed column.
    shift_by_row : float or array_like
        Shift per row of the data (only rows imputed in ``variable`` move).

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
        Same imputations, ``completed`` replaced; observed cells untouched.
    """
    mask = result.imputed_mask[variable].to_numpy()
    shift = np.broadcast_to(np.asarray(shift_by_row, dtype=float), mask.shape)
    if hasattr(result.completed, "shifted"):
        # the data once plus the imputed cells (CompletedData): shift the cells, copy nothing else
        return dataclasses.replace(result, completed=result.completed.shifted(variable, shift))
    completed = []
    for frame in result.completed:
        out = frame.copy()
        values = out[variable].to_numpy(dtype=float, copy=True)
        values[mask] += shift[mask]
        out[variable] = values
        completed.append(out)
    return dataclasses.replace(result, completed=completed)


# --------------------------------------------------------------------------
# Delta adjustment of a categorical variable
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CategoryImputationModel:
    """The imputation model's distribution of each imputed category, and the uniforms coupled to the draws.

    Built by :func:`category_imputation_model`; used by
    :func:`shift_imputed_categories`.

    Attributes
    ----------
    variable : str
    levels : tuple of str
        The levels, the first the reference.
    ranks : numpy.ndarray or None
        Ordinal: rank of each level (0 = lowest); None for a nominal variable.
    rows : numpy.ndarray
        Positions (``iloc``) of the imputed rows.
    probabilities : numpy.ndarray
        m x imputed rows x K: ``p`` of each imputed value, level order.
    uniforms : numpy.ndarray
        m x imputed rows: ``u`` within the primary value's interval of ``p``'s
        cumulative distribution (level order, or rank order if ordinal).
    notes : tuple of str
    """

    variable: str
    levels: tuple
    ranks: np.ndarray | None
    rows: np.ndarray
    probabilities: np.ndarray
    uniforms: np.ndarray
    notes: tuple = ()

    @property
    def ordinal(self) -> bool:
        """Ordered levels (cumulative shift)."""
        return self.ranks is not None

    def order(self) -> np.ndarray:
        """Level indices in the order the cumulative distribution runs (levels, or lowest rank first)."""
        return np.arange(len(self.levels)) if self.ranks is None else np.argsort(self.ranks)


def tilt_categories(probabilities: np.ndarray, delta, *, ranks=None) -> np.ndarray:
    """The pattern-mixture distribution of an unrecorded category: ``p`` shifted by ``delta`` on the log-odds scale.

    Parameters
    ----------
    probabilities : numpy.ndarray, shape (..., rows, K)
        ``p`` in level order (level 0 the reference).
    delta : float or array_like, shape (rows,)
        Log odds ratio (per row in the cluster-specific mode).
    ranks : array_like, optional
        Ordinal: the rank of each level; the odds of a higher category are
        multiplied by ``e^delta`` at every cut. None: nominal, the odds of each
        non-reference level against the reference are.

    Returns
    -------
    numpy.ndarray
        ``q``, same shape, rows summing to 1.

    Examples
    --------
    >>> q = tilt_categories(np.array([[0.5, 0.25, 0.25]]), np.log(3.0))
    >>> np.round(q, 3).tolist()
    [[0.25, 0.375, 0.375]]
    """
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-300, None)
    p = p / p.sum(axis=-1, keepdims=True)
    delta = np.asarray(delta, dtype=float)[..., None]
    if ranks is None:
        weights = p * np.exp(np.where(np.arange(p.shape[-1]) > 0, delta, 0.0))
        return weights / weights.sum(axis=-1, keepdims=True)
    order = np.argsort(np.asarray(ranks))
    by_rank = p[..., order]
    at_least = 1.0 - np.cumsum(by_rank, axis=-1)[..., :-1]          # P(rank >= r), r = 1..K-1
    with np.errstate(divide="ignore"):
        shifted = special.expit(special.logit(np.clip(at_least, 0.0, 1.0)) + delta)
    upper = np.concatenate([np.ones(shifted.shape[:-1] + (1,)), shifted], axis=-1)
    lower = np.concatenate([shifted, np.zeros(shifted.shape[:-1] + (1,))], axis=-1)
    q_rank = np.clip(upper - lower, 0.0, None)
    q = np.empty_like(q_rank)
    q[..., order] = q_rank
    return q / q.sum(axis=-1, keepdims=True)


def redraw_categories(probabilities: np.ndarray, uniforms: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Level index drawn by inverting the cumulative distribution (in ``order``) at ``uniforms``.

    Parameters
    ----------
    probabilities : numpy.ndarray, shape (rows, K)
    uniforms : numpy.ndarray, shape (rows,)
    order : numpy.ndarray
        The level indices in the order the cumulative distribution runs.
    """
    cumulative = np.cumsum(probabilities[:, order], axis=1)
    position = (uniforms[:, None] >= cumulative[:, :-1]).sum(axis=1)
    return np.asarray(order)[position]


def coupled_uniforms(probabilities: np.ndarray, current: np.ndarray, order: np.ndarray, rng) -> np.ndarray:
    """``u`` uniform within the interval of ``current``'s level in the cumulative distribution of ``p``.

    Parameters
    ----------
    probabilities : numpy.ndarray, shape (rows, K)
        ``p``, level order.
    current : numpy.ndarray of int
        The level index each row has now.
    order : numpy.ndarray
        The level indices in the order the cumulative distribution runs.
    rng : numpy.random.Generator

    Notes
    -----
    If ``current`` was drawn from ``p``, ``u`` is uniform on (0, 1), so
    :func:`redraw_categories` at ``u`` draws from any other distribution
    exactly; with ``p`` itself it gives ``current`` back.
    """
    by_order = probabilities[:, order]
    position = np.argsort(order)[current]
    upper = np.cumsum(by_order, axis=1)
    rows = np.arange(current.size)
    high = upper[rows, position]
    low = high - by_order[rows, position]
    return low + rng.random(current.size) * (high - low)


def _draw_level_logits(fit, X_missing: np.ndarray, clusters_missing: np.ndarray, rng) -> np.ndarray:
    """Logits of one level against the reference at the imputed rows, with coefficients and cluster intercepts drawn.

    As mice's ``2l.bin``: ``beta* ~ N(beta, cov)``, ``log tau* ~ N(log tau, se^2)``;
    a cluster seen in the fit gets ``u* ~ N(mode, conditional SD^2)``, any other
    ``u* ~ N(0, tau*^2)``.
    """
    beta = rng.multivariate_normal(np.asarray(fit.coef), np.asarray(fit.cov), method="cholesky")
    tau = float(fit.cluster_sd)
    se = float(fit.log_cluster_sd_std_error)
    if tau > 0 and np.isfinite(se):
        tau = float(np.exp(np.log(tau) + se * rng.normal()))
    index = {label: i for i, label in enumerate(np.asarray(fit.cluster_labels).tolist())}
    position = np.array([index.get(c, -1) for c in clusters_missing.tolist()])
    seen = position >= 0
    u = np.zeros(clusters_missing.size)
    drawn = np.asarray(fit.cluster_effects) + np.asarray(fit.cluster_effect_sd) * rng.normal(size=len(index))
    u[seen] = drawn[position[seen]]
    unseen = list(dict.fromkeys(clusters_missing[~seen].tolist()))      # clusters without a recorded value
    new_effects = dict(zip(unseen, tau * rng.normal(size=len(unseen))))
    u[~seen] = [new_effects[c] for c in clusters_missing[~seen].tolist()]
    return X_missing @ beta + u


def category_imputation_model(result, variable: str, *, outcome: str, predictors, cluster: str,
                              levels: dict, cluster_covariates=(), ranks=None,
                              seed: int = 0) -> CategoryImputationModel:
    """Refit the imputation model of a categorical variable on each completed data set, at its imputed rows.

    Parameters
    ----------
    result : hmlib.stats.imputation.ImputationResult
        The primary imputations (``completed`` and ``imputed_mask``).
    variable : str
        The categorical variable whose imputed values are shifted.
    outcome, cluster : str
    predictors : sequence of str
        The analysis model's predictors (``variable`` among them).
    levels : dict
        ``{column: levels}`` of the categorical columns (first = reference);
        a numeric 0/1 ``variable`` has the levels ``["0", "1"]``.
    cluster_covariates : sequence of str
    ranks : array_like, optional
        Ordinal: rank of each level of ``variable``.
    seed : int
        Seeds the parameter draws and the coupled uniforms.

    Returns
    -------
    CategoryImputationModel

    Raises
    ------
    FitError
        ``variable`` has no imputed value, or fewer than two levels recorded.
    """
    mask = result.imputed_mask[variable].to_numpy()
    if not mask.any():
        raise FitError(f"{variable} has no imputed value to shift.")
    found = [str(v) for v in levels[variable]]
    K = len(found)
    if K < 2:
        raise FitError(f"{variable} has fewer than two levels; there is no odds to shift.")
    rows = np.flatnonzero(mask)
    others = [c for c in predictors if c != variable] + [outcome] + [c for c in cluster_covariates
                                                                      if c not in predictors]
    order = np.arange(K) if ranks is None else np.argsort(np.asarray(ranks))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 17_2026]))
    probabilities, uniforms, notes = [], [], []
    for i, frame in enumerate(result.completed):
        labels = _level_text(frame[variable])
        current = np.array([found.index(v) for v in labels[rows]])
        design = design_matrix(frame, others, {k: v for k, v in levels.items() if k != variable})
        X = design.X.copy()
        spread = X[:, 1:].std(axis=0)
        keep = np.r_[True, spread > 0]
        X = X[:, keep]
        X[:, 1:] = (X[:, 1:] - X[:, 1:].mean(axis=0)) / X[:, 1:].std(axis=0)
        groups = frame[cluster].to_numpy()
        logits = np.zeros((rows.size, K))
        for k in range(1, K):
            fit_rows = ~mask & np.isin(labels, [found[0], found[k]])
            y = (labels[fit_rows] == found[k]).astype(float)
            try:
                fit = fit_random_intercept(y, X[fit_rows], groups[fit_rows], family="binomial")
                logits[:, k] = _draw_level_logits(fit, X[rows], groups[rows], rng)
            except FitError as exc:
                share = (y.sum() + 0.5) / (y.size + 1.0)
                logits[:, k] = special.logit(share)
                if i == 0:
                    notes.append(f"level '{found[k]}' against '{found[0]}': the random-intercept model could not "
                                 f"be fitted ({exc}); its observed log odds were used.")
        p = np.exp(logits - special.logsumexp(logits, axis=1, keepdims=True))
        probabilities.append(p)
        uniforms.append(coupled_uniforms(p, current, order, rng))
    return CategoryImputationModel(variable=variable, levels=tuple(found),
                                   ranks=None if ranks is None else np.asarray(ranks), rows=rows,
                                   probabilities=np.stack(probabilities), uniforms=np.stack(uniforms),
                                   notes=tuple(notes))


def _level_text(series: pd.Series) -> np.ndarray:
    """Values as level text; a numeric (0/1) column's numbers as written (``1.0`` -> ``"1"``)."""
    if pd.api.types.is_numeric_dtype(series):
        return np.array([f"{v:g}" for v in series.to_numpy(dtype=float)], dtype=object)
    return series.astype(str).to_numpy()


def shift_imputed_categories(result, model: CategoryImputationModel, delta_by_row) -> object:
    """A copy of an imputation result whose imputed categories are redrawn from the shifted distribution.

    Parameters
    ----------
    result : hmlib.stats.imputation.ImputationResult
        The imputations ``model`` was built from.
    model : CategoryImputationModel
    delta_by_row : float or array_like
        Log odds ratio per row of the data (only the imputed rows are used).

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
        Same imputations with ``completed`` replaced; observed cells and
        other columns untouched; ``delta = 0`` gives back the primary values.
    """
    n = len(result.imputed_mask)
    delta = np.broadcast_to(np.asarray(delta_by_row, dtype=float), (n,))[model.rows]
    labels = np.asarray(model.levels, dtype=object)
    order = model.order()
    completed = []
    for frame, p, u in zip(result.completed, model.probabilities, model.uniforms):
        q = tilt_categories(p, delta, ranks=model.ranks)
        drawn = redraw_categories(q, u, order)
        out = frame.copy()
        column = out[model.variable].copy()
        if pd.api.types.is_numeric_dtype(column):       # a 0/1 column stays numeric
            column.iloc[model.rows] = np.array([float(v) for v in labels[drawn]])
        else:
            column.iloc[model.rows] = labels[drawn]
        out[model.variable] = column
        completed.append(out)
    return dataclasses.replace(result, completed=completed)


def category_delta_text(variable: str, delta: float, *, reference: str, ordinal: bool) -> str:
    """What a delta means, in plain words (the pattern-mixture assumption it makes).

    Examples
    --------
    >>> text = category_delta_text("gcs_band", math.log(2), reference="mild", ordinal=True)
    >>> text[:79]
    'patients whose gcs_band was not recorded are assumed to have e^delta = 2 times '
    >>> text[79:]
    'the odds of a higher gcs_band than recorded patients like them (delta 0.69 on the log-odds scale)'
    """
    ratio = f"e^delta = {math.exp(delta):.3g} times"
    if ordinal:
        what = f"the odds of a higher {variable} than recorded patients like them"
    else:
        what = (f"the odds of each {variable} other than '{reference}' (against '{reference}') that recorded "
                "patients like them have")
    return (f"patients whose {variable} was not recorded are assumed to have {ratio} {what} "
            f"(delta {delta:.2f} on the log-odds scale)")


# --------------------------------------------------------------------------
# Tipping point
# --------------------------------------------------------------------------
def judge_point(estimate: float, ci_lower: float, ci_upper: float, reference: dict, rule: ChangeRule) -> dict:
    """One evaluation against the reference: ``estimate, ci_lower, ci_upper`` and ``change`` (why, or "")."""
    why = rule(estimate, ci_lower, ci_upper, reference["estimate"], reference["ci_lower"], reference["ci_upper"])
    return {"estimate": float(estimate), "ci_lower": float(ci_lower), "ci_upper": float(ci_upper), "change": why}


def judge_value(value, reference: dict, rule) -> dict:
    """:func:`judge_point` of one term, or of several at once (a categorical focus: one term per level).

    Parameters
    ----------
    value : tuple or dict
        ``(estimate, ci_lower, ci_upper)``, or ``{term: (estimate, ci_lower, ci_upper)}``.
    reference : dict
        ``estimate, ci_lower, ci_upper``, or ``{term: {estimate, ci_lower, ci_upper}}``.
    rule : ChangeRule or dict
        The rule of the one term, or ``{term: ChangeRule}`` (each term judged
        against its own relevant difference).

    Returns
    -------
    dict
        :func:`judge_point`'s answer; for several terms that of the first
        term (in order) whose conclusion changes, its ``change`` prefixed by
        the term and ``term`` added (the first term's when none changes).
    """
    if not isinstance(value, dict):
        return judge_point(*value, reference, rule)
    first = None
    for term, triple in value.items():
        point = judge_point(*triple, reference[term], rule[term])
        point["term"] = term
        if point["change"]:
            point["change"] = f"{term}: {point['change']}"
            return point
        first = first or point
    return first


def first_change_on_grid(points, reference: dict, rule):
    """The first grid point, by increasing ``|delta|``, whose conclusion differs from the reference.

    Parameters
    ----------
    points : sequence of (float, (float, float, float) or dict or None)
        ``(delta, (estimate, ci_lower, ci_upper))`` on one side of 0 (or
        ``{term: (...)}`` for several terms, :func:`judge_value`); None for a
        failed evaluation (the search stops there).
    reference : dict
        ``estimate, ci_lower, ci_upper`` at ``delta = 0`` (or one such dict per term).
    rule : ChangeRule or dict
        As :func:`judge_value`.

    Returns
    -------
    tuple or None
        ``(lo, hi, point)``: the largest unchanged ``|delta|`` before the
        change (0 if none), the ``|delta|`` of the change and its evaluation
        (``estimate, ci_lower, ci_upper, change``); None when no grid point
        changes the conclusion.
    """
    lo = 0.0
    for delta, value in sorted(points, key=lambda item: abs(item[0])):
        if value is None:
            return None
        point = judge_value(value, reference, rule)
        if point["change"]:
            return lo, abs(delta), point
        lo = abs(delta)
    return None


def refine_tipping_point(evaluate, lo: float, hi: float, sign: float, reference: dict, rule: ChangeRule, *,
                         steps: int = 6) -> dict:
    """Bisect between ``|delta| = lo`` (conclusion unchanged) and ``hi`` (changed).

    Parameters
    ----------
    evaluate : callable
        ``evaluate(delta) -> (estimate, ci_lower, ci_upper)`` (or ``{term: (...)}``, :func:`judge_value`).
    lo, hi : float
        The bracket in ``|delta|``.
    sign : {1.0, -1.0}
        The side of 0.
    reference : dict
    rule : ChangeRule or dict
        As :func:`judge_value`.
    steps : int
        Halvings of the bracket.

    Returns
    -------
    dict
        ``lo, hi`` (the final bracket, in ``|delta|``) and ``evaluations`` (one
        dict per midpoint: ``delta, estimate, ci_lower, ci_upper, change``).
    """
    evaluations = []
    for _ in range(int(steps)):
        mid = (lo + hi) / 2
        point = judge_value(evaluate(sign * mid), reference, rule)
        evaluations.append({"delta": sign * mid, **point})
        if point["change"]:
            hi = mid
        else:
            lo = mid
    return {"lo": lo, "hi": hi, "evaluations": evaluations}


def tipping_point_summary(sign: float, grid_max: float, found, refined: dict | None, scale: float) -> dict:
    """The smallest ``|delta|`` found to change the conclusion, from a grid hit and its bisection.

    Parameters
    ----------
    sign : {1.0, -1.0}
        The side of 0.
    grid_max : float
        Largest ``|delta|`` of the grid on this side.
    found : tuple or None
        :func:`first_change_on_grid`'s answer.
    refined : dict or None
        :func:`refine_tipping_point`'s answer (None: not refined).
    scale : float
        Units per delta unit (the observed SD), for ``delta_units``.

    Returns
    -------
    dict
        ``found, delta_sd, delta_units, bracket_sd, estimate, ci_lower,
        ci_upper, change, grid_max_sd, term`` (NaN and ``found=False`` when the
        grid never changes the conclusion; ``term`` the term whose conclusion
        changed when several were judged, else None).
    """
    if found is None:
        return {"found": False, "delta_sd": np.nan, "delta_units": np.nan, "bracket_sd": None, "estimate": np.nan,
                "ci_lower": np.nan, "ci_upper": np.nan, "change": "", "grid_max_sd": grid_max, "term": None}
    lo, hi, point = found
    best = {"delta": sign * hi, **point}
    refined = refined or {"lo": lo, "hi": hi, "evaluations": []}
    for ev in refined["evaluations"]:
        if ev["change"] and abs(ev["delta"]) <= abs(best["delta"]):
            best = ev
    return {"found": True, "delta_sd": float(best["delta"]), "delta_units": float(best["delta"] * scale),
            "bracket_sd": [float(sign * refined["lo"]), float(sign * refined["hi"])],
            "estimate": best["estimate"], "ci_lower": best["ci_lower"], "ci_upper": best["ci_upper"],
            "change": best["change"], "grid_max_sd": grid_max, "term": best.get("term")}


def find_tipping_point(evaluate, deltas, reference: dict, rule: ChangeRule, *, bisection_steps: int = 6,
                       scale: float = 1.0) -> dict:
    """Tipping points on both sides of 0: grid search, then bisection (sequential version).

    :func:`hmlib.steps.sensitivity.run_sensitivity` does the same with the
    grid and the bisections spread over worker processes.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(delta) -> (estimate, ci_lower, ci_upper)``.
    deltas : sequence of float
        The grid (0 is the reference and is skipped).
    reference : dict
    rule : ChangeRule or dict
        As :func:`judge_value`.
    rule : ChangeRule
    scale : float
        Units per delta unit (the observed SD), for ``delta_units``.

    Returns
    -------
    dict
        ``{"positive" | "negative": {found, delta_sd, delta_units, bracket_sd,
        estimate, ci_lower, ci_upper, change, grid_max_sd}}``.

    Examples
    --------
    >>> line = lambda d: (1 - 0.8 * d, 0.7 - 0.8 * d, 1.3 - 0.8 * d)
    >>> reference = dict(zip(["estimate", "ci_lower", "ci_upper"], line(0)))
    >>> tp = find_tipping_point(line, [0.25, 0.5, 0.75, 1.0], reference, ChangeRule(relevant_difference=1.0))
    >>> round(tp["positive"]["delta_sd"], 3), tp["positive"]["change"]
    (0.875, 'interval now includes 0')
    """
    out = {}
    for sign, side in ((1.0, "positive"), (-1.0, "negative")):
        side_grid = [float(d) for d in deltas if np.sign(d) == sign]
        found = first_change_on_grid([(d, evaluate(d)) for d in side_grid], reference, rule)
        refined = None
        if found is not None:
            refined = refine_tipping_point(evaluate, found[0], found[1], sign, reference, rule, steps=bisection_steps)
        out[side] = tipping_point_summary(sign, max((abs(d) for d in side_grid), default=0.0), found, refined,
                                          scale)
    return out
