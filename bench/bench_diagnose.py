"""Time step 1 (``hmlib.steps.diagnose.diagnose``) on a registry of the size the brief targets.

Simulates 20,000 patients in 500 sites (sizes 10-70) with a binary outcome,
two complete predictors and three incomplete ones (lactate: MAR on severity
with a site effect and 2 structural sites; sbp: MCAR 5%; gcs: site effect;
:func:`hmlib.simulate.studies.multi_gap_registry` states the model), runs
``diagnose`` and prints the wall time. Target: under 15 s on a 2-core
machine; the brief's limit is one minute. Run:

    .venv/bin/python bench/bench_diagnose.py [--seed 1] [--patients 20000] [--sites 500]
"""

from __future__ import annotations

import argparse
import time

from hmlib.simulate.studies import multi_gap_registry
from hmlib.steps.diagnose import diagnose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--sites", type=int, default=500)
    args = parser.parse_args()
    frame = multi_gap_registry(args.seed, args.patients, args.sites)
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
