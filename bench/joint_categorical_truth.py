"""Does the joint model recover the truth with an incomplete three-level focus? A simulation study.

Each replicate simulates a registry from :func:`hmlib.simulate.categorical_focus.categorical_focus_registry`
(a three-level ``band``, normal / raised / high, missing for about 38% of
patients at random given site and severity, two sites never recording it;
nominal by default, ``--ordinal`` for the cumulative-logit version), fits
:func:`hmlib.stats.joint.fit_joint_model` with its defaults (missing bands
summed out over a nominal or, with ``--ordinal``, an ordinal submodel with
site random intercepts; the shared-parameter missingness submodel on) and
records, for each level's log odds ratio (truth 0.5 and 1.0) and the site SD
(truth 0.5): posterior mean and SD, 90% and 95% equal-tailed intervals, and
whether the convergence gate passed. Over the replicates: bias and relative
bias with their Monte Carlo SE, empirical SD against mean posterior SD, and
coverage with its Monte Carlo SE.

Sampler: 2 chains of 500 draws after 500 tuning steps by default (the fast
sizes of :mod:`hmlib.settings`, a reduced sampler to fit 50 replicates on a
shared 2-core machine; ``--draws``/``--tune`` to change); each replicate's
gate result and timing are kept.

Usage::

    .venv/bin/python bench/joint_categorical_truth.py --reps 50 --out bench/results/joint_categorical_truth.json
    .venv/bin/python bench/joint_categorical_truth.py --reps 50 --ordinal --out bench/results/joint_ordinal_truth.json

The replicates are written after each one; rerunning with the same ``--out``
resumes after the last one written.

The fits themselves are checked in ``tests/test_joint_categorical.py``
(JOINT-CAT-005, -009); this script is the study.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.simulate.categorical_focus import (CATEGORICAL_LEVELS, categorical_focus_registry,  # noqa: E402
                                              categorical_focus_registry_truth)
from hmlib.stats.joint import fit_joint_model  # noqa: E402
from hmlib.stats.mixed import fit_random_intercept  # noqa: E402

TERMS = ("band[raised]", "band[high]", "sd(site)")
PREDICTORS = ["age", "severity", "band"]
#: Maximum-likelihood fits (glmer's model, Laplace) on the same replicates: the complete cases, and every
#: patient with the band before values went missing. They tell a replicate set's own sampling luck from the
#: joint model's behaviour: where the joint model's empirical SD is high, are these high on the same seeds?
YARDSTICKS = {"complete_case": "band", "full_data": "band_complete"}


def yardsticks(seed: int, *, n_sites: int, n_patients: int, ordinal: bool) -> dict:
    """``{yardstick: {term: {estimate, std_error, ci95}}}`` for the band terms of one replicate's registry."""
    data = categorical_focus_registry(seed, n_sites, n_patients, ordinal=ordinal, keep_complete=True)
    out = {}
    for name, column in YARDSTICKS.items():
        d = data.dropna(subset=[column])
        X = pd.DataFrame({"Intercept": 1.0, "age": d["age"], "severity": d["severity"],
                          **{f"band[{lv}]": (d[column] == lv).astype(float) for lv in CATEGORICAL_LEVELS[1:]}})
        fit = fit_random_intercept(d["outcome"].to_numpy(), X, d["site"].to_numpy(), family="binomial")
        out[name] = {}
        for i, term in enumerate(X.columns):
            if term.startswith("band["):
                est, se = float(fit.coef[i]), float(fit.std_error[i])
                out[name][term] = {"estimate": est, "std_error": se, "ci95": [est - 1.96 * se, est + 1.96 * se]}
    return out


