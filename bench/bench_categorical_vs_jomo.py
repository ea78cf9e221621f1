"""hmlib's multilevel imputation of a categorical focus beside jomo's, same data, same machine, same run.

What is timed (wall seconds; ``time.perf_counter`` in Python, ``proc.time``
elapsed inside R, so R's start-up and package loading do not count):

- hmlib ``multilevel``: :func:`hmlib.stats.imputation.impute` of a
  three-level ``lactate_band`` by baseline-category logits with a random
  intercept per contrast and, hmlib's default, the site means of the other
  variables as predictors (``m`` imputations x ``iterations``
  chained-equations iterations: the report's full run sizes by default), then
  :func:`hmlib.stats.pooling.analyse_imputations` (a random-intercept
  logistic fit per imputation, pooled by Rubin's rules). Run ``--repeat``
  times before and ``--repeat`` times after the R script (the median is
  used), so a change in the machine's load shows as a spread.
- R ``jomo::jomo1rancat`` (the band as two latent normals with correlated
  site random intercepts; outcome, z(age), z(severity) as fixed effects;
  ``nburn`` burn-in and ``nbetween`` iterations between the ``m``
  imputations), then ``glmer`` per imputation and Rubin's rules, by
  ``tests/results/categorical_imputation.R --methods jomo`` in a subprocess.
- hmlib ``flat`` and R ``mice`` ``polyreg`` once each, for the side-by-side
  estimates.

Data: :func:`hmlib.simulate.categorical.categorical_registry` (seed 11) at
two sizes: 2,000 patients in 30 sites (``tests/results/categorical_registry.csv``)
and ``--large`` patients in ``--large-sites`` sites (written to a temporary
CSV). Results: ``bench/results/bench_categorical_vs_jomo.json``.

Usage::

    .venv/bin/python bench/bench_categorical_vs_jomo.py [--m 20] [--iterations 10] [--repeat 2]
        [--large 10000] [--large-sites 100] [--nburn 1000] [--nbetween 200]
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
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hmlib.simulate.categorical import categorical_registry, categorical_registry_truth  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

R_SCRIPT = REPO / "tests" / "results" / "categorical_imputation.R"
REFERENCE_DATA = REPO / "tests" / "results" / "categorical_registry.csv"
RESULTS = REPO / "bench" / "results"
PREDICTORS = ["lactate_band", "age", "severity"]
LEVELS = {"lactate_band": ["high", "normal", "raised"]}
TERMS = ("lactate_band[normal]", "lactate_band[raised]")


def run_hmlib(data: pd.DataFrame, method: str, m: int, iterations: int, seed: int) -> dict:
    """Impute + pooled analysis once: seconds and the band's pooled estimates."""
    t0 = time.perf_counter()
    result = impute(data, method=method, cluster="site", outcome="outcome", outcome_family="binomial",
                    predictors=PREDICTORS, kinds={"lactate_band": "categorical"}, levels=LEVELS, m=m,
                    iterations=iterations, seed=seed)
    t1 = time.perf_counter()
    pooled = analyse_imputations(result, outcome="outcome", predictors=PREDICTORS, cluster="site",
                                 family="binomial", levels=LEVELS).to_frame().set_index("term")
    t2 = time.perf_counter()
    return {"impute_s": t1 - t0, "analyse_s": t2 - t1, "total_s": t2 - t0,
            "estimates": {t: float(pooled.loc[t, "estimate"]) for t in TERMS},
            "std_errors": {t: float(pooled.loc[t, "std_error"]) for t in TERMS}}


