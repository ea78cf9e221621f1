"""The delta after dropout against the truth: data MNAR after dropout by a known shift.

Registries of ``--patients`` patients (300) on a full grid of 6 visits half a
year apart (``t = 0, 0.5, ..., 2.5``; every scheduled visit is a row, so
dropout leaves rows with ``y`` missing). The outcome

``y = 1 + 0.4 t + 0.5 treat - 0.3 treat t + u0_i + u1_i t + N(0, 0.6^2)``,
``sd(u0) = 1``, ``sd(u1) = 0.4``, ``cor(u0, u1) = 0.3``,

is the variable with missing values. Visits after the first are missed
with probability 0.10 (intermittent, completely at random). After each
recorded visit from the first on a patient drops out with probability
``expit(-2.4 + 0.6 treat - 0.6 y_z)`` (``y_z`` the visit's standardised
``y``: patients doing worse leave; a missed visit cannot start a dropout,
so dropout is at random given the recorded history). The MNAR part: every value after
a patient's dropout is lower by ``D`` (``--shift``, 1.0, about 0.6 SD of
``y``) than the random-slope model of the recorded values says: a
pattern-mixture model whose post-dropout shift is exactly what
:func:`hmlib.stats.dropout_delta.shift_after_dropout` adds with ``delta =
-D``. Intermittent gaps are not shifted in the data, nor by the adjustment.

Estimand: the coefficients of ``t`` and ``treat:t`` in ``lmer(y ~ t + treat +
treat:t + (1 + t | id), REML = FALSE)`` on the full data *including* the
shift (the population the patients would have been in). Its value is
estimated by the mean of the full-data fits over the replicates (``truth``,
with its Monte Carlo SE); each method's error is also taken against its own
replicate's full-data fit (``mean_error_vs_full``, free of sampling error).

Methods (m = ``--m`` imputations of ``y`` by
:func:`~hmlib.stats.imputation.random_slopes.impute_random_slopes`, random
slope on ``t``, predictors ``treat`` and ``treat:t``):

- ``mi_delta_0``: MAR imputation, no shift;
- ``mi_delta_minus_D``: the same imputations, post-dropout values shifted by ``-D``;
- ``complete_case``: the recorded visits (a likelihood analysis valid under MAR);
- ``locf``: last observation carried forward (one completed set; Wald intervals).

Rubin's rules with the pooled df of
:func:`~hmlib.stats.dropout_delta.pooled_random_slope_coefficient`. On the
first replicate the tipping point of ``treat:t`` is searched too
(``ChangeRule(relevant_difference=0.15)``) and stored.

First reading (200 registries, ``D = 1``, m = 10; 18% of cells after dropout, 5% intermittent):
the delta = -D analysis has bias +0.000 (MC SE 0.005) for ``treat:t`` (truth -0.354, coverage 95.5%)
and -0.020 (0.004) for ``t`` (truth 0.265, coverage 92%); delta = 0 has +0.054 (88%) and +0.133
(20%). The -0.020 left on ``t`` is not the imputation's: delta = 0 against the full data *without*
the shift errs by +0.001 (0.0015). The shift is a step the analysis model does not contain, and how
a fit with a random slope shares a step between the fixed slope and the patients' slopes depends on
the variance components, which imputed and true values need not give alike; not examined further.

The growing form (``--form growing``, written to
``bench/results/dropout_delta_truth_growing.json``): the data's values after
dropout are lower by ``D`` for every visit interval (0.5) since the
patient's last recorded visit (``D`` at the first missed visit, ``2D`` at
the next, ...), which is what step 5's growing delta says
(:mod:`hmlib.steps.sensitivity_dropout`: ``delta`` SDs per visit interval);
``mi_delta_minus_D`` then shifts by ``-D`` per visit interval
(``shift_after_dropout(form="growing")`` with ``delta = -D / 0.5`` per unit
of ``t``), and ``mi_delta_constant`` by the constant ``-D`` (the wrong
form, for comparison).

Usage::

    nice -n 5 .venv/bin/python bench/dropout_delta_truth.py [--replicates 100] [--m 10] [--shift 1.0]
    nice -n 5 .venv/bin/python bench/dropout_delta_truth.py --replicates 200 --form growing
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

from hmlib.stats.dropout_delta import (dropout_cells, dropout_tipping_point,  # noqa: E402
                                       pooled_random_slope_coefficient, shift_after_dropout)
from hmlib.stats.imputation.carried_forward import last_observation_carried_forward  # noqa: E402
from hmlib.stats.imputation.random_slopes import impute_random_slopes  # noqa: E402
from hmlib.stats.sensitivity import ChangeRule  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dropout_delta_truth.json"
RESULTS_GROWING = RESULTS.with_name("dropout_delta_truth_growing.json")
TERMS = ("t", "treat_t")
METHODS = ("mi_delta_0", "mi_delta_minus_D", "complete_case", "locf")
METHODS_GROWING = ("mi_delta_0", "mi_delta_minus_D", "mi_delta_constant", "complete_case", "locf")
#: Time between scheduled visits (``t = 0, 0.5, ...``): the growing form's visit interval.
INTERVAL = 0.5
MODEL = dict(outcome="y", predictors=["t", "treat", "treat_t"], cluster="id", time="t")


def simulate_dropout_shift(seed: int, n_patients: int = 300, visits: int = 6, shift: float = 1.0,
                           form: str = "constant"):
    """One registry (module docstring): the incomplete frame, the full frame with the post-dropout shift, and
    the full frame without it (the MAR world, a diagnostic). ``form="growing"``: the shift is ``shift`` per
    visit interval since the last recorded visit."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), visits)
    visit = np.tile(np.arange(visits), n_patients)
    t = 0.5 * visit
    treat = rng.integers(0, 2, n_patients).astype(float)[pid]
    u = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.3 * 0.4], [0.3 * 0.4, 0.16]], n_patients)
    y = (1 + 0.4 * t + 0.5 * treat - 0.3 * treat * t + u[pid, 0] + u[pid, 1] * t
         + rng.normal(0.0, 0.6, pid.size))
    yz = (y - y.mean()) / y.std()
    missed = (visit >= 1) & (rng.random(pid.size) < 0.10)
    # only a recorded visit can make a patient leave: dropout depends on recorded values alone (MAR)
    leaves = ((visit >= 1) & (visit < visits - 1) & ~missed
              & (rng.random(pid.size) < special.expit(-2.4 + 0.6 * treat - 0.6 * yz)))
    # the first visit a patient is gone: one after the first visit at which they leave
    leave_visit = np.full(n_patients, visits)
    np.minimum.at(leave_visit, pid[leaves], visit[leaves] + 1)
    after = visit >= leave_visit[pid]
    # the visit at which a patient leaves is recorded: their last recorded visit is leave_visit - 1
    intervals = visit - (leave_visit[pid] - 1) if form == "growing" else 1
    full_y = np.where(after, y - shift * intervals, y)
    observed = ~after & ~missed
    base = pd.DataFrame({"id": pid, "t": t, "treat": treat, "treat_t": treat * t})
    return base.assign(y=np.where(observed, full_y, np.nan)), base.assign(y=full_y), base.assign(y=y)


