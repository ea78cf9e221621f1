"""Does the demo registry show what the report is about, whatever the seed?

Simulates :func:`hmlib.simulate.demo.simulate_registry` over many seeds and checks,
for each seed:

(a) complete-case analysis loses at least one whole site;
(b) complete-case 30-day mortality differs from overall mortality by at least
    1.5 percentage points (and the sign of the difference);
(c) overall mortality is within 8-12 %;
(d) at least one site has fewer than 15 patients;
(e) flat and multilevel imputation visibly differ on the lactate
    coefficient: ``|multilevel - flat|`` exceeds half the multilevel pooled
    standard error in at least :data:`REQUIRED_SHARE_E` of the seeds, and the
    multilevel estimate is closer to the truth on average (mean bias over
    seeds; the rate of exceeding the whole SE is reported too);
(e2) the site levels of the flat imputations are further from the true site
    lactate offsets than those of the multilevel imputations (RMS over sites,
    :func:`site_offset_error`);
(f) the analysis model itself is unbiased for the lactate coefficient on the
    complete data (``truth["complete_data_terms"]``): mean bias over seeds
    below :data:`MAX_COMPLETE_DATA_BIAS`, so that (e) measures what the
    imputation does, not a flaw of the random-intercept model.

Imputation is hmlib's own engine, with the roles of
:data:`hmlib.simulate.demo.DEMO_PARAMS_YAML` (``site_type`` as cluster covariate):
:func:`hmlib.stats.imputation.impute` (``method="flat"`` or ``"multilevel"``,
normal draws, ``m`` chains of ``iterations`` iterations, the same seed for
both methods) and :func:`hmlib.stats.pooling.analyse_imputations` (Rubin's rules).
Complete cases and complete data are fitted by
:func:`hmlib.stats.design.fit_analysis_model`.

The rates and the numbers behind them are printed and written to
``bench/results/demo_design.json``; the exit status is 1 when a condition
fails. What to expect (200 seeds, see the JSON): (a)-(d), (e2) and (f) hold;
(e) does not. The flat estimate is attenuated on average (the site offsets,
which flat imputation cannot place, are largest in the sites that miss most
lactate) and the multilevel one is about unbiased, but the paired
difference varies between registries with an SD comparable to its mean, so
it exceeds half a standard error in only about half of the seeds.
Mechanisms that make the difference larger without unrealistic lactate
(a site offset correlated with the site's mortality effect) also bias the
random-intercept model on the complete data, violating (f).

Run ``.venv/bin/python bench/demo_design.py --seeds 200``; prints a table and
writes ``bench/results/demo_design.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(REPO))

from hmlib.simulate.demo import (DEMO_PARAMS_YAML, GENERATOR_VERSION,  # noqa: E402
                        simulate_registry)
from hmlib.stats.design import fit_analysis_model  # noqa: E402
from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.pooling import analyse_imputations  # noqa: E402

#: Thresholds of the design conditions.
MIN_CC_MORTALITY_GAP = 0.015
MORTALITY_RANGE = (0.08, 0.12)
SMALL_SITE = 15
#: Share of seeds each condition must hold in.
REQUIRED_SHARE = 0.95
#: Share of seeds in which flat and multilevel must differ visibly (e).
REQUIRED_SHARE_E = 0.80
#: Largest acceptable mean bias of the complete-data lactate coefficient (f).
MAX_COMPLETE_DATA_BIAS = 0.02


def site_conditions(data: pd.DataFrame) -> dict:
    """Conditions (a)-(d) for one simulated registry.

    Parameters
    ----------
    data : pandas.DataFrame
        A registry as returned by :func:`hmlib.simulate.demo.simulate_registry`.

    Returns
    -------
    dict
        ``sites_lost_cc`` (sites with no complete case), ``mortality``,
        ``cc_mortality``, ``cc_gap`` (complete-case minus overall, in
        proportion), ``smallest_site``, ``n_sites_below_15``,
        ``lactate_missing``, ``n_sites_over_90pct_missing_not_lost`` and the
        booleans ``a`` .. ``d``.
    """
    model_cols = ["age", "sex", "severity", "lactate", "sbp", "mortality_30d"]
    complete = data[model_cols].notna().all(axis=1)
    sizes = data.groupby("site").size()
    cc_sites = data.loc[complete, "site"].nunique()
    site_missing = data["lactate"].isna().groupby(data["site"]).mean()
    mortality = float(data["mortality_30d"].mean())
    cc_mortality = float(data.loc[complete, "mortality_30d"].mean())
    sites_lost = int(sizes.size - cc_sites)
    gap = cc_mortality - mortality
    return {
        "sites_lost_cc": sites_lost,
        "mortality": mortality,
        "cc_mortality": cc_mortality,
        "cc_gap": gap,
        "smallest_site": int(sizes.min()),
        "n_sites_below_15": int((sizes < SMALL_SITE).sum()),
        "lactate_missing": float(data["lactate"].isna().mean()),
        "n_sites_over_90pct_missing_not_lost": int(((site_missing > 0.9)
                                                    & (site_missing < 1)).sum()),
        "a": sites_lost >= 1,
        "b": abs(gap) >= MIN_CC_MORTALITY_GAP,
        "c": MORTALITY_RANGE[0] <= mortality <= MORTALITY_RANGE[1],
        "d": bool((sizes < SMALL_SITE).any()),
    }


# --- imputation (hmlib's own engine) -------------------------------------------

def demo_roles() -> dict:
    """Roles of the demo's analysis, read from :data:`hmlib.simulate.demo.DEMO_PARAMS_YAML`."""
    params = yaml.safe_load(DEMO_PARAMS_YAML)
    return {"cluster": params["cluster"], "outcome": params["outcome"],
            "family": params["outcome_family"], "predictors": list(params["predictors"]),
            "cluster_covariates": list(params.get("cluster_covariates", [])),
            "levels": {"sex": ["female", "male"]}}