def run_r(data_path: Path, methods: str, m: int, nburn: int, nbetween: int, seed: int) -> dict:
    """The R reference script on ``data_path``; its JSON with the subprocess wall seconds."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise SystemExit("Rscript not found: this benchmark needs R with mice, jomo, lme4 and jsonlite.")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [rscript, str(R_SCRIPT), "--data", str(data_path), "--out", str(out), "--m", str(m),
               "--seeds", str(seed), "--methods", methods, "--nburn", str(nburn), "--nbetween", str(nbetween)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"the R script failed:\n{done.stderr[-3000:]}")
        record = json.loads(out.read_text())
    record["rscript_wall_s"] = wall
    return record


def _r_run(record: dict, method: str) -> dict:
    run = record["methods"][method][0]
    return {"impute_s": run["impute_s"], "analyse_s": run["analyse_s"],
            "total_s": run["impute_s"] + run["analyse_s"],
            "estimates": {t: run["estimates"][t.replace("[", "").replace("]", "")]["estimate"] for t in TERMS}}


def compare(data_path: Path, args) -> dict:
    """hmlib multilevel (repeated around the R run) against jomo, and flat against polyreg, on one data set."""
    data = pd.read_csv(data_path)
    ml = [run_hmlib(data, "multilevel", args.m, args.iterations, args.seed + k) for k in range(args.repeat)]
    r = run_r(data_path, "jomo,flat_polyreg", args.m, args.nburn, args.nbetween, args.seed)
    ml += [run_hmlib(data, "multilevel", args.m, args.iterations, args.seed + args.repeat + k)
           for k in range(args.repeat)]
    flat = run_hmlib(data, "flat", args.m, args.iterations, args.seed)
    jomo, polyreg = _r_run(r, "jomo"), _r_run(r, "flat_polyreg")
    impute_median = statistics.median(x["impute_s"] for x in ml)
    total_median = statistics.median(x["total_s"] for x in ml)
    out = {
        "data": {"file": data_path.name, "patients": int(len(data)), "sites": int(data["site"].nunique()),
                 "missing_share": float(data["lactate_band"].isna().mean())},
        "hmlib_multilevel": {"impute_s": [x["impute_s"] for x in ml], "total_s": [x["total_s"] for x in ml],
                             "impute_median_s": impute_median, "total_median_s": total_median,
                             "estimates": ml[0]["estimates"]},
        "jomo": jomo, "hmlib_flat": flat, "mice_polyreg": polyreg,
        "ratio_impute_hmlib_over_jomo": impute_median / jomo["impute_s"],
        "ratio_total_hmlib_over_jomo": total_median / jomo["total_s"],
        "rscript_wall_s": r["rscript_wall_s"],
    }
    print(f"\n{data_path.name}: {len(data)} patients, {data['site'].nunique()} sites")
    print(f"  hmlib multilevel impute {', '.join(f'{x:.2f}' for x in out['hmlib_multilevel']['impute_s'])} s "
          f"(median {impute_median:.2f}); with pooled analysis {total_median:.2f} s")
    print(f"  jomo1rancat impute {jomo['impute_s']:.2f} s; with glmer + Rubin {jomo['total_s']:.2f} s")
    print(f"  ratio hmlib / jomo: imputation {out['ratio_impute_hmlib_over_jomo']:.2f}, "
          f"with analysis {out['ratio_total_hmlib_over_jomo']:.2f}")
    for t in TERMS:
        print(f"  {t}: hmlib multilevel {ml[0]['estimates'][t]:+.3f}, jomo {jomo['estimates'][t]:+.3f}, "
              f"hmlib flat {flat['estimates'][t]:+.3f}, mice polyreg {polyreg['estimates'][t]:+.3f}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nburn", type=int, default=1000)
    parser.add_argument("--nbetween", type=int, default=200)
    parser.add_argument("--large", type=int, default=10000, help="patients of the larger registry (0: skip)")
    parser.add_argument("--large-sites", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_categorical_vs_jomo.json")
    args = parser.parse_args(argv)
    runs = [compare(REFERENCE_DATA, args)]
    if args.large:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"categorical_registry_{args.large}.csv"
            categorical_registry(11, n_sites=args.large_sites, n_patients=args.large).to_csv(path, index=False)
            runs.append(compare(path, args))
    record = {
        "what": "hmlib multilevel imputation of a 3-level categorical focus (baseline-category logits, random "
                "intercepts, cluster means) vs jomo::jomo1rancat (latent normal, random intercepts, no cluster "
                "means), same data, same machine, same run",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "note": "shared machine; other jobs were running"},
        "settings": {"m": args.m, "iterations": args.iterations, "repeat": args.repeat, "seed": args.seed,
                     "jomo_nburn": args.nburn, "jomo_nbetween": args.nbetween},
        "truth": {t: categorical_registry_truth()["terms"][t] for t in TERMS},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
