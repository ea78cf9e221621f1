"""The Dask engine against the former process pool and a serial run, on the demo, in one run.

Three measurements (wall seconds; the machine is shared, so ratios are taken
within one run, engine after engine on the same workload):

1. the overhead of a local Dask cluster: starting a ``LocalCluster`` (one
   1-thread worker process per core) and running one trivial task on it,
   against starting the former process pool and running the same task;
2. step 3 on the demo (``imputation_step``, full sizes: 4 methods x m = 20
   chains of 10 iterations and their 20 analyses, then the transport check,
   which stays in this process): serial, the former pool (``engine=
   "processes"``) and Dask, each pool started inside the timing (the Dask
   pools of one process share one local cluster, started in step 3's run);
3. step 5's grid on the demo (``run_sensitivity`` with the default settings
   but without the prior family, which needs step 4's draws: 3 exclusions,
   imputation by site type, 2 indicator models, 2 x 8 delta values and their
   bisections, 5 leave-outs, each re-imputing with m = 20), same three engines.

Each workload's estimates must be identical on every engine (the maximum
absolute difference is printed and stored). It also records how much data
the shared context of step 5 is (pickled bytes) and how often it would
travel with every task instead of once per worker.

On a shared machine the ratios say little about parallel speed: Linux's
autogroup scheduling gives each session (this script, its workers included)
a fixed share of saturated cores, so more processes cannot get more CPU, and
only the overhead shows. Hence the load average at start and end, and the
CPU seconds of step 5's scenarios summed over the processes that ran them
(the same work should cost the same CPU on every engine).

Results: ``bench/results/bench_parallel.json``.

Usage::

    .venv/bin/python bench/bench_parallel.py [--workers 2] [--m 20] [--skip-sensitivity]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.data import load_registry  # noqa: E402
from hmlib.parallel import TaskPool, local_cores, start_local_cluster  # noqa: E402
from hmlib.params import load_params  # noqa: E402
from hmlib.simulate.demo import write_demo  # noqa: E402
from hmlib.steps.imputation import imputation_step  # noqa: E402
from hmlib.steps.sensitivity import run_sensitivity  # noqa: E402
from hmlib.steps.sensitivity_scenarios import FAMILIES, SensitivitySettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_parallel.json"


def _cpu_all() -> float:
    """CPU seconds (user + system) of this process and all its children alive now (Dask workers included)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _timed(engine: str, workers: int, work):
    """(result, wall seconds, CPU seconds of every process involved) of ``work(pool)`` on a new pool.

    Processes that end inside the timing (the former pool's) are counted by the children's CPU times that
    their parent collects when they exit (``os.times``), added to the live processes' difference.
    """
    wall, cpu, reaped = time.perf_counter(), _cpu_all(), os.times()
    with _pool(engine, workers) as pool:
        result = work(pool)
    after = os.times()
    cpu_used = _cpu_all() - cpu + (after.children_user - reaped.children_user) + (
        after.children_system - reaped.children_system)
    return result, time.perf_counter() - wall, cpu_used


def _pool(engine: str, workers: int) -> TaskPool:
    if engine == "serial":
        return TaskPool(1, scheduler="")
    return TaskPool(workers, scheduler="", engine=engine)


def startup(workers: int, repeat: int = 3) -> dict:
    """Seconds from nothing to two trivial tasks done and the workers stopped (best and all of ``repeat``)."""
    from distributed import Client

    out = {"processes": [], "dask": []}
    for _ in range(repeat):
        start = time.perf_counter()
        with _pool("processes", workers) as pool:
            pool.map(abs, [-1, -2])
        out["processes"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with start_local_cluster(workers) as cluster, Client(cluster, set_as_default=False) as client:
            client.gather(client.map(abs, [-1, -2]))
        out["dask"].append(time.perf_counter() - start)
    return {engine: {"best_s": min(times), "all_s": times} for engine, times in out.items()}


def _max_difference(frames: dict) -> float:
    base = next(iter(frames.values()))
    worst = 0.0
    for frame in frames.values():
        a = base.select_dtypes("number").to_numpy(dtype=float)
        b = frame.select_dtypes("number").to_numpy(dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        if a.shape != b.shape or not np.array_equal(np.isfinite(a), np.isfinite(b)):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(a[both] - b[both]), initial=0.0)))
    return worst


