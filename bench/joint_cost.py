"""Why the joint model's time grows faster than the patients: the cost of one gradient and the number of them.

NUTS's time is (leapfrog steps) x (seconds per gradient evaluation). At a
million patients the report's joint model drew 22 times slower per draw
than at 100,000 (``bench_scale.json``, ``scale1m_full_stopped``), for 10
times the patients. This bench splits that factor, on the registries of
``bench/bench_scale.py`` (``scale_registry(14, n_patients=n)``, 400 sites,
the same params), with the model the report's step 4 builds (its own
``fit_registry`` is called; the sampler is replaced by one that keeps the
compiled model, so build and compile are the step's):

- **gradient cost**: the compiled log density and gradient (nutpie's numba
  function) at the sampler's initial point, median seconds per evaluation,
  in one process alone and in two processes at once (the report's two
  chains run side by side on the 2 cores, sharing the memory bus and the
  last-level cache);
- **steps**: a full fit at the report's default sizes (``--fit`` cases),
  read from the fit's record (``settings.attempts``: each chain's leapfrog
  steps in the warm-up and per draw after it, seconds per gradient as sampled).

Rows grouped by missing pattern, so that the likelihood's row sets are
slices and not gathers, were measured with this script's
``--compare-row-order`` at commit 5e058a5
(``bench/results/joint_row_order.json``): 1.01-1.02x alone at 10,000 to
1,000,000 patients, 0.87-1.02x with two processes at once; no gain, so the
model takes the rows in the data's order and the option is gone.

With ``--profile`` pytensor's profile of the same log density and gradient
(its C backend, as nutpie's numba function cannot be profiled by op) splits
one evaluation's time by kind of operation: element-wise kernels, gathers
(advanced indexing), scatters (their gradients), reductions, products,
allocations (zero-filled buffers) and the rest, with the longest nodes. A
guide, not numba's split: the C backend here links no BLAS, so its matrix
products are slower than numba's.

For a case not fitted (the million: over two hours) the steps are inferred
from the stopped run's pace: seconds per draw per chain over its first 80
minutes divided by the concurrent gradient cost, against the same draws'
steps at 100,000.

Usage::

    .venv/bin/python bench/joint_cost.py                      # 10k, 100k, 1m; fits 10k and 100k
    .venv/bin/python bench/joint_cost.py --cases smoke --fit smoke --out /tmp/x.json   # check the script
    .venv/bin/python bench/joint_cost.py --cases scale1m --fit --profile --out /tmp/x.json   # where the time goes

writes ``bench/results/joint_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scale import write_case  # noqa: E402

import hmlib.stats.joint.fit as joint_fit  # noqa: E402
from hmlib.data import load_registry  # noqa: E402
from hmlib.params import load_params  # noqa: E402
from hmlib.settings import run_sizes  # noqa: E402
from hmlib.steps.joint_model import fit_options, fit_registry  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "joint_cost.json"
SCALE = ROOT / "bench" / "results" / "bench_scale.json"
#: Seconds of gradient evaluations per timing (at least MIN_EVALS evaluations).
TIMING_S = 10.0
MIN_EVALS = 5


#: Op classes by kind of work, for ``--profile`` (other classes count as "other").
OP_KINDS = {"Elemwise": "element-wise", "AdvancedSubtensor1": "gathers", "AdvancedSubtensor": "gathers",
            "AdvancedIncSubtensor1": "scatters", "AdvancedIncSubtensor": "scatters", "Sum": "reductions",
            "CAReduce": "reductions", "Max": "reductions", "Dot": "products", "Dot22": "products",
            "Gemv": "products", "CGemv": "products", "Gemm": "products", "Alloc": "allocations",
            "AllocEmpty": "allocations"}


class _Caught(Exception):
    """Raised by a stand-in inside the step's fit to carry what it was given out of the fit."""

    def __init__(self, value):
        super().__init__("caught")
        self.value = value


def caught_in_fit(registry, name: str, value_of):
    """Run the report's step 4 fit of ``registry`` up to ``hmlib.stats.joint.fit.<name>`` and return
    ``value_of(original, *args, **kwargs)`` of that call (the stand-in stops the fit there)."""
    original = getattr(joint_fit, name)

    def stand_in(*args, **kwargs):
        raise _Caught(value_of(original, *args, **kwargs))

    setattr(joint_fit, name, stand_in)
    try:
        fit_registry(registry, **_step_sizes(registry))
    except _Caught as caught:
        return caught.value
    finally:
        setattr(joint_fit, name, original)
    raise RuntimeError(f"the fit did not reach {name}")


