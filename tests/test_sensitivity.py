"""Step 5 (sensitivity): delta adjustment, tipping points, exclusions, failures, parallel == serial.

Small simulated registries and m = 3 imputations keep the whole file fast.
Each test names the behaviour it checks by a stable ID (``SENS-...``).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hmlib.data import load_registry
from hmlib.exceptions import ArtifactError, ParamsError
from hmlib.params import load_params
from hmlib.results import ESTIMATE_COLUMNS, read_estimates, update_estimates
from hmlib.simulate.registries import graded_missingness_registry, small_registry
from hmlib.stats.imputation import impute, residual_variance_check
from hmlib.stats.pooling import analyse_imputations
from hmlib.stats.sensitivity import ChangeRule, cluster_deltas, conclusion_change, find_tipping_point, shift_imputed
from hmlib.steps import sensitivity as step5
from hmlib.steps.base import StepContext
from hmlib.steps.imputation import impute_by_stratum, impute_registry
from hmlib.steps.sensitivity import SensitivityArtifact, residual_variance_choice, run_sensitivity
from hmlib.steps.sensitivity_scenarios import SensitivitySettings, best_documented_clusters

#: Missing focus values per cluster (of 30): shares 0, .1, ..., .8 and 0.
MISSING_PER_CLUSTER = [0, 3, 6, 9, 12, 15, 18, 21, 24, 0]
PER_CLUSTER = 30
FAST = dict(m=3, iterations=3)


def gaussian_frame(seed: int, *, small_cluster: bool = False) -> pd.DataFrame:
    """Ten clusters of 30 with exactly MISSING_PER_CLUSTER missing x (z flags them), gaussian y;
    with ``small_cluster`` an eleventh cluster of 6 whose x is never recorded."""
    return graded_missingness_registry(seed, missing_per_cluster=MISSING_PER_CLUSTER, per_cluster=PER_CLUSTER,
                                       small_cluster=small_cluster)


def write_registry(folder, frame: pd.DataFrame, **params):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "registry.csv", index=False)
    spec = {"name": "sens", "data": "registry.csv", "cluster": "site", "outcome": "y", "outcome_family": "gaussian",
            "predictors": ["age", "x", "z"], "cluster_covariates": ["site_type"], "focus": "x", "seed": 11,
            "fast": True, "privacy": {"min_cell": 11}}
    spec.update(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_registry(load_params(folder / "params.yaml"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return write_registry(tmp_path_factory.mktemp("gauss"), gaussian_frame(0))


def fake_joint_fitter(registry, *, priors, seed, fast=None):
    """Stands in for the joint model: its focus estimate encodes the prior it was given."""
    family, *args = priors["cluster_sd"]
    scale = args[-1]
    focus = 0.9 if family == "halfnormal" else 3.0       # the heavy-tailed prior "changes" the conclusion
    p = registry.params
    terms = ["Intercept", "age", p.focus, "z", f"sd({p.cluster})"]
    return pd.DataFrame({"method": "joint_bayes", "term": terms, "estimate": [1.0, 0.03, focus, 0.1, scale],
                         "std_error": 0.1, "ci_lower": [0.8, 0.01, focus - 0.2, -0.1, scale / 2],
                         "ci_upper": [1.2, 0.05, focus + 0.2, 0.3, scale * 2],
                         "n_patients": registry.n_patients, "n_clusters": registry.n_clusters})


def failing_joint_fitter(registry, *, priors, seed, fast=None):
    raise RuntimeError("sampler exploded")


def rows_of(result, scenario: str) -> pd.DataFrame:
    return result.grid.loc[result.grid["scenario"] == scenario].set_index("term")


# ---------------------------------------------------------------------------
# Delta adjustment
# ---------------------------------------------------------------------------
def test_SENS_DELTA_001_only_imputed_cells_move_by_exactly_delta(registry):
    """SENS-DELTA-001: shift_imputed moves exactly the imputed focus cells, by exactly their delta; nothing else."""
    imputation = impute_registry(registry, method="multilevel", **FAST)
    before = [f.copy() for f in imputation.completed]
    shift = np.linspace(-1, 2, registry.n_patients)
    shifted = shift_imputed(imputation, "x", shift)
    mask = imputation.imputed_mask["x"].to_numpy()
    assert mask.sum() == sum(MISSING_PER_CLUSTER)
    for orig, new, kept in zip(imputation.completed, shifted.completed, before):
        pd.testing.assert_frame_equal(orig, kept)                                   # input result untouched
        x0, x1 = orig["x"].to_numpy(), new["x"].to_numpy()
        np.testing.assert_array_equal(x1[~mask], x0[~mask])                         # observed cells untouched
        np.testing.assert_array_equal(x1[mask], x0[mask] + shift[mask])             # imputed: + delta exactly
        pd.testing.assert_frame_equal(new.drop(columns="x"), orig.drop(columns="x"))
    assert shifted.imputed_mask is imputation.imputed_mask


def test_SENS_DELTA_002_linear_model_shift_is_exact(registry):
    """SENS-DELTA-002: with z = 1{x imputed} in a gaussian model, shifting imputed x by d leaves b_x and its SE
    unchanged and moves b_z by exactly -d * b_x (same column space: x + d z), pooled over imputations."""
    settings = SensitivitySettings(families=("delta-global",), deltas_sd=(-0.5, 0.5), bisection_steps=0, **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    prim = result.primary.set_index("term")
    for name, d_sd in (("delta-global:-0.5sd", -0.5), ("delta-global:+0.5sd", 0.5)):
        rows = rows_of(result, name)
        d = d_sd * result.observed_sd
        assert result.scenarios.set_index("scenario").loc[name, "delta_units"] == pytest.approx(d)
        assert rows.loc["x", "estimate"] == pytest.approx(prim.loc["x", "estimate"], abs=1e-6)
        assert rows.loc["x", "std_error"] == pytest.approx(prim.loc["x", "std_error"], rel=1e-5)
        assert rows.loc["z", "estimate"] == pytest.approx(prim.loc["z", "estimate"] - d * prim.loc["x", "estimate"],
                                                          abs=1e-6)
        assert abs(d * prim.loc["x", "estimate"]) > 0.1                            # the shift is not trivial
    observed = registry.frame["x"].dropna()
    assert result.observed_sd == pytest.approx(observed.std(ddof=1))


def test_SENS_DELTA_003_cluster_specific_deltas(registry):
    """SENS-DELTA-003: delta_j = delta * s_j / s_bar (s_bar over imputed cells): mean imputed shift = delta,
    clusters without missing values 0, ratio between clusters = ratio of missing shares; global = constant."""
    frame = registry.frame
    per_cluster = cluster_deltas(frame, "site", "x", 0.7, mode="cluster")
    shares = {f"C{j}": k / PER_CLUSTER for j, k in enumerate(MISSING_PER_CLUSTER)}
    s_bar = sum(k * (k / PER_CLUSTER) for k in MISSING_PER_CLUSTER) / sum(MISSING_PER_CLUSTER)
    for label, share in shares.items():
        assert per_cluster[label] == pytest.approx(0.7 * share / s_bar)
    shift_of_imputed = frame.loc[frame["x"].isna(), "site"].map(per_cluster)
    assert shift_of_imputed.mean() == pytest.approx(0.7)
    assert (cluster_deltas(frame, "site", "x", 0.7, mode="global") == 0.7).all()
    with pytest.raises(ValueError, match="mode"):
        cluster_deltas(frame, "site", "x", 0.7, mode="cluster-ish")


# ---------------------------------------------------------------------------
# Tipping point
# ---------------------------------------------------------------------------
def test_SENS_TIP_001_found_where_it_is_constructed_case():
    """SENS-TIP-001: estimate 0.5 - 0.5 d, CI +/-0.35, relevant difference 0.25: the CI reaches 0 at d = 0.3 with a
    move of 0.15 (over half the relevant difference; positive side); on the negative side the estimate has moved by
    the relevant difference at d = -0.5. Grid 0.25 steps, then 6 bisections."""
    def line(d):
        return 0.5 - 0.5 * d, 0.15 - 0.5 * d, 0.85 - 0.5 * d

    reference = dict(zip(["estimate", "ci_lower", "ci_upper"], line(0.0)))
    calls = []
    tp = find_tipping_point(lambda d: calls.append(d) or line(d), [-1, -0.75, -0.5, -0.25, 0.25, 0.5, 0.75, 1],
                            reference, ChangeRule(relevant_difference=0.25), bisection_steps=6, scale=2.0)
    pos, neg = tp["positive"], tp["negative"]
    assert pos["found"] and pos["change"] == "interval now includes 0"
    assert 0.3 <= pos["delta_sd"] <= 0.3 + 0.25 / 2 ** 6                        # within the final bracket
    assert pos["bracket_sd"][0] < 0.3 <= pos["bracket_sd"][1]
    assert pos["delta_units"] == pytest.approx(2 * pos["delta_sd"])
    assert neg["found"] and neg["delta_sd"] == pytest.approx(-0.5) and neg["change"] == \
        "estimate moved by 0.25 (relevant difference 0.25)"
    # nothing is found when the conclusion never changes on the grid
    flat = find_tipping_point(lambda d: (1.0, 0.5, 1.5), [-1, 1], {"estimate": 1.0, "ci_lower": 0.5, "ci_upper": 1.5},
                              ChangeRule(relevant_difference=0.25))
    assert not flat["positive"]["found"] and not flat["negative"]["found"]
    assert 0.0 not in calls


def test_SENS_TIP_002_pipeline_tipping_point_matches_direct_evaluation(registry):
    """SENS-TIP-002: run_sensitivity's tipping point (grid in 2 workers-worth of tasks, then bisection) agrees with
    shifting the same imputations directly: changed at the reported delta, unchanged at the bracket's lower end."""
    p = registry.params
    imputation = impute_registry(registry, method="multilevel", **FAST)
    settings = SensitivitySettings(families=("delta-cluster",), deltas_sd=(-2, -1, 1, 2), relevant_difference=0.01,
                                   bisection_steps=4, **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None, primary_imputation=imputation)
    prim = result.primary.set_index("term").loc["x"]

    def direct(delta_sd):
        per = cluster_deltas(registry.frame, "site", "x", delta_sd * result.observed_sd, mode="cluster")
        shifted = shift_imputed(imputation, "x", registry.frame["site"].map(per).to_numpy(dtype=float))
        row = analyse_imputations(shifted, outcome=p.outcome, predictors=p.predictors, cluster=p.cluster,
                                  family=p.outcome_family).term("x")
        return conclusion_change(row["estimate"], row["ci_lower"], row["ci_upper"], prim.estimate, prim.ci_lower,
                                 prim.ci_upper, relevant_difference=result.rule.focus_threshold), row["estimate"]

    found = [info for info in result.tipping["cluster"].values() if info["found"]]
    assert found, "the constructed case must tip within +/-2 SD at a relevant difference of 0.01"
    for info in found:
        why, estimate = direct(info["delta_sd"])
        assert why and why == info["change"] and estimate == pytest.approx(info["estimate"], rel=1e-9)
        lo, hi = info["bracket_sd"]
        assert not direct(lo)[0] or lo == 0
        assert abs(hi - lo) == pytest.approx(1 / 2 ** 4)                            # grid step 1, 4 halvings
        assert info["delta_units"] == pytest.approx(info["delta_sd"] * result.observed_sd)
    curve = result.delta_curve
    assert set(curve["source"]) == {"primary", "grid", "bisection"}
    assert curve.loc[curve["source"] == "primary", "estimate"].iloc[0] == prim.estimate


