"""Step 5's verdict rule: a changed conclusion is judged by a clinically relevant difference and the uncertainty.

The rule (:func:`hmlib.stats.sensitivity.conclusion_change`, thresholds from
:mod:`hmlib.steps.sensitivity_rule`): (a) a significance flip with a move of at
least half the relevant difference R, (b) a move of at least R, (c) a
direction reversal with both intervals excluding 0. Checked on numbers and on
simulated registries whose focus is in kcal (:func:`hmlib.simulate.registries.calorie_registry`):
a null effect whose estimate moves by over 100% of itself (robust), a small
effect near the threshold, a large effect (robust) and a large MNAR shift
(changed). Each test names what it checks by a stable ID (``RULE-...``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from hmlib.data import load_registry
from hmlib.exceptions import ParamsError
from hmlib.params import load_params
from hmlib.simulate.registries import calorie_registry, graded_missingness_registry
from hmlib.stats.sensitivity import ChangeRule, conclusion_change
from hmlib.steps.sensitivity import SensitivityArtifact, run_sensitivity
from hmlib.steps.sensitivity_rule import resolve_conclusion_rule
from hmlib.steps.sensitivity_scenarios import SensitivitySettings

FAST = dict(m=3, iterations=3)
CHEAP = dict(families=("exclusion", "leave-out"), n_influential=3, bisection_steps=0, **FAST)


def calorie_params(folder, odds_ratio_per_sd: float, seed: int = 1, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    calorie_registry(seed, odds_ratio_per_sd=odds_ratio_per_sd).to_csv(folder / "registry.csv", index=False)
    spec = {"name": "cal", "data": "registry.csv", "cluster": "site", "outcome": "y", "outcome_family": "binomial",
            "predictors": ["age", "calories"], "focus": "calories", "seed": 5, "fast": True, **extra}
    (folder / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "params.yaml"


def focus_moves(result):
    """Focus rows of the grid with the absolute and relative move from the primary, by scenario."""
    prim = result.primary.set_index("term").loc[result.focus]
    g = result.grid.loc[(result.grid["term"] == result.focus) & (result.grid["status"] == "ok")].set_index("scenario")
    g["move"] = (g["estimate"] - prim.estimate).abs()
    g["relative"] = g["move"] / abs(prim.estimate)
    g["flip"] = ((g["ci_lower"] > 0) | (g["ci_upper"] < 0)) != ((prim.ci_lower > 0) | (prim.ci_upper < 0))
    return g


# ---------------------------------------------------------------------------
# The rule on numbers
# ---------------------------------------------------------------------------
def test_RULE_001_threshold_edges_and_negligible_flips():
    """RULE-001: a move just under R does not count, just over does; a significance flip counts only with a move of
    at least negligible_share * R; a reversal with both intervals excluding 0 counts whatever the size."""
    R = 0.2
    judge = ChangeRule(relevant_difference=R)
    assert judge(0.5 + 0.99 * R, 0.3, 1.0, 0.5, 0.2, 0.8) == ""
    assert judge(0.5 + 1.01 * R, 0.3, 1.0, 0.5, 0.2, 0.8).startswith("estimate moved by")
    # flip: reference excludes 0, scenario includes it
    assert judge(0.5 - 0.49 * R, -0.05, 0.9, 0.5, 0.05, 0.95) == ""
    assert judge(0.5 - 0.51 * R, -0.05, 0.9, 0.5, 0.05, 0.95) == "interval now includes 0"
    assert ChangeRule(relevant_difference=R, negligible_share=1.0)(0.5 - 0.51 * R, -0.05, 0.9, 0.5, 0.05, 0.95) == ""
    assert judge(-0.01, -0.02, -0.005, 0.01, 0.005, 0.02) == "estimate changed direction"
    # the case: 0.0002 -> 0.0007 per kcal (+250%), both intervals across 0, judged per 100 kcal
    # (R = log(1.25) / 100): no change; per SD of about 480 kcal (R = 0.00046) the same move is an odds ratio per SD
    # going from 1.10 to 1.40, which does count
    assert conclusion_change(0.0007, -0.001, 0.0024, 0.0002, -0.0015, 0.0019,
                             relevant_difference=math.log(1.25) / 100) == ""
    assert conclusion_change(0.0007, -0.001, 0.0024, 0.0002, -0.0015, 0.0019,
                             relevant_difference=math.log(1.25) / 480).startswith("estimate moved by")


def test_RULE_002_thresholds_on_the_reported_scale(tmp_path):
    """RULE-002: binomial: R = log(1.25) per reported unit (per SD by default, per effect_units when given);
    gaussian: R = 0.1 SD of the outcome per SD of the predictor; a categorical level per 1; a cluster SD on the
    link scale and judged by its move only; the intercept not judged; a params value replaces the default."""
    reg = load_registry(load_params(calorie_params(tmp_path / "a", 1.0)))
    sd = float(reg.frame["calories"].dropna().std())
    rule = resolve_conclusion_rule(reg, ["Intercept", "age", "calories", "sd(site)"], "calories")
    assert rule.source == "default" and rule.relevant_difference == 1.25
    assert rule.thresholds["calories"] == pytest.approx(math.log(1.25) / sd, rel=1e-12)
    assert rule.thresholds["sd(site)"] == pytest.approx(math.log(1.25))
    assert "Intercept" not in rule.thresholds and rule.change_rule("Intercept") is None
    assert rule.change_rule("sd(site)").use_null is False and rule.change_rule("calories").use_null is True
    assert f"per 1 SD ({sd:.3g}) of calories" in rule.text and "1.25 times larger or smaller" in rule.text

    per100 = load_registry(load_params(calorie_params(tmp_path / "b", 1.0, sensitivity={"relevant_difference": 1.5},
                                                      effect_units={"calories": {"per": 100, "unit": "kcal"}})))
    rule = resolve_conclusion_rule(per100, ["calories"], "calories", per100.params.sensitivity.relevant_difference)
    assert rule.source == "params" and rule.thresholds["calories"] == pytest.approx(math.log(1.5) / 100, rel=1e-12)
    assert "per 100 kcal of calories" in rule.text and "sensitivity.relevant_difference" in rule.text

    folder = tmp_path / "g"
    folder.mkdir()
    graded_missingness_registry(0).to_csv(folder / "r.csv", index=False)
    (folder / "p.yaml").write_text(yaml.safe_dump({
        "name": "g", "data": "r.csv", "cluster": "site", "outcome": "y", "outcome_family": "gaussian",
        "predictors": ["age", "x", "site_type"], "focus": "x", "fast": True}))
    g = load_registry(load_params(folder / "p.yaml"))
    rule = resolve_conclusion_rule(g, ["Intercept", "age", "x", "site_type[B]", "sd(site)"], "x")
    y_sd, x_sd = float(g.frame["y"].std()), float(g.frame["x"].dropna().std())
    assert rule.scale == "difference" and rule.outcome_sd == pytest.approx(y_sd)
    assert rule.thresholds["x"] == pytest.approx(0.1 * y_sd / x_sd, rel=1e-12)
    assert rule.thresholds["site_type[B]"] == pytest.approx(0.1 * y_sd, rel=1e-12)


@pytest.mark.parametrize("family, value, message", [
    ("binomial", 0.8, "must be > 1.*give its inverse \\(1.25\\)"),
    ("binomial", 1.0, "must be > 1"),
    ("binomial", "big", "must be a number"),
    ("binomial", True, "must be a number"),
    ("binomial", float("inf"), "must be a number"),
    ("gaussian", -2, "must be > 0"),
    ("gaussian", 0, "must be > 0"),
])
def test_RULE_003_bad_relevant_difference_is_a_clear_params_error(tmp_path, family, value, message):
    """RULE-003: sensitivity.relevant_difference is checked when the params are read, naming the key and the fix
    (an odds-ratio ratio > 1 for a binary outcome, a positive difference for a continuous one)."""
    path = calorie_params(tmp_path, 1.0, sensitivity={"relevant_difference": value}, outcome_family=family)
    with pytest.raises(ParamsError, match=f"sensitivity.relevant_difference.*{message}"):
        load_params(path)


def test_RULE_004_unknown_sensitivity_key_is_refused(tmp_path, monkeypatch):
    """RULE-004: an unknown key under 'sensitivity' is an error that lists the allowed keys; a bad value given to
    run_sensitivity directly is refused before the primary imputation starts."""
    with pytest.raises(ParamsError, match="unknown key 'sensitivity.relevant_diff'.*relevant_difference"):
        load_params(calorie_params(tmp_path, 1.0, sensitivity={"relevant_diff": 1.3}))
    reg = load_registry(load_params(calorie_params(tmp_path, 1.0)))
    from hmlib.steps import sensitivity as step5

    def no_imputation(*args, **kwargs):
        raise AssertionError("the primary imputation started before the settings were checked")

    monkeypatch.setattr(step5, "impute_registry", no_imputation)
    with pytest.raises(ParamsError, match="must be > 1"):
        run_sensitivity(reg, SensitivitySettings(relevant_difference=0.9, **CHEAP), workers=1, joint_fitter=None)


def test_RULE_CAT_001_each_level_of_a_categorical_focus_has_unit_1_on_the_log_odds_ratio_scale(tmp_path):
    """RULE-CAT-001: a categorical focus (three-level band): every non-reference level is judged against its reference
    level with R = log(1.25) (unit 1, no SD scaling), the numeric predictors per their SD; judge_value with the rule of
    several terms reports the first level whose conclusion changes, and a tiny move of every level changes none."""
    from hmlib.simulate.categorical_focus import categorical_focus_registry
    from hmlib.stats.sensitivity import judge_value
    from hmlib.steps.sensitivity_focus import focus_terms

    frame = categorical_focus_registry(3, n_sites=12, n_patients=300)
    frame.to_csv(tmp_path / "registry.csv", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "name": "cat", "data": "registry.csv", "cluster": "site", "outcome": "outcome", "outcome_family": "binomial",
        "predictors": ["age", "severity", "band"], "focus": "band", "seed": 1, "fast": True}))
    reg = load_registry(load_params(tmp_path / "params.yaml"))
    terms = focus_terms(reg)
    rule = resolve_conclusion_rule(reg, ["Intercept", *terms, "age", "severity", "sd(site)"], terms)
    assert len(terms) == 2 and rule.focus_term == terms[0]
    assert all(rule.thresholds[t] == pytest.approx(math.log(1.25)) for t in terms)
    assert rule.thresholds["age"] == pytest.approx(math.log(1.25) / frame["age"].std(ddof=1))
    assert "Intercept" not in rule.thresholds
    assert "any level of band" in rule.text and "for each level of band against its reference level" in rule.text
    judges = rule.focus_rule(terms)
    assert set(judges) == set(terms) and rule.focus_rule(terms[:1]) == rule.change_rule(terms[0])
    reference = {t: {"estimate": 0.5, "ci_lower": 0.1, "ci_upper": 0.9} for t in terms}
    small = {t: (0.5 + 0.9 * math.log(1.25), 0.3, 1.2) for t in terms}
    assert judge_value(small, reference, judges)["change"] == ""
    second = {terms[0]: small[terms[0]], terms[1]: (0.5 + 1.1 * math.log(1.25), 0.4, 1.3)}
    point = judge_value(second, reference, judges)
    assert point["term"] == terms[1] and point["change"].startswith(f"{terms[1]}: estimate moved by")


# ---------------------------------------------------------------------------
# Simulated registries
# ---------------------------------------------------------------------------
def test_RULE_NULL_001_null_effect_is_robust_despite_large_relative_moves(tmp_path):
    """RULE-NULL-001: no effect of calories (OR 1 per SD): the estimate per kcal is about 0 and the scenarios move it
    by well over 100% of itself (the old relative rule called that 'not robust'), all within a small share of the
    relevant difference and with intervals far across 0: no scenario changes the conclusion (the verdict says so
    with the relevant difference; 'incomplete', not 'robust', only because the other families were not requested)."""
    reg = load_registry(load_params(calorie_params(tmp_path, 1.0)))
    settings = SensitivitySettings(families=("exclusion", "leave-out", "delta-global"), deltas_sd=(-1, -0.5, 0.5, 1),
                                   n_influential=3, bisection_steps=0, **FAST)
    result = run_sensitivity(reg, settings, workers=1, joint_fitter=None)
    moves = focus_moves(result)
    assert len(moves) == 10 and moves["relative"].max() > 1.0          # 229% in exclude-missing>20%
    assert (moves["move"] < 0.5 * result.rule.focus_threshold).all()
    assert not moves["changed_conclusion"].any()
    verdict = result.verdict()
    assert verdict.startswith("incomplete: ") and "No scenario that ran changes the conclusion" in verdict
    assert "clinically relevant difference of an odds ratio 1.25 times larger or smaller per 1 SD" in verdict


def test_RULE_SMALL_001_small_effect_near_the_threshold(tmp_path):
    """RULE-SMALL-001: a small effect (OR 1.3 per SD) whose interval barely excludes 0: leaving out one site tips the
    interval across 0 with a negligible move (no change by default: the verdict is not 'not robust'); the same scenario counts once R is small enough
    for its move to reach R/2; and a scenario moving by m is changed at R = 0.98 m and unchanged at R = 1.02 m."""
    reg = load_registry(load_params(calorie_params(tmp_path / "d", 1.3)))
    default = run_sensitivity(reg, SensitivitySettings(**CHEAP), workers=1, joint_fitter=None)
    moves = focus_moves(default)
    per = default.rule.link_difference / default.rule.focus_threshold          # the SD of calories
    flips = moves.loc[moves["flip"]]
    assert len(flips) and not flips["changed_conclusion"].any()
    assert default.verdict().startswith("incomplete: ")          # only exclusion and leave-out were requested

    tipped = flips.index[0]
    small_R = 1.5 * float(flips.loc[tipped, "move"])                           # move >= R/2
    strict = run_sensitivity(reg, SensitivitySettings(relevant_difference=math.exp(small_R * per), **CHEAP),
                             workers=1, joint_fitter=None)
    assert focus_moves(strict).loc[tipped, "change_reason"] == "interval now includes 0"

    steady = moves.loc[~moves["flip"]]
    name, m = steady["move"].idxmax(), float(steady["move"].max())
    below = run_sensitivity(reg, SensitivitySettings(relevant_difference=math.exp(0.98 * m * per), **CHEAP),
                            workers=1, joint_fitter=None)
    above = run_sensitivity(reg, SensitivitySettings(relevant_difference=math.exp(1.02 * m * per), **CHEAP),
                            workers=1, joint_fitter=None)
    assert focus_moves(below).loc[name, "change_reason"].startswith("estimate moved by")
    assert not focus_moves(above).loc[name, "changed_conclusion"]


def test_RULE_LARGE_001_large_effect_robust_and_large_shift_changes(tmp_path):
    """RULE-LARGE-001: a large effect (OR 2.5 per SD): exclusions, leave-outs and MNAR shifts up to 1 SD move it by
    less than R (verdict not 'not robust'; the rule and threshold recorded in the artifact); a 3-SD MNAR shift moves it by
    about 3 R and changes the conclusion, and the tipping point lies between 1 and 3 SD."""
    reg = load_registry(load_params(calorie_params(tmp_path, 2.5)))
    settings = SensitivitySettings(families=("exclusion", "leave-out", "delta-global"),
                                   deltas_sd=(-3, -1, -0.5, 0.5, 1, 3), n_influential=3, bisection_steps=2, **FAST)
    result = run_sensitivity(reg, settings, workers=1, joint_fitter=None)
    moves = focus_moves(result)
    R = result.rule.focus_threshold
    small = moves.loc[~moves.index.isin(["delta-global:-3sd", "delta-global:+3sd"])]
    assert (small["move"] < R).all() and not small["changed_conclusion"].any()
    for name in ("delta-global:-3sd", "delta-global:+3sd"):
        assert moves.loc[name, "move"] > 2 * R
        assert moves.loc[name, "change_reason"].startswith("estimate moved by")
    # tipping beyond the plausible 0.5 SD; 'incomplete' only because the other families were not requested
    assert result.verdict().startswith("incomplete: ")
    for side in ("positive", "negative"):
        tip = result.tipping["global"][side]
        assert tip["found"] and 1 < abs(tip["delta_sd"]) <= 3
    artifact = SensitivityArtifact.from_json(result.to_artifact().to_json())
    assert artifact.conclusion_rule.thresholds["calories"] == pytest.approx(R)
    assert artifact.conclusion_rule.relevant_difference == 1.25 and artifact.conclusion_rule.source == "default"
    assert "clinically relevant difference" in artifact.conclusion_rule.text
    assert np.isclose(artifact.conclusion_rule.link_difference, math.log(1.25))


def test_RULE_IND_001_missing_indicator_vs_primary_is_reported_not_counted(tmp_path):
    """RULE-IND-001: the missing-indicator model is biased by design, so its move away from the primary (here made
    to count, R tiny) is named in the verdict as not counted, never as what the conclusion depends on."""
    reg = load_registry(load_params(calorie_params(tmp_path, 2.5)))
    result = run_sensitivity(reg, SensitivitySettings(families=("indicator",), relevant_difference=1.0001, **FAST),
                             workers=1, joint_fitter=None)
    table = result.scenarios.set_index("scenario")
    assert table.loc["indicator:common", "changed_conclusion"]
    verdict = result.verdict()
    assert "Not counted: the missing-indicator model (biased by design)" in verdict
    assert "instead of multiple imputation" not in verdict
    assert verdict.startswith("not robust") == bool(table.loc["indicator:partially-pooled", "changed_conclusion"])
