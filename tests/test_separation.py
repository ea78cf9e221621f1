"""Separation (a category or combination of predictors that always or never has the outcome): detected, named,
flagged in estimates.csv and the narrative, never presented as a result.

SEP-001  the linear program finds quasi-complete separation (a category without events) and names the term
SEP-002  complete separation by a continuous predictor is found; ordinary data are not flagged
SEP-003  estimate_rows flags a separated fit (method suffix ':not_estimable'); the label says do not report
SEP-004  pooled imputations are flagged when any imputed data set is separated, with a note
SEP-005  step 2 on separated data: flagged rows and a note naming the term; the checklist makes no comparison
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.methods import method_label
from hmlib.results import estimate_rows
from hmlib.simulate.registries import small_registry
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.mixed.separation import separated_terms
from hmlib.stats.pooling import pool_fits

LEVELS = {"sex": ["female", "male"]}


def _separated_frame(seed: int = 1) -> pd.DataFrame:
    frame = small_registry(seed=seed).dropna()
    frame.loc[frame["sex"] == "male", "died"] = 0  # no man ever has the outcome
    return frame


def _fit(frame):
    return fit_analysis_model(frame, outcome="died", predictors=["age", "sex", "lab"], cluster="site",
                              family="binomial", levels=LEVELS)


def test_sep_001_category_without_events():
    """SEP-001: quasi-complete separation by a category is found and the category's term is named (the fitter
    alone stops at a coefficient near -30 with a standard error of about 1e6 and calls it converged)."""
    fit = _fit(_separated_frame())
    assert fit.separated == ("sex[male]",)
    assert abs(fit.coef[fit.term_names.index("sex[male]")]) > 10


def test_sep_002_continuous_separation_and_no_false_alarm():
    """SEP-002: an outcome determined by a threshold of lab is separated; the unaltered registry is not."""
    frame = small_registry(seed=3).dropna()
    frame["died"] = (frame["lab"] > 2).astype(int)
    assert "lab" in _fit(frame).separated
    for seed in range(5):
        assert _fit(small_registry(seed=seed).dropna()).separated == ()
    y = np.r_[np.zeros(50), np.ones(50)]
    x = np.r_[np.random.default_rng(0).normal(0, 1, 50), np.random.default_rng(1).normal(0.5, 1, 50)]
    assert separated_terms(y, np.column_stack([np.ones(100), x]), ["Intercept", "x"]) == ()


def test_sep_003_flagged_rows():
    """SEP-003: the rows of a separated fit carry ':not_estimable'; its label tells the reader not to report it."""
    rows = estimate_rows(_fit(_separated_frame()), "complete_case")
    assert set(rows["method"]) == {"complete_case:not_estimable"}
    assert "NOT ESTIMABLE" in method_label("complete_case:not_estimable")


def test_sep_004_pooling_flags():
    """SEP-004: Rubin pooling of fits of which one is separated is flagged, and its notes say in how many."""
    good = [_fit(small_registry(seed=s).dropna()) for s in (0, 2)]
    pooled = pool_fits([*good, _fit(_separated_frame())], method="multilevel_mi", n_patients=300, n_clusters=12)
    assert pooled.method == "multilevel_mi:not_estimable"
    assert any("1 of 3 imputed data sets" in n and "sex[male]" in n for n in pooled.notes)
    assert pool_fits(good, method="multilevel_mi", n_patients=300, n_clusters=12).method == "multilevel_mi"


def test_sep_005_complete_case_step(write_case):
    """SEP-005: step 2 on data where no man dies: the complete-case rows are flagged and the narrative names the
    separated term."""
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.steps.complete_case import complete_case_check

    frame = small_registry(seed=1)
    frame.loc[frame["sex"] == "male", "died"] = 0
    result = complete_case_check(load_registry(load_params(write_case(frame))))
    assert "complete_case:not_estimable" in set(result.estimates["method"])
    assert "complete_case" not in set(result.estimates["method"])
    assert any("not estimable" in s and "sex[male]" in s for s in result.narrative())
