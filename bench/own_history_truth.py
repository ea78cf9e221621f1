"""A variable's own history in its imputation model: through the patient's random trajectory or as predictors.

Issue #16 asks for "the variables' own history as predictors where
appropriate". In the random-slope imputation model (``2l.pan`` type 2, what
step 3 runs when the params give ``random_slopes``) a patient's other
recorded values of ``x`` already enter the imputation of a missing ``x``:
through the posterior of the patient's random intercept and slope. This
study asks whether explicit history predictors add anything, and what they
cost, on the registries of ``random_slope_imputation_truth.py``
(:func:`random_slope_imputation_truth.simulate_longitudinal`: 300 patients,
up to 8 visits, ``y = 1 + 0.4 t + 0.35 x + 0.5 treat + (1 + t | patient)``;
``x`` has its own patient level and trend), made harder in two ways:

- ``serial``: ``x``'s deviations from the patient's own trend are AR(1) over
  visits (lag-1 correlation 0, 0.6 or 0.9), so the neighbouring visits say
  more about a missing value than the patient's trend does;
- ``missingness``: ``x`` missing given the outcome and time (``outcome``), or
  given the patient's last recorded ``x`` (``history``: a lab ordered less
  often after a low value; sequential MAR).

Methods, each imputing ``x`` (``m`` imputations, 10 iterations) and analysed
with ``lmer(y ~ t + x + treat + (1 + t | patient), REML = FALSE)``, Rubin's
rules:

- ``full``: the registry before values went missing (the yardstick);
- ``complete_case``: the visits with ``x`` recorded;
- ``random_slopes``: hmlib's multilevel chained equations with
  ``random_slopes=["t"]`` (the report's engine; history through the
  trajectory);
- ``random_slopes_neighbours``: the same model plus the mean of the
  patient's ``x`` at the previous and next visit (current values, so imputed
  where missing; the one available at a patient's first and last visit) as a
  fixed predictor, updated after every iteration: explicit history beside
  the trajectory (the form tried on #16 and not kept);
- ``flat``: single-level imputation (``norm``);
- ``flat_neighbours``: single-level imputation with the neighbour mean as a
  predictor, history instead of the trajectory (in the spirit of the
  two-fold FCS of Nevalainen, Kenward & Virtanen 2009).

Bias of ``x``'s coefficient (truth 0.35) and of ``sd(t|patient)`` (0.5), the
empirical SE, the mean model SE and 95% coverage, with Monte Carlo SEs; per
design in ``bench/results/own_history_truth.json`` (the per-replicate
estimates in ``own_history_truth_rows.json``; a rerun resumes).

``mechanism`` in the JSON (:func:`neighbour_mechanism`): why explicit
neighbours and random effects do not mix. The imputation model of ``x`` is
fitted once to a registry of 3,000 patients with no value missing (rows with
both neighbours), without and with the previous and the next value of ``x``
as two predictors: with them, maximum likelihood lets the neighbours carry
the patient's level and the patient SDs collapse.

Usage::

    nice -n 5 .venv/bin/python bench/own_history_truth.py [--replicates 100] [--m 20]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_slope_imputation_truth import analyse, simulate_longitudinal, summarise  # noqa: E402

from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.imputation.kernels import linear_draw  # noqa: E402
from hmlib.stats.imputation.random_slopes import impute_random_slopes  # noqa: E402
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "own_history_truth.json"
METHODS = ("full", "complete_case", "random_slopes", "random_slopes_neighbours", "flat", "flat_neighbours")
DESIGNS = tuple((serial, miss) for serial in (0.0, 0.6, 0.9) for miss in ("outcome", "history"))
ITERATIONS = 10


def neighbour_mean(x: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Mean of ``x`` at each row's previous and next visit of the same patient (rows in visit order).

    At a patient's first or last visit the one neighbour; every patient of the design has two visits
    or more.
    """
    same_prev = np.r_[False, patient[1:] == patient[:-1]]
    same_next = np.r_[patient[:-1] == patient[1:], False]
    prev = np.where(same_prev, np.r_[np.nan, x[:-1]], np.nan)
    nxt = np.where(same_next, np.r_[x[1:], np.nan], np.nan)
    return np.nanmean(np.column_stack([prev, nxt]), axis=1)


def _start(frame: pd.DataFrame) -> np.ndarray:
    """Missing ``x`` started at the patient's recorded mean (the overall mean when none)."""
    x = frame["x"].to_numpy(float)
    own = frame.groupby("patient")["x"].transform("mean").to_numpy(float)
    return np.where(np.isnan(x), np.where(np.isnan(own), np.nanmean(x), own), x)


def _neighbour_chain(frame: pd.DataFrame, seed: int, random_slopes: bool) -> np.ndarray:
    """One chain of the neighbour methods; returns the completed ``x``."""
    rng = np.random.default_rng(seed)
    x = frame["x"].to_numpy(float)
    miss = np.isnan(x)
    patient = frame["patient"].to_numpy()
    current = _start(frame)
    for it in range(ITERATIONS):
        nb = neighbour_mean(current, patient)
        if random_slopes:
            with_nb = frame.assign(nb=nb)
            res = impute_random_slopes(with_nb, target="x", predictors=["y", "treat", "nb"], cluster="patient",
                                       slopes=["t"], m=1, iterations=2, seed=seed * 100 + it)
            current = res.completed(with_nb)[0]["x"].to_numpy(float)
        else:
            D = np.column_stack([np.ones(x.size), frame["y"], frame["t"], frame["treat"], nb])
            current = current.copy()
            current[miss] = linear_draw(D[~miss], x[~miss], D[miss], rng, pmm=False, donors=5)
    return current


