"""The joint model's categorical submodels with random slopes beside brms: agreement and speed in one run (#16).

On ``tests/results/random_slopes_categorical_joint.csv`` (996 visits of 150
patients; ``x`` low / mid / high recorded in every row, so that its
submodel's posterior does not depend on the outcome's), for the nominal
(baseline-category logit, one block of correlated intercepts and slopes
across the non-reference levels, brms's ``(1 + t |p| patient)``; a block per
level before 2026-12-07) and the ordinal (cumulative logit, one block)
submodel with ``random_slopes=["t"]``:

- hmlib: the joint model's submodel (:func:`submodel_posterior`; nutpie, 2
  chains, 1,000 warm-up iterations and 2,000 draws), compilation and
  sampling timed apart;
- brms: ``tests/results/brms_random_slopes_categorical_joint.R`` (rstan, 2
  chains on 2 cores, 1,000 warm-up and 2,000 draws, the same priors), its
  sampling time from rstan's ``get_elapsed_time`` (the slower chain) and its
  whole time with compilation.

Per parameter: posterior means and their difference in combined Monte Carlo
SEs, and bulk ESS per second of sampling; the ratio hmlib / brms of ESS/s
(per parameter and the smallest), and of whole wall time (compilation
included). JOINT-BRMS-RS-005 in ``tests/test_joint_random_slopes.py`` checks
the agreement against the stored brms results with the same function.

Usage (nothing else running; about 6 minutes)::

    .venv/bin/python bench/joint_categorical_slopes_speed.py --out bench/results/joint_categorical_slopes_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hmlib.stats import joint as jm  # noqa: E402
from hmlib.stats.joint.data import CategoricalPredictor  # noqa: E402

DATA = ROOT / "tests" / "results" / "random_slopes_categorical_joint.csv"
R_SCRIPT = ROOT / "tests" / "results" / "brms_random_slopes_categorical_joint.R"
#: The levels of ``x``, reference (and lowest) first.
LEVELS = ("low", "mid", "high")


def submodel_posterior(frame: pd.DataFrame, ordinal: bool, *, seed: int = 1, draws: int = 2000,
                       tune: int = 1000) -> dict:
    """hmlib's categorical submodel of ``x`` with random slopes on ``t``, fitted where ``x`` is recorded.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``patient``, ``t``, ``treat``, ``x`` (levels :data:`LEVELS`, recorded in every row), ``y``.
    ordinal : bool
        Cumulative logit (True) or baseline-category logit.
    seed, draws, tune : int
        nutpie's seed, draws and warm-up iterations per chain (2 chains).

    Returns
    -------
    dict
        ``parameters``: ``{brms name: {"mean", "sd", "mcse_mean", "ess_bulk"}}``; ``compile_seconds``,
        ``sampling_seconds``.
    """
    base = jm.prepare_joint_data(frame, outcome="y", predictors=["t", "treat"], cluster="patient",
                                 family="gaussian", missingness_model=False, random_slopes=["t"])
    codes = frame["x"].map({level: i for i, level in enumerate(LEVELS)}).to_numpy(dtype=float)
    x = CategoricalPredictor("x", LEVELS, tuple(f"x[{level}]" for level in LEVELS[1:]), codes,
                             np.ones(len(frame), bool), ordinal, np.arange(len(LEVELS)) if ordinal else None)
    data = dataclasses.replace(base, categoricals=(x,), term_order=(*base.term_order, *x.terms))
    post, compile_seconds, sampling_seconds = sample_model(data, seed=seed, draws=draws, tune=tune)
    if ordinal:
        named = {"b_Intercept[1]": post["c0_cutpoints"][..., 0], "b_Intercept[2]": post["c0_cutpoints"][..., 1],
                 "b_t_z": post["c0_coef"][..., 0], "b_treat_z": post["c0_coef"][..., 1],
                 "sd_patient__Intercept": post["c0_cluster_sd"],
                 "sd_patient__t_z": post["c0_slopes_cluster_sd"][..., 0],
                 "cor_patient__Intercept__t_z": post["c0_cluster_corr"][..., 0, 1]}
    else:
        named = {}
        for j, level in enumerate(LEVELS[1:]):
            mu = f"mu{level}"
            named |= {f"b_{mu}_Intercept": post["c0_intercept"][..., j], f"b_{mu}_t_z": post["c0_coef"][..., 0, j],
                      f"b_{mu}_treat_z": post["c0_coef"][..., 1, j],
                      f"sd_patient__{mu}_Intercept": post["c0_cluster_sd"][..., j],
                      f"sd_patient__{mu}_t_z": post["c0_slopes_cluster_sd"][..., j, 0],
                      f"cor_patient__{mu}_Intercept__{mu}_t_z": post["c0_levels_cluster_corr"][..., 2 * j, 2 * j + 1]}
        # the levels' effects share one block (level-major: mid's intercept and slope, then high's)
        named["cor_patient__mumid_Intercept__muhigh_Intercept"] = post["c0_levels_cluster_corr"][..., 0, 2]
        named["cor_patient__mumid_t_z__muhigh_t_z"] = post["c0_levels_cluster_corr"][..., 1, 3]
    return {"parameters": summarise_draws(named), "compile_seconds": compile_seconds,
            "sampling_seconds": sampling_seconds}


def sample_model(data, *, seed: int = 1, draws: int = 2000, tune: int = 1000) -> tuple:
    """The joint model of ``data`` sampled by nutpie (2 chains): ``(posterior arrays by name, compile seconds,
    sampling seconds)``."""
    import nutpie

    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(jm.build_joint_model(data))
    compiled_at = time.perf_counter()
    trace = nutpie.sample(compiled, draws=draws, tune=tune, chains=2, seed=seed, progress_bar=False)
    sampled_at = time.perf_counter()
    post = {name: trace.posterior[name].values for name in trace.posterior.data_vars}
    return post, compiled_at - start, sampled_at - compiled_at


def summarise_draws(named: dict) -> dict:
    """Per name (draws shaped chain x draw): posterior mean, SD, MC SE of the mean and bulk ESS."""
    import arviz as az

    out = {}
    for name, values in named.items():
        dataset = az.convert_to_dataset(values)
        out[name] = {"mean": float(values.mean()), "sd": float(values.std()),
                     "mcse_mean": float(az.mcse(dataset)["x"]), "ess_bulk": float(az.ess(dataset)["x"])}
    return out


def brms_posterior(kind: str, iterations: int = 3000) -> dict:
    """brms's fit by the R script (``kind``: nominal or ordinal), read from the JSON it writes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "brms.json"
        subprocess.run(["Rscript", str(R_SCRIPT), kind, str(DATA), str(out), str(iterations)], check=True,
                       capture_output=True, text=True, cwd=R_SCRIPT.parent)
        return json.loads(out.read_text())


