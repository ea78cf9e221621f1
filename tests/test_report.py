"""The report's summary sections (hmlib.report.summary) and appendix (hmlib.report.assemble).

The demo is rendered once per session in fast mode (:func:`rendered_demo`,
also used by ``test_browser.py``); the summary is checked against the numbers
in that run's artifacts, and against copies of the folder with steps removed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from hmlib import __version__
from hmlib.methods import method_label
from hmlib.report.evidence import SUMMARY_METHODS
from hmlib.report.summary import audit_summary, focus_terms
from hmlib.cli import main
from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.report.assemble import assemble_report, git_commit, package_versions, step_run_times
from hmlib.steps import STEPS
from test_report_integration import patient_rows_in_html

pytestmark = pytest.mark.slow


def rendered_demo(tmp_path_factory) -> tuple[Path, Path]:
    """``(params, report folder)`` of the demo run once in fast mode, shared by the session."""
    root = tmp_path_factory.getbasetemp() / "rendered-demo"
    params, out = root / "params" / "demo.yaml", root / "reports"
    if not (out / "demo" / "report.html").is_file():
        assert main(["demo", "--root", str(root)]) == 0
        assert main(["run", str(params), "--fast", "--out", str(out)]) == 0
    return params, out / "demo"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    params, folder = rendered_demo(tmp_path_factory)
    p = load_registry(load_params(params, fast=True)).params
    return p, folder


def _summary(folder, p):
    return audit_summary(folder, params=p, versions=package_versions(), hmlib_version=__version__,
                         python_version="3.12.0")


def _artifact(folder, step):
    """The record of an artifact file, as parsed JSON."""
    return json.loads((Path(folder) / "artifacts" / f"{step}.json").read_text())["record"]


def _write_artifact(folder, step, record):
    """Write an edited record back in the artifact's envelope (kind and version kept)."""
    path = Path(folder) / "artifacts" / f"{step}.json"
    payload = json.loads(path.read_text())
    payload["record"] = record
    path.write_text(json.dumps(payload))


def _all_text(s) -> str:
    return " ".join(s.executive + s.methods + [c.text for c in s.checklist])


def _copy(folder, tmp_path, drop=(), drop_methods=()) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(folder, dest)
    for step in drop:
        (dest / "artifacts" / f"{step}.json").unlink(missing_ok=True)
    est = pd.read_csv(dest / "estimates.csv")
    est.loc[~est["method"].isin(drop_methods)].to_csv(dest / "estimates.csv", index=False)
    return dest


