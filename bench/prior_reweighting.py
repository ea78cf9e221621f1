"""Prior sensitivity of the joint model: importance reweighting against refitting.

Step 5's prior scenarios reweight step 4's posterior draws to each other
cluster-SD prior (Pareto-smoothed importance sampling,
:func:`hmlib.stats.joint.reweight_cluster_sd_prior`) instead of refitting.
This script checks that shortcut on the demo registry (3,000 patients, 30
sites; the model notebook 04 fits, default sampler settings): for each prior
of :class:`hmlib.steps.sensitivity_scenarios.SensitivitySettings` it refits the joint model
with that prior (same settings, another seed) and compares the focus
coefficient and the cluster SD of the two, in Monte Carlo SEs of the
difference (``sqrt(sd^2 / ess_refit + sd^2 / ess_weights)``), with the wall
time of each.

Usage::

    .venv/bin/python bench/prior_reweighting.py [--out prior_reweighting.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hmlib.data import load_registry  # noqa: E402
from hmlib.simulate.demo import write_demo  # noqa: E402
from hmlib.params import load_params  # noqa: E402
from hmlib.stats.joint import reweight_cluster_sd_prior  # noqa: E402
from hmlib.steps.joint_model import fit_registry  # noqa: E402
from hmlib.steps.sensitivity_scenarios import SensitivitySettings, joint_priors  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        registry = load_registry(load_params(write_demo(tmp).params))
        p = registry.params
        focus, sd_term = p.focus, f"sd({p.cluster})"
        start = time.perf_counter()
        base = fit_registry(registry, seed=p.seed)
        base_s = time.perf_counter() - start
        draws = base.posterior_draws()
        print(f"reference fit ({draws.cluster_sd_prior}): {base_s:.0f} s; {base.convergence_message}")
        rows = []
        for spec in SensitivitySettings().cluster_sd_priors:
            prior = joint_priors(spec)["cluster_sd"]
            if tuple(prior) == tuple(draws.cluster_sd_prior):
                continue
            t0 = time.perf_counter()
            weighted = reweight_cluster_sd_prior(draws, prior)
            rw_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            refit = fit_registry(registry, seed=p.seed + 1, priors={"cluster_sd": prior})
            refit_s = time.perf_counter() - t0
            w = weighted.estimates.set_index("term")
            r = refit.summary.set_index("term")
            row = {"prior": list(prior), "pareto_k": weighted.pareto_k, "weights_ess": weighted.ess,
                   "reliable": weighted.reliable, "reweight_s": rw_s, "refit_s": refit_s,
                   "refit_converged": refit.converged}
            for label, term in (("focus", focus), ("sd", sd_term)):
                diff = w.loc[term, "estimate"] - r.loc[term, "estimate"]
                mcse = math.sqrt(r.loc[term, "std_error"] ** 2 / r.loc[term, "ess_bulk"]
                                 + w.loc[term, "std_error"] ** 2 / min(weighted.ess, base.summary.set_index("term")
                                                                        .loc[term, "ess_bulk"]))
                row |= {f"{label}_reweighted": w.loc[term, "estimate"], f"{label}_refit": r.loc[term, "estimate"],
                        f"{label}_ci_reweighted": [w.loc[term, "ci_lower"], w.loc[term, "ci_upper"]],
                        f"{label}_ci_refit": [r.loc[term, "ci_lower"], r.loc[term, "ci_upper"]],
                        f"{label}_z": diff / mcse}
            rows.append(row)
            print(f"  {prior}: k {weighted.pareto_k:.2f}, weights ESS {weighted.ess:.0f}; "
                  f"{focus} {row['focus_reweighted']:.4f} vs refit {row['focus_refit']:.4f} (z {row['focus_z']:+.2f}); "
                  f"{sd_term} {row['sd_reweighted']:.4f} vs {row['sd_refit']:.4f} (z {row['sd_z']:+.2f}); "
                  f"{rw_s:.2f} s vs {refit_s:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"reference_s": base_s, "reference": base.convergence_message,
                                        "priors": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
