"""Does the joint Bayesian model recover the truth? A simulation study with known truth.

Each replicate simulates a trauma registry from the generator behind
``tests/results/sim_registry_truth.json`` (below), fits
:func:`hmlib.stats.joint.fit_joint_model` with its defaults (lactate
submodel chosen by the skewness rule, missing lactate integrated out, the
shared-parameter missingness submodel on) and records, for the lactate
coefficient (truth 0.35), the site SD of the outcome (truth 0.6) and the
correlation between the missingness and outcome site effects (truth +0.5,
see below): posterior mean, posterior SD, 90% and 95% equal-tailed
intervals, and whether the convergence gate passed. Over the replicates it
reports the mean, the bias and relative bias with their Monte Carlo SE, the
empirical SD against the mean posterior SD, and the coverage of the 90% and
95% intervals with their Monte Carlo SE.

Data-generating model: ``simulate`` of ``bench/imputation_truth.py`` (its
docstring states it), reused here. In its terms, the site effects are
``u_j`` (outcome), ``v_j`` (lactate) and ``d_j`` (documentation quality),
and lactate is missing with ``logit P = -1 - 1.2 d_j - 0.4 z(severity)``.

The missingness site effect is ``w_j = -1.2 d_j``, so ``corr(w_j, u_j) = +0.5``
(the sites that document least have the highest mortality). The fitted
missingness submodel has severity *and age* as predictors (age's true effect
is 0) and does not know about the two structural sites, so its correlation is
an approximation of that truth, not an exact target.

Usage::

    .venv/bin/python bench/joint_truth.py --reps 40
    .venv/bin/python bench/joint_truth.py --reps 40 --sites 40 --patients 4000 --out joint_truth.json

``tests/test_joint_model.py`` runs a tiny version (2 small replicates) to
check that the study runs and reports what it says.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.stats.joint import fit_joint_model  # noqa: E402

TRUTH = {"lactate": 0.35, "sd(site)": 0.6, "corr(missingness, outcome)": 0.5}
PREDICTORS = ["age", "severity", "lactate"]


# The same simulator as the imputation truth study (one generator for both studies).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hmlib.simulate.studies import truth_study_registry as simulate  # noqa: E402


def one_replicate(seed: int, *, n_sites: int, n_patients: int, **fit_options) -> dict:
    """Posterior summaries of the truth's quantities for one replicate."""
    data = simulate(seed, n_sites, n_patients)
    result = fit_joint_model(data, outcome="outcome", predictors=PREDICTORS, cluster="site",
                             family="binomial", seed=seed, **fit_options)
    out = {"seed": seed, "converged": result.converged, "seconds": result.timing["total_s"]}
    for term in TRUTH:
        key = "re_corr" if term.startswith("corr") else term
        if key not in result.draws:
            continue
        draws = result.draws[key].reshape(-1)
        q = np.quantile(draws, [0.025, 0.05, 0.95, 0.975])
        out[term] = {"estimate": float(draws.mean()), "std_error": float(draws.std(ddof=1)),
                     "ci95": [float(q[0]), float(q[3])], "ci90": [float(q[1]), float(q[2])]}
    return out


def summarise(rows: list[dict]) -> dict:
    """Bias, relative bias, MC SEs, empirical SD, mean posterior SD and coverage per quantity."""
    out = {}
    for term, truth in TRUTH.items():
        got = [r[term] for r in rows if term in r]
        if not got:
            continue
        est = np.array([g["estimate"] for g in got])
        se = np.array([g["std_error"] for g in got])
        reps = est.size
        entry = {"truth": truth, "reps": reps, "mean": float(est.mean()), "bias": float(est.mean() - truth),
                 "relative_bias": float((est.mean() - truth) / truth),
                 "bias_mc_se": float(est.std(ddof=1) / np.sqrt(reps)) if reps > 1 else float("nan"),
                 "empirical_sd": float(est.std(ddof=1)) if reps > 1 else float("nan"),
                 "mean_posterior_sd": float(se.mean())}
        for level in ("90", "95"):
            lo = np.array([g[f"ci{level}"][0] for g in got])
            hi = np.array([g[f"ci{level}"][1] for g in got])
            cover = float(np.mean((lo <= truth) & (truth <= hi)))
            entry[f"coverage{level}"] = cover
            entry[f"coverage{level}_mc_se"] = float(np.sqrt(cover * (1 - cover) / reps))
        out[term] = entry
    out["converged_share"] = float(np.mean([r["converged"] for r in rows]))
    out["mean_seconds"] = float(np.mean([r["seconds"] for r in rows]))
    return out


def run(reps: int = 40, *, n_sites: int = 40, n_patients: int = 4000, first_seed: int = 5000,
        verbose: bool = True, **fit_options) -> dict:
    """Run the study; returns ``{"replicates": [...], "summary": {...}}``."""
    rows = []
    start = time.perf_counter()
    for r in range(reps):
        rows.append(one_replicate(first_seed + r, n_sites=n_sites, n_patients=n_patients, **fit_options))
        if verbose:
            row = rows[-1]
            print(f"  rep {r + 1}/{reps} seed {row['seed']}: lactate {row['lactate']['estimate']:.3f}, "
                  f"sd(site) {row['sd(site)']['estimate']:.3f}, converged {row['converged']}, "
                  f"{row['seconds']:.0f} s", flush=True)
    summary = summarise(rows)
    summary["seconds"] = time.perf_counter() - start
    if verbose:
        print(f"\njoint_bayes: {reps} replicates of {n_patients} patients in {n_sites} sites, "
              f"{summary['seconds']:.0f} s; gate passed in {100 * summary['converged_share']:.0f}%")
        for term in TRUTH:
            s = summary.get(term)
            if s is None:
                continue
            print(f"  {term:<27} truth {s['truth']:.3f}  mean {s['mean']:.4f}  bias {s['bias']:+.4f} "
                  f"({100 * s['relative_bias']:+.1f}%, MC SE {s['bias_mc_se']:.4f})  emp. SD "
                  f"{s['empirical_sd']:.4f}  mean post. SD {s['mean_posterior_sd']:.4f}  coverage90 "
                  f"{100 * s['coverage90']:.0f}% (MC SE {100 * s['coverage90_mc_se']:.0f})  coverage95 "
                  f"{100 * s['coverage95']:.0f}%")
    return {"replicates": rows, "summary": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--no-missingness-model", action="store_true")
    parser.add_argument("--out", type=Path, help="write replicates and summary as JSON here")
    args = parser.parse_args(argv)
    results = run(args.reps, n_sites=args.sites, n_patients=args.patients, first_seed=args.first_seed,
                  missingness_model=not args.no_missingness_model)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    s = results["summary"]
    ok = True
    for term in ("lactate", "sd(site)"):
        # nominal 90% coverage, allowing 2 Monte Carlo SEs of a 90% proportion
        tolerance = 2 * np.sqrt(0.9 * 0.1 / s[term]["reps"])
        ok &= abs(s[term]["relative_bias"]) < 0.10 and abs(s[term]["coverage90"] - 0.90) <= tolerance
    print(f"\n|relative bias| < 10% and 90% coverage within 2 MC SE of 90% for lactate and sd(site): "
          f"{'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