def test_summary_001_numbers_are_the_artifacts(demo):
    """SUMMARY-001: every number of the executive summary, methods and checklist that a reviewer
    would check is the one in the artifacts / estimates.csv of the same run."""
    p, folder = demo
    s = _summary(folder, p)
    text = " ".join(s.executive)
    diag, cc = _artifact(folder, "diagnose"), _artifact(folder, "complete_case")
    imp, sens = _artifact(folder, "imputation"), _artifact(folder, "sensitivity")

    # who is represented
    assert f"{diag['n_patients']:,} patients in {diag['n_clusters']}" in text
    assert f"keeps {cc['n_complete']:,} of {cc['n_all']:,} patients ({100 * cc['n_complete'] / cc['n_all']:.1f}%)" in text
    for cluster in cc["clusters_lost"]:
        assert cluster in text
    for gap in diag["gap_summary"]:
        if gap["n_structural"]:
            assert f"never recorded in {int(gap['n_structural'])} of {gap['n_clusters']}" in text
    # estimand shift
    assert f"{100 * cc['outcome_complete_cases']:.1f}% among complete cases" in text
    assert f"{100 * cc['outcome_all']:.1f}% in all patients" in text
    for r in cc["shift"]:
        if abs(r["smd"]) > 0.1:
            assert f"(standardised difference {r['smd']:.2f})" in text
    # the focus coefficient by method, from estimates.csv
    est = pd.read_csv(folder / "estimates.csv")
    rows = est.loc[est["method"].isin(SUMMARY_METHODS) & est["term"].isin(focus_terms(est["term"], p.focus))]
    assert len(rows) >= 4
    for _, r in rows.iterrows():
        interval = "95% CrI" if r["method"].startswith("joint_bayes") else "95% CI"
        # a method the report distrusts carries the reason after its name (always so for the missing indicator)
        marker = " (not trusted: biased by design)" if r["method"] == "missing_indicator" else r"( \(not trusted: [a-z ]+\))?"
        assert re.search(re.escape(method_label(r["method"])) + (re.escape(marker) if r["method"] == "missing_indicator"
                                                                  else marker)
                         + re.escape(f" {r['estimate']:.3f} ({interval} {r['ci_lower']:.3f} to {r['ci_upper']:.3f})"),
                         text), r["method"]
    # the verdict is the sensitivity step's own
    assert sens["verdict"] in text

    checklist = {c.item: c.text for c in s.checklist}
    for r in diag["overview"]:
        if r["n_missing"]:
            assert f"{r['variable']} {int(r['n_missing']):,} of {int(r['n']):,} ({100 * r['share_missing']:.1f}%)" \
                in checklist["Amount of missing data per variable"]
    fmi = [r for r in imp["fmi"] if r["term"] == p.focus]
    worst = max(fmi, key=lambda r: r["fmi"])
    number = checklist["Number of imputations"]
    assert f"m = {imp['m']} imputed data sets" in number and f"{worst['fmi']:.2f}" in number
    assert f"about {math.ceil(100 * worst['fmi'])}" in number
    for r in fmi:
        assert f"{method_label(r['method'])} df {r['df']:.1f}" in checklist["Pooling"]
    cv = diag["cluster_variation"][p.focus]
    assert f"SD of its missingness {cv['cluster_sd']:.2f}" in checklist["Missing data by site"]
    assert f"{len(sens['scenarios'])} of {len(sens['scenarios'])} scenarios ran" in \
        checklist["Sensitivity to missing not at random"]
    assert f"hmlib {__version__}" in checklist["Method and software"]
    # the joint model ran (fast mode): its estimate is labelled as a credible interval, and a
    # fit that missed the convergence gate is named as such, never as a plain result
    joint = _artifact(folder, "joint_model")
    assert "CrI" in text
    if not joint["converged"]:
        assert "NOT CONVERGED" in text


def test_summary_002_absent_steps_are_said_absent(demo, tmp_path):
    """SUMMARY-002: with the imputation, joint-model and sensitivity artifacts (and their estimates)
    removed, the summary says so and shows none of their numbers."""
    p, folder = demo
    mi = ["flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi"]
    copy = _copy(folder, tmp_path, drop=("imputation", "joint_model", "sensitivity"),
                 drop_methods=mi + [m for m in pd.read_csv(folder / "estimates.csv")["method"].unique()
                                    if m.startswith(("sensitivity", "joint_bayes"))])
    s = _summary(copy, p)
    text = _all_text(s)
    assert set(s.absent) == {"imputation", "joint_model", "sensitivity"}
    assert "Sensitivity analysis (step 5) is absent from this report" in text
    assert "step 3 (multiple imputation) is absent" in text.lower()
    checklist = {c.item: c.text for c in s.checklist}
    assert checklist["Pooling"].startswith("Not applicable")
    assert checklist["Sensitivity to missing not at random"].startswith("Not done")
    assert "Only the complete-case estimate is available" in checklist["Comparison with complete-case analysis"]
    for label in ("flat MI", "multilevel MI", "Rubin's rules with"):
        assert label not in " ".join(s.executive) + checklist["Pooling"]
    verdict = _artifact(folder, "sensitivity")["verdict"]
    assert verdict not in text


