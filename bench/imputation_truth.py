"""Does multilevel imputation recover the truth? A simulation study with known truth.

Each replicate simulates a trauma registry modelled on
``/work/shared/reference/sim_registry_truth.json``, imputes the missing
lactate values, fits the analysis model
``outcome ~ lactate + age + severity + (1 | site)`` (binomial, Laplace) to
each completed data set and pools by Rubin's rules. Over the replicates it
reports, for the lactate coefficient (truth 0.35) and the site SD (truth
0.6): mean estimate, bias, relative bias, the Monte Carlo SE of the bias,
empirical SD vs mean pooled SE, and the coverage of the 95% intervals (with
its Monte Carlo SE).

Data-generating model: :func:`hmlib.simulate.studies.truth_study_registry`
(its docstring states it; the truth is
:func:`hmlib.simulate.studies.truth_study_registry_truth`): site sizes
lognormal, site effects on outcome, lactate and documentation quality
(correlated -0.5 with the outcome's), lactate missing at random given site
and severity, and never recorded in two sites (structural gaps).

Usage::

    .venv/bin/python bench/imputation_truth.py --reps 100          # multilevel, m = 20
    .venv/bin/python bench/imputation_truth.py --reps 100 --methods multilevel flat:pmm cc

``tests/test_imputation.py`` runs a small version (10 replicates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.simulate.studies import truth_study_registry, truth_study_registry_truth  # noqa: E402
from hmlib.stats.design import fit_analysis_model  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

#: The quantities the study checks, with their true values (lactate 0.35, sd(site) 0.6).
TRUTH = {term: truth_study_registry_truth()["terms"][term] for term in ("lactate", "sd(site)")}
PREDICTORS = ["lactate", "age", "severity"]


def _estimates_from_pooled(pooled) -> dict:
    frame = pooled.to_frame().set_index("term")
    return {t: frame.loc[t, ["estimate", "std_error", "ci_lower", "ci_upper"]].to_dict() for t in TRUTH}


def _estimates_complete_case(data: pd.DataFrame) -> dict:
    fit = fit_analysis_model(data, outcome="outcome", predictors=PREDICTORS, cluster="site", family="binomial")
    frame = fit.to_frame().set_index("term")
    return {t: frame.loc[t, ["estimate", "std_error", "ci_lower", "ci_upper"]].to_dict() for t in TRUTH}


def one_replicate(seed: int, method: str, *, m: int, iterations: int, n_sites: int, n_patients: int) -> dict:
    """Estimates of lactate and sd(site) for one replicate and one method.

    ``method`` is ``"cc"`` (complete cases) or ``"<imputation method>[:pmm]"``.
    """
    data = truth_study_registry(seed, n_sites, n_patients)
    if method == "cc":
        return _estimates_complete_case(data)
    name, _, cont = method.partition(":")
    result = impute(data, method=name, cluster="site", outcome="outcome", outcome_family="binomial",
                    predictors=PREDICTORS, m=m, iterations=iterations, seed=seed,
                    continuous=cont or "norm")
    pooled = analyse_imputations(result, outcome="outcome", predictors=PREDICTORS, cluster="site",
                                 family="binomial")
    return _estimates_from_pooled(pooled)


def summarise(rows: list[dict]) -> dict:
    """Bias, relative bias, MC SEs, empirical SD, mean SE and coverage per term."""
    out = {}
    for term, truth in TRUTH.items():
        est = np.array([r[term]["estimate"] for r in rows])
        se = np.array([r[term]["std_error"] for r in rows])
        lo = np.array([r[term]["ci_lower"] for r in rows])
        hi = np.array([r[term]["ci_upper"] for r in rows])
        reps = est.size
        covered = (lo <= truth) & (truth <= hi)
        cover = float(np.mean(covered))
        out[term] = {
            "truth": truth, "reps": reps, "mean": float(est.mean()), "bias": float(est.mean() - truth),
            "relative_bias": float((est.mean() - truth) / truth),
            "bias_mc_se": float(est.std(ddof=1) / np.sqrt(reps)) if reps > 1 else float("nan"),
            "empirical_sd": float(est.std(ddof=1)) if reps > 1 else float("nan"),
            "mean_se": float(np.nanmean(se)), "coverage": cover,
            "coverage_mc_se": float(np.sqrt(cover * (1 - cover) / reps)),
        }
    return out


def run(reps: int = 100, methods=("multilevel",), *, m: int = 20, iterations: int = 10, n_sites: int = 40,
        n_patients: int = 4000, first_seed: int = 1000, verbose: bool = True) -> dict:
    """Run the study; returns ``{method: summary}`` (see :func:`summarise`)."""
    results = {}
    for method in methods:
        rows = []
        start = time.perf_counter()
        for r in range(reps):
            rows.append(one_replicate(first_seed + r, method, m=m, iterations=iterations, n_sites=n_sites,
                                      n_patients=n_patients))
        seconds = time.perf_counter() - start
        results[method] = summarise(rows)
        results[method]["seconds"] = seconds
        if verbose:
            print(f"\n{method}: {reps} replicates, {seconds:.1f} s")
            for term in TRUTH:
                s = results[method][term]
                print(f"  {term:<9} truth {s['truth']:.3f}  mean {s['mean']:.4f}  bias {s['bias']:+.4f} "
                      f"({100 * s['relative_bias']:+.1f}%, MC SE {s['bias_mc_se']:.4f})  "
                      f"emp. SD {s['empirical_sd']:.4f}  mean SE {s['mean_se']:.4f}  "
                      f"coverage {100 * s['coverage']:.1f}% (MC SE {100 * s['coverage_mc_se']:.1f})")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["multilevel"],
                        help="multilevel, multilevel:pmm, flat, flat:pmm, fixed_effects, stratified, cc")
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    results = run(args.reps, args.methods, m=args.m, iterations=args.iterations, n_sites=args.sites,
                  n_patients=args.patients)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    ok = True
    if "multilevel" in results:
        for term in TRUTH:
            s = results["multilevel"][term]
            ok &= abs(s["relative_bias"]) < 0.10 and 0.90 <= s["coverage"] <= 0.98
        print(f"\nmultilevel: |relative bias| < 10% and coverage in [90%, 98%] for both terms: "
              f"{'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
