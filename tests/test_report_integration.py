"""End to end: `hmreport run` on the demo and on every bundled params file.

These execute the notebooks with papermill in a real kernel (seconds each).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from conftest import REPO
from cross_section import cross_section_leaks
from hmlib.cli import main
from hmlib.params import load_params
from hmlib.simulate.registries import small_registry
from hmlib.steps import STEPS, get_step

pytestmark = pytest.mark.slow


class _Rows(HTMLParser):
    """Collect the text of every table row in an HTML page."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def patient_rows_in_html(html: str, frame: pd.DataFrame, columns, min_matches: int = 3) -> list:
    """Table rows of ``html`` that carry ``min_matches`` or more values of one input row."""
    parser = _Rows()
    parser.feed(html)
    html_rows = [set(r) for r in parser.rows]
    hits = []
    for record in frame[list(columns)].itertuples(index=False):
        values = {str(v) for v in record if pd.notna(v)}
        values |= {f"{v:g}" for v in record if isinstance(v, float) and pd.notna(v)}
        for cells in html_rows:
            if len(values & cells) >= min_matches:
                hits.append((record, sorted(cells)[:8]))
    return hits


def test_report_001_demo_end_to_end(tmp_path):
    """REPORT-001: `hmreport demo` then `hmreport run --fast` renders a report with every section,
    an estimates.csv in the results contract, no patient-level row and no per-cluster count that step 1
    hides (PRIV-CROSS-001, tests/cross_section.py); step 5's prior scenarios come
    from step 4's saved draws (reused, reweighted), as the methods paragraph says."""
    assert main(["demo", "--root", str(tmp_path)]) == 0
    params = tmp_path / "params" / "demo.yaml"
    out = tmp_path / "reports"
    assert main(["run", str(params), "--fast", "--out", str(out)]) == 0
    html = (out / "demo" / "report.html").read_text()
    contents = html[html.index('<nav id="hm-contents"'):html.index("</nav>")]
    for step in STEPS:
        assert f'id="{step.anchor}"' in html
        # rep-a's contents panel lists each step by its section heading (it replaced the list of step anchors)
        assert re.search(rf'<a href="#[^"]+">{step.number}\. ', contents), step.key
        if not step.is_built:
            assert "Not built yet" in html
    assert 'id="reproducibility"' in html
    assert "<script>alert" not in html
    est = pd.read_csv(out / "demo" / "estimates.csv")
    assert list(est.columns) == ["method", "term", "estimate", "std_error", "ci_lower", "ci_upper",
                                 "n_patients", "n_clusters"]
    data = pd.read_csv(load_params(params).data)
    assert patient_rows_in_html(html, data, ["age", "severity", "lactate", "sbp"]) == []
    assert not re.search(r"<img[^>]+src=\"(?!data:)", html), "images must be embedded"
    # step 5's prior scenarios reuse and reweight step 4's saved draws, even in fast mode, and the methods say so
    assert (out / "demo" / "artifacts" / "joint_posterior.npz").is_file()
    sens = get_step("sensitivity").read_artifact(out / "demo")
    priors = {s.scenario: " ".join(s.notes) for s in sens.scenarios if s.family == "prior"}
    assert len(priors) == 4 and "reused" in priors.pop("prior:halfnormal(1)")
    assert all("importance sampling" in note or "refitted" in note for note in priors.values())
    assert "Pareto-smoothed importance reweighting of the step-4 posterior draws" in html
    # PRIV-CROSS-001: no later section prints a per-cluster count step 1 hides (33 such cells before)
    assert cross_section_leaks(out / "demo") == []


@pytest.mark.parametrize("name", ["brandsma", "pbcseq", "opt_periodontal", "cdystonia"])
def test_report_002_real_datasets(tmp_path, name):
    """REPORT-002: steps 1-3 run on each real dataset's params file; no patient-level row.
    (Steps 4-5 run end to end on the demo in REPORT-001; on every dataset they would take the
    suite past its time budget.) A patient row is sought by up to four of its numeric values, the
    predictors' first and then the outcome's: with two numeric predictors only (cdystonia: week,
    age) two small integers matched any aggregate row of counts, such as step 2's retention by site."""
    params = REPO / "params" / f"{name}.yaml"
    out = tmp_path / "reports"
    steps = ",".join(s.key for s in STEPS[:3] if s.is_built)
    assert main(["run", str(params), "--fast", "--only", steps, "--out", str(out)]) == 0
    html = (out / name / "report.html").read_text()
    p = load_params(params)
    data = pd.read_csv(p.data)
    numeric = [c for c in [*p.predictors, p.outcome] if pd.api.types.is_numeric_dtype(data[c])][:4]
    assert patient_rows_in_html(html, data, numeric, min_matches=min(3, len(numeric))) == []


@pytest.mark.parametrize("case", ["all_complete", "cluster_without_complete_case"])
def test_report_003_complete_case_step_edge_datasets(tmp_path, write_case, case):
    """REPORT-003 (issue #3): step 2 renders when every row is complete (and says so) and when a
    cluster has no complete case at all (and names it)."""
    frame = small_registry()
    if case == "all_complete":
        frame["lab"] = frame["lab"].fillna(2.0)
        expected = "Every patient has every model variable recorded"
    else:
        frame.loc[frame["site"] == "S07", "lab"] = float("nan")
        expected = "Clusters with no complete case (they vanish from a complete-case analysis): S07."
    params = write_case(frame, focus="lab")
    out = tmp_path / "reports"
    assert main(["run", str(params), "--only", "complete_case", "--out", str(out)]) == 0
    html = (out / "case" / "report.html").read_text()
    assert expected in html
    assert patient_rows_in_html(html, frame, ["age", "lab", "died"]) == []


def test_report_004_names_from_data_are_escaped(tmp_path, write_case):
    """REPORT-004: cluster names and levels that look like HTML render as text, never as markup."""
    frame = small_registry()
    hostile = {"S00": "<script>alert(1)</script>", "S01": "<img src=x onerror=alert(1)>"}
    frame["site"] = frame["site"].replace(hostile)
    frame.loc[frame["site"] == hostile["S00"], "lab"] = float("nan")  # named in the narrative
    frame["sex"] = frame["sex"].replace({"male": "<b>male</b>"})
    params = write_case(frame, focus="lab")
    out = tmp_path / "reports"
    assert main(["run", str(params), "--only", "diagnose,complete_case", "--out", str(out)]) == 0
    html = (out / "case" / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x onerror" not in html
    assert "<b>male</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
