"""Three-level multilevel imputation against the truth, beside the two-level comparators.

Registries of :func:`hmlib.simulate.studies.three_level_registry` (4,320
patients in 144 hospitals in 24 countries; ``x`` varies between countries
and hospitals, is missing for 37% at random given the outcome and the
country, and is never recorded in two countries). Per registry and method,
``m = 20`` imputations (10 iterations), the analysis model ``y ~ x + age +
(1 | country) + (1 | country:hospital)`` on each, Rubin's rules; then bias,
empirical SE, mean model SE and 95% coverage of ``x``'s coefficient and of
each level's SD, over ``--replicates`` registries. Methods:

- ``three_level``: multilevel imputation with random intercepts for hospital
  and country and the country means among the predictors (the default with
  ``higher_levels``);
- ``two_level_fixed``: multilevel imputation with hospital intercepts and
  fixed country indicators (hmlib's earlier behaviour, ``higher_effects="fixed"``);
- ``flat``: single-level chained equations (clusters ignored);
- ``complete_case``: the analysis model on the patients with ``x`` recorded.

Usage::

    .venv/bin/python bench/three_level_imputation_truth.py [--replicates 100] [--m 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.simulate.studies import three_level_registry, three_level_registry_truth  # noqa: E402
from hmlib.stats.design import fit_analysis_model  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "three_level_imputation_truth.json"
TERMS = ("x", "sd(country)", "sd(hospital)")
MODEL = dict(cluster="hospital", outcome="y", outcome_family="binomial", predictors=["x", "age"],
             higher_levels=["country"])


def _estimates(frame, method: str, m: int, seed: int):
    if method == "complete_case":
        fit = fit_analysis_model(frame, outcome="y", predictors=["x", "age"], cluster="hospital", family="binomial",
                                 higher_levels=("country",))
        return fit.to_frame().set_index("term")
    kwargs = dict(MODEL, m=m, iterations=10, seed=seed)
    if method == "flat":
        res = impute(frame, method="flat", **kwargs)
    else:
        res = impute(frame, method="multilevel", higher_effects="random" if method == "three_level" else "fixed",
                     **kwargs)
    pooled = analyse_imputations(res, outcome="y", predictors=["x", "age"], cluster="hospital", family="binomial",
                                 higher_levels=["country"])
    return pooled.to_frame().set_index("term")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    truth = three_level_registry_truth()["terms"]
    methods = ("three_level", "two_level_fixed", "flat", "complete_case")
    rows = {method: [] for method in methods}
    seconds = {method: 0.0 for method in methods}
    start = time.perf_counter()
    for r in range(args.replicates):
        frame = three_level_registry(1000 + r)
        for method in methods:
            t0 = time.perf_counter()
            table = _estimates(frame, method, args.m, seed=r)
            seconds[method] += time.perf_counter() - t0
            rows[method].append({t: (float(table.loc[t, "estimate"]), float(table.loc[t, "std_error"]),
                                     float(table.loc[t, "ci_lower"]), float(table.loc[t, "ci_upper"]))
                                 for t in TERMS})
        if (r + 1) % 10 == 0:
            print(f"{r + 1} replicates, {time.perf_counter() - start:.0f} s", flush=True)
    out = {"replicates": args.replicates, "m": args.m, "truth": {t: truth[t] for t in TERMS}, "methods": {},
           "seconds_per_registry": {k: v / args.replicates for k, v in seconds.items()}}
    for method in methods:
        out["methods"][method] = {}
        for t in TERMS:
            est, se, lo, hi = (np.array([row[t][i] for row in rows[method]]) for i in range(4))
            true = truth[t]
            out["methods"][method][t] = {
                "mean": float(est.mean()), "relative_bias": float(est.mean() / true - 1),
                "mc_se_bias": float(est.std(ddof=1) / np.sqrt(est.size) / true),
                "empirical_se": float(est.std(ddof=1)), "mean_model_se": float(np.nanmean(se)),
                "coverage_95": float(np.mean((lo <= true) & (true <= hi)))}
            print(method, t, {k: round(v, 3) for k, v in out["methods"][method][t].items()}, flush=True)
    out["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
