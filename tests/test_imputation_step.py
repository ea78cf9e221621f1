"""Step 3: flat vs hierarchical multiple imputation, side by side.

Test IDs: STEP3-METHODS (every method run, pooled and labelled), STEP3-FAIL
(failures recorded with their reason, never dropped; stale rows removed),
STEP3-PRIV (no patient-level values leave the step; small counts
suppressed), STEP3-CC (complete case read or fitted), STEP3-TRUTH (truth
column and coverage), STEP3-ICC (between-cluster variation by method, and a
narrative that says what the numbers show), STEP3-RV (the residual-variance
rule), STEP3-FEW (few clusters: cluster means left out), STEP3-DIAG (R-hat
and FMI tables), STEP3-REAL (the Brandsma schools data and the simulated
reference registry), STEP3-FIG (figures), STEP3-NB
(the notebook), STEP3-ART (the typed artifact: it round-trips; a renamed or
missing field is an error).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REFERENCE, REPO
from hmlib.simulate.registries import icc_registry, small_registry
from hmlib.steps import imputation as step
from hmlib.data import load_registry
from hmlib.stats.design import fit_analysis_model
from hmlib.exceptions import ArtifactError, FitError
from hmlib.steps.base import StepContext
from hmlib.stats.imputation import cluster_variation, residual_variance_check
from hmlib.steps.imputation import STEP, ImputationArtifact, imputation_step
from hmlib.steps.imputation_result import FmiRecord, MethodRecord, TransportRecord
from hmlib.params import load_params
from hmlib.privacy import SUPPRESSED_LABEL
from hmlib.results import ESTIMATE_COLUMNS, read_estimates, to_jsonable

LABELS = ["flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi"]
FAST = dict(m=3, iterations=3)


def registry_from(tmp_path, frame, **params):
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = {"name": "t", "data": "d.csv", "cluster": "site", "outcome": "died", "outcome_family": "binomial",
            "predictors": ["age", "sex", "lab"], "seed": 7, "fast": True}
    base.update(params)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    return load_registry(load_params(tmp_path / "p.yaml"))


@pytest.fixture(scope="module")
def small_result(tmp_path_factory):
    """The step on the shared small registry (12 sites x 25), transport included."""
    tmp = tmp_path_factory.mktemp("step3")
    registry = registry_from(tmp, small_registry(seed=2), focus="lab")
    return registry, imputation_step(registry, **FAST, transport_options={"m": 4})


# ---------------------------------------------------------------------------
def test_step3_methods_001_all_methods_pooled(small_result):
    """STEP3-METHODS-001: four methods, in order, each pooled by Rubin's rules under its label."""
    registry, res = small_result
    assert [r.label for r in res.runs] == LABELS
    assert all(r.ok for r in res.runs), res.failed
    est = res.estimates
    assert list(est.columns) == list(ESTIMATE_COLUMNS)
    assert list(dict.fromkeys(est["method"])) == LABELS
    terms = ["Intercept", "age", "sex[male]", "lab", "sd(site)"]
    for label in LABELS:
        assert est.loc[est["method"] == label, "term"].tolist() == terms
        pooled = res.run(label).pooled
        assert pooled.m == 3 and pooled.method == label
    # the engine options behind the labels: flat uses pmm, stratified the cluster
    assert res.run("flat_mi").spec.options == {"continuous": "pmm"}
    assert res.run("stratified_mi").spec.options == {"strata": "site"}
    assert res.run("multilevel_mi").models["lab"].startswith("2l.pan")


def test_step3_methods_002_side_by_side_has_every_method(small_result):
    """STEP3-METHODS-002: the side-by-side table has complete case and every method that ran."""
    _, res = small_result
    wide = res.side_by_side()
    assert list(wide.columns) == ["term", "complete_case", *LABELS]
    assert wide["term"].tolist()[-1] == "sd(site)"
    cell = wide.loc[wide["term"] == "lab", "multilevel_mi"].iloc[0]
    row = res.estimates.set_index(["method", "term"]).loc[("multilevel_mi", "lab")]
    assert cell == f"{row['estimate']:.3g} ({row['ci_lower']:.3g}, {row['ci_upper']:.3g})"