def impute_demo(data: pd.DataFrame, seed: int, *, method: str, m: int = 5,
                iterations: int = 5):
    """:func:`hmlib.stats.imputation.impute` with the demo's roles (normal draws)."""
    roles = demo_roles()
    return impute(data, method=method, cluster=roles["cluster"], outcome=roles["outcome"],
                  outcome_family=roles["family"], predictors=roles["predictors"],
                  levels=roles["levels"], cluster_covariates=roles["cluster_covariates"],
                  m=m, iterations=iterations, seed=seed, continuous="norm")


def completed_lactate(result) -> list[np.ndarray]:
    """The ``m`` completed lactate columns of an imputation result."""
    return [frame["lactate"].to_numpy(dtype=float) for frame in result.completed]


def site_offset_error(data: pd.DataFrame, completed: list[np.ndarray], truth: dict) -> float:
    """RMS error of the site lactate levels that the imputed values imply.

    For each site with at least 3 imputed values (and observed sbp), the
    imputed values minus the true lactate model's patient-level part
    (``truth["lactate_model"]``), averaged over the site's imputed rows and
    the ``m`` imputations, estimate the site's offset; the function returns
    the root mean square, over those sites, of (that estimate minus the true
    offset ``per_site.lactate_site_offset``), both centred over the sites so
    that a common shift does not count. Flat imputation, which gives every
    site the same level, scores about the SD of the true offsets.
    """
    lm = truth["lactate_model"]
    missing = data["lactate"].isna().to_numpy() & data["sbp"].notna().to_numpy()
    patient_part = (lm["intercept"] + lm["severity"] * data["severity"].to_numpy(dtype=float)
                    + lm["age"] * data["age"].to_numpy(dtype=float)
                    + lm["sbp"] * data["sbp"].to_numpy(dtype=float))
    residual = np.mean([values - patient_part for values in completed], axis=0)
    frame = pd.DataFrame({"site": data["site"].to_numpy()[missing],
                          "residual": residual[missing]})
    by_site = frame.groupby("site")["residual"].agg(["mean", "size"])
    by_site = by_site[by_site["size"] >= 3]
    offsets = {row["site"]: row["lactate_site_offset"] for row in truth["per_site"]}
    true = np.array([offsets[site] for site in by_site.index])
    implied = by_site["mean"].to_numpy()
    error = (implied - implied.mean()) - (true - true.mean())
    return float(np.sqrt(np.mean(error**2)))


