"""hmlib's joint model with an incomplete three-level predictor vs R's jomo.glmer, same data, same machine.

brms's ``mi()`` takes no categorical variable, so the R counterpart of the
whole analysis is multilevel imputation compatible with the substantive
model: ``jomo.glmer`` (the band imputed from a latent-normal model with site
random effects, the outcome model ``outcome ~ age + severity + band + (1 |
site)`` as its substantive model), then ``glmer`` per imputed data set pooled
by Rubin's rules (``bench/r/jomo_categorical.R``, timed inside R, package
loading excluded, which favours R).

What is timed (wall seconds): :func:`hmlib.stats.joint.fit_joint_model` with
its full sizes (2 chains x 1000 draws after 1000 tuning steps; build,
compile, sampling and the post-fit imputations), run once before and once
after the R script so that a change in the machine's load shows as a spread
(the mean of the two is used), and jomo with ``m`` imputations (default 20,
1000 burn-in and 200 iterations between imputations). Also reported: the
band coefficients of both, their difference in units of jomo's standard
error, and hmlib's effective samples per second of the band terms.

Data: ``tests/results/joint_categorical_nominal.csv`` (1,190 patients in 30
sites, band missing for 33%, two sites never recording it; truth 0.5 and 1.0).

Usage::

    .venv/bin/python bench/bench_joint_categorical.py [--m 20] [--skip-r]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hmlib.stats.joint import fit_joint_model  # noqa: E402

DATA = REPO / "tests" / "results" / "joint_categorical_nominal.csv"
RESULTS = REPO / "bench" / "results"
TERMS = ("band[raised]", "band[high]")


def hmlib_fit(seed: int) -> dict:
    """One full-size joint-model fit: wall seconds, estimates and ESS per second of the band terms."""
    frame = pd.read_csv(DATA)
    start = time.perf_counter()
    result = fit_joint_model(frame, outcome="outcome", predictors=["age", "severity", "band"], cluster="site",
                             family="binomial", seed=seed, levels={"band": ["normal", "raised", "high"]})
    seconds = time.perf_counter() - start
    table = result.summary.set_index("term")
    return {"seconds": seconds, "timing": result.timing, "converged": result.converged,
            "terms": {t: {"estimate": float(table.loc[t, "estimate"]), "std_error": float(table.loc[t, "std_error"]),
                          "ess_bulk": float(table.loc[t, "ess_bulk"]),
                          "ess_per_second": float(table.loc[t, "ess_bulk"] / seconds)} for t in TERMS}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--skip-r", action="store_true", help="reuse bench/results/jomo_categorical.json")
    args = parser.parse_args(argv)
    r_json = RESULTS / "jomo_categorical.json"
    before = hmlib_fit(seed=1)
    if not args.skip_r:
        subprocess.run(["Rscript", str(REPO / "bench" / "r" / "jomo_categorical.R"), str(DATA), str(r_json),
                        str(args.m)], check=True, cwd=REPO)
    after = hmlib_fit(seed=2)
    jomo = json.loads(r_json.read_text())
    hmlib_seconds = float(np.mean([before["seconds"], after["seconds"]]))
    comparison = {}
    for t in TERMS:
        ours = np.mean([before["terms"][t]["estimate"], after["terms"][t]["estimate"]])
        theirs = jomo["terms"][t]
        comparison[t] = {"hmlib": float(ours), "jomo": theirs["estimate"], "jomo_se": theirs["std_error"],
                         "difference_in_jomo_se": float((ours - theirs["estimate"]) / theirs["std_error"])}
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
           "data": str(DATA.relative_to(REPO)), "hmlib": [before, after], "jomo": jomo,
           "hmlib_seconds_mean": hmlib_seconds, "jomo_seconds": jomo["seconds_total"],
           "ratio_jomo_over_hmlib": jomo["seconds_total"] / hmlib_seconds, "comparison": comparison}
    (RESULTS / "bench_joint_categorical.json").write_text(json.dumps(out, indent=1))
    print(f"hmlib joint model: {before['seconds']:.0f} s and {after['seconds']:.0f} s (before/after R); "
          f"jomo.glmer m={jomo['m']} + glmer pooled: {jomo['seconds_total']:.0f} s; "
          f"jomo / hmlib = {out['ratio_jomo_over_hmlib']:.2f}")
    for t, c in comparison.items():
        print(f"  {t}: hmlib {c['hmlib']:.3f}, jomo {c['jomo']:.3f} (SE {c['jomo_se']:.3f}): "
              f"difference {c['difference_in_jomo_se']:+.2f} jomo SE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