def one_replicate(seed: int, *, n_sites: int, n_patients: int, ordinal: bool, **fit_options) -> dict:
    """Posterior summaries of the truth's quantities for one replicate."""
    data = categorical_focus_registry(seed, n_sites, n_patients, ordinal=ordinal)
    result = fit_joint_model(data, outcome="outcome", predictors=PREDICTORS, cluster="site", family="binomial",
                             seed=seed, levels={"band": list(CATEGORICAL_LEVELS)},
                             ordinal=["band"] if ordinal else None, **fit_options)
    out = {"seed": seed, "converged": result.converged, "seconds": result.timing["total_s"],
           "timing": dict(result.timing), "missing_share": float(data["band"].isna().mean())}
    for term in TERMS:
        draws = result.draws[term].reshape(-1)
        q = np.quantile(draws, [0.025, 0.05, 0.95, 0.975])
        out[term] = {"estimate": float(draws.mean()), "std_error": float(draws.std(ddof=1)),
                     "ci95": [float(q[0]), float(q[3])], "ci90": [float(q[1]), float(q[2])]}
    return out


def summarise_yardsticks(rows: list[dict], truth: dict) -> dict:
    """Per yardstick and band term: mean, relative bias, empirical SD, mean SE and 95% coverage over ``rows``."""
    out = {}
    for name in YARDSTICKS:
        out[name] = {}
        for term in TERMS[:2]:
            est = np.array([r["yardsticks"][name][term]["estimate"] for r in rows])
            se = np.array([r["yardsticks"][name][term]["std_error"] for r in rows])
            value = truth[term]
            out[name][term] = {
                "reps": int(est.size), "mean": float(est.mean()), "relative_bias": float((est.mean() - value) / value),
                "empirical_sd": float(est.std(ddof=1)) if est.size > 1 else float("nan"),
                "mean_std_error": float(se.mean()),
                "coverage95": float(np.mean(np.abs(est - value) <= 1.96 * se))}
    return out


def summarise(rows: list[dict], truth: dict) -> dict:
    """Bias, relative bias, MC SEs, empirical SD, mean posterior SD and coverage per quantity."""
    out = {}
    for term in TERMS:
        value = truth[term]
        est = np.array([r[term]["estimate"] for r in rows])
        se = np.array([r[term]["std_error"] for r in rows])
        reps = est.size
        entry = {"truth": value, "reps": reps, "mean": float(est.mean()), "bias": float(est.mean() - value),
                 "relative_bias": float((est.mean() - value) / value),
                 "bias_mc_se": float(est.std(ddof=1) / np.sqrt(reps)) if reps > 1 else float("nan"),
                 "relative_bias_mc_se": float(est.std(ddof=1) / np.sqrt(reps) / value) if reps > 1 else float("nan"),
                 "empirical_sd": float(est.std(ddof=1)) if reps > 1 else float("nan"),
                 "mean_posterior_sd": float(se.mean())}
        for level in ("90", "95"):
            lo = np.array([r[term][f"ci{level}"][0] for r in rows])
            hi = np.array([r[term][f"ci{level}"][1] for r in rows])
            cover = float(np.mean((lo <= value) & (value <= hi)))
            entry[f"coverage{level}"] = cover
            entry[f"coverage{level}_mc_se"] = float(np.sqrt(cover * (1 - cover) / reps))
        out[term] = entry
    out["yardsticks"] = summarise_yardsticks(rows, truth)
    out["converged_share"] = float(np.mean([r["converged"] for r in rows]))
    out["mean_seconds"] = float(np.mean([r["seconds"] for r in rows]))
    out["mean_missing_share"] = float(np.mean([r["missing_share"] for r in rows]))
    return out