def completed_frames(frame: pd.DataFrame, full: pd.DataFrame, method: str, m: int, seed: int) -> list:
    """The completed registries of one method (one frame for ``full`` and the complete cases)."""
    if method == "full":
        return [full]
    if method == "complete_case":
        return [frame.dropna(subset=["x"])]
    if method.endswith("_neighbours"):
        rs = method.startswith("random_slopes")
        return [frame.assign(x=_neighbour_chain(frame, seed * 1000 + k, rs)) for k in range(m)]
    res = impute(frame, method="flat" if method == "flat" else "multilevel", cluster="patient", outcome="y",
                 outcome_family="gaussian", predictors=["x", "t", "treat"], m=m, iterations=ITERATIONS, seed=seed,
                 random_slopes=["t"] if method == "random_slopes" else [])
    return list(res.completed)


@functools.lru_cache(maxsize=1)
def neighbour_mechanism(seed: int = 1, n_patients: int = 3000) -> dict:
    """The imputation model of ``x`` with and without the neighbours as predictors, fitted to full data.

    ``x ~ y + t + treat + mean_i(y) + mean_i(t) [+ x_prev + x_next] + (1 + t | patient)`` by ML on the
    rows with both neighbours of one registry (``serial = 0``) before any value goes missing.

    Returns
    -------
    dict
        Per model: the coefficients, the patient intercept and slope SDs and the residual SD.
    """
    full = simulate_longitudinal(seed, n_patients=n_patients, full=True)
    by = full.groupby("patient")
    full = full.assign(ybar=by["y"].transform("mean"), tbar=by["t"].transform("mean"),
                       x_prev=by["x"].shift(1), x_next=by["x"].shift(-1)).dropna(subset=["x_prev", "x_next"])
    out = {}
    for name, cols in (("without", ["y", "t", "treat", "ybar", "tbar"]),
                       ("with_neighbours", ["y", "t", "treat", "ybar", "tbar", "x_prev", "x_next"])):
        X = np.column_stack([np.ones(len(full))] + [full[c].to_numpy(float) for c in cols])
        level = RandomLevel("patient", full["patient"].to_numpy(), slopes={"t": full["t"].to_numpy(float)})
        fit = fit_mixed(full["x"].to_numpy(float), X, RandomEffects((level,)))
        out[name] = {"coef": dict(zip(["Intercept", *cols], np.round(fit.coef, 4).tolist())),
                     "patient_sd": np.round(fit.levels[0].sd, 4).tolist(),
                     "residual_sd": round(float(fit.residual_sd), 4)}
    return out


def _key(serial: float, missingness: str) -> str:
    return f"serial={serial:g},missingness={missingness}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows_path = args.out.with_name(args.out.stem + "_rows.json")
    store = json.loads(rows_path.read_text()) if rows_path.exists() else {}
    if store.get("m") != args.m:
        store = {"m": args.m, "designs": {}}
    start = time.perf_counter()
    for serial, miss in DESIGNS:
        design = store["designs"].setdefault(_key(serial, miss), {"seconds": {}, "rows": {}})
        for method in METHODS:
            design["rows"].setdefault(method, [])
            design["seconds"].setdefault(method, 0.0)
        for r in range(min(len(v) for v in design["rows"].values()), args.replicates):
            seed = 9000 + r
            frame = simulate_longitudinal(seed, missingness=miss, serial=serial)
            full = simulate_longitudinal(seed, missingness=miss, serial=serial, full=True)
            for method in METHODS:
                if len(design["rows"][method]) > r:
                    continue
                t0 = time.perf_counter()
                pooled = analyse(completed_frames(frame, full, method, args.m, seed=r))
                design["rows"][method].append({t: [round(float(v), 6) for v in vals] for t, vals in pooled.items()})
                design["seconds"][method] += time.perf_counter() - t0
            if (r + 1) % 10 == 0 or r + 1 == args.replicates:
                _write(args, store, rows_path)
                print(f"{_key(serial, miss)}: {r + 1} replicates, {time.perf_counter() - start:.0f} s", flush=True)
    out = _write(args, store, rows_path)
    for key, design in out["designs"].items():
        for method, terms in design["methods"].items():
            print(key, method, {t: (round(d["relative_bias"], 3), round(d["coverage_95"], 3)) for t, d in terms.items()})


def _write(args, store: dict, rows_path: Path) -> dict:
    """Summaries of every design so far (the shortest method's replicates), and the rows to resume from."""
    out = {"m": args.m, "iterations": ITERATIONS, "truth": {"x": 0.35, "sd(t|patient)": 0.5},
           "mechanism": neighbour_mechanism(), "designs": {}}
    for key, design in store["designs"].items():
        done = min(len(v) for v in design["rows"].values())
        if done == 0:
            continue
        out["designs"][key] = {
            "replicates": done,
            "seconds_per_registry": {k: v / max(len(design["rows"][k]), 1) for k, v in design["seconds"].items()},
            "methods": summarise({k: v[:done] for k, v in design["rows"].items()})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    rows_path.write_text(json.dumps(store) + "\n")
    return out


if __name__ == "__main__":
    main()
