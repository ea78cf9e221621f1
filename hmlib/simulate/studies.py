"""Registry-sized simulated data for the benchmarks and the simulation studies with known truth.

These generators make registries of thousands of patients in tens to
hundreds of sites, as the report meets in practice: skewed site sizes, site
effects on outcome, lactate and documentation, missingness at random given
site and severity, structural gaps. The truth studies
(``bench/imputation_truth.py``, ``bench/joint_truth.py``) check that a method
recovers ``truth_study_registry_truth()``; the timing benchmarks
(``bench/bench_imputation.py``, ``bench/bench_diagnose.py``) need only the
size and shape. All draws come from one ``numpy.random.default_rng(seed)``
in the order the docstrings state (see :mod:`hmlib.simulate.blocks`).

Generators
----------
truth_study_registry
    The trauma registry of the imputation and joint-model truth studies
    (4,000 patients in 40 sites by default).
large_registry
    20,000 patients in 500 clusters with three incomplete variables (two
    continuous, one binary): the imputation timing benchmark.
multi_gap_registry
    20,000 patients in 500 sites with three incomplete variables, each with
    its own mechanism: the step 1 timing benchmark.
three_level_registry
    Patients in hospitals in countries, an incomplete predictor with
    variation at both levels, missing by country and by outcome, two
    countries that never record it: the three-level imputation truth study.
small_site_registry
    About 1,830 patients in 400 sites of 2 to about 20 (mean 4.6), an incomplete
    binary predictor whose chance varies strongly between sites: the truth
    study of the random-intercept logistic imputation in small clusters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from hmlib.simulate.blocks import (bernoulli, cluster_index, correlated_cluster_effect, logistic_draws,
                                   lognormal_cluster_sizes, lowest_clusters, multinomial_cluster_sizes,
                                   normal_cluster_effects, scaled_uniform_cluster_sizes, standardise,
                                   with_gaps)

__all__ = [
    "TRUTH_STUDY_MODEL",
    "truth_study_registry",
    "truth_study_registry_truth",
    "large_registry",
    "large_registry_truth",
    "multi_gap_registry",
    "multi_gap_registry_truth",
    "THREE_LEVEL_MODEL",
    "three_level_registry",
    "three_level_registry_truth",
    "SMALL_SITE_MODEL",
    "small_site_registry",
    "small_site_registry_truth",
]

#: Model of :func:`truth_study_registry` (logit scale for the outcome and missingness).
TRUTH_STUDY_MODEL = {
    "site_size_log_sd": 0.8, "min_site_size": 5,
    "outcome_site_sd": 0.6, "lactate_site_sd": 0.5, "corr_doc_quality_outcome_re": -0.5,
    "age_mean": 55.0, "age_sd": 18.0, "age_range": (16, 99),
    "severity_median": 12.0, "severity_log_sd": 0.7, "severity_range": (1, 75),
    "lactate": {"intercept": 1.2, "age": 0.01, "severity": 0.06, "residual_sd": 0.7, "floor": 0.3},
    "outcome": {"intercept": -6.0, "lactate": 0.35, "age": 0.03, "severity": 0.06},
    "missingness": {"intercept": -1.0, "doc_quality": -1.2, "severity_std": -0.4},
    "n_structural_sites": 2, "structural_min_size": 20,
}


def _sites_and_effects(rng, model: dict, n_patients: int, n_sites: int, predictor_site_sd: float):
    """Site sizes and the site effects shared by :func:`truth_study_registry` and
    :func:`small_site_registry`, drawn in this order: lognormal site sizes (``model``'s
    ``site_size_log_sd``, ``min_site_size``), the outcome's effects (``outcome_site_sd``), the incomplete
    predictor's (``predictor_site_sd``), documentation quality correlated with the outcome's
    (``corr_doc_quality_outcome_re``).

    Returns
    -------
    tuple of numpy.ndarray
        ``(sizes, u, v, doc)``: patients per site, and the three effects per site.
    """
    sizes = lognormal_cluster_sizes(rng, n_patients, n_sites, log_sd=model["site_size_log_sd"],
                                    min_size=model["min_site_size"])
    u = normal_cluster_effects(rng, n_sites, model["outcome_site_sd"])
    v = normal_cluster_effects(rng, n_sites, predictor_site_sd)
    doc = correlated_cluster_effect(rng, u, model["outcome_site_sd"], model["corr_doc_quality_outcome_re"])
    return sizes, u, v, doc


def truth_study_registry(seed: int, n_sites: int = 40, n_patients: int = 4000) -> pd.DataFrame:
    """One simulated trauma registry of the truth studies (lactate missing at random, two structural sites).

    Model (constants :data:`TRUTH_STUDY_MODEL`), in draw order:

    - site sizes ``exp(N(0, 0.8^2))`` scaled to ``n_patients`` (at least 5
      each; :func:`~hmlib.simulate.blocks.lognormal_cluster_sizes`);
    - site effects: outcome ``u_j ~ N(0, 0.6^2)``, lactate ``v_j ~ N(0,
      0.5^2)``, documentation quality ``d_j = -0.5 u_j / 0.6 + sqrt(0.75)
      N(0, 1)`` (correlation -0.5 with ``u_j``: poorly documenting sites have
      higher mortality);
    - age ``N(55, 18^2)`` clipped to 16-99 (1 decimal); severity
      ``exp(N(log 12, 0.7^2))`` clipped to 1-75 (1 decimal);
    - lactate ``max(0.3, 1.2 + 0.01 age + 0.06 severity + v_j + N(0, 0.7^2))``
      (2 decimals);
    - outcome ``logit P = -6 + 0.35 lactate + 0.03 age + 0.06 severity + u_j``;
    - lactate missing at random given site and severity: ``logit P(missing)
      = -1 - 1.2 d_j - 0.4 z(severity)`` (``z`` standardised over the
      registry), and always missing in the two sites of at least 20 patients
      with the lowest ``d_j`` (structural gaps).

    Parameters
    ----------
    seed : int
    n_sites : int, default 40
        Sites numbered ``1 .. n_sites``.
    n_patients : int, default 4000
        Approximate number of patients (sizes are rounded down, at least 5).

    Returns
    -------
    pandas.DataFrame
        Columns ``site, outcome, age, severity, lactate``.

    See Also
    --------
    truth_study_registry_truth

    Examples
    --------
    >>> frame = truth_study_registry(1, n_sites=10, n_patients=500)
    >>> list(frame.columns)
    ['site', 'outcome', 'age', 'severity', 'lactate']
    """
    m = TRUTH_STUDY_MODEL
    lm, om, mm = m["lactate"], m["outcome"], m["missingness"]
    rng = np.random.default_rng(seed)
    sizes, u, v, doc = _sites_and_effects(rng, m, n_patients, n_sites, m["lactate_site_sd"])
    j = cluster_index(sizes)
    n = j.size
    age = np.clip(rng.normal(m["age_mean"], m["age_sd"], n), *m["age_range"]).round(1)
    severity = np.clip(np.exp(rng.normal(np.log(m["severity_median"]), m["severity_log_sd"], n)),
                       *m["severity_range"]).round(1)
    lactate = np.maximum(lm["floor"], lm["intercept"] + lm["age"] * age + lm["severity"] * severity + v[j]
                         + rng.normal(0.0, lm["residual_sd"], n)).round(2)
    eta = om["intercept"] + om["lactate"] * lactate + om["age"] * age + om["severity"] * severity + u[j]
    outcome = logistic_draws(rng, eta).astype(float)
    structural = lowest_clusters(doc, sizes >= m["structural_min_size"], m["n_structural_sites"])
    p_missing = special.expit(mm["intercept"] + mm["doc_quality"] * doc[j] + mm["severity_std"] * standardise(severity))
    missing = bernoulli(rng, p_missing, n) | structural[j]
    return pd.DataFrame({"site": j + 1, "outcome": outcome, "age": age, "severity": severity,
                         "lactate": with_gaps(lactate, missing)})


def truth_study_registry_truth() -> dict:
    """Values that generated :func:`truth_study_registry`.

    Returns
    -------
    dict
        ``terms`` of the analysis model ``outcome ~ lactate + age + severity
        + (1 | site)`` (``Intercept``, ``lactate``, ``age``, ``severity``,
        ``sd(site)``), ``lactate_model``, ``missingness_model`` and
        ``corr(missingness, outcome)``: the missingness site effect ``-1.2
        d_j`` correlates +0.5 with ``u_j``.
    """
    m = TRUTH_STUDY_MODEL
    om = m["outcome"]
    return {
        "generator": "hmlib.simulate.studies.truth_study_registry",
        "analysis_model": "outcome ~ lactate + age + severity + (1|site), binomial(logit)",
        "terms": {"Intercept": om["intercept"], "lactate": om["lactate"], "age": om["age"],
                  "severity": om["severity"], "sd(site)": m["outcome_site_sd"]},
        "lactate_model": {**m["lactate"], "site_sd": m["lactate_site_sd"]},
        "missingness_model": {**m["missingness"], "n_structural_sites": m["n_structural_sites"]},
        "corr(missingness, outcome)": -m["corr_doc_quality_outcome_re"],
    }


def large_registry(seed: int = 1, n_clusters: int = 500, n_patients: int = 20000) -> pd.DataFrame:
    """A large registry: ``x1``, ``x2`` continuous, ``b`` binary, all with cluster effects and MAR gaps.

    Model, in draw order: sizes 5 plus a multinomial share of the rest
    (:func:`~hmlib.simulate.blocks.multinomial_cluster_sizes`); age ``N(60,
    15^2)``; ``x1 = 0.02 age + N(0, 0.5^2)_j + N(0, 1)``; ``x2 = exp(0.3 x1 +
    N(0, 0.3^2)_j + N(0, 0.5^2))``; ``logit P(b) = -0.5 + 0.4 x1 + N(0,
    0.8^2)_j`` (the uniforms of ``b`` are drawn *before* its cluster effects,
    as the original benchmark did, so this draw is written out rather than
    made by :func:`~hmlib.simulate.blocks.logistic_draws`); ``logit P(y) = -3
    + 0.03 (age - 60) + 0.4 x1 + 0.2 x2 + 0.5 b + N(0, 0.6^2)_j``;
    documentation quality ``d_j ~ N(0, 1)``; missing: ``logit P(x1) = -1.2 -
    0.8 d_j + 0.3 y``, ``logit P(x2) = -1.5 - 0.5 d_j``, ``logit P(b) = -1.8 +
    0.02 (age - 60)``. Age is written with 1 decimal (after being used
    unrounded).

    Returns
    -------
    pandas.DataFrame
        Columns ``site, y, age, x1, x2, b``; clusters coded ``0 .. n_clusters - 1``.
    """
    rng = np.random.default_rng(seed)
    site = cluster_index(multinomial_cluster_sizes(rng, n_patients, n_clusters, min_size=5))
    n = site.size
    age = rng.normal(60, 15, n)
    x1 = 0.02 * age + normal_cluster_effects(rng, n_clusters, 0.5)[site] + rng.normal(0, 1, n)
    x2 = np.exp(0.3 * x1 + normal_cluster_effects(rng, n_clusters, 0.3)[site] + rng.normal(0, 0.5, n))
    b_uniform = rng.random(n)
    b = (b_uniform < special.expit(-0.5 + 0.4 * x1 + normal_cluster_effects(rng, n_clusters, 0.8)[site])).astype(float)
    eta = -3 + 0.03 * (age - 60) + 0.4 * x1 + 0.2 * x2 + 0.5 * b + normal_cluster_effects(rng, n_clusters, 0.6)[site]
    y = logistic_draws(rng, eta).astype(float)
    doc = normal_cluster_effects(rng, n_clusters, 1.0)[site]
    x1 = with_gaps(x1, logistic_draws(rng, -1.2 - 0.8 * doc + 0.3 * y))
    x2 = with_gaps(x2, logistic_draws(rng, -1.5 - 0.5 * doc))
    b = with_gaps(b, logistic_draws(rng, -1.8 + 0.02 * (age - 60)))
    return pd.DataFrame({"site": site, "y": y, "age": age.round(1), "x1": x1, "x2": x2, "b": b})


def large_registry_truth() -> dict:
    """Values that generated :func:`large_registry` (age uncentred in ``terms``)."""
    return {
        "generator": "hmlib.simulate.studies.large_registry",
        "terms": {"Intercept": round(-3 - 0.03 * 60, 10), "age": 0.03, "x1": 0.4, "x2": 0.2, "b": 0.5,
                  "sd(site)": 0.6},
        "missingness_model": {"x1": "MAR: -1.2 - 0.8 d_site + 0.3 y", "x2": "MAR: -1.5 - 0.5 d_site",
                              "b": "MAR: -1.8 + 0.02 (age - 60)"},
    }


def multi_gap_registry(seed: int, n_patients: int, n_sites: int, structural=(5, 27)) -> pd.DataFrame:
    """A registry with site-clustered outcome and three incomplete variables, each with its own mechanism.

    Model, in draw order: site weights uniform on 10-70 scaled to about
    ``n_patients`` (:func:`~hmlib.simulate.blocks.scaled_uniform_cluster_sizes`);
    outcome site effects ``u_j ~ N(0, 0.6^2)``; documentation quality ``d_j
    ~ N(0, 1)``; age ``N(60, 15^2)`` (1 decimal); severity ``Gamma(3, 5)``
    (1 decimal); sex; lactate ``max(0.3, 1.2 + 0.01 age + 0.06 severity +
    N(0, 0.7^2))`` (2 decimals); sbp ``N(130, 20^2)`` (whole); gcs uniform on
    3-15; ``logit P(outcome) = -6 + 0.35 lactate + 0.03 age + 0.06 severity +
    u_j``; missing: lactate ``logit P = -1 - 1.2 d_j - 0.4 z(severity)`` and
    always in the ``structural`` sites, sbp completely at random in 5 %, gcs
    ``logit P = -2.5 + 0.8 d_j``.

    Returns
    -------
    pandas.DataFrame
        Columns ``site`` (``1 .. n_sites``), ``outcome, age, severity, sex, lactate, sbp, gcs``.
    """
    rng = np.random.default_rng(seed)
    site = cluster_index(scaled_uniform_cluster_sizes(rng, n_patients, n_sites, low=10, high=70)) + 1
    n = site.size
    u_out = normal_cluster_effects(rng, n_sites, 0.6)[site - 1]
    doc = normal_cluster_effects(rng, n_sites, 1.0)[site - 1]
    age = rng.normal(60, 15, n).round(1)
    severity = rng.gamma(3, 5, n).round(1)
    sex = rng.choice(["female", "male"], n)
    lactate = (1.2 + 0.01 * age + 0.06 * severity + rng.normal(0, 0.7, n)).clip(0.3).round(2)
    sbp = rng.normal(130, 20, n).round()
    gcs = rng.integers(3, 16, n).astype(float)
    outcome = logistic_draws(rng, -6 + 0.35 * lactate + 0.03 * age + 0.06 * severity + u_out).astype(int)
    lactate_eta = -1 - 1.2 * doc - 0.4 * (severity - severity.mean()) / severity.std()
    lactate = with_gaps(lactate, logistic_draws(rng, lactate_eta) | np.isin(site, structural))
    sbp = with_gaps(sbp, bernoulli(rng, 0.05, n))
    gcs = with_gaps(gcs, logistic_draws(rng, -2.5 + 0.8 * doc))
    return pd.DataFrame({"site": site, "outcome": outcome, "age": age, "severity": severity, "sex": sex,
                         "lactate": lactate, "sbp": sbp, "gcs": gcs})


def multi_gap_registry_truth(structural=(5, 27)) -> dict:
    """Values that generated :func:`multi_gap_registry`."""
    return {
        "generator": "hmlib.simulate.studies.multi_gap_registry",
        "terms": {"Intercept": -6.0, "lactate": 0.35, "age": 0.03, "severity": 0.06, "sd(site)": 0.6},
        "structural_clusters": list(structural),
        "missing_share": {"sbp": 0.05},
        "missingness_model": {"lactate": "MAR: -1 - 1.2 d_site - 0.4 z(severity)",
                              "gcs": "MAR: -2.5 + 0.8 d_site"},
    }


#: Model of :func:`three_level_registry` (logit scale for the outcome and the missingness).
THREE_LEVEL_MODEL = {
    "x": {"country_sd": 0.7, "hospital_sd": 0.5, "residual_sd": 1.0},
    "outcome": {"Intercept": -0.5, "x": 0.5, "age": 0.4, "country_sd": 0.5, "hospital_sd": 0.3},
    "missingness": {"intercept": -1.2, "outcome": 0.8, "country_sd": 0.8},
    "n_structural_countries": 2,
}


def three_level_registry(seed: int, n_countries: int = 24, hospitals_per_country: int = 6,
                         per_hospital: int = 30, gaps: bool = True) -> pd.DataFrame:
    """Patients in hospitals in countries, with an incomplete predictor ``x`` varying at both levels.

    Model (:data:`THREE_LEVEL_MODEL`), in draw order: ``x``'s country and
    hospital effects ``N(0, 0.7^2)`` and ``N(0, 0.5^2)``, the outcome's
    ``N(0, 0.5^2)`` and ``N(0, 0.3^2)`` (independent), the missingness's
    country effect ``N(0, 0.8^2)``; per patient ``age ~ N(0, 1)`` (already
    standardised), ``x = country + hospital + N(0, 1)``, ``logit P(y = 1) =
    -0.5 + 0.5 x + 0.4 age + country + hospital``, and ``x`` missing with
    ``logit P = -1.2 + 0.8 y + country`` (missing at random given the
    outcome and the country), and always in the last two countries (they
    never record it: only a model with a country random effect can say
    anything about their ``x``).

    Parameters
    ----------
    seed : int
    n_countries, hospitals_per_country, per_hospital : int, default 24, 6 and 30
        Countries ``K00 ..``, hospitals ``H000 ..`` numbered across
        countries; 4,320 patients by default.
    gaps : bool, default True
        False: ``x`` as drawn, before the missingness (every other value the
        same), for the complete-data fit of the same registry.

    Returns
    -------
    pandas.DataFrame
        Columns ``country, hospital, age, x, y``.

    See Also
    --------
    three_level_registry_truth
    """
    m = THREE_LEVEL_MODEL
    rng = np.random.default_rng(seed)
    n_hospitals = n_countries * hospitals_per_country
    j = cluster_index(np.full(n_hospitals, per_hospital))
    k = j // hospitals_per_country
    x_country = normal_cluster_effects(rng, n_countries, m["x"]["country_sd"])
    x_hospital = normal_cluster_effects(rng, n_hospitals, m["x"]["hospital_sd"])
    y_country = normal_cluster_effects(rng, n_countries, m["outcome"]["country_sd"])
    y_hospital = normal_cluster_effects(rng, n_hospitals, m["outcome"]["hospital_sd"])
    miss_country = normal_cluster_effects(rng, n_countries, m["missingness"]["country_sd"])
    n = j.size
    age = rng.normal(0.0, 1.0, n)
    x = x_country[k] + x_hospital[j] + rng.normal(0.0, m["x"]["residual_sd"], n)
    b = m["outcome"]
    y = logistic_draws(rng, b["Intercept"] + b["x"] * x + b["age"] * age + y_country[k] + y_hospital[j])
    mm = m["missingness"]
    missing = logistic_draws(rng, mm["intercept"] + mm["outcome"] * y + miss_country[k])
    missing |= k >= n_countries - m["n_structural_countries"]
    return pd.DataFrame({"country": np.char.add("K", np.char.zfill(k.astype(str), 2)),
                         "hospital": np.char.add("H", np.char.zfill(j.astype(str), 3)), "age": age,
                         "x": with_gaps(x, missing) if gaps else x, "y": y.astype(float)})


def three_level_registry_truth() -> dict:
    """Values that generated :func:`three_level_registry`.

    Returns
    -------
    dict
        ``terms``: the analysis model ``y ~ x + age + (1 | country) + (1 |
        country:hospital)`` (``Intercept``, ``x``, ``age``, ``sd(country)``,
        ``sd(hospital)``), and the model of ``x`` and of its missingness.
    """
    m = THREE_LEVEL_MODEL
    b = m["outcome"]
    return {
        "generator": "hmlib.simulate.studies.three_level_registry",
        "analysis_model": "y ~ x + age + (1 | country) + (1 | country:hospital), binomial(logit)",
        "terms": {"Intercept": b["Intercept"], "x": b["x"], "age": b["age"], "sd(country)": b["country_sd"],
                  "sd(hospital)": b["hospital_sd"]},
        "x_model": dict(m["x"]),
        "missingness_model": dict(m["missingness"], n_structural_countries=m["n_structural_countries"]),
    }


#: Model of :func:`small_site_registry` (logit scale for ``x``, the outcome and the missingness).
SMALL_SITE_MODEL = {
    "site_size_log_sd": 0.6, "min_site_size": 2,
    "outcome_site_sd": 0.6, "x_site_sd": 1.2, "corr_doc_quality_outcome_re": -0.5,
    "x": {"Intercept": -0.3, "age": 0.5},
    "outcome": {"Intercept": -1.0, "x": 0.8, "age": 0.4},
    "missingness": {"Intercept": -1.0, "doc_quality": -1.0, "outcome": 0.8},
}


def small_site_registry(seed: int, n_sites: int = 400, n_patients: int = 2000, *,
                        complete: bool = False) -> pd.DataFrame:
    """Many small sites and an incomplete binary predictor that varies strongly between them.

    Model (constants :data:`SMALL_SITE_MODEL`), in draw order:

    - site sizes ``exp(N(0, 0.6^2))`` scaled to ``n_patients``, at least 2
      (:func:`~hmlib.simulate.blocks.lognormal_cluster_sizes`; 400 sites of
      2 to about 20, mean 4.6, about 1,830 patients in all, by default);
    - site effects: outcome ``u_j ~ N(0, 0.6^2)``, ``x`` ``v_j ~ N(0,
      1.2^2)``, documentation quality ``d_j`` correlated -0.5 with ``u_j``;
    - age ``N(0, 1)`` (standardised);
    - ``x ~ Bernoulli(expit(-0.3 + 0.5 age + v_j))``;
    - outcome ``logit P = -1 + 0.8 x + 0.4 age + u_j``;
    - ``x`` missing at random given the site and the outcome: ``logit
      P(missing) = -1 - d_j + 0.8 outcome`` (about 35%).

    Parameters
    ----------
    seed : int
    n_sites : int, default 400
        Sites numbered ``1 .. n_sites``.
    n_patients : int, default 2000
        Approximate number of patients (sizes rounded down, at least 2).
    complete : bool, default False
        Return ``x`` as drawn, before the missingness (the same draws otherwise).

    Returns
    -------
    pandas.DataFrame
        Columns ``site, outcome, age, x``.

    See Also
    --------
    small_site_registry_truth

    Examples
    --------
    >>> frame = small_site_registry(1, n_sites=20, n_patients=100)
    >>> list(frame.columns)
    ['site', 'outcome', 'age', 'x']
    """
    m = SMALL_SITE_MODEL
    xm, om, mm = m["x"], m["outcome"], m["missingness"]
    rng = np.random.default_rng(seed)
    sizes, u, v, doc = _sites_and_effects(rng, m, n_patients, n_sites, m["x_site_sd"])
    j = cluster_index(sizes)
    n = j.size
    age = rng.standard_normal(n).round(3)
    x = logistic_draws(rng, xm["Intercept"] + xm["age"] * age + v[j]).astype(float)
    outcome = logistic_draws(rng, om["Intercept"] + om["x"] * x + om["age"] * age + u[j]).astype(float)
    missing = bernoulli(rng, special.expit(mm["Intercept"] + mm["doc_quality"] * doc[j] + mm["outcome"] * outcome), n)
    return pd.DataFrame({"site": j + 1, "outcome": outcome, "age": age, "x": x if complete else with_gaps(x, missing)})


def small_site_registry_truth() -> dict:
    """Values that generated :func:`small_site_registry`.

    Returns
    -------
    dict
        ``terms`` of the analysis model ``outcome ~ x + age + (1 | site)``
        (``Intercept``, ``x``, ``age``, ``sd(site)``), and the models of
        ``x`` and of its missingness.
    """
    m = SMALL_SITE_MODEL
    om = m["outcome"]
    return {
        "generator": "hmlib.simulate.studies.small_site_registry",
        "analysis_model": "outcome ~ x + age + (1 | site), binomial(logit)",
        "terms": {"Intercept": om["Intercept"], "x": om["x"], "age": om["age"], "sd(site)": m["outcome_site_sd"]},
        "x_model": {**m["x"], "site_sd": m["x_site_sd"]},
        "missingness_model": dict(m["missingness"]),
    }
