"""Does 2l.bin's Laplace draw attenuate an incomplete binary predictor in small clusters? A truth study.

hmlib imputes an incomplete binary variable with a random intercept
(``impute(method="multilevel")``) as mice's 2l.bin does: the random-intercept
logistic model is fitted by maximum likelihood (Laplace, as ``glmer``), and
each imputation draws the coefficients and the log cluster SD from the normal
approximation at that fit, then each cluster's intercept and the values. In
small clusters the Laplace fit's cluster SD is biased down, and a normal
approximation of a skewed posterior is rough, so the imputations may carry
too little between-cluster variation and, through it, a weaker link between
the variable and the outcome (attenuation of the focus coefficient).

This study measures that on :func:`hmlib.simulate.studies.small_site_registry`
(400 sites of 2 to about 20 patients, mean 4.6; ``x`` binary with a site SD of
1.2 on the logit scale; about 35% missing at random given the site and the
outcome), analysis model ``outcome ~ x + age + (1 | site)`` (binomial,
Laplace; truth x 0.8, sd(site) 0.6), each replicate by:

- ``full``: the data before the missingness (what the analysis model itself
  gives: its own small-cluster bias);
- ``cc``: complete cases;
- ``laplace``: ``impute(method="multilevel")`` as the report runs it;
- ``gibbs``: the same call with the random-intercept logistic kernel replaced
  by exact posterior draws: the random-slope logistic kernel's Polya-Gamma
  Gibbs sampler (:mod:`hmlib.stats.imputation.slopes_logistic`) with the
  intercept as its only random effect (20 sweeps at a chain's first call, 3
  at each later one; priors half-t(2.5) on the SD, N(0, 2.5^2) on the
  standardised coefficients). Same design (cluster means of the outcome and
  age), same m and iterations.

Both imputations use ``m`` imputations of ``iterations`` iterations and the
same seed. Per replicate the cluster SD of the imputation model (the Laplace
fit's, and the Gibbs chains' mean) is recorded too. The paired difference
``laplace - gibbs`` (same registries) isolates the Laplace approximation.

``--mice N``: on the first ``N`` registries, mice's 2l.bin (the R counterpart
of ``laplace``: ``bench/r/mice_2l_bin.R``, same design, same ``m``, ``maxit
= 1``, glmer on each completed set; it draws each site's intercept without
the site's recorded values, where hmlib draws it given them) beside hmlib's,
in the same run: the
mean paired difference of the pooled x (against the full data too), mice's
bias and 95% coverage, and the median seconds of the imputation in each.

``--no-cluster-means``: both imputations without the site means of the
outcome and age in their design (``impute(cluster_means=False)``; the mice
side keeps them): does the upward shift of x under imputation come from the
means, each of which holds the patient's own outcome?

Usage::

    nice -n 5 .venv/bin/python bench/ri_logistic_small_clusters.py --reps 400 --mice 40   # results/ri_logistic_small_clusters.json
    ... --reps 400 --patients 1000 --out bench/results/ri_logistic_small_clusters_pairs.json   # mean 2.55 a site
    ... --reps 160 --first-seed 5400 --mice 160 --out bench/results/ri_logistic_small_clusters_mice.json
    ... --reps 400 --no-cluster-means --out bench/results/ri_logistic_small_clusters_no_means.json
    ... --reps 400 --first-seed 5600 --out bench/results/ri_logistic_small_clusters_more.json
    .venv/bin/python bench/ri_logistic_small_clusters.py --reps 2 --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hmlib.stats.imputation.univariate as univariate  # noqa: E402
from hmlib.simulate.studies import small_site_registry, small_site_registry_truth  # noqa: E402
from hmlib.stats.design import fit_analysis_model  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.imputation.kernels import ri_logistic_draw  # noqa: E402
from hmlib.stats.imputation.slopes_logistic import random_slopes_logistic_draw  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402
from r_side import NO_R  # noqa: E402
from truth_summary import term_summary  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ri_logistic_small_clusters.json"
TERMS = ("x", "age", "sd(site)")
TRUTH = {t: small_site_registry_truth()["terms"][t] for t in TERMS}
PREDICTORS = ["x", "age"]
METHODS = ("full", "cc", "laplace", "gibbs")


@contextmanager
def _kernel(method: str, taus: list):
    """Inside: the random-intercept logistic kernel of ``impute`` is ``method``'s, recording its cluster SDs."""
    original = univariate.ri_logistic_draw

    def laplace(Do, yo, co, Dp, cp, J, rng, *, notes, target, state=None, cache=None, logits=False):
        out = ri_logistic_draw(Do, yo, co, Dp, cp, J, rng, notes=notes, target=target, state=state, cache=cache,
                               logits=logits)
        fit = (cache or {}).get("fit")
        if fit is not None and not isinstance(fit, Exception):
            taus.append(float(fit.cluster_sd))
        return out

    def gibbs(Do, yo, co, Dp, cp, J, rng, *, notes, target, state=None, cache=None, logits=False):
        out = random_slopes_logistic_draw(Do, yo, co, Dp, cp, J, rng, random_columns=[0], notes=notes,
                                          target=target, state=state, logits=logits)
        taus.append(float(np.sqrt(state["psi"][0, 0])))
        return out

    univariate.ri_logistic_draw = laplace if method == "laplace" else gibbs
    try:
        yield
    finally:
        univariate.ri_logistic_draw = original