def test_step3_few_001_dropped_cluster_means_reported(small_result):
    """STEP3-FEW-001: with 12 sites and 3 cluster-level columns (means of age, sex, died) the engine leaves
    the cluster means out of lab's multilevel model (needs max(10, 5 x 3) = 15 sites); the step reports it
    from the engine's structured record, in the narrative and the artifact."""
    _, res = small_result
    run = res.run("multilevel_mi")
    assert run.cluster_means_dropped["lab"] == {"clusters": 12, "cluster_columns": 3, "needed": 15}
    assert "without cluster means" in run.models["lab"]
    assert any(s.startswith("multilevel_mi: too few clusters observe lab (12 clusters; 15 needed")
               for s in res.narrative())
    payload = to_jsonable(res.to_dict())
    methods = {m["method"]: m for m in payload["methods"]}
    assert methods["multilevel_mi"]["cluster_means_dropped"]["lab"]["needed"] == 15
    assert methods["flat_mi"]["cluster_means_dropped"] == {}


def test_step3_fail_001_stratified_breaks_in_small_clusters(tmp_path):
    """STEP3-FAIL-001: clusters of 4 patients cannot carry a stratified model: the method is reported
    as failed with the reason, kept in every table, and writes no estimates."""
    frame = small_registry(seed=3, n_clusters=30, per_cluster=4)
    registry = registry_from(tmp_path, frame, focus="lab")
    res = imputation_step(registry, **FAST, transport=False)
    run = res.run("stratified_mi")
    assert run.status == "failed"
    assert "strata are too small" in run.reason and "lab" in run.reason
    fallback = run.fallbacks["lab"]
    assert fallback["of"] == 30 and fallback["strata"] / fallback["of"] >= 0.5
    assert sum(fallback["reasons"].values()) == fallback["strata"]
    assert f"{fallback['strata']} of 30 strata" in run.reason
    assert "stratified_mi" not in set(res.estimates["method"])
    assert res.failed == {"stratified_mi": run.reason}
    table = res.methods_table().set_index("method")
    assert table.loc["stratified_mi", "status"] == "failed"
    assert any(s.startswith("stratified_mi failed") for s in res.narrative())
    payload = to_jsonable(res.to_dict())
    assert payload["failed"] == {"stratified_mi": run.reason}
    assert payload["methods"][1]["fallbacks"]["lab"] == {"strata": fallback["strata"], "of": 30,
                                                         "reasons": fallback["reasons"]}
    assert [m["method"] for m in payload["methods"]] == LABELS
    # the others still ran
    assert {r.label for r in res.runs if r.ok} == {"flat_mi", "fixed_effects_mi", "multilevel_mi"}


def test_step3_fail_002_engine_error_recorded(tmp_path, monkeypatch):
    """STEP3-FAIL-002: an imputation that raises is reported as failed with its message."""
    registry = registry_from(tmp_path, small_registry(seed=4), focus="lab")
    real = step.impute_registry

    def broken(reg, *, method, **kwargs):
        if method == "fixed_effects":
            raise FitError("the cluster intercepts are not estimable")
        return real(reg, method=method, **kwargs)

    monkeypatch.setattr(step, "impute_registry", broken)
    res = imputation_step(registry, **FAST, transport=False)
    assert [r.label for r in res.runs] == LABELS
    assert res.failed == {"fixed_effects_mi": "imputation failed: the cluster intercepts are not estimable"}
    assert "fixed_effects_mi" not in res.cluster_variation_table()["method"].tolist()
    assert "fixed_effects_mi" not in res.fmi_table()["method"].tolist()


