"""The key messages: the bottom line in about 150 words, on the clinical scale (issue #13).

KEY-001  the demo's key messages name the primary analysis, give the focus effect as an odds ratio per SD with its
         interval (computed from estimates.csv), the other methods' range, who is lost, MAR spelled out, a strength
         word; at most 160 words; every number agrees with estimates.csv and the step artifacts
KEY-002  effect_units: the effect is reported per the params' unit (odds ratio = exp(100 x coefficient))
KEY-003  significant digits: a tiny coefficient is not printed as 0.000
KEY-004  the strength rule: weak when the interval includes no effect, moderate when not robust, strong otherwise
KEY-005  with higher_levels: each level's share of the between-cluster variance of the outcome under the primary
         method, from its sd(<level>) rows, and the level at which step 1 finds the focus's missingness varies
         most; nothing without higher levels or without the rows
"""

from __future__ import annotations

import math
import re

import pytest

from hmlib.params import EffectUnit
from hmlib.report.evidence import collect_evidence
from hmlib.report.key_messages import effect_scale, evidence_strength, key_messages, significant
from test_report import rendered_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    from hmlib.data import load_registry
    from hmlib.params import load_params

    params, folder = rendered_demo(tmp_path_factory)
    reg = load_registry(load_params(params, fast=True))
    sd = float(reg.frame[reg.params.focus].std())
    return collect_evidence(folder, params=reg.params, focus_sd=sd), sd


def test_key_001_demo(evidence):
    """KEY-001: content, length and agreement with estimates.csv."""
    ev, sd = evidence
    messages = key_messages(ev)
    text = " ".join(messages)
    assert len(text.split()) <= 160
    assert messages[0].startswith("Primary analysis: multilevel MI")
    row = ev.estimates.loc[(ev.estimates["method"] == "multilevel_mi") & (ev.estimates["term"] == "lactate")].iloc[0]
    odds = f"odds ratio {significant(math.exp(row['estimate'] * sd))} (95% CI {significant(math.exp(row['ci_lower'] * sd))} " \
           f"to {significant(math.exp(row['ci_upper'] * sd))}) per 1 SD ({significant(sd)}) of lactate"
    assert odds in text
    assert "missing at random (MAR:" in text
    cc = ev["complete_case"]
    assert f"{cc.n_all - cc.n_complete:,} patients" in text and f"{len(cc.clusters_lost)} of {cc.n_clusters} sites" in text
    assert re.search(r"Strength of evidence: (strong|moderate|weak|not assessed)", text)
    assert "missing indicator (biased by design)" in text


def test_key_002_effect_units(evidence):
    """KEY-002: with effect_units {lactate: {per: 2, unit: mmol/L}} the odds ratio is per 2 mmol/L."""
    ev, _ = evidence
    params = ev.params.with_overrides(effect_units={"lactate": EffectUnit(2.0, "mmol/L")})
    scale = effect_scale(ev.__class__(**{**ev.__dict__, "params": params}), "lactate")
    assert scale.unit_text == "per 2 mmol/L of lactate" and scale.effect(0.1) == pytest.approx(math.exp(0.2))


def test_key_003_significant_digits():
    """KEY-003: three significant digits whatever the magnitude."""
    assert significant(0.0002143) == "0.000214" and significant(1.4321) == "1.43" and significant(2150.7) == "2,151"


def test_key_004_strength_rule():
    """KEY-004: the one-word rule."""
    assert evidence_strength({"excludes_null": [False], "directions": {1.0}}, "robust") == "weak"
    assert evidence_strength({"excludes_null": [True], "directions": {1.0}}, "not robust") == "moderate"
    assert evidence_strength({"excludes_null": [True], "directions": {1.0, -1.0}}, "robust") == "moderate"
    assert evidence_strength({"excludes_null": [True], "directions": {1.0}}, "robust") == "strong"
    assert evidence_strength({}, None) == "not assessed"


def test_key_005_variance_shares_by_level():
    """KEY-005: shares from the primary method's sd rows; the focus's missingness level from step 1's record."""
    import types

    import pandas as pd

    from hmlib.report.evidence import ReportEvidence
    from hmlib.report.key_messages import level_message, variance_shares
    from hmlib.simulate.missingness import level_missingness_registry
    from hmlib.steps.diagnose import diagnose

    estimates = pd.DataFrame({"method": ["complete_case", "multilevel_mi", "multilevel_mi", "multilevel_mi"],
                              "term": ["sd(country)", "x", "sd(country)", "sd(hospital)"],
                              "estimate": [0.9, 0.3, 0.6, 0.3]})
    shares = variance_shares(estimates, "multilevel_mi", ["country", "hospital"])
    assert shares == pytest.approx({"country": 0.8, "hospital": 0.2})
    assert variance_shares(estimates, "complete_case", ["country", "hospital"]) == {}
    frame = level_missingness_registry(3).assign(y=1.0)
    frame["y"] = frame["y"] + frame.index % 7
    diag = diagnose(frame, cluster="hospital", outcome="y", outcome_family="gaussian", predictors=["v"],
                    higher_levels=["country"]).to_artifact()
    params = types.SimpleNamespace(cluster="hospital", outcome="y", focus="v", higher_levels=("country",),
                                   privacy=types.SimpleNamespace(min_cell=11))
    ev = ReportEvidence(params=params, artifacts={"diagnose": diag}, estimates=estimates)
    (text,) = level_message(ev)
    assert text.startswith("Of the between-hospital variation in y (multilevel MI), 80.0% lies between country "
                           "units and 20.0% between hospitals within them")
    top = max(diag.level_variation["v"].table, key=lambda row: row.sd).level
    assert top == "country" and text.endswith("missingness of v varies most between country units (step 1).")
    flat = ReportEvidence(params=types.SimpleNamespace(**{**params.__dict__, "higher_levels": ()}),
                          artifacts={"diagnose": None}, estimates=estimates)
    assert level_message(flat) == []
