"""Speed of the random-slope imputation against hmlib's random-intercept imputation and mice's 2l.pan.

One registry of ``bench/random_slope_imputation_truth.py``'s design with
``--patients`` patients (5,000) and all 8 visits (40,000 rows; ``x`` missing for
about 30%). Timed, median of ``--repeats`` runs, ``m = 5`` imputations of
``x`` from ``y``, ``treat``, ``t`` and the patient means of ``t`` and ``y``, 10
iterations each:

- ``random_slopes``: :func:`~hmlib.stats.imputation.random_slopes.impute_random_slopes`
  (random intercept and slope on ``t``);
- ``random_intercept``: :func:`hmlib.stats.imputation.impute` with ``method="multilevel"``
  (the same design, random intercept only; its chained-equations driver around
  the kernel included);
- ``chained_random_slopes``: the same :func:`hmlib.stats.imputation.impute` with
  ``random_slopes=["t"]`` (what the report's step 3 runs when the params give random slopes);
- the kernels alone on the same prepared design, 47 sweeps each (a chain's 20 + 9 x 3):
  ``random_slopes_gibbs_draw`` against ``ri_gibbs_draw``;
- ``mice_2l_pan``: ``mice(m = 5, maxit = 1)`` with ``2l.pan`` (500 pan iterations per
  imputation, mice's default), timed inside R (:mod:`bench.r_side`).

Target of #16: the random-slope imputation within 3x the random-intercept time.

``--sites N``: the same registry with the patients in ``N`` sites (visits in patients in sites; site effects
on ``x``, ``y`` and ``x``'s missingness) and ``higher_levels=["site"]`` in every imputation; timed:

- ``chained_random_slopes``: random slopes on ``t`` and the site's random intercept (three levels);
- ``chained_random_slopes_fixed_sites``: random slopes, sites as fixed indicator columns
  (``higher_effects="fixed"``, hmlib's behaviour before 2026-12-06);
- ``random_intercept``: random intercepts for patient and site (no slopes);
- ``lme4_ml_lmer_way``: the R counterpart, ``m = 5`` imputations as ``miceadds::ml.lmer`` makes them
  (``tests/results/nested_random_slope_imputation.R``, part 2: one ``lmer`` fit of ``(1 + t | patient) + (1 | site)``
  on the recorded rows, then the draws), timed inside R.

``--binary``: the registry with ``x`` a 0/1 finding (``simulate_longitudinal(binary=True)``); timed:
``chained_random_slopes`` (the random-slope logistic kernel, :mod:`hmlib.stats.imputation.slopes_logistic`),
``random_intercept`` (2l.bin) and, in R, ``mice_2l_bin`` (mice's 2l.bin with the random slope, type 2; ``m = 5``,
``maxit = 1``: one ``glmer`` fit per imputation; hmlib's kernel is a Gibbs sampler, 20 sweeps at a chain's first
call and 3 at each later one). With
``--sites N`` as well: every imputation with ``higher_levels=["site"]`` (the kernel with the site's random
intercept; ``random_intercept`` the three-level random-intercept logistic draw), and in R ``glmer_ml_lmer_way``:
one ``glmer`` fit of ``(1 + t | patient) + (1 | site)`` and ``m = 5`` draws as ``miceadds::ml.lmer`` makes them
(mice's 2l.bin has no site level).

Usage::

    nice -n 5 .venv/bin/python bench/bench_random_slope_imputation.py [--patients 5000] [--repeats 3]
    nice -n 5 .venv/bin/python bench/bench_random_slope_imputation.py --sites 50   # bench_..._sites50.json
    nice -n 5 .venv/bin/python bench/bench_random_slope_imputation.py --binary     # bench_..._binary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from r_side import r_median_seconds  # noqa: E402
from timing import median_seconds  # noqa: E402
from random_slope_imputation_truth import simulate_longitudinal  # noqa: E402

from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.imputation.kernels import prepare_design, ri_gibbs_draw  # noqa: E402
from hmlib.stats.imputation.random_slopes import impute_random_slopes, random_slopes_gibbs_draw  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_random_slope_imputation.json"

MICE_SCRIPT = """
suppressPackageStartupMessages(library(mice))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
meth <- make.method(d); meth[] <- ""; meth["x"] <- "2l.pan"
pred <- make.predictorMatrix(d); pred[, ] <- 0
pred["x", c("patient", "t", "y", "treat")] <- c(-2, 4, 3, 1)
times <- replicate(as.integer(args[2]), system.time(
  mice(d, m = 5, method = meth, predictorMatrix = pred, maxit = 1, printFlag = FALSE, seed = 1))[["elapsed"]])
