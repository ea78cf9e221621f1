"""The full report (all five steps, fast settings) on every params file in ``params/`` with its incomplete focus cut
into levels (issue #17: "the full report runs on every params file with any incomplete predictor made categorical").

For each params file with an incomplete numeric predictor (its ``focus``, else the most often missing one), the
observed values are cut at quantiles into ``k`` levels ``q1 < q2 < ...`` and the variable is declared categorical
(and ordinal for ``k = 5``); ``k`` cycles through 2, 3 and 5 over the files in sorted order, so each size is
run on real data. The demo is left out here: ``tests/test_categorical_report.py`` runs it at 2, 3 and 5 levels
(steps 1-3) and ``tests/test_categorical_steps45.py`` at 3 (steps 4-5). A file with no incomplete numeric
predictor (cdystonia: only its outcome is incomplete) is listed as such, not silently passed.

Test IDs
--------
CAT-PARAMS-001  every such file: ``hmreport run --fast`` completes all five steps; estimates.csv has each
                non-reference level for complete cases, every imputation method (stratified imputation may
                fail when its strata are too small, as with one stratum per patient, and then says why) and
                the joint model; step 5
                states its MNAR deltas on the log-odds scale and its verdict names any family that did not run;
                the report's summary never gives the categorical focus's effect in SDs.
CAT-PARAMS-002  which files have an incomplete numeric predictor is what the data say (the list below is checked).
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from hmlib.report.runner import run_report
from hmlib.results import read_estimates
from hmlib.steps.imputation import ImputationArtifact
from hmlib.steps.sensitivity import SensitivityArtifact
from hmlib.steps.sensitivity_verdict import FAMILY_TEXT

LEVELS = (2, 3, 5)
#: Params files whose data have no incomplete numeric predictor (checked by CAT-PARAMS-002).
WITHOUT_INCOMPLETE_PREDICTOR = {"cdystonia", "cdystonia_time"}
IMPUTATION_METHODS = ("flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi")


def _params_files() -> list[Path]:
    return sorted(p for p in (REPO / "params").glob("*.yaml") if p.stem != "demo")


def _incomplete_numeric(path: Path) -> tuple[dict, pd.DataFrame, str | None]:
    """The params, the data and the predictor to cut (the focus, else the most often missing numeric one)."""
    params = yaml.safe_load(path.read_text())
    frame = pd.read_csv((path.parent / params["data"]).resolve())
    declared = set(params.get("categorical") or [])
    numeric = [c for c in params["predictors"] if c not in declared and pd.api.types.is_numeric_dtype(frame[c])
               and frame[c].isna().any() and frame[c].nunique() > 5]
    if params.get("focus") in numeric:
        return params, frame, params["focus"]
    return params, frame, max(numeric, key=lambda c: frame[c].isna().mean()) if numeric else None


def _cases():
    files = [p for p in _params_files() if p.stem not in WITHOUT_INCOMPLETE_PREDICTOR]
    return [pytest.param(p, LEVELS[i % len(LEVELS)], id=f"{p.stem}-{LEVELS[i % len(LEVELS)]}")
            for i, p in enumerate(files)]


def test_cat_params_002_which_files_have_an_incomplete_numeric_predictor():
    """CAT-PARAMS-002: the files left out of CAT-PARAMS-001 are exactly those without an incomplete numeric
    predictor, and at least three real-data files are run."""
    without = {p.stem for p in _params_files() if _incomplete_numeric(p)[2] is None}
    assert without == WITHOUT_INCOMPLETE_PREDICTOR
    assert len(_cases()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("path,k", _cases())
def test_cat_params_001_full_report_with_the_focus_cut_into_levels(tmp_path, path, k):
    """CAT-PARAMS-001: see the module docstring."""
    params, frame, variable = _incomplete_numeric(path)
    observed = frame[variable].dropna()
    edges = np.unique(np.quantile(observed, np.linspace(0, 1, k + 1)))
    assert edges.size == k + 1, f"{variable} has too few distinct values for {k} levels"
    edges[0], edges[-1] = -np.inf, np.inf
    labels = [f"q{j + 1}" for j in range(k)]
    band = f"{variable}_band".replace(".", "_")
    frame[band] = pd.cut(frame[variable], edges, labels=labels).astype(object)
    frame = frame.drop(columns=[variable])
    frame.to_csv(tmp_path / "data.csv", index=False)
    params.pop("truth", None)
    params.update(name=f"{path.stem}_cut{k}", data=str(tmp_path / "data.csv"), focus=band,
                  predictors=[band if c == variable else c for c in params["predictors"]],
                  categorical=sorted(set(params.get("categorical") or []) | {band}))
    if k == 5:
        params["ordinal"] = [band]
    cut = tmp_path / "params.yaml"
    cut.write_text(yaml.safe_dump(params, sort_keys=False))

    result = run_report(cut, fast=True, reports_root=tmp_path / "reports")
    assert result.status == "complete" and result.report.is_file(), result.message
    out = result.output_dir
    estimates = read_estimates(out / "estimates.csv")
    terms = {f"{band}[{level}]" for level in labels[1:]}
    failed = ImputationArtifact.read(out).failed
    assert set(failed) <= {"stratified_mi"}, failed  # one stratum per patient (pbcseq) is too small: said, not hidden
    for method in ("complete_case", *IMPUTATION_METHODS, "joint_bayes"):
        if method in failed:
            assert not (estimates["method"] == method).any() and failed[method]
            continue
        # fast settings may leave the joint model short of its gate: then its rows are 'joint_bayes:not_converged'
        rows = estimates.loc[estimates["method"].str.split(":").str[0] == method]
        assert terms <= set(rows["term"]), method
        assert np.isfinite(rows.loc[rows["term"].isin(terms), "estimate"]).all(), method
    sens = SensitivityArtifact.read(out)
    assert sens.delta_scale == "log odds"
    assert set(sens.focus_terms) == terms
    for family in sens.families_run:
        if family.missing:
            assert FAMILY_TEXT[family.family] in sens.verdict and not sens.verdict.startswith("robust")
    text = unescape(re.sub(r"<[^>]+>", "", result.report.read_text()))   # glossary links inside sentences
    assert f"Sensitivity verdict: {sens.verdict}" in text
    assert "numeric focus variables only" not in text
    assert "(vs not) higher" not in text                # a two-level focus is named by its level