def fit_terms(frames) -> dict:
    """``{term: (estimate, se, lower, upper)}``: pooled for several frames, the fit's Wald interval for one."""
    out = {}
    for term in TERMS:
        if len(frames) == 1:      # one frame: Rubin with m = 2 identical copies gives B = 0, the Wald interval
            frames_ = [frames[0], frames[0]]
        else:
            frames_ = frames
        res = pooled_random_slope_coefficient(frames_, focus=term, **MODEL)
        out[term] = (res["estimate"], res["std_error"], res["ci_lower"], res["ci_upper"])
    return out


def one_replicate(seed: int, n_patients: int, m: int, shift: float, form: str = "constant") -> dict:
    """Every method's estimates on one registry, and the full-data fit."""
    frame, full, unshifted = simulate_dropout_shift(seed, n_patients, shift=shift, form=form)
    imputed = impute_random_slopes(frame, target="y", predictors=["treat", "treat_t"], cluster="id", slopes=["t"],
                                   m=m, iterations=10, seed=seed)
    completed = imputed.completed(frame)
    cells = dropout_cells(frame, "y", cluster="id", time="t")
    locf = last_observation_carried_forward(frame, columns=["y"], cluster="id", time="t").completed
    delta = -shift / INTERVAL if form == "growing" else -shift
    out = {}
    if form == "growing":
        out["mi_delta_constant"] = fit_terms(shift_after_dropout(completed, frame, "y", -shift, cluster="id",
                                                                 time="t", cells=cells))
    return {**out, "full": fit_terms([full]), "full_unshifted": fit_terms([unshifted]),
            "mi_delta_0": fit_terms(completed),
            "mi_delta_minus_D": fit_terms(shift_after_dropout(completed, frame, "y", delta, cluster="id", time="t",
                                                              cells=cells, form=form)),
            "complete_case": fit_terms([frame.dropna(subset=["y"])]),
            "locf": fit_terms([locf.dropna(subset=["y"])]),
            "post_dropout_share": cells.n_cells / len(frame),
            "intermittent_share": cells.n_intermittent_cells / len(frame)}


