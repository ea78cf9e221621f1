"""Warm-started sensitivity scenarios against cold starts: same estimates up to Monte Carlo error?

Step 5 re-imputes the registry for the scenarios that leave patients out or
change the imputation model (exclusion of poorly documenting clusters,
leave-out of a well-documented cluster, imputation by cluster type). A cold
start runs each of the ``m`` chains from random draws for ``iterations``
(10) iterations; the warm start (``SensitivitySettings.warm_iterations``,
the step's default :attr:`hmlib.settings.RunSizes.scenario_iterations`)
starts chain ``k`` from the primary imputation's completed data set ``k``,
restricted to the scenario's patients, and runs ``k_warm`` iterations.

For each simulated registry the re-imputing scenarios are run three ways,
with :func:`hmlib.steps.sensitivity.run_sensitivity` as step 5 runs them:

- ``cold``: cold starts, seed A (step 5 before the change);
- ``warm<k>``: warm starts from the primary imputation of seed A, ``k``
  iterations, seed A;
- ``cold_b``: cold starts with seed B: a second Monte Carlo run of the same
  analysis, the yardstick.

``D_warm = warm - cold`` and ``D_mc = cold_b - cold`` are computed for the
focus coefficient and its pooled standard error. Over the replicates, a warm
start that changes nothing beyond Monte Carlo error has ``mean(D_warm)``
within about 2 of its standard errors of 0 (no systematic shift) and
``SD(D_warm)`` not above ``SD(D_mc)`` (no more scatter than rerunning with
another seed).

Two registry shapes: the demo's trauma registry
(:func:`hmlib.simulate.demo.simulate_registry`, 3,000 patients in 30
sites; lactate and sbp continuous, 2l.pan; site type gives the stratified
scenario) and the trial shape (:func:`hmlib.simulate.scale.trial_registry`,
3,000 patients in 60 hospitals in 6 countries; atrial fibrillation and the
outcome binary, 2l.bin).

Usage::

    .venv/bin/python bench/sensitivity_warm_start.py --reps 40 --m 20 --warm 1 3
    .venv/bin/python bench/sensitivity_warm_start.py --shapes trial --families leave-out --warm 3 6 \
        --reps 30 --out bench/results/sensitivity_warm_start_leave_out.json

writes ``bench/results/sensitivity_warm_start.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.data import load_registry  # noqa: E402
from hmlib.params import load_params  # noqa: E402
from hmlib.simulate.demo import DEMO_PARAMS_YAML, simulate_registry  # noqa: E402
from hmlib.simulate.scale import TRIAL_PARAMS, trial_registry  # noqa: E402
from hmlib.steps.imputation import impute_registry  # noqa: E402
from hmlib.steps.sensitivity import run_sensitivity  # noqa: E402
from hmlib.steps.sensitivity_scenarios import REIMPUTING_FAMILIES, SensitivitySettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sensitivity_warm_start.json"
SEED_A, SEED_B = 101, 202


def _registry(shape: str, rep: int, folder: Path):
    """One simulated registry of ``shape`` written to ``folder`` and loaded as step 5 loads it."""
    if shape == "demo":
        frame = simulate_registry(seed=1000 + rep).data
        params = DEMO_PARAMS_YAML.replace("truth: ../data/demo/demo_registry_truth.json\n", "")
        params = params.replace("../data/demo/demo_registry.csv", "data.csv")
    else:
        frame = trial_registry(2000 + rep, n_patients=3000, n_hospitals=60, n_countries=6)
        params = TRIAL_PARAMS.format(name="trial", data="data.csv", truth="none").replace("truth: none\n", "")
    frame.to_csv(folder / "data.csv", index=False)
    (folder / "params.yaml").write_text(params)
    return load_registry(load_params(folder / "params.yaml"))


def _focus_rows(result) -> dict:
    """``{scenario: (estimate, std_error)}`` of the focus term, re-imputing scenarios only."""
    grid = result.grid
    keep = grid["family"].isin(["exclusion", "leave-out", "stratified"]) & (grid["term"] == result.focus_terms[0])
    return {r.scenario: (float(r.estimate), float(r.std_error)) for r in grid.loc[keep].itertuples()
            if r.status == "ok"}


def replicate(task: tuple) -> list[dict]:
    """All variants of one replicate: rows ``shape, rep, scenario, variant, estimate, std_error, seconds``."""
    shape, rep, m, iterations, warm, families = task
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = _registry(shape, rep, Path(tmp))
        settings = SensitivitySettings(families=families, exclusion_thresholds=(0.4,), warm_families=families,
                                       n_influential=1, m=m, iterations=iterations)
        primaries = {}
        for seed in (SEED_A, SEED_B):
            reg = dataclasses.replace(registry, params=registry.params.with_overrides(seed=seed))
            primaries[seed] = impute_registry(reg, method="multilevel", m=m, iterations=iterations)
        variants = [("cold", SEED_A, None), ("cold_b", SEED_B, None), *((f"warm{k}", SEED_A, k) for k in warm)]
        for variant, seed, k in variants:
            start = time.process_time()
            result = run_sensitivity(registry, SensitivitySettings(**{**settings.__dict__, "warm_iterations": k}),
                                     workers=1, joint_fitter=None, primary_imputation=primaries[seed], seed=seed,
                                     cluster_residual_variance=False)
            seconds = time.process_time() - start
            for scenario, (estimate, se) in _focus_rows(result).items():
                rows.append({"shape": shape, "rep": rep, "scenario": scenario.split(":")[0], "variant": variant,
                             "estimate": estimate, "std_error": se, "cpu_seconds": seconds})
    return rows


def summarise(table: pd.DataFrame) -> list[dict]:
    """Per shape, scenario and warm variant: mean and SD of D_warm and D_mc (estimate and SE), over replicates."""
    out = []
    wide = table.pivot_table(index=["shape", "scenario", "rep"], columns="variant", values=["estimate", "std_error"])
    for (shape, scenario), block in wide.groupby(level=[0, 1]):
        reps = len(block)
        d_mc = block[("estimate", "cold_b")] - block[("estimate", "cold")]
        se_mc = block[("std_error", "cold_b")] - block[("std_error", "cold")]
        for variant in sorted(v for v in table["variant"].unique() if v.startswith("warm")):
            d = block[("estimate", variant)] - block[("estimate", "cold")]
            d_se = block[("std_error", variant)] - block[("std_error", "cold")]
            mean, sd = float(d.mean()), float(d.std(ddof=1))
            out.append({
                "shape": shape, "scenario": scenario, "variant": variant, "replicates": reps,
                "mean_estimate_cold": float(block[("estimate", "cold")].mean()),
                "mean_d_warm": mean, "se_mean_d_warm": sd / np.sqrt(reps), "z_mean_d_warm": mean / (sd / np.sqrt(reps)),
                "sd_d_warm": sd, "sd_d_mc": float(d_mc.std(ddof=1)),
                "sd_ratio_warm_to_mc": sd / float(d_mc.std(ddof=1)),
                "mean_d_se_warm": float(d_se.mean()), "sd_d_se_warm": float(d_se.std(ddof=1)),
                "sd_d_se_mc": float(se_mc.std(ddof=1)),
                "mean_se_ratio_warm_to_cold": float((block[("std_error", variant)] / block[("std_error", "cold")]).mean()),
            })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warm", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--shapes", nargs="+", default=["demo", "trial"])
    parser.add_argument("--families", nargs="+", default=list(REIMPUTING_FAMILIES),
                        help="re-imputing families to compare (each warm-started in the warm variants)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tasks = [(shape, rep, args.m, args.iterations, tuple(args.warm), tuple(args.families))
             for rep in range(args.reps) for shape in args.shapes]
    started = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done, part in enumerate(pool.map(replicate, tasks), start=1):
            rows.extend(part)
            print(f"{done}/{len(tasks)} replicates, {time.perf_counter() - started:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    cpu = table.drop_duplicates(["shape", "rep", "variant"]).groupby(["shape", "variant"])["cpu_seconds"].mean()
    payload = {"reps": args.reps, "families": args.families, "m": args.m, "iterations": args.iterations,
               "warm_iterations": args.warm, "shapes": args.shapes, "seed_a": SEED_A, "seed_b": SEED_B,
               "mean_cpu_seconds_per_run": {f"{shape}:{variant}": float(v) for (shape, variant), v in cpu.items()},
               "wall_seconds": time.perf_counter() - started, "summary": summary,
               "rows": table.to_dict(orient="records")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    for s in summary:
        print(f"{s['shape']:5} {s['scenario']:22} {s['variant']:6} mean D {s['mean_d_warm']:+.4f} "
              f"(z {s['z_mean_d_warm']:+.2f}), SD D_warm {s['sd_d_warm']:.4f} vs D_mc {s['sd_d_mc']:.4f} "
              f"(ratio {s['sd_ratio_warm_to_mc']:.2f}); SE ratio {s['mean_se_ratio_warm_to_cold']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