def test_summary_003_empty_folder(tmp_path, demo):
    """SUMMARY-003: a folder with no artifact at all gives a summary made only of absences."""
    p, _ = demo
    (tmp_path / "artifacts").mkdir()
    s = _summary(tmp_path, p)
    assert s.absent == ["diagnose", "complete_case", "imputation", "joint_model", "sensitivity"]
    text = _all_text(s)
    assert "Step 1 (diagnose) is absent" in text
    # no number at all, apart from the step numbers
    assert not re.search(r"\d", re.sub(r"[Ss]tep \d", "", " ".join(s.executive)))


def test_summary_004_joint_model_artifact_is_used(demo, tmp_path):
    """SUMMARY-004: a joint-model artifact (the keys of JointModelResult.to_dict) adds its
    estimate (credible interval), the clusters that borrow most, its sampler settings and
    convergence message."""
    p, folder = demo
    copy = _copy(folder, tmp_path)
    retention = _artifact(folder, "complete_case")["retention"]
    clusters = [r["cluster"] for r in retention]
    joint = _artifact(copy, "joint_model")
    template = joint["partial_pooling"][0]
    joint["partial_pooling"] = [
        {**template, "cluster": c, "n_patients": 100, "n_observed": 0 if i == 0 else 10 * i,
         "measured": i != 0, "shrinkage": 1.0 if i == 0 else 1 / (1 + i)} for i, c in enumerate(clusters[:5])]
    joint.update(converged=True, convergence_message="converged: R-hat <= 1.004, bulk ESS >= 512",
                 settings={**joint["settings"], "chains": 2, "draws": 300, "tune": 300, "seed": 99})
    _write_artifact(copy, "joint_model", joint)
    est = pd.read_csv(copy / "estimates.csv")
    row = est.loc[(est["method"] == "multilevel_mi") & (est["term"] == p.focus)].assign(
        method="joint_bayes", estimate=0.3141, ci_lower=0.1012, ci_upper=0.5273)
    pd.concat([est, row]).to_csv(copy / "estimates.csv", index=False)

    s = _summary(copy, p)
    text = " ".join(s.executive)
    assert "joint_model" not in s.absent
    assert "joint Bayesian model 0.314 (95% CrI 0.101 to 0.527)" in text
    assert f"{clusters[1]} (0.50), {clusters[2]} (0.33) and {clusters[3]} (0.25)" in text
    assert f"1 site(s) never recorded the focus variable and borrow entirely ({clusters[0]})" in text
    methods = " ".join(s.methods)
    assert "2 chains x 300 draws" in methods and "seed 99" in methods
    assert f"nutpie {package_versions()['nutpie']}" in methods
    assert "converged: R-hat <= 1.004" in {c.item: c.text for c in s.checklist}["Diagnostics of the imputations"]


def test_summary_005_small_counts_are_not_printed(demo, tmp_path):
    """SUMMARY-005: a per-variable count below min_cell is never printed (nor its share)."""
    p, folder = demo
    copy = _copy(folder, tmp_path)
    diag = _artifact(copy, "diagnose")
    sbp = next(r for r in diag["overview"] if r["variable"] == "sbp")
    sbp.update(n_missing=3.0, n_observed=sbp["n"] - 3, share_missing=3 / sbp["n"])
    _write_artifact(copy, "diagnose", diag)
    s = _summary(copy, p)
    amount = {c.item: c.text for c in s.checklist}["Amount of missing data per variable"]
    assert f"sbp: suppressed (counts below {p.privacy.min_cell} are not shown)" in amount
    assert "sbp 3 of" not in amount and f"{100 * 3 / sbp['n']:.1f}%" not in amount
    row = s.missing_table.set_index("variable").loc["sbp"]
    assert pd.isna(row["n_missing"]) and pd.isna(row["share_missing"])


