"""How long do imputation + pooled analysis take?

Two workloads, each timed ``--repeat`` times (wall seconds; the machines are
shared, so the minimum and the median are printed):

1. ``sim_registry.csv`` (4,000 patients, 40 sites, lactate missing for 33%):
   ``impute(method="multilevel", m=20, iterations=10)`` followed by the
   pooled analysis ``outcome ~ lactate + age + severity + (1 | site)``
   (binomial, Laplace). Target: under 3.2 s, a tenth of the 32 s that mice
   2l.pan + glmer took on the same machines
   (``/work/shared/reference/r_methods_sim_registry.json``). The other
   methods are timed too, for the report's comparison.
2. A simulated registry of 20,000 patients in 500 clusters with three
   incomplete variables (two continuous, one binary; the binary one is
   imputed by 2l.bin, i.e. a random-intercept logistic fit per chain and
   iteration; :func:`hmlib.simulate.studies.large_registry`): multilevel,
   m = 20, iterations = 10, plus the pooled analysis. Target: under 2 minutes.

Usage::

    .venv/bin/python bench/bench_imputation.py [--repeat 3] [--skip-large]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.simulate.studies import large_registry  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

SIM = Path("/work/shared/reference/sim_registry.csv")


def timed(fn, repeat: int):
    seconds, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, out


def run_sim_registry(method: str, continuous: str = "norm"):
    data = pd.read_csv(SIM)
    predictors = ["lactate", "age", "severity"]

    def work():
        t0 = time.perf_counter()
        res = impute(data, method=method, continuous=continuous, cluster="site", outcome="outcome",
                     outcome_family="binomial", predictors=predictors, m=20, iterations=10, seed=1)
        t1 = time.perf_counter()
        pooled = analyse_imputations(res, outcome="outcome", predictors=predictors, cluster="site",
                                     family="binomial")
        return pooled, t1 - t0, time.perf_counter() - t1

    return work


def run_large(data: pd.DataFrame):
    predictors = ["age", "x1", "x2", "b"]

    def work():
        t0 = time.perf_counter()
        res = impute(data, method="multilevel", cluster="site", outcome="y", outcome_family="binomial",
                     predictors=predictors, m=20, iterations=10, seed=1)
        t1 = time.perf_counter()
        pooled = analyse_imputations(res, outcome="y", predictors=predictors, cluster="site", family="binomial")
        return pooled, t1 - t0, time.perf_counter() - t1

    return work


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args(argv)

    print("sim_registry.csv (4,000 patients, 40 sites), m = 20, iterations = 10, + pooled glmer analysis")
    for method, cont in [("multilevel", "norm"), ("multilevel", "pmm"), ("flat", "norm"), ("flat", "pmm"),
                         ("fixed_effects", "norm"), ("stratified", "norm")]:
        seconds, (pooled, t_imp, t_ana) = timed(run_sim_registry(method, cont), args.repeat)
        lac = pooled.term("lactate")
        print(f"  {method:<13} {cont:<4}  min {min(seconds):5.2f} s  median {statistics.median(seconds):5.2f} s "
              f"(last: impute {t_imp:.2f} s, analyse {t_ana:.2f} s)  lactate {lac['estimate']:.3f} "
              f"(SE {lac['std_error']:.3f})" + ("   target < 3.2 s" if (method, cont) == ("multilevel", "norm")
                                                  else ""))
    if not args.skip_large:
        data = large_registry()
        print(f"\nsimulated: {len(data)} patients, {data['site'].nunique()} clusters, missing "
              + ", ".join(f"{c} {100 * data[c].isna().mean():.0f}%" for c in ("x1", "x2", "b")))
        seconds, (pooled, t_imp, t_ana) = timed(run_large(data), 1)
        print(f"  multilevel norm  {seconds[0]:.1f} s (impute {t_imp:.1f} s, analyse {t_ana:.1f} s)"
              "   target < 120 s")
        print(pooled.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