# ---------------------------------------------------------------------------
# Exclusions, failures, privacy
# ---------------------------------------------------------------------------
def test_SENS_EXCL_001_exclusions_remove_exactly_the_right_clusters(registry):
    """SENS-EXCL-001: 'missing share > t' drops exactly the clusters above t (0.6 itself is kept), re-runs the
    analysis on the rest (equal to imputing and analysing that subset directly), and 0.2 fails (4 clusters left)."""
    settings = SensitivitySettings(families=("exclusion",), exclusion_thresholds=(0.2, 0.4, 0.6), **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    table = result.scenarios.set_index("scenario")
    for t in (0.2, 0.4, 0.6):
        expected = [f"C{j}" for j, k in enumerate(MISSING_PER_CLUSTER) if k > round(t * PER_CLUSTER)]
        row = table.loc[f"exclude-missing>{t:.0%}"]
        assert row["excluded_clusters"] == expected
        assert row["n_clusters_excluded"] == len(expected)
        assert row["n_patients_excluded"] == PER_CLUSTER * len(expected)
    assert table.loc["exclude-missing>60%", "excluded_clusters"] == ["C7", "C8"]
    assert table.loc["exclude-missing>20%", "status"] == "failed"
    assert "only 4 cluster(s) left" in table.loc["exclude-missing>20%", "reason"]
    rows = rows_of(result, "exclude-missing>40%")
    assert (rows["n_clusters"] == 6).all() and (rows["n_patients"] == 180).all()
    keep = ~registry.frame["site"].isin(["C5", "C6", "C7", "C8"]).to_numpy()
    subset = dataclasses.replace(registry, frame=registry.frame.loc[keep].reset_index(drop=True))
    direct = analyse_imputations(impute_registry(subset, method="multilevel", **FAST), outcome="y",
                                 predictors=["age", "x", "z"], cluster="site", family="gaussian").to_frame()
    np.testing.assert_allclose(rows.loc[direct["term"], "estimate"], direct["estimate"], rtol=1e-12)


def test_SENS_FAIL_001_failed_scenarios_are_kept_with_reasons(registry, tmp_path):
    """SENS-FAIL-001: no joint model -> 'not available: joint model not built'; a raising fitter -> its message;
    a one-cluster stratum -> the reason; failed scenarios stay in the grid and verdict, not in estimates.csv."""
    settings = SensitivitySettings(families=("prior",), **FAST)
    missing = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    assert (missing.scenarios["status"] == "failed").all() and len(missing.scenarios) == 4
    assert set(missing.scenarios["reason"]) == {"not available: joint model not built"}
    assert "4 scenario(s) failed" in missing.verdict()
    assert missing.estimate_rows().empty
    raising = run_sensitivity(registry, settings, workers=1, joint_fitter=failing_joint_fitter)
    assert set(raising.scenarios["reason"]) == {"RuntimeError: sampler exploded"}
    frame = gaussian_frame(0)
    frame.loc[frame["site"] == "C1", "site_type"] = "C"                          # a type with one cluster
    lonely = write_registry(tmp_path / "lonely", frame)
    strat = run_sensitivity(lonely, SensitivitySettings(families=("stratified",), **FAST), workers=1,
                            joint_fitter=None)
    row = strat.scenarios.iloc[0]
    assert row["status"] == "failed" and "'C' has 1 cluster" in row["reason"]
    assert any("failed" in s for s in strat.narrative())


def test_SENS_PRIV_001_small_exclusions_are_suppressed(tmp_path):
    """SENS-PRIV-001: excluding a 6-patient cluster (min_cell 11): its count and the scenario's analysed count are
    suppressed in the table, estimates.csv and the artifact; so is a larger exclusion that includes that cluster
    (66 patients: the other clusters' sizes are shown in step 1, so the sum would give its size back,
    PRIV-CROSS-001); larger exclusions of shown clusters are shown."""
    reg = write_registry(tmp_path / "small", gaussian_frame(1, small_cluster=True))
    settings = SensitivitySettings(families=("exclusion",), exclusion_thresholds=(0.9, 0.6), **FAST)
    result = run_sensitivity(reg, settings, workers=1, joint_fitter=None)
    table = result.scenario_table().set_index("scenario")
    assert result.scenarios.set_index("scenario").loc["exclude-missing>90%", "excluded_clusters"] == ["C10"]
    assert table.loc["exclude-missing>90%", "n_patients_excluded"] == "suppressed"
    assert table.loc["exclude-missing>90%", "n_patients"] == "suppressed"
    assert "C10" in result.scenarios.set_index("scenario").loc["exclude-missing>60%", "excluded_clusters"]
    assert table.loc["exclude-missing>60%", "n_patients_excluded"] == "suppressed"
    est = result.estimate_rows()
    assert est.loc[est["method"] == "sensitivity:exclude-missing>90%", "n_patients"].isna().all()
    assert est.loc[est["method"] == "sensitivity:exclude-missing>60%", "n_patients"].isna().all()
    plain = run_sensitivity(write_registry(tmp_path / "plain", gaussian_frame(1)), settings, workers=1,
                            joint_fitter=None)
    shown = plain.scenario_table().set_index("scenario")["n_patients_excluded"]
    assert any(isinstance(v, (int, np.integer)) and v >= 11 for v in shown), shown
    assert plain.estimate_rows()["n_patients"].notna().any()
    path = result.to_artifact().write(tmp_path)
    payload = json.loads(path.read_text())["record"]
    scen = {r["scenario"]: r for r in payload["scenarios"]}
    assert scen["exclude-missing>90%"]["n_patients_excluded"] == "suppressed"
    assert all(r["n_patients"] is None for r in payload["grid"] if r["scenario"] == "exclude-missing>90%")


# ---------------------------------------------------------------------------
# Priors, indicator models, strata, influence
# ---------------------------------------------------------------------------
def test_SENS_PRIOR_001_injected_joint_fitter_and_references(registry):
    """SENS-PRIOR-001: each prior reaches the fitter (half-Cauchy = half-Student-t(1)); the default prior is compared
    with the primary, the others with the default prior; the verdict attributes a change to the prior."""
    result = run_sensitivity(registry, SensitivitySettings(families=("prior",), **FAST), workers=1,
                             joint_fitter=fake_joint_fitter)
    table = result.scenarios.set_index("scenario")
    assert table["reference"].to_dict() == {
        "prior:halfnormal(0.5)": "prior:halfnormal(1)", "prior:halfnormal(1)": "primary",
        "prior:halfnormal(2.5)": "prior:halfnormal(1)", "prior:halfcauchy(1)": "prior:halfnormal(1)"}
    for name, scale in (("prior:halfnormal(0.5)", 0.5), ("prior:halfnormal(2.5)", 2.5), ("prior:halfcauchy(1)", 1.0)):
        assert rows_of(result, name).loc["sd(site)", "estimate"] == scale
    assert not table.loc["prior:halfnormal(0.5)", "changed_conclusion"]
    assert table.loc["prior:halfcauchy(1)", "changed_conclusion"]
    assert table.loc["prior:halfcauchy(1)", "change_reason"].startswith("estimate moved by 2.1 (relevant difference")
    verdict = result.verdict()
    assert verdict.startswith("not robust") and "prior on the cluster SDs" in verdict and "halfcauchy(1)" in verdict
    # a step-4 fit with the reference prior is reused, not refitted
    step4 = fake_joint_fitter(registry, priors={"cluster_sd": ("halfnormal", 7.0)}, seed=0)
    reused = run_sensitivity(registry, SensitivitySettings(families=("prior",), **FAST), workers=1,
                             joint_fitter=fake_joint_fitter, joint_reference=step4)
    assert rows_of(reused, "prior:halfnormal(1)").loc["sd(site)", "estimate"] == 7.0
    assert rows_of(reused, "prior:halfnormal(2.5)").loc["sd(site)", "estimate"] == 2.5


def _step4_draws(registry, tau_draws):
    """PosteriorDraws of a pretend step-4 fit (halfnormal(1) on the cluster SDs) with the given tau draws."""
    from hmlib.stats.joint import PosteriorDraws

    rng = np.random.default_rng(8)
    p = registry.params
    shape = tau_draws.shape
    terms = {"Intercept": rng.normal(1.0, 0.1, shape), "age": rng.normal(0.03, 0.01, shape),
             p.focus: 0.9 + 0.2 * (tau_draws - tau_draws.mean()) + rng.normal(0, 0.05, shape),
             "z": rng.normal(0.1, 0.1, shape), f"sd({p.cluster})": tau_draws}
    return PosteriorDraws(terms=terms, cluster_sds={"outcome_cluster_sd": tau_draws},
                          cluster_sd_prior=("halfnormal", 1.0), converged=True, convergence_message="converged",
                          n_patients=registry.n_patients, n_clusters=registry.n_clusters)


def test_SENS_PRIOR_002_reweighted_from_step4_draws_refit_only_when_unreliable(registry):
    """SENS-PRIOR-002: with step 4's draws, the reference prior reuses them and the other priors reweight them
    (no fitter call: a fitter that raises is never reached), each saying its Pareto k; where the weights are
    unreliable (a broad posterior far into the new prior's tail) that prior alone is refitted."""
    rng = np.random.default_rng(2)
    tight = _step4_draws(registry, rng.gamma(100.0, 0.006, size=(2, 1000)))          # tau about 0.6, SD 0.06
    result = run_sensitivity(registry, SensitivitySettings(families=("prior",), **FAST), workers=1,
                             joint_fitter=failing_joint_fitter, joint_reference=tight)
    table = result.scenarios.set_index("scenario")
    assert (table["status"] == "ok").all()
    reference = rows_of(result, "prior:halfnormal(1)").loc["sd(site)", "estimate"]
    assert reference == pytest.approx(tight.terms["sd(site)"].mean(), rel=1e-12)
    assert rows_of(result, "prior:halfnormal(0.5)").loc["sd(site)", "estimate"] < reference
    assert rows_of(result, "prior:halfnormal(2.5)").loc["sd(site)", "estimate"] > reference
    notes = result.to_dict()["scenarios"]
    weighted = [s for s in notes if s["scenario"] != "prior:halfnormal(1)"]
    assert all("Pareto-smoothed importance sampling" in " ".join(s["notes"]) for s in weighted)
    assert table["joint_fit"].to_dict() == {"prior:halfnormal(0.5)": "importance reweighting",
                                            "prior:halfnormal(1)": "step 4 fit",
                                            "prior:halfnormal(2.5)": "importance reweighting",
                                            "prior:halfcauchy(1)": "importance reweighting"}

    broad = _step4_draws(registry, np.exp(rng.normal(np.log(2.0), 0.5, size=(2, 1000))))
    calls = []

    def counting_fitter(reg, *, priors, seed, fast=None):
        calls.append(priors["cluster_sd"])
        return fake_joint_fitter(reg, priors=priors, seed=seed, fast=fast)

    mixed = run_sensitivity(registry, SensitivitySettings(families=("prior",), **FAST), workers=1,
                            joint_fitter=counting_fitter, joint_reference=broad)
    from hmlib.stats.joint import reweight_cluster_sd_prior
    unreliable = [spec for spec in (("halfnormal", 0.5), ("halfnormal", 2.5), ("halfstudentt", 1.0, 1.0))
                  if not reweight_cluster_sd_prior(broad, spec).reliable]
    assert ("halfnormal", 2.5) in unreliable and sorted(calls) == sorted(unreliable)
    assert rows_of(mixed, "prior:halfnormal(2.5)").loc["sd(site)", "estimate"] == 2.5      # the refit's value
    refit_notes = next(s["notes"] for s in mixed.to_dict()["scenarios"] if s["scenario"] == "prior:halfnormal(2.5)")
    assert any("so refitted" in n for n in refit_notes)
    assert mixed.scenarios.set_index("scenario").loc["prior:halfnormal(2.5)", "joint_fit"] == "refit"
    without = run_sensitivity(registry, SensitivitySettings(families=("prior",), **FAST), workers=1,
                              joint_fitter=None, joint_reference=broad).scenarios.set_index("scenario")
    assert without.loc["prior:halfnormal(2.5)", "status"] == "failed"
    assert "cannot be reweighted" in without.loc["prior:halfnormal(2.5)", "reason"]
    assert without.loc["prior:halfnormal(1)", "status"] == "ok"


def test_SENS_IND_001_common_and_partially_pooled_indicator(tmp_path):
    """SENS-IND-001: 'common' equals complete_case's missing-indicator model; with indicator effects of +/-3 by
    cluster the partially pooled model carries the pooled between-cluster pattern (coefficient near 1)."""
    from hmlib.steps.complete_case import complete_case_check

    frame = gaussian_frame(2)
    frame.loc[frame["site"] == "C0", "x"] = np.where(np.arange(PER_CLUSTER) < 8, np.nan,
                                                     frame.loc[frame["site"] == "C0", "x"])
    unmeasured = frame["x"].isna().to_numpy()
    effect = np.where(frame["site"].str[1:].astype(int) % 2 == 0, 3.0, -3.0)
    frame["y"] = (frame["y"] + effect * unmeasured).round(3)
    reg = write_registry(tmp_path / "ind", frame, predictors=["age", "x"])
    result = run_sensitivity(reg, SensitivitySettings(families=("indicator",), **FAST), workers=1, joint_fitter=None)
    common = complete_case_check(reg).estimates.query("method == 'missing_indicator'").set_index("term")
    rows = rows_of(result, "indicator:common")
    np.testing.assert_allclose(rows.loc[common.index, "estimate"], common["estimate"], rtol=1e-12)
    pooled = rows_of(result, "indicator:partially-pooled")
    assert pooled.loc["x_missing:cluster", "estimate"] == pytest.approx(1.0, abs=0.3)
    assert pooled.loc["x_missing:cluster", "ci_lower"] > 0.5
    table = result.scenarios.set_index("scenario")
    assert table.loc["indicator:partially-pooled", "reference"] == "indicator:common"


def test_SENS_STRAT_001_imputation_within_cluster_type(tmp_path):
    """SENS-STRAT-001: imputing by cluster type = imputing each type's rows alone (its own seed), put back in row
    order; observed cells untouched, every missing cell filled."""
    frame = small_registry(seed=4)
    reg = write_registry(tmp_path / "strat", frame, outcome="died", outcome_family="binomial",
                         predictors=["age", "sex", "lab"], focus="lab")
    combined = impute_by_stratum(reg, "site_type", m=2, iterations=3, seed=5)
    roles = dict(cluster="site", outcome="died", outcome_family="binomial", predictors=["age", "sex", "lab"],
                 cluster_covariates=["site_type"], kinds=reg.kinds, levels=reg.levels)
    data = reg.frame
    mask = data["lab"].isna().to_numpy()
    assert 0 < mask.sum() < len(mask)
    for k, level in enumerate(["A", "B"]):
        rows = (data["site_type"] == level).to_numpy()
        seed = int(np.random.SeedSequence([5, k]).generate_state(1)[0])
        alone = impute(data.loc[rows], method="multilevel", m=2, iterations=3, seed=seed, **roles)
        for i in range(2):
            np.testing.assert_array_equal(combined.completed[i].loc[rows, "lab"].to_numpy(),
                                          alone.completed[i]["lab"].to_numpy())
    for completed in combined.completed:
        assert completed["lab"].notna().all()
        np.testing.assert_array_equal(completed["lab"].to_numpy()[~mask], data["lab"].to_numpy()[~mask])
        assert list(completed.index) == list(data.index)
    assert combined.imputed_mask["lab"].to_numpy().tolist() == mask.tolist()


def test_SENS_INFL_001_conclusion_resting_on_one_cluster_is_named(tmp_path):
    """SENS-INFL-001: x affects y only in the large, fully documented cluster BIG; leaving BIG out changes the
    conclusion and the verdict names it; the leave-out clusters are the best documented."""
    rng = np.random.default_rng(7)
    sizes = {"BIG": 150, **{f"S{j}": 20 for j in range(9)}}
    site = np.repeat(list(sizes), list(sizes.values()))
    x = rng.normal(0, 1, site.size)
    y = np.where(site == "BIG", 1.0, 0.0) * x + rng.normal(0, 1, site.size) + 0.3 * rng.normal(0, 1, 10)[
        pd.factorize(site)[0]]
    x = np.where((site != "BIG") & (rng.random(site.size) < 0.3), np.nan, x)
    frame = pd.DataFrame({"site": site, "age": rng.normal(50, 10, site.size).round(1), "x": x.round(3),
                          "y": y.round(3)})
    reg = write_registry(tmp_path / "infl", frame, predictors=["age", "x"], cluster_covariates=[])
    assert best_documented_clusters(reg.frame, "site", "x", 3)[0] == "BIG"
    result = run_sensitivity(reg, SensitivitySettings(families=("leave-out",), n_influential=3, **FAST), workers=1,
                             joint_fitter=None)
    table = result.scenarios.set_index("scenario")
    assert list(table.index) == [f"leave-out:{c}" for c in best_documented_clusters(reg.frame, "site", "x", 3)]
    assert table.loc["leave-out:BIG", "changed_conclusion"]
    assert not table.drop(index="leave-out:BIG")["changed_conclusion"].any()
    assert "single well-documented clusters (BIG)" in result.verdict()


# ---------------------------------------------------------------------------
# Execution, contract, figures
# ---------------------------------------------------------------------------
def test_SENS_PAR_001_parallel_equals_serial(registry):
    """SENS-PAR-001: 2 worker processes give the same grid, tipping points and delta curve as 1, for a seed."""
    # delta-cluster: with z = 1{x imputed} in the model a global shift cannot move b_x (SENS-DELTA-002)
    settings = SensitivitySettings(families=("exclusion", "prior", "indicator", "delta-cluster", "leave-out"),
                                   deltas_sd=(-1.0, 1.0), relevant_difference=1e-4, bisection_steps=2, n_influential=2,
                                   **FAST)
    serial = run_sensitivity(registry, settings, workers=1, joint_fitter=fake_joint_fitter)
    parallel = run_sensitivity(registry, settings, workers=2, joint_fitter=fake_joint_fitter)
    pd.testing.assert_frame_equal(serial.grid, parallel.grid, check_exact=True)
    pd.testing.assert_frame_equal(serial.delta_curve, parallel.delta_curve, check_exact=True)
    pd.testing.assert_frame_equal(serial.tipping_table(), parallel.tipping_table(), check_exact=True)
    timing = ["seconds", "cpu_seconds"]
    pd.testing.assert_frame_equal(serial.scenarios.drop(columns=timing),
                                  parallel.scenarios.drop(columns=timing), check_exact=True)
    assert serial.verdict() == parallel.verdict()
    assert (serial.delta_curve["source"] == "bisection").any()                     # the bisection ran in workers
    # failures travel back from the workers too: 4 clusters left at 20%; z duplicates the missing indicator
    assert serial.scenarios.loc[serial.scenarios["status"] == "failed", "scenario"].tolist() == [
        "exclude-missing>20%", "indicator:common", "indicator:partially-pooled"]


def test_SENS_EST_001_estimate_rows_follow_the_contract(registry, tmp_path):
    """SENS-EST-001: estimates.csv rows: contract columns, method 'sensitivity:<scenario>', ok scenarios only,
    every primary term per scenario; update_estimates replaces them as a block."""
    settings = SensitivitySettings(families=("exclusion", "delta-global", "prior"), deltas_sd=(0.5,),
                                   bisection_steps=0, **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    rows = result.estimate_rows()
    assert list(rows.columns) == list(ESTIMATE_COLUMNS)
    ok = result.scenarios.loc[result.scenarios["status"] == "ok", "scenario"]
    assert set(rows["method"]) == {f"sensitivity:{s}" for s in ok}
    for method, part in rows.groupby("method"):
        assert part["term"].tolist() == result.primary["term"].tolist()
    table = update_estimates(tmp_path / "estimates.csv", rows)
    assert len(read_estimates(tmp_path / "estimates.csv")) == len(table) == len(rows)
    assert "failed" not in " ".join(rows["method"])


def test_SENS_SET_001_settings_are_checked():
    """SENS-SET-001: unknown families, thresholds outside [0, 1), malformed priors and workers < 1 are refused."""
    with pytest.raises(ParamsError, match="unknown sensitivity families"):
        SensitivitySettings(families=("exclusion", "vibes"))
    with pytest.raises(ParamsError, match="shares"):
        SensitivitySettings(exclusion_thresholds=(1.2,))
    with pytest.raises(ParamsError, match="cluster-SD prior"):
        SensitivitySettings(cluster_sd_priors=(("uniform", 1.0),))
    with pytest.raises(ParamsError, match="workers"):
        run_sensitivity(None, workers=0)


def test_SENS_CONC_001_conclusion_change_rules():
    """SENS-CONC-001: the rule of hmlib.stats.sensitivity (module docstring): (a) a significance flip counts with a
    move of at least half the relevant difference R, (b) a move of at least R counts, (c) a direction reversal with
    both intervals excluding 0 counts; SD rows use (b) only."""
    rule = dict(relevant_difference=0.2)
    assert conclusion_change(0.5, -0.1, 1.1, 0.7, 0.1, 1.3, **rule) == "interval now includes 0"     # (a), move 0.2
    assert conclusion_change(0.7, 0.1, 1.3, 0.5, -0.1, 1.1, **rule) == "interval now excludes 0"
    assert conclusion_change(0.55, -0.05, 1.15, 0.6, 0.01, 1.2, **rule) == ""        # flip, move 0.05 < R/2
    assert conclusion_change(-0.5, -0.9, -0.1, 0.5, 0.1, 0.9, **rule) == "estimate changed direction"   # (c)
    assert conclusion_change(-0.02, -0.03, -0.01, 0.02, 0.01, 0.03, **rule) == "estimate changed direction"
    assert conclusion_change(0.8, 0.5, 1.1, 0.5, 0.2, 0.8, **rule) == "estimate moved by 0.3 (relevant difference 0.2)"
    assert conclusion_change(0.6, 0.3, 0.9, 0.5, 0.2, 0.8, **rule) == ""                            # move 0.1 < R
    assert conclusion_change(0.5, -0.1, 1.1, 0.7, 0.1, 1.3, **rule, use_null=False) == ""
    assert conclusion_change(0.5, 0.4, 0.6, 0.8, 0.7, 0.9, **rule, use_null=False).startswith("estimate moved")
    with pytest.raises(ValueError, match="relevant_difference"):
        conclusion_change(0.5, 0.4, 0.6, 0.8, 0.7, 0.9, relevant_difference=0.0)


def test_SENS_FIG_001_figures(registry):
    """SENS-FIG-001: heatmap (scenario x term, failed rows labelled), forest (one row per scenario, primary line),
    tipping curve (one panel per delta mode, tipping line drawn when found)."""
    from matplotlib.figure import Figure

    from hmlib.figures.sensitivity import scenario_forest, scenario_heatmap, tipping_point_curve

    settings = SensitivitySettings(families=("exclusion", "prior", "delta-global", "delta-cluster"),
                                   deltas_sd=(-1.0, 1.0), relevant_difference=1e-4, bisection_steps=1, **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    names = list(dict.fromkeys(result.grid["scenario"]))
    heat = scenario_heatmap(result)
    assert isinstance(heat, Figure)
    ax = heat.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert [t.get_text() for t in ax.get_xticklabels()] == result.primary["term"].tolist()
    assert sum(t.get_text() == "failed" for t in ax.texts) == 5                    # 4 priors + exclusion at 20%
    forest = scenario_forest(result)
    assert [t.get_text() for t in forest.axes[0].get_yticklabels()] == names
    assert any("not available" in t.get_text() for t in forest.axes[0].texts)
    curve = tipping_point_curve(result)
    panels = [a for a in curve.axes if a.get_xlabel().startswith("delta (SDs")]
    assert [a.get_title().split(": ")[1].split()[0] for a in panels] == ["same", "shift"]   # global, cluster
    for ax, mode in zip(panels, ["global", "cluster"]):
        n_found = sum(info["found"] for info in result.tipping[mode].values())
        assert len([ln for ln in ax.lines if ln.get_linestyle() == "--"]) == n_found
    assert sum(info["found"] for info in result.tipping["cluster"].values()) >= 1


# ---------------------------------------------------------------------------
# Artifact
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_result(registry):
    """A result with ok, failed and delta scenarios (exclusion at 20% fails; no joint model)."""
    settings = SensitivitySettings(families=("exclusion", "prior", "delta-cluster"), deltas_sd=(-1.0, 1.0),
                                   relevant_difference=1e-4, bisection_steps=1, **FAST)
    return run_sensitivity(registry, settings, workers=1, joint_fitter=None)


def test_SENS_ART_001_artifact_round_trips(small_result, tmp_path):
    """SENS-ART-001: to_artifact().write(d) then SensitivityArtifact.read(d) gives the same record; scenarios,
    tipping points, settings and the residual-variance choice are typed rows with the report's key names."""
    artifact = small_result.to_artifact()
    artifact.write(tmp_path)
    back = SensitivityArtifact.read(tmp_path)
    assert back == artifact
    assert [s.scenario for s in back.scenarios] == small_result.scenarios["scenario"].tolist()
    failed = next(s for s in back.scenarios if s.scenario == "exclude-missing>20%")
    assert failed.status == "failed" and failed.n_patients is None and isinstance(failed.n_patients_excluded, int)
    assert {(t.mode, t.direction) for t in back.tipping} == {("cluster", "positive"), ("cluster", "negative")}
    assert back.settings.deltas_sd == (-1.0, 1.0) and back.settings.families == ("exclusion", "prior",
                                                                                 "delta-cluster")
    assert back.residual_variance == small_result.residual_variance
    record = json.loads((tmp_path / "artifacts" / "sensitivity.json").read_text())["record"]
    for key in ("scenario", "family", "status", "changed_conclusion", "joint_fit", "notes", "n_patients_excluded"):
        assert key in record["scenarios"][0]
    for key in ("mode", "direction", "found", "delta_sd"):
        assert key in record["tipping"][0]


def test_SENS_ART_002_renamed_or_missing_field_is_an_error(small_result, tmp_path):
    """SENS-ART-002: a scenario row with a renamed field, a tipping row without one, or settings without
    deltas_sd is refused with an ArtifactError naming the field."""
    path = small_result.to_artifact().write(tmp_path)
    payload = json.loads(path.read_text())

    def read_with(edit):
        broken = json.loads(json.dumps(payload))
        edit(broken["record"])
        path.write_text(json.dumps(broken))
        with pytest.raises(ArtifactError) as info:
            SensitivityArtifact.read(tmp_path)
        return str(info.value)

    def rename(record):
        record["scenarios"][0]["changed"] = record["scenarios"][0].pop("changed_conclusion")

    assert "changed" in read_with(rename) and "scenarios[0]" in read_with(rename)
    assert "found" in read_with(lambda record: record["tipping"][1].pop("found"))
    assert "deltas_sd" in read_with(lambda record: record["settings"].pop("deltas_sd"))
    assert "n_patients_excluded" in read_with(
        lambda record: record["scenarios"][0].update(n_patients_excluded=[1]))


# ---------------------------------------------------------------------------
# Residual variance: step 3's choice (issue #11, item 7)
# ---------------------------------------------------------------------------
def test_SENS_RV_001_step3_choice_is_used_by_primary_and_reimputing_scenarios(registry):
    """SENS-RV-001: with step 3's record saying cluster-specific residual variances (2l.norm), the primary
    imputation and an exclusion scenario's re-imputation are those of impute(cluster_residual_variance=True);
    the notes say the choice is step 3's."""
    # the fields of step 3's record that the choice reads (ImputationArtifact.methods, .residual_variance)
    step3 = SimpleNamespace(
        methods=[SimpleNamespace(method="flat_mi", options={"continuous": "pmm"}),
                 SimpleNamespace(method="multilevel_mi", options={"cluster_residual_variance": True})],
        residual_variance=SimpleNamespace(heterogeneous=True))
    choice = residual_variance_choice(registry, step3)
    assert choice.cluster_specific and choice.source == "step 3" and choice.model == "2l.norm"
    settings = SensitivitySettings(families=("exclusion",), exclusion_thresholds=(0.4,), **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None, cluster_residual_variance=choice)
    assert result.residual_variance == choice
    assert any("cluster-specific residual variances (2l.norm), as step 3 chose" in n for n in result.notes)
    p = registry.params
    primary = analyse_imputations(impute_registry(registry, method="multilevel", cluster_residual_variance=True,
                                                  **FAST),
                                  outcome=p.outcome, predictors=p.predictors, cluster=p.cluster,
                                  family=p.outcome_family).to_frame()
    np.testing.assert_allclose(result.primary["estimate"], primary["estimate"], rtol=1e-12)
    common = analyse_imputations(impute_registry(registry, method="multilevel", **FAST), outcome=p.outcome,
                                 predictors=p.predictors, cluster=p.cluster, family=p.outcome_family).to_frame()
    assert not np.allclose(primary["estimate"], common["estimate"], rtol=1e-9)   # the option matters here
    keep = ~registry.frame["site"].isin(["C5", "C6", "C7", "C8"]).to_numpy()
    subset = dataclasses.replace(registry, frame=registry.frame.loc[keep].reset_index(drop=True))
    direct = analyse_imputations(impute_registry(subset, method="multilevel", cluster_residual_variance=True, **FAST),
                                 outcome="y", predictors=["age", "x", "z"], cluster="site",
                                 family="gaussian").to_frame()
    rows = rows_of(result, "exclude-missing>40%")
    np.testing.assert_allclose(rows.loc[direct["term"], "estimate"], direct["estimate"], rtol=1e-12)


def test_SENS_RV_002_without_step3_the_same_check_decides(registry, monkeypatch, tmp_path):
    """SENS-RV-002: without step 3's record the choice is residual_variance_check's, run as step 3 runs it, and
    the notes say so; run(ctx) hands step 3's record (ctx.read) to the choice and the choice to run_sensitivity;
    a caller's True/False wins."""
    p = registry.params
    check = residual_variance_check(registry.frame, variable=p.focus, cluster=p.cluster,
                                    covariates=[*p.predictors, p.outcome], levels=registry.levels)
    here = residual_variance_choice(registry, None)
    assert here.source == "checked here" and here.cluster_specific == check.heterogeneous
    assert here.text.startswith("Step 3 has not run") and check.sentence() in here.text
    forced = residual_variance_choice(registry, None, True)
    assert forced.cluster_specific and forced.source == "caller"
    with pytest.raises(ParamsError, match="cluster_residual_variance"):
        residual_variance_choice(registry, None, "sometimes")

    seen = {}

    class Stop(Exception):
        pass

    def capture(reg, settings, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(step5, "run_sensitivity", capture)
    ctx = StepContext(registry, tmp_path)
    with pytest.raises(Stop):
        step5.run(ctx)                                                   # no step-3 artifact in tmp_path
    assert seen["cluster_residual_variance"] == here
    step3 = SimpleNamespace(methods=[SimpleNamespace(method="multilevel_mi",
                                                     options={"cluster_residual_variance": True})],
                            residual_variance=None)
    monkeypatch.setattr(ctx, "read", lambda artifact: step3 if artifact is step5.ImputationArtifact else None)
    with pytest.raises(Stop):
        step5.run(ctx)
    assert seen["cluster_residual_variance"].source == "step 3"
    assert seen["cluster_residual_variance"].cluster_specific is True


def test_SENS_WARM_001_reimputing_scenarios_continue_the_primary_chains(registry):
    """SENS-WARM-001: with warm_iterations, an exclusion scenario's re-imputation is impute() started from the
    primary's completed data sets restricted to the scenario's patients and from the primary chains' states,
    for warm_iterations iterations (the same numbers as that call made directly); the stratified scenario
    starts each stratum from the primary too; the methods paragraph says so."""
    p = registry.params
    primary = impute_registry(registry, method="multilevel", **FAST)
    settings = SensitivitySettings(families=("exclusion", "stratified"), exclusion_thresholds=(0.4,),
                                   warm_iterations=2, **FAST)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None, primary_imputation=primary)
    keep = ~registry.frame["site"].isin(["C5", "C6", "C7", "C8"]).to_numpy()
    subset = dataclasses.replace(registry, frame=registry.frame.loc[keep].reset_index(drop=True))
    start = [done.loc[keep].reset_index(drop=True) for done in primary.completed]
    warm = impute_registry(subset, method="multilevel", m=3, iterations=2, start=start,
                           start_states=primary.chain_states)
    direct = analyse_imputations(warm, outcome="y", predictors=["age", "x", "z"], cluster="site",
                                 family="gaussian").to_frame()
    rows = rows_of(result, "exclude-missing>40%")
    np.testing.assert_allclose(rows.loc[direct["term"], "estimate"], direct["estimate"], rtol=1e-12)
    cold = impute_registry(subset, method="multilevel", **FAST)
    assert not np.allclose(warm.completed[0]["x"], cold.completed[0]["x"])       # a warm start is another chain
    by_type = impute_by_stratum(registry, "site_type", m=3, iterations=2, seed=p.seed, start=primary.completed,
                                start_states=primary.chain_states)
    strat = analyse_imputations(by_type, outcome="y", predictors=["age", "x", "z"], cluster="site",
                                family="gaussian").to_frame()
    rows = rows_of(result, "stratified-imputation:site_type")
    np.testing.assert_allclose(rows.loc[strat["term"], "estimate"], strat["estimate"], rtol=1e-12)
    record = result.to_artifact()
    assert record.settings.warm_iterations == 2
    text = " ".join(step5.methods_text(record, SimpleNamespace(noun="cluster", min_cell=11, versions={})))
    assert "starting each of their 3 chains from the primary imputation" in text and "run 2 chained" in text


def test_SENS_WARM_002_warm_start_is_the_steps_default_and_parallel_equals_serial(registry, monkeypatch, tmp_path):
    """SENS-WARM-002: run(ctx) asks for RunSizes.scenario_iterations warm iterations; with them, 2 workers
    give the grid of 1 (each chain's start and state travel with the primary imputation)."""
    captured = {}

    def capture(reg, settings, **kwargs):
        captured["settings"] = settings
        raise RuntimeError("stop here")

    monkeypatch.setattr(step5, "run_sensitivity", capture)
    ctx = StepContext(registry, tmp_path)
    with pytest.raises(RuntimeError, match="stop here"):
        step5.run(ctx)
    assert captured["settings"].warm_iterations == ctx.sizes.scenario_iterations
    monkeypatch.undo()
    settings = SensitivitySettings(families=("exclusion", "leave-out"), n_influential=2, warm_iterations=2, **FAST)
    serial = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    parallel = run_sensitivity(registry, settings, workers=2, joint_fitter=None)
    pd.testing.assert_frame_equal(serial.grid, parallel.grid, check_exact=True)


def test_SENS_WARM_004_every_reimputing_family_warm_starts_by_default(registry):
    """SENS-WARM-004: by default every re-imputing family warm-starts, leave-out included
    (bench/sensitivity_warm_start.py: against 30-iteration cold reruns the trial shape's warm leave-outs scatter
    no more than Monte Carlo error, SD ratio 0.92); warm_families chooses: a family left out of it starts cold
    and equals warm_iterations=None to the last bit, while exclusion in the same run still warm-starts; the
    methods text names the cold family; a family that does not re-impute cannot be listed."""
    primary = impute_registry(registry, method="multilevel", **FAST)
    common = dict(families=("exclusion", "leave-out"), exclusion_thresholds=(0.4,), n_influential=1, **FAST)
    runs = {}
    for name, extra in {"cold": dict(warm_iterations=None), "default": dict(warm_iterations=2),
                        "exclusion only": dict(warm_iterations=2, warm_families=("exclusion",))}.items():
        result = run_sensitivity(registry, SensitivitySettings(**common, **extra), workers=1, joint_fitter=None,
                                 primary_imputation=primary)
        runs[name] = result
    leave = [s for s in runs["cold"].grid["scenario"].unique() if s.startswith("leave-out")]
    assert len(leave) == 1
    np.testing.assert_array_equal(rows_of(runs["exclusion only"], leave[0])["estimate"],
                                  rows_of(runs["cold"], leave[0])["estimate"])
    assert rows_of(runs["default"], leave[0]).loc["x", "estimate"] != rows_of(runs["cold"], leave[0]).loc["x",
                                                                                                          "estimate"]
    excl = "exclude-missing>40%"
    assert rows_of(runs["default"], excl).loc["x", "estimate"] != rows_of(runs["cold"], excl).loc["x", "estimate"]
    np.testing.assert_array_equal(rows_of(runs["default"], excl)["estimate"],
                                  rows_of(runs["exclusion only"], excl)["estimate"])
    record = runs["default"].to_artifact()
    assert record.settings.warm_families == ("exclusion", "stratified", "leave-out")
    text = " ".join(step5.methods_text(record, SimpleNamespace(noun="cluster", min_cell=11, versions={})))
    assert "Scenarios of exclusion and leave-out re-impute starting each of their 3 chains" in text
    assert "start cold" not in text
    text = " ".join(step5.methods_text(runs["exclusion only"].to_artifact(),
                                       SimpleNamespace(noun="cluster", min_cell=11, versions={})))
    assert "Scenarios of leave-out start cold (3 iterations from random draws)" in text
    with pytest.raises(ParamsError, match="warm_families are re-imputing families"):
        SensitivitySettings(warm_families=("delta-global",))


def test_SENS_WARM_003_warm_scenarios_agree_with_cold_ones_within_monte_carlo_error(registry):
    """SENS-WARM-003: on the graded-missingness registry (10 sites of 30; excluding the 4 sites with more than
    40% of x missing), warm_iterations=None is the cold path exactly (run_sensitivity's scenario estimates equal
    impute_registry on the scenario's patients with m, iterations and no start, then analyse_imputations, to the
    last bit); and over 3 seeds the warm-started scenario (2 iterations from the primary imputation) gives a
    focus estimate within 4 Monte Carlo SDs of the cold one (5 iterations from random draws), the SD of a
    difference of two independent m-imputation runs being sqrt(2 B / m) with B the cold run's
    between-imputation variance, and a standard error within 25% of the cold one."""
    m, iterations, warm = 10, 5, 2
    keep = ~registry.frame["site"].isin(["C5", "C6", "C7", "C8"]).to_numpy()
    settings = dict(families=("exclusion",), exclusion_thresholds=(0.4,), m=m, iterations=iterations)
    for seed in (3, 4, 5):
        reg = dataclasses.replace(registry, params=registry.params.with_overrides(seed=seed))
        primary = impute_registry(reg, method="multilevel", m=m, iterations=iterations)
        grid = {}
        for k in (None, warm):
            result = run_sensitivity(registry, SensitivitySettings(warm_iterations=k, **settings), workers=1,
                                     joint_fitter=None, primary_imputation=primary, seed=seed,
                                     cluster_residual_variance=False)
            grid[k] = rows_of(result, "exclude-missing>40%")
        subset = dataclasses.replace(reg, frame=reg.frame.loc[keep].reset_index(drop=True))
        cold = analyse_imputations(impute_registry(subset, method="multilevel", m=m, iterations=iterations),
                                   outcome="y", predictors=["age", "x", "z"], cluster="site", family="gaussian")
        direct = cold.to_frame().set_index("term")
        np.testing.assert_array_equal(grid[None].loc[direct.index, "estimate"], direct["estimate"])
        np.testing.assert_array_equal(grid[None].loc[direct.index, "std_error"], direct["std_error"])
        x = list(cold.terms).index("x")
        mc_sd = np.sqrt(2.0 * cold.between[x] / m)
        assert abs(grid[warm].loc["x", "estimate"] - grid[None].loc["x", "estimate"]) < 4.0 * mc_sd, seed
        assert grid[warm].loc["x", "std_error"] == pytest.approx(grid[None].loc["x", "std_error"], rel=0.25)
        assert grid[warm].loc["x", "estimate"] != grid[None].loc["x", "estimate"]     # the warm start ran
