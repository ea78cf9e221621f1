"""Tables as the reviewer reads them (issue #13, "Tables"): labels, rounding, plain values, CSV, folding.

REPORT-TABLE-001  every code-name column the step notebooks show has a human label (no underscore, no code name)
REPORT-TABLE-002  cells: significant digits, shares as percentages, p-values, yes/no, blanks for None/NA/NaN/()
REPORT-TABLE-003  lower/upper columns are one "95% CI" column on the page and two columns in the CSV
REPORT-TABLE-004  the CSV link decodes to the same rows and columns, at full precision
REPORT-TABLE-005  a long text column leaves the grid and is listed under the table
REPORT-TABLE-006  tables over 12 rows are folded in <details> and sortable; short ones are not
REPORT-TABLE-007  data-derived text is escaped (a cluster named <script> stays text)
REPORT-TABLE-008  labels depend on the table where one code name means two things (clusters vs patients)
REPORT-TABLE-010  step 5's tipping-point table of a categorical focus labels its delta columns as log odds ratios
REPORT-TABLE-011  a table of 10 or more columns is marked hm-wide (narrower padding on screen), a narrow one not
"""

from __future__ import annotations

import base64
import csv
import io
import re

import numpy as np
import pandas as pd

from conftest import REPO
from hmlib.report.labels import DELTA_SCALE_LABELS, LABELS, column_label
from hmlib.report.tables import prepare_table, significant, table_html

#: Every column name the five step notebooks showed as a header in the demo report before labels existed
#: (read from its HTML, issue #13: "69 of them"), except data names (variables, levels, method keys).
CODE_NAMES = [
    "all_patients", "applies_to", "before_missing", "bracket_sd", "change", "change_reason", "changed_conclusion",
    "ci_lower", "ci_upper", "cluster", "cluster_sd", "complete_cases", "component", "count", "covariate",
    "covers_truth", "delta_sd", "delta_units", "description", "df", "direction", "estimate", "excluded_clusters",
    "family", "fmi", "focus_icc", "focus_icc_max", "focus_icc_min", "focus_sd", "found", "grid_max_sd",
    "icc_latent", "joint_fit", "lambda", "level", "log_odds_ratio", "lrt_statistic", "max_rhat", "method", "mode",
    "model", "n", "n_all", "n_clusters", "n_clusters_all_missing", "n_clusters_any_missing",
    "n_clusters_excluded", "n_complete", "n_dropped", "n_missing", "n_missing_structural", "n_missing_variables",
    "n_observed", "n_patients", "n_patients_excluded", "n_patterns", "n_sporadic", "n_structural",
    "never_observed", "notes", "odds_ratio", "outcome_icc", "outcome_sd", "outcome_sd_lower", "outcome_sd_upper",
    "p_value", "parameter", "pattern", "pooled", "pooled_effect", "pooled_effect_sd", "pooled_mean",
    "pooled_mean_sd", "prior", "raw", "raw_effect", "raw_mean", "raw_se", "reason", "reference", "retained",
    "rhat", "riv", "scale", "scale_sd", "scenario", "sd_ci_lower", "sd_ci_upper", "seconds", "share",
    "share_after", "share_before", "share_missing", "share_of_missing_structural", "shrinkage", "smd", "status",
    "std_error", "structural_clusters", "summary", "term", "truth", "variable"]


def _decode(block: str) -> list:
    uri = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)"', block).group(1)
    return list(csv.reader(io.StringIO(base64.b64decode(uri).decode("utf-8"))))


def test_report_table_001_every_code_name_labelled():
    """REPORT-TABLE-001: each code name shown as a header before this change (issue #13) has an entry in the one
    label table, and no label keeps an underscore or equals its code name (single words like 'p' excepted)."""
    assert set(CODE_NAMES) - set(LABELS) == set()
    for name in CODE_NAMES:
        label = column_label(name, noun="site").text
        assert "_" not in label and "{" not in label, (name, label)
        assert label != name, name
    assert column_label("flat_mi").text == "flat MI"
    assert column_label("multilevel_mi: coverage").text == "multilevel MI: coverage"