def test_step3_fail_003_outputs_drop_stale_rows(tmp_path, small_result):
    """STEP3-FAIL-003: writing the step's outputs (StepContext.write) keeps other steps' rows, replaces this step's, and removes the
    rows of a method that failed in this run (an old row would look current)."""
    registry, res = small_result
    path = tmp_path / "estimates.csv"
    old = pd.DataFrame([
        {"method": "complete_case", "term": "lab", "estimate": 1.0, "std_error": 0.1, "ci_lower": 0.8,
         "ci_upper": 1.2, "n_patients": 10, "n_clusters": 2},
        {"method": "stratified_mi", "term": "lab", "estimate": 9.0, "std_error": 0.1, "ci_lower": 8.8,
         "ci_upper": 9.2, "n_patients": 10, "n_clusters": 2},
    ])
    old.to_csv(path, index=False)
    failed_run = dataclasses.replace(res.run("stratified_mi"), status="failed", reason="too small", pooled=None)
    failed = dataclasses.replace(res, runs=[failed_run if r.label == "stratified_mi" else r for r in res.runs])
    table = StepContext(registry, tmp_path).write(STEP, failed)
    assert set(table["method"]) == {"complete_case", "flat_mi", "fixed_effects_mi", "multilevel_mi"}
    assert read_estimates(path).loc[lambda t: t["method"] == "complete_case", "estimate"].tolist() == [1.0]
    assert ImputationArtifact.read(tmp_path).failed == {"stratified_mi": "too small"}


def test_step3_art_001_artifact_round_trips(tmp_path, small_result):
    """STEP3-ART-001: the typed artifact written and read back is equal to the one written, with and
    without the optional transport check and residual-variance check; the rows the report reads are
    records, and the FMI row keeps its JSON key 'lambda'."""
    _, res = small_result
    artifact = res.to_artifact()
    artifact.write(tmp_path)
    back = ImputationArtifact.read(tmp_path)
    assert back == artifact
    assert all(isinstance(m, MethodRecord) for m in back.methods) and [m.method for m in back.methods] == LABELS
    assert isinstance(back.transport, TransportRecord) and back.transport.n_checked == res.transport.n_checked
    assert back.transport.flagged == {m: tuple(map(str, res.transport.flagged(m))) for m in res.transport.methods}
    fmi = res.fmi_table()
    assert isinstance(back.fmi[0], FmiRecord) and back.fmi[0].lambda_ == pytest.approx(fmi["lambda"].iloc[0])
    assert back.residual_variance.heterogeneous is res.residual_variance.heterogeneous
    row = json.loads((tmp_path / "artifacts" / "imputation.json").read_text())["record"]["fmi"][0]
    assert "lambda" in row and "lambda_" not in row
    bare = dataclasses.replace(res, transport=None, residual_variance=None).to_artifact()
    bare.write(tmp_path / "bare")
    assert ImputationArtifact.read(tmp_path / "bare") == bare
    assert bare.transport is None and bare.residual_variance is None


def test_step3_art_002_renamed_or_missing_field_is_an_error(tmp_path, small_result):
    """STEP3-ART-002: a row of the artifact with a renamed field, or without one, is refused with an
    ArtifactError naming the field (not read as a silent gap)."""
    _, res = small_result
    path = res.to_artifact().write(tmp_path)
    payload = json.loads(path.read_text())

    def broken(edit):
        changed = copy.deepcopy(payload)
        edit(changed["record"])
        path.write_text(json.dumps(changed))
        return tmp_path

    def rename(row, old, new):
        row[new] = row.pop(old)

    cases = [
        (lambda r: rename(r["methods"][0], "description", "desc"), r"methods\[0\].*desc"),
        (lambda r: r["methods"][1].pop("notes"), r"methods\[1\].*notes.*missing"),
        (lambda r: rename(r["rhat"][0], "rhat", "r_hat"), r"rhat\[0\].*r_hat"),
        (lambda r: r["fmi"][0].pop("lambda"), r"fmi\[0\].*lambda.*missing"),
        (lambda r: rename(r["fmi"][0], "lambda", "lambda_"), r"fmi\[0\].*lambda_"),
        (lambda r: r["transport"].pop("n_checked"), r"transport.*n_checked.*missing"),
        (lambda r: r.pop("m"), r"imputation.*\bm\b.*missing"),
    ]
    for edit, message in cases:
        with pytest.raises(ArtifactError, match=message):
            ImputationArtifact.read(broken(edit))