cat(median(times), "\\n")
"""


_ML_LMER_WAY = """
suppressPackageStartupMessages({ library(lme4); library(MASS) })
args <- commandArgs(TRUE)
d <- read.csv(args[1])
d$patient <- factor(d$patient); d$site <- factor(d$site)
for (v in c("y", "t")) d[[paste0("p_", v)]] <- ave(d[[v]], d$patient)
for (v in c("y", "t", "treat")) d[[paste0("s_", v)]] <- ave(d[[v]], d$site)
impute <- function() {
  obs <- !is.na(d$x); mis <- which(!obs)
  fit <- FIT(x ~ y + t + treat + p_y + p_t + s_y + s_t + s_treat + (1 + t | patient) + (1 | site),
             data = d[obs, ], FAMILY)
  X <- model.matrix(~ y + t + treat + p_y + p_t + s_y + s_t + s_treat, d)
  re <- ranef(fit, condVar = TRUE); vc <- VarCorr(fit)
  mode_p <- as.matrix(re$patient); pv <- attr(re$patient, "postVar")
  mode_s <- re$site[, 1]; csd <- sqrt(attr(re$site, "postVar")[1, 1, ])
  n_obs <- sum(obs); p <- ncol(X)
  lapply(1:5, function(i) {
    beta <- mvrnorm(1, fixef(fit), as.matrix(vcov(fit)))
    b <- mvrnorm(nlevels(d$patient), c(0, 0), vc$patient)          # patients without a recorded x
    rownames(b) <- levels(d$patient)
    b[rownames(mode_p), ] <- t(sapply(seq_len(nrow(mode_p)), function(k) mvrnorm(1, mode_p[k, ], pv[, , k])))
    v <- setNames(rnorm(nlevels(d$site), 0, attr(vc$site, "stddev")), levels(d$site))
    v[rownames(re$site)] <- rnorm(length(mode_s), mode_s, csd)
    pid <- as.character(d$patient[mis]); sid <- as.character(d$site[mis])
    eta <- as.vector(X[mis, ] %*% beta) + b[pid, 1] + b[pid, 2] * d$t[mis] + v[sid]
    done <- d
    done$x[mis] <- VALUES
    done
  })
}
times <- replicate(as.integer(args[2]), system.time(impute())[["elapsed"]])
cat(median(times), "\\n")
"""
#: The R counterpart of the ``--sites`` benches: ``m = 5`` imputations as ``miceadds::ml.lmer`` makes them (one fit
#: of ``(1 + t | patient) + (1 | site)`` on the recorded rows, then coefficients, patients' and sites' effects drawn
#: from their estimates), continuous (``lmer``, normal noise) or binary (``glmer``, Bernoulli draws).
LMER_SCRIPT = (_ML_LMER_WAY.replace("FIT", "lmer").replace("FAMILY", "REML = FALSE")
               .replace("VALUES", "eta + rnorm(length(mis), 0, sigma(fit) * sqrt((n_obs - p) / rchisq(1, n_obs - p)))"))
GLMER_SCRIPT = (_ML_LMER_WAY.replace("FIT", "glmer").replace("FAMILY", "family = binomial")
                .replace("VALUES", "rbinom(length(mis), 1, plogis(eta))"))


MICE_BIN_SCRIPT = """
suppressPackageStartupMessages(library(mice))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
for (v in c("y", "t")) d[[paste0("p_", v)]] <- ave(d[[v]], d$patient)
meth <- make.method(d); meth[] <- ""; meth["x"] <- "2l.bin"
pred <- make.predictorMatrix(d); pred[, ] <- 0
pred["x", c("patient", "t", "treat", "y", "p_y", "p_t")] <- c(-2, 2, 1, 1, 1, 1)
times <- replicate(as.integer(args[2]), system.time(
  mice(d, m = 5, method = meth, predictorMatrix = pred, maxit = 1, printFlag = FALSE, seed = 1))[["elapsed"]])
