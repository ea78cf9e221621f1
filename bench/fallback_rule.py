"""When is the joint model's non-centred fall-back worth keeping? The rule of hmlib.stats.joint.sampling, measured.

After a run that misses the convergence gate with divergent transitions the
joint model samples a fall-back with every level's effects non-centred; since
d3e6701 it is kept only if its first run diverges less often per draw than
the run it followed, otherwise the runs go back to the chosen model
(:mod:`hmlib.stats.joint.sampling`). This script fits the same cases with the
rule (``rule``) and, where the rule gave the fall-back up, without it
(``keep``: the fall-back kept whatever it did, the behaviour before d3e6701;
the rule is switched off by replacing the sampler's comparison,
``_no_better``; elsewhere the two paths are the same) and records every run: warm-up,
draws per chain, divergences, fall-back or not, and the gate.

Cases:

- ``gaussian``: :func:`hmlib.simulate.registries.small_registry` with
  ``family="gaussian"`` (12 sites of 25 patients, site SD 0.5: the data
  identify the site effects, where centred is right), data seeds
  ``--data-seeds``, sampling seed 4, the first run 200 draws after 200
  warm-up iterations and a 10-minute budget (JOINT-EXT-001's settings);
- ``gaussian_mean_filled``: the first version of JOINT-EXT-001's case (data
  seed 0): the same registry with the score drawn from ``lab`` as recorded,
  its gaps filled with the mean 2 (``1 + 0.02 (age - 50) + 0.5 lab + u + e``,
  ``u`` and ``e`` from ``default_rng(0)`` after the registry), so the score
  does not follow the joint model where ``lab`` is missing; where the rule
  was found (sampling seed 4: the fall-back diverged more and more);
- ``slopes_sites``: the registries of ``bench/joint_random_slopes_truth.py
  --sites 12`` whose reported fit in that study used the fall-back (seeds
  9705, 9722, 9726, 9732; 200 patients in 12 sites, random slopes on month,
  2 x 1,000 draws, 20-minute budget);
- ``nested``: ``bench/joint_nested_truth.py``'s replicate 9138, which the
  fall-back rescued (13 divergences in the chosen model's first run, none in
  the fall-back's), with the rule only: it must still be kept.

nutpie's chains take other paths from one process to another here (README,
"Registry scale"), so the runs are one draw of each case's behaviour, not a
fixed property of it.

Usage::

    nice -n 5 .venv/bin/python bench/fallback_rule.py --out bench/results/fallback_rule.json
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hmlib.simulate.registries import small_registry  # noqa: E402
from hmlib.simulate.studies import three_level_registry  # noqa: E402
from hmlib.stats.joint import fit_joint_model, sampling  # noqa: E402
import joint_random_slopes_truth  # noqa: E402
from joint_nested_truth import SIZES  # noqa: E402

SLOPES_SITES_SEEDS = (9705, 9722, 9726, 9732)
NESTED_SEED = 9138


def _fit(frame, mode: str, **options) -> dict:
    """One fit with the rule (``mode="rule"``) or with the fall-back kept whatever it does (``"keep"``)."""
    rule = sampling._no_better
    if mode == "keep":       # the fall-back is never found no better: never given up
        sampling._no_better = lambda fallback_run, before: False
    try:
        start = time.perf_counter()
        fit = fit_joint_model(frame, **options)
    finally:
        sampling._no_better = rule
    summary = fit.summary
    return {"mode": mode, "seconds": round(time.perf_counter() - start, 1), "converged": bool(fit.converged),
            "min_ess_bulk": round(float(summary["ess_bulk"].min())),
            "min_ess_tail": round(float(summary["ess_tail"].min())),
            "max_rhat": round(float(summary["rhat"].max()), 3),
            "runs": [{k: a[k] for k in ("tune", "draws", "divergences", "fallback", "converged")}
                     for a in fit.settings["attempts"]]}


def gaussian_case(data_seed: int, mode: str) -> dict:
    frame = small_registry(seed=data_seed, family="gaussian")
    return {"case": "gaussian", "data_seed": data_seed} | _fit(
        frame, mode, outcome="score", predictors=["age", "sex", "lab"], cluster="site", family="gaussian", seed=4,
        draws=200, tune=200, time_budget_minutes=10)


def gaussian_mean_filled_case(data_seed: int, mode: str) -> dict:
    frame = small_registry(seed=data_seed).drop(columns="died")
    rng = np.random.default_rng(data_seed)
    u = rng.normal(0.0, 0.5, frame["site"].nunique())
    site = frame["site"].astype("category").cat.codes.to_numpy()
    score = 1 + 0.02 * (frame["age"] - 50) + 0.5 * frame["lab"].fillna(2.0) + u[site] + rng.normal(0, 1, len(frame))
    return {"case": "gaussian_mean_filled", "data_seed": data_seed} | _fit(
        frame.assign(score=score.round(2)), mode, outcome="score", predictors=["age", "sex", "lab"], cluster="site",
        family="gaussian", seed=4, draws=200, tune=200, time_budget_minutes=10)


def slopes_sites_case(seed: int, mode: str) -> dict:
    frame, roles = joint_random_slopes_truth.registry(seed, patients=200, sites=12)
    return {"case": "slopes_sites", "data_seed": seed} | _fit(
        frame, mode, seed=seed, draws=1000, tune=1000, time_budget_minutes=20, **roles)


def nested_case(seed: int) -> dict:
    frame = three_level_registry(seed, **SIZES)
    return {"case": "nested", "data_seed": seed} | _fit(
        frame, "rule", outcome="y", predictors=["x", "age"], cluster="hospital", family="binomial", seed=seed,
        draws=1000, tune=1000, chains=2, higher_levels=["country"], time_budget_minutes=20)


def _gave_up(r: dict) -> bool:
    """Whether the rule gave up a fall-back in this fit (its first run diverged no less often per draw)."""
    runs = r["runs"]
    first = next((k for k, a in enumerate(runs) if a["fallback"]), None)
    return first is not None and sampling._no_better(runs[first], runs[first - 1])


def _line(r: dict) -> str:
    runs = "; ".join(f"{a['tune']}/{a['draws']} {a['divergences']}d{' nc' if a['fallback'] else ''}"
                     for a in r["runs"])
    return (f"{r['case']} {r['data_seed']} {r['mode']}: {'passed' if r['converged'] else 'FLAGGED'} "
            f"({r['seconds']} s; min ESS {r['min_ess_bulk']}/{r['min_ess_tail']}, R-hat {r['max_rhat']}) [{runs}]")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--skip", nargs="*", default=(),
                        choices=("gaussian", "gaussian_mean_filled", "slopes_sites", "nested"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    plan = ([(gaussian_case, s, m) for s in args.data_seeds for m in ("rule", "keep")] if "gaussian" not in args.skip
            else [])
    plan += ([(gaussian_mean_filled_case, 0, m) for m in ("rule", "keep")]
             if "gaussian_mean_filled" not in args.skip else [])
    plan += ([(slopes_sites_case, s, m) for s in SLOPES_SITES_SEEDS for m in ("rule", "keep")]
             if "slopes_sites" not in args.skip else [])
    for case, seed, mode in plan:
        if mode == "keep" and not _gave_up(rows[-1]):
            continue         # the rule kept the fall-back or it was never tried: the same path as without it
        rows.append(case(seed, mode))
        print(_line(rows[-1]), flush=True)
    if "nested" not in args.skip:
        rows.append(nested_case(NESTED_SEED))
        print(_line(rows[-1]), flush=True)
    if args.out:
        payload = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                               "python": platform.python_version()},
                   "rows": rows}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
