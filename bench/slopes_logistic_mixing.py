"""Why the random-slope logistic imputation costs more than 3x the random-intercept one: the sweeps it needs.

#16's speed target (the random-slope imputation within 3x the random-intercept
time) is met for continuous targets and missed for binary ones
(``bench_random_slope_imputation.py --binary``: about 5x). The binary kernel
(:mod:`hmlib.stats.imputation.slopes_logistic`) is a Gibbs sampler; a chain of
the bench's chained imputation runs 47 sweeps (20 at the first call, 3 at each
of 9 later ones), each with one Polya-Gamma draw per recorded row. This script
measures, on the bench's registry (5,000 patients x 8 visits, ``x`` binary,
about 30% missing) and in one run:

1. **Cost of one sweep**, split into the Polya-Gamma draws and the rest (median
   of 200), and each of the ``polyagamma`` package's samplers for the same
   draws; the ``floor``: 5 chains x 47 sweeps of Polya-Gamma draws alone,
   against the random-intercept imputation (``impute(method="multilevel")``,
   ``m = 5``, 10 iterations) and the random-slope one timed here.
2. **Sweeps needed**: ``--chains`` chains of the kernel's sampler from its start
   (``beta = 0``, ``b = 0``, ``Psi = I``) and from an alternative start (``Psi``
   at the prior's scale, ``2.5^2 I``, and ``beta`` at the flat logistic fit);
   at sweeps 10, 20, 30, 38, 47 the chains' mean of the intercept SD, the slope
   SD and the coefficient of ``y`` against the stationary mean (sweeps
   ``--reference-from`` to the end of all chains of both starts pooled), in
   posterior SDs. Two registries: the truth study's size (300 patients) and the
   bench's (5,000).

A shorter chain would cut the time in proportion; the measured start effect
says by how much it can be cut.

Usage::

    nice -n 5 .venv/bin/python bench/slopes_logistic_mixing.py     # bench/results/slopes_logistic_mixing.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from polyagamma import random_polyagamma

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_random_slope_imputation import kernel_design  # noqa: E402
from random_slope_imputation_truth import simulate_longitudinal  # noqa: E402
from timing import median_seconds  # noqa: E402

from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.imputation.slopes_logistic import LOGIT_PSI_PRIOR_SD_SCALE, _Model  # noqa: E402
from hmlib.stats.mixed.binomial import fit_logistic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "slopes_logistic_mixing.json"
CHAIN_SWEEPS = 47          # one chain of the bench's chained imputation: 20 + 9 x 3
CHECKPOINTS = (10, 20, 30, 38, 47)
TRACKED = ("sd(intercept)", "sd(t)", "beta[y]")


def _registry(n_patients: int, seed: int):
    """The bench's (``n_patients > 1000``: no dropout) or the truth study's registry, and the kernel's model."""
    frame = simulate_longitudinal(seed, n_patients=n_patients, dropout=1e-12 if n_patients > 1000 else 0.08,
                                  binary=True)
    Do, _, y, obs, codes, J = kernel_design(frame)
    return frame, _Model(Do, y[obs], codes[obs], J, np.array([0, 1]), None, 0)


def _median_ms(work, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after one untimed call."""
    return 1e3 * median_seconds(work, repeats, warm=True)[0]


def _costs(frame, model, repeats: int) -> dict:
    """Part 1 (module docstring)."""
    rng = np.random.default_rng(1)
    state: dict = {}
    for _ in range(20):
        model.sweep(state, rng)
    eta = model.X @ state["beta"] + model._random_part(state["b"])
    out = {"sweep_ms": _median_ms(lambda: model.sweep(dict(state), rng), repeats),
           "polya_gamma_ms": {}}
    for method in ("default (hybrid)", "devroye", "alternate", "saddle", "gamma"):
        kw = {} if method.startswith("default") else {"method": method}
        out["polya_gamma_ms"][method] = _median_ms(lambda: random_polyagamma(1.0, eta, random_state=rng, **kw),
                                                   max(10, repeats // 10))
    pg = out["polya_gamma_ms"]["default (hybrid)"]
    out["rest_of_sweep_ms"] = out["sweep_ms"] - pg
    common = dict(method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                  predictors=["x", "t", "treat"], m=5, iterations=10, seed=1)
    out["random_intercept_imputation_s"] = _median_ms(lambda: impute(frame, **common), 3) / 1e3
    out["random_slope_imputation_s"] = _median_ms(lambda: impute(frame, **common, random_slopes=["t"]), 3) / 1e3
    out["polya_gamma_floor_s"] = 5 * CHAIN_SWEEPS * pg / 1e3
    out["ratio_random_slopes_to_random_intercept"] = (out["random_slope_imputation_s"]
                                                      / out["random_intercept_imputation_s"])
    out["ratio_floor_to_random_intercept"] = out["polya_gamma_floor_s"] / out["random_intercept_imputation_s"]
    return out


def _chains(model, start: dict, chains: int, sweeps: int) -> np.ndarray:
    """(chains, sweeps, 3) trace of TRACKED from ``start``; chain ``c`` seeded ``100 + c``."""
    trace = np.empty((chains, sweeps, len(TRACKED)))
    for c in range(chains):
        rng = np.random.default_rng(100 + c)
        state = {k: np.copy(v) for k, v in start.items()}
        for s in range(sweeps):
            model.sweep(state, rng)
            psi = state["psi"]
            trace[c, s] = np.sqrt(psi[0, 0]), np.sqrt(psi[1, 1]), state["beta"][2]
    return trace


def _start_effect(model, chains: int, sweeps: int, reference_from: int) -> dict:
    """Part 2 (module docstring) on one registry."""
    prior_start = {"psi": LOGIT_PSI_PRIOR_SD_SCALE ** 2 * np.eye(2), "beta": fit_logistic(model.X, model.kappa + 0.5)[0]}
    traces = {"kernel start (Psi = I, beta = 0)": _chains(model, {}, chains, sweeps),
              "prior-scale Psi, flat-fit beta": _chains(model, prior_start, chains, sweeps)}
    tail = np.concatenate([t[:, reference_from:] for t in traces.values()]).reshape(-1, len(TRACKED))
    mean, sd = tail.mean(axis=0), tail.std(axis=0)
    out = {"stationary_mean": dict(zip(TRACKED, mean.round(4).tolist())),
           "posterior_sd": dict(zip(TRACKED, sd.round(4).tolist())),
           "z_of_chain_mean_mc_se": round(1.0 / np.sqrt(chains), 3), "z_by_sweep": {}}
    for name, trace in traces.items():
        out["z_by_sweep"][name] = {s: dict(zip(TRACKED, ((trace[:, s - 1].mean(axis=0) - mean) / sd).round(2).tolist()))
                                   for s in CHECKPOINTS}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    frame, model = _registry(5000, 7)
    out = {"what": __doc__.splitlines()[0],
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "rows_recorded": int(model.n), "patients": 5000, "costs": _costs(frame, model, args.repeats),
           "start_effect": {}}
    for label, n, chains, sweeps, ref in (("300 patients (truth study)", 300, 200, 150, 60),
                                          ("5000 patients (bench)", 5000, 40, 150, 60)):
        _, m = _registry(n, 11 if n == 300 else 7)
        out["start_effect"][label] = dict(chains=chains, sweeps=sweeps, reference_from=ref,
                                          **_start_effect(m, chains, sweeps, ref))
    out["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