def _terms(frame) -> dict:
    return {t: frame.loc[t, ["estimate", "std_error", "ci_lower", "ci_upper"]].astype(float).to_dict()
            for t in TERMS}


def one_replicate(seed: int, *, m: int, iterations: int, n_sites: int, n_patients: int,
                  cluster_means: bool = True) -> dict:
    """Every method's estimates (and seconds, and the imputation model's cluster SD) on registry ``seed``."""
    data = small_site_registry(seed, n_sites, n_patients)
    out = {}
    for name, frame in (("full", small_site_registry(seed, n_sites, n_patients, complete=True)), ("cc", data)):
        fit = fit_analysis_model(frame, outcome="outcome", predictors=PREDICTORS, cluster="site", family="binomial")
        out[name] = _terms(fit.to_frame().set_index("term"))
    for name in ("laplace", "gibbs"):
        taus: list = []
        start = time.perf_counter()
        with _kernel(name, taus):
            result = impute(data, method="multilevel", cluster="site", outcome="outcome", outcome_family="binomial",
                            predictors=PREDICTORS, m=m, iterations=iterations, seed=seed,
                            cluster_means=cluster_means)
        seconds = time.perf_counter() - start
        pooled = analyse_imputations(result, outcome="outcome", predictors=PREDICTORS, cluster="site",
                                     family="binomial")
        out[name] = _terms(pooled.to_frame().set_index("term"))
        out[name]["seconds"] = seconds
        out[name]["imputation_sd"] = float(np.mean(taus[-m:]))     # the last call of each chain
    return out


def summarise(rows: list[dict]) -> dict:
    """Per method and term: mean, bias (absolute, relative, MC SE), empirical SD, mean SE, 95% coverage; per
    imputation method its mean seconds and imputation-model cluster SD; the paired ``laplace - gibbs``."""
    reps = len(rows)
    out = {}
    for method in METHODS:
        res = {term: term_summary(*([r[method][term][k] for r in rows] for k in ("estimate", "std_error",
                                                                                "ci_lower", "ci_upper")), truth)
               for term, truth in TRUTH.items()}
        if method in ("laplace", "gibbs"):
            res["seconds_mean"] = float(np.mean([r[method]["seconds"] for r in rows]))
            res["imputation_model_sd_mean"] = float(np.mean([r[method]["imputation_sd"] for r in rows]))
        out[method] = res
    paired = {}
    for term, truth in TRUTH.items():
        d = np.array([r["laplace"][term]["estimate"] - r["gibbs"][term]["estimate"] for r in rows])
        paired[term] = {"mean": float(d.mean()), "mc_se": float(d.std(ddof=1) / np.sqrt(reps)),
                        "relative_to_truth": float(d.mean() / truth)}
    d = np.array([r["laplace"]["imputation_sd"] - r["gibbs"]["imputation_sd"] for r in rows])
    paired["imputation_model_sd"] = {"mean": float(d.mean()), "mc_se": float(d.std(ddof=1) / np.sqrt(reps))}
    out["laplace_minus_gibbs"] = paired
    return out


