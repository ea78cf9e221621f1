"""Does the joint model with random slopes recover the truth? A simulation study (issue #16).

Each replicate simulates visits in patients from
:func:`hmlib.simulate.longitudinal.longitudinal_registry` with one site
(``--patients`` patients, 6 visits three months apart; the outcome has a
correlated random intercept and slope on ``month``, truth ``sd(patient)``
2.0, ``sd(month|patient)`` 0.1, ``cor`` -0.3; ``x`` missing at 5% of visits,
missed visits, and dropout that depends on the last recorded outcome: missing
at random given the history), fits :func:`hmlib.stats.joint.fit_joint_model`
with ``random_slopes=["month"]`` (the report's step 4 with the params'
``random_slopes``) and records, for ``x``, ``month``, ``sd(patient)``,
``sd(month|patient)`` and ``cor(month|patient)``: posterior mean and SD, the
95% equal-tailed interval, and whether the convergence gate passed. Over the
replicates: relative bias with its Monte Carlo SE, empirical SD against mean
posterior SD, and 95% coverage (:func:`joint_nested_truth.summarise`).

Sampler: 2 chains of ``--draws`` after ``--tune`` warm-up iterations (default
1000 and 1000, no automatic extension: each replicate's gate result and time
are kept instead).

With ``--sites N`` the patients are spread over ``N`` sites
(``sd(site)`` 0.8 in the outcome; missed visits and dropout vary by site)
and the fit has ``higher_levels=["site"]`` too: a random intercept per site
in every submodel beside the patients' correlated intercepts and slopes
(``sd(site)`` is then reported as well), with the report's automatic
extension (``--budget`` minutes, default 20, as the report).

With ``--binary`` the registries are instead ``bench/random_slope_imputation_truth.py``'s with ``x`` a 0/1
finding (:func:`random_slope_imputation_truth.simulate_longitudinal` with ``binary=True``, ``--patients``
patients, up to 8 visits half a year apart with dropout: ``x`` has its own patient level and trend on the
latent scale, the outcome ``y = 1 + 0.4 t + 0.35 x + 0.5 treat + u0 + u1 t + e``, truth ``sd(patient)`` 1,
``sd(t|patient)`` 0.5, ``cor`` 0.3; ``x`` missing at random given ``y`` and ``t``, about 30%); the fit has
``predictors=["t", "x", "treat"]`` and ``random_slopes=["t"]``, so the summed-out ``x``'s submodel has the
patients' random intercepts and slopes (as the report's step 4). Terms: ``x``, ``t``, ``sd(patient)``,
``sd(t|patient)``, ``cor(t|patient)``.

With ``--categorical`` ``x`` is a three-level finding instead (the same generator with ``categorical=True``:
the latent ``x`` cut into ``low``, ``mid``, ``high``, truth ``x[mid]`` 0.35, ``x[high]`` 0.7 against ``low``;
missing at random given ``y`` and ``t``, about 30%), fitted with ``levels={"x": ["low", "mid", "high"]}``: a
nominal submodel whose two non-reference levels each have the patients' random intercepts and slopes, or with
``--ordinal`` too a cumulative-logit one with one block. ``--intercept-only`` fits instead the categorical
submodel with random intercepts only, as hmlib's joint model did before 2026-12-07 (the bench swaps the
submodel's slope part for its random-intercept part; the outcome keeps its slopes): the comparator that shows
what the categorical submodel's slopes do. ``--yardsticks`` fits instead, on the same registries, the analysis
model ``y ~ t + x + treat + (1 + t | patient)`` by maximum likelihood (:func:`hmlib.stats.mixed.fit_mixed`) to
the full data (before ``x`` goes missing) and to the complete cases (a second of work per registry), and
``--compare RESULTS_JSON`` prints the fits' paired differences from them, or from another fit's results of
the same registries (:func:`paired`).
``--latent-noise logistic`` makes the latent ``x``'s visit deviations logistic instead of normal (same SD), so
that the ordinal submodel is the generator's own model (a cumulative logit with the patients' random intercepts
and slopes), where the default thresholds a normal value (a probit model): the check of whether the link is
what attenuates a summed-out categorical ``x``. ``--no-missingness-model`` fits without the missingness
submodel (whose patient intercepts are correlated with the outcome's): the check of whether that submodel is.
``--independent-levels`` (nominal ``--categorical``) gives each level its own block of patient intercepts and
slopes (:func:`independent_nominal_levels`), as hmlib did before 2026-12-07, where it now has one LKJ block across
the levels: the comparator of that change (the nominal result files without ``correlated_levels`` in their design
were fitted so). ``--no-slopes`` (with ``--binary`` or ``--categorical``) fits random
intercepts only in every submodel (``random_slopes=[]``: the report's step 4 with ``time`` but no
``random_slopes``, where the missingness submodel stays on by default); the terms are then ``x``, ``t`` and
``sd(patient)``, and the generator's random slopes are left out of the analysis model, so the paired difference
with and without the missingness submodel is the measure, not the distance from the truth.

Usage::

    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --binary --patients 300 --reps 40 \\
        --out bench/results/joint_random_slopes_binary_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --categorical --patients 300 --reps 30 \
        --budget 20 --out bench/results/joint_random_slopes_categorical_truth.json
    .venv/bin/python bench/joint_random_slopes_truth.py --categorical --yardsticks --patients 300 --reps 30 \
        --out bench/results/joint_random_slopes_categorical_yardsticks.json
    .venv/bin/python bench/joint_random_slopes_truth.py --categorical \
        --out bench/results/joint_random_slopes_categorical_truth.json \
        --compare bench/results/joint_random_slopes_categorical_yardsticks.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --categorical --ordinal --no-missingness-model \
        --patients 300 --reps 8 --budget 20 --out bench/results/joint_random_slopes_ordinal_no_missingness_truth.json
    .venv/bin/python bench/joint_random_slopes_truth.py \
        --out bench/results/joint_random_slopes_ordinal_no_missingness_truth.json \
        --compare bench/results/joint_random_slopes_ordinal_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --categorical --ordinal --latent-noise logistic \
        --patients 300 --reps 15 --budget 20 --out bench/results/joint_random_slopes_ordinal_logistic_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --categorical \\
        --no-missingness-model --patients 300 --reps 15 --budget 20 \\
        --out bench/results/joint_random_slopes_categorical_correlated_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --categorical --patients 300 --reps 15 \\
        --budget 20 --out bench/results/joint_random_slopes_categorical_correlated_missingness_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --binary --no-slopes [--no-missingness-model] \\
        --patients 300 --reps 8 --budget 20 \\
        --out bench/results/joint_random_slopes_binary_intercepts[_no_missingness]_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --reps 40 \\
        --out bench/results/joint_random_slopes_truth.json
    nice -n 5 .venv/bin/python bench/joint_random_slopes_truth.py --sites 12 --reps 20 \\
        --out bench/results/joint_random_slopes_sites_truth.json

The replicates are written after each one; rerunning with the same ``--out``
resumes. The fit itself is checked in ``tests/test_joint_random_slopes.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hmlib.simulate.longitudinal import longitudinal_registry, longitudinal_registry_truth  # noqa: E402
from hmlib.stats.joint import fit_joint_model  # noqa: E402
from joint_nested_truth import summarise  # noqa: E402
from random_slope_imputation_truth import CATEGORY_LEVELS, simulate_longitudinal  # noqa: E402

TERMS = ("x", "month", "sd(patient)", "sd(month|patient)", "cor(month|patient)")
BINARY_TERMS = ("x", "t", "sd(patient)", "sd(t|patient)", "cor(t|patient)")
CATEGORICAL_TERMS = ("x[mid]", "x[high]", *BINARY_TERMS[1:])
#: The truth of ``--binary`` (random_slope_imputation_truth's design).
BINARY_TRUTH = {"x": 0.35, "t": 0.4, "sd(patient)": 1.0, "sd(t|patient)": 0.5, "cor(t|patient)": 0.3}
#: The truth of ``--categorical``: ``0.35 x`` with ``x`` 0, 1, 2.
CATEGORICAL_TRUTH = {"x[mid]": 0.35, "x[high]": 0.7, **{t: BINARY_TRUTH[t] for t in BINARY_TERMS[1:]}}


def terms_of(*, sites: int = 1, binary: bool = False, categorical: bool = False, slopes: bool = True) -> tuple:
    """The terms recorded: ``BINARY_TERMS``, ``CATEGORICAL_TERMS`` (without the slope's SD and correlation when
    ``slopes`` is false), or ``TERMS`` with ``sd(site)`` when there are sites."""
    if binary or categorical:
        terms = CATEGORICAL_TERMS if categorical else BINARY_TERMS
        return terms if slopes else tuple(t for t in terms if "|" not in t)
    return (*TERMS, "sd(site)") if sites > 1 else TERMS


def registry(seed: int, *, patients: int, sites: int = 1, binary: bool = False, categorical: bool = False,
             ordinal: bool = False, latent_noise: str = "normal", slopes: bool = True) -> tuple:
    """One replicate's registry and the joint model's roles in it: ``(frame, fit_joint_model keywords)``;
    ``slopes=False`` (``--no-slopes``, with ``--binary`` or ``--categorical``): random intercepts only."""
    if binary or categorical:
        frame = simulate_longitudinal(seed, n_patients=patients, binary=binary, categorical=categorical,
                                      latent_noise=latent_noise).drop(columns=["visit"])
        roles = dict(predictors=["t", "x", "treat"], random_slopes=["t"] if slopes else [])
        if categorical:
            roles |= dict(levels={"x": list(CATEGORY_LEVELS)}, focus="x")
            if ordinal:
                roles["ordinal"] = {"x": list(CATEGORY_LEVELS)}
    else:
        frame = longitudinal_registry(seed, n_sites=sites, n_patients=patients, n_visits=6).drop(columns=["date"])
        roles = dict(predictors=["x", "month"], random_slopes=["month"])
    return frame, dict(outcome="y", cluster="patient", family="gaussian", chains=2,
                       higher_levels=["site"] if sites > 1 else (), **roles)


@contextlib.contextmanager
def intercept_only_categoricals():
    """Within: every categorical submodel has random intercepts only, as before 2026-12-07 (``--intercept-only``).

    Swaps :mod:`hmlib.stats.joint.model`'s nominal slope blocks for its random-intercept part, and the
    predictor-submodel slope part (which an ordinal categorical uses, as do continuous and binary predictors,
    none incomplete in this design) for a random intercept.
    """
    from hmlib.stats.joint import model as jmodel
    from hmlib.stats.joint.priors import sd_prior

    def nominal(prefix, data, priors, centred, K):
        return jmodel._nominal_clusters(prefix, data, priors, centred, K)[data.codes]

    def one_block(prefix, data, priors, centred):
        tau = sd_prior(f"{prefix}_cluster_sd", priors["cluster_sd"])
        return jmodel._submodel_clusters(prefix, data.n_clusters, tau, centred, data, priors)[data.codes]

    saved = jmodel._nominal_slopes, jmodel._submodel_slopes
    jmodel._nominal_slopes, jmodel._submodel_slopes = nominal, one_block
    try:
        yield
    finally:
        jmodel._nominal_slopes, jmodel._submodel_slopes = saved


@contextlib.contextmanager
def independent_nominal_levels():
    """Within: a nominal submodel's non-reference levels each have their own block of patient intercepts and
    slopes, independent of the others (``--independent-levels``; brms's ``categorical`` with ``(1 + t |
    patient)``), as hmlib's joint model did before 2026-12-07: the comparator of
    :func:`hmlib.stats.joint.model._nominal_slopes`'s one block across the levels (``(1 + t |p| patient)``; the
    bench swaps its :func:`~hmlib.stats.joint.model._nominal_level_effects`).
    The result files of ``--categorical`` (nominal) without ``correlated_levels`` in their design were fitted
    so."""
    import pytensor.tensor as pt

    from hmlib.stats.joint import model as jmodel
    from hmlib.stats.joint.slopes import correlated_effects

    def per_level(prefix, data, priors, centred, K):
        blocks = [correlated_effects(f"{prefix}_level{level}_cluster", data.n_clusters, 1 + len(data.slopes),
                                     priors, centred[prefix]) for level in range(1, K)]
        return (pt.stack([block[0] for block in blocks], axis=1),      # J x (K - 1) x (1 + q)
                pt.stack([block[1] for block in blocks], axis=0))      # (K - 1) x (1 + q)

    saved = jmodel._nominal_level_effects
    jmodel._nominal_level_effects = per_level
    try:
        yield
    finally:
        jmodel._nominal_level_effects = saved


def replicate(seed: int, *, patients: int, draws: int, tune: int, sites: int = 1, budget: float = 0,
              binary: bool = False, categorical: bool = False, ordinal: bool = False,
              intercept_only: bool = False, latent_noise: str = "normal", missingness_model: bool = True,
              independent_levels: bool = False, slopes: bool = True) -> dict:
    """One registry, one fit: per term the posterior summary, and the gate (``sites > 1``: the site level too)."""
    frame, roles = registry(seed, patients=patients, sites=sites, binary=binary, categorical=categorical,
                            ordinal=ordinal, latent_noise=latent_noise, slopes=slopes)
    start = time.perf_counter()
    swap = (intercept_only_categoricals() if intercept_only else independent_nominal_levels() if independent_levels
            else contextlib.nullcontext())
    with swap:
        fit = fit_joint_model(frame, seed=seed, draws=draws, tune=tune, time_budget_minutes=budget,
                              missingness_model=missingness_model, **roles)
    terms = terms_of(sites=sites, binary=binary, categorical=categorical, slopes=slopes)
    rows = fit.to_estimates().set_index("term")
    return {"seed": seed, "seconds": round(time.perf_counter() - start, 1), "converged": bool(fit.converged),
            "gate": fit.convergence_message, "runs": len(fit.settings["attempts"]),
            "share_x_missing": float(frame["x"].isna().mean()),
            "share_y_missing": float(frame["y"].isna().mean()),
            "terms": {t: {"estimate": float(rows.loc[t, "estimate"]), "sd": float(rows.loc[t, "std_error"]),
                          "ci95": [float(rows.loc[t, "ci_lower"]), float(rows.loc[t, "ci_upper"])]}
                      for t in terms}}


def yardsticks(seed: int, *, patients: int, latent_noise: str = "normal", binary: bool = False) -> dict:
    """``--yardsticks``: the analysis model by ML on the full data and on the complete cases of a ``--categorical``
    (or ``--binary``) registry; per data set and term (``x[mid]``, ``x[high]``, or ``x``) the estimate, its SE
    and 95% Wald interval."""
    from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed

    kind = dict(binary=True) if binary else dict(categorical=True)
    full = simulate_longitudinal(seed, n_patients=patients, full=True, latent_noise=latent_noise, **kind)
    incomplete = simulate_longitudinal(seed, n_patients=patients, latent_noise=latent_noise, **kind)
    x_terms = (("x", 2),) if binary else (("x[mid]", 2), ("x[high]", 3))
    out = {"seed": seed}
    for name, frame in (("full", full), ("complete_cases", incomplete.dropna(subset=["x"]))):
        x = [frame["x"]] if binary else [frame["x"] == "mid", frame["x"] == "high"]
        X = np.column_stack([np.ones(len(frame)), frame["t"], *x, frame["treat"]]).astype(float)
        level = RandomLevel("patient", frame["patient"].to_numpy(), slopes={"t": frame["t"].to_numpy(float)})
        fit = fit_mixed(frame["y"].to_numpy(float), X, RandomEffects((level,)))
        out[name] = {term: {"estimate": float(fit.coef[k]), "sd": float(fit.std_error[k]),
                            "ci95": [float(fit.coef[k] - 1.96 * fit.std_error[k]),
                                     float(fit.coef[k] + 1.96 * fit.std_error[k])]}
                     for term, k in x_terms}
    return out


def paired(reps: list, other_rows: list, truth: dict) -> dict:
    """``--compare``: the fits' mean difference from another result file's estimates on the same registries (same
    seeds), per term and as a share of ``truth``, with its Monte Carlo SE (the SD of the paired differences over
    the square root of their number) and the number of registries paired.

    ``other_rows`` are the replicates of a ``--yardsticks`` file (each term against ``full`` and
    ``complete_cases``, the terms they have) or of another fit (every term against ``fit``).
    """
    by_seed = {r["seed"]: r for r in other_rows}
    first = other_rows[0]
    against = {"fit": first["terms"]} if "terms" in first else {"full": first["full"],
                                                                "complete_cases": first["complete_cases"]}
    out = {}
    for name, terms in against.items():
        for term in terms:
            key = "terms" if name == "fit" else name
            d = np.array([r["terms"][term]["estimate"] - by_seed[r["seed"]][key][term]["estimate"]
                          for r in reps if r["seed"] in by_seed]) / truth[term]
            out[f"{term} - {name}"] = {"mean": float(d.mean()), "mc_se": float(d.std(ddof=1) / np.sqrt(d.size)),
                                       "n": int(d.size)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=9600)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=1)
    parser.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                        help="automatic extension budget (default: none with one site, 20 with several)")
    parser.add_argument("--binary", action="store_true", help="x a 0/1 finding with its own random slope "
                                                                  "(module docstring)")
    parser.add_argument("--categorical", action="store_true", help="x a three-level finding (module docstring)")
    parser.add_argument("--ordinal", action="store_true", help="with --categorical: an ordinal submodel")
    parser.add_argument("--intercept-only", action="store_true",
                        help="with --categorical: its submodel without random slopes (the comparator)")
    parser.add_argument("--independent-levels", action="store_true",
                        help="with --categorical (nominal): a block of patient effects per level, as before "
                             "2026-12-07 (independent_nominal_levels)")
    parser.add_argument("--no-slopes", action="store_true",
                        help="with --binary or --categorical: fit random intercepts only (random_slopes=[]), the "
                             "report's step 4 with 'time' but no 'random_slopes'")
    parser.add_argument("--yardsticks", action="store_true",
                        help="with --categorical or --binary: full data and complete cases by ML instead "
                             "(module docstring)")
    parser.add_argument("--latent-noise", choices=("normal", "logistic"), default="normal",
                        help="with --binary or --categorical: the latent x's visit deviations (module docstring)")
    parser.add_argument("--no-missingness-model", action="store_true",
                        help="fit without the missingness submodel (fit_joint_model(missingness_model=False))")
    parser.add_argument("--compare", type=Path, metavar="RESULTS_JSON",
                        help="with --out: no fitting; the fits in --out against the --yardsticks results or "
                             "another fit's results of the same registries (paired differences)")
    parser.add_argument("--out", type=Path, help="write replicates and summary as JSON here (resumes)")
    args = parser.parse_args(argv)
    if args.compare:
        if not args.out:
            parser.error("--compare goes with --out")
        ours = json.loads(args.out.read_text())
        diffs = paired(ours["replicates"], json.loads(args.compare.read_text())["replicates"],
                       {term: row["truth"] for term, row in ours["summary"].items() if isinstance(row, dict)})
        for key, d in diffs.items():
            print(f"{key}: {d['mean']:+.4f} of the truth (MC SE {d['mc_se']:.4f}, {d['n']} registries)")
        return 0
    if args.yardsticks:
        if not (args.categorical or args.binary):
            parser.error("--yardsticks goes with --categorical or --binary")
        rows = [yardsticks(seed, patients=args.patients, latent_noise=args.latent_noise, binary=args.binary)
                for seed in range(args.first_seed, args.first_seed + args.reps)]
        x_terms, truth = (BINARY_TERMS[:1], BINARY_TRUTH) if args.binary else (CATEGORICAL_TERMS[:2],
                                                                               CATEGORICAL_TRUTH)
        summary = {name: summarise([{"terms": r[name], "converged": True, "runs": 1, "seconds": 0.0}
                                    for r in rows], truth, x_terms)
                   for name in ("full", "complete_cases")}
        for name, s in summary.items():
            print(name, {t: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s[t].items()}
                         for t in x_terms})
        if args.out:
            args.out.write_text(json.dumps({"design": {"n_patients": args.patients, "fit": "ML, fit_mixed",
                                                       "binary": args.binary,
                                                       "latent_noise": args.latent_noise},
                                            "summary": summary, "replicates": rows}, indent=1) + "\n")
        return 0
    if (args.binary or args.categorical) and args.sites > 1:
        parser.error("--binary and --categorical have one site")
    if args.binary and args.categorical:
        parser.error("--binary or --categorical, not both")
    if (args.ordinal or args.intercept_only) and not args.categorical:
        parser.error("--ordinal and --intercept-only go with --categorical")
    if args.no_slopes and not (args.binary or args.categorical):
        parser.error("--no-slopes goes with --binary or --categorical")
    if args.independent_levels and (not args.categorical or args.ordinal or args.intercept_only):
        parser.error("--independent-levels goes with --categorical (nominal, with slopes)")
    budget = args.budget if args.budget is not None else (20.0 if args.sites > 1 else 0.0)
    terms = terms_of(sites=args.sites, binary=args.binary, categorical=args.categorical,
                     slopes=not args.no_slopes)
    reps = json.loads(args.out.read_text())["replicates"] if args.out and args.out.is_file() else []
    truth = CATEGORICAL_TRUTH if args.categorical else BINARY_TRUTH if args.binary else \
        longitudinal_registry_truth()["terms"]
    done = {r["seed"] for r in reps}
    for seed in range(args.first_seed, args.first_seed + args.reps):
        if seed in done:
            continue
        reps.append(replicate(seed, patients=args.patients, draws=args.draws, tune=args.tune, sites=args.sites,
                              budget=budget, binary=args.binary, categorical=args.categorical,
                              ordinal=args.ordinal, intercept_only=args.intercept_only,
                              latent_noise=args.latent_noise,
                              missingness_model=not args.no_missingness_model,
                              independent_levels=args.independent_levels, slopes=not args.no_slopes))
        r = reps[-1]
        print(f"seed {seed}: {r['seconds']} s, converged {r['converged']}, "
              + ", ".join(f"{t} {v['estimate']:.3f}" for t, v in r["terms"].items()), flush=True)
        if args.out:
            kind = "categorical" if args.categorical else "binary" if args.binary else None
            generator = (f"bench/random_slope_imputation_truth.py simulate_longitudinal({kind}=True)" if kind
                         else "hmlib.simulate.longitudinal.longitudinal_registry")
            payload = {"design": {"generator": generator,
                                  "n_sites": args.sites, "n_patients": args.patients,
                                  "n_visits": 8 if kind else 6,
                                  "submodel": ("ordinal" if args.ordinal else "nominal") if args.categorical
                                  else None,
                                  "categorical_slopes": not args.intercept_only if args.categorical else None,
                                  "correlated_levels": (not args.independent_levels and not args.intercept_only
                                                        and not args.ordinal) if args.categorical else None,
                                  "random_slopes": not args.no_slopes,
                                  "latent_noise": args.latent_noise if kind else None,
                                  "missingness_model": not args.no_missingness_model,
                                  "draws": args.draws, "tune": args.tune, "chains": 2,
                                  "time_budget_minutes": budget},
                       "summary": summarise(reps, truth, terms), "replicates": reps}
            args.out.write_text(json.dumps(payload, indent=1) + "\n")
    s = summarise(reps, truth, terms)
    for t in terms:
        print(t, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s[t].items()})
    print("converged", s["converged"], "of", s["replicates"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
