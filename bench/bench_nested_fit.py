"""The analysis model with a level above the cluster: its cost against the two-level model, and against lme4.

Issue #15's speed target: the nested fitter on 20,000 patients in 500
hospitals in 40 countries within 3 times the two-level fitter's time. Data:
:func:`hmlib.simulate.scale.trial_registry` (seed 15) with those sizes, its
complete cases, the report's analysis model (seven predictors, four of them
categorical) for the binary outcome, and a gaussian outcome with country and
hospital effects (``score``, as in ``tests/test_nested_analysis.py``).

For each family: hmlib's two-level fit ``(1 | hospital)`` (adaptive
quadrature off: Laplace, as the nested one) and its nested fit ``(1 |
country) + (1 | country:hospital)`` (:func:`hmlib.stats.design.fit_analysis_model`),
each the median of ``--repeats`` runs; then, in the same run, lme4's
``glmer`` / ``lmer(REML = FALSE)`` of both models with their default
control, timed inside R (``system.time``, the median of the same repeats;
R's start-up and reading the CSV are not counted), when ``Rscript`` with
lme4 is installed.

Usage::

    .venv/bin/python bench/bench_nested_fit.py [--repeats 3] [--out bench/results/bench_nested_fit.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds  # noqa: E402

from hmlib.simulate.scale import trial_registry, with_reference_columns  # noqa: E402
from hmlib.stats.design import fit_analysis_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_nested_fit.json"
PREDICTORS = ["age_c", "sex", "sbp_c", "conscious", "stroke_type", "aspirin", "atrial_fib"]
GAUSSIAN_PREDICTORS = ["age_c", "sex", "conscious"]
CATEGORICAL = ["sex", "conscious", "stroke_type", "aspirin"]

R_SCRIPT = r"""
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = TRUE)
repeats <- as.integer(args[2])
p <- "age_c + sex + sbp_c + conscious + stroke_type + aspirin + atrial_fib"
models <- list(
  binomial_two_level = function() glmer(as.formula(paste("dead_or_dependent ~", p, "+ (1 | hospital)")), d,
                                        family = binomial()),
  binomial_nested = function() glmer(as.formula(paste("dead_or_dependent ~", p,
                                                      "+ (1 | country) + (1 | country:hospital)")), d,
                                     family = binomial()),
  gaussian_two_level = function() lmer(score ~ age_c + sex + conscious + (1 | hospital), d, REML = FALSE),
  gaussian_nested = function() lmer(score ~ age_c + sex + conscious + (1 | country) + (1 | country:hospital), d,
                                    REML = FALSE))
for (name in names(models)) {
  times <- sapply(seq_len(repeats), function(i) system.time(suppressWarnings(suppressMessages(models[[name]]())))[["elapsed"]])
  cat(name, median(times), "\n")
}
"""


def registry() -> pd.DataFrame:
    """20,000 patients in 500 hospitals in 40 countries, with scaled age/sbp and a gaussian score."""
    return with_reference_columns(trial_registry(15, n_patients=20000, n_hospitals=500, n_countries=40), 15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    frame = registry()
    levels = {c: sorted(frame[c].dropna().astype(str).unique()) for c in CATEGORICAL}
    cases = {
        "binomial": dict(outcome="dead_or_dependent", predictors=PREDICTORS, family="binomial"),
        "gaussian": dict(outcome="score", predictors=GAUSSIAN_PREDICTORS, family="gaussian"),
    }
    out = {"patients": int(len(frame)), "hospitals": int(frame["hospital"].nunique()),
           "countries": int(frame["country"].nunique()), "repeats": args.repeats, "hmlib": {}, "lme4": {}}
    for family, model in cases.items():
        two_s, two = median_seconds(lambda: fit_analysis_model(frame, cluster="hospital", levels=levels, **model),
                                     args.repeats)
        nested_s, nested = median_seconds(
            lambda: fit_analysis_model(frame, cluster="hospital", levels=levels, higher_levels=("country",), **model),
            args.repeats)
        out["hmlib"][family] = {"two_level_s": two_s, "nested_s": nested_s, "ratio": nested_s / two_s,
                                "n_obs": nested.n_obs, "sd_two_level": two.cluster_sd,
                                "sd_country": nested.higher[0].sd, "sd_hospital": nested.cluster_sd}
        print(f"hmlib {family}: two-level {two_s:.2f} s, nested {nested_s:.2f} s (ratio {nested_s / two_s:.2f})",
              flush=True)
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data.csv"
            frame.to_csv(data, index=False)
            script = Path(tmp) / "bench.R"
            script.write_text(R_SCRIPT)
            done = subprocess.run(["Rscript", str(script), str(data), str(args.repeats)], capture_output=True,
                                  text=True, check=True)
        for line in done.stdout.split("\n"):
            if line.strip():
                name, seconds = line.split()
                out["lme4"][name] = float(seconds)
        for family in cases:
            r = out["lme4"]
            out["lme4"][f"{family}_ratio"] = r[f"{family}_nested"] / r[f"{family}_two_level"]
            out["hmlib"][family]["lme4_over_hmlib_nested"] = r[f"{family}_nested"] / out["hmlib"][family]["nested_s"]
            print(f"lme4 {family}: two-level {r[f'{family}_two_level']:.2f} s, nested {r[f'{family}_nested']:.2f} s",
                  flush=True)
    else:
        out["lme4"] = "Rscript not found: install R with lme4 (Debian: r-cran-lme4) for the side-by-side figure"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