def summarise(rows: list) -> dict:
    """Truth (mean full-data estimate), then per method and term: bias, error vs full data, SEs, coverage."""
    out = {"truth": {}, "methods": {}}
    methods = METHODS_GROWING if "mi_delta_constant" in rows[0] else METHODS
    for term in TERMS:
        full = np.array([r["full"][term][0] for r in rows])
        truth = float(full.mean())
        out["truth"][term] = {"value": truth, "mc_se": float(full.std(ddof=1) / np.sqrt(full.size))}
        for method in methods:
            est, se, lo, hi = (np.array([r[method][term][i] for r in rows]) for i in range(4))
            cover = (lo <= truth) & (truth <= hi)
            err = est - full
            out["methods"].setdefault(method, {})[term] = {
                "mean": float(est.mean()), "bias": float(est.mean() - truth),
                "mc_se_bias": float(est.std(ddof=1) / np.sqrt(est.size)),
                "mean_error_vs_full": float(err.mean()), "mc_se_error": float(err.std(ddof=1) / np.sqrt(err.size)),
                "rmse_vs_full": float(np.sqrt(np.mean(err ** 2))),
                "empirical_se": float(est.std(ddof=1)), "mean_model_se": float(se.mean()),
                "coverage_95": float(cover.mean()),
                "mc_se_coverage": float(np.sqrt(cover.mean() * (1 - cover.mean()) / cover.size))}
    for term in TERMS:
        # the MAR analysis against the full data of the MAR world: what the imputation gets wrong before any shift
        err = np.array([r["mi_delta_0"][term][0] - r["full_unshifted"][term][0] for r in rows])
        out["methods"]["mi_delta_0"][term]["mean_error_vs_full_unshifted"] = float(err.mean())
        out["methods"]["mi_delta_0"][term]["mc_se_error_vs_full_unshifted"] = float(err.std(ddof=1) / np.sqrt(err.size))
    out["post_dropout_share"] = float(np.mean([r["post_dropout_share"] for r in rows]))
    out["intermittent_share"] = float(np.mean([r["intermittent_share"] for r in rows]))
    return out


def tipping_example(n_patients: int, m: int, shift: float, form: str = "constant") -> dict:
    """The tipping point of ``treat:t`` on the first registry (seed 7000)."""
    frame, _, _ = simulate_dropout_shift(7000, n_patients, shift=shift, form=form)
    imputed = impute_random_slopes(frame, target="y", predictors=["treat", "treat_t"], cluster="id", slopes=["t"],
                                   m=m, iterations=10, seed=7000)
    res = dropout_tipping_point(imputed.completed(frame), frame, variable="y", focus="treat_t",
                                rule=ChangeRule(relevant_difference=0.15), form=form, **MODEL)
    return {"reference": res.reference, "scale": res.scale, "tipping": res.to_frame().to_dict(orient="records"),
            "evaluations": res.evaluations.to_dict(orient="records")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--shift", type=float, default=1.0)
    parser.add_argument("--form", choices=("constant", "growing"), default="constant")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.out = args.out or (RESULTS_GROWING if args.form == "growing" else RESULTS)
    start = time.perf_counter()
    rows = []
    out = {"replicates": 0, "m": args.m, "patients": args.patients, "shift_D": args.shift, "form": args.form}
    out["tipping_example"] = tipping_example(args.patients, args.m, args.shift, args.form)
    for r in range(args.replicates):
        rows.append(one_replicate(7000 + r, args.patients, args.m, args.shift, args.form))
        if (r + 1) % 10 == 0 or r + 1 == args.replicates:
            out.update(replicates=r + 1, seconds=time.perf_counter() - start, **summarise(rows))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
            print(f"{r + 1} replicates, {time.perf_counter() - start:.0f} s", flush=True)
            for method, terms in out["methods"].items():
                print(" ", method, {t: {k: round(v, 3) for k, v in d.items()
                                        if k in ("bias", "mean_error_vs_full", "coverage_95")}
                                    for t, d in terms.items()}, flush=True)


if __name__ == "__main__":
    main()
