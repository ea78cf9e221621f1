"""Step 2, the complete-case check: retention, estimand shift, CC and missing-indicator models.

The statistics are in :mod:`hmlib.stats.complete_case`, the step (suppression,
result, typed artifact) in :mod:`hmlib.steps.complete_case`.

Test IDs
--------
CC-001..002   retention and standardised differences by hand
CC-003        complete-case and missing-indicator models against lme4 / glmer
CC-004        a cluster without complete case; fully complete data
CC-005        suppression of the retention table cannot be undone
CC-006        cluster-varying indicator effect and its partial pooling
CC-007        no patient rows in the artifact
CC-008        the typed artifact round-trips through its file
CC-009        a shift row with a renamed or missing field is refused (ArtifactError)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REFERENCE, reference_fit
from hmlib.data import load_registry
from hmlib.exceptions import ArtifactError
from hmlib.params import load_params
from hmlib.simulate.missingness import informative_missingness_registry
from hmlib.simulate.registries import small_registry
from hmlib.stats.complete_case import (indicator_effects_by_cluster, retention_by_cluster,
                                       standardized_differences)
from hmlib.steps.complete_case import CompleteCaseArtifact, complete_case_check, suppressed_retention


def _registry(tmp_path, frame, **params):
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = {"name": "t", "data": "d.csv", "cluster": "site", "outcome": "died",
            "outcome_family": "binomial", "predictors": ["age", "sex", "lab"]}
    base.update(params)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    return load_registry(load_params(tmp_path / "p.yaml"))


def test_cc_001_retention_hand_computed():
    """CC-001: per-cluster retention and shares of the analysed sample, by hand."""
    frame = pd.DataFrame({"site": list("AAAABBBCC")})
    complete = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    t = retention_by_cluster(frame, "site", complete).set_index("cluster")
    assert t.loc["A", ["n_all", "n_complete", "n_dropped"]].tolist() == [4, 4, 0]
    assert t.loc["B", "retained"] == pytest.approx(1 / 3)
    assert t["share_before"].to_dict() == pytest.approx({"A": 4 / 9, "B": 3 / 9, "C": 2 / 9})
    assert t["share_after"].to_dict() == pytest.approx({"A": 0.8, "B": 0.2, "C": 0.0})
    assert t["lost"].to_dict() == {"A": False, "B": False, "C": True}
    assert list(t.index) == ["C", "B", "A"]  # ordered by retention


def test_cc_002_standardized_differences_hand_computed():
    """CC-002: SMD (Austin 2009) for a mean and a share, computed by hand."""
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "g": ["a", "a", "b", "b"], "y": [1, 1, 0, 0]})
    complete = np.array([1, 1, 0, 0], bool)
    t = standardized_differences(frame, complete, ["x", "g", "y"], {"x": "numeric", "g": "categorical"},
                                 binary_outcome="y")
    x = t.loc[t["variable"] == "x"].iloc[0]
    assert (x["all_patients"], x["complete_cases"]) == (2.5, 1.5)
    assert x["smd"] == pytest.approx(-1.0 / np.sqrt((5 / 3 + 0.5) / 2))
    ga = t.loc[(t["variable"] == "g") & (t["level"] == "a")].iloc[0]
    assert ga["smd"] == pytest.approx(0.5 / np.sqrt(0.125))
    y = t.loc[t["variable"] == "y"].iloc[0]
    assert (y["all_patients"], y["complete_cases"]) == (0.5, 1.0)


def test_cc_003_models_agree_with_lme4_and_r(tmp_path):
    """CC-003: on the reference registry the complete-case model matches lme4 (sim_cc_laplace) and
    the missing-indicator model matches the R reference (mi_indicator: lactate at its observed mean
    plus an indicator, glmer), fixed effects to 1e-3 and site SD to 1e-2."""
    frame = pd.read_csv(REFERENCE / "sim_registry.csv")
    reg = _registry(tmp_path, frame, outcome="outcome", predictors=["lactate", "age", "severity"],
                    focus="lactate")
    res = complete_case_check(reg)
    est = res.estimates.set_index(["method", "term"])["estimate"]
    ref = reference_fit("sim_cc_laplace")
    for term, value in ref["fixed"].items():
        # Laplace: 1e-3 or 1% of the SE, whichever is larger (lme4 stops at a deviance change of
        # 1e-5 and uses a lagged curvature; see FIT-LME4-008 in test_mixed.py).
        tol = max(1e-3, 0.01 * value["std_error"])
        assert est[("complete_case", term.replace("(Intercept)", "Intercept"))] == pytest.approx(
            value["estimate"], abs=tol)
    assert est[("complete_case", "sd(site)")] == pytest.approx(ref["cluster_sd"], abs=1e-2)
    r_methods = json.loads((REFERENCE / "r_methods_sim_registry.json").read_text())["methods"]
    mi = r_methods["mi_indicator"]
    assert est[("missing_indicator", "lactate")] == pytest.approx(mi["lactate"]["estimate"], abs=1e-3)
    se = res.estimates.set_index(["method", "term"])["std_error"][("missing_indicator", "lactate")]
    assert se == pytest.approx(mi["lactate"]["se"], rel=0.02)
    assert est[("missing_indicator", "sd(site)")] == pytest.approx(mi["site_sd"], abs=1e-2)
    assert res.n_complete == ref["n_used"] and res.n_clusters_lost == 40 - ref["n_clusters"]


def test_cc_004_cluster_without_complete_case_and_fully_complete_data(tmp_path):
    """CC-004: a cluster with no complete case is lost and named; fully complete data say so."""
    frame = small_registry()
    frame.loc[frame["site"] == "S05", "lab"] = np.nan
    res = complete_case_check(_registry(tmp_path, frame))
    assert res.clusters_lost == ["S05"] and res.n_clusters_lost == 1
    assert "exclude 1 of 12 clusters" in res.headline()
    assert any("S05" in s for s in res.narrative())
    full = small_registry()
    full["lab"] = full["lab"].fillna(2.0)
    res = complete_case_check(_registry(tmp_path, full, focus="lab"))
    assert res.n_complete == res.n_all == 300
    assert any("Every patient has every model variable recorded" in s for s in res.narrative())
    assert set(res.estimates["method"]) == {"complete_case"}


def test_cc_005_suppression_cannot_be_undone(tmp_path):
    """CC-005: in the shown retention table no suppressed count is recoverable from the row
    relation n_all = n_complete + n_dropped, nor from a column total (published in the text)."""
    rng = np.random.default_rng(5)
    for trial in range(20):
        sizes = rng.integers(3, 60, size=rng.integers(4, 15))
        site = np.repeat([f"S{i}" for i in range(len(sizes))], sizes)
        complete = rng.random(site.size) < rng.uniform(0.3, 1.0)
        table = retention_by_cluster(pd.DataFrame({"site": site}), "site", complete)
        shown = suppressed_retention(table, 11)
        hidden = shown[["n_all", "n_complete", "n_dropped"]] == "suppressed"
        assert not (hidden.sum(axis=1) == 1).any(), "a single hidden cell in a row is recoverable"
        for col in ["n_complete", "n_dropped"]:
            assert hidden[col].sum() != 1, f"one hidden {col} is recoverable from the column total"
        small = (table[["n_complete", "n_dropped"]] > 0) & (table[["n_complete", "n_dropped"]] < 11)
        assert hidden.loc[small.any(axis=1), ["n_complete", "n_dropped"]].to_numpy()[small.loc[small.any(axis=1)].to_numpy()].all()


def test_cc_006_cluster_varying_indicator_effect_detected():
    """CC-006: the partially pooled indicator effects find heterogeneity where missingness is
    informative in half of the clusters only, and shrink noisy clusters most."""
    from hmlib.stats.design import design_matrix
    from hmlib.stats.mixed import fit_random_intercept

    frame = informative_missingness_registry(11, n_clusters=30, per_cluster=150, missing=0.4, effect=1.5)
    y, site = frame["y"].to_numpy(), frame["site"].to_numpy()
    design = design_matrix(frame, ["m"])
    fit = fit_random_intercept(y, design.X, site, family="binomial", term_names=design.term_names)
    table = indicator_effects_by_cluster(frame, fit=fit, design=design, indicator_column="m",
                                         outcome="y", cluster="site", family="binomial")
    assert table.attrs["q_p"] < 0.01 and table.attrs["tau"] > 0.4
    even = table["cluster"] % 2 == 0
    assert table.loc[even, "pooled"].mean() > table.loc[~even, "pooled"].mean() + 0.8
    assert ((table["shrinkage"] >= 0) & (table["shrinkage"] <= 1)).all()


def test_cc_007_no_patient_rows_in_artifact(tmp_path):
    """CC-007: the step's JSON holds aggregates only: no input row appears in it."""
    frame = small_registry()
    res = complete_case_check(_registry(tmp_path, frame))
    text = json.dumps(res.to_dict(), default=str)
    for row in frame.head(50).itertuples(index=False):
        assert f"{row.age}" not in text or f"{row.lab}" not in text


