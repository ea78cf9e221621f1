"""Timing of :func:`hmlib.stats.mixed.fit_random_intercept` on a registry-sized problem.

20,000 patients in 500 clusters, 5 predictors plus intercept (simulated with
a fixed seed by :func:`hmlib.simulate.mixed_model.large_mixed_model_data`).
Times the binomial fit (Laplace and 10-node adaptive Gauss-Hermite) and the
gaussian fit, and statsmodels' ``MixedLM`` (ML) on the same gaussian data for
a ratio. Prints a small table of medians over repeated
runs; timings on a shared 2-core machine are noisy, so compare ratios.

Run: ``.venv/bin/python bench/bench_mixed.py [--repeats 7] [--n 20000] [--clusters 500]``
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from hmlib.simulate.mixed_model import large_mixed_model_data
from hmlib.stats.mixed import fit_random_intercept


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--predictors", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--no-statsmodels", action="store_true", help="skip the MixedLM comparison")
    args = parser.parse_args(argv)

    X, y_bin, y_gauss, groups = large_mixed_model_data(args.n, args.clusters, args.predictors, seed=args.seed)
    rows = []
    for label, kwargs, y in [
        ("hmlib binomial, Laplace", dict(family="binomial", nagq=1), y_bin),
        ("hmlib binomial, AGHQ 10 nodes", dict(family="binomial", nagq=10), y_bin),
        ("hmlib gaussian, ML", dict(family="gaussian"), y_gauss),
    ]:
        fit = fit_random_intercept(y, X, groups, **kwargs)
        seconds = median_seconds(lambda: fit_random_intercept(y, X, groups, **kwargs), args.repeats)
        rows.append((label, seconds, fit.cluster_sd, fit.loglik, fit.converged))
    gaussian_seconds = rows[-1][1]

    if not args.no_statsmodels:
        import statsmodels.api as sm

        def fit_mixedlm():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return sm.MixedLM(y_gauss, X, groups=groups).fit(reml=False)

        result = fit_mixedlm()
        seconds = median_seconds(fit_mixedlm, max(3, args.repeats // 2))
        rows.append(("statsmodels MixedLM, ML", seconds, float(np.sqrt(np.asarray(result.cov_re)[0, 0])),
                     float(result.llf), bool(result.converged)))

    print(f"n = {args.n}, clusters = {args.clusters}, predictors = {args.predictors} + intercept, "
          f"median of {args.repeats} runs")
    print(f"{'fit':<32} {'seconds':>9} {'x hmlib gauss':>13} {'cluster SD':>11} {'logLik':>13} conv")
    for label, seconds, sd, loglik, conv in rows:
        print(f"{label:<32} {seconds:>9.4f} {seconds / gaussian_seconds:>13.1f} {sd:>11.4f} "
              f"{loglik:>13.3f} {conv}")


if __name__ == "__main__":
    main()
