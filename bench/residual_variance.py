"""Common (2l.pan) or cluster-specific (2l.norm) residual variance for the multilevel imputation?

Writes ``bench/results/residual_variance.json``: the measurement behind
the ``cluster_residual_variance="auto"`` rule of
:mod:`hmlib.steps.imputation`.

- Demo registry (``hmlib.simulate.demo``), ``--seeds`` seeds: the residual-variance
  check of lactate, and the focus coefficient under each choice (m = 10,
  5 iterations) against the full-data fit of the same registry
  (``hmlib.simulate.demo.simulate_complete_data``: the estimate without any missing
  value, so that one registry's sampling error is not charged to the
  imputation) and against the generating value.
- Brandsma schools data (``params/brandsma.yaml``): the check of ``lpr`` and
  the ``lpr`` coefficient under each choice.

Usage::

    .venv/bin/python bench/residual_variance.py [--seeds 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hmlib.data import load_registry  # noqa: E402
from hmlib.simulate.demo import simulate_complete_data, write_demo  # noqa: E402
from hmlib.stats.design import fit_analysis_model  # noqa: E402
from hmlib.stats.imputation import residual_variance_check  # noqa: E402
from hmlib.steps.imputation import impute_registry  # noqa: E402
from hmlib.params import load_params  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402


def focus_under_both(registry, m: int, iterations: int) -> dict:
    p = registry.params
    out = {}
    for hetero in (False, True):
        t0 = time.perf_counter()
        result = impute_registry(registry, method="multilevel", m=m, iterations=iterations,
                                 cluster_residual_variance=hetero)
        pooled = analyse_imputations(result, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                     family=p.outcome_family, levels=registry.levels)
        out["2l.norm" if hetero else "2l.pan"] = {**pooled.term(p.focus), "seconds": time.perf_counter() - t0}
    return out


def check(registry) -> dict:
    p = registry.params
    rv = residual_variance_check(registry.frame, variable=p.focus, cluster=p.cluster,
                                 covariates=[*p.predictors, p.outcome], levels=registry.levels)
    return {k: v for k, v in rv.__dict__.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hmlib_residual_variance"))
    args = parser.parse_args(argv)
    demo_rows = []
    for seed in range(1, args.seeds + 1):
        paths = write_demo(args.workdir / f"seed{seed}", seed=seed)
        registry = load_registry(load_params(paths.params))
        p = registry.params
        full = simulate_complete_data(seed=seed)
        full_fit = fit_analysis_model(full, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                      family=p.outcome_family, levels=registry.levels)
        full_estimate = float(full_fit.coef[list(full_fit.term_names).index(p.focus)])
        row = {"seed": seed, "check": check(registry), "full_data_estimate": full_estimate,
               "truth": json.loads(paths.truth.read_text())["terms"][p.focus],
               "methods": focus_under_both(registry, args.m, args.iterations)}
        demo_rows.append(row)
        print(seed, {k: round(v["estimate"], 3) for k, v in row["methods"].items()}, round(full_estimate, 3),
              "BF p", round(row["check"]["p_value"], 3))
    summary = {}
    for name in ("2l.pan", "2l.norm"):
        err = np.array([r["methods"][name]["estimate"] - r["full_data_estimate"] for r in demo_rows])
        se = np.array([r["methods"][name]["std_error"] for r in demo_rows])
        covers = [r["methods"][name]["ci_lower"] <= r["full_data_estimate"] <= r["methods"][name]["ci_upper"]
                  for r in demo_rows]
        summary[name] = {"mean_error_vs_full_data": float(err.mean()),
                         "rmse_vs_full_data": float(np.sqrt(np.mean(err ** 2))),
                         "mean_std_error": float(se.mean()), "covers_full_data_estimate": int(sum(covers)),
                         "mean_fmi": float(np.mean([r["methods"][name]["fmi"] for r in demo_rows]))}
    brandsma = load_registry(load_params(REPO / "params" / "brandsma.yaml"))
    record = {
        "what": "multilevel imputation with common (2l.pan) vs cluster-specific (2l.norm) residual variance",
        "settings": {"m": args.m, "iterations": args.iterations, "seeds": args.seeds},
        "demo": {"per_seed": demo_rows, "summary": summary},
        "brandsma": {"check": check(brandsma), "methods": focus_under_both(brandsma, args.m, args.iterations)},
    }
    out = Path(__file__).parent / "results" / "residual_variance.json"
    out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1))
    print("brandsma", {k: round(v["estimate"], 3) for k, v in record["brandsma"]["methods"].items()},
          "se", {k: round(v["std_error"], 4) for k, v in record["brandsma"]["methods"].items()})
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