def run(reps: int = 50, *, n_sites: int = 40, n_patients: int = 2000, first_seed: int = 7000, ordinal: bool = False,
        verbose: bool = True, out: Path | None = None, **fit_options) -> dict:
    """Run the study; returns ``{"replicates": [...], "summary": {...}, "settings": {...}}``.

    With ``out`` the replicates so far are written there after each one (a
    long study can be stopped and its replicates kept), and a study whose
    ``out`` exists already resumes after its last replicate.
    """
    truth = categorical_focus_registry_truth(ordinal=ordinal)["terms"]
    rows = []
    if out is not None and out.is_file():          # resume: keep the replicates already written
        rows = json.loads(out.read_text())["replicates"]
    start = time.perf_counter()
    # the yardsticks on every planned seed (cheap), made once: each replicate's own, and how lucky the set of
    # replicates run so far is against all of them
    planned = {first_seed + r: yardsticks(first_seed + r, n_sites=n_sites, n_patients=n_patients, ordinal=ordinal)
               for r in range(reps)}
    planned_summary = summarise_yardsticks([{"yardsticks": y} for y in planned.values()], truth)
    for row in rows:                               # replicates written before the yardsticks existed
        row.setdefault("yardsticks", planned[row["seed"]])
    settings = {"reps": reps, "n_sites": n_sites, "n_patients": n_patients, "first_seed": first_seed,
                "ordinal": ordinal, **{k: v for k, v in fit_options.items()}}
    for r in range(len(rows), reps):
        rows.append({**one_replicate(first_seed + r, n_sites=n_sites, n_patients=n_patients, ordinal=ordinal,
                                     **fit_options), "yardsticks": planned[first_seed + r]})
        if out is not None:
            out.write_text(json.dumps({"replicates": rows, "summary": summarise(rows, truth), "settings": settings,
                                       "yardsticks_planned_seeds": planned_summary, "complete": r + 1 == reps},
                                      indent=1))
        if verbose:
            row = rows[-1]
            print(f"  rep {r + 1}/{reps} seed {row['seed']}: raised {row['band[raised]']['estimate']:.3f}, high "
                  f"{row['band[high]']['estimate']:.3f}, sd(site) {row['sd(site)']['estimate']:.3f}, converged "
                  f"{row['converged']}, {row['seconds']:.0f} s", flush=True)
    summary = summarise(rows, truth)
    summary["seconds"] = time.perf_counter() - start
    if verbose:
        print(f"\njoint_bayes, {'ordinal' if ordinal else 'nominal'} band: {reps} replicates of {n_patients} "
              f"patients in {n_sites} sites, {summary['seconds']:.0f} s; gate passed in "
              f"{100 * summary['converged_share']:.0f}%")
        for term in TERMS:
            s = summary[term]
            print(f"  {term:<13} truth {s['truth']:.3f}  mean {s['mean']:.4f}  bias {s['bias']:+.4f} "
                  f"({100 * s['relative_bias']:+.1f}%, MC SE {100 * s['relative_bias_mc_se']:.1f}%)  emp. SD "
                  f"{s['empirical_sd']:.4f}  mean post. SD {s['mean_posterior_sd']:.4f}  coverage95 "
                  f"{100 * s['coverage95']:.0f}% (MC SE {100 * s['coverage95_mc_se']:.0f})  coverage90 "
                  f"{100 * s['coverage90']:.0f}%")
        for name, terms in summary["yardsticks"].items():
            for term, y in terms.items():
                print(f"  {name} {term:<13} mean {y['mean']:.4f} ({100 * y['relative_bias']:+.1f}%)  emp. SD "
                      f"{y['empirical_sd']:.4f}  mean SE {y['mean_std_error']:.4f}  coverage95 "
                      f"{100 * y['coverage95']:.0f}%")
    if verbose:
        for name, terms in planned_summary.items():
            for term, y in terms.items():
                print(f"  {name} on all {reps} planned seeds {term:<13} emp. SD {y['empirical_sd']:.4f}  mean SE "
                      f"{y['mean_std_error']:.4f}  coverage95 {100 * y['coverage95']:.0f}%")
    return {"replicates": rows, "summary": summary, "settings": settings, "yardsticks_planned_seeds": planned_summary,
            "complete": len(rows) >= reps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--first-seed", type=int, default=7000)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--ordinal", action="store_true")
    parser.add_argument("--out", type=Path, help="write replicates and summary as JSON here")
    args = parser.parse_args(argv)
    results = run(args.reps, n_sites=args.sites, n_patients=args.patients, first_seed=args.first_seed,
                  ordinal=args.ordinal, out=args.out, draws=args.draws, tune=args.tune, chains=2)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    s = results["summary"]
    ok = all(abs(s[t]["relative_bias"]) < 0.10 and 0.90 <= s[t]["coverage95"] <= 0.98
             for t in ("band[raised]", "band[high]"))
    print(f"\neach level's |relative bias| < 10% and 95% coverage in 90-98%: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