# ---------------------------------------------------------------------------
def test_step3_priv_001_no_patient_values_in_artifact(tmp_path):
    """STEP3-PRIV-001: neither recorded nor imputed patient values appear in to_dict; no table in it
    has one row per patient."""
    frame = small_registry(seed=5)
    observed = np.flatnonzero(frame["lab"].notna().to_numpy())[:5]
    sentinels = [13.579246, 24.681357, 35.792468, 46.813579, 57.924681]
    frame.loc[frame.index[observed], "lab"] = sentinels
    registry = registry_from(tmp_path, frame, focus="lab")
    res = imputation_step(registry, **FAST, transport_options={"m": 3})
    text = json.dumps(to_jsonable(res.to_dict()))
    for value in sentinels:
        assert str(value) not in text
    imputed = res.run("multilevel_mi").imputation.completed[0]["lab"][frame["lab"].isna()]
    leaked = [v for v in imputed.to_numpy() if repr(float(v)) in text]
    assert leaked == []
    assert "patient_id" not in text

    def longest(node):
        if isinstance(node, dict):
            return max([longest(v) for v in node.values()] + [0])
        if isinstance(node, list):
            return max([len(node)] + [longest(v) for v in node])
        return 0

    payload = to_jsonable(res.to_dict())
    histograms = payload.pop("distributions")
    assert longest(payload) < len(frame) / 2
    # the histogram table is bins x sources x clusters, not patients
    assert {tuple(sorted(r)) for r in histograms} == {("bin_left", "bin_right", "cluster", "density", "source")}
    assert len({r["bin_left"] for r in histograms}) == 30


def test_step3_priv_002_small_counts_suppressed(tmp_path):
    """STEP3-PRIV-002: a variable with 3 missing values, and clusters with few observed values, show
    "suppressed" instead of the count."""
    frame = small_registry(seed=6)
    frame["age"] = frame["age"].astype(float)
    frame.loc[frame.index[[1, 40, 90]], "age"] = np.nan
    # one site keeps only 4 observed lab values
    rows = np.flatnonzero((frame["site"] == "S03").to_numpy() & frame["lab"].notna().to_numpy())
    frame.loc[frame.index[rows[4:]], "lab"] = np.nan
    registry = registry_from(tmp_path, frame, focus="lab")
    res = imputation_step(registry, **FAST, transport=False, n_distribution_clusters=12)
    counts = res.missing_counts.set_index("variable")
    assert counts.loc["age", "n_missing"] == SUPPRESSED_LABEL
    assert counts.loc["lab", "n_missing"] != SUPPRESSED_LABEL
    shown = res.distribution_clusters.set_index("cluster")
    assert shown.loc["S03", "n_observed"] == SUPPRESSED_LABEL
    # no observed histogram is drawn for a cluster under min_cell observed values
    sources = set(res.distributions.loc[res.distributions["cluster"] == "S03", "source"])
    assert "observed" not in sources and "multilevel_mi" in sources


# ---------------------------------------------------------------------------
def test_step3_cc_001_complete_case_read_or_fitted(tmp_path):
    """STEP3-CC-001: complete-case rows come from estimates.csv when present, else are fitted here."""
    frame = small_registry(seed=7)
    registry = registry_from(tmp_path, frame, focus="lab")
    fitted = imputation_step(registry, **FAST, transport=False, methods=step.default_methods("site")[:1])
    assert fitted.complete_case_source == "fitted here"
    fit = fit_analysis_model(registry.frame, outcome="died", predictors=["age", "sex", "lab"], cluster="site",
                             family="binomial", levels=registry.levels)
    lab = fitted.comparison().set_index(["method", "term"]).loc[("complete_case", "lab"), "estimate"]
    assert lab == pytest.approx(fit.coef[list(fit.term_names).index("lab")])
    path = tmp_path / "estimates.csv"
    pd.DataFrame([{"method": "complete_case", "term": "lab", "estimate": 0.123, "std_error": 0.01,
                   "ci_lower": 0.1, "ci_upper": 0.14, "n_patients": 200, "n_clusters": 12}]).to_csv(path, index=False)
    read = imputation_step(registry, **FAST, transport=False, estimates_path=path,
                           methods=step.default_methods("site")[:1])
    assert read.complete_case_source == "estimates.csv"
    assert read.comparison().set_index(["method", "term"]).loc[("complete_case", "lab"), "estimate"] == 0.123


