"""Step 1's partition of missingness by level: truth by simulation, the test's size, and speed beside lme4.

Three parts, one run (``hmlib.stats.missingness.missingness_level_variation``):

1. **Truth.** ``--replicates`` registries of
   :func:`hmlib.simulate.missingness.level_missingness_registry` (9,600
   patients in 240 hospitals in 30 countries; missingness SD 0.6 between
   countries and 0.4 between hospitals within a country): bias of each
   level's SD, coverage of its 95% Wald interval (log-SD scale), power of
   each level's test at 5%, and the SD a two-level model gives the hospitals
   (the misattribution: truth ``sqrt(0.6^2 + 0.4^2)`` = 0.72).
2. **Size.** The same with no country variation (``country_sd = 0``): how
   often the boundary-corrected test of the country level rejects at 5%,
   and how often the country SD is estimated at exactly 0 (asymptotically
   half the time, where the 50:50 chi2_0/chi2_1 reference is exact).
3. **Speed.** The partition (three fits: nested, without each level) of the
   first registry, against the same three ``glmer`` fits (Laplace, lme4's
   default control) timed inside R (``system.time``; start-up and reading
   the CSV not counted), the median of ``--repeats`` runs, when ``Rscript``
   with lme4 is installed.

Usage::

    .venv/bin/python bench/missingness_levels_truth.py [--replicates 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from r_side import r_median_seconds  # noqa: E402
from hmlib.simulate.missingness import level_missingness_registry, level_missingness_registry_truth  # noqa: E402
from hmlib.stats.missingness.levels import missingness_level_variation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "missingness_levels_truth.json"
LEVELS = ("country", "hospital")

R_SCRIPT = r"""
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$missing <- as.integer(is.na(d$v))
repeats <- as.integer(args[2])
partition <- function() {
  glmer(missing ~ 1 + (1 | country) + (1 | country:hospital), d, family = binomial())
  glmer(missing ~ 1 + (1 | country:hospital), d, family = binomial())
  glmer(missing ~ 1 + (1 | country), d, family = binomial())
}
times <- sapply(seq_len(repeats), function(i) system.time(suppressWarnings(suppressMessages(partition())))[["elapsed"]])
cat(median(times), "\n")
"""


def _study(replicates: int, country_sd: float, seed0: int) -> dict:
    truth = level_missingness_registry_truth(country_sd=country_sd)["missingness"]
    sd, covered, rejected, two_level = [], [], [], []
    for r in range(replicates):
        res = missingness_level_variation(level_missingness_registry(seed0 + r, country_sd=country_sd), "v",
                                          "hospital", ["country"])
        t = res.table.set_index("level")
        sd.append([t.loc[lv, "sd"] for lv in LEVELS])
        covered.append([t.loc[lv, "sd_ci_lower"] <= truth[f"sd({lv})"] <= t.loc[lv, "sd_ci_upper"]
                        for lv in LEVELS])
        rejected.append([t.loc[lv, "p_value"] < 0.05 for lv in LEVELS])
        two_level.append(res.two_level_sd)
    sd = np.array(sd)
    out = {"replicates": replicates, "truth": truth, "levels": {}}
    for k, lv in enumerate(LEVELS):
        true = truth[f"sd({lv})"]
        out["levels"][lv] = {
            "true_sd": true, "mean_sd": float(sd[:, k].mean()), "median_sd": float(np.median(sd[:, k])),
            "relative_bias": float(sd[:, k].mean() / true - 1) if true else None,
            "mc_se_mean": float(sd[:, k].std(ddof=1) / np.sqrt(replicates)),
            "coverage_95": float(np.mean([c[k] for c in covered])) if true else None,
            "share_at_zero": float(np.mean(sd[:, k] == 0)),
            "rejection_rate_5pct": float(np.mean([x[k] for x in rejected]))}
    out["two_level_sd"] = {"truth": truth["two_level_sd(hospital)"], "mean": float(np.mean(two_level))}
    return out


def _speed(repeats: int) -> dict:
    frame = level_missingness_registry(1000)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        missingness_level_variation(frame, "v", "hospital", ["country"])
        times.append(time.perf_counter() - start)
    out = {"patients": int(len(frame)), "hmlib_s": float(np.median(times)),
           "lme4_s": r_median_seconds(R_SCRIPT, frame, repeats)}
    if isinstance(out["lme4_s"], float):
        out["lme4_over_hmlib"] = out["lme4_s"] / out["hmlib_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    out = {"truth": _study(args.replicates, 0.6, 10_000), "null_country": _study(args.replicates, 0.0, 20_000),
           "speed": _speed(args.repeats)}
    out["wall_s"] = time.perf_counter() - start
    for part in ("truth", "null_country"):
        for lv, row in out[part]["levels"].items():
            print(part, lv, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        print(part, "two-level SD", out[part]["two_level_sd"])
    print("speed", out["speed"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
