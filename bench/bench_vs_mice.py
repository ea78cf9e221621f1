"""hmlib's multilevel imputation + pooled analysis vs R's mice 2l.pan + glmer, same data, same machine.

What is timed (wall seconds, ``time.perf_counter`` in Python, ``proc.time``
elapsed inside R):

- hmlib ``multilevel_mi``: :func:`hmlib.stats.imputation.impute` with
  ``method="multilevel"`` (2l.pan-like random-intercept chained equations),
  ``m`` imputations x ``iterations`` iterations, then
  :func:`hmlib.stats.pooling.analyse_imputations` (a random-intercept logistic fit,
  Laplace, per imputation, pooled by Rubin's rules). Run ``--repeat`` times
  before and ``--repeat`` times after the R script, so that a change in the
  machine's load during the run shows up as a spread; the median is used.
  ``flat_mi`` (pmm) is run once for the side-by-side estimates.
- R, ``bench/r/mice_reference.R`` (``Rscript``, in a subprocess): mice
  ``2l.pan`` (random intercept, z-scored predictors) and mice ``pmm`` (flat),
  each with ``maxit = iterations`` and the same ``m``, then ``glmer`` per
  imputed data set and ``mice::pool``. The ratio uses R's own timing of
  imputation + fits + pooling, so R's start-up and package loading do not
  count against it (that favours R).

Target: hmlib multilevel_mi (imputation + pooled analysis) takes less than
1/10 of mice 2l.pan + glmer.

The data are ``tests/results/sim_registry.csv`` (4,000 patients, 40 sites,
lactate missing for 33 %; truth in ``sim_registry_truth.json``). Results go
to ``bench/results/bench_vs_mice.json`` (with the R output in
``bench/results/mice_reference.json``).

Usage::

    .venv/bin/python bench/bench_vs_mice.py [--m 20] [--iterations 10] [--repeat 2]
        [--skip-r]   # reuse bench/results/mice_reference.json instead of running R
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

DATA = REPO / "tests" / "results" / "sim_registry.csv"
TRUTH = REPO / "tests" / "results" / "sim_registry_truth.json"
RESULTS = REPO / "bench" / "results"
R_SCRIPT = REPO / "bench" / "r" / "mice_reference.R"
PREDICTORS = ["lactate", "age", "severity"]
TARGET_RATIO = 0.1


def run_hmlib(data: pd.DataFrame, method: str, m: int, iterations: int, seed: int, **options) -> dict:
    """Impute + pooled analysis once; seconds and the pooled estimates."""
    t0 = time.perf_counter()
    result = impute(data, method=method, cluster="site", outcome="outcome", outcome_family="binomial",
                    predictors=PREDICTORS, m=m, iterations=iterations, seed=seed, **options)
    t1 = time.perf_counter()
    pooled = analyse_imputations(result, outcome="outcome", predictors=PREDICTORS, cluster="site",
                                 family="binomial")
    t2 = time.perf_counter()
    table = pooled.to_frame().merge(pooled.diagnostics, on="term")
    return {"impute_s": t1 - t0, "analyse_s": t2 - t1, "total_s": t2 - t0,
            "estimates": table[["term", "estimate", "std_error", "ci_lower", "ci_upper", "df", "fmi"]]
            .to_dict(orient="records"), "rhat": result.rhat}


def run_r(m: int, iterations: int, seed: int, out: Path) -> tuple[dict, float]:
    """Run the R script; its JSON and the subprocess wall seconds."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise SystemExit("Rscript not found: install R for the benchmark only (apt-get install r-base-core "
                         "r-cran-mice r-cran-lme4 r-cran-pan r-cran-jsonlite r-cran-broom.mixed), or pass "
                         "--skip-r to reuse bench/results/mice_reference.json.")
    cmd = [rscript, str(R_SCRIPT), "--data", str(DATA), "--out", str(out), "--m", str(m), "--maxit",
           str(iterations), "--seed", str(seed)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the R script failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text()), wall


def _estimate_map(records) -> dict:
    return {r["term"]: r for r in records}