def imputation_contrast(data: pd.DataFrame, truth: dict, seed: int, *, m: int = 5,
                        iterations: int = 5) -> dict:
    """Flat versus multilevel imputation of the registry (and complete cases).

    Parameters
    ----------
    data : pandas.DataFrame
        A demo registry.
    truth : dict
        Its truth (for the site offsets, see :func:`site_offset_error`).
    seed : int
        Seed of the imputations (the same for both methods).
    m, iterations : int
        Imputations (chains) and chained-equations iterations per method.

    Returns
    -------
    dict
        ``cc``, ``flat``, ``multilevel``: lactate coefficients (pooled by
        Rubin's rules for the imputations) and ``<method>_se`` their
        standard errors; ``<method>_sd_site``: estimated site SD;
        ``flat_site_error``, ``multilevel_site_error``: see
        :func:`site_offset_error`.
    """
    roles = demo_roles()
    model = {"outcome": roles["outcome"], "predictors": roles["predictors"],
             "cluster": roles["cluster"], "family": roles["family"], "levels": roles["levels"]}
    cc = fit_analysis_model(data, **model)
    k = list(cc.term_names).index("lactate")
    out = {"cc": float(cc.coef[k]), "cc_se": float(cc.std_error[k]),
           "cc_sd_site": float(cc.cluster_sd)}
    for name in ("flat", "multilevel"):
        result = impute_demo(data, seed, method=name, m=m, iterations=iterations)
        pooled = analyse_imputations(result, **model)
        out[name] = pooled.term("lactate")["estimate"]
        out[f"{name}_se"] = pooled.term("lactate")["std_error"]
        out[f"{name}_sd_site"] = pooled.term(f"sd({roles['cluster']})")["estimate"]
        out[f"{name}_site_error"] = site_offset_error(data, completed_lactate(result), truth)
    return out