def test_step3_truth_001_truth_column_and_coverage(tmp_path):
    """STEP3-TRUTH-001: with a truth file, the tables carry the truth, errors and coverage flags."""
    frame = small_registry(seed=8)
    (tmp_path / "truth.json").write_text(json.dumps({"terms": {"lab": 0.5, "age": 0.03, "sd(site)": 0.5}}))
    registry = registry_from(tmp_path, frame, focus="lab", truth="truth.json")
    res = imputation_step(registry, **FAST, transport=False)
    comp = res.comparison().set_index(["method", "term"])
    row = comp.loc[("multilevel_mi", "lab")]
    assert row["truth"] == 0.5 and row["error"] == pytest.approx(row["estimate"] - 0.5)
    assert row["covers_truth"] is bool(row["ci_lower"] <= 0.5 <= row["ci_upper"])
    assert comp.loc[("flat_mi", "Intercept"), "covers_truth"] is None
    assert res.side_by_side().set_index("term").loc["lab", "truth"] == 0.5
    assert res.cluster_variation_table().set_index("method").loc["truth", "outcome_sd"] == 0.5
    assert any("generating value is 0.5" in s for s in res.narrative())


# ---------------------------------------------------------------------------
def test_step3_icc_001_flat_shrinks_between_cluster_variation(tmp_path):
    """STEP3-ICC-001: with ICC 0.5 and half the values missing, flat imputation shrinks the ICC of the
    imputed variable well below the multilevel imputation's, which stays near the observed one; the
    narrative says so with the numbers."""
    registry = registry_from(tmp_path, icc_registry(0, n_clusters=40, per_cluster=30, icc=0.5, missing=0.5),
                             focus="lab")
    res = imputation_step(registry, m=4, iterations=4, transport=False)
    table = res.cluster_variation_table().set_index("method")
    observed, flat, ml = (table.loc[k, "focus_icc"] for k in ("observed values", "flat_mi", "multilevel_mi"))
    assert 0.35 < observed < 0.65
    assert abs(ml - observed) < 0.1
    assert flat < 0.75 * ml
    assert flat == pytest.approx(res.run("flat_mi").focus_variation["icc"])
    text = " ".join(res.narrative())
    assert "Flat imputation shrinks it" in text and f"{flat:.3f}" in text


def test_step3_icc_002_narrative_follows_the_numbers(small_result):
    """STEP3-ICC-002: when the numbers go against the textbook, the narrative says so."""
    _, res = small_result

    def with_icc(values):
        runs = [dataclasses.replace(r, focus_variation={**r.focus_variation, "icc": values[r.label]})
                for r in res.runs]
        return dataclasses.replace(res, runs=runs, transport=None)

    against = " ".join(with_icc({"flat_mi": 0.30, "stratified_mi": 0.2, "fixed_effects_mi": 0.15,
                                 "multilevel_mi": 0.2})._variation_sentences())
    assert "Flat imputation does not shrink it here" in against
    assert "Fixed-effects imputation does not inflate it here" in against
    textbook = " ".join(with_icc({"flat_mi": 0.10, "stratified_mi": 0.2, "fixed_effects_mi": 0.30,
                                  "multilevel_mi": 0.2})._variation_sentences())
    assert "Flat imputation shrinks it" in textbook and "-50%" in textbook
    assert "Fixed-effects imputation inflates it" in textbook and "+50%" in textbook


