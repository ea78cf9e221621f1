"""Data with known truth from the general mixed model, for its reference fits, tests and benchmarks.

One simulator per structure, each a pure function of its seed (numpy's
``default_rng``) returning a tidy frame and the true parameters:

- :func:`simulate_nested`: patients in hospitals in (regions in) countries,
  random intercepts at every level; cluster sizes vary; inner labels
  restart within each enclosing cluster (``hospital`` 1, 2, ... in every
  country), as registries often number them.
- :func:`simulate_slopes`: visits in patients, a random intercept and a
  random slope on time per patient with their correlation; visits are
  missed at random, so patients have different numbers of visits.

Both have a gaussian and a binomial (logit) outcome. They are used by
``tests/test_mixed_general.py`` (which writes the lme4 reference data with
them), ``bench/mixed_general_truth.py`` and ``bench/bench_mixed_general.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["simulate_nested", "simulate_slopes"]


def _outcome(rng, eta, family: str, residual_sd: float) -> np.ndarray:
    if family == "gaussian":
        return eta + rng.normal(scale=residual_sd, size=eta.size)
    if family == "binomial":
        return (rng.uniform(size=eta.size) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    raise ValueError(f"unknown family {family!r}")


def simulate_nested(seed: int, *, levels=("country", "hospital"), branching=(20, 8), patients: float = 15.0,
                    sds=(0.5, 0.7), beta=(-0.5, 0.6, -0.4), family: str = "gaussian",
                    residual_sd: float = 1.0):
    """Patients in nested clusters with random intercepts at every level.

    Parameters
    ----------
    seed : int
    levels : tuple of str
        Names of the grouping levels, outermost first.
    branching : tuple of int
        Number of outermost clusters, then the mean number of subclusters
        per cluster at each further level (drawn between half and 1.5
        times the mean).
    patients : float
        Mean patients per innermost cluster (1 + Poisson(patients - 1)).
    sds : tuple of float
        SD of the random intercept at each level.
    beta : tuple of float
        Intercept, then the effects of ``x1`` (standard normal) and ``x2``
        (binary, probability 0.4).
    family : {"gaussian", "binomial"}
    residual_sd : float
        Gaussian only.

    Returns
    -------
    frame : pandas.DataFrame
        One row per patient: a column per level (outermost labels ``C01``...,
        inner labels restarting at 1 within their parent), ``x1``, ``x2``, ``y``.
    truth : dict
        ``{"fixed": {"Intercept", "x1", "x2"}, "sd": {level: sd}, "residual_sd"}``.
    """
    if len(levels) != len(branching) or len(levels) != len(sds):
        raise ValueError("levels, branching and sds need one entry per level")
    rng = np.random.default_rng(seed)
    paths = [np.arange(1, branching[0] + 1)]   # per level: each innermost-so-far cluster's label
    effects = [rng.normal(scale=sds[0], size=branching[0])]
    for k in range(1, len(levels)):
        counts = rng.integers(max(1, branching[k] // 2), int(np.ceil(1.5 * branching[k])) + 1,
                              size=paths[-1].size)
        parent = np.repeat(np.arange(counts.size), counts)
        own_label = np.concatenate([np.arange(1, c + 1) for c in counts])
        paths = [p[parent] for p in paths] + [own_label]
        effects = [e[parent] for e in effects] + [rng.normal(scale=sds[k], size=parent.size)]
    m = paths[-1].size
    sizes = 1 + rng.poisson(patients - 1.0, size=m)
    row_cluster = np.repeat(np.arange(m), sizes)
    n = row_cluster.size
    x1 = rng.normal(size=n)
    x2 = (rng.uniform(size=n) < 0.4).astype(float)
    eta = beta[0] + beta[1] * x1 + beta[2] * x2 + sum(e[row_cluster] for e in effects)
    y = _outcome(rng, eta, family, residual_sd)
    frame = pd.DataFrame({name: p[row_cluster] for name, p in zip(levels, paths)})
    frame[levels[0]] = [f"C{c:02d}" for c in frame[levels[0]]]
    frame["x1"], frame["x2"], frame["y"] = x1, x2, y
    truth = {"fixed": dict(zip(("Intercept", "x1", "x2"), map(float, beta))),
             "sd": {name: float(s) for name, s in zip(levels, sds)},
             "residual_sd": float(residual_sd) if family == "gaussian" else None}
    return frame, truth


def simulate_slopes(seed: int, *, patients: int = 200, visits: int = 6, spacing: float = 0.5,
                    missed: float = 0.2, beta=(1.0, -0.4, 0.5, 0.3), sd_intercept: float = 0.8,
                    sd_slope: float = 0.4, cor: float = -0.3, family: str = "gaussian",
                    residual_sd: float = 0.6):
    """Visits in patients with a correlated random intercept and slope on time.

    Parameters
    ----------
    seed : int
    patients, visits : int
        Patients, and scheduled visits per patient (times ``0, spacing,
        2 spacing, ...``).
    missed : float
        Probability that a scheduled visit after the first is missed.
    beta : tuple of float
        Intercept and the effects of ``time``, ``treat`` (binary, patient
        level) and ``age`` (standardised, patient level).
    sd_intercept, sd_slope, cor : float
        The patient-level covariance of (intercept, slope on time).
    family : {"gaussian", "binomial"}
    residual_sd : float
        Gaussian only.

    Returns
    -------
    frame : pandas.DataFrame
        One row per visit: ``patient``, ``time``, ``treat``, ``age``, ``y``.
    truth : dict
        ``{"fixed": {...}, "sd": {"Intercept", "time"}, "cor": cor, "residual_sd"}``.
    """
    rng = np.random.default_rng(seed)
    cov = np.array([[sd_intercept ** 2, cor * sd_intercept * sd_slope],
                    [cor * sd_intercept * sd_slope, sd_slope ** 2]])
    effects = rng.multivariate_normal(np.zeros(2), cov, size=patients)
    treat = (rng.uniform(size=patients) < 0.5).astype(float)
    age = rng.normal(size=patients)
    patient = np.repeat(np.arange(patients), visits)
    time = np.tile(np.arange(visits) * spacing, patients)
    keep = (time == 0) | (rng.uniform(size=patient.size) >= missed)
    patient, time = patient[keep], time[keep]
    eta = (beta[0] + beta[1] * time + beta[2] * treat[patient] + beta[3] * age[patient]
           + effects[patient, 0] + effects[patient, 1] * time)
    y = _outcome(rng, eta, family, residual_sd)
    frame = pd.DataFrame({"patient": patient + 1, "time": time, "treat": treat[patient], "age": age[patient],
                          "y": y})
    truth = {"fixed": dict(zip(("Intercept", "time", "treat", "age"), map(float, beta))),
             "sd": {"Intercept": float(sd_intercept), "time": float(sd_slope)}, "cor": float(cor),
             "residual_sd": float(residual_sd) if family == "gaussian" else None}
    return frame, truth
