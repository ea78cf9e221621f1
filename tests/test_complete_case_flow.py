"""Step 2's CONSORT-style flow: counts that add up, small counts that cannot be recovered, a figure that renders.

Checks :func:`hmlib.stats.patient_flow.patient_flow` against a registry with
known missingness (:func:`hmlib.simulate.registries.graded_missingness_registry`),
:func:`hmlib.steps.complete_case_flow.published_flow` against the bounds a reader
could compute by linear programming from what it publishes, and
:func:`hmlib.figures.complete_case.flow_diagram`. Each test names what it checks
by a stable ID (``FLOW-...``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from scipy.optimize import linprog

from hmlib.data import load_registry
from hmlib.figures.complete_case import FLOW_FONT_PT, FLOW_WIDTH_IN, flow_diagram
from hmlib.figures.style import caption_of
from hmlib.params import load_params
from hmlib.simulate.registries import GRADED_MISSING_PER_CLUSTER, graded_missingness_registry
from hmlib.stats.patient_flow import patient_flow
from hmlib.steps.complete_case import CompleteCaseArtifact, complete_case_check
from hmlib.steps.complete_case_flow import published_flow

#: Rows (within each cluster of 30) whose outcome is removed, for clusters C0 and C4.
Y_GAPS = {"C0": 4, "C4": 30}


def known_frame() -> pd.DataFrame:
    """The graded registry (x missing exactly 0, 3, ..., 24, 0 per cluster of 30, plus a cluster C10 of 6 that
    never records x) with y removed from the first 4 patients of C0 (x all recorded) and all 30 of C4."""
    frame = graded_missingness_registry(0, small_cluster=True)
    for site, k in Y_GAPS.items():
        rows = frame.index[frame["site"] == site][:k]
        frame.loc[rows, "y"] = np.nan
    return frame


def test_FLOW_001_counts_add_up_on_known_missingness():
    """FLOW-001: in the model's order (y, age, x, z) y excludes 4 + 30 patients, x the x-missing patients whose y is
    recorded (108 - 12 in C4 + 6 in C10), age and z none; exclusions + complete cases = 306 patients; C4 (y never
    recorded) and C10 (x never recorded) are lost, 9 of 11 clusters remain; per-variable totals overlap."""
    frame = known_frame()
    flow = patient_flow(frame, "site", ["y", "age", "x", "z"])
    ex = flow.exclusions.set_index("variable")
    x_missing = sum(GRADED_MISSING_PER_CLUSTER) + 6
    assert flow.n_patients == 306 and flow.n_clusters == 11
    assert ex.loc["y", "n_excluded"] == 34
    assert ex.loc["x", "n_excluded"] == x_missing - GRADED_MISSING_PER_CLUSTER[4]   # C4's already excluded by y
    assert ex.loc["age", "n_excluded"] == ex.loc["z", "n_excluded"] == 0
    assert ex.loc["x", "n_missing"] == x_missing and ex.loc["y", "n_missing"] == 34
    assert ex["n_excluded"].sum() + flow.n_complete == flow.n_patients
    assert flow.n_complete == int(frame[["y", "age", "x", "z"]].notna().all(axis=1).sum())
    assert flow.n_clusters_lost == 2 and flow.n_clusters_complete == 9
    assert ex.loc["y", "n_clusters_remaining"] == 10 and ex.loc["x", "n_clusters_remaining"] == 9


def test_FLOW_002_step_two_publishes_the_flow(tmp_path):
    """FLOW-002: complete_case_check carries the flow in the model's order (outcome, then predictors), agreeing with
    its own complete-case count; the artifact reads it back as typed records; no count is suppressed here."""
    frame = known_frame()
    frame.to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "name": "f", "data": "r.csv", "cluster": "site", "outcome": "y", "outcome_family": "gaussian",
        "predictors": ["age", "x"], "focus": "x", "fast": True, "privacy": {"min_cell": 3}}))
    result = complete_case_check(load_registry(load_params(tmp_path / "p.yaml")))
    flow = result.flow
    assert [e.variable for e in flow.exclusions] == ["y", "age", "x"]
    assert flow.n_complete == result.n_complete and flow.n_patients == result.n_all == 306
    assert flow.n_clusters_lost == result.n_clusters_lost == 2 and not flow.any_suppressed
    record = CompleteCaseArtifact.from_json(result.to_artifact().to_json())
    assert record.flow == flow and record.flow.exclusions[0].n_excluded == 34
    assert "306 patients in 11 sites" in flow.sentence("site") and "lose every patient" in flow.sentence("site")
    assert [f.get_size_inches()[0] for f in result.figures()["flow"]] == [FLOW_WIDTH_IN]


def reader_bounds(record, n_patients: int) -> dict:
    """What a reader can infer about each hidden count from the published ones: LP bounds (each hidden >= 1) under
    sum(exclusions) + complete = N, excluded + complete = N and sum(exclusions) = excluded."""
    k = len(record.exclusions)
    shown = [e.n_excluded for e in record.exclusions] + [record.n_complete, record.n_excluded]
    hidden = [j for j, v in enumerate(shown) if isinstance(v, str)]
    relations = []
    for coefficients, total in (([1] * k + [1, 0], n_patients), ([0] * k + [1, 1], n_patients),
                                ([1] * k + [0, -1], 0)):
        known = sum(c * shown[j] for j, c in enumerate(coefficients) if j not in hidden)
        relations.append(([coefficients[j] for j in hidden], total - known))
    a_eq, b_eq = [r[0] for r in relations], [r[1] for r in relations]
    out = {}
    for pos, j in enumerate(hidden):
        c = np.zeros(len(hidden))
        c[pos] = 1
        lo = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=[(1, None)] * len(hidden)).fun
        hi = -linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=[(1, None)] * len(hidden)).fun
        out[j] = (lo, hi)
    return out


@pytest.mark.parametrize("missing_y, missing_x, expected_hidden", [
    (6, 200, 2),      # one small exclusion: it and the other exclusion hidden, the complete cases shown
    (0, 5, 3),        # the only exclusion is small: it, the excluded total and the complete cases hidden
    (3, 4, 4),        # two small exclusions adding up to 7: the totals hidden too
    (0, 295, 3),      # 5 complete cases: they, the excluded total and the largest exclusion hidden
    (30, 5, 3),       # the outcome's 30 (public in step 1) stays shown: the totals complement the small one
])
def test_FLOW_003_small_counts_cannot_be_recovered(missing_y, missing_x, expected_hidden):
    """FLOW-003: counts of 1-10 are never shown and cannot be pinned below 11 from the published counts and the
    extract size (LP bounds over the additive relations); every hidden count is shown as the range a reader can
    infer, and that range's upper end matches the LP bound; zero counts stay shown; the outcome's exclusions (all
    its missing values, which step 1 publishes when 11 or more) are never a complement."""
    n, min_cell = 300, 11
    frame = pd.DataFrame({"site": np.repeat(np.arange(10), 30).astype(str), "y": 1.0, "x": 1.0, "w": 1.0})
    frame.loc[frame.index[:missing_y], "y"] = np.nan
    frame.loc[frame.index[-missing_x:], "x"] = np.nan
    flow = patient_flow(frame, "site", ["y", "w", "x"])
    record = published_flow(flow, min_cell)
    shown = [e.n_excluded for e in record.exclusions] + [record.n_complete, record.n_excluded]
    assert sum(isinstance(v, str) for v in shown) == expected_hidden and record.any_suppressed
    assert record.exclusions[1].n_excluded == 0                                      # w: nothing missing
    assert not any(isinstance(v, int) and 0 < v < min_cell for v in shown)
    true = [*flow.exclusions["n_excluded"], flow.n_complete, flow.n_excluded]
    for cell, (lo, hi) in reader_bounds(record, n).items():
        assert hi >= min_cell, f"{cell} is known to be below {min_cell}: [{lo}, {hi}]"
    for j, (lo, hi) in reader_bounds(record, n).items():
        assert lo - 1e-9 <= true[j] <= hi + 1e-9
        assert shown[j] == f"1 to {int(round(hi)):,}"
    if expected_hidden == 2:
        assert record.n_complete == flow.n_complete                                 # kept where possible
    if missing_y >= min_cell:                      # all of y's missing values: step 1 shows that count
        assert record.exclusions[0].n_excluded == missing_y
    assert "suppressed" in record.note()
    assert not published_flow(patient_flow(frame.fillna(1.0), "site", ["y", "w", "x"]), min_cell).any_suppressed


def test_FLOW_004_the_figure_renders_within_the_page_at_9_points():
    """FLOW-004: the flow figure is 7.2 in wide, every text is at least 9 pt and inside the figure, no two boxes
    overlap, the published counts appear (a suppressed one as its range), and it carries a caption."""
    frame = known_frame()
    frame.loc[frame.index[:5], "age"] = np.nan                    # 5 newly excluded patients in C0: suppressed
    flow = published_flow(patient_flow(frame, "site", ["y", "age", "x", "z"]), 11)
    fig = flow_diagram(flow, noun="site")
    assert fig.get_size_inches()[0] == pytest.approx(FLOW_WIDTH_IN)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    page = fig.bbox
    texts = [t for t in fig.axes[0].texts if t.get_text()]
    assert texts and all(t.get_fontsize() >= FLOW_FONT_PT for t in texts)
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in texts]
    for b in boxes:
        assert b.x0 >= page.x0 - 1 and b.x1 <= page.x1 + 1 and b.y0 >= page.y0 - 1 and b.y1 <= page.y1 + 1
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j])
    text = "\n".join(t.get_text() for t in texts)
    assert "306 patients in 11 sites" in text and "2 site(s) lost entirely" in text
    assert f"missing age: {flow.exclusions[1].n_excluded}" in text and flow.exclusions[1].suppressed
    assert "suppressed" in caption_of(fig)[1]
