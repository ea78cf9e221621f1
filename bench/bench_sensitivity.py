"""How long does the full default sensitivity grid take on the demo registry?

Writes the demo registry (3,000 patients, 30 sites; ``hmlib.simulate.demo``) to a
temporary folder, loads ``params/demo.yaml`` (``fast: false``: m = 20
imputations, 10 iterations) and runs :func:`hmlib.steps.sensitivity.run_sensitivity`
(scenarios spread over worker processes by :mod:`hmlib.parallel`) with the
default settings and step 3's residual-variance rule (a common residual
variance on the demo): 3 exclusions, imputation by site type, 4 priors of
the joint model (as notebook 05: step 4's fit, made here first and timed on
its own, is reused and reweighted to the other priors; ``--refit`` refits
each prior instead, fast settings per ``SensitivitySettings.joint_fast``),
2 missing-indicator models, 2 x 8 delta
values with 4 bisections of 6 steps, 5 leave-one-out clusters. Target: under
5 minutes on 2 cores. The machine is shared, so wall times are noisy; each
scenario's own wall time is printed too.

Usage::

    .venv/bin/python bench/bench_sensitivity.py [--workers 2] [--no-joint | --refit]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.data import load_registry  # noqa: E402
from hmlib.params import load_params  # noqa: E402
from hmlib.simulate.demo import write_demo  # noqa: E402
from hmlib.steps.sensitivity import run_sensitivity  # noqa: E402
from hmlib.steps.sensitivity_scenarios import SensitivitySettings  # noqa: E402

TARGET_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-joint", action="store_true", help="skip the joint model (prior scenarios fail)")
    parser.add_argument("--refit", action="store_true", help="refit the joint model for every prior (no step-4 draws)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_demo(tmp)
        registry = load_registry(load_params(paths.params))
        reference = None
        if not (args.no_joint or args.refit):
            from hmlib.steps.joint_model import fit_registry as fit_joint_model

            start = time.perf_counter()
            reference = fit_joint_model(registry, seed=registry.params.seed).posterior_draws()
            print(f"step 4's joint model (reused by the prior scenarios): {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        result = run_sensitivity(registry, SensitivitySettings(), workers=args.workers,
                                 joint_fitter=None if args.no_joint else "auto", joint_reference=reference)
        wall = time.perf_counter() - start
    table = result.scenarios
    width = max(len(s) for s in table["scenario"])
    print(f"demo registry: {registry.n_patients} patients, {registry.n_clusters} sites; "
          f"m = {result.settings.m}, iterations = {result.settings.iterations}, workers = {args.workers}, "
          f"residual variance {result.residual_variance.model}")
    for r in table.itertuples():
        flag = "changed" if r.changed_conclusion else ""
        print(f"  {r.scenario:<{width}}  {r.status:<6}  {r.seconds:7.1f} s wall  {r.cpu_seconds:7.1f} s cpu  "
              f"{flag} {r.reason[:60]}")
    print(f"scenarios summed: {table['seconds'].sum():.1f} s wall, {table['cpu_seconds'].sum():.1f} s cpu "
          f"(on 2 idle cores the grid needs about half the cpu sum plus the primary analysis)")
    by_family = table.groupby("family", sort=False)["seconds"].sum()
    print("by family: " + ", ".join(f"{k} {v:.1f} s" for k, v in by_family.items()))
    print(result.tipping_table()[["mode", "direction", "found", "delta_sd", "delta_units", "change"]].to_string())
    print(result.verdict())
    print(f"TOTAL wall {wall:.1f} s (target < {TARGET_S:.0f} s): {'OK' if wall < TARGET_S else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
