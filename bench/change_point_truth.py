"""The change-point screen of step 1 against the truth: false alarms without a pilot phase, power with one (#16).

Step 1 scans each variable's share missing per calendar month for one change
in rate (:func:`hmlib.stats.longitudinal.missingness_over_calendar_time`:
binomial likelihood-ratio scan, p-value by permuting whole patients in
calendar time; visits after dropout left out). Registries of
:func:`hmlib.simulate.longitudinal.longitudinal_registry` (``--patients``
patients in 12 sites, 6 visits three months apart, accrual over 24 months)
with a pilot phase of 6 months in which visits are missed more often
(``pilot_shift`` on the logit scale: 0, no pilot phase; 0.75; 1.5, the
simulator's default). Per setting over ``--reps`` registries, for the outcome
``y``: the share of registries with p < 0.05 (the false-alarm rate at shift
0, the power otherwise, with its Monte Carlo SE) and the share whose split
falls within one month of the true end of the pilot phase. Missed visits
also depend on the site (SD 0.7 on the logit scale), which does not change
over calendar time: the screen must not mistake it for a change.

Usage::

    nice -n 5 .venv/bin/python bench/change_point_truth.py [--reps 200] [--patients 400]
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

from hmlib.simulate.longitudinal import longitudinal_registry, longitudinal_registry_truth  # noqa: E402
from hmlib.stats.longitudinal import missingness_over_calendar_time  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "change_point_truth.json"
SHIFTS = (0.0, 0.75, 1.5)


def one(seed: int, shift: float, patients: int) -> dict:
    """One registry: the screen's p-value, and the distance (months) of its split from the pilot's end."""
    frame = longitudinal_registry(seed, n_sites=12, n_patients=patients, n_visits=6, pilot_shift=shift)
    res = missingness_over_calendar_time(frame, "y", "patient", "month", calendar="date", seed=seed)
    end = pd.Period(longitudinal_registry_truth(pilot_shift=shift)["pilot_end"], freq="M")
    before = res.last_period_before_change
    months = None if before is None else abs((pd.Period(str(before), freq="M") - end).n)
    return {"p_value": float(res.change_point.p_value), "months_from_pilot_end": months}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    out = {"reps": args.reps, "patients": args.patients, "alpha": 0.05, "settings": {}}
    for shift in SHIFTS:
        start = time.perf_counter()
        rows = [one(seed, shift, args.patients) for seed in range(args.reps)]
        p = np.array([r["p_value"] for r in rows])
        hit = p < 0.05
        near = np.array([r["months_from_pilot_end"] is not None and r["months_from_pilot_end"] <= 1 for r in rows])
        out["settings"][f"pilot_shift={shift:g}"] = {
            "share_p_below_0.05": float(hit.mean()), "mc_se": float(np.sqrt(hit.mean() * (1 - hit.mean()) / p.size)),
            "share_split_within_1_month_of_pilot_end": float(near.mean()),
            "share_split_within_1_month_when_p_below_0.05": float(near[hit].mean()) if hit.any() else None,
            "seconds_per_registry": (time.perf_counter() - start) / args.reps}
        print(shift, out["settings"][f"pilot_shift={shift:g}"], flush=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
