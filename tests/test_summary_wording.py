"""Sentences of the executive summary that must not overstate what the data show (issue #12).

SUMMARY-WORD-001  a variable missing for 95% (not 100%) of patients in most sites is not "never recorded" there
SUMMARY-WORD-002  with fewer than five clusters the summary says that between-cluster SDs are barely estimable
SUMMARY-WORD-003  a continuous outcome's shift under complete-case analysis is stated as a mean, never as a rate
                  (cdystonia's twstrs once read "the twstrs rate is 4147.9%")
SUMMARY-WORD-004  with a visit time the rows are counted as visits in patients, never as "patients in patients"
                  (cdystonia_time once read "The extract has 654 patients in 109 patients"): the summary, step 1's
                  narrative, step 2's flow sentence, its figure's caption and its methods sentence, and the
                  captions of steps 1-2's figures by cluster, patterns, retention and shift; without a time the
                  same sentences still count patients
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hmlib.data import load_registry
from hmlib.figures.style import caption_of
from hmlib.params import load_params
from hmlib.report.evidence import ReportEvidence
from hmlib.report.summary import executive_summary
from hmlib.results import ESTIMATE_COLUMNS
from hmlib.simulate.longitudinal import longitudinal_registry
from hmlib.simulate.registries import small_registry
from hmlib.steps import STEPS
from hmlib.steps.complete_case import complete_case_check, methods_text
from hmlib.steps.diagnose import diagnose_registry
from hmlib.steps.diagnose_narrative import narrative


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


def test_summary_word_004_visits_in_patients(tmp_path):
    """SUMMARY-WORD-004: see the module docstring."""
    frame = longitudinal_registry(6, n_sites=8, n_patients=200, n_visits=5).drop(columns=["date"])
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = ("name: t\ndata: d.csv\ncluster: patient\noutcome: y\noutcome_family: gaussian\n"
            "predictors: [x, month]\nfocus: x\nseed: 1\nfast: true\n")
    texts = {}
    for key, extra in (("time", "time: month\n"), ("none", "")):
        (tmp_path / "p.yaml").write_text(base + extra)
        registry = load_registry(load_params(tmp_path / "p.yaml"))
        ev = _evidence(registry)
        cc = complete_case_check(registry)
        ev.artifacts["complete_case"] = cc.to_artifact()
        caption = cc.figures()["flow"][0].get_label()
        step1 = diagnose_registry(registry).figures()
        shown = [*step1["by_cluster"], *step1["patterns"], *cc.figures()["retention"], *cc.figures()["shift"]]
        plt.close("all")
        texts[key] = {"summary": " ".join(executive_summary(ev)),
                      "diagnose": " ".join(narrative(diagnose_registry(registry))),
                      "flow": cc.flow.sentence(cc.noun, rows=cc.rows), "caption": caption,
                      "methods": " ".join(methods_text(ev.artifacts["complete_case"], ev)),
                      "figures": " ".join(caption_of(f)[1] for f in shown)}
    n, k = len(frame), frame["patient"].nunique()
    time = texts["time"]
    assert f"The extract has {n:,} visits in {k:,} patients" in time["summary"]
    assert f"The extract has {n:,} visits in {k} patients" in time["diagnose"]
    assert time["flow"].startswith(f"Of {n:,} visits in {k} patients in the extract")
    assert time["caption"].startswith("Flow of visits and patients")
    assert "Complete-case analysis used the" in time["methods"] and "visits with every model variable" in time["methods"]
    for text in time.values():  # no count of rows called patients: "<n> patients in <k> ..."
        assert not re.search(r"\d patients in [\d,]+ ", text), text
    none = texts["none"]  # without a time each row is a patient (here with a cluster column named patient)
    assert f"The extract has {n:,} patients in" in none["summary"] and "visits" not in none["flow"]
    assert none["caption"].startswith("Flow of patients and") and "patients with every" in none["methods"]
    # figure captions of steps 1 and 2 (heatmap, bars, funnel, patterns, retention, shift) count rows the same way
    for phrase in ("Share of {} with each variable missing", "share of {} with x missing against its number of {}",
                   "Share of {} with x missing in each patient", "and the {} with that pattern",
                   "Share of each cluster's {} kept", "between complete cases and all {}"):
        assert phrase.format("visits", "visits") in time["figures"], phrase
        assert phrase.format("patients", "patients") in none["figures"], phrase
