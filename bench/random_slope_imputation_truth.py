"""Random-slope multilevel imputation against the truth, beside flat and random-intercept imputation.

Longitudinal registries made here (:func:`simulate_longitudinal`; the shared
simulator's longitudinal generator is on another branch): ``--patients``
patients (300) with up to 8 visits half a year apart (jittered by up to 0.1
year), dropout after each visit with probability 0.08 (rows after dropout
absent). A lab value ``x`` has its own patient level and trend
(``x = a_i + (0.2 + c_i) t + N(0, 0.6^2)``, ``sd(a) = 1``, ``sd(c) = 0.3``); the
outcome is

``y = 1 + 0.4 t + 0.35 x + 0.5 treat + u0_i + u1_i t + N(0, 0.8^2)``,
``sd(u0) = 1``, ``sd(u1) = 0.5``, ``cor(u0, u1) = 0.3``,

and ``x`` is missing (intermittently) with probability ``expit(-1.2 + 0.8 y_z +
0.15 t)`` (``y_z`` the standardised outcome): about 30%, at random given the
outcome and time (``--missingness history``: at random given the patient's last
recorded ``x`` instead, :func:`simulate_longitudinal`). Analysis model ``lmer(y ~ t + x + treat + (1 + t | patient),
REML = FALSE)`` (:func:`hmlib.stats.mixed.fit_mixed`) on each completed set,
Rubin's rules (the slope SD on the log scale, as hmlib pools SDs). Methods, each
imputing ``x`` from ``y``, ``t``, ``treat`` (``m = 20``, 10 iterations):

- ``random_slopes``: :func:`hmlib.stats.imputation.random_slopes.impute_random_slopes`
  with a random slope on ``t`` and the cluster means of ``t`` and ``y``;
- ``chained_random_slopes``: the report's engine, hmlib's multilevel chained equations with
  ``random_slopes=["t"]`` (:func:`hmlib.stats.imputation.impute`; what step 3's ``multilevel_mi`` runs when
  the params give ``random_slopes``), same model as ``random_slopes``;
- ``random_intercept``: hmlib's multilevel chained equations (2l.pan, random intercept only);
- ``flat``: single-level imputation (``norm``);
- ``complete_case``: the analysis model on the visits with ``x`` recorded;
- ``locf``: last observation carried forward
  (:func:`hmlib.stats.imputation.carried_forward.last_observation_carried_forward`), one completed
  set analysed as if complete (Wald intervals); visits before a patient's first recorded ``x`` stay
  missing and are dropped.

Bias, empirical SE, mean model SE and 95% coverage of ``x``'s coefficient
(truth 0.35) and of ``sd(t|patient)`` (truth 0.5), with Monte Carlo SEs. The
JSON is written after every 10 replicates (the per-replicate estimates beside it,
``random_slope_imputation_truth_rows.json``) and a rerun resumes from them, method by method (a method
added later is run on the earlier replicates' registries only).

``--sites N`` puts the patients in ``N`` sites (``SITE_METHODS``, the site level in every model; truth
``sd(site)`` 0.5 too) and ``--binary`` makes ``x`` a 0/1 finding (``BINARY_METHODS``; with ``--sites``
``SITE_METHODS``; :func:`simulate_longitudinal`); each writes its own JSON (``_sites<N>``, ``_binary``).

Usage::

    nice -n 5 .venv/bin/python bench/random_slope_imputation_truth.py [--replicates 100] [--m 20]
    nice -n 5 .venv/bin/python bench/random_slope_imputation_truth.py --sites 30 --replicates 200
    nice -n 5 .venv/bin/python bench/random_slope_imputation_truth.py --binary --replicates 200
    # tests/results/random_slope_registry.csv:
    .venv/bin/python bench/random_slope_imputation_truth.py --write-test-data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hmlib.stats.imputation import impute  # noqa: E402
from hmlib.stats.imputation.carried_forward import last_observation_carried_forward  # noqa: E402
from hmlib.stats.imputation.random_slopes import impute_random_slopes  # noqa: E402
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed  # noqa: E402
from hmlib.stats.pooling import rubin_arrays  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "random_slope_imputation_truth.json"
#: Per-replicate pooled estimates (what a rerun resumes from), beside the summary: ``<out>_rows.json``.
ROWS_SUFFIX = "_rows.json"
TEST_DATA = Path(__file__).resolve().parent.parent / "tests" / "results" / "random_slope_registry.csv"
SITES_TEST_DATA = TEST_DATA.with_name("random_slope_sites_registry.csv")
BINARY_TEST_DATA = TEST_DATA.with_name("random_slope_binary_registry.csv")
BINARY_SITES_TEST_DATA = TEST_DATA.with_name("random_slope_binary_sites_registry.csv")
TRUTH = {"x": 0.35, "sd(t|patient)": 0.5}
#: SDs of the site effects of ``simulate_longitudinal(n_sites > 0)``: on x, on y (the analysis model's sd(site))
#: and on x's log odds of missing.
SITE_SD = {"x": 0.7, "y": 0.5, "missing": 0.7}
METHODS = ("random_slopes", "chained_random_slopes", "random_intercept", "flat", "complete_case", "locf")
#: With ``--sites``: the site level in every model; ``chained_random_slopes`` gives the site a random intercept
#: beside the patients' random slopes (three levels), ``..._fixed_sites`` site indicator columns (hmlib's
#: behaviour before 2026-12-06), ``random_intercept`` random intercepts for site and patient, no slopes.
SITE_METHODS = ("chained_random_slopes", "chained_random_slopes_fixed_sites", "random_intercept", "flat",
                "complete_case")
#: With ``--binary`` (x a 0/1 finding): ``chained_random_slopes`` imputes it with the random-slope logistic
#: kernel (:mod:`hmlib.stats.imputation.slopes_logistic`), ``random_intercept`` with 2l.bin (what the chained
#: engine did for binary variables before 2026-12-06, random slopes or not).
BINARY_METHODS = ("chained_random_slopes", "random_intercept", "flat", "complete_case", "locf")


#: ``categorical=True`` of :func:`simulate_longitudinal`: the cuts of the latent ``x`` and the levels (reference
#: first).
CATEGORY_CUTS = (-0.3, 0.8)
CATEGORY_LEVELS = ("low", "mid", "high")
#: ``latent_noise="logistic"`` of :func:`simulate_longitudinal`: the logistic scale whose SD is 0.6.
LOGISTIC_SCALE = 0.6 * np.sqrt(3.0) / np.pi


def simulate_longitudinal(seed: int, n_patients: int = 300, visits: int = 8, dropout: float = 0.08,
                          missingness: str = "outcome", serial: float = 0.0, full: bool = False,
                          n_sites: int = 0, binary: bool = False, categorical: bool = False,
                          latent_noise: str = "normal") -> pd.DataFrame:
    """One registry of the module docstring's design (``t`` in years; rows in patient-visit order).

    ``serial``: lag-1 autocorrelation of ``x``'s visit-to-visit deviations from the patient's own
    trend (AR(1) over the patient's visits, stationary SD 0.6 kept; the same draws, so ``0`` is the
    default design). ``full=True`` returns the registry before any value goes missing.

    ``n_sites > 0``: patients in sites (visits in patients in sites; a column ``site``), each patient's site
    uniform over ``n_sites``; site effects ``g_k ~ N(0, 0.7^2)`` on ``x``, ``s_k ~ N(0, 0.5^2)`` on ``y`` and
    ``m_k ~ N(0, 0.7^2)`` on the log odds of ``x`` missing (drawn from a second stream, ``default_rng([seed,
    1])``, so the other draws are those of the design without sites).

    ``binary=True``: ``x`` is a 0/1 finding instead, ``1[a_i + (0.2 + c_i) t + N(0, 0.6^2) > 0.5]`` (the same
    draws thresholded: a patient's own level and trend in the chance of the finding), and the outcome's
    ``0.35 x`` is its effect (no other draw changes).

    ``categorical=True``: ``x`` is a three-level finding instead, ``low``, ``mid`` or ``high`` as the same
    latent value is below -0.3, between -0.3 and 0.8, or above (:data:`CATEGORY_CUTS`; about a third each),
    and the outcome's ``0.35 x`` takes ``x`` as 0, 1, 2: ``x[mid]`` 0.35 and ``x[high]`` 0.7 against
    ``low`` (no other draw changes).

    ``latent_noise="logistic"``: the visit-to-visit deviations of the latent ``x`` are logistic with the same SD
    0.6 (scale ``0.6 sqrt(3) / pi``) instead of normal, so that a categorical ``x`` follows exactly a cumulative
    logit model with patient random intercepts and slopes (on that scale: intercept SD ``1 / 0.331``, slope SD
    ``0.3 / 0.331``, uncorrelated; fixed slope ``0.2 / 0.331``), the joint model's ordinal submodel; the normal
    default is its probit counterpart. The other draws come in the same order (their values differ, as the
    logistic draws take the stream's bits differently). Not with ``serial``.

    ``missingness="history"``: ``x`` is missing instead with probability ``expit(-1.2 - 1.0 x_z)``,
    ``x_z`` the standardised last recorded ``x`` of the patient before this visit (``expit(-1.2)`` at
    the first visit and while none is recorded): a lab ordered less often after a low value, at
    random given the recorded history (sequential MAR), not given ``y`` and ``t``.
    """
    rng = np.random.default_rng(seed)
    n_visits = np.minimum(1 + rng.geometric(dropout, n_patients), visits)
    patient = np.repeat(np.arange(n_patients), n_visits)
    visit = np.concatenate([np.arange(k) for k in n_visits])
    n = patient.size
    t = 0.5 * visit + np.where(visit > 0, rng.uniform(-0.1, 0.1, n), 0.0)
    treat = rng.integers(0, 2, n_patients).astype(float)[patient]
    a, c = rng.normal(0.0, 1.0, n_patients), rng.normal(0.0, 0.3, n_patients)
    if latent_noise == "logistic":
        if serial:
            raise ValueError("latent_noise='logistic' has no serial correlation")
        noise = rng.logistic(0.0, LOGISTIC_SCALE, n)
    elif latent_noise == "normal":
        noise = _serial(rng.normal(0.0, 0.6, n), visit, serial)
    else:
        raise ValueError(f"latent_noise is 'normal' or 'logistic', not {latent_noise!r}")
    x = a[patient] + (0.2 + c[patient]) * t + noise
    site, site_x, site_y, site_miss = _sites(seed, n_sites, n_patients, patient)
    x = x + site_x
    if binary and categorical:
        raise ValueError("binary and categorical exclude each other")
    if binary:
        x = (x > 0.5).astype(float)
    elif categorical:
        x = np.digitize(x, CATEGORY_CUTS).astype(float)
    cov = np.array([[1.0, 0.3 * 0.5], [0.3 * 0.5, 0.25]])
    u = rng.multivariate_normal(np.zeros(2), cov, n_patients)
    y = (1 + 0.4 * t + 0.35 * x + 0.5 * treat + u[patient, 0] + u[patient, 1] * t + rng.normal(0.0, 0.8, n)
         + site_y)
    where = {"site": site + 1} if n_sites else {}
    if full:
        out = pd.DataFrame({**where, "patient": patient, "visit": visit, "t": np.round(t, 4), "treat": treat,
                            "x": x, "y": y})
    elif missingness == "history":
        out = _history_missing(rng, patient, visit, t, treat, x, y)
        out = out.assign(**where)[[*where, *out.columns]]
    else:
        yz = (y - y.mean()) / y.std()
        x = np.where(rng.random(n) < special.expit(-1.2 + 0.8 * yz + 0.15 * t + site_miss), np.nan, x)
        out = pd.DataFrame({**where, "patient": patient, "visit": visit, "t": np.round(t, 4), "treat": treat,
                            "x": x, "y": y})
    return _category_labels(out) if categorical else out


def _category_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """``x`` coded 0, 1, 2 as its labels :data:`CATEGORY_LEVELS` (missing stays missing)."""
    x = frame["x"].to_numpy()
    labels = np.full(x.shape, None, dtype=object)
    seen = ~np.isnan(x)
    labels[seen] = np.asarray(CATEGORY_LEVELS, dtype=object)[x[seen].astype(int)]
    return frame.assign(x=labels)


def _sites(seed: int, n_sites: int, n_patients: int, patient: np.ndarray) -> tuple:
    """Each row's site (``0 ..``) and its effects on ``x``, ``y`` and ``x``'s log odds of missing (zeros without
    sites), from the second stream of :func:`simulate_longitudinal`."""
    if not n_sites:
        return None, 0.0, 0.0, 0.0
    rng = np.random.default_rng([seed, 1])
    site = rng.integers(0, n_sites, n_patients)[patient]
    g, s, m = (rng.normal(0.0, sd, n_sites) for sd in SITE_SD.values())
    return site, g[site], s[site], m[site]


def _serial(e: np.ndarray, visit: np.ndarray, rho: float) -> np.ndarray:
    """AR(1) over each patient's visits from independent N(0, s^2) draws ``e`` (rows in visit order)."""
    if rho == 0.0:
        return e
    out = e.copy()
    for i in range(1, e.size):
        if visit[i] > 0:
            out[i] = rho * out[i - 1] + np.sqrt(1.0 - rho * rho) * e[i]
    return out


def _history_missing(rng, patient, visit, t, treat, x, y) -> pd.DataFrame:
    """``x`` missing given the patient's last recorded value (``simulate_longitudinal(missingness="history")``)."""
    xz = (x - x.mean()) / x.std()
    last = np.full(int(patient.max()) + 1, np.nan)
    recorded = np.zeros(x.size, dtype=bool)
    for j in range(int(visit.max()) + 1):
        rows = np.flatnonzero(visit == j)
        prev = last[patient[rows]]
        prob = special.expit(-1.2 - 1.0 * np.where(np.isnan(prev), 0.0, prev))
        recorded[rows] = rng.random(rows.size) >= prob
        seen = rows[recorded[rows]]
        last[patient[seen]] = xz[seen]
    return pd.DataFrame({"patient": patient, "visit": visit, "t": np.round(t, 4), "treat": treat,
                         "x": np.where(recorded, x, np.nan), "y": y})


def analyse(frames, *, time: str = "t") -> dict:
    """The analysis model on each frame, pooled: ``{term: (estimate, se, ci_lower, ci_upper)}`` for x and the
    slope SD."""
    est, var = [], []
    sds = {}                   # SD term -> (log SDs, their variances)
    for done in frames:
        X = np.column_stack([np.ones(len(done)), done[time], done["x"], done["treat"]])
        level = RandomLevel("patient", done["patient"].to_numpy(), slopes={time: done[time].to_numpy(float)})
        sites = (RandomLevel("site", done["site"].to_numpy()),) if "site" in done else ()
        fit = fit_mixed(done["y"].to_numpy(float), X, RandomEffects((*sites, level)))
        est.append(fit.coef[2])
        var.append(fit.std_error[2] ** 2)
        for term, lev, k in (("sd(t|patient)", -1, 1), *((("sd(site)", 0, 0),) if sites else ())):
            sds.setdefault(term, ([], []))
            sds[term][0].append(np.log(fit.levels[lev].sd[k]))
            sds[term][1].append(fit.levels[lev].log_sd_std_error[k] ** 2)
    out = {}
    if len(est) == 1:          # complete cases: the fit's own Wald intervals
        se = np.sqrt(var[0])
        out["x"] = (est[0], se, est[0] - 1.96 * se, est[0] + 1.96 * se)
        for term, (log_sd, log_var) in sds.items():
            lse = np.sqrt(log_var[0])
            out[term] = (np.exp(log_sd[0]), np.exp(log_sd[0]) * lse, np.exp(log_sd[0] - 1.96 * lse),
                         np.exp(log_sd[0] + 1.96 * lse))
        return out
    n = len(frames[0])
    x = rubin_arrays(est, var, n - 8)
    out["x"] = (x["estimate"], x["std_error"], x["ci_lower"], x["ci_upper"])
    for term, (log_sd, log_var) in sds.items():
        if not np.all(np.isfinite(log_sd) & np.isfinite(log_var)):
            # an SD at 0 in some imputation: the plain mean of the SDs, no interval (as hmlib's pooling does;
            # counted as not covering)
            out[term] = (float(np.mean(np.exp(log_sd))), np.nan, np.nan, np.nan)
            continue
        s = rubin_arrays(log_sd, log_var, n - 8)
        g = np.exp(s["estimate"])
        out[term] = (g, g * s["std_error"], np.exp(s["ci_lower"]), np.exp(s["ci_upper"]))
    return out


def completed_frames(frame: pd.DataFrame, method: str, m: int, seed: int) -> list:
    """The completed registries of one method (the complete cases as one frame)."""
    if method == "complete_case":
        return [frame.dropna(subset=["x"])]
    if method == "locf":
        carried = last_observation_carried_forward(frame, columns=["x"], cluster="patient", time="t")
        return [carried.completed.dropna(subset=["x"])]
    if method == "random_slopes":
        res = impute_random_slopes(frame, target="x", predictors=["y", "treat"], cluster="patient", slopes=["t"],
                                   m=m, iterations=10, seed=seed)
        return res.completed(frame)
    slopes = ["t"] if method.startswith("chained_random_slopes") else []
    res = impute(frame, method="flat" if method == "flat" else "multilevel", cluster="patient", outcome="y",
                 outcome_family="gaussian", predictors=["x", "t", "treat"], m=m, iterations=10, seed=seed,
                 random_slopes=slopes, higher_levels=["site"] if "site" in frame else (),
                 higher_effects="fixed" if method.endswith("fixed_sites") else "random")
    return list(res.completed)


def summarise(rows: dict, truth: dict = TRUTH) -> dict:
    """Bias, SEs and coverage with their Monte Carlo SEs, per method and term."""
    out = {}
    for method, reps in rows.items():
        out[method] = {}
        for term, true in truth.items():
            est, se, lo, hi = (np.array([r[term][i] for r in reps]) for i in range(4))
            cover = (lo <= true) & (true <= hi)
            out[method][term] = {
                "mean": float(est.mean()), "relative_bias": float(est.mean() / true - 1),
                "mc_se_relative_bias": float(est.std(ddof=1) / np.sqrt(est.size) / true),
                "empirical_se": float(est.std(ddof=1)), "mean_model_se": float(np.nanmean(se)),
                "coverage_95": float(cover.mean()),
                "mc_se_coverage": float(np.sqrt(cover.mean() * (1 - cover.mean()) / cover.size))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/random_slope_imputation_truth[_history].json")
    parser.add_argument("--missingness", choices=("outcome", "history"), default="outcome",
                        help="x missing given y and t (default), or given the last recorded x")
    parser.add_argument("--sites", type=int, default=0,
                        help="patients in this many sites (site effects on x, y and x's missingness; SITE_METHODS)")
    parser.add_argument("--binary", action="store_true", help="x a 0/1 finding (BINARY_METHODS)")
    parser.add_argument("--write-test-data", action="store_true",
                        help=f"write the R parity registry ({TEST_DATA.name}, seed 20261204; with --sites "
                             f"{SITES_TEST_DATA.name}, seed 20261206; with --binary {BINARY_TEST_DATA.name}, "
                             f"seed 20261207; with both {BINARY_SITES_TEST_DATA.name}, seed 20261208) and stop")
    args = parser.parse_args()
    if args.write_test_data:
        path, seed = {(False, False): (TEST_DATA, 20261204), (False, True): (SITES_TEST_DATA, 20261206),
                      (True, False): (BINARY_TEST_DATA, 20261207),
                      (True, True): (BINARY_SITES_TEST_DATA, 20261208)}[(args.binary, bool(args.sites))]
        simulate_longitudinal(seed, n_sites=args.sites, binary=args.binary).to_csv(path, index=False)
        print(f"wrote {path}")
        return
    methods = SITE_METHODS if args.sites else BINARY_METHODS if args.binary else METHODS
    truth = {**TRUTH, "sd(site)": SITE_SD["y"]} if args.sites else TRUTH
    if args.out is None:
        args.out = RESULTS if args.missingness == "outcome" else RESULTS.with_name(RESULTS.stem + "_history.json")
        if args.sites:
            args.out = args.out.with_name(args.out.stem + f"_sites{args.sites}.json")
        if args.binary:
            args.out = args.out.with_name(args.out.stem + "_binary.json")
    rows_path = args.out.with_name(args.out.stem + ROWS_SUFFIX)
    previous = json.loads(rows_path.read_text()) if rows_path.exists() else {}
    same = (previous.get("m") == args.m and previous.get("patients") == args.patients
            and previous.get("sites", 0) == args.sites and previous.get("binary", False) == args.binary)
    rows = previous["rows"] if same else {}
    seconds = previous["seconds"] if same else {}
    for method in methods:
        rows.setdefault(method, [])
        seconds.setdefault(method, 0.0)
    start = time.perf_counter()
    for r in range(min(len(v) for v in rows.values()), args.replicates):
        frame = simulate_longitudinal(5000 + r, n_patients=args.patients, missingness=args.missingness,
                                      n_sites=args.sites, binary=args.binary)
        for method in methods:
            if len(rows[method]) > r:
                continue
            t0 = time.perf_counter()
            pooled = analyse(completed_frames(frame, method, args.m, seed=r))
            rows[method].append({t: [round(float(v), 6) for v in values] for t, values in pooled.items()})
            seconds[method] += time.perf_counter() - t0
        done = r + 1
        if done % 10 == 0 or done == args.replicates:
            out = {"replicates": done, "m": args.m, "patients": args.patients, "missingness": args.missingness,
                   "sites": args.sites, "binary": args.binary, "truth": truth,
                   "seconds_per_registry": {k: v / len(rows[k]) for k, v in seconds.items()},
                   "methods": summarise({k: v[:done] for k, v in rows.items()}, truth)}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1) + "\n")
            rows_path.write_text(json.dumps({"m": args.m, "patients": args.patients, "sites": args.sites,
                                             "binary": args.binary, "seconds": seconds, "rows": rows}) + "\n")
            print(f"{done} replicates, {time.perf_counter() - start:.0f} s", flush=True)
            for method, terms in out["methods"].items():
                print(" ", method, {t: {k: round(v, 3) for k, v in d.items()} for t, d in terms.items()}, flush=True)


if __name__ == "__main__":
    main()
