"""Time step 1 (diagnose) end to end on a large registry, as a user runs it.

Writes a synthetic registry of 20,000 patients in 500 sites (hmlib.simulate.demo's
generator), then times `hmreport run PARAMS --only diagnose` (papermill,
kernel start, the notebook, rendering) and, in the same run, the library
call alone, so the notebook overhead shows as a ratio.

Usage: .venv/bin/python bench/bench_step1.py [--patients 20000] [--sites 500]
Target (issue #2): under 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from hmlib.data import load_registry
from hmlib.simulate.demo import DEMO_PARAMS_YAML, simulate_registry
from hmlib.params import load_params
from hmlib.report.runner import run_report
from hmlib.steps.diagnose import diagnose_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--sites", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = simulate_registry(seed=7, n_patients=args.patients, n_sites=args.sites)
        (root / "data").mkdir()
        registry.data.to_csv(root / "data" / "big.csv", index=False)
        params = yaml.safe_load(DEMO_PARAMS_YAML)
        params.update(name="big", data="data/big.csv")
        params.pop("truth", None)
        (root / "big.yaml").write_text(yaml.safe_dump(params))

        t0 = time.perf_counter()
        diagnose_registry(load_registry(load_params(root / "big.yaml"))).to_artifact()
        library_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        run_report(root / "big.yaml", only="diagnose", reports_root=root / "reports")
        step_s = time.perf_counter() - t0
    result = {"patients": args.patients, "sites": args.sites, "library_seconds": round(library_s, 2),
              "step_seconds": round(step_s, 2), "step_over_library": round(step_s / library_s, 2),
              "target_seconds": 60}
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_step1.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