def test_step3_icc_004_small_cluster_caveat(small_result):
    """STEP3-ICC-004: with a binary outcome and fewer than SMALL_CLUSTER_MEAN patients per cluster on
    average, the narrative says the cluster SD is likely low by the analysis model's own fit (with the
    measured figures); not with 25 per cluster, a gaussian outcome, or visits in patients."""
    _, res = small_result
    assert res.outcome_family == "binomial" and res.n_patients / res.n_clusters == 25
    caveat = "likely low, by the Laplace fit of the analysis model itself"
    assert caveat not in " ".join(res.narrative())
    small = dataclasses.replace(res, transport=None, n_patients=46, n_clusters=10)
    text = " ".join(small._variation_sentences())
    assert caveat in text and "With 4.6 patients per cluster on average" in text and "7.5%" in text
    assert caveat in " ".join(small.narrative())
    for other in ({"outcome_family": "gaussian"}, {"time": "week"}, {"random_slopes": ("week",)},
                  {"n_patients": 60}):
        assert caveat not in " ".join(dataclasses.replace(small, **other)._variation_sentences()), other


def test_step3_icc_003_cluster_variation_core():
    """STEP3-ICC-003: cluster_variation recovers a known ICC (gaussian) and returns NaN when unfittable."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(200), 20)
    values = 0.6 * rng.normal(size=200)[groups] + 0.8 * rng.normal(size=groups.size)
    out = cluster_variation(values, groups)
    assert out["icc"] == pytest.approx(0.36, abs=0.05)
    assert out["cluster_sd"] == pytest.approx(0.6, abs=0.06)
    assert np.isnan(cluster_variation(np.full(10, np.nan), np.arange(10))["icc"])


# ---------------------------------------------------------------------------
def test_step3_rv_001_residual_variance_rule():
    """STEP3-RV-001: multiplicative site-specific residual SDs (factor 1 to 4) are detected; a common
    residual variance is not."""
    rng = np.random.default_rng(11)
    site = np.repeat(np.arange(30), 40)
    x = rng.normal(size=site.size)
    sd = np.exp(np.linspace(0, np.log(4), 30))[site]
    common = pd.DataFrame({"site": site, "x": x, "y": 0.5 * x + rng.normal(size=site.size)})
    hetero = common.assign(y=0.5 * x + sd * rng.normal(size=site.size))
    yes = residual_variance_check(hetero, variable="y", cluster="site", covariates=["x"])
    no = residual_variance_check(common, variable="y", cluster="site", covariates=["x"])
    assert yes.heterogeneous and yes.p_value < 1e-6 and yes.sd_log_sd > 0.3
    assert not no.heterogeneous and no.sd_log_sd < 0.1
    assert "2l.norm" in yes.sentence() and "2l.pan" in no.sentence()


def test_step3_rv_002_auto_choice_reaches_the_engine(tmp_path, monkeypatch):
    """STEP3-RV-002: "auto" passes the check's verdict to the multilevel method; an explicit choice wins."""
    registry = registry_from(tmp_path, small_registry(seed=9), focus="lab")
    seen = []
    real = step.impute_registry

    def spy(reg, *, method, **kwargs):
        if method == "multilevel":
            seen.append(kwargs["cluster_residual_variance"])
        return real(reg, method=method, **kwargs)

    monkeypatch.setattr(step, "impute_registry", spy)
    only_ml = lambda hetero: [s for s in step.default_methods("site", cluster_residual_variance=hetero)  # noqa: E731
                              if s.label == "multilevel_mi"]
    auto = imputation_step(registry, **FAST, transport=False)
    assert seen[-1] is auto.residual_variance.heterogeneous
    forced = imputation_step(registry, **FAST, transport=False, cluster_residual_variance=True,
                             methods=only_ml(True))
    assert seen[-1] is True and forced.residual_variance.heterogeneous is True
    assert any("set to cluster-specific" in n for n in forced.notes)


def test_step3_diag_001_rhat_and_fmi_tables(tmp_path):
    """STEP3-DIAG-001: R-hat per imputed variable and method equals the engine's; FMI per term is in
    [0, 1] and equals the pooling's."""
    frame = small_registry(seed=10)
    frame["age"] = frame["age"].where(np.random.default_rng(1).random(len(frame)) > 0.1)
    registry = registry_from(tmp_path, frame, focus="lab")
    res = imputation_step(registry, m=3, iterations=8, transport=False)
    rh = res.rhat_table()
    for run in res.ok_runs:
        sub = rh.loc[rh["method"] == run.label].set_index("variable")["rhat"]
        assert set(sub.index) == {"age", "lab"}
        assert sub.to_dict() == pytest.approx(run.imputation.rhat)
    fmi = res.fmi_table()
    assert fmi["fmi"].between(0, 1).all()
    ml = fmi.loc[fmi["method"] == "multilevel_mi"].set_index("term")["fmi"]
    assert ml["lab"] == pytest.approx(res.run("multilevel_mi").pooled.term("lab")["fmi"])
    assert any("Fraction of missing information for the lab coefficient" in s for s in res.narrative())


