"""Cross-section small-cell check of a rendered report's artifacts (PRIV-CROSS-001, used by REPORT-001).

Step 1 publishes per-cluster counts with small-cell suppression; a count it
hides must not be printed by a later step either, nor be recoverable from a
later step's count beside a count step 1 shows (a recorded count beside the
cluster size gives back the missing count).
"""

from __future__ import annotations

import json
from pathlib import Path


def _record(out: Path, key: str) -> dict:
    path = out / "artifacts" / f"{key}.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data.get("record", data)


def _shown(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def cross_section_leaks(out: str | Path) -> list:
    """Counts that a later step shows although step 1 hides them, as ``(table, cluster, column)``.

    Checked: step 2's retention (cluster size), step 3's distribution clusters and
    transport table (recorded values of the focus), step 4's partial pooling and
    predictive check (patients and recorded values of the focus), step 5's
    leave-out scenarios (the size of a left-out cluster).
    """
    out = Path(out)
    diag = _record(out, "diagnose")
    focus = (diag.get("settings") or {}).get("focus") or diag.get("focus")
    size_hidden, count_hidden = set(), set()
    for row in diag.get("by_cluster") or []:
        if not _shown(row.get("n")):
            size_hidden.add(str(row["cluster"]))
        if not (_shown(row.get("n_missing")) and _shown(row.get("n_observed"))):
            count_hidden.add((str(row["cluster"]), row["variable"]))
    leaks = []

    def check(table, rows, size_cols=(), focus_cols=()):
        for row in rows or []:
            c = str(row.get("cluster"))
            for col in size_cols:
                if c in size_hidden and _shown(row.get(col)):
                    leaks.append((table, c, col))
            for col in focus_cols:
                if ((c, focus) in count_hidden or c in size_hidden) and _shown(row.get(col)) and row.get(col) > 0:
                    leaks.append((table, c, col))

    check("retention", _record(out, "complete_case").get("retention"), size_cols=("n_all",))
    imp = _record(out, "imputation")
    check("distribution_clusters", imp.get("distribution_clusters"), size_cols=("n",),
          focus_cols=("n_observed", "n_missing"))
    check("transport", (imp.get("transport") or {}).get("table"), focus_cols=("n_observed",))
    joint = _record(out, "joint_model")
    check("partial_pooling", joint.get("partial_pooling"), size_cols=("n_patients",), focus_cols=("n_observed",))
    check("posterior_predictive", joint.get("posterior_predictive"), focus_cols=("n_observed",))
    for row in _record(out, "sensitivity").get("scenarios") or []:
        left_out = [str(c) for c in row.get("excluded_clusters") or []]
        if any(c in size_hidden for c in left_out) and _shown(row.get("n_patients_excluded")):
            leaks.append(("scenarios", row.get("scenario"), "n_patients_excluded"))
    return leaks
