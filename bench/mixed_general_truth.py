"""Bias and interval coverage of the general fitter :func:`hmlib.stats.mixed.fit_mixed` against known truth.

Two designs, each simulated ``--replications`` times (seeds 1, 2, ...) by
:mod:`hmlib.stats.mixed.synthetic`:

- three-level nested, binomial (Laplace): patients in hospitals in regions
  in countries, 30 countries x about 4 regions x about 5 hospitals x about
  20 patients (about 12,000 rows), intercept SDs 0.4 / 0.5 / 0.6;
- random slope, gaussian (ML): 300 patients x 6 scheduled visits (20%
  missed), ``(1 + time | patient)`` with SDs 0.8 / 0.4 and correlation -0.3.

For every fixed effect: mean estimate, relative bias (with its Monte Carlo
SE) and the coverage of the 95% Wald interval; for every SD: relative bias
and the coverage of its log-scale interval; for the correlation: bias and
the coverage of its Fisher-z interval. Gates (the brief of issues #15/#16):
relative bias of coefficients and SDs under 10%, 95% coverage of the fixed
effects between 90% and 98%. Writes ``bench/results/mixed_general_truth.json``.

Run: ``.venv/bin/python bench/mixed_general_truth.py [--replications 500]`` (about 45 s)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed
from hmlib.stats.mixed.synthetic import simulate_nested, simulate_slopes

RESULTS = Path(__file__).resolve().parent / "results" / "mixed_general_truth.json"

NESTED = dict(levels=("country", "region", "hospital"), branching=(30, 4, 5), patients=20.0,
              sds=(0.4, 0.5, 0.6), beta=(-0.5, 0.6, -0.4), family="binomial")
SLOPES = dict(patients=300, visits=6, spacing=0.5, missed=0.2, beta=(1.0, -0.4, 0.5, 0.3),
              sd_intercept=0.8, sd_slope=0.4, cor=-0.3, family="gaussian", residual_sd=0.6)


def fit_nested(seed: int):
    frame, truth = simulate_nested(seed, **NESTED)
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.x2])
    structure = RandomEffects.nested(*((name, frame[name]) for name in NESTED["levels"]))
    fit = fit_mixed(frame.y, X, structure, family="binomial", term_names=["Intercept", "x1", "x2"])
    truth_terms = {**truth["fixed"], **{f"sd({name})": sd for name, sd in truth["sd"].items()}}
    return fit, truth_terms


def fit_slopes(seed: int):
    frame, truth = simulate_slopes(seed, **SLOPES)
    X = np.column_stack([np.ones(len(frame)), frame.time, frame.treat, frame.age])
    structure = RandomEffects([RandomLevel("patient", frame.patient, slopes={"time": frame.time})])
    fit = fit_mixed(frame.y, X, structure, family="gaussian", term_names=["Intercept", "time", "treat", "age"])
    truth_terms = {**truth["fixed"], "sd(patient)": truth["sd"]["Intercept"],
                   "sd(time|patient)": truth["sd"]["time"], "cor(time|patient)": truth["cor"]}
    return fit, truth_terms


def study(fitter, replications: int) -> dict:
    """Fit ``replications`` simulated data sets; summarise bias and coverage per term."""
    rows, converged, seconds = [], 0, []
    for seed in range(1, replications + 1):
        start = time.perf_counter()
        fit, truth = fitter(seed)
        seconds.append(time.perf_counter() - start)
        converged += bool(fit.converged)
        rows.append(fit.to_frame().set_index("term"))
    terms = list(truth)
    summary = {}
    for term in terms:
        est = np.array([r.loc[term, "estimate"] for r in rows])
        lower = np.array([r.loc[term, "ci_lower"] for r in rows])
        upper = np.array([r.loc[term, "ci_upper"] for r in rows])
        true = truth[term]
        covered = (lower <= true) & (true <= upper)
        entry = {"truth": true, "mean": float(est.mean()), "bias": float(est.mean() - true),
                 "bias_mc_se": float(est.std(ddof=1) / np.sqrt(est.size)),
                 "coverage_95": float(np.mean(covered[np.isfinite(lower)])) if np.isfinite(lower).any() else None,
                 "intervals_available": int(np.isfinite(lower).sum()),
                 "sd_of_estimates": float(est.std(ddof=1))}
        if not term.startswith("cor(") and true != 0:
            entry["relative_bias"] = float(entry["bias"] / abs(true))
            entry["relative_bias_mc_se"] = float(entry["bias_mc_se"] / abs(true))
        summary[term] = entry
    return {"replications": replications, "converged": converged,
            "median_seconds_per_fit": float(np.median(seconds)), "terms": summary}


def gates(result: dict, fixed_terms) -> dict:
    """Relative bias under 10% (coefficients whose truth is not 0, SDs); Wald coverage 90-98% (fixed)."""
    out = {}
    for term, entry in result["terms"].items():
        if "relative_bias" in entry and not term.startswith("cor("):
            out[f"bias {term}"] = abs(entry["relative_bias"]) < 0.10
        if term in fixed_terms:
            out[f"coverage {term}"] = 0.90 <= entry["coverage_95"] <= 0.98
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=500)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    out = {"design": {"nested_binomial": {k: list(v) if isinstance(v, tuple) else v for k, v in NESTED.items()},
                      "slopes_gaussian": {k: list(v) if isinstance(v, tuple) else v for k, v in SLOPES.items()}}}
    for name, fitter, fixed in [("nested_binomial", fit_nested, ("Intercept", "x1", "x2")),
                                ("slopes_gaussian", fit_slopes, ("Intercept", "time", "treat", "age"))]:
        result = study(fitter, args.replications)
        result["gates"] = gates(result, fixed)
        result["all_gates_passed"] = all(result["gates"].values())
        out[name] = result
        print(f"{name}: {result['converged']}/{args.replications} converged, "
              f"{result['median_seconds_per_fit']:.3f} s per fit, gates passed: {result['all_gates_passed']}")
        for term, entry in result["terms"].items():
            rel = entry.get("relative_bias")
            rel_text = ("" if rel is None else
                        f"rel. bias {100 * rel:+.1f}% (MC SE {100 * entry['relative_bias_mc_se']:.1f}%)")
            cov = entry["coverage_95"]
            print(f"  {term:20s} truth {entry['truth']:+.3f} mean {entry['mean']:+.3f} bias {entry['bias']:+.4f} "
                  f"{rel_text:34s} coverage {'-' if cov is None else f'{100 * cov:.1f}%'}")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
