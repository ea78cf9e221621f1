"""End to end: steps 1-3 of the report with the demo's incomplete lactate cut into 2, 3 and 5 levels.

``hmreport run --only diagnose,complete_case,imputation --fast`` (papermill, a real kernel, the
report assembled) on the demo registry with ``lactate`` replaced by ``lactate_band``, its observed
values cut at quantiles into levels ``q1 < q2 < ...`` (sorted order = clinical order, so ``q1`` is
the reference level). Steps 4-5 are not run here.

Test IDs
--------
CAT-REPORT-001  for 2, 3 and 5 levels: every step runs, estimates.csv holds each non-reference
                level for complete cases and every imputation method and the missing-category
                model's focus[missing]; the estimates point the demo's way (higher band, higher
                mortality); the artifacts carry the levels; the executive summary states each level
                against the reference level and the missing level as the missing-category model's
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from hmlib.report.runner import run_report
from hmlib.results import read_estimates
from hmlib.simulate.demo import simulate_registry
from hmlib.steps.complete_case import CompleteCaseArtifact
from hmlib.steps.diagnose import DiagnoseArtifact
from hmlib.steps.imputation import ImputationArtifact

pytestmark = pytest.mark.slow

IMPUTATION_METHODS = ("flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi")


def _cut_demo(tmp_path, k: int):
    """The demo registry with lactate cut at the quantiles of its observed values into ``k`` levels."""
    frame = simulate_registry().data
    observed = frame["lactate"].dropna()
    edges = np.quantile(observed, np.linspace(0, 1, k + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    labels = [f"q{j + 1}" for j in range(k)]
    frame["lactate_band"] = pd.cut(frame["lactate"], edges, labels=labels).astype(object)
    frame = frame.drop(columns=["lactate"])
    frame.to_csv(tmp_path / "demo_cut.csv", index=False)
    params = yaml.safe_load((REPO / "params" / "demo.yaml").read_text())
    params.pop("truth")                      # the demo's truth is lactate's, not the band's
    params.update(name=f"demo_cut{k}", data="demo_cut.csv", focus="lactate_band",
                  predictors=["age", "sex", "severity", "lactate_band", "sbp"])
    path = tmp_path / f"demo_cut{k}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path, labels


@pytest.mark.parametrize("k", [2, 3, 5])
def test_cat_report_001_demo_cut_into_levels(tmp_path, k):
    """CAT-REPORT-001: steps 1-3 run end to end on a categorical focus of k levels and make sense."""
    params, labels = _cut_demo(tmp_path, k)
    result = run_report(params, only="diagnose,complete_case,imputation", fast=True, reports_root=tmp_path / "reports")
    out = result.output_dir
    assert result.status == "complete" and result.report.is_file()
    estimates = read_estimates(out / "estimates.csv")
    terms = [f"lactate_band[{level}]" for level in labels[1:]]
    for method in ("complete_case", "missing_indicator", *IMPUTATION_METHODS):
        rows = estimates.loc[estimates["method"] == method].set_index("term")
        assert set(terms) <= set(rows.index), method
        # the demo's lactate raises mortality: the top band against the bottom one points up
        assert rows.loc[terms[-1], "estimate"] > 0, method
    indicator = estimates.loc[(estimates["method"] == "missing_indicator") & (estimates["term"] == "lactate_band[missing]")]
    assert len(indicator) == 1 and np.isfinite(indicator["std_error"].iloc[0])
    assert not (estimates["term"] == "lactate_band_missing").any()
    diagnose = DiagnoseArtifact.read(out)
    assert diagnose.focus_levels is not None and diagnose.focus_levels.levels == tuple(labels)
    complete_case = CompleteCaseArtifact.read(out)
    assert complete_case.focus_levels == tuple(labels) and complete_case.indicator_term == "lactate_band[missing]"
    imputation = ImputationArtifact.read(out)
    assert imputation.focus_levels == tuple(labels)
    assert not imputation.failed
    assert {r["source"] for r in imputation.level_distributions} >= set(IMPUTATION_METHODS)
    narrative = " ".join(complete_case.narrative) + " ".join(imputation.narrative)
    for term in terms:
        assert f"The {term} coefficient against lactate_band = q1" in narrative
    assert "numeric focus variables only" not in narrative
    html = result.report.read_text()
    assert "numeric focus variables only" not in html
    for term in terms:                                                   # the executive summary
        assert f"The {term} coefficient against lactate_band = q1 by method:" in html
    assert ("Patients without a recorded lactate_band (lactate_band[missing] against lactate_band = q1, "
            "missing-category model):") in html
    assert "The lactate_band[missing] coefficient by method" not in html
