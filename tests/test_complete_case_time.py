"""Step 2 over time (params ``time``, issue #16): complete cases and the baseline outcome by visit.

Test IDs
--------
CC-TIME-001  each visit's complete-case share and the baseline outcome (first recorded value) of all patients and
             of the patients complete at that visit equal a by-hand computation; the SMD is Austin's
CC-TIME-002  privacy: no count is published; a visit with from 1 to min_cell - 1 complete or dropped visits is
             blank; a visit where step 1 hides the number of patients, missing or observed is blank too
CC-TIME-003  with time the narrative counts the patients without a complete visit instead of naming them, and
             says how the share moves over the visits; the artifact (version 3) round-trips
CC-TIME-004  without time nothing changes: over_time is None, the methods text and narrative say nothing of visits
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.simulate.longitudinal import longitudinal_registry
from hmlib.stats.complete_case import complete_case_mask
from hmlib.steps.complete_case import CompleteCaseArtifact, complete_case_check, methods_text
from hmlib.steps.complete_case_time import check_over_time

PARAMS = ("name: t\ndata: d.csv\ncluster: patient\nhigher_levels: [site]\noutcome: y\noutcome_family: gaussian\n"
          "predictors: [x, month]\nfocus: x\nseed: 1\n")


def _registry(folder, frame, extra=""):
    frame.to_csv(folder / "d.csv", index=False)
    (folder / "p.yaml").write_text(PARAMS + extra)
    return load_registry(load_params(folder / "p.yaml"))


@pytest.fixture(scope="module")
def frame():
    return longitudinal_registry(6, n_sites=12, n_patients=400, n_visits=6).drop(columns=["date", "visit"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory, frame):
    return _registry(tmp_path_factory.mktemp("cct"), frame, "time: month\n")


def test_cc_time_001_by_hand(registry, frame):
    """CC-TIME-001: see the module docstring."""
    complete = complete_case_mask(registry.frame, ["y", "x", "month"])
    check = check_over_time(registry, complete)
    table = check.frame().set_index("visit")
    first = frame.dropna(subset=["y"]).sort_values("month").groupby("patient")["y"].first()
    for visit in sorted(frame["month"].unique()):
        at = (frame["month"] == visit).to_numpy()
        row = table.loc[visit]
        if np.isnan(row["share_complete"]):
            continue
        assert row["share_complete"] == pytest.approx(complete[at].mean(), rel=1e-12)
        stayed = frame.loc[at & complete, "patient"].unique()
        a, b = first.to_numpy(), first.loc[first.index.isin(stayed)].to_numpy()
        assert row["baseline_all"] == pytest.approx(a.mean(), rel=1e-12)
        assert row["baseline_complete"] == pytest.approx(b.mean(), rel=1e-12)
        smd = (b.mean() - a.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
        assert row["smd"] == pytest.approx(smd, rel=1e-9)
    assert table["share_complete"].notna().sum() >= 4


def test_cc_time_002_privacy(tmp_path, frame):
    """CC-TIME-002: see the module docstring."""
    small = frame.copy()
    # visit 15: only 5 visits dropped (x recorded everywhere else at that visit)
    at = small["month"] == 15
    small.loc[at, "x"] = small.loc[at, "x"].fillna(0.5)
    small.loc[at, "y"] = small.loc[at, "y"].fillna(10.0)
    small.loc[small.index[at.to_numpy()][:5], "x"] = np.nan
    registry = _registry(tmp_path, small, "time: month\n")
    check = check_over_time(registry, complete_case_mask(registry.frame, ["y", "x", "month"]))
    record = check.to_json()
    assert not any(key.startswith("n_") for row in record["rows"] for key in row)
    row = check.frame().set_index("visit").loc[15.0]
    assert row.isna().all()
    assert check.frame().drop(columns="visit").notna().any(axis=1).sum() >= 3


def test_cc_time_003_narrative_and_artifact(registry):
    """CC-TIME-003: see the module docstring."""
    result = complete_case_check(registry)
    text = " ".join(result.narrative())
    assert "Over the visits: complete cases are" in text and "mean baseline y" in text
    assert "Patients with no complete visit" in text and "Clusters with no complete case" not in text
    record = result.to_artifact()
    assert CompleteCaseArtifact.VERSION == 3 and record.over_time is not None
    assert CompleteCaseArtifact.from_json(record.to_json()) == record
    ev = type("Ev", (), {"min_cell": 11})()
    assert "Over the visits (month, by visit time)" in methods_text(record, ev)[0]


def test_cc_time_004_without_time(tmp_path, frame):
    """CC-TIME-004: see the module docstring."""
    registry = _registry(tmp_path, frame)
    result = complete_case_check(registry)
    assert result.over_time is None and result.to_artifact().over_time is None
    assert not any("Over the visits" in s for s in result.narrative())
    ev = type("Ev", (), {"min_cell": 11})()
    assert "Over the visits" not in methods_text(result.to_artifact(), ev)[0]
