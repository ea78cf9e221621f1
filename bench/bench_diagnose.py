"""Time step 1 (``hmlib.steps.diagnose.diagnose``) on a registry of the size the brief targets.

Simulates 20,000 patients in 500 sites (sizes 10-70) with a binary outcome,
two complete predictors and three incomplete ones (lactate: MAR on severity
with a site effect and 2 structural sites; sbp: MCAR 5%; gcs: site effect),
runs ``diagnose`` and prints the wall time. Target: under 15 s on a 2-core
machine; the brief's limit is one minute. Run:

    .venv/bin/python bench/bench_diagnose.py [--seed 1] [--patients 20000] [--sites 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from hmlib.steps.diagnose import diagnose


def simulate(seed: int, n_patients: int, n_sites: int) -> pd.DataFrame:
    """A registry with site-clustered outcome and missingness (no patient is real)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 71, n_sites)
    sizes = np.maximum(1, np.round(sizes * n_patients / sizes.sum()).astype(int))
    site = np.repeat(np.arange(1, n_sites + 1), sizes)
    n = site.size
    u_out = rng.normal(0, 0.6, n_sites)[site - 1]
    doc = rng.normal(0, 1, n_sites)[site - 1]
    age = rng.normal(60, 15, n).round(1)
    severity = rng.gamma(3, 5, n).round(1)
    sex = rng.choice(["female", "male"], n)
    lactate = (1.2 + 0.01 * age + 0.06 * severity + rng.normal(0, 0.7, n)).clip(0.3).round(2)
    sbp = rng.normal(130, 20, n).round()
    gcs = rng.integers(3, 16, n).astype(float)
    eta = -6 + 0.35 * lactate + 0.03 * age + 0.06 * severity + u_out
    outcome = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    p_lac = 1 / (1 + np.exp(-(-1 - 1.2 * doc - 0.4 * (severity - severity.mean()) / severity.std())))
    lactate[rng.random(n) < p_lac] = np.nan
    lactate[np.isin(site, [5, 27])] = np.nan
    sbp[rng.random(n) < 0.05] = np.nan
    gcs[rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 0.8 * doc)))] = np.nan
    return pd.DataFrame({"site": site, "outcome": outcome, "age": age, "severity": severity, "sex": sex,
                         "lactate": lactate, "sbp": sbp, "gcs": gcs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--sites", type=int, default=500)
    args = parser.parse_args()
    frame = simulate(args.seed, args.patients, args.sites)
    start = time.perf_counter()
    result = diagnose(frame, cluster="site", outcome="outcome", outcome_family="binomial",
                      predictors=["age", "severity", "sex", "lactate", "sbp", "gcs"], focus="lactate",
                      cluster_noun="site")
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    artifact = result.to_artifact()
    seconds_artifact = time.perf_counter() - start
    print(f"diagnose: {len(frame):,} patients, {args.sites} sites, incomplete {list(result.incomplete)}: "
          f"{seconds:.1f} s (to_artifact incl. narrative {seconds_artifact:.2f} s)")
    print(f"  models: nagq={result.variation['lactate'].nagq}; notes: {len(artifact.notes)}")


if __name__ == "__main__":
    main()
