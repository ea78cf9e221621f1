"""The joint Bayesian model against brms, and its speed.

Three parts, each printing a table:

``agreement``
    ``outcome ~ age + severity + lactate + (1|site)`` (binomial) with the
    submodel ``lactate ~ age + severity + (1|site)`` (normal, as brms's
    default) on ``tests/results/sim_registry.csv``, no missingness submodel:
    the model brms fitted with ``mi()`` (``bench/brms_joint.R``; R is not
    installed here, the reference numbers are those stored in
    ``tests/results/r_methods_sim_registry.json``). Runs several seeds with
    hmlib's default priors and with brms-like priors (Half-Student-t(3, 0,
    2.5) on the SDs, near-flat Normal(0, 100) on coefficients and
    intercepts), and compares the posterior means of the lactate coefficient
    and of the site SD with brms's. The Monte Carlo error of a difference is
    ``sqrt(sd_a^2 / ess_a + sd_b^2 / ess_b)`` (posterior SD over bulk ESS of
    each run); the tolerance is 3 of those.
``speed``
    Effective samples per second (bulk ESS over wall seconds of model
    building, compiling and sampling) of the lactate coefficient and the site
    SD, for the default configuration (missing lactate integrated out, low-rank
    mass matrix), for brms's approach in PyMC (latent missing values,
    diagonal mass matrix) and for centred / non-centred cluster intercepts;
    brms's stored reference reached 545 / 539 bulk ESS in 56 s compile + 131 s
    sampling, about 2.9 ESS/s. With ``--brms`` the brms model
    (``bench/brms_joint.R``) is first run here, in the same run and on the same
    machine, and the ratios are against that run. Also shows process CPU
    seconds (the machine is shared, so wall times are noisy: compare ratios
    and repeat).
``large``
    20,000 patients in 500 sites from ``bench/joint_truth.py``'s generator,
    default settings (2 chains x 1000 + 1000, missingness submodel on): wall
    time and the convergence gate.

Usage::

    .venv/bin/python bench/bench_joint.py                    # all three
    .venv/bin/python bench/bench_joint.py --parts agreement --seeds 6
    .venv/bin/python bench/bench_joint.py --parts speed --repeat 2 --out bench_joint.json
    .venv/bin/python bench/bench_joint.py --parts speed --brms   # brms side by side (needs R + brms)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hmlib.stats.joint import fit_joint_model  # noqa: E402
from joint_truth import simulate  # noqa: E402

REFERENCE = ROOT / "tests" / "results"
BRMS_PRIORS = {"cluster_sd": ("halfstudentt", 3.0, 2.5), "residual_sd": ("halfstudentt", 3.0, 2.5),
               "coef": ("normal", 100.0), "intercept": ("normal", 100.0)}
MODEL = dict(outcome="outcome", predictors=["age", "severity", "lactate"], cluster="site", family="binomial")


def brms_reference() -> dict:
    """brms's numbers from ``tests/results/r_methods_sim_registry.json``."""
    entry = json.loads((REFERENCE / "r_methods_sim_registry.json").read_text())["methods"]["brms_joint"]
    lac, sd = entry["lactate"], entry["site_sd_posterior"]
    return {"lactate": {"mean": lac["estimate"], "sd": lac["se"], "ess": lac["ess_bulk"]},
            "sd(site)": {"mean": sd["mean"], "sd": sd["sd"], "ess": sd["ess_bulk"]},
            "compile_s": entry["compile_s"], "sampling_s": entry["sampling_s"]}


