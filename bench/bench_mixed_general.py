"""Timing of the general fitter :func:`hmlib.stats.mixed.fit_mixed` against the random-intercept fitter.

Two problems, simulated with a fixed seed, each timed in the same run as
:func:`~hmlib.stats.mixed.fit_random_intercept` on the same rows:

- nested: 20,000 patients in 500 hospitals in 40 countries, 5 predictors
  plus intercept; ``(1 | country) + (1 | country:hospital)`` against
  ``(1 | hospital)`` (gaussian ML and binomial Laplace);
- random slope: 5,000 patients x 8 visits (40,000 rows), time and 4
  predictors plus intercept; ``(1 + time | patient)`` against
  ``(1 | patient)`` (gaussian ML and binomial Laplace).

Prints medians over repeated runs and the ratios general / random
intercept (the gate: at most 3), and writes them to
``bench/results/bench_mixed_general.json``. Timings on a shared 2-core
machine are noisy; the ratios come from interleaved runs.

Run: ``.venv/bin/python bench/bench_mixed_general.py [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed, fit_random_intercept

RESULTS = Path(__file__).resolve().parent / "results" / "bench_mixed_general.json"


def simulate_nested(seed: int, n: int = 20_000, hospitals: int = 500, countries: int = 40):
    """Patients in hospitals in countries: (X, y_gauss, y_bin, country, hospital)."""
    rng = np.random.default_rng(seed)
    hospital = rng.integers(0, hospitals, size=n)
    country_of = rng.permutation(np.arange(hospitals) % countries)
    country = country_of[hospital]
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 5))])
    eta = (X @ np.r_[-1.5, np.linspace(0.5, -0.3, 5)] + rng.normal(scale=0.4, size=countries)[country]
           + rng.normal(scale=0.6, size=hospitals)[hospital])
    y_bin = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    y_gauss = eta + rng.normal(scale=1.5, size=n)
    return X, y_gauss, y_bin, country, hospital


def simulate_slope(seed: int, patients: int = 5_000, visits: int = 8):
    """Visits in patients with a correlated random intercept and slope: (X, y_gauss, y_bin, patient, time)."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(patients), visits)
    time = np.tile(np.arange(visits) * 0.5, patients)
    n = patient.size
    X = np.column_stack([np.ones(n), time, rng.normal(size=(n, 4))])
    cov = np.array([[0.64, -0.1], [-0.1, 0.16]])
    effects = rng.multivariate_normal(np.zeros(2), cov, size=patients)
    eta = X @ np.r_[-0.5, 0.3, np.linspace(0.4, -0.2, 4)] + effects[patient, 0] + effects[patient, 1] * time
    y_bin = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    y_gauss = eta + rng.normal(scale=0.7, size=n)
    return X, y_gauss, y_bin, patient, time


def interleaved_medians(functions: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn so that machine load hits all alike."""
    for fn in functions.values():
        fn()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20250601)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    results = {}
    X, y_gauss, y_bin, country, hospital = simulate_nested(args.seed)
    nested = RandomEffects.nested(("country", country), ("hospital", hospital))
    X2, y2_gauss, y2_bin, patient, visit_time = simulate_slope(args.seed + 1)
    slope = RandomEffects([RandomLevel("patient", patient, slopes={"time": visit_time})])
    problems = {
        "nested": (X, {"gaussian": y_gauss, "binomial": y_bin}, nested, hospital,
                   "20,000 patients / 500 hospitals / 40 countries"),
        "slope": (X2, {"gaussian": y2_gauss, "binomial": y2_bin}, slope, patient,
                  "5,000 patients x 8 visits"),
    }
    for problem, (design, outcomes, structure, inner, label) in problems.items():
        for family, y in outcomes.items():
            general = fit_mixed(y, design, structure, family=family)
            single = fit_random_intercept(y, design, inner, family=family)
            medians = interleaved_medians({
                "general": lambda: fit_mixed(y, design, structure, family=family),
                "random_intercept": lambda: fit_random_intercept(y, design, inner, family=family),
            }, args.repeats)
            key = f"{problem}_{family}"
            results[key] = {
                "problem": label, "family": family, "rows": int(y.size),
                "general_seconds": medians["general"], "random_intercept_seconds": medians["random_intercept"],
                "ratio": medians["general"] / medians["random_intercept"],
                "general_converged": bool(general.converged), "general_loglik": general.loglik,
                "random_intercept_loglik": single.loglik,
                "general_terms": dict(zip(general.to_frame()["term"], general.to_frame()["estimate"])),
            }
            print(f"{key:18s} general {medians['general']:.3f} s  random intercept "
                  f"{medians['random_intercept']:.3f} s  ratio {results[key]['ratio']:.2f}  "
                  f"(converged {general.converged})")
    out = {"repeats": args.repeats, "seed": args.seed, "machine": platform.platform(),
           "processor": platform.processor() or platform.machine(), "gate_ratio": 3.0, "results": results}
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