def test_report_table_002_cells():
    """REPORT-TABLE-002: numbers to 3 significant digits in plain decimals, whole numbers with separators,
    shares as percentages, p-values (<0.001), yes/no; None, pd.NA, NaN, empty tuples and lists are blank or
    readable, never a Python repr."""
    frame = pd.DataFrame({
        "variable": ["lactate", "sbp", "age"],
        "n": [3000, 3000, 3000],
        "share_missing": [0.27, 0.0347, 0.0],
        "estimate": [0.000571, -0.00721, 2063.4],
        "p_value": [5.32e-133, 0.4584, np.nan],
        "covers_truth": pd.array([True, pd.NA, False], dtype=object),
        "structural_clusters": [("Site 17", "Site 21"), (), None],
        "notes": [[], ["one note"], None],
    })
    table = prepare_table(frame, noun="site")
    assert table.headers == ["Variable", "Patients", "Missing (%)", "Estimate", "p", "Interval covers truth",
                             "Sites with structural gaps (names)", "Notes"]
    assert table.cells[0] == ["lactate", "3,000", "27.0", "0.000571", "<0.001", "yes", "Site 17, Site 21", ""]
    assert table.cells[1] == ["sbp", "3,000", "3.5", "-0.00721", "0.46", "", "", "one note"]
    assert table.cells[2] == ["age", "3,000", "0", "2,063", "", "no", "", ""]
    shown = " ".join(" ".join(row) for row in table.cells)
    for raw in ("None", "<NA>", "nan", "()", "[]", "True", "False", "e-133"):
        assert raw not in shown
    assert significant(0.1004) == "0.100" and significant(12.345) == "12.3" and significant(2e-6) == "2.00e-06"


def test_report_table_003_intervals():
    """REPORT-TABLE-003: ci_lower/ci_upper become one '95% CI' column (percentages after a share), and two
    columns of the CSV."""
    frame = pd.DataFrame({"variable": ["lactate"], "share_missing": [0.27], "ci_lower": [0.254],
                          "ci_upper": [0.286]})
    table = prepare_table(frame)
    assert table.headers == ["Variable", "Missing (%)", "95% CI"]
    assert table.cells[0][2] == "25.4 to 28.6"
    rows = list(csv.reader(io.StringIO(table.csv_text)))
    assert rows[0] == ["Variable", "Missing (%)", "95% CI lower", "95% CI upper"]
    assert [float(v) for v in rows[1][1:]] == [27.0, 25.4, 28.6]
    est = prepare_table(pd.DataFrame({"term": ["lactate"], "estimate": [0.425], "std_error": [0.12],
                                      "ci_lower": [0.191], "ci_upper": [0.659]}))
    assert est.cells[0] == ["lactate", "0.425", "0.120", "0.191 to 0.659"]


def test_report_table_004_csv_matches_table():
    """REPORT-TABLE-004: the block's CSV link decodes to a header row and one row per table row; each shown
    number is the CSV's value rounded."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"cluster": [f"Site {i:02d}" for i in range(20)], "n_all": rng.integers(20, 900, 20),
                          "retained": rng.uniform(0, 1, 20), "shrinkage": rng.uniform(0, 1, 20) / 7})
    block = table_html(prepare_table(frame, noun="site"), caption="Retention", key="retention")
    rows = _decode(block)
    assert rows[0] == ["Site", "Patients", "Kept (%)", "Shrinkage (0 own, 1 pooled)"]
    assert len(rows) == 21
    for shown, (name, n, kept, shrink) in zip(frame.itertuples(index=False), rows[1:]):
        assert name == shown.cluster and int(n) == shown.n_all
        assert f"{float(kept):.1f}" == f"{100 * shown.retained:.1f}"
        assert significant(float(shrink)) == significant(shown.shrinkage)


def test_report_table_005_long_text_leaves_the_grid():
    """REPORT-TABLE-005: a notes column with a 300-character cell is not a table column; the text is listed under
    the table, keyed by the row's first cell."""
    frame = pd.DataFrame({"scenario": ["a", "b"], "status": ["ok", "ok"], "notes": [["x " * 150], []]})
    table = prepare_table(frame)
    assert table.headers == ["Scenario", "Status"]
    assert table.notes == [("a", "Notes", ("x " * 150).strip())]
    block = table_html(table, caption="Scenarios", key="scenarios")
    assert "<dt>a</dt>" in block and block.count("<dt>") == 1
    assert _decode(block)[0] == ["Scenario", "Status", "Notes"]


