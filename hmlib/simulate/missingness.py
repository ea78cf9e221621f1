"""Simulated registries whose missingness has a known structure, for the missing-data diagnostics.

Step 1 (:mod:`hmlib.steps.diagnose`) and step 2 (:mod:`hmlib.steps.complete_case`)
estimate how missingness varies between clusters, what predicts it, whether
it travels with the outcome and which clusters never record a variable; the
registries here have each of those built in, with the values that generated
them in ``<generator>_truth``. All draws come from one
``numpy.random.default_rng(seed)`` in the order the docstrings state (see
:mod:`hmlib.simulate.blocks`).

Generators
----------
missingness_registry
    Missingness with a cluster random intercept and within- and
    between-cluster effects of a covariate.
correlated_effects_registry
    Missingness and outcome cluster effects with a chosen correlation.
structural_gap_registry
    Sporadic missingness driven by the outcome's cluster effect, two clusters
    that never record ``x``, and a handful of random gaps in ``z``.
informative_missingness_registry
    Missingness that shifts the outcome in half of the clusters only.
level_missingness_registry
    Patients in hospitals in countries, missingness with an intercept at
    each level (and the SD of each known), for step 1's partition by level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.simulate.blocks import (bernoulli, cluster_index, correlated_normal_effects, equal_cluster_sizes,
                                   gaussian_draws, logistic_draws, normal_cluster_effects, random_gaps,
                                   with_gaps)

__all__ = [
    "missingness_registry",
    "missingness_registry_truth",
    "correlated_effects_registry",
    "correlated_effects_registry_truth",
    "structural_gap_registry",
    "structural_gap_registry_truth",
    "informative_missingness_registry",
    "informative_missingness_registry_truth",
    "level_missingness_registry",
    "level_missingness_registry_truth",
    "level_outcome_missingness_registry",
]


def missingness_registry(seed: int, n_clusters: int = 40, per_cluster: int = 50, cluster_sd: float = 1.5,
                         within: float = 0.0, between: float = 0.0, intercept: float = -0.5) -> pd.DataFrame:
    """A variable ``v`` missing with cluster-level variation and a covariate effect within and between clusters.

    Model, in draw order: cluster means ``m_j ~ N(0, 1)`` and ``x = m_j +
    N(0, 1)`` (ICC 0.5); missingness intercepts ``u_j ~ N(0, cluster_sd^2)``;
    ``logit P(v missing) = intercept + within (x - m_j) + between m_j +
    u_j``; ``g`` a three-level category (``a``, ``b``, ``c``, equally likely,
    unrelated to anything). ``v`` is 1.0 where recorded.

    Parameters
    ----------
    seed : int
    n_clusters, per_cluster : int, default 40 and 50
        Clusters coded ``0 .. n_clusters - 1`` in column ``c``.
    cluster_sd : float, default 1.5
        SD of the missingness random intercept on the logit scale (0: no
        cluster variation; the draws are made all the same).
    within, between : float, default 0
        Log odds ratios of missingness per unit of ``x``'s deviation from its
        cluster mean, and per unit of the cluster mean.
    intercept : float, default -0.5

    Returns
    -------
    pandas.DataFrame
        Columns ``c, x, v, g``.

    See Also
    --------
    missingness_registry_truth
    """
    rng = np.random.default_rng(seed)
    c = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    cluster_mean_x = rng.normal(0, 1, n_clusters)
    x = gaussian_draws(rng, cluster_mean_x[c])
    u = normal_cluster_effects(rng, n_clusters, cluster_sd)[c]
    eta = intercept + within * (x - cluster_mean_x[c]) + between * cluster_mean_x[c] + u
    v = with_gaps(np.ones(c.size), logistic_draws(rng, eta))
    return pd.DataFrame({"c": c, "x": x, "v": v, "g": rng.choice(["b", "a", "c"], c.size)})


def missingness_registry_truth(cluster_sd: float = 1.5, within: float = 0.0, between: float = 0.0,
                               intercept: float = -0.5) -> dict:
    """Values that generated :func:`missingness_registry`.

    Returns
    -------
    dict
        ``missingness`` (``intercept``, ``within``, ``between``, ``sd(c)``
        on the logit scale) and ``x`` (``icc`` 0.5).
    """
    return {
        "generator": "hmlib.simulate.missingness.missingness_registry",
        "model": "logit P(v missing) = intercept + within (x - m_c) + between m_c + u_c, u ~ N(0, sd^2)",
        "missingness": {"intercept": intercept, "within": within, "between": between, "sd(c)": cluster_sd},
        "x": {"icc": 0.5},
    }


def correlated_effects_registry(seed: int, rho: float, n_clusters: int = 80,
                                per_cluster: int = 40) -> pd.DataFrame:
    """Cluster effects on missingness and on the outcome with correlation ``rho``.

    Model, in draw order: ``(w_j, u_j)`` standard bivariate normal with
    correlation ``rho``; age ``N(0, 1)``; ``y = 1 + 0.5 age + u_j + N(0, 1)``;
    ``logit P(lab missing) = -0.5 + 1.2 w_j``. ``lab`` is 1.0 where recorded.

    Returns
    -------
    pandas.DataFrame
        Columns ``c, y, age, lab``.
    """
    rng = np.random.default_rng(seed)
    c = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    effects = correlated_normal_effects(rng, n_clusters, rho)
    age = rng.normal(0, 1, c.size)
    y = gaussian_draws(rng, 1 + 0.5 * age + effects[c, 1])
    lab = with_gaps(np.ones(c.size), logistic_draws(rng, -0.5 + 1.2 * effects[c, 0]))
    return pd.DataFrame({"c": c, "y": y, "age": age, "lab": lab})


def correlated_effects_registry_truth(rho: float) -> dict:
    """Values that generated :func:`correlated_effects_registry`."""
    return {
        "generator": "hmlib.simulate.missingness.correlated_effects_registry",
        "terms": {"Intercept": 1.0, "age": 0.5, "sd(c)": 1.0, "residual_sd": 1.0},
        "missingness": {"intercept": -0.5, "sd(c)": 1.2},
        "corr(missingness, outcome)": rho,
    }


def structural_gap_registry(seed: int = 3, n_clusters: int = 30, per_cluster: int = 25,
                            structural=(4, 9), n_sporadic: int = 8) -> pd.DataFrame:
    """``x`` missing by site, never recorded in the ``structural`` sites; ``z`` missing for ``n_sporadic`` patients.

    Model, in draw order: site effects ``u_j ~ N(0, 1)``; age ``N(60,
    10^2)``; sex ``f`` or ``m``; ``x ~ N(2, 1)``; ``logit P(y) = -1 + 0.3 x +
    0.5 u_j``; ``logit P(x missing) = -1.2 + u_j`` (sites with higher
    outcome also miss more); ``x`` missing in every patient of the
    ``structural`` sites; ``z ~ N(0, 1)`` with exactly ``n_sporadic`` random
    patients missing (a count below the small-cell threshold).

    Returns
    -------
    pandas.DataFrame
        Columns ``site, y, age, sex, x, z``; sites numbered ``1 .. n_clusters``.
    """
    rng = np.random.default_rng(seed)
    site = cluster_index(equal_cluster_sizes(n_clusters, per_cluster)) + 1
    n = site.size
    u = normal_cluster_effects(rng, n_clusters, 1.0)[site - 1]
    age = rng.normal(60, 10, n)
    sex = rng.choice(["f", "m"], n)
    x = rng.normal(2, 1, n)
    y = logistic_draws(rng, -1 + 0.3 * x + 0.5 * u).astype(float)
    x = with_gaps(x, logistic_draws(rng, -1.2 + 1.0 * u) | np.isin(site, structural))
    z = rng.normal(size=n)
    z = with_gaps(z, random_gaps(rng, n, n_sporadic))
    return pd.DataFrame({"site": site, "y": y, "age": age, "sex": sex, "x": x, "z": z})


def structural_gap_registry_truth(structural=(4, 9), n_sporadic: int = 8) -> dict:
    """Values that generated :func:`structural_gap_registry`."""
    return {
        "generator": "hmlib.simulate.missingness.structural_gap_registry",
        "terms": {"Intercept": -1.0, "x": 0.3, "sd(site)": 0.5},
        "missingness": {"x": {"intercept": -1.2, "sd(site)": 1.0, "corr(missingness, outcome)": 1.0}},
        "structural_clusters": list(structural),
        "n_missing": {"z": n_sporadic},
    }


def informative_missingness_registry(seed: int = 11, n_clusters: int = 30, per_cluster: int = 150,
                                     missing: float = 0.4, effect: float = 1.5) -> pd.DataFrame:
    """Missingness that raises the outcome's log odds by ``effect`` in even-numbered clusters only.

    Model, in draw order: ``m`` (the missingness indicator) Bernoulli
    ``missing``; outcome intercepts ``u_j ~ N(0, 0.3^2)``; ``logit P(y) =
    -1.5 + u_j + effect m [j even]``.

    Returns
    -------
    pandas.DataFrame
        Columns ``site`` (``0 .. n_clusters - 1``), ``y``, ``m`` (1.0 if missing).
    """
    rng = np.random.default_rng(seed)
    site = cluster_index(equal_cluster_sizes(n_clusters, per_cluster))
    miss = bernoulli(rng, missing, site.size)
    informative = site % 2 == 0
    eta = -1.5 + normal_cluster_effects(rng, n_clusters, 0.3)[site] + np.where(informative & miss, effect, 0.0)
    y = logistic_draws(rng, eta).astype(float)
    return pd.DataFrame({"site": site, "y": y, "m": miss.astype(float)})


def informative_missingness_registry_truth(missing: float = 0.4, effect: float = 1.5) -> dict:
    """Values that generated :func:`informative_missingness_registry`."""
    return {
        "generator": "hmlib.simulate.missingness.informative_missingness_registry",
        "terms": {"Intercept": -1.5, "sd(site)": 0.3},
        "indicator_effect": {"even clusters": effect, "odd clusters": 0.0},
        "missing_share": {"m": missing},
    }


def level_missingness_registry(seed: int, n_countries: int = 30, hospitals_per_country: int = 8,
                               per_hospital: int = 40, country_sd: float = 0.6, hospital_sd: float = 0.4,
                               intercept: float = -1.5) -> pd.DataFrame:
    """A variable ``v`` missing with random intercepts at two levels: hospitals in countries.

    Model, in draw order: country intercepts ``a_k ~ N(0, country_sd^2)``,
    hospital intercepts ``b_j ~ N(0, hospital_sd^2)`` (hospitals numbered
    across countries, ``hospitals_per_country`` in each); ``logit P(v
    missing) = intercept + a_k + b_j``. ``v`` is 1.0 where recorded.

    Parameters
    ----------
    seed : int
    n_countries, hospitals_per_country, per_hospital : int, default 30, 8 and 40
        Countries ``K00 ..`` in column ``country``, hospitals ``H000 ..`` in
        column ``hospital``; 9,600 patients by default.
    country_sd, hospital_sd : float, default 0.6 and 0.4
        SDs of the two levels' intercepts on the logit scale.
    intercept : float, default -1.5

    Returns
    -------
    pandas.DataFrame
        Columns ``country, hospital, v``.

    See Also
    --------
    level_missingness_registry_truth
    """
    rng = np.random.default_rng(seed)
    n_hospitals = n_countries * hospitals_per_country
    j = cluster_index(equal_cluster_sizes(n_hospitals, per_hospital))
    k = j // hospitals_per_country
    a = normal_cluster_effects(rng, n_countries, country_sd)
    b = normal_cluster_effects(rng, n_hospitals, hospital_sd)
    v = with_gaps(np.ones(j.size), logistic_draws(rng, intercept + a[k] + b[j]))
    return pd.DataFrame({"country": np.char.add("K", np.char.zfill(k.astype(str), 2)),
                         "hospital": np.char.add("H", np.char.zfill(j.astype(str), 3)), "v": v})


def level_missingness_registry_truth(country_sd: float = 0.6, hospital_sd: float = 0.4,
                                     intercept: float = -1.5) -> dict:
    """Values that generated :func:`level_missingness_registry`.

    Returns
    -------
    dict
        ``missingness``: ``intercept``, ``sd(country)``, ``sd(hospital)``
        (within its country) and ``two_level_sd(hospital)``, the SD a model
        without the country level should find, ``sqrt(country_sd^2 +
        hospital_sd^2)``.
    """
    return {
        "generator": "hmlib.simulate.missingness.level_missingness_registry",
        "model": "logit P(v missing) = intercept + a_country + b_hospital, a ~ N(0, sd_c^2), b ~ N(0, sd_h^2)",
        "missingness": {"intercept": intercept, "sd(country)": country_sd, "sd(hospital)": hospital_sd,
                        "two_level_sd(hospital)": float(np.hypot(country_sd, hospital_sd))},
    }


def level_outcome_missingness_registry(seed: int, n_countries: int = 30, hospitals_per_country: int = 8,
                                       per_hospital: int = 40, country_sd: float = 0.6, hospital_sd: float = 0.4,
                                       country_correlation: float = 0.8, hospital_correlation: float = 0.0,
                                       intercept: float = -1.5) -> pd.DataFrame:
    """A predictor ``v`` missing at two levels, and an outcome whose level effects share the missingness's.

    Model, in draw order: per country the pair (missingness intercept
    ``a_k``, outcome intercept ``c_k``), bivariate normal with SDs
    ``country_sd`` and correlation ``country_correlation``; per hospital
    (``b_j``, ``h_j``) likewise with ``hospital_sd`` and
    ``hospital_correlation``; ``x ~ N(0, 1)``; ``y = 1 + 0.5 x + c_k + h_j
    + e``, ``e ~ N(0, 1)``; ``v = x + N(0, 1)``, missing with ``logit P =
    intercept + a_k + b_j``; a binary outcome ``yb`` with ``logit P(yb = 1)
    = -0.5 + 0.5 x + c_k + h_j``. ``x``, ``y`` and ``yb`` are complete.

    Parameters
    ----------
    seed : int
    n_countries, hospitals_per_country, per_hospital : int, default 30, 8 and 40
    country_sd, hospital_sd : float, default 0.6 and 0.4
        SDs of each level's intercepts, the same in both models.
    country_correlation, hospital_correlation : float, default 0.8 and 0.0
        Correlation of missingness and outcome intercepts at each level.
    intercept : float, default -1.5

    Returns
    -------
    pandas.DataFrame
        Columns ``country, hospital, x, v, y, yb``.
    """
    rng = np.random.default_rng(seed)
    n_hospitals = n_countries * hospitals_per_country
    j = cluster_index(equal_cluster_sizes(n_hospitals, per_hospital))
    k = j // hospitals_per_country

    def pairs(m, sd, rho):
        z = rng.standard_normal((m, 2))
        return sd * z[:, 0], sd * (rho * z[:, 0] + np.sqrt(1.0 - rho ** 2) * z[:, 1])

    a, c = pairs(n_countries, country_sd, country_correlation)
    b, h = pairs(n_hospitals, hospital_sd, hospital_correlation)
    x = rng.standard_normal(j.size)
    y = 1.0 + 0.5 * x + c[k] + h[j] + rng.standard_normal(j.size)
    v = with_gaps(x + rng.standard_normal(j.size), logistic_draws(rng, intercept + a[k] + b[j]))
    yb = logistic_draws(rng, -0.5 + 0.5 * x + c[k] + h[j]).astype(float)
    return pd.DataFrame({"country": np.char.add("K", np.char.zfill(k.astype(str), 2)),
                         "hospital": np.char.add("H", np.char.zfill(j.astype(str), 3)), "x": x, "v": v, "y": y,
                         "yb": yb})
