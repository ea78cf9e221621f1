"""Does the demo registry show what the report is about, whatever the seed?

Simulates :func:`hmlib.demo.simulate_registry` over many seeds and checks,
for each seed:

(a) complete-case analysis loses at least one whole site;
(b) complete-case 30-day mortality differs from overall mortality by at least
    1.5 percentage points (and the sign of the difference);
(c) overall mortality is within 8-12 %;
(d) at least one site has fewer than 15 patients;
(e) flat and multilevel imputation of lactate visibly differ: the flat
    estimate of the lactate coefficient is further from the truth;
(e2) the site levels of the flat imputations are further from the true site
    lactate offsets than those of the multilevel imputations (RMS over sites,
    :func:`site_offset_error`).

The rates over seeds are printed with the numbers behind them; the exit
status is 1 when any rate is below :data:`REQUIRED_SHARE`. What to expect:
(a)-(d) and (e2) hold for every seed. (e) does not, and cannot at this size:
on average the flat estimate is attenuated by about a tenth of the truth and
the multilevel one is unbiased, but the estimate's spread over seeds (SD
about 0.1 at 3,000 patients, 10 % mortality, 37 % of lactate missing) is
three times that difference. The flat model's outcome coefficient also picks
up the between-site association of lactate with mortality, which the site
offsets create through the same coefficient, so without a contextual effect
flat imputation distorts the within-site coefficient only through the
misplaced site levels (e2).

For (e) two simple stand-ins are implemented here, not in hmlib (the report's
own imputation methods live there and are checked by their own tests):

- ``flat``: Bayesian normal linear regression imputation (mice's ``norm``:
  coefficients and residual variance drawn from their posterior) of lactate
  (mmol/L; the demo's lactate is normal within site, so the raw scale is the
  compatible one) from age, sex, severity, sbp (mean-imputed) and the
  outcome, ignoring sites;
- ``multilevel``: the same plus site intercepts, estimated from the observed
  residuals by one-way ANOVA moments (``sigma2`` within, ``tau2`` between),
  each site's mean residual shrunk towards 0 by ``n / (n + sigma2 / tau2)``
  and drawn from its posterior ``N(shrunk mean, (1 - shrink) tau2)``; a site
  with no observed lactate gets a draw from ``N(0, tau2)``. Fixed effects
  and site intercepts are estimated alternately (three passes).

Each is run ``m`` times (default 5), the outcome model is fitted to each
completed data set (rows with sbp missing are left out, for both methods)
and the lactate coefficients are averaged (Rubin's point estimate). The
outcome model is the random-intercept logistic model of :mod:`hmlib.mixed`
when that module imports, else a logistic GLM with site fixed effects (sites
without deaths, which carry no information on within-site coefficients, are
left out of that fit).

Run ``.venv/bin/python bench/demo_design.py --seeds 200``; prints a table and
writes ``bench/results/demo_design.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(REPO))

from hmlib.demo import simulate_complete_data, simulate_registry  # noqa: E402

#: Thresholds of the design conditions.
MIN_CC_MORTALITY_GAP = 0.015
MORTALITY_RANGE = (0.08, 0.12)
SMALL_SITE = 15
#: Share of seeds each condition must hold in.
REQUIRED_SHARE = 0.95
TERMS = ["Intercept", "age", "sex[male]", "severity", "lactate", "sbp"]


def site_conditions(data: pd.DataFrame) -> dict:
    """Conditions (a)-(d) for one simulated registry.

    Parameters
    ----------
    data : pandas.DataFrame
        A registry as returned by :func:`hmlib.demo.simulate_registry`.

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


# --- imputation stand-ins ------------------------------------------------------

def _imputation_design(data: pd.DataFrame) -> np.ndarray:
    sbp = data["sbp"].to_numpy(dtype=float)
    sbp = np.where(np.isnan(sbp), np.nanmean(sbp), sbp)
    return np.column_stack([
        np.ones(len(data)),
        data["age"].to_numpy(dtype=float),
        (data["sex"] == "male").to_numpy(dtype=float),
        data["severity"].to_numpy(dtype=float),
        sbp,
        data["mortality_30d"].to_numpy(dtype=float),
    ])


