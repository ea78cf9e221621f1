"""Small simulated registries for the tests of the steps, the imputation engine and the report.

Each generator draws one clustered registry from ``numpy.random.default_rng(seed)``
with the blocks of :mod:`hmlib.simulate.blocks`, in a fixed order: the tests'
expected numbers depend on these draws, so a change of order or of a model
value is a change of every result built on them. Each ``<generator>_truth``
returns the values that generated the data (JSON-ready): ``terms`` keys the
outcome model's coefficients as hmlib's results contract does (``Intercept``,
``age``, ``sex[male]``, ``sd(site)``), ``missing_share`` the expected share
of missing values per incomplete column.

Generators
----------
small_registry
    Twelve sites of 25 patients, a binary outcome, ``lab`` MCAR: the default
    registry of the data, step and report tests.
icc_registry
    ``lab`` with a chosen intraclass correlation and MCAR share (step 3).
icc_imputation_data
    ``x`` with a chosen ICC, an outcome with its own cluster effect (the
    imputation engine's tests).
few_clusters_data
    Four clinics, one of which never measures ``x`` (imputation with few
    clusters).
shifted_cluster_registry
    ``x`` MCAR, optionally one cluster shifted after the outcome was drawn
    (the transportability check).
graded_missingness_registry
    Ten clusters with exactly 0, 3, ..., 24 missing ``x`` each and a gaussian
    outcome (step 5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.simulate.blocks import (bernoulli, cluster_index, cluster_labels, clustered_normal,
                                   equal_cluster_sizes, exact_missing_counts, gaussian_draws,
                                   logistic_draws, normal_cluster_effects, with_gaps)

__all__ = [
    "SMALL_REGISTRY_MODEL",
    "small_registry",
    "small_registry_truth",
    "icc_registry",
    "icc_registry_truth",
    "icc_imputation_data",
    "icc_imputation_data_truth",
    "few_clusters_data",
    "few_clusters_data_truth",
    "shifted_cluster_registry",
    "shifted_cluster_registry_truth",
    "GRADED_MISSING_PER_CLUSTER",
    "graded_missingness_registry",
    "graded_missingness_registry_truth",
    "calorie_registry",
    "calorie_registry_truth",
]


def _r(x: float) -> float:
    """A derived truth value, rounded so that ``0.03 * 50`` reads 1.5."""
    return round(float(x), 10)


# --------------------------------------------------------------------------
# small_registry
# --------------------------------------------------------------------------
#: Model of :func:`small_registry` (coefficients per unit, age centred at ``age_mean``).
SMALL_REGISTRY_MODEL = {
    "cluster_sd": 0.5,
    "age_mean": 50.0, "age_sd": 10.0,
    "lab_mean": 2.0, "lab_sd": 1.0,
    "intercept": -2.0, "age": 0.03, "lab": 0.5,
    "lab_missing": 0.2,
}


def small_registry(seed: int = 0, n_clusters: int = 12, per_cluster: int = 25, *,
                   family: str = "binomial") -> pd.DataFrame:
    """A tidy clustered frame with a binary outcome and one incomplete predictor.

    Model (constants :data:`SMALL_REGISTRY_MODEL`), in draw order: site
    intercepts ``u_j ~ N(0, 0.5^2)``; age ``N(50, 10^2)`` (1 decimal); sex
    female or male with probability 1/2; lab ``N(2, 1)`` (2 decimals);
    ``logit P(died) = -2 + 0.03 (age - 50) + 0.5 lab + u_j``; lab missing
    completely at random in 20 %. ``site_type`` is ``"A"`` for odd site
    numbers, ``"B"`` for even ones.

    With ``family="gaussian"`` the same draws are followed by new site
    intercepts ``v_j ~ N(0, 0.5^2)`` and a gaussian ``score = 1 + 0.02 (age -
    50) + 0.5 lab + v_j + e``, ``e ~ N(0, 1)`` (2 decimals, from lab before its
    gaps), which replaces ``died``: a site SD that 25 patients per site
    identify well (the joint model's sampling tests).

    Parameters
    ----------
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.
    n_clusters : int, default 12
        Sites, labelled ``S00``, ``S01``, ...
    per_cluster : int, default 25
        Patients per site.
    family : {"binomial", "gaussian"}, default "binomial"
        The outcome: ``died`` or ``score``.

    Returns
    -------
    pandas.DataFrame
        Columns ``site, site_type, age, sex, lab, died`` (or ``score``); sites in order.

    See Also
    --------
    small_registry_truth

    Examples
    --------
    >>> frame = small_registry(seed=1)
    >>> frame.shape
    (300, 6)
    """
    if family not in ("binomial", "gaussian"):
        raise ValueError(f"family must be 'binomial' or 'gaussian', got {family!r}.")
    m = SMALL_REGISTRY_MODEL
    rng = np.random.default_rng(seed)
    cluster = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    n = cluster.size
    u = normal_cluster_effects(rng, n_clusters, m["cluster_sd"])
    age = rng.normal(m["age_mean"], m["age_sd"], n).round(1)
    sex = rng.choice(["female", "male"], n)
    lab = rng.normal(m["lab_mean"], m["lab_sd"], n).round(2)
    eta = m["intercept"] + m["age"] * (age - m["age_mean"]) + m["lab"] * lab + u[cluster]
    died = logistic_draws(rng, eta).astype(int)
    recorded = with_gaps(lab, bernoulli(rng, m["lab_missing"], n))
    frame = pd.DataFrame({"site": cluster_labels(n_clusters, "S")[cluster],
                          "site_type": np.where(cluster % 2, "A", "B"), "age": age, "sex": sex,
                          "lab": recorded, "died": died})
    if family == "binomial":
        return frame
    v = normal_cluster_effects(rng, n_clusters, m["cluster_sd"])
    score = gaussian_draws(rng, 1.0 + 0.02 * (age - m["age_mean"]) + m["lab"] * lab + v[cluster])
    return frame.drop(columns="died").assign(score=score.round(2))


def small_registry_truth() -> dict:
    """Values that generated :func:`small_registry` (age uncentred in ``terms``).

    Returns
    -------
    dict
        ``terms`` (``Intercept``, ``age``, ``sex[male]``, ``lab``,
        ``sd(site)``) and ``missing_share`` (``lab``).
    """
    m = SMALL_REGISTRY_MODEL
    return {
        "generator": "hmlib.simulate.registries.small_registry",
        "model": "logit P(died) = -2 + 0.03 (age - 50) + 0.5 lab + u_site, u ~ N(0, 0.5^2); lab MCAR 20%",
        "terms": {"Intercept": _r(m["intercept"] - m["age"] * m["age_mean"]), "age": m["age"],
                  "sex[male]": 0.0, "lab": m["lab"], "sd(site)": m["cluster_sd"]},
        "missing_share": {"lab": m["lab_missing"]},
    }


# --------------------------------------------------------------------------
# icc_registry
# --------------------------------------------------------------------------
def icc_registry(seed: int = 0, n_clusters: int = 40, per_cluster: int = 30, icc: float = 0.5,
                 missing: float = 0.5) -> pd.DataFrame:
    """A registry whose incomplete ``lab`` has intraclass correlation ``icc``.

    Model, in draw order: age ``N(50, 10^2)``; ``lab = sqrt(icc) a_j +
    sqrt(1 - icc) e_i`` (:func:`~hmlib.simulate.blocks.clustered_normal`,
    variance 1); ``logit P(died) = -1 + 0.5 lab`` (no site effect); lab
    missing completely at random with probability ``missing``; sex female or
    male with probability 1/2.

    Parameters
    ----------
    seed : int, default 0
    n_clusters : int, default 40
        Sites ``S00``, ``S01``, ...
    per_cluster : int, default 30
    icc : float, default 0.5
        Share of lab's variance between sites.
    missing : float, default 0.5
        Probability that lab is missing.

    Returns
    -------
    pandas.DataFrame
        Columns ``site, age, sex, lab, died``.

    See Also
    --------
    icc_registry_truth
    """
    rng = np.random.default_rng(seed)
    cluster = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    n = cluster.size
    age = rng.normal(50, 10, n)
    lab = clustered_normal(rng, cluster, n_clusters, icc)
    died = logistic_draws(rng, -1 + 0.5 * lab).astype(int)
    lab = with_gaps(lab, bernoulli(rng, missing, n))
    sex = rng.choice(["female", "male"], n)
    return pd.DataFrame({"site": cluster_labels(n_clusters, "S")[cluster], "age": age, "sex": sex,
                         "lab": lab, "died": died})


def icc_registry_truth(icc: float = 0.5, missing: float = 0.5) -> dict:
    """Values that generated :func:`icc_registry`: ``terms``, lab's ``icc``, ``missing_share``."""
    return {
        "generator": "hmlib.simulate.registries.icc_registry",
        "model": "lab = sqrt(icc) a_site + sqrt(1 - icc) e; logit P(died) = -1 + 0.5 lab; lab MCAR",
        "terms": {"Intercept": -1.0, "age": 0.0, "sex[male]": 0.0, "lab": 0.5, "sd(site)": 0.0},
        "icc": {"lab": icc},
        "missing_share": {"lab": missing},
    }


# --------------------------------------------------------------------------
# icc_imputation_data
# --------------------------------------------------------------------------
def icc_imputation_data(seed: int = 0, n_clusters: int = 30, per_cluster: int = 20, icc: float = 0.4,
                        missing: float = 0.3, binary_outcome: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """An outcome depending on ``x``; ``x`` with intraclass correlation ``icc``, MCAR.

    Model, in draw order: ``x = sqrt(icc) a_j + sqrt(1 - icc) e_i``
    (variance 1); outcome cluster effect ``u_j ~ N(0, 0.5^2)`` and ``eta =
    -1 + 0.8 x + u_j``; ``y ~ Bernoulli(expit(eta))`` or, with
    ``binary_outcome=False``, ``y = eta + N(0, 1)``; ``x`` missing completely
    at random with probability ``missing``.

    Parameters
    ----------
    seed : int, default 0
    n_clusters, per_cluster : int, default 30 and 20
        Clusters are coded ``0 .. n_clusters - 1``.
    icc : float, default 0.4
    missing : float, default 0.3
    binary_outcome : bool, default True

    Returns
    -------
    frame : pandas.DataFrame
        Columns ``site, y, x`` (``x`` with gaps).
    x : numpy.ndarray
        ``x`` before values went missing.
    """
    rng = np.random.default_rng(seed)
    site = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    x = clustered_normal(rng, site, n_clusters, icc)
    eta = -1 + 0.8 * x + normal_cluster_effects(rng, n_clusters, 0.5)[site]
    y = logistic_draws(rng, eta).astype(float) if binary_outcome else gaussian_draws(rng, eta)
    x_observed = with_gaps(x, bernoulli(rng, missing, site.size))
    return pd.DataFrame({"site": site, "y": y, "x": x_observed}), x


def icc_imputation_data_truth(icc: float = 0.4, missing: float = 0.3, binary_outcome: bool = True) -> dict:
    """Values that generated :func:`icc_imputation_data`."""
    return {
        "generator": "hmlib.simulate.registries.icc_imputation_data",
        "terms": {"Intercept": -1.0, "x": 0.8, "sd(site)": 0.5,
                  **({} if binary_outcome else {"residual_sd": 1.0})},
        "icc": {"x": icc},
        "missing_share": {"x": missing},
    }


# --------------------------------------------------------------------------
# few_clusters_data
# --------------------------------------------------------------------------
def few_clusters_data(seed: int = 1, n_clusters: int = 4, per_cluster: int = 60,
                      unmeasured_cluster: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """A few clinics; ``x`` depends on two patient-level predictors; one clinic never measures ``x``.

    Model, in draw order: ``age = N(0, 1) + N(0, 0.3^2)_j`` and likewise
    ``sev``; ``x = 0.5 age + 0.3 sev + N(0, 0.5^2)_j + N(0, 1)``; ``logit
    P(y) = -0.5 + 0.5 x``; ``x`` missing in clinic ``unmeasured_cluster``
    (a structural gap) and completely at random in 20 % elsewhere.

    Returns
    -------
    frame : pandas.DataFrame
        Columns ``site, y, age, sev, x`` (``x`` with gaps; clinics coded ``0 .. J - 1``).
    x : numpy.ndarray
        ``x`` before values went missing.
    """
    rng = np.random.default_rng(seed)
    site = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    n = site.size
    age = rng.normal(0, 1, n) + normal_cluster_effects(rng, n_clusters, 0.3)[site]
    sev = rng.normal(0, 1, n) + normal_cluster_effects(rng, n_clusters, 0.3)[site]
    x = gaussian_draws(rng, 0.5 * age + 0.3 * sev + normal_cluster_effects(rng, n_clusters, 0.5)[site])
    y = logistic_draws(rng, -0.5 + 0.5 * x).astype(float)
    missing = (site == unmeasured_cluster) | bernoulli(rng, 0.2, n)
    return pd.DataFrame({"site": site, "y": y, "age": age, "sev": sev, "x": with_gaps(x, missing)}), x


def few_clusters_data_truth(unmeasured_cluster: int = 3) -> dict:
    """Values that generated :func:`few_clusters_data`."""
    return {
        "generator": "hmlib.simulate.registries.few_clusters_data",
        "terms": {"Intercept": -0.5, "x": 0.5, "sd(site)": 0.0},
        "x_model": {"age": 0.5, "sev": 0.3, "cluster_sd": 0.5, "residual_sd": 1.0},
        "structural_clusters": [unmeasured_cluster],
        "missing_share": {"x": 0.2},
    }


# --------------------------------------------------------------------------
# shifted_cluster_registry
# --------------------------------------------------------------------------
def shifted_cluster_registry(seed: int = 0, n_clusters: int = 15, per_cluster: int = 80,
                             cluster_sd: float = 0.0, missing: float = 0.25,
                             shift: tuple[int, float] | None = None) -> pd.DataFrame:
    """``x`` (the focus) with optional cluster effects, an outcome depending on ``x``, ``x`` MCAR.

    Model, in draw order: age ``N(0, 1)``; ``x = 0.3 age + cluster_sd a_j +
    N(0, 1)``; ``logit P(y) = -1 + 0.5 x + 0.3 age``; then ``shift =
    (cluster index, amount)`` moves that cluster's ``x`` (and only ``x``) by
    ``amount`` *after* the outcome was drawn from the unshifted ``x``: a
    cluster whose values the others cannot predict; last, ``x`` missing
    completely at random with probability ``missing``.

    Returns
    -------
    pandas.DataFrame
        Columns ``site, y, age, x``; sites ``S00``, ``S01``, ...
    """
    rng = np.random.default_rng(seed)
    cluster = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    n = cluster.size
    age = rng.normal(0, 1, n)
    x = gaussian_draws(rng, 0.3 * age + normal_cluster_effects(rng, n_clusters, cluster_sd)[cluster])
    y = logistic_draws(rng, -1 + 0.5 * x + 0.3 * age).astype(float)
    if shift is not None:
        x = np.where(cluster == shift[0], x + shift[1], x)
    x = with_gaps(x, bernoulli(rng, missing, n))
    return pd.DataFrame({"site": cluster_labels(n_clusters, "S")[cluster], "y": y, "age": age, "x": x})


def shifted_cluster_registry_truth(cluster_sd: float = 0.0, missing: float = 0.25) -> dict:
    """Values that generated :func:`shifted_cluster_registry` (before any shift)."""
    return {
        "generator": "hmlib.simulate.registries.shifted_cluster_registry",
        "terms": {"Intercept": -1.0, "age": 0.3, "x": 0.5, "sd(site)": 0.0},
        "x_model": {"age": 0.3, "cluster_sd": cluster_sd, "residual_sd": 1.0},
        "missing_share": {"x": missing},
    }


# --------------------------------------------------------------------------
# graded_missingness_registry
# --------------------------------------------------------------------------
#: Missing ``x`` per cluster of 30 in :func:`graded_missingness_registry`: shares 0, .1, ..., .8 and 0.
GRADED_MISSING_PER_CLUSTER = (0, 3, 6, 9, 12, 15, 18, 21, 24, 0)


def graded_missingness_registry(seed: int = 0, *, missing_per_cluster=GRADED_MISSING_PER_CLUSTER,
                                per_cluster: int = 30, small_cluster: bool = False) -> pd.DataFrame:
    """Clusters with exactly ``missing_per_cluster`` missing ``x``; ``z`` flags the missing ``x``.

    Model, in draw order: age ``N(50, 10^2)`` (1 decimal); ``x = 2 + 0.02
    (age - 50) + N(0, 0.5^2)_j + N(0, 1)``; ``y = 1 + 0.8 x + 0.03 (age -
    50) + N(0, 0.5^2)_j + N(0, 1)`` (gaussian); in cluster ``j`` exactly
    ``missing_per_cluster[j]`` patients chosen at random miss ``x``
    (:func:`~hmlib.simulate.blocks.exact_missing_counts`). ``x`` and ``y``
    are written with 3 decimals; ``site_type`` alternates ``A``, ``B`` by
    cluster.

    Parameters
    ----------
    seed : int, default 0
    missing_per_cluster : sequence of int, default :data:`GRADED_MISSING_PER_CLUSTER`
        One count per cluster (clusters ``C0``, ``C1``, ...).
    per_cluster : int, default 30
    small_cluster : bool, default False
        Add a cluster ``C<J>`` of 6 patients whose ``x`` is never recorded
        (``site_type`` ``A``, ``y ~ N(3, 1)``), drawn last.

    Returns
    -------
    pandas.DataFrame
        Columns ``site, site_type, age, x, z, y``.
    """
    rng = np.random.default_rng(seed)
    n_clusters = len(missing_per_cluster)
    cluster = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    n = cluster.size
    age = rng.normal(50, 10, n).round(1)
    x = gaussian_draws(rng, 2 + 0.02 * (age - 50) + normal_cluster_effects(rng, n_clusters, 0.5)[cluster])
    y = gaussian_draws(rng, 1 + 0.8 * x + 0.03 * (age - 50)
                       + normal_cluster_effects(rng, n_clusters, 0.5)[cluster])
    missing = exact_missing_counts(rng, missing_per_cluster, per_cluster)
    frame = pd.DataFrame({"site": cluster_labels(n_clusters, "C", width=1)[cluster],
                          "site_type": np.where(cluster % 2, "B", "A"), "age": age,
                          "x": with_gaps(x, missing).round(3), "z": missing.astype(float), "y": y.round(3)})
    if small_cluster:
        extra = pd.DataFrame({"site": f"C{n_clusters}", "site_type": "A", "age": rng.normal(50, 10, 6).round(1),
                              "x": np.nan, "z": 1.0, "y": rng.normal(3, 1, 6).round(3)})
        frame = pd.concat([frame, extra], ignore_index=True)
    return frame


def graded_missingness_registry_truth() -> dict:
    """Values that generated :func:`graded_missingness_registry` (age uncentred in ``terms``)."""
    return {
        "generator": "hmlib.simulate.registries.graded_missingness_registry",
        "terms": {"Intercept": _r(1 - 0.03 * 50), "age": 0.03, "x": 0.8, "sd(site)": 0.5, "residual_sd": 1.0},
        "x_model": {"intercept": _r(2 - 0.02 * 50), "age": 0.02, "cluster_sd": 0.5, "residual_sd": 1.0},
        "missing_per_cluster": list(GRADED_MISSING_PER_CLUSTER),
    }


# --------------------------------------------------------------------------
# calorie_registry
# --------------------------------------------------------------------------
def calorie_registry(seed: int = 0, *, odds_ratio_per_sd: float = 1.0, n_clusters: int = 12, per_cluster: int = 60,
                     missing_shares=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5)) -> pd.DataFrame:
    """A focus variable in large raw units (kcal): its coefficient per kcal is tiny whatever the effect.

    Model, in draw order: age ``N(0, 1)``; ``calories = 1800 + 100 age +
    150 a_j + N(0, 450^2)`` (1 decimal; ``a_j ~ N(0, 1)`` per cluster);
    ``logit P(y) = -0.5 + log(odds_ratio_per_sd) (calories - 1800) / 480 +
    0.3 age + N(0, 0.3^2)_j`` (480 is about the SD of calories); then in
    cluster ``j`` a share ``missing_shares[j mod len]`` of patients, chosen
    at random, miss ``calories`` (MAR given the cluster).

    The step-5 rule (:mod:`hmlib.steps.sensitivity_rule`) is tested on it:
    with ``odds_ratio_per_sd = 1`` the coefficient per kcal is about 0 and a
    scenario moves it by several times its own size without meaning anything.

    Returns
    -------
    pandas.DataFrame
        Columns ``site, y, age, calories``; sites ``H00``, ``H01``, ...
    """
    rng = np.random.default_rng(seed)
    cluster = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    n = cluster.size
    age = rng.normal(0, 1, n)
    calories = gaussian_draws(rng, 1800 + 100 * age + 150 * normal_cluster_effects(rng, n_clusters, 1.0)[cluster],
                              sd=450.0)
    eta = (-0.5 + np.log(odds_ratio_per_sd) * (calories - 1800) / 480 + 0.3 * age
           + normal_cluster_effects(rng, n_clusters, 0.3)[cluster])
    y = logistic_draws(rng, eta).astype(float)
    shares = np.asarray(missing_shares, dtype=float)[np.arange(n_clusters) % len(missing_shares)]
    missing = bernoulli(rng, shares[cluster], n)
    return pd.DataFrame({"site": cluster_labels(n_clusters, "H")[cluster], "y": y, "age": age,
                         "calories": with_gaps(calories, missing).round(1)})


def calorie_registry_truth(odds_ratio_per_sd: float = 1.0) -> dict:
    """Values that generated :func:`calorie_registry` (the calories term per kcal)."""
    return {
        "generator": "hmlib.simulate.registries.calorie_registry",
        "terms": {"Intercept": _r(-0.5 - float(np.log(odds_ratio_per_sd)) * 1800 / 480), "age": 0.3,
                  "calories": float(np.log(odds_ratio_per_sd)) / 480, "sd(site)": 0.3},
        "calories_model": {"mean": 1800, "age": 100, "cluster_sd": 150, "residual_sd": 450},
    }