# ---------------------------------------------------------------------------
def test_step3_real_001_brandsma(tmp_path):
    """STEP3-REAL-001: on the Brandsma schools data (216 schools, gaussian outcome, gaps at both
    levels) every method runs or fails with a reason, and the multilevel lpr coefficient is within
    0.03 of the complete-case one (4 % of lpr is missing)."""
    params = yaml.safe_load((REPO / "params" / "brandsma.yaml").read_text())
    params.update(data=str(REPO / "data" / "real" / "brandsma.csv"), fast=True)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(params))
    registry = load_registry(load_params(tmp_path / "b.yaml"))
    res = imputation_step(registry, m=3, iterations=3, transport=False)
    assert [r.label for r in res.runs] == LABELS
    for run in res.runs:
        assert run.ok or run.reason
    est = res.comparison().set_index(["method", "term"])["estimate"]
    assert abs(est[("multilevel_mi", "lpr")] - est[("complete_case", "lpr")]) < 0.03
    # gaussian outcome: the analysis model's ICC from the pooled cluster and residual SDs
    table = res.cluster_variation_table().set_index("method")
    for run in res.ok_runs:
        pooled = run.pooled
        su, se = pooled.term("sd(sch)")["estimate"], pooled.residual_sd["estimate"]
        assert table.loc[run.label, "outcome_icc"] == pytest.approx(su ** 2 / (su ** 2 + se ** 2))
    assert 0.05 < table.loc["multilevel_mi", "outcome_icc"] < 0.5
    sentence = next(s for s in res.narrative() if s.startswith("The analysis model's cluster SD"))
    assert f"(ICC {table.loc['multilevel_mi', 'outcome_icc']:.3f})" in sentence
    json.dumps(to_jsonable(res.to_dict()), allow_nan=False)


def test_step3_real_002_sim_registry_never_measured_sites(tmp_path):
    """STEP3-REAL-002: on the reference registry (two sites never record lactate) the distributions
    include a never-measured site with imputed values only, and the transport check leaves those
    sites out (nothing to mask)."""
    frame = pd.read_csv(REFERENCE / "sim_registry.csv")
    frame.to_csv(tmp_path / "sim.csv", index=False)
    params = {"name": "sim", "data": "sim.csv", "cluster": "site", "outcome": "outcome",
              "outcome_family": "binomial", "predictors": ["lactate", "age", "severity"], "focus": "lactate",
              "seed": 1, "fast": True}
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(params))
    registry = load_registry(load_params(tmp_path / "sim.yaml"))
    methods = [s for s in step.default_methods("site") if s.label in ("flat_mi", "multilevel_mi")]
    res = imputation_step(registry, methods=methods, m=3, iterations=3, transport_options={"m": 4,
                                                                                          "max_clusters": 5})
    never = res.distribution_clusters.loc[res.distribution_clusters["never_observed"], "cluster"].tolist()
    assert never and set(never) <= {"5", "27"}  # cluster ids are text
    for site in never:
        sources = set(res.distributions.loc[res.distributions["cluster"] == site, "source"])
        assert sources == {"flat_mi", "multilevel_mi"}
    checked = set(res.transport.table["cluster"])
    assert len(checked) == 5 and not checked & {5, 27}
    assert res.transport.methods == ("flat_mi", "multilevel_mi")