def side_by_side(hm_ml: dict, hm_flat: dict, r: dict, truth: dict) -> pd.DataFrame:
    """One row per term: estimates (95% CI) of the four runs and the truth."""
    runs = {"hmlib multilevel_mi": _estimate_map(hm_ml["estimates"]),
            "mice 2l.pan + glmer": _estimate_map(r["methods"]["2l_pan_ri"]["estimates"]),
            "hmlib flat_mi (pmm)": _estimate_map(hm_flat["estimates"]),
            "mice pmm + glmer": _estimate_map(r["methods"]["flat_pmm"]["estimates"])}
    rows = []
    for term in ["Intercept", *PREDICTORS, "sd(site)"]:
        row = {"term": term}
        for name, estimates in runs.items():
            if term == "sd(site)" and term not in estimates:
                key = "2l_pan_ri" if "2l.pan" in name else "flat_pmm"
                row[name] = f"{r['methods'][key]['site_sd']['geometric_mean']:.3f}"
                continue
            e = estimates.get(term)
            row[name] = "" if e is None else f"{e['estimate']:.3f} ({e['ci_lower']:.3f}, {e['ci_upper']:.3f})"
        row["truth"] = truth.get(term)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="hmlib runs before and after the R script")
    parser.add_argument("--skip-r", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_vs_mice.json")
    args = parser.parse_args(argv)

    data = pd.read_csv(DATA)
    raw_truth = json.loads(TRUTH.read_text())
    truth = {"Intercept": raw_truth["coefficients"]["intercept"], "sd(site)": raw_truth["site_sd_outcome"],
             **{k: raw_truth["coefficients"][k] for k in PREDICTORS}}

    runs_ml = [run_hmlib(data, "multilevel", args.m, args.iterations, args.seed + k) for k in range(args.repeat)]
    r_out = RESULTS / "mice_reference.json"
    if args.skip_r:
        r_json, r_wall = json.loads(r_out.read_text()), float("nan")
    else:
        r_json, r_wall = run_r(args.m, args.iterations, args.seed, r_out)
    runs_ml += [run_hmlib(data, "multilevel", args.m, args.iterations, args.seed + args.repeat + k)
                for k in range(args.repeat)]
    flat = run_hmlib(data, "flat", args.m, args.iterations, args.seed, continuous="pmm")

    hm_total = [r["total_s"] for r in runs_ml]
    hm_median = statistics.median(hm_total)
    r_pan = r_json["methods"]["2l_pan_ri"]
    ratio = hm_median / r_pan["total_s"]
    table = side_by_side(runs_ml[0], flat, r_json, truth)

    print(f"data: {DATA.name}, {len(data)} patients, {data['site'].nunique()} sites; m = {args.m}, "
          f"iterations = {args.iterations}")
    print(f"hmlib multilevel_mi (impute + pooled glmer-like analysis): "
          f"{', '.join(f'{t:.2f}' for t in hm_total)} s (median {hm_median:.2f} s; impute "
          f"{statistics.median(r['impute_s'] for r in runs_ml):.2f} s, analyse "
          f"{statistics.median(r['analyse_s'] for r in runs_ml):.2f} s)")
    print(f"R mice 2l.pan + glmer + pool: {r_pan['total_s']:.2f} s (impute {r_pan['impute_s']:.2f} s, glmer "
          f"{r_pan['analyse_s']:.2f} s, pool {r_pan['pool_s']:.2f} s); Rscript wall incl. start-up {r_wall:.1f} s")
    print(f"R mice pmm + glmer + pool: {r_json['methods']['flat_pmm']['total_s']:.2f} s; hmlib flat_mi (pmm): "
          f"{flat['total_s']:.2f} s")
    verdict = "meets" if ratio < TARGET_RATIO else "MISSES"
    print(f"time ratio hmlib / mice 2l.pan: {ratio:.3f} (1/{1 / ratio:.0f}); {verdict} the target "
          f"< {TARGET_RATIO}")
    print(table.to_string(index=False))

    record = {
        "what": "hmlib multilevel_mi vs mice 2l.pan (random intercept, z-scored predictors) + glmer, same data, "
                "same machine, same run",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "note": "shared machine; other jobs were running"},
        "settings": {"m": args.m, "iterations": args.iterations, "seed": args.seed, "repeat": args.repeat},
        "hmlib_multilevel_total_s": hm_total, "hmlib_multilevel_median_s": hm_median,
        "hmlib_multilevel_runs": [{k: v for k, v in r.items() if k != "estimates"} for r in runs_ml],
        "hmlib_flat_total_s": flat["total_s"],
        "r_2l_pan_total_s": r_pan["total_s"], "r_flat_pmm_total_s": r_json["methods"]["flat_pmm"]["total_s"],
        "rscript_wall_s": r_wall, "ratio_hmlib_over_r": ratio, "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio < TARGET_RATIO),
        "estimates_hmlib_multilevel": runs_ml[0]["estimates"], "estimates_hmlib_flat": flat["estimates"],
        "side_by_side": table.to_dict(orient="records"), "r_output": str(r_out.relative_to(REPO)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