def compare(ours: dict, theirs: dict) -> dict:
    """Per parameter: means, their difference in combined MC SEs, ESS/s of each and the ratio hmlib / brms."""
    rows = {}
    for name, p in ours["parameters"].items():
        q = theirs["parameters"][name]
        ess_ours = p["ess_bulk"] / ours["sampling_seconds"]
        ess_theirs = q["ess_bulk"] / theirs["sampling_seconds"]
        rows[name] = {"hmlib": round(p["mean"], 4), "brms": round(q["mean"], 4),
                      "z": round((p["mean"] - q["mean"]) / float(np.hypot(p["mcse_mean"], q["mcse_mean"])), 2),
                      "sd_ratio": round(p["sd"] / q["sd"], 3), "ess_per_s_hmlib": round(ess_ours, 1),
                      "ess_per_s_brms": round(ess_theirs, 1), "ratio": round(ess_ours / ess_theirs, 2)}
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    if not shutil.which("Rscript"):
        print("Rscript not found: install R with brms (Debian: r-cran-brms libboost-dev) for the brms side")
        return 1
    frame = pd.read_csv(DATA)
    results = {}
    for kind in ("nominal", "ordinal"):
        ours = submodel_posterior(frame, kind == "ordinal")
        theirs = brms_posterior(kind)
        rows = compare(ours, theirs)
        whole = (theirs["seconds"]) / (ours["compile_seconds"] + ours["sampling_seconds"])
        results[kind] = {"parameters": rows,
                         "hmlib_seconds": {"compile": round(ours["compile_seconds"], 1),
                                           "sampling": round(ours["sampling_seconds"], 1)},
                         "brms_seconds": {"whole": round(theirs["seconds"], 1),
                                          "sampling": round(theirs["sampling_seconds"], 1)},
                         "brms_divergences": theirs["divergences"],
                         "smallest_ess_ratio": min(r["ratio"] for r in rows.values()),
                         "max_abs_z": max(abs(r["z"]) for r in rows.values()),
                         "whole_time_ratio_brms_over_hmlib": round(whole, 2)}
        r = results[kind]
        print(f"{kind}: hmlib {r['hmlib_seconds']}, brms {r['brms_seconds']}; ESS/s ratio (hmlib/brms) smallest "
              f"{r['smallest_ess_ratio']}, max |z| {r['max_abs_z']}, whole time brms/hmlib {r['whole_time_ratio_brms_over_hmlib']}",
              flush=True)
        for name, row in rows.items():
            print(f"  {name:42s} {row}")
    if args.out:
        args.out.write_text(json.dumps({"data": DATA.name, "draws": 2000, "tune": 1000, "chains": 2,
                                        "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