def step3(registry, workers: int, m: int) -> dict:
    seconds, estimates, split, cpu = {}, {}, {}, {}
    for engine in ("serial", "processes", "dask"):
        result, seconds[engine], cpu[engine] = _timed(
            engine, workers, lambda pool: imputation_step(registry, m=m, iterations=10, pool=pool))
        estimates[engine] = result.estimates
        split[engine] = {"methods_summed_s": sum(r.seconds_impute + r.seconds_analyse for r in result.runs)}
        print(f"step 3, {engine}: {seconds[engine]:.1f} s (methods {split[engine]['methods_summed_s']:.1f} s; "
              f"{cpu[engine]:.1f} cpu s in all processes)", flush=True)
    return {"seconds": seconds, "cpu_seconds_all_processes": cpu, "methods": split,
            "max_abs_difference": _max_difference(estimates),
            "ratio_serial_over_dask": seconds["serial"] / seconds["dask"],
            "ratio_processes_over_dask": seconds["processes"] / seconds["dask"]}


def step5(registry, workers: int, m: int) -> dict:
    settings = SensitivitySettings(families=tuple(f for f in FAMILIES if f != "prior"), m=m, iterations=10)
    seconds, grids, shared, cpu, cpu_all = {}, {}, {}, {}, {}
    for engine in ("serial", "processes", "dask"):
        result, seconds[engine], cpu_all[engine] = _timed(
            engine, workers, lambda pool: run_sensitivity(registry, settings, joint_fitter=None, pool=pool))
        grids[engine] = result.grid
        cpu[engine] = float(result.scenarios["cpu_seconds"].sum())
        print(f"step 5, {engine}: {seconds[engine]:.1f} s ({len(result.scenarios)} scenarios, "
              f"{cpu[engine]:.1f} s cpu in them, {cpu_all[engine]:.1f} cpu s in all processes)", flush=True)
        shared = {"tasks": int(len(result.scenarios) + sum(1 for r in result.delta_curve["source"]
                                                              if r == "bisection")),
                  "workers": workers}
    context_bytes = _context_bytes(registry, m)
    shared.update(context_bytes=context_bytes, bytes_once_per_worker=context_bytes * workers)
    shared["bytes_if_sent_per_task"] = context_bytes * shared["tasks"]
    return {"seconds": seconds, "scenario_cpu_seconds": cpu, "cpu_seconds_all_processes": cpu_all,
            "max_abs_difference": _max_difference(grids),
            "shared_context": shared,
            "ratio_serial_over_dask": seconds["serial"] / seconds["dask"],
            "ratio_processes_over_dask": seconds["processes"] / seconds["dask"]}


def _context_bytes(registry, m: int) -> int:
    """Pickled size of step 5's shared context (registry + primary imputation), as a worker receives it."""
    from hmlib.steps.imputation import impute_registry
    from hmlib.steps.sensitivity_scenarios import ScenarioContext

    imputation = impute_registry(registry, method="multilevel", m=m, iterations=2)
    context = ScenarioContext(registry=registry, settings=SensitivitySettings(m=m), seed=registry.params.seed,
                              primary_imputation=imputation, primary_rows=None, joint_fitter=None,
                              observed_sd=1.0)
    return len(pickle.dumps(context))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=local_cores())
    parser.add_argument("--m", type=int, default=20, help="imputations (default 20, the full run size)")
    parser.add_argument("--skip-sensitivity", action="store_true")
    args = parser.parse_args()
    out = {"workers": args.workers, "m": args.m, "cores": local_cores(), "load_average_start": os.getloadavg(),
           "note": "Dask pools of one process share one local cluster: step 3's Dask time includes starting it, "
                   "step 5's does not; the process pool starts new processes for each shared object."}
    out["startup"] = startup(args.workers)
    print(f"start + one task: process pool {out['startup']['processes']['best_s']:.2f} s, "
          f"Dask LocalCluster {out['startup']['dask']['best_s']:.2f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        registry = load_registry(load_params(write_demo(tmp).params))
        out["step3"] = step3(registry, args.workers, args.m)
        if not args.skip_sensitivity:
            out["step5"] = step5(registry, args.workers, args.m)
    for key in ("step3", "step5"):
        if key in out:
            r = out[key]
            print(f"{key}: serial / Dask = {r['ratio_serial_over_dask']:.2f}, pool / Dask = "
                  f"{r['ratio_processes_over_dask']:.2f}, max |difference| {r['max_abs_difference']:.3g}")
    out["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
