"""Three-level multilevel imputation beside its lme4 counterpart, in one run.

Data: ``tests/results/three_level_registry.csv`` (4,320 patients in 144
hospitals in 24 countries, x missing for 37%). hmlib: ``impute(method=
"multilevel", higher_levels=["country"], m=100, iterations=10)`` and the
nested analysis model on each completed set pooled by Rubin's rules
(:func:`hmlib.stats.pooling.analyse_imputations`), wall seconds. R: the
reference script ``tests/results/three_level_imputation.R`` (the same
three-level imputation model with lme4, m = 100, and ``glmer`` on each set),
run in a temporary copy of the folder, its own wall seconds (start-up and
reading the CSV are in it, about 1 s). Also the two-level comparator
(``higher_effects="fixed"``) for the cost of the third level.

Usage::

    .venv/bin/python bench/bench_three_level_imputation.py [--out bench/results/bench_three_level_imputation.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_three_level_imputation.json"
DATA = ROOT / "tests" / "results" / "three_level_registry.csv"


def _hmlib(data: pd.DataFrame, higher_effects: str) -> dict:
    start = time.perf_counter()
    res = impute(data, method="multilevel", cluster="hospital", outcome="y", outcome_family="binomial",
                 predictors=["x", "age"], higher_levels=["country"], m=100, iterations=10, seed=1,
                 higher_effects=higher_effects)
    imputed = time.perf_counter() - start
    pooled = analyse_imputations(res, outcome="y", predictors=["x", "age"], cluster="hospital", family="binomial",
                                 higher_levels=["country"]).to_frame().set_index("term")
    return {"impute_s": imputed, "total_s": time.perf_counter() - start,
            "x": float(pooled.loc["x", "estimate"]), "x_se": float(pooled.loc["x", "std_error"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    data = pd.read_csv(DATA)
    out = {"patients": int(len(data)), "m": 100, "hmlib_three_level": _hmlib(data, "random"),
           "hmlib_two_level_fixed": _hmlib(data, "fixed")}
    print(out, flush=True)
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("three_level_imputation.R", "three_level_registry.csv"):
                shutil.copy(DATA.parent / name, tmp)
            subprocess.run(["Rscript", "three_level_imputation.R"], cwd=tmp, check=True, capture_output=True)
            ref = json.loads((Path(tmp) / "three_level_imputation.json").read_text())
        out["lme4"] = {"total_s": ref["wall_s"], "x": ref["pooled"]["x"]["estimate"],
                       "x_se": ref["pooled"]["x"]["std_error"]}
        out["lme4_over_hmlib"] = ref["wall_s"] / out["hmlib_three_level"]["total_s"]
        print("lme4", out["lme4"], "ratio", round(out["lme4_over_hmlib"], 1))
    else:
        out["lme4"] = "Rscript not found: install R with lme4 (Debian: r-cran-lme4) for the side-by-side figure"
    out["three_over_two_level_impute"] = (out["hmlib_three_level"]["impute_s"]
                                          / out["hmlib_two_level_fixed"]["impute_s"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