def compiled_model(registry):
    """The joint model the report's step 4 compiles for ``registry``, and the seconds its build and compile took."""
    started = time.perf_counter()
    compiled = caught_in_fit(registry, "sample_until_gate", lambda original, compiled, *args, **kwargs: compiled)
    return compiled, time.perf_counter() - started


def _step_sizes(registry) -> dict:
    """``fit_registry``'s arguments as the report's step 4 passes them (full run sizes)."""
    return fit_options(run_sizes(False), registry.params.joint_model.time_budget_minutes)


def _time_gradient(compiled, point, seconds: float = TIMING_S) -> dict:
    """Median and spread of seconds per log density + gradient evaluation, for about ``seconds``."""
    compiled.logp_func(point)                      # warm (first call allocates)
    times = []
    end = time.perf_counter() + seconds
    while len(times) < MIN_EVALS or time.perf_counter() < end:
        t = time.perf_counter()
        compiled.logp_func(point)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "evaluations": len(times),
            "q10_s": float(np.quantile(times, 0.1)), "q90_s": float(np.quantile(times, 0.9))}


_SHARED: dict = {}


def _child(_):
    return _time_gradient(_SHARED["compiled"], _SHARED["point"])


def gradient_cost(compiled, seed: int = 1) -> dict:
    """Seconds per gradient evaluation alone and with two processes evaluating at once (forked copies)."""
    point = np.asarray(compiled.initial_point_func(seed), dtype=float)
    alone = _time_gradient(compiled, point)
    _SHARED.update(compiled=compiled, point=point)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pair = pool.map(_child, [0, 1])
    _SHARED.clear()
    together = statistics.mean(p["median_s"] for p in pair)
    return {"alone": alone, "two_at_once": pair, "two_at_once_median_s": together,
            "slowdown_two_at_once": together / alone["median_s"]}


def gradient_profile(registry, evaluations: int = 20) -> dict:
    """Where one log density + gradient evaluation of the step's model spends its time (pytensor's profile, C
    backend): seconds per evaluation, shares by kind of operation (:data:`OP_KINDS`) and the ten longest nodes."""
    import pytensor
    from pymc.blocking import DictToArrayBijection

    model = caught_in_fit(registry, "build_joint_model", lambda original, *args, **kwargs: original(*args, **kwargs))
    mode = pytensor.compile.mode.Mode(linker="cvm", optimizer="fast_run")     # the C backend (the default is numba)
    with pytensor.config.change_flags(profile=True):     # the VM times each node only when compiled so
        function = model.logp_dlogp_function(ravel_inputs=True, profile=True, mode=mode)
    function.set_extra_values({})
    point = DictToArrayBijection.map(model.initial_point()).data
    function(point)
    profile = function._pytensor_function.profile
    profile.reset()
    for _ in range(evaluations):
        function(point)
    total = sum(profile.apply_time.values())
    kinds: dict = {}
    for op_class, seconds in profile.class_time().items():
        kind = OP_KINDS.get(op_class.__name__, "other")
        kinds[kind] = kinds.get(kind, 0.0) + seconds / total
    longest = sorted(profile.apply_time.items(), key=lambda item: -item[1])[:10]
    return {"seconds_per_evaluation": total / evaluations,
            "share_by_kind": dict(sorted(kinds.items(), key=lambda item: -item[1])),
            "longest_nodes": [{"op": str(node.op)[:160], "share": seconds / total} for (_, node), seconds in longest]}


def fitted_steps(registry) -> dict:
    """A full fit at the report's sizes: its runs' sampler work and time."""
    started = time.perf_counter()
    fit = fit_registry(registry, **_step_sizes(registry))
    runs = fit.settings["attempts"]
    keys = ("draws", "tune", "seconds", "leapfrog_warmup", "leapfrog_per_draw", "max_depth_draws",
            "seconds_per_gradient", "converged", "divergences")
    return {"fit_seconds": round(time.perf_counter() - started, 1), "converged": fit.converged,
            "runs": [{k: r[k] for k in keys} for r in runs]}


