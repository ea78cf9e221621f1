"""Step 5 with a categorical focus (issue 17 part B): MNAR delta on the log-odds scale, and honest verdicts.

The delta adjustment of a categorical focus redraws its imputed values from
the imputation model's distribution with the odds of each non-reference
level (nominal) or of a higher category (ordinal) multiplied by ``e^delta``
(:mod:`hmlib.stats.sensitivity`); a family that did not run cannot support
the verdict (:mod:`hmlib.steps.sensitivity_verdict`).

Test IDs
--------
SENS-CAT-001   tilt_categories: nominal odds against the reference and ordinal cumulative odds move by exactly e^delta
SENS-CAT-002   the coupled redraw gives back the primary values at delta 0 and draws exactly from the tilted
               distribution when the primary values follow p
SENS-CAT-003   shift_imputed_categories on a real imputation: delta 0 is the primary; observed cells untouched; the
               share of non-reference levels among the imputed grows with delta; a 0/1 focus stays numeric
SENS-CAT-004   run_sensitivity with a 3-level focus: log-odds grid, every level judged, odds-ratio tipping points,
               plain-words meaning of delta, artifact round trip, figure
SENS-CAT-005   the MNAR truth study runs (tiny version): with the true delta the share of non-reference bands is
               recovered, under MAR it is not (bench/categorical_delta_truth.py)
SENS-CAT-006   the report's key message on sensitivity states a categorical focus's deltas as odds ratios (e^delta),
               never in SDs (hmlib.report.key_messages)
SENS-VERD-001  a family that did not run (not requested, failed, skipped) makes the verdict "incomplete" and is
               named; nothing is said about MNAR unless a delta scenario ran
SENS-VERD-002  with every delta scenario failed, no sentence of the narrative or of the report's checklist claims an
               MNAR result, and the verdict says no MNAR scenario ran
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from hmlib.data import load_registry
from hmlib.figures.style import caption_of
from hmlib.params import load_params
from hmlib.simulate.categorical_focus import categorical_focus_registry
from hmlib.stats.sensitivity import (coupled_uniforms, redraw_categories, shift_imputed_categories,
                                     tilt_categories)
from hmlib.steps.imputation import impute_registry
from hmlib.steps.sensitivity import SensitivityArtifact, run_sensitivity
from hmlib.steps.sensitivity_focus import category_model_for
from hmlib.steps.sensitivity_scenarios import SensitivitySettings

FAST = dict(m=3, iterations=3)


def write_registry(folder, frame: pd.DataFrame, **params):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "registry.csv", index=False)
    spec = {"name": "cat", "data": "registry.csv", "cluster": "site", "outcome": "outcome",
            "outcome_family": "binomial", "predictors": ["age", "severity", "band"], "focus": "band", "seed": 11,
            "fast": True, "privacy": {"min_cell": 11}}
    spec.update(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_registry(load_params(folder / "params.yaml"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    frame = categorical_focus_registry(3, n_sites=20, n_patients=900)
    return write_registry(tmp_path_factory.mktemp("cat"), frame)


@pytest.fixture(scope="module")
def imputation(registry):
    return impute_registry(registry, method="multilevel", **FAST)


# ---------------------------------------------------------------------------
# SENS-CAT-001 / 002
# ---------------------------------------------------------------------------
def test_SENS_CAT_001_tilt_moves_the_odds_by_exactly_e_delta():
    """SENS-CAT-001: nominal: q_k / q_0 = e^delta p_k / p_0 and q_1 / q_2 = p_1 / p_2; ordinal (ranks permuted):
    logit Q(rank >= r) - logit P(rank >= r) = delta at every cut; delta 0 is the identity; per-row deltas."""
    rng = np.random.default_rng(1)
    p = rng.dirichlet([1.0, 1.0, 1.0, 1.0], size=50)
    delta = rng.normal(0, 1.5, size=50)
    q = tilt_categories(p, delta)
    assert np.allclose(q.sum(axis=1), 1.0)
    assert np.allclose(np.log(q[:, 1:] / q[:, :1]) - np.log(p[:, 1:] / p[:, :1]), delta[:, None], atol=1e-10)
    assert np.allclose(q[:, 1] / q[:, 2], p[:, 1] / p[:, 2])
    assert np.allclose(tilt_categories(p, 0.0), p)
    ranks = np.array([2, 0, 3, 1])                       # level 1 lowest, then 3, 0, 2
    q = tilt_categories(p, delta, ranks=ranks)
    order = np.argsort(ranks)
    at_least = lambda x: 1 - np.cumsum(x[:, order], axis=1)[:, :-1]      # noqa: E731
    logit = lambda x: np.log(x / (1 - x))                                 # noqa: E731
    assert np.allclose(logit(at_least(q)) - logit(at_least(p)), delta[:, None], atol=1e-9)
    assert np.allclose(tilt_categories(p, 0.0, ranks=ranks), p)


def test_SENS_CAT_002_coupled_redraw_is_exact():
    """SENS-CAT-002: 200,000 rows with current ~ p: at delta 0 the redraw is current itself; at delta = log 3 the
    redrawn levels have the frequencies of q (within 5 binomial SEs), nominal and ordinal."""
    rng = np.random.default_rng(5)
    n = 200_000
    p = np.tile([0.5, 0.3, 0.2], (n, 1))
    current = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    for ranks in (None, np.array([1, 2, 0])):
        order = np.arange(3) if ranks is None else np.argsort(ranks)
        u = coupled_uniforms(p, current, order, rng)
        assert np.array_equal(redraw_categories(p, u, order), current)
        q = tilt_categories(p, math.log(3.0), ranks=ranks)
        drawn = redraw_categories(q, u, order)
        freq = np.bincount(drawn, minlength=3) / n
        assert np.all(np.abs(freq - q[0]) < 5 * np.sqrt(q[0] * (1 - q[0]) / n)), (freq, q[0])


# ---------------------------------------------------------------------------
# SENS-CAT-003 / 004
# ---------------------------------------------------------------------------
def test_SENS_CAT_003_shift_on_a_real_imputation(registry, imputation, tmp_path):
    """SENS-CAT-003: the imputation model is refitted at the imputed rows; delta 0 gives back every completed data set
    exactly; observed cells and other columns never move; the share of non-reference levels among the imputed
    values grows with delta in every data set; a 0/1 numeric focus is shifted as a binary and stays 0/1."""
    model = category_model_for(registry, imputation, seed=1)
    assert not isinstance(model, str) and model.probabilities.shape == (3, model.rows.size, 3)
    assert np.allclose(model.probabilities.sum(axis=2), 1.0)
    same = shift_imputed_categories(imputation, model, 0.0)
    for a, b in zip(imputation.completed, same.completed):
        pd.testing.assert_frame_equal(a, b)
    mask = imputation.imputed_mask["band"].to_numpy()
    reference = registry.levels["band"][0]                 # levels sorted as text: 'high' is the reference
    shares = []
    for delta in (-1.0, 0.0, 1.0, 2.0):
        shifted = shift_imputed_categories(imputation, model, delta)
        for a, b in zip(imputation.completed, shifted.completed):
            pd.testing.assert_frame_equal(a.drop(columns="band"), b.drop(columns="band"))
            assert (a["band"].astype(str)[~mask] == b["band"].astype(str)[~mask]).all()
        shares.append([float((f["band"].astype(str)[mask] != reference).mean()) for f in shifted.completed])
    assert np.all(np.diff(np.array(shares), axis=0) >= 0) and np.all(np.array(shares[-1]) > np.array(shares[0]))
    frame = categorical_focus_registry(4, n_sites=15, n_patients=600)
    frame["raised"] = frame["band"].map({"normal": 0.0, "raised": 1.0, "high": 1.0})
    binary = write_registry(tmp_path / "binary", frame, predictors=["age", "severity", "raised"], focus="raised")
    result = run_sensitivity(binary, SensitivitySettings(families=("delta-global",), deltas_log_odds=(-1.0, 1.0),
                                                         bisection_steps=0, **FAST), workers=1, joint_fitter=None)
    assert result.delta_scale == "log odds" and (result.scenarios["status"] == "ok").all()
    assert list(result.scenarios["scenario"]) == ["delta-global:-1logodds", "delta-global:+1logodds"]


@pytest.fixture(scope="module")
def delta_result(registry, imputation):
    settings = SensitivitySettings(families=("delta-global", "delta-cluster"), deltas_log_odds=(-2.0, -1.0, 1.0, 2.0),
                                   bisection_steps=2, relevant_difference=1.1, **FAST)
    return run_sensitivity(registry, settings, workers=1, joint_fitter=None, primary_imputation=imputation)


def test_SENS_CAT_004_run_with_a_categorical_focus(delta_result, tmp_path):
    """SENS-CAT-004: scenarios on the log-odds grid, all ran; both band terms are judged and curved; tipping points
    carry odds ratios e^delta; the narrative says what delta means in plain words; the artifact round-trips."""
    from hmlib.figures.sensitivity import tipping_point_curve

    result = delta_result
    assert result.delta_scale == "log odds" and result.focus_terms == ["band[normal]", "band[raised]"]
    assert (result.scenarios["status"] == "ok").all() and len(result.scenarios) == 8
    assert set(result.delta_curve["term"]) == set(result.focus_terms)
    table = result.tipping_table()
    found = table.loc[table["found"]]
    assert np.allclose(found["odds_ratio"], np.exp(found["delta_sd"]))
    text = " ".join(result.narrative())
    assert "patients whose band was not recorded are assumed to have e^delta = 2 times the odds of each band " \
           "other than 'high' (against 'high')" in text
    assert "MNAR (the same shift in every cluster)" in text
    assert result.verdict().startswith(("robust", "not robust", "incomplete"))
    artifact = result.to_artifact()
    artifact.write(tmp_path)
    back = SensitivityArtifact.read(tmp_path)
    assert back == artifact and back.delta_scale == "log odds"
    assert [f.family for f in back.families_run if f.n_ok] == ["delta-global", "delta-cluster"]
    fig = tipping_point_curve(result)
    assert len(fig.axes[0].lines) >= 2
    # the caption says whose log odds are shifted: patients, or visits when the clusters are patients (#16)
    assert "unrecorded patients' log odds" in caption_of(fig)[1]
    visits = tipping_point_curve(dataclasses.replace(result, clusters_are_patients=True))
    assert "unrecorded visits' log odds" in caption_of(visits)[1] and "recorded visits like them" in caption_of(visits)[1]


# ---------------------------------------------------------------------------
# SENS-VERD
# ---------------------------------------------------------------------------
def test_SENS_VERD_001_a_family_that_did_not_run_cannot_support_the_verdict(registry, imputation, delta_result):
    """SENS-VERD-001: (a) MNAR families not requested: 'incomplete', 'no MNAR scenario ran', no MNAR sentence;
    (b) the prior family failing (no joint model) is named as not assessed; (c) a skipped family is named with its
    reason; only when every applicable family ran may the verdict say 'robust'."""
    no_mnar = run_sensitivity(registry, SensitivitySettings(families=("exclusion",), exclusion_thresholds=(0.9,),
                                                            **FAST),
                              workers=1, joint_fitter=None, primary_imputation=imputation)
    verdict = no_mnar.verdict()
    if not verdict.startswith("not robust"):
        assert verdict.startswith("incomplete") and "no MNAR scenario ran" in verdict
    assert "values missing not at random (same shift in every cluster) (not requested" in verdict
    assert not any(s.startswith("MNAR") for s in no_mnar.narrative())
    with_prior = run_sensitivity(registry, SensitivitySettings(families=("prior", "delta-global"),
                                                               deltas_log_odds=(-1.0, 1.0), bisection_steps=0, **FAST),
                                 workers=1, joint_fitter=None, primary_imputation=imputation)
    coverage = {c.family: c for c in with_prior.family_coverage()}
    assert coverage["prior"].status == "failed" and "joint model not built" in coverage["prior"].reason
    assert "the prior on the cluster SDs of the joint model (failed: not available: joint model not built)" \
        in with_prior.verdict()
    assert not with_prior.verdict().startswith("robust")
    skipped = dataclasses.replace(delta_result, skipped={"prior": "fast mode without step 4's posterior draws"})
    assert "(skipped: fast mode without step 4's posterior draws)" in skipped.verdict()
    assert not skipped.verdict().startswith("robust")
    assert any(s.startswith("Not run: the prior on the cluster SDs") for s in skipped.narrative())


def test_SENS_VERD_002_no_mnar_claim_when_every_delta_scenario_failed(delta_result, tmp_path):
    """SENS-VERD-002: every delta scenario failed: the verdict is 'incomplete' (or 'not robust' from others) and says
    no MNAR scenario ran; no narrative sentence starts 'MNAR'; the report's checklist item on MNAR names the failure
    and claims no tipping-point result."""
    from hmlib.report.checklist import checklist

    scenarios = delta_result.scenarios.copy()
    scenarios["status"] = "failed"
    scenarios["reason"] = "the sampler of the imputation model was not available"
    grid = delta_result.grid.copy()
    grid["status"] = "failed"
    broken = dataclasses.replace(delta_result, scenarios=scenarios, grid=grid,
                                 tipping={mode: {side: {**info, "found": False} for side, info in sides.items()}
                                          for mode, sides in delta_result.tipping.items()})
    verdict = broken.verdict()
    assert verdict.startswith("incomplete") and "no MNAR scenario ran" in verdict
    assert "robust: " not in verdict.split(":", 1)[0]
    assert not any(s.startswith("MNAR") or "changes the conclusion" in s and "delta" in s
                   for s in broken.narrative()[1:])
    items = checklist(_Evidence({"sensitivity": broken.to_artifact()}, focus="band"), pd.DataFrame())
    mnar = next(i for i in items if i.item == "Sensitivity to missing not at random")
    assert "No tipping point" not in mnar.text and "Not run: delta-global (failed" in mnar.text


class _Evidence:
    """The few fields of hmlib.report.evidence.ReportEvidence the checklist reads, for one artifact."""

    def __init__(self, artifacts: dict, focus: str):
        self._artifacts = artifacts
        self.focus = focus
        self.noun = "site"
        self.min_cell = 11
        self.estimates = pd.DataFrame()
        self.versions = {}
        self.hmlib_version = "test"
        self.python_version = "3.12"
        self.params = SimpleNamespace(predictors=("age", "severity", "band"), cluster_covariates=(), fast=True,
                                      outcome="outcome", focus=focus, seed=1)

    def __getitem__(self, key):
        return self._artifacts.get(key)



def test_SENS_CAT_005_delta_truth_study_tiny():
    """SENS-CAT-005: 2 replicates of 900 patients whose band is missing not at random with log odds ratio 1: the
    delta-adjusted share of non-normal bands is nearer the registry's true share than the MAR one, which falls short."""
    from conftest import load_bench

    study = load_bench("categorical_delta_truth")
    out = study.run(2, n_sites=20, n_patients=900, m=3, iterations=3, verbose=False)
    mar, adjusted = out["summary"]["mar"]["share not normal"], out["summary"]["delta_true"]["share not normal"]
    assert mar["relative_bias"] < -0.05 and abs(adjusted["relative_bias"]) < abs(mar["relative_bias"]) / 2
    assert set(out["summary"]["mar"]) == {"share not normal", "band[raised]", "band[high]"}