# ---------------------------------------------------------------------------
def test_step3_fig_001_figures(small_result):
    """STEP3-FIG-001: every figure function returns a Figure with the expected panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmlib.figures import imputation as figures

    _, res = small_result
    comparison = res.comparison()
    made = {
        "forest": (figures.forest_plot(comparison, ["lab", "sd(site)", "age"], failed={"x_mi": "because"}), 3),
        "variation": (figures.cluster_variation_plot(res.cluster_variation_table(), focus="lab", cluster="site"), 2),
        "trace": (figures.trace_plot(res.traces(), variable="lab"), 4),
        "distribution": (figures.distribution_plot(res.distributions, res.distribution_clusters, focus="lab"),
                         len(res.distribution_clusters)),
        "fmi": (figures.fmi_plot(res.fmi_table()), 1),
        "transport": (figures.transport_plot(res.transport), 2),
    }
    for name, (fig, panels) in made.items():
        assert len([ax for ax in fig.axes if ax.get_visible()]) == panels, name
        plt.close(fig)
    forest = figures.forest_plot(comparison, ["lab"], failed={"x_mi": "because"})
    labels = [t.get_text() for t in forest.axes[0].get_yticklabels()]
    assert labels[-1] == "x_mi" and any(t.get_text() == "failed" for t in forest.axes[0].texts)
    plt.close(forest)


def test_step3_nb_001_notebook_conventions():
    """STEP3-NB-001: the notebook is stored without outputs, with the heading, the tagged parameters
    cell and its defaults, and short code cells."""
    nb = nbformat.read(REPO / "notebooks" / "03_imputation.ipynb", as_version=4)
    assert nb.cells[0].cell_type == "markdown"
    assert nb.cells[0].source.startswith("## 3. Flat vs hierarchical multiple imputation")
    params = nb.cells[1]
    assert "parameters" in params.metadata.get("tags", [])
    assert "params_path = None" in params.source  # None: the demo (hmlib.report.parameters)
    assert "output_dir = None" in params.source and "fast = None" in params.source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            # the parameters cell declares one line per params key (tests/test_notebook_parameters.py)
            assert len(cell.source.splitlines()) <= 20 or cell is params
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'open_step("imputation", globals())' in sources
    assert "result = step.run()" in sources
    # numbers in markdown would be findings typed by hand
    for cell in nb.cells[2:]:
        if cell.cell_type == "markdown":
            assert not re.search(r"\d+\.\d+", cell.source), cell.source


def test_step3_nb_002_notebook_runs(tmp_path):
    """STEP3-NB-002: papermill runs the notebook on a small registry; it writes its artifact and its
    estimates rows without patient-level values."""
    import papermill

    frame = small_registry(seed=12)
    frame.to_csv(tmp_path / "d.csv", index=False)
    params = {"name": "nb", "data": "d.csv", "cluster": "site", "outcome": "died", "outcome_family": "binomial",
              "predictors": ["age", "sex", "lab"], "seed": 7}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    papermill.execute_notebook(str(REPO / "notebooks" / "03_imputation.ipynb"), str(tmp_path / "run.ipynb"),
                               parameters={"params_path": str(tmp_path / "p.yaml"), "output_dir": str(out),
                                           "fast": True},
                               cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    artifact = ImputationArtifact.read(out)
    assert [m.method for m in artifact.methods] == LABELS
    assert set(read_estimates(out / "estimates.csv")["method"]) == set(LABELS) - set(artifact.failed)
    run = nbformat.read(tmp_path / "run.ipynb", as_version=4)
    errors = [o for c in run.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []


def test_step3_cat_001_categorical_focus(tmp_path):
    """STEP3-CAT-001: a categorical focus variable runs every method, reports its first level's
    coefficient, and skips the ICC and the transport check with a note instead of failing."""
    frame = small_registry(seed=13)
    frame.loc[frame.index[::7], "sex"] = None
    registry = registry_from(tmp_path, frame, focus="sex")
    res = imputation_step(registry, **FAST)
    assert all(r.ok for r in res.runs)
    assert res.focus_term == "sex[male]"
    text = res.narrative()
    assert any(s.startswith("The sex[male] coefficient") for s in text)
    assert res.transport is None and any("needs a numeric focus variable" in n for n in res.notes)
    assert res.distributions.empty
