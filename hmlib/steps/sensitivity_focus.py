"""The focus variable of step 5: its terms, its kind, its delta grid and the categorical imputation model.

Step 5 judges every scenario by the focus variable's term(s) in the analysis
model: one for a numeric focus, one per non-reference level for a
categorical one (:func:`focus_terms`). A categorical focus (or a numeric
0/1 one) is shifted on the log-odds scale (:func:`categorical_focus`,
:func:`delta_grid`) from its imputation model refitted at the imputed rows
(:func:`category_model_for`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.exceptions import FitError
from hmlib.stats.design import ordinal_ranks
from hmlib.stats.sensitivity import category_imputation_model

__all__ = ["categorical_focus", "focus_levels", "delta_grid", "focus_terms", "focus_row", "term_list", "focus_value",
           "focus_reference", "category_model_for"]


def categorical_focus(registry) -> bool:
    """The focus is categorical, or numeric with values 0 and 1 only: its delta adjustment is on the log-odds scale."""
    p = registry.params
    if registry.kinds.get(p.focus) == "categorical":
        return True
    values = registry.frame[p.focus].dropna()
    return bool(len(values)) and bool(np.isin(values.to_numpy(dtype=float), (0.0, 1.0)).all())


def focus_levels(registry) -> list:
    """The focus's levels (a 0/1 focus: ``["0", "1"]``), the first the reference."""
    p = registry.params
    return [str(v) for v in registry.levels[p.focus]] if p.focus in registry.levels else ["0", "1"]


def delta_grid(registry, settings) -> tuple[tuple, str]:
    """The delta grid without 0 and its suffix in scenario names: SDs, or log odds for a categorical focus."""
    if categorical_focus(registry):
        return tuple(sorted(set(float(x) for x in settings.deltas_log_odds) - {0.0})), "logodds"
    return tuple(sorted(set(float(x) for x in settings.deltas_sd) - {0.0})), "sd"


def focus_terms(registry) -> list[str]:
    """Terms of the focus variable in the analysis model (one per non-reference level if categorical)."""
    p = registry.params
    if registry.kinds.get(p.focus) == "categorical":
        return [f"{p.focus}[{level}]" for level in registry.levels[p.focus][1:]]
    return [p.focus]


def focus_row(rows: pd.DataFrame, term: str) -> pd.Series:
    """The row of ``term`` in a table of estimates."""
    return rows.loc[rows["term"] == term].iloc[0]


def term_list(focus_terms) -> list:
    """One term as a list of one; a list as it is."""
    return [focus_terms] if isinstance(focus_terms, str) else list(focus_terms)


def focus_value(rows: pd.DataFrame, focus_terms):
    """``(estimate, ci_lower, ci_upper)`` of the focus term, or ``{term: (...)}`` for several (a categorical focus)."""
    terms = term_list(focus_terms)
    values = {}
    for term in terms:
        r = focus_row(rows, term)
        values[term] = (float(r.estimate), float(r.ci_lower), float(r.ci_upper))
    return values[terms[0]] if len(terms) == 1 else values


def focus_reference(rows: pd.DataFrame, focus_terms) -> dict:
    """The reference of :func:`hmlib.stats.sensitivity.judge_value`: one dict, or one per term."""
    value = focus_value(rows, focus_terms)
    keys = ("estimate", "ci_lower", "ci_upper")
    if isinstance(value, dict):
        return {term: dict(zip(keys, triple)) for term, triple in value.items()}
    return dict(zip(keys, value))


def category_model_for(registry, imputation, seed: int):
    """The imputation model of a categorical focus at its imputed rows, or the reason it cannot be built (str).

    See :func:`hmlib.stats.sensitivity.category_imputation_model`; an
    ordinal focus (``ordinal:`` in the params) is shifted on its ranks.
    """
    p = registry.params
    try:
        ranks = (ordinal_ranks(p.focus, focus_levels(registry), p.ordinal[p.focus]) if p.focus in p.ordinal
                 else None)
        return category_imputation_model(imputation, p.focus, outcome=p.outcome, predictors=list(p.predictors),
                                         cluster=p.cluster, levels={**registry.levels, p.focus: focus_levels(registry)},
                                         cluster_covariates=list(p.cluster_covariates), ranks=ranks, seed=seed)
    except FitError as exc:
        return str(exc).rstrip(".")