def inferred_million(results: dict) -> dict | None:
    """The million's steps per draw inferred from the stopped run's pace and this run's concurrent gradient cost."""
    if "scale1m" not in results or "scale100k" not in results or not SCALE.is_file():
        return None
    stopped = json.loads(SCALE.read_text())["cases"].get("scale1m_full_stopped")
    fitted = results["scale100k"].get("fit")
    if stopped is None or fitted is None:
        return None
    progress = stopped["joint_model"]["progress_every_10_min"]["80 min"]["draws_done"]
    chains = stopped["joint_model"]["chains"]
    per_chain = progress / chains
    seconds_per_draw = 80 * 60 / per_chain
    gradient = results["scale1m"]["gradient"]["two_at_once_median_s"]
    steps_1m = seconds_per_draw / gradient
    run = fitted["runs"][0]
    after_warmup = max(per_chain - run["tune"], 0)
    # the chains' mean: the stopped run's pace is that of its draws over both chains
    steps_100k = (np.mean(run["leapfrog_warmup"]) + after_warmup * np.mean(run["leapfrog_per_draw"])) / per_chain
    grad_ratio = gradient / results["scale100k"]["gradient"]["two_at_once_median_s"]
    return {"draws_per_chain_in_80_min": per_chain, "seconds_per_draw_1m": seconds_per_draw,
            "implied_steps_per_draw_1m": steps_1m, "steps_per_draw_100k_same_draws": steps_100k,
            "steps_ratio": steps_1m / steps_100k, "gradient_ratio_two_at_once": grad_ratio,
            "note": "the first 80 minutes of the stopped run: warm-up (1,000 per chain) then sampling; the 100k "
                    "steps are its fit's warm-up steps plus the same number of draws after warm-up at its mean"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["scale10k", "scale100k", "scale1m"])
    parser.add_argument("--fit", nargs="*", default=["scale10k", "scale100k"],
                        help="cases also fitted in full at the report's sizes")
    parser.add_argument("--profile", action="store_true", help="also profile each gradient by operation")
    parser.add_argument("--root", type=Path, default=Path("/tmp/hmlib_joint_cost"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {}
    for name in args.cases:
        params = write_case(name, args.root)
        registry = load_registry(load_params(params))
        compiled, build_s = compiled_model(registry)
        entry = {"patients": len(registry.frame), "parameters": int(compiled.n_dim),
                 "build_and_compile_s": round(build_s, 1), "gradient": gradient_cost(compiled)}
        g = entry["gradient"]
        print(f"{name}: {entry['patients']:,} patients, {entry['parameters']} parameters; gradient "
              f"{g['alone']['median_s'] * 1e3:.2f} ms alone, {g['two_at_once_median_s'] * 1e3:.2f} ms two at once "
              f"({g['slowdown_two_at_once']:.2f}x)", flush=True)
        if args.profile:
            entry["profile"] = gradient_profile(registry)
            shares = ", ".join(f"{k} {v:.0%}" for k, v in entry["profile"]["share_by_kind"].items())
            print(f"  profile ({entry['profile']['seconds_per_evaluation'] * 1e3:.1f} ms per evaluation on the C "
                  f"backend): {shares}", flush=True)
        if name in args.fit:
            entry["fit"] = fitted_steps(registry)
            for r in entry["fit"]["runs"]:
                print(f"  fit: {r['seconds']:.0f} s sampling; per chain {r['leapfrog_warmup']} warm-up steps, "
                      f"{r['leapfrog_per_draw']} per draw after; {r['seconds_per_gradient'] * 1e3:.2f} ms per "
                      f"gradient as sampled", flush=True)
        results[name] = entry
    payload = {"measured": time.strftime("%Y-%m-%d"), "cores": psutil.cpu_count(), "cases": results,
               "million_inferred": inferred_million(results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    if payload["million_inferred"]:
        m = payload["million_inferred"]
        print(f"1M vs 100k: gradient {m['gradient_ratio_two_at_once']:.1f}x (two at once), steps per draw "
              f"{m['steps_ratio']:.2f}x (implied {m['implied_steps_per_draw_1m']:.1f} vs "
              f"{m['steps_per_draw_100k_same_draws']:.1f})")


if __name__ == "__main__":
    main()