cat(median(times), "\\n")
"""



def _seconds(work, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``work()``."""
    return median_seconds(work, repeats)[0]

def kernel_design(frame):
    """``x``'s imputation design as the kernels get it: ``(Do, Dp, y, obs, codes, J)``; columns intercept,
    ``t``, ``y``, ``treat`` and the patient means of ``t`` and ``y``, standardised (prepare_design)."""
    y = frame["x"].to_numpy()
    obs = ~np.isnan(y)
    codes = frame["patient"].to_numpy()
    J = int(codes.max()) + 1
    base = frame[["t", "y", "treat"]].to_numpy()
    sizes = np.bincount(codes).astype(float)
    means = np.column_stack([np.bincount(codes, weights=base[:, k]) / sizes for k in range(2)])[codes]
    Do, Dp, kept = prepare_design(np.column_stack([base, means]), ["t", "y", "treat", "mean(t)", "mean(y)"],
                                  obs, ~obs)
    assert kept[:2] == ["t", "y"]
    return Do, Dp, y, obs, codes, J


def _kernel_seconds(frame, repeats: int) -> dict:
    """Both kernels on the same prepared design, 47 sweeps (one chain's worth)."""
    Do, Dp, y, obs, codes, J = kernel_design(frame)

    def chain(kernel, **kw):
        rng, state = np.random.default_rng(1), {}
        for _ in range(10):
            kernel(Do, y[obs], codes[obs], Dp, codes[~obs], J, rng, state=state, **kw)

    return {"random_slopes_kernel": _seconds(lambda: chain(random_slopes_gibbs_draw, random_columns=[0, 1]),
                                                    repeats),
            "random_intercept_kernel": _seconds(lambda: chain(ri_gibbs_draw, hetero=False, pmm=False, donors=5),
                                                       repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="default: results/bench_random_slope_imputation"
                                                                "[_sites<N>].json")
    parser.add_argument("--sites", type=int, default=0, help="patients in this many sites (module docstring)")
    parser.add_argument("--binary", action="store_true", help="x a 0/1 finding (module docstring)")
    args = parser.parse_args()
    if args.binary:
        _binary(args)
        return
    if args.sites:
        _sites(args)
        return
    args.out = args.out or RESULTS
    frame = simulate_longitudinal(7, n_patients=args.patients, dropout=1e-12)
    out = {"rows": len(frame), "patients": args.patients, "missing_share": float(frame["x"].isna().mean()),
           "m": 5, "iterations": 10, "repeats": args.repeats, "seconds": {}}
    sec = out["seconds"]
    sec["random_slopes"] = _seconds(lambda: impute_random_slopes(
        frame, target="x", predictors=["y", "treat"], cluster="patient", slopes=["t"], m=5, iterations=10, seed=1),
        args.repeats)
    sec["random_intercept"] = _seconds(lambda: impute(
        frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
        predictors=["x", "t", "treat"], m=5, iterations=10, seed=1), args.repeats)
    sec["chained_random_slopes"] = _seconds(lambda: impute(
        frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
        predictors=["x", "t", "treat"], m=5, iterations=10, seed=1, random_slopes=["t"]), args.repeats)
    sec.update(_kernel_seconds(frame, args.repeats))
    sec["mice_2l_pan"] = r_median_seconds(MICE_SCRIPT, frame.drop(columns="visit"), 1)
    out["ratio_random_slopes_to_random_intercept"] = sec["random_slopes"] / sec["random_intercept"]
    out["ratio_chained_random_slopes_to_random_intercept"] = sec["chained_random_slopes"] / sec["random_intercept"]
    out["ratio_kernels"] = sec["random_slopes_kernel"] / sec["random_intercept_kernel"]
    if isinstance(sec["mice_2l_pan"], float):
        out["ratio_mice_to_random_slopes"] = sec["mice_2l_pan"] / sec["random_slopes"]
    _write(out, args.out)


def _sites(args) -> None:
    """The ``--sites`` bench (module docstring)."""
    frame = simulate_longitudinal(7, n_patients=args.patients, dropout=1e-12, n_sites=args.sites)
    out = {"rows": len(frame), "patients": args.patients, "sites": args.sites,
           "missing_share": float(frame["x"].isna().mean()), "m": 5, "iterations": 10, "repeats": args.repeats,
           "seconds": {}}
    sec = out["seconds"]
    common = dict(method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                  predictors=["x", "t", "treat"], m=5, iterations=10, seed=1, higher_levels=["site"])
    for name, kw in (("chained_random_slopes", dict(random_slopes=["t"])),
                     ("chained_random_slopes_fixed_sites", dict(random_slopes=["t"], higher_effects="fixed")),
                     ("random_intercept", {})):
        sec[name] = _seconds(lambda: impute(frame, **common, **kw), args.repeats)
    sec["lme4_ml_lmer_way"] = r_median_seconds(LMER_SCRIPT, frame.drop(columns="visit"), args.repeats)
    out["ratio_random_slopes_to_random_intercept"] = sec["chained_random_slopes"] / sec["random_intercept"]
    out["ratio_random_slopes_to_fixed_sites"] = sec["chained_random_slopes"] / sec["chained_random_slopes_fixed_sites"]
    if isinstance(sec["lme4_ml_lmer_way"], float):
        out["ratio_lme4_to_random_slopes"] = sec["lme4_ml_lmer_way"] / sec["chained_random_slopes"]
    _write(out, args.out or RESULTS.with_name(f"{RESULTS.stem}_sites{args.sites}.json"))


def _binary(args) -> None:
    """The ``--binary`` bench (module docstring)."""
    frame = simulate_longitudinal(7, n_patients=args.patients, dropout=1e-12, binary=True, n_sites=args.sites)
    out = {"rows": len(frame), "patients": args.patients, "sites": args.sites,
           "missing_share": float(frame["x"].isna().mean()), "m": 5, "iterations": 10, "repeats": args.repeats,
           "seconds": {}}
    sec = out["seconds"]
    common = dict(method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                  predictors=["x", "t", "treat"], m=5, iterations=10, seed=1,
                  higher_levels=["site"] if args.sites else ())
    sec["chained_random_slopes"] = _seconds(lambda: impute(frame, **common, random_slopes=["t"]), args.repeats)
    sec["random_intercept"] = _seconds(lambda: impute(frame, **common), args.repeats)
    name, script = ("glmer_ml_lmer_way", GLMER_SCRIPT) if args.sites else ("mice_2l_bin", MICE_BIN_SCRIPT)
    sec[name] = r_median_seconds(script, frame.drop(columns="visit"), 1)
    out["ratio_random_slopes_to_random_intercept"] = sec["chained_random_slopes"] / sec["random_intercept"]
    if isinstance(sec[name], float):
        out[f"ratio_{'glmer' if args.sites else 'mice'}_to_random_slopes"] = sec[name] / sec["chained_random_slopes"]
    suffix = f"_binary_sites{args.sites}" if args.sites else "_binary"
    _write(out, args.out or RESULTS.with_name(f"{RESULTS.stem}{suffix}.json"))


def _write(out: dict, path: Path) -> None:
    """Write the bench's JSON and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
