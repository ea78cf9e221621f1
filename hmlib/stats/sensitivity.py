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

Examples
--------
>>> conclusion_change(0.5, -0.1, 1.1, 0.7, 0.1, 1.3, relevant_difference=0.2)
'interval now includes 0'
>>> conclusion_change(0.0007, -0.02, 0.021, 0.0002, -0.02, 0.02, relevant_difference=0.002)
''
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ChangeRule", "conclusion_change", "cluster_deltas", "shift_imputed", "judge_point", "first_change_on_grid",
           "refine_tipping_point", "tipping_point_summary", "find_tipping_point"]


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
    completed = []
    for frame in result.completed:
        out = frame.copy()
        values = out[variable].to_numpy(dtype=float, copy=True)
        values[mask] += shift[mask]
        out[variable] = values
        completed.append(out)
    return dataclasses.replace(result, completed=completed)


# --------------------------------------------------------------------------
# Tipping point
# --------------------------------------------------------------------------
def judge_point(estimate: float, ci_lower: float, ci_upper: float, reference: dict, rule: ChangeRule) -> dict:
    """One evaluation against the reference: ``estimate, ci_lower, ci_upper`` and ``change`` (why, or "")."""
    why = rule(estimate, ci_lower, ci_upper, reference["estimate"], reference["ci_lower"], reference["ci_upper"])
    return {"estimate": float(estimate), "ci_lower": float(ci_lower), "ci_upper": float(ci_upper), "change": why}


def first_change_on_grid(points, reference: dict, rule: ChangeRule):
    """The first grid point, by increasing ``|delta|``, whose conclusion differs from the reference.

    Parameters
    ----------
    points : sequence of (float, (float, float, float) or None)
        ``(delta, (estimate, ci_lower, ci_upper))`` on one side of 0; None
        for a failed evaluation (the search stops there).
    reference : dict
        ``estimate, ci_lower, ci_upper`` at ``delta = 0``.
    rule : ChangeRule

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
        point = judge_point(*value, reference, rule)
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
        ``evaluate(delta) -> (estimate, ci_lower, ci_upper)``.
    lo, hi : float
        The bracket in ``|delta|``.
    sign : {1.0, -1.0}
        The side of 0.
    reference : dict
    rule : ChangeRule
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
        point = judge_point(*evaluate(sign * mid), reference, rule)
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
        ci_upper, change, grid_max_sd`` (NaN and ``found=False`` when the grid
        never changes the conclusion).
    """
    if found is None:
        return {"found": False, "delta_sd": np.nan, "delta_units": np.nan, "bracket_sd": None, "estimate": np.nan,
                "ci_lower": np.nan, "ci_upper": np.nan, "change": "", "grid_max_sd": grid_max}
    lo, hi, point = found
    best = {"delta": sign * hi, **point}
    refined = refined or {"lo": lo, "hi": hi, "evaluations": []}
    for ev in refined["evaluations"]:
        if ev["change"] and abs(ev["delta"]) <= abs(best["delta"]):
            best = ev
    return {"found": True, "delta_sd": float(best["delta"]), "delta_units": float(best["delta"] * scale),
            "bracket_sd": [float(sign * refined["lo"]), float(sign * refined["hi"])],
            "estimate": best["estimate"], "ci_lower": best["ci_lower"], "ci_upper": best["ci_upper"],
            "change": best["change"], "grid_max_sd": grid_max}


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
        ``estimate, ci_lower, ci_upper`` at ``delta = 0``.
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