def brms_here() -> dict:
    """Run ``bench/brms_joint.R`` on this machine now; same fields as :func:`brms_reference`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "brms_joint.json"
        start = time.perf_counter()
        subprocess.run(["Rscript", str(ROOT / "bench" / "brms_joint.R"), str(REFERENCE / "sim_registry.csv"),
                        str(out)], check=True)
        wall = time.perf_counter() - start
        entry = json.loads(out.read_text())
    lac, sd = entry["lactate"], entry["site_sd_posterior"]
    print(f"  brms here: compile {entry['compile_s']:.0f} s + sampling {entry['sampling_s']:.0f} s "
          f"(Rscript wall {wall:.0f} s); bulk ESS lactate {lac['ess_bulk']:.0f}, sd(site) {sd['ess_bulk']:.0f}; "
          f"lactate {lac['estimate']:.4f}, sd(site) {sd['mean']:.4f}", flush=True)
    return {"lactate": {"mean": lac["estimate"], "sd": lac["se"], "ess": lac["ess_bulk"]},
            "sd(site)": {"mean": sd["mean"], "sd": sd["sd"], "ess": sd["ess_bulk"]},
            "compile_s": entry["compile_s"], "sampling_s": entry["sampling_s"], "measured_here": True}


def registry() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "sim_registry.csv")


def _row(label: str, result) -> dict:
    s = result.summary.set_index("term")
    t = result.timing
    return {
        "run": label, "lactate": s.loc["lactate", "estimate"], "lactate_sd": s.loc["lactate", "std_error"],
        "lactate_ess": s.loc["lactate", "ess_bulk"], "sd_site": s.loc["sd(site)", "estimate"],
        "sd_site_sd": s.loc["sd(site)", "std_error"], "sd_site_ess": s.loc["sd(site)", "ess_bulk"],
        "converged": result.converged, "build_s": t["build_s"], "compile_s": t["compile_s"],
        "sampling_s": t["sampling_s"], "cpu_s": t["cpu_s"],
        "ess_s_lactate": result.ess_per_second.get("focus"), "ess_s_sd": result.ess_per_second["cluster_sd"],
        "adaptation": result.settings["adaptation"], "nodes": result.settings["quadrature_nodes"],
        "parameterisation": result.settings["parameterisation"].get("outcome"),
    }


def agreement(seeds: int = 4) -> pd.DataFrame:
    """Posterior means against brms, several seeds, default and brms-like priors."""
    ref = brms_reference()
    data = registry()
    rows = []
    for prior_label, priors in (("default priors", None), ("brms-like priors", BRMS_PRIORS)):
        for seed in range(1, seeds + 1):
            result = fit_joint_model(data, **MODEL, seed=seed, missingness_model=False, priors=priors,
                                     distributions={"lactate": "normal"})
            rows.append({"priors": prior_label, "seed": seed, **_row(f"{prior_label}, seed {seed}", result)})
            print(f"  {prior_label}, seed {seed}: lactate {rows[-1]['lactate']:.4f} "
                  f"(ESS {rows[-1]['lactate_ess']:.0f}), sd(site) {rows[-1]['sd_site']:.4f} "
                  f"(ESS {rows[-1]['sd_site_ess']:.0f})", flush=True)
    table = pd.DataFrame(rows)
    print("\nAgreement with brms (posterior means; MC SE of a difference from both ESSs; tolerance 3 MC SE)")
    lines = []
    for prior_label, group in table.groupby("priors", sort=False):
        for term, mean_col, sd_col, ess_col in (("lactate", "lactate", "lactate_sd", "lactate_ess"),
                                                ("sd(site)", "sd_site", "sd_site_sd", "sd_site_ess")):
            b = ref[term]
            # pooled over seeds: mean of the runs, its MC SE from the runs' ESS (independent chains)
            ours = group[mean_col].mean()
            ours_mcse = np.sqrt(np.sum(group[sd_col] ** 2 / group[ess_col])) / len(group)
            brms_mcse = b["sd"] / np.sqrt(b["ess"])
            diff = ours - b["mean"]
            combined = np.sqrt(ours_mcse ** 2 + brms_mcse ** 2)
            single = np.sqrt((group[sd_col] ** 2 / group[ess_col]) + brms_mcse ** 2)
            single_z = (group[mean_col] - b["mean"]).abs() / single
            lines.append({"priors": prior_label, "term": term, "brms": b["mean"], "hmlib (mean of seeds)": ours,
                          "difference": diff, "mc_se": combined, "z": diff / combined,
                          "within 3 MC SE": abs(diff) <= 3 * combined,
                          "single runs within 3 MC SE": f"{int((single_z <= 3).sum())}/{len(group)}",
                          "hmlib posterior SD": group[sd_col].mean(), "brms posterior SD": b["sd"]})
    out = pd.DataFrame(lines)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return table


def speed(repeat: int = 1, run_brms: bool = False) -> tuple[pd.DataFrame, dict]:
    """ESS per second against brms's (stored, or measured now with ``run_brms``), several configurations."""
    ref = brms_here() if run_brms else brms_reference()
    brms_ess_s = {"lactate": ref["lactate"]["ess"] / (ref["compile_s"] + ref["sampling_s"]),
                  "sd": ref["sd(site)"]["ess"] / (ref["compile_s"] + ref["sampling_s"])}
    data = registry()
    configs = [
        ("default: integrated out, low-rank, rule", {}),
        ("integrated out, diagonal mass matrix", {"adaptation": "diag"}),
        ("integrated out, non-centred", {"parameterisation": {"outcome": "noncentred", "lactate": "noncentred"}}),
        ("latent (brms's way), diagonal, rule", {"missing_values": "latent"}),
        ("latent, diagonal, non-centred (brms's parameterisation)",
         {"missing_values": "latent", "parameterisation": {"outcome": "noncentred", "lactate": "noncentred"}}),
        ("default + missingness submodel", {"missingness_model": True}),
    ]
    rows = []
    for r in range(repeat):
        for label, options in configs:
            options = {"missingness_model": False, "distributions": {"lactate": "normal"}, **options}
            result = fit_joint_model(data, **MODEL, seed=100 + r, **options)
            rows.append(_row(label, result))
            print(f"  {label}: {rows[-1]['ess_s_lactate']:.1f} / {rows[-1]['ess_s_sd']:.1f} ESS/s", flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby("run", sort=False).agg(
        lactate_ess=("lactate_ess", "median"), sd_ess=("sd_site_ess", "median"),
        compile_s=("compile_s", "median"), sampling_s=("sampling_s", "median"), cpu_s=("cpu_s", "median"),
        ess_s_lactate=("ess_s_lactate", "median"), ess_s_sd=("ess_s_sd", "median"),
        converged=("converged", "all")).reset_index()
    summary["x brms (lactate)"] = summary["ess_s_lactate"] / brms_ess_s["lactate"]
    summary["x brms (sd)"] = summary["ess_s_sd"] / brms_ess_s["sd"]
    where = "measured in this run" if ref.get("measured_here") else "stored reference run"
    print(f"\nSpeed on sim_registry.csv (4,000 patients, 40 sites), 2 chains x (1000 + 1000); medians of "
          f"{repeat} run(s). brms ({where}): {brms_ess_s['lactate']:.2f} / {brms_ess_s['sd']:.2f} ESS/s (target 20x: "
          f"{20 * brms_ess_s['lactate']:.0f} / {20 * brms_ess_s['sd']:.0f})")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    return table, {"brms": ref, "brms_ess_per_s": brms_ess_s, "summary": summary.to_dict(orient="records")}


def large(n_patients: int = 20000, n_sites: int = 500, seed: int = 7) -> pd.DataFrame:
    """A registry of 20,000 patients in 500 sites, default settings."""
    data = simulate(seed, n_sites=n_sites, n_patients=n_patients)
    start = time.perf_counter()
    result = fit_joint_model(data, **MODEL, seed=seed)
    wall = time.perf_counter() - start
    row = _row(f"{len(data)} patients, {data['site'].nunique()} sites", result)
    row["wall_s"] = wall
    row["message"] = result.convergence_message
    table = pd.DataFrame([row])
    print(f"\nLarge registry: {len(data)} patients in {data['site'].nunique()} sites, "
          f"{int(data['lactate'].isna().sum())} lactate missing; wall {wall:.0f} s "
          f"(build {row['build_s']:.0f}, compile {row['compile_s']:.0f}, sampling {row['sampling_s']:.0f}; "
          f"CPU {row['cpu_s']:.0f} s); lactate {row['lactate']:.3f} (truth 0.35), sd(site) {row['sd_site']:.3f} "
          f"(truth 0.6); ESS/s {row['ess_s_lactate']:.1f} / {row['ess_s_sd']:.1f}; within 5 minutes: "
          f"{'yes' if wall <= 300 else 'NO'}")
    print(f"  parameterisation {result.settings['parameterisation']}, {result.settings['quadrature_nodes']} "
          f"nodes, {result.settings['adaptation']} adaptation")
    print("  " + result.convergence_message)
    print(result.summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["agreement", "speed", "large"],
                        choices=["agreement", "speed", "large"])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prior set in the agreement part")
    parser.add_argument("--repeat", type=int, default=1, help="repeats of each speed configuration")
    parser.add_argument("--brms", action="store_true", help="run brms here first (Rscript, brms, posterior)")
    parser.add_argument("--out", type=Path, help="write every run's row as JSON here")
    args = parser.parse_args(argv)
    tables = {}
    if "agreement" in args.parts:
        tables["agreement"] = agreement(args.seeds)
    if "speed" in args.parts:
        tables["speed"], speed_summary = speed(args.repeat, run_brms=args.brms)
    if "large" in args.parts:
        tables["large"] = large()
    if args.out:
        payload = {k: v.to_dict(orient="records") for k, v in tables.items()}
        if "speed" in args.parts:
            payload["speed_summary"] = speed_summary
        args.out.write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