def test_SENS_CAT_006_key_message_in_odds_ratios():
    """SENS-CAT-006: robust and not-robust key messages give e^delta (2 times = log 2), no 'SD'."""
    from hmlib.report.evidence import ReportEvidence
    from hmlib.report.key_messages import key_messages

    settings = SimpleNamespace(plausible_log_odds=math.log(2.0), deltas_log_odds=(-2.0, -1.0, 1.0, 2.0),
                               plausible_delta_sd=0.5, deltas_sd=(-1.0, 1.0))

    def messages(verdict, tipping):
        sens = SimpleNamespace(verdict=verdict, delta_scale="log odds", settings=settings, tipping=tipping)
        ev = ReportEvidence(params=SimpleNamespace(cluster="site", focus="band"),
                            artifacts={"sensitivity": sens, "complete_case": None}, estimates=pd.DataFrame())
        return " ".join(key_messages(ev))

    robust = messages("robust: nothing changes", [SimpleNamespace(found=False, delta_sd=None)])
    assert "up to 7.4 times (the largest shift tried) higher or lower than MAR implies" in robust
    assert "odds of each unrecorded band category against the reference" in robust and " SD" not in robust
    fragile = messages("not robust: the global shift changes it",
                       [SimpleNamespace(found=True, delta_sd=-0.5), SimpleNamespace(found=True, delta_sd=1.5)])
    assert "are 1.6 times lower than MAR implies" in fragile and " SD" not in fragile
    assert "4.5" not in fragile          # e^1.5 lies beyond the plausible e^log(2) = 2: not named
