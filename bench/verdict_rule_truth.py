"""Step 5's verdict rule against the relative rule it replaced, on registries with a known effect.

For each true effect (odds ratio per SD of calories: 1 = none, 1.3 = small,
2.5 = large) and each of ``--replications`` registries
(:func:`hmlib.simulate.registries.calorie_registry`, focus in kcal, so its
coefficient per kcal is tiny), the exclusion, leave-out and MNAR delta
(+/-0.5, +/-1 SD) scenarios are run once and judged twice: by the rule now in
use (clinically relevant difference: odds ratio 1.25 per SD, default) and by
the former rule (interval decision flips, sign change, or a move of at least
50% of the reference estimate). A registry is "not robust" when a
non-delta scenario, or a delta within the plausible +/-0.5 SD, changes the
conclusion. Writes ``bench/results/verdict_rule_truth.json``.

Run: ``.venv/bin/python bench/verdict_rule_truth.py [--replications 20]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.simulate.registries import calorie_registry
from hmlib.steps.sensitivity import run_sensitivity
from hmlib.steps.sensitivity_scenarios import SensitivitySettings

EFFECTS = {"null": 1.0, "small": 1.3, "large": 2.5}
SETTINGS = SensitivitySettings(families=("exclusion", "leave-out", "delta-global"), deltas_sd=(-1, -0.5, 0.5, 1),
                               n_influential=3, bisection_steps=0, m=5, iterations=5)


def old_rule(row, ref) -> bool:
    """The former rule: interval decision flips, sign change with both excluding 0, or a 50% relative move."""
    ref_ex = not ref.ci_lower <= 0 <= ref.ci_upper
    ex = not row.ci_lower <= 0 <= row.ci_upper
    if ref_ex != ex or (ex and np.sign(row.estimate) != np.sign(ref.estimate)):
        return True
    return ref.estimate != 0 and abs(row.estimate - ref.estimate) / abs(ref.estimate) >= 0.5


def counted(result) -> list:
    """Focus rows whose change would enter the verdict: every non-delta scenario, deltas within +/-0.5 SD."""
    g = result.grid.loc[(result.grid["term"] == result.focus) & (result.grid["status"] == "ok")]
    scenarios = result.scenarios.set_index("scenario")
    keep = [not str(r.family).startswith("delta") or abs(scenarios.loc[r.scenario, "delta_sd"]) <= 0.5
            for r in g.itertuples()]
    return g.loc[keep]


def one(folder: Path, odds_ratio: float, seed: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    calorie_registry(seed, odds_ratio_per_sd=odds_ratio).to_csv(folder / "registry.csv", index=False)
    (folder / "params.yaml").write_text(yaml.safe_dump({
        "name": "truth", "data": "registry.csv", "cluster": "site", "outcome": "y", "outcome_family": "binomial",
        "predictors": ["age", "calories"], "focus": "calories", "seed": seed, "fast": True}))
    result = run_sensitivity(load_registry(load_params(folder / "params.yaml")), SETTINGS, workers=1,
                             joint_fitter=None)
    ref = result.primary.set_index("term").loc[result.focus]
    rows = counted(result)
    moves = (rows["estimate"] - ref.estimate).abs()
    return {"seed": seed, "new_not_robust": bool(rows["changed_conclusion"].any()),
            "old_not_robust": bool(any(old_rule(r, ref) for r in rows.itertuples())),
            "max_relative_move": float((moves / abs(ref.estimate)).max()),
            "max_move_over_R": float(moves.max() / result.rule.focus_threshold),
            "primary_excludes_0": bool(not ref.ci_lower <= 0 <= ref.ci_upper)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=20)
    args = parser.parse_args()
    out, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, odds_ratio in EFFECTS.items():
            runs = [one(Path(tmp) / f"{name}{seed}", odds_ratio, seed) for seed in range(args.replications)]
            out[name] = {"odds_ratio_per_sd": odds_ratio,
                         "new_rule_not_robust": sum(r["new_not_robust"] for r in runs),
                         "old_rule_not_robust": sum(r["old_not_robust"] for r in runs),
                         "primary_excludes_0": sum(r["primary_excludes_0"] for r in runs),
                         "median_max_relative_move": float(np.median([r["max_relative_move"] for r in runs])),
                         "median_max_move_over_R": float(np.median([r["max_move_over_R"] for r in runs])),
                         "replications": args.replications, "runs": runs}
            print(f"{name:5s} OR {odds_ratio}: not robust by the new rule {out[name]['new_rule_not_robust']}/"
                  f"{args.replications}, by the old relative rule {out[name]['old_rule_not_robust']}/"
                  f"{args.replications}; median largest move {out[name]['median_max_relative_move']:.0%} of the "
                  f"estimate, {out[name]['median_max_move_over_R']:.2f} R")
    out["settings"] = {"families": list(SETTINGS.families), "deltas_sd": list(SETTINGS.deltas_sd), "m": SETTINGS.m,
                       "relevant_difference": "default: odds ratio 1.25 per SD", "seconds": time.perf_counter() - start}
    path = Path(__file__).with_name("results") / "verdict_rule_truth.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