def mice_side(rows: list[dict], seeds, *, m: int, n_sites: int, n_patients: int) -> dict | str:
    """mice 2l.bin on the registries ``seeds`` (the first rows' registries), beside hmlib's Laplace and Gibbs
    imputations of the same registries (module docstring), or :data:`~r_side.NO_R`."""
    if not shutil.which("Rscript"):
        return NO_R
    script = Path(__file__).resolve().parent / "r" / "mice_2l_bin.R"
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "registries.csv", Path(tmp) / "mice.json"
        pd.concat([small_site_registry(s, n_sites, n_patients).assign(registry=s) for s in seeds]).to_csv(
            data, index=False)
        subprocess.run(["Rscript", str(script), str(data), str(out), str(m), "1"], check=True, capture_output=True)
        mice = json.loads(out.read_text())
    r = [mice["registries"][str(s)] for s in seeds]
    x_mice = np.array([v["x"] for v in r])
    truth = TRUTH["x"]
    covered = np.mean([v["x_ci_lower"] <= truth <= v["x_ci_upper"] for v in r])
    res = {"registries": len(seeds), "mice": mice["mice"], "lme4": mice["lme4"],
           "x_mice_mean": float(x_mice.mean()), "x_mice_relative_bias": float((x_mice.mean() - truth) / truth),
           "x_mice_relative_bias_mc_se": float(x_mice.std(ddof=1) / np.sqrt(x_mice.size) / truth),
           "x_mice_coverage": float(covered),
           "mice_seconds_median": float(np.median([v["imputation_seconds"] for v in r])),
           "x_mice_by_registry": [round(float(v), 5) for v in x_mice]}
    for name in ("full", "laplace", "gibbs"):
        d = np.array([row[name]["x"]["estimate"] for row in rows]) - x_mice
        res[f"x_{name}_minus_mice"] = {"mean": float(d.mean()), "mc_se": float(d.std(ddof=1) / np.sqrt(d.size))}
        if name == "full":
            continue
        res[f"{name}_seconds_median"] = float(np.median([row[name]["seconds"] for row in rows]))
    res["mice_over_laplace_seconds"] = res["mice_seconds_median"] / res["laplace_seconds_median"]
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sites", type=int, default=400)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--mice", type=int, default=0, metavar="N",
                        help="mice 2l.bin in R on the first N registries, beside hmlib's (module docstring)")
    parser.add_argument("--no-cluster-means", action="store_true",
                        help="impute without the site means of the outcome and age in the design (module docstring)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = []
    for r in range(args.reps):
        rows.append(one_replicate(args.first_seed + r, m=args.m, iterations=args.iterations, n_sites=args.sites,
                                  n_patients=args.patients, cluster_means=not args.no_cluster_means))
        if (r + 1) % 10 == 0 or r + 1 == args.reps:
            print(f"{r + 1} replicates, {time.perf_counter() - started:.0f} s", flush=True)
    summary = summarise(rows)
    if args.mice:
        n = min(args.mice, args.reps)
        summary["mice_2l_bin"] = mice_side(rows[:n], range(args.first_seed, args.first_seed + n), m=args.m,
                                           n_sites=args.sites, n_patients=args.patients)
    out = {"what": __doc__.splitlines()[0], "truth": TRUTH, "reps": args.reps, "m": args.m,
           "cluster_means": not args.no_cluster_means,
           "iterations": args.iterations, "sites": args.sites, "patients": args.patients,
           "first_seed": args.first_seed,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "seconds": time.perf_counter() - started, "summary": summary,
           "x_by_registry": {name: [round(r[name]["x"]["estimate"], 5) for r in rows] for name in METHODS}}
    args.out.write_text(json.dumps(out, indent=1))
    for method in METHODS:
        s = summary[method]
        line = "  ".join(f"{t} {100 * s[t]['relative_bias']:+.1f}% ({100 * s[t]['relative_bias_mc_se']:.1f}) "
                         f"cov {100 * s[t]['coverage']:.1f}%" for t in TERMS)
        extra = (f"  imp. SD {s['imputation_model_sd_mean']:.3f}  {s['seconds_mean']:.2f} s"
                 if "seconds_mean" in s else "")
        print(f"{method:<8} {line}{extra}")
    p = summary["laplace_minus_gibbs"]
    print("laplace - gibbs: " + "  ".join(f"{t} {v['mean']:+.4f} (MC SE {v['mc_se']:.4f})" for t, v in p.items()))
    if args.mice:
        print("mice 2l.bin:", json.dumps({k: v for k, v in summary["mice_2l_bin"].items()
                                          if k != "x_mice_by_registry"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