def test_cc_008_artifact_round_trip(tmp_path):
    """CC-008: the typed artifact written to artifacts/complete_case.json reads back equal, its shift
    rows as records, with the step's lost clusters and counts."""
    frame = small_registry()
    frame.loc[frame["site"] == "S05", "lab"] = np.nan
    res = complete_case_check(_registry(tmp_path, frame, cluster_covariates=["site_type"]))
    artifact = res.to_artifact()
    path = artifact.write(tmp_path / "out")
    assert path == tmp_path / "out" / "artifacts" / "complete_case.json"
    back = CompleteCaseArtifact.read(tmp_path / "out")
    assert back == artifact
    assert back.clusters_lost == ("S05",) and back.n_complete == res.n_complete
    assert [(r.variable, r.level) for r in back.shift] == list(zip(res.shift["variable"], res.shift["level"]))
    assert back.shift[0].smd == pytest.approx(res.shift["smd"].iloc[0])
    assert back.shift_by_type and {r["site_type"] for r in back.shift_by_type} == {"A", "B"}


def test_cc_009_renamed_or_missing_shift_field_is_refused(tmp_path):
    """CC-009: a shift row whose field is renamed, or missing, makes reading the artifact an
    ArtifactError naming the field (not a silent gap in the report)."""
    res = complete_case_check(_registry(tmp_path, small_registry()))
    res.to_artifact().write(tmp_path / "out")
    path = tmp_path / "out" / "artifacts" / "complete_case.json"
    original = json.loads(path.read_text())

    renamed = json.loads(json.dumps(original))
    renamed["record"]["shift"][0]["std_mean_diff"] = renamed["record"]["shift"][0].pop("smd")
    path.write_text(json.dumps(renamed))
    with pytest.raises(ArtifactError, match="std_mean_diff"):
        CompleteCaseArtifact.read(tmp_path / "out")

    missing = json.loads(json.dumps(original))
    del missing["record"]["shift"][1]["variable"]
    path.write_text(json.dumps(missing))
    with pytest.raises(ArtifactError, match=r"shift\[1\].*variable"):
        CompleteCaseArtifact.read(tmp_path / "out")

    del original["record"]["n_complete"]
    path.write_text(json.dumps(original))
    with pytest.raises(ArtifactError, match="n_complete"):
        CompleteCaseArtifact.read(tmp_path / "out")