def test_report_table_006_long_tables_fold():
    """REPORT-TABLE-006: 13 rows fold into <details> with a sortable table; 12 rows do not."""
    long = table_html(prepare_table(pd.DataFrame({"x": range(13)})), caption="Long", key="long")
    short = table_html(prepare_table(pd.DataFrame({"x": range(12)})), caption="Short", key="short")
    assert long.startswith("<details") and "hm-sortable" in long and "13 rows" in long
    assert short.startswith("<div") and "hm-sortable" not in short


def test_report_table_007_escaped():
    """REPORT-TABLE-007: a cluster named '<script>alert(1)</script>' and a caption with '<b>' are text."""
    frame = pd.DataFrame({"cluster": ["<script>alert(1)</script>"], "n": [40]})
    block = table_html(prepare_table(frame), caption="<b>caption</b>", key="x")
    assert "<script>" not in block and "&lt;script&gt;" in block and "&lt;b&gt;caption" in block


def test_report_table_008_context_labels():
    """REPORT-TABLE-008: n_complete counts clusters in the gap summary and patients in the retention table."""
    gaps = ["variable", "n_clusters", "n_complete", "n_sporadic"]
    retention = ["cluster", "n_all", "n_complete"]
    assert column_label("n_complete", noun="site", columns=gaps).text == "Sites without gaps"
    assert column_label("n_complete", noun="site", columns=retention).text == "Complete cases"
    assert column_label("n_clusters", noun="hospital").text == "Hospitals"


def test_report_table_009_empty_columns_left_out():
    """REPORT-TABLE-009: a column without any value (R-hat of a run too short to compute it) is left out of the
    table and of its CSV, and the caption says so; the first column is kept even when blank."""
    frame = pd.DataFrame({"method": ["flat_mi", "multilevel_mi"], "variable": ["lactate", "lactate"],
                          "rhat": [np.nan, None]})
    table = prepare_table(frame)
    assert table.headers == ["Method", "Variable"] and table.empty == ["R-hat"]
    assert table.cells == [["flat MI", "lactate"], ["multilevel MI", "lactate"]]
    block = table_html(table, caption="Split R-hat", key="rhat")
    assert "Left out, as no row has a value: R-hat." in block
    assert _decode(block)[0] == ["Method", "Variable"]


def test_report_table_010_tipping_labels_by_delta_scale():
    """REPORT-TABLE-010: a categorical focus is shifted on the log-odds scale (cat-b), so notebook 05 passes
    DELTA_SCALE_LABELS[delta_scale] and its tipping table reads 'Shift (log odds ratio)' and 'Odds ratio e^shift'
    where a numeric focus's reads 'Shift (SD)' (the same columns of SensitivityResult.tipping_table)."""
    frame = pd.DataFrame({"mode": ["global"], "direction": ["positive"], "found": [True], "delta_sd": [1.33],
                          "bracket_sd": [[1.25, 1.5]], "grid_max_sd": [3.0], "odds_ratio": [3.78]})
    categorical = prepare_table(frame, labels=DELTA_SCALE_LABELS["log odds"]).headers
    numeric = prepare_table(frame, labels=DELTA_SCALE_LABELS["SD"]).headers
    assert categorical[3:] == ["Shift (log odds ratio)", "Bracket (log odds ratio)",
                               "Largest shift tried (log odds ratio)", "Odds ratio e^shift"]
    assert numeric[3:] == ["Shift (SD)", "Bracket (SD)", "Largest shift tried (SD)", "Odds ratio per SD"]
    assert set(DELTA_SCALE_LABELS) == {"SD", "log odds"}


def test_report_table_011_wide_tables_marked():
    """REPORT-TABLE-011: step 5's scenario table has 11 columns and, with step 1's hidden site sizes, two count
    columns reading "suppressed": 922 px in the 910 px column of a 1280 px screen (BROWSER-007) with the usual
    padding; a table of WIDE_COLUMNS or more columns is marked hm-wide, whose CSS narrows the padding."""
    from hmlib.report.tables import WIDE_COLUMNS

    wide = pd.DataFrame({f"c{k}": ["suppressed"] for k in range(WIDE_COLUMNS)})
    narrow = wide.iloc[:, :3]
    assert 'class="hm-table hm-wide"' in table_html(prepare_table(wide), caption="Wide", key="wide")
    assert "hm-wide" not in table_html(prepare_table(narrow), caption="Narrow", key="narrow")
    css = (REPO / "hmlib" / "report" / "assets" / "report.css").read_text()
    assert "table.hm-table.hm-wide td" in css
