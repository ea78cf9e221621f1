"""Does the categorical delta adjustment recover the truth when the true departure from MAR is known?

Each replicate simulates a registry from
:func:`hmlib.simulate.categorical_focus.categorical_focus_registry` whose
three-level ``band`` is missing *not* at random: ``logit P(missing)`` rises
by ``delta_true`` (default 1) when the band is not ``normal``, so unrecorded
patients have exactly ``e^delta_true`` times the odds of each non-normal band
of recorded patients like them (the pattern-mixture model the step-5 delta
assumes; no structural sites, where that model would not hold). The primary
analysis is multilevel multiple imputation (``m`` imputations) of the band,
which assumes MAR, then the random-intercept logistic analysis pooled by
Rubin's rules; the delta-adjusted analysis redraws the imputed bands with
:func:`hmlib.stats.sensitivity.shift_imputed_categories` at ``delta_true``.
Over the replicates, for delta 0 (MAR) and delta_true: bias and 95% coverage
of the share of patients whose band is not ``normal`` (truth: that share in
the registry before values went missing; the quantity MNAR on the band moves
most, so MAR should be biased here and delta_true not), and of each level's
log odds ratio in the outcome model (truth 0.5 and 1.0; missingness here
depends on the band, not on the outcome given the band, so MAR imputation
should be close already and the delta adjustment must not spoil it).
The share is pooled by Rubin's rules (within-imputation variance
``p (1 - p) / n``).

Usage::

    .venv/bin/python bench/categorical_delta_truth.py --reps 50 --out bench/results/categorical_delta_truth.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.simulate.categorical_focus import (CATEGORICAL_LEVELS, categorical_focus_registry,  # noqa: E402
                                              categorical_focus_registry_truth)
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402
from hmlib.stats.sensitivity import category_imputation_model, shift_imputed_categories  # noqa: E402

TERMS = ("band[raised]", "band[high]")
PREDICTORS = ["age", "severity", "band"]


def one_replicate(seed: int, *, n_sites: int, n_patients: int, delta_true: float, m: int, iterations: int) -> dict:
    """Pooled band coefficients at delta 0 and delta_true for one replicate."""
    frame = categorical_focus_registry(seed, n_sites, n_patients, mnar_log_odds=delta_true, n_structural=0,
                                       keep_complete=True)
    truth_share = float((frame.pop("band_complete") != "normal").mean())
    levels = {"band": list(CATEGORICAL_LEVELS)}
    roles = dict(cluster="site", outcome="outcome", predictors=PREDICTORS)
    imputation = impute(frame, method="multilevel", outcome_family="binomial", levels=levels,
                        kinds={"age": "numeric", "severity": "numeric", "band": "categorical"}, m=m,
                        iterations=iterations, seed=seed, **roles)
    model = category_imputation_model(imputation, "band", levels=levels, seed=seed, **roles)
    out = {"seed": seed, "missing_share": float(frame["band"].isna().mean()), "truth_share": truth_share}
    for label, delta in (("mar", 0.0), ("delta_true", delta_true)):
        shifted = shift_imputed_categories(imputation, model, delta) if delta else imputation
        shares = np.array([float((f["band"].astype(str) != "normal").mean()) for f in shifted.completed])
        within = float(np.mean(shares * (1 - shares) / len(frame)))
        total = within + (1 + 1 / m) * float(shares.var(ddof=1))
        half = 1.959964 * np.sqrt(total)
        out[f"{label}_share"] = {"estimate": float(shares.mean()), "std_error": float(np.sqrt(total)),
                                 "ci95": [float(shares.mean() - half), float(shares.mean() + half)]}
        pooled = analyse_imputations(shifted, outcome="outcome", predictors=PREDICTORS, cluster="site",
                                     family="binomial", levels=levels).to_frame().set_index("term")
        out[label] = {t: {"estimate": float(pooled.loc[t, "estimate"]), "std_error": float(pooled.loc[t, "std_error"]),
                          "ci95": [float(pooled.loc[t, "ci_lower"]), float(pooled.loc[t, "ci_upper"])]}
                      for t in TERMS}
    return out


def summarise(rows: list[dict], truth: dict) -> dict:
    """Bias, relative bias and 95% coverage with Monte Carlo SEs, per analysis and term (and the share)."""
    out = {}
    for label in ("mar", "delta_true"):
        out[label] = {}
        for term in ("share not normal", *TERMS):
            got = [r[f"{label}_share"] if term == "share not normal" else r[label][term] for r in rows]
            values = np.array([r["truth_share"] for r in rows]) if term == "share not normal" else \
                np.full(len(rows), truth[term])
            est = np.array([g["estimate"] for g in got])
            lo = np.array([g["ci95"][0] for g in got])
            hi = np.array([g["ci95"][1] for g in got])
            reps, value = est.size, float(values.mean())
            cover = float(np.mean((lo <= values) & (values <= hi)))
            est = est - values + value          # bias against each replicate's own truth
            out[label][term] = {"truth": value, "reps": reps, "mean": float(est.mean()),
                                "relative_bias": float((est.mean() - value) / value),
                                "relative_bias_mc_se": float(est.std(ddof=1) / np.sqrt(reps) / value)
                                if reps > 1 else float("nan"),
                                "coverage95": cover, "coverage95_mc_se": float(np.sqrt(cover * (1 - cover) / reps))}
    return out


def run(reps: int = 50, *, n_sites: int = 40, n_patients: int = 2000, delta_true: float = 1.0, m: int = 10,
        iterations: int = 5, first_seed: int = 9000, out: Path | None = None, verbose: bool = True) -> dict:
    """Run the study (replicates written to ``out`` after each one when given)."""
    truth = categorical_focus_registry_truth()["terms"]
    settings = {"reps": reps, "n_sites": n_sites, "n_patients": n_patients, "delta_true": delta_true, "m": m,
                "iterations": iterations, "first_seed": first_seed}
    rows, start = [], time.perf_counter()
    for r in range(reps):
        rows.append(one_replicate(first_seed + r, n_sites=n_sites, n_patients=n_patients, delta_true=delta_true,
                                  m=m, iterations=iterations))
        if out is not None:
            out.write_text(json.dumps({"replicates": rows, "summary": summarise(rows, truth), "settings": settings,
                                       "complete": r + 1 == reps}, indent=1))
        if verbose:
            row = rows[-1]
            print(f"  rep {r + 1}/{reps}: share not normal {row['truth_share']:.3f}, MAR "
                  f"{row['mar_share']['estimate']:.3f}, delta {delta_true:g} "
                  f"{row['delta_true_share']['estimate']:.3f}; MAR raised "
                  f"{row['mar']['band[raised]']['estimate']:.3f} high "
                  f"{row['mar']['band[high]']['estimate']:.3f}; delta {delta_true:g}: raised "
                  f"{row['delta_true']['band[raised]']['estimate']:.3f} high "
                  f"{row['delta_true']['band[high]']['estimate']:.3f}", flush=True)
    summary = summarise(rows, truth)
    summary["seconds"] = time.perf_counter() - start
    if verbose:
        for label in ("mar", "delta_true"):
            for term in ("share not normal", *TERMS):
                s = summary[label][term]
                print(f"{label:<10} {term:<16} truth {s['truth']:.3f} mean {s['mean']:.3f} relative bias "
                      f"{100 * s['relative_bias']:+.1f}% (MC SE {100 * s['relative_bias_mc_se']:.1f}%) coverage95 "
                      f"{100 * s['coverage95']:.0f}% (MC SE {100 * s['coverage95_mc_se']:.0f})")
    return {"replicates": rows, "summary": summary, "settings": settings, "complete": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--sites", type=int, default=40)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--delta", type=float, default=1.0)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = run(args.reps, n_sites=args.sites, n_patients=args.patients, delta_true=args.delta, m=args.m,
                  out=args.out)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