def test_report_html_001_sections_in_order(demo):
    """REPORT-HTML-001: the key messages and the findings follow the title and precede how to read the report
    and the contents panel; methods, limitations, the site profiles and the glossary precede the appendix, each
    with a contents entry; the appendix names the commit, the input's SHA-256, the seed and every executed step's
    time; nothing is fetched from a CDN (the page's one script is inline)."""
    p, folder = demo
    html = (folder / "report.html").read_text()
    order = [html.index(x) for x in ("<h1", 'id="key-messages"', 'id="executive-summary"', 'id="how-to-read"',
                                     'id="hm-contents"', f'id="{STEPS[0].anchor}"', 'id="methods"',
                                     'id="limitations"', 'id="site-profiles"', 'id="glossary"',
                                     'id="reproducibility"')]
    assert order == sorted(order)
    nav = html.split('id="hm-contents"')[1].split("</nav>")[0]
    for title in ("Methods", "Limitations and reporting checklist", "Site profiles", "Glossary", "Reproducibility"):
        assert f". {title}</a>" in nav, title
    commit = git_commit()
    assert f"git commit: {commit}" in html
    registry = load_registry(load_params(folder.parent.parent / "params" / "demo.yaml", fast=True))
    assert registry.data_sha256 in html
    assert f"params seed {p.seed}" in html
    for step in STEPS:
        if step.is_built:
            assert f"{step.key} " in html.split('id="reproducibility"')[1]
    assert "cdnjs" not in html and "<script src=" not in html


def test_report_html_002_earlier_step_times_kept(demo, tmp_path):
    """REPORT-HTML-002: re-assembling after one step re-ran keeps the other steps' times (from
    their executed notebooks) and marks which ran in this run."""
    p, folder = demo
    copy = _copy(folder, tmp_path)
    rows = step_run_times(copy, {"complete_case": 1.25})
    by_step = {r["step"]: r for r in rows}
    assert by_step["complete_case"]["seconds"] == 1.25 and by_step["complete_case"]["this_run"]
    meta = json.loads((copy / "notebooks" / "01_diagnose.ipynb").read_text())["metadata"]["papermill"]
    assert by_step["diagnose"]["seconds"] == meta["duration"] and not by_step["diagnose"]["this_run"]
    registry = load_registry(load_params(folder.parent.parent / "params" / "demo.yaml", fast=True))
    html = assemble_report(registry, copy, step_seconds={"complete_case": 1.25}).read_text()
    assert "complete_case 1.2 s (this run, fast mode)" in html
    assert f"diagnose {meta['duration']:.1f} s (earlier run, finished {meta['end_time']}" in html


def test_report_html_003_not_a_git_checkout(tmp_path):
    """REPORT-HTML-003: outside a git checkout the appendix says so."""
    assert git_commit(tmp_path) == "not a git checkout"


@pytest.mark.parametrize("params_file", sorted(p.name for p in (REPO / "params").glob("*.yaml")))
def test_report_privacy_001_no_input_row_in_any_report(params_file, demo, tmp_path):
    """REPORT-PRIVACY-001: no table row of any bundled params file's report (summary, methods,
    checklist and appendix included) carries the values of one input row. The real datasets run
    steps 1-2 only (time budget); the demo's report is the full fast run."""
    if params_file == "demo.yaml":
        p, folder = demo
        params = load_params(folder.parent.parent / "params" / "demo.yaml")
        html = (folder / "report.html").read_text()
    else:
        out = tmp_path / "reports"
        assert main(["run", str(REPO / "params" / params_file), "--fast", "--only", "diagnose,complete_case",
                     "--out", str(out)]) == 0
        params = load_params(REPO / "params" / params_file)
        html = (out / params.name / "report.html").read_text()
        assert 'id="limitations"' in html
    data = pd.read_csv(params.data) if params.data.suffix == ".csv" else pd.read_parquet(params.data)
    # Identifying columns: numeric with many distinct values. 0/1 codes and small integers match
    # counts in any aggregate table, so with them three matching cells would mean nothing.
    columns = [c for c in dict.fromkeys([*params.predictors, params.outcome])
               if pd.api.types.is_numeric_dtype(data[c]) and data[c].nunique() >= 20]
    assert len(columns) >= 2, columns
    assert patient_rows_in_html(html, data, columns, min_matches=min(3, len(columns))) == []
