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

Data-generating model (one replicate, ``numpy.random.default_rng(seed)``):

- site sizes ``exp(N(0, 0.8^2))`` scaled to ``n_patients`` (at least 5 each);
- site effects: outcome ``u_j ~ N(0, 0.6^2)``, lactate ``v_j ~ N(0, 0.5^2)``,
  documentation quality ``d_j = -0.5 u_j / 0.6 + sqrt(0.75) N(0, 1)``
  (correlation -0.5 with ``u_j``: poorly documenting sites have higher
  mortality);
- age ``N(55, 18^2)`` clipped to 16-99; severity ``exp(N(log 12, 0.7^2))``
  clipped to 1-75;
- lactate ``max(0.3, 1.2 + 0.01 age + 0.06 severity + v_j + N(0, 0.7^2))``;
- outcome ``logit P = -6 + 0.35 lactate + 0.03 age + 0.06 severity + u_j``;
- lactate missing at random given site and severity:
  ``logit P(missing) = -1 - 1.2 d_j - 0.4 z(severity)``, and always missing
  in the two sites (of at least 20 patients) with the lowest ``d_j``
  (structural gaps).

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
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.stats.design import fit_analysis_model  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

TRUTH = {"lactate": 0.35, "sd(site)": 0.6}
PREDICTORS = ["lactate", "age", "severity"]


def simulate(seed: int, n_sites: int = 40, n_patients: int = 4000) -> pd.DataFrame:
    """One simulated registry (columns site, outcome, age, severity, lactate)."""
    rng = np.random.default_rng(seed)
    weights = np.exp(rng.normal(0.0, 0.8, n_sites))
    sizes = np.maximum(5, np.floor(weights / weights.sum() * n_patients)).astype(int)
    site = np.repeat(np.arange(1, n_sites + 1), sizes)
    n = site.size
    j = site - 1
    u = rng.normal(0.0, 0.6, n_sites)
    v = rng.normal(0.0, 0.5, n_sites)
    doc = -0.5 * u / 0.6 + np.sqrt(0.75) * rng.normal(size=n_sites)
    age = np.clip(rng.normal(55.0, 18.0, n), 16, 99).round(1)
    severity = np.clip(np.exp(rng.normal(np.log(12.0), 0.7, n)), 1, 75).round(1)
    lactate = np.maximum(0.3, 1.2 + 0.01 * age + 0.06 * severity + v[j] + rng.normal(0.0, 0.7, n)).round(2)
    eta = -6.0 + 0.35 * lactate + 0.03 * age + 0.06 * severity + u[j]
    outcome = (rng.random(n) < special.expit(eta)).astype(float)
    z_sev = (severity - severity.mean()) / severity.std()
    p_missing = special.expit(-1.0 - 1.2 * doc[j] - 0.4 * z_sev)
    eligible = np.flatnonzero(sizes >= 20)
    structural = eligible[np.argsort(doc[eligible])[:2]]
    missing = (rng.random(n) < p_missing) | np.isin(j, structural)
    lactate = np.where(missing, np.nan, lactate)
    return pd.DataFrame({"site": site, "outcome": outcome, "age": age, "severity": severity,
                         "lactate": lactate})


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
    data = simulate(seed, n_sites, n_patients)
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