def run(seeds, *, m: int = 5, iterations: int = 5, with_imputation: bool = True) -> pd.DataFrame:
    """One row per seed: conditions (a)-(d) and, optionally, the imputation contrast.

    ``complete_data`` is the lactate coefficient the same registry gives
    before values go missing (``truth["complete_data_terms"]``);
    ``ml_minus_flat`` the paired difference; ``e_half`` / ``e_full``:
    ``|ml_minus_flat|`` exceeds half / all of the multilevel standard error;
    ``e2``: the site levels implied by the flat imputations are further from
    the true site offsets (RMS) than the multilevel ones.
    """
    rows = []
    for seed in seeds:
        demo = simulate_registry(seed=int(seed))
        row = {"seed": int(seed), **site_conditions(demo.data)}
        if with_imputation:
            row.update(imputation_contrast(demo.data, demo.truth, seed=int(seed) + 1, m=m,
                                           iterations=iterations))
            row["complete_data"] = demo.truth["complete_data_terms"]["lactate"]
            row["truth_lactate"] = demo.truth["terms"]["lactate"]
            row["ml_minus_flat"] = row["multilevel"] - row["flat"]
            row["e_half"] = abs(row["ml_minus_flat"]) > 0.5 * row["multilevel_se"]
            row["e_full"] = abs(row["ml_minus_flat"]) > row["multilevel_se"]
            row["e2"] = row["flat_site_error"] > row["multilevel_site_error"]
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> dict:
    """Rates of the conditions over seeds, the numbers behind them and pass flags."""
    out = {
        "n_seeds": int(len(table)),
        "rate_a_cc_loses_a_site": float(table["a"].mean()),
        "rate_b_cc_mortality_gap": float(table["b"].mean()),
        "rate_c_mortality_8_12pct": float(table["c"].mean()),
        "rate_d_site_under_15": float(table["d"].mean()),
        "sites_lost_cc_min_max": [int(table["sites_lost_cc"].min()),
                                  int(table["sites_lost_cc"].max())],
        "cc_gap_mean": float(table["cc_gap"].mean()),
        "cc_gap_min_max": [float(table["cc_gap"].min()), float(table["cc_gap"].max())],
        "cc_gap_share_negative": float((table["cc_gap"] < 0).mean()),
        "mortality_min_max": [float(table["mortality"].min()),
                              float(table["mortality"].max())],
        "lactate_missing_mean": float(table["lactate_missing"].mean()),
        "seeds_with_nonstructural_site_over_90pct_missing":
            int((table["n_sites_over_90pct_missing_not_lost"] > 0).sum()),
    }
    passed = {"a": out["rate_a_cc_loses_a_site"] >= REQUIRED_SHARE,
              "b": out["rate_b_cc_mortality_gap"] >= REQUIRED_SHARE,
              "c": out["rate_c_mortality_8_12pct"] >= REQUIRED_SHARE,
              "d": out["rate_d_site_under_15"] >= REQUIRED_SHARE}
    if "ml_minus_flat" in table:
        truth = table["truth_lactate"]
        methods = ("complete_data", "cc", "flat", "multilevel")
        diff = table["ml_minus_flat"]
        bias = {k: float((table[k] - truth).mean()) for k in methods}
        n = len(table)
        out.update({
            "fitter": "hmlib.stats.design.fit_analysis_model (random intercept, Laplace)",
            "imputation": "hmlib.stats.imputation.impute(continuous='norm'), "
                          "hmlib.stats.pooling.analyse_imputations",
            "lactate_truth": float(truth.iloc[0]),
            "lactate_mean": {k: float(table[k].mean()) for k in methods},
            "lactate_mean_bias": bias,
            "lactate_mean_bias_se": {k: float(table[k].std(ddof=1) / np.sqrt(n)) for k in methods},
            "lactate_sd": {k: float(table[k].std(ddof=1)) for k in methods},
            "lactate_rmse": {k: float(np.sqrt(((table[k] - truth) ** 2).mean())) for k in methods},
            "lactate_se_mean": {k: float(table[f"{k}_se"].mean())
                                for k in ("cc", "flat", "multilevel")},
            "mean_multilevel_minus_flat": float(diff.mean()),
            "se_mean_multilevel_minus_flat": float(diff.std(ddof=1) / np.sqrt(n)),
            "sd_multilevel_minus_flat": float(diff.std(ddof=1)),
            "share_flat_below_multilevel": float((diff > 0).mean()),
            "rate_e_abs_diff_over_half_ml_se": float(table["e_half"].mean()),
            "rate_e_abs_diff_over_ml_se": float(table["e_full"].mean()),
            "rate_e_diff_over_half_ml_se_expected_sign":
                float((diff > 0.5 * table["multilevel_se"]).mean()),
            "rate_multilevel_closer_to_truth_per_seed":
                float(((table["multilevel"] - truth).abs() < (table["flat"] - truth).abs()).mean()),
            "sd_site_mean": {k: float(table[f"{k}_sd_site"].mean())
                             for k in ("cc", "flat", "multilevel")},
            "rate_e2_flat_site_levels_further": float(table["e2"].mean()),
            "site_offset_rms_error_mean": {k: float(table[f"{k}_site_error"].mean())
                                           for k in ("flat", "multilevel")},
        })
        passed["e"] = (out["rate_e_abs_diff_over_half_ml_se"] >= REQUIRED_SHARE_E
                       and abs(bias["multilevel"]) < abs(bias["flat"]))
        passed["e2"] = out["rate_e2_flat_site_levels_further"] >= REQUIRED_SHARE
        passed["f_complete_data_unbiased"] = abs(bias["complete_data"]) < MAX_COMPLETE_DATA_BIAS
    out["passed"] = passed
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="number of seeds (1..N)")
    parser.add_argument("--m", type=int, default=5, help="imputations per method")
    parser.add_argument("--iterations", type=int, default=5, help="chained-equations iterations")
    parser.add_argument("--no-imputation", action="store_true", help="check (a)-(d) only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_design.json")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    table = run(range(1, args.seeds + 1), m=args.m, iterations=args.iterations,
                with_imputation=not args.no_imputation)
    seconds = time.perf_counter() - start
    summary = summarise(table)
    summary.update({"m": args.m, "iterations": args.iterations, "seconds": round(seconds, 1),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "generator_version": GENERATOR_VERSION})

    with pd.option_context("display.width", 180, "display.max_columns", 30):
        cols = [c for c in ["seed", "sites_lost_cc", "mortality", "cc_gap", "smallest_site",
                            "lactate_missing", "complete_data", "cc", "flat", "multilevel",
                            "multilevel_se", "flat_site_error", "multilevel_site_error",
                            "a", "b", "c", "d", "e_half", "e2"] if c in table]
        print(table[cols].round(3).to_string(index=False))
    print()
    for key, value in summary.items():
        print(f"{key:52s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary,
                                    "per_seed": table.to_dict(orient="records")},
                                   indent=2, default=float) + "\n")
    print(f"\nwritten {args.out}")
    return 0 if all(summary["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