def _draw_regression(X: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Posterior draw of (beta, sigma2) of a normal linear model, flat prior."""
    n, k = X.shape
    xtx_inv = np.linalg.inv(X.T @ X)
    beta_hat = xtx_inv @ X.T @ y
    resid = y - X @ beta_hat
    sigma2 = float(resid @ resid) / rng.chisquare(n - k)
    beta = rng.multivariate_normal(beta_hat, sigma2 * xtx_inv)
    return beta, sigma2


def _site_moments(resid: np.ndarray, site_codes: np.ndarray, n_sites: int):
    """One-way ANOVA moments: per-site n and mean, sigma2 within, tau2 between."""
    n = np.bincount(site_codes, minlength=n_sites).astype(float)
    sums = np.bincount(site_codes, weights=resid, minlength=n_sites)
    means = np.divide(sums, n, out=np.zeros(n_sites), where=n > 0)
    within = resid - means[site_codes]
    observed = n > 0
    sigma2 = float(within @ within) / max(1.0, n.sum() - observed.sum())
    spread = np.var(means[observed], ddof=1) if observed.sum() > 1 else 0.0
    tau2 = max(spread - np.mean(sigma2 / n[observed]), 1e-4)
    return n, means, sigma2, tau2


def impute_lactate(data: pd.DataFrame, seed: int, *, multilevel: bool,
                   m: int = 5) -> list[np.ndarray]:
    """``m`` imputed lactate vectors (observed values kept), flat or multilevel.

    Imputation ``k`` draws from ``numpy.random.default_rng([seed, k])`` in
    the same order for both methods (residual variance, coefficients, patient
    residuals, then the multilevel method's site intercepts), so flat and
    multilevel imputations made with the same ``seed`` share their random
    numbers and their difference is not blurred by independent noise.

    Parameters
    ----------
    data : pandas.DataFrame
        A demo registry.
    seed : int
        Seed of the imputations.
    multilevel : bool
        Add site intercepts (see the module docstring) or ignore sites.
    m : int, default 5
        Number of imputations.

    Returns
    -------
    list of numpy.ndarray
        Completed lactate columns, in mmol/L (imputed values are not
        truncated at the assay floor).
    """
    X = _imputation_design(data)
    lactate = data["lactate"].to_numpy(dtype=float)
    observed = ~np.isnan(lactate)
    y_obs = lactate[observed]
    site_codes, site_labels = pd.factorize(data["site"], sort=True)
    n_sites = len(site_labels)
    offsets = np.zeros(n_sites)
    if multilevel:
        # Alternate fixed effects and site means so that case mix that differs
        # by site (severity by site type) does not leak into the intercepts.
        for _ in range(3):
            fixed = np.linalg.lstsq(X[observed], y_obs - offsets[site_codes[observed]],
                                    rcond=None)[0]
            n_obs, means, sigma2, tau2 = _site_moments(
                y_obs - X[observed] @ fixed, site_codes[observed], n_sites)
            offsets = n_obs / (n_obs + sigma2 / tau2) * means
    completed = []
    for k in range(m):
        rng = np.random.default_rng([seed, k])
        beta, sigma2 = _draw_regression(X[observed], y_obs - offsets[site_codes[observed]], rng)
        noise = rng.normal(0.0, np.sqrt(sigma2), int((~observed).sum()))
        centre = X[~observed] @ beta
        if multilevel:
            n_obs, means, _, tau2 = _site_moments(
                y_obs - X[observed] @ beta, site_codes[observed], n_sites)
            shrink = n_obs / (n_obs + sigma2 / tau2)
            site_draw = rng.normal(shrink * means, np.sqrt((1.0 - shrink) * tau2))
            centre = centre + site_draw[site_codes[~observed]]
        values = lactate.copy()
        values[~observed] = centre + noise
        completed.append(values)
    return completed


# --- outcome model -------------------------------------------------------------

def _have_hmlib_mixed() -> bool:
    try:
        from hmlib.mixed import fit_random_intercept  # noqa: F401
    except ImportError:
        return False
    return True


def fit_outcome(data: pd.DataFrame, lactate: np.ndarray, *, use_mixed: bool) -> dict:
    """Fit the analysis model with this lactate column; return coefficients.

    Rows with any missing model value are left out.

    Parameters
    ----------
    data : pandas.DataFrame
        A demo registry.
    lactate : numpy.ndarray
        The lactate column to use (observed or completed).
    use_mixed : bool
        Random-intercept logistic model via :mod:`hmlib.mixed`, else a
        logistic GLM with site fixed effects.

    Returns
    -------
    dict
        Term name -> estimate (the fixed-effects fit has no ``Intercept``).
    """
    X = np.column_stack([
        np.ones(len(data)),
        data["age"].to_numpy(dtype=float),
        (data["sex"] == "male").to_numpy(dtype=float),
        data["severity"].to_numpy(dtype=float),
        lactate,
        data["sbp"].to_numpy(dtype=float),
    ])
    y = data["mortality_30d"].to_numpy(dtype=float)
    rows = ~np.isnan(X).any(axis=1)
    X, y, site = X[rows], y[rows], data["site"].to_numpy()[rows]
    if use_mixed:
        from hmlib.mixed import fit_random_intercept

        fit = fit_random_intercept(y, X, site, family="binomial", nagq=1,
                                   term_names=TERMS, cluster_name="site")
        return {**dict(zip(fit.term_names, map(float, fit.coef))),
                "sd(site)": float(fit.cluster_sd)}
    import statsmodels.api as sm

    deaths = pd.Series(y).groupby(site).transform("sum").to_numpy()
    keep = deaths > 0
    dummies = pd.get_dummies(pd.Series(site[keep]), dtype=float).to_numpy()
    design = np.column_stack([X[keep, 1:], dummies])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sm.GLM(y[keep], design, family=sm.families.Binomial()).fit()
    return dict(zip(TERMS[1:], map(float, result.params[: len(TERMS) - 1])))


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
                        use_mixed: bool | None = None) -> dict:
    """Flat versus multilevel imputation of lactate (and complete cases).

    Parameters
    ----------
    data : pandas.DataFrame
        A demo registry.
    truth : dict
        Its truth (for the site offsets, see :func:`site_offset_error`).
    seed : int
        Seed of the imputations (shared by both methods, see
        :func:`impute_lactate`).
    m : int, default 5
        Imputations per method.
    use_mixed : bool, optional
        Force the outcome fitter; default: :mod:`hmlib.mixed` if it imports.

    Returns
    -------
    dict
        ``cc``, ``flat``, ``multilevel``: pooled lactate coefficients;
        ``<method>_sd_site``: mean estimated site SD (random-intercept fits
        only); ``flat_site_error``, ``multilevel_site_error``: see
        :func:`site_offset_error`; ``fitter``.
    """
    if use_mixed is None:
        use_mixed = _have_hmlib_mixed()
    lactate = data["lactate"].to_numpy(dtype=float)
    cc = fit_outcome(data, lactate, use_mixed=use_mixed)
    out = {"cc": cc["lactate"], "cc_sd_site": cc.get("sd(site)", np.nan)}
    for name, multilevel in (("flat", False), ("multilevel", True)):
        completed = impute_lactate(data, seed, multilevel=multilevel, m=m)
        fits = [fit_outcome(data, values, use_mixed=use_mixed) for values in completed]
        out[name] = float(np.mean([f["lactate"] for f in fits]))
        out[f"{name}_sd_site"] = float(np.mean([f.get("sd(site)", np.nan) for f in fits]))
        out[f"{name}_site_error"] = site_offset_error(data, completed, truth)
    out["fitter"] = ("hmlib.mixed random intercept (Laplace)" if use_mixed
                     else "statsmodels GLM with site fixed effects")
    return out


def run(seeds, *, m: int = 5, with_imputation: bool = True,
        use_mixed: bool | None = None) -> pd.DataFrame:
    """One row per seed: conditions (a)-(d) and, optionally, (e) and (e2).

    ``e``: the flat estimate of the lactate coefficient is further from the
    truth than the multilevel one (``e_vs_complete_data``: further from the
    estimate the same registry gives before values go missing, from
    :func:`hmlib.demo.simulate_complete_data`). ``e2``: the site levels implied by the
    flat imputations are further from the true site offsets (RMS) than the
    multilevel ones.
    """
    rows = []
    for seed in seeds:
        demo = simulate_registry(seed=int(seed))
        row = {"seed": int(seed), **site_conditions(demo.data)}
        if with_imputation:
            truth = demo.truth["terms"]["lactate"]
            contrast = imputation_contrast(demo.data, demo.truth, seed=int(seed) + 1, m=m,
                                           use_mixed=use_mixed)
            row.update(contrast)
            full = simulate_complete_data(seed=int(seed))
            fitter = contrast["fitter"].startswith("hmlib")
            row["complete_data"] = fit_outcome(full, full["lactate"].to_numpy(dtype=float),
                                               use_mixed=fitter)["lactate"]
            row["truth_lactate"] = truth
            row["e"] = abs(contrast["flat"] - truth) > abs(contrast["multilevel"] - truth)
            row["e_vs_complete_data"] = (abs(contrast["flat"] - row["complete_data"])
                                         > abs(contrast["multilevel"] - row["complete_data"]))
            row["e2"] = contrast["flat_site_error"] > contrast["multilevel_site_error"]
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> dict:
    """Rates of (a)-(e) over seeds and the numbers behind them."""
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
    if "e" in table:
        truth = table["truth_lactate"]
        out.update({
            "rate_e_flat_further_from_truth": float(table["e"].mean()),
            "fitter": str(table["fitter"].iloc[0]),
            "lactate_truth": float(truth.iloc[0]),
            "rate_e_vs_complete_data": float(table["e_vs_complete_data"].mean()),
            "lactate_mean": {k: float(table[k].mean())
                             for k in ("complete_data", "cc", "flat", "multilevel")},
            "lactate_sd": {k: float(table[k].std(ddof=1))
                           for k in ("complete_data", "cc", "flat", "multilevel")},
            "lactate_rmse": {k: float(np.sqrt(((table[k] - truth) ** 2).mean()))
                             for k in ("complete_data", "cc", "flat", "multilevel")},
            "mean_multilevel_minus_flat": float((table["multilevel"] - table["flat"]).mean()),
            "se_mean_multilevel_minus_flat": float((table["multilevel"] - table["flat"]).std(ddof=1)
                                                   / np.sqrt(len(table))),
            "sd_multilevel_minus_flat": float((table["multilevel"] - table["flat"]).std(ddof=1)),
            "share_flat_below_multilevel": float((table["flat"] < table["multilevel"]).mean()),
            "sd_site_mean": {k: float(table[f"{k}_sd_site"].mean())
                             for k in ("cc", "flat", "multilevel")},
            "rate_e2_flat_site_levels_further": float(table["e2"].mean()),
            "site_offset_rms_error_mean": {k: float(table[f"{k}_site_error"].mean())
                                           for k in ("flat", "multilevel")},
        })
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="number of seeds (1..N)")
    parser.add_argument("--m", type=int, default=5, help="imputations per method")
    parser.add_argument("--no-imputation", action="store_true", help="skip check (e)")
    parser.add_argument("--fitter", choices=["auto", "mixed", "glm"], default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_design.json")
    args = parser.parse_args(argv)
    use_mixed = {"auto": None, "mixed": True, "glm": False}[args.fitter]

    start = time.perf_counter()
    table = run(range(1, args.seeds + 1), m=args.m, with_imputation=not args.no_imputation,
                use_mixed=use_mixed)
    seconds = time.perf_counter() - start
    summary = summarise(table)
    summary.update({"m": args.m, "seconds": round(seconds, 1),
                    "python": platform.python_version(), "numpy": np.__version__})
    checks = {"a": "rate_a_cc_loses_a_site", "b": "rate_b_cc_mortality_gap",
              "c": "rate_c_mortality_8_12pct", "d": "rate_d_site_under_15",
              "e": "rate_e_flat_further_from_truth",
              "e2": "rate_e2_flat_site_levels_further"}
    summary["passed"] = {c: summary[k] >= REQUIRED_SHARE for c, k in checks.items()
                         if k in summary}

    with pd.option_context("display.width", 160, "display.max_columns", 30):
        cols = [c for c in ["seed", "sites_lost_cc", "mortality", "cc_mortality", "cc_gap",
                            "smallest_site", "lactate_missing", "complete_data", "cc", "flat",
                            "multilevel",
                            "flat_site_error", "multilevel_site_error",
                            "a", "b", "c", "d", "e", "e2"] if c in table]
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
