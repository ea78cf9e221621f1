"""Sentences of the executive summary that must not overstate what the data show (issue #12).

SUMMARY-WORD-001  a variable missing for 95% (not 100%) of patients in most sites is not "never recorded" there
SUMMARY-WORD-002  with fewer than five clusters the summary says that between-cluster SDs are barely estimable
SUMMARY-WORD-003  a continuous outcome's shift under complete-case analysis is stated as a mean, never as a rate
                  (cdystonia's twstrs once read "the twstrs rate is 4147.9%")
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.report.evidence import ReportEvidence
from hmlib.report.summary import executive_summary
from hmlib.results import ESTIMATE_COLUMNS
from hmlib.simulate.registries import small_registry
from hmlib.steps import STEPS
from hmlib.steps.complete_case import complete_case_check
from hmlib.steps.diagnose import diagnose_registry


def _evidence(registry) -> ReportEvidence:
    artifacts = {s.key: None for s in STEPS}
    artifacts["diagnose"] = diagnose_registry(registry).to_artifact()
    return ReportEvidence(params=registry.params, artifacts=artifacts,
                          estimates=pd.DataFrame(columns=list(ESTIMATE_COLUMNS)))


def test_summary_word_001_almost_never_is_not_never(write_case):
    """SUMMARY-WORD-001: lab missing for 24 of 25 patients in 11 of 12 sites is 'never or almost never recorded
    ... in 11 of 12 sites', not 'never recorded in 11 of 12'."""
    frame = small_registry(seed=4)
    frame["lab"] = frame["lab"].fillna(2.0)
    for site, rows in frame.groupby("site").groups.items():
        if site != "S00":
            frame.loc[rows[1:], "lab"] = np.nan  # one value recorded per site
    text = " ".join(executive_summary(_evidence(load_registry(load_params(write_case(frame))))))
    assert "lab is never or almost never recorded (for at most 10% of patients) in 11 of 12 sites" in text
    assert "never recorded in 11 of 12" not in text


def test_summary_word_002_few_clusters(write_case):
    """SUMMARY-WORD-002: with 3 clusters the summary states the number and warns that between-cluster SDs are barely estimable."""
    frame = small_registry(seed=4, n_clusters=3, per_cluster=60)
    text = " ".join(executive_summary(_evidence(load_registry(load_params(write_case(frame))))))
    assert "180 patients in 3 sites" in text  # a count of clusters is not a small cell of patients
    assert "Only 3 sites: every between-site SD and ICC in this report is barely estimable" in text


def test_summary_word_003_continuous_outcome_is_a_mean(write_case):
    """SUMMARY-WORD-003: see the module docstring."""
    frame = small_registry(seed=4)
    frame["score"] = 40.0 + 5 * frame["age"].rank(pct=True)
    registry = load_registry(load_params(write_case(frame, outcome="score", outcome_family="gaussian")))
    ev = _evidence(registry)
    ev.artifacts["complete_case"] = complete_case_check(registry).to_artifact()
    text = " ".join(executive_summary(ev))
    assert "the mean score is" in text and "score rate" not in text and "%" not in text.split("mean score")[1][:60]
