"""Step 1's missingness-outcome correlation at each level: truth by simulation, and speed beside lme4.

One run (``hmlib.stats.missingness.missingness_outcome_correlation_by_level``),
on registries of :func:`hmlib.simulate.missingness.level_outcome_missingness_registry`
(9,600 patients in 240 hospitals in 30 countries; SDs 0.6 between countries
and 0.4 between hospitals in both the missingness and the outcome model):

1. **Truth.** Three scenarios, ``--replicates`` registries each: the
   missingness and outcome intercepts correlate 0.8 at the country level
   only, at the hospital level only, or nowhere. Per level: the mean
   Pearson correlation of the conditional modes (attenuated below the 0.8 of
   the effects themselves: modes are shrunk and noisy, which is why the
   report calls it a screening number), and how often its 95% Fisher
   interval excludes 0 (power where the link is, false-positive rate where
   it is not; about 5% expected). Beside them the two-level screening
   correlation of step 1 (hospitals alone, :func:`missingness_outcome_correlation`)
   on the same data: how much of a country-level link it shows, and where.
2. **Speed.** The two nested fits and the correlations on the first
   registry, against ``glmer`` (Laplace) and ``lmer`` (ML) with lme4's
   default controls plus ``ranef`` and ``cor`` timed inside R
   (``system.time``; start-up and reading the CSV not counted), medians of
   ``--repeats`` runs, when ``Rscript`` with lme4 is installed.

Usage::

    .venv/bin/python bench/level_correlation_truth.py [--replicates 200] [--repeats 5]
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
from hmlib.simulate.missingness import level_outcome_missingness_registry  # noqa: E402
from hmlib.stats.missingness import (missingness_outcome_correlation,  # noqa: E402
                                     missingness_outcome_correlation_by_level)

RESULTS = Path(__file__).resolve().parent / "results" / "level_correlation_truth.json"
LEVELS = ("country", "hospital")
SCENARIOS = {"link_at_country": (0.8, 0.0), "link_at_hospital": (0.0, 0.8), "no_link": (0.0, 0.0)}

R_SCRIPT = r"""
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$missing <- as.integer(is.na(d$v))
repeats <- as.integer(args[2])
run <- function() {
  m <- glmer(missing ~ x + (1 | country) + (1 | country:hospital), d, family = binomial())
  o <- lmer(y ~ x + (1 | country) + (1 | country:hospital), d, REML = FALSE)
  rm <- ranef(m); ro <- ranef(o)
  for (g in c("country", "country:hospital")) {
    k <- intersect(rownames(rm[[g]]), rownames(ro[[g]]))
    cor(rm[[g]][k, 1], ro[[g]][k, 1]); cor(rm[[g]][k, 1], ro[[g]][k, 1], method = "spearman")
  }
}
times <- sapply(seq_len(repeats), function(i) system.time(suppressWarnings(suppressMessages(run())))[["elapsed"]])
cat(median(times), "\n")
"""


def _excludes_zero(lower: float, upper: float) -> bool:
    return bool(lower > 0 or upper < 0)


def _scenario(replicates: int, country: float, hospital: float, seed0: int) -> dict:
    pearson, found, two_level, two_found = [], [], [], []
    for r in range(replicates):
        frame = level_outcome_missingness_registry(seed0 + r, country_correlation=country,
                                                   hospital_correlation=hospital)
        res = missingness_outcome_correlation_by_level(frame, "v", "hospital", ["country"], "y", "gaussian", ["x"])
        t = res.table.set_index("level")
        pearson.append([t.loc[lv, "pearson"] for lv in LEVELS])
        found.append([_excludes_zero(t.loc[lv, "pearson_ci_lower"], t.loc[lv, "pearson_ci_upper"]) for lv in LEVELS])
        flat = missingness_outcome_correlation(frame, "v", "hospital", "y", "gaussian", ["x"])
        two_level.append(flat.pearson)
        two_found.append(_excludes_zero(*flat.pearson_ci))
    pearson, found = np.array(pearson), np.array(found)
    out = {"replicates": replicates, "true_correlation": {"country": country, "hospital": hospital}, "levels": {}}
    for k, lv in enumerate(LEVELS):
        out["levels"][lv] = {"mean_pearson": float(np.nanmean(pearson[:, k])),
                             "mc_se": float(np.nanstd(pearson[:, k], ddof=1) / np.sqrt(replicates)),
                             "share_ci_excludes_0": float(found[:, k].mean())}
    out["two_level_hospitals_alone"] = {"mean_pearson": float(np.mean(two_level)),
                                        "share_ci_excludes_0": float(np.mean(two_found))}
    return out


def _speed(repeats: int) -> dict:
    frame = level_outcome_missingness_registry(1000, country_correlation=0.8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        missingness_outcome_correlation_by_level(frame, "v", "hospital", ["country"], "y", "gaussian", ["x"])
        times.append(time.perf_counter() - start)
    out = {"patients": int(len(frame)), "hmlib_s": float(np.median(times)),
           "lme4_s": r_median_seconds(R_SCRIPT, frame, repeats)}
    if isinstance(out["lme4_s"], float):
        out["lme4_over_hmlib"] = out["lme4_s"] / out["hmlib_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    out = {name: _scenario(args.replicates, c, h, 30_000 + 1_000 * k)
           for k, (name, (c, h)) in enumerate(SCENARIOS.items())}
    out["speed"] = _speed(args.repeats)
    out["wall_s"] = time.perf_counter() - start
    for name in SCENARIOS:
        print(name, json.dumps(out[name]["levels"]), "two-level:", out[name]["two_level_hospitals_alone"], flush=True)
    print("speed", out["speed"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
