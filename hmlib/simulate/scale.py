"""Registries at the scale of real trials and national registries: the scale benchmarks' data.

Two generators, for ``bench/bench_scale.py`` (time and memory of the full
report at 10,000 to 1,000,000 patients) and the profiling behind it:

trial_registry
    A multinational stroke trial shaped like the International Stroke Trial
    (IST; 19,435 patients randomised in 467 hospitals in 36 countries):
    hospitals nested in countries, a binary outcome (dead or dependent at
    six months), seven predictors of which four are categorical (sex,
    consciousness, stroke subtype, aspirin arm), an incomplete binary
    predictor (atrial fibrillation, unrecorded in the trial's pilot
    hospitals and sporadically elsewhere) and an outcome missing for the
    patients lost to follow-up. The values are simulated, not the trial's.
scale_registry
    A trauma registry of any size (default 100,000 patients in 400 sites)
    with three predictors, one incomplete (lactate, missing at random given
    the site's documentation and severity, never recorded in two sites), a
    binary outcome and a site type: the shape of the demo, built from the
    same blocks, with every draw vectorised so that a million patients take
    seconds.

All draws come from one ``numpy.random.default_rng(seed)`` in the order the
docstrings state (blocks: :mod:`hmlib.simulate.blocks`);
``<generator>_truth`` returns the values that generated the data, keyed as
hmlib's results contract (``Intercept``, ``age``, ``sex[M]``,
``sd(hospital)``).

References
----------
International Stroke Trial Collaborative Group (1997). The International
Stroke Trial (IST): a randomised trial of aspirin, subcutaneous heparin,
both, or neither among 19 435 patients with acute ischaemic stroke. Lancet
349:1569-1581.
Sandercock PAG, Niewada M, Czlonkowska A (2011). The International Stroke
Trial database. Trials 12:101.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from hmlib.simulate.blocks import (bernoulli, cluster_index, cluster_labels, correlated_cluster_effect,
                                   logistic_draws, lowest_clusters, normal_cluster_effects, standardise,
                                   stratified_lognormal_cluster_sizes, with_gaps)

__all__ = [
    "TRIAL_MODEL",
    "TRIAL_PARAMS",
    "trial_registry",
    "trial_registry_truth",
    "with_reference_columns",
    "SCALE_MODEL",
    "SCALE_PARAMS",
    "scale_registry",
    "scale_registry_truth",
]


def _categories(rng: np.random.Generator, shares: dict, n: int) -> np.ndarray:
    """``n`` labels drawn with the given shares (one ``rng.random(n)``, inverted on the cumulative shares)."""
    labels = np.array(list(shares))
    edges = np.cumsum(list(shares.values()))
    edges[-1] = 1.0
    return labels[np.searchsorted(edges, rng.random(n), side="right")]


# --------------------------------------------------------------------------
# trial_registry
# --------------------------------------------------------------------------
#: Model of :func:`trial_registry` (logit scale for the outcome and the missingness).
TRIAL_MODEL = {
    "country_size_log_sd": 1.2, "min_hospitals_per_country": 1,
    "hospital_size_log_sd": 1.1, "min_hospital_size": 3, "size_score_clip": 2.5,
    "country_sd": 0.3, "hospital_sd": 0.25,
    "af_hospital_sd": 0.4,
    "age_mean": 72.0, "age_sd": 12.0, "age_range": (18, 100),
    "p_male": 0.54,
    "sbp_mean": 160.0, "sbp_sd": 27.0, "sbp_range": (70, 280),
    "conscious": {"alert": 0.77, "drowsy": 0.22, "unconscious": 0.01},
    "stroke_type": {"LACS": 0.24, "OTH": 0.01, "PACS": 0.40, "POCS": 0.12, "TACS": 0.23},
    "p_aspirin": 0.5,
    "atrial_fib": {"intercept": -1.7, "age": 0.05, "age_centre": 72.0},
    "outcome": {"Intercept": -4.6, "age": 0.05, "sex[M]": -0.1, "sbp": 0.003,
                "conscious[drowsy]": 1.3, "conscious[unconscious]": 2.8,
                "stroke_type[OTH]": 0.3, "stroke_type[PACS]": 0.4, "stroke_type[POCS]": 0.2,
                "stroke_type[TACS]": 1.6, "aspirin[Y]": -0.05, "atrial_fib": 0.4},
    "n_pilot_hospitals": 25, "pilot_min_size": 10,
    "af_missing": {"intercept": -3.6, "not_alert": 0.8, "doc_sd": 0.8},
    "outcome_missing": {"intercept": -5.0, "age": 0.03, "age_centre": 72.0, "country_sd": 0.8},
}

#: The params file of a trial registry (``{data}`` and ``{truth}`` filled in by the caller).
TRIAL_PARAMS = """\
# A multinational stroke trial shaped like IST (hmlib.simulate.scale.trial_registry).
name: {name}
data: {data}
truth: {truth}
cluster: hospital
higher_levels: [country]
outcome: dead_or_dependent
outcome_family: binomial
predictors: [age, sex, sbp, conscious, stroke_type, aspirin, atrial_fib]
categorical: [sex, conscious, stroke_type, aspirin]
focus: atrial_fib
seed: 14
"""


def trial_registry(seed: int = 14, n_patients: int = 19435, n_hospitals: int = 466,
                   n_countries: int = 36) -> pd.DataFrame:
    """A multinational stroke trial shaped like IST (hospitals in countries, four categorical predictors).

    Model (constants :data:`TRIAL_MODEL`), in draw order:

    - hospitals per country: stratified lognormal sizes (log SD 1.2, at least
      1; :func:`~hmlib.simulate.blocks.stratified_lognormal_cluster_sizes`),
      so that a few countries hold most hospitals, as in IST;
    - patients per hospital: the same with log SD 1.1 and at least 3 (a few
      hospitals with hundreds of patients, many with a handful);
    - effects on the outcome: country ``c_k ~ N(0, 0.3^2)``, hospital ``h_j
      ~ N(0, 0.25^2)``; a hospital's effect on the recording of atrial
      fibrillation ``a_j ~ N(0, 0.4^2)``; its documentation quality ``d_j``,
      correlated -0.5 with ``h_j`` (hospitals that document less have worse
      outcomes); a country's follow-up quality ``f_k ~ N(0, 0.8^2)``;
    - patients: age ``N(72, 12^2)`` clipped to 18-100 (whole years); sex
      ``M`` with probability 0.54; systolic blood pressure ``N(160, 27^2)``
      clipped to 70-280 (whole mmHg); consciousness alert / drowsy /
      unconscious (0.77 / 0.22 / 0.01); stroke subtype LACS / OTH / PACS /
      POCS / TACS (0.24 / 0.01 / 0.40 / 0.12 / 0.23); aspirin arm ``Y``
      with probability 0.5 (randomised);
    - atrial fibrillation: ``logit P = -1.7 + 0.05 (age - 72) + a_j`` (about
      17 %);
    - outcome, dead or dependent at six months: ``logit P = -4.6 + 0.05 age
      - 0.1 [M] + 0.003 sbp + 1.3 [drowsy] + 2.8 [unconscious] + 0.3 [OTH]
      + 0.4 [PACS] + 0.2 [POCS] + 1.6 [TACS] - 0.05 [aspirin] + 0.4
      atrial_fib + c_k + h_j`` (about 60 %);
    - atrial fibrillation missing: never recorded in the 25 "pilot"
      hospitals of at least 10 patients with the lowest ``d_j`` (IST's pilot
      phase did not record it), elsewhere at random given consciousness and
      the hospital, ``logit P = -3.6 + 0.8 [not alert] - 0.8 d_j`` (about
      4 %), one uniform per patient drawn for every patient;
    - outcome missing (lost to follow-up): ``logit P = -5 + 0.03 (age - 72)
      + f_k`` (about 1 %).

    Parameters
    ----------
    seed : int
    n_patients : int, default 19435
        Patients (exactly).
    n_hospitals : int, default 466
        Hospitals (``H001`` ...), numbered within no country.
    n_countries : int, default 36
        Countries (``C01`` ...); each has at least one hospital.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient_id, country, hospital, age, sex, sbp, conscious,
        stroke_type, aspirin, atrial_fib, dead_or_dependent`` (the last two
        with missing values, as float).

    See Also
    --------
    trial_registry_truth

    Examples
    --------
    >>> frame = trial_registry(1, n_patients=600, n_hospitals=40, n_countries=5)
    >>> frame.shape, int(frame["hospital"].nunique()), int(frame["country"].nunique())
    ((600, 11), 40, 5)
    """
    m = TRIAL_MODEL
    if n_hospitals < n_countries * m["min_hospitals_per_country"]:
        raise ValueError(f"n_hospitals ({n_hospitals}) must be at least n_countries ({n_countries}).")
    if n_patients < n_hospitals * m["min_hospital_size"]:
        raise ValueError(f"n_patients ({n_patients}) must be at least {m['min_hospital_size']} per hospital.")
    rng = np.random.default_rng(seed)
    per_country = stratified_lognormal_cluster_sizes(rng, n_hospitals, n_countries, log_sd=m["country_size_log_sd"],
                                                     score_clip=m["size_score_clip"],
                                                     min_size=m["min_hospitals_per_country"])
    hospital_country = cluster_index(per_country)
    sizes = stratified_lognormal_cluster_sizes(rng, n_patients, n_hospitals, log_sd=m["hospital_size_log_sd"],
                                               score_clip=m["size_score_clip"], min_size=m["min_hospital_size"])
    j = cluster_index(sizes)
    k = hospital_country[j]
    n = j.size
    country_effect = normal_cluster_effects(rng, n_countries, m["country_sd"])
    hospital_effect = normal_cluster_effects(rng, n_hospitals, m["hospital_sd"])
    af_effect = normal_cluster_effects(rng, n_hospitals, m["af_hospital_sd"])
    doc = correlated_cluster_effect(rng, hospital_effect, m["hospital_sd"], -0.5)
    follow_up = normal_cluster_effects(rng, n_countries, m["outcome_missing"]["country_sd"])

    age = np.clip(rng.normal(m["age_mean"], m["age_sd"], n), *m["age_range"]).round()
    male = bernoulli(rng, m["p_male"], n)
    sbp = np.clip(rng.normal(m["sbp_mean"], m["sbp_sd"], n), *m["sbp_range"]).round()
    conscious = _categories(rng, m["conscious"], n)
    stroke_type = _categories(rng, m["stroke_type"], n)
    aspirin = bernoulli(rng, m["p_aspirin"], n)
    am = m["atrial_fib"]
    atrial_fib = logistic_draws(rng, am["intercept"] + am["age"] * (age - am["age_centre"]) + af_effect[j])

    b = m["outcome"]
    eta = (b["Intercept"] + b["age"] * age + b["sex[M]"] * male + b["sbp"] * sbp
           + b["conscious[drowsy]"] * (conscious == "drowsy") + b["conscious[unconscious]"] * (conscious == "unconscious")
           + b["stroke_type[OTH]"] * (stroke_type == "OTH") + b["stroke_type[PACS]"] * (stroke_type == "PACS")
           + b["stroke_type[POCS]"] * (stroke_type == "POCS") + b["stroke_type[TACS]"] * (stroke_type == "TACS")
           + b["aspirin[Y]"] * aspirin + b["atrial_fib"] * atrial_fib + country_effect[k] + hospital_effect[j])
    outcome = logistic_draws(rng, eta)

    pilot = lowest_clusters(doc, sizes >= m["pilot_min_size"], m["n_pilot_hospitals"])
    fm = m["af_missing"]
    af_missing = logistic_draws(rng, fm["intercept"] + fm["not_alert"] * (conscious != "alert")
                                - fm["doc_sd"] * doc[j]) | pilot[j]
    om = m["outcome_missing"]
    outcome_missing = logistic_draws(rng, om["intercept"] + om["age"] * (age - om["age_centre"]) + follow_up[k])
    return pd.DataFrame({
        "patient_id": np.arange(1, n + 1),
        "country": cluster_labels(n_countries, "C")[k],
        "hospital": cluster_labels(n_hospitals, "H", start=1, width=3)[j],
        "age": age, "sex": np.where(male, "M", "F"), "sbp": sbp, "conscious": conscious,
        "stroke_type": stroke_type, "aspirin": np.where(aspirin, "Y", "N"),
        "atrial_fib": with_gaps(atrial_fib.astype(float), af_missing),
        "dead_or_dependent": with_gaps(outcome.astype(float), outcome_missing),
    })


def trial_registry_truth() -> dict:
    """Values that generated :func:`trial_registry`.

    Returns
    -------
    dict
        ``terms`` of the report's analysis model for :data:`TRIAL_PARAMS`
        (``higher_levels: [country]``): ``dead_or_dependent ~ age + sex + sbp
        + conscious + stroke_type + aspirin + atrial_fib + (1 | country) + (1
        | country:hospital)`` (reference levels F, alert, LACS, N), with
        ``sd(country)`` 0.3 and ``sd(hospital)`` 0.25 (within its country).
        ``two_level_sd_hospital`` is the SD of a hospital's whole intercept,
        ``sqrt(0.3^2 + 0.25^2)``, what a model without the country level
        estimates.
    """
    m = TRIAL_MODEL
    return {
        "generator": "hmlib.simulate.scale.trial_registry",
        "analysis_model": ("dead_or_dependent ~ age + sex + sbp + conscious + stroke_type + aspirin + atrial_fib "
                           "+ (1|country) + (1|country:hospital), binomial(logit)"),
        "terms": {**m["outcome"], "sd(country)": m["country_sd"], "sd(hospital)": m["hospital_sd"]},
        "terms_note": "sd(hospital): within its country (the analysis model has a country level, higher_levels)",
        "two_level_sd_hospital": round(float(np.hypot(m["country_sd"], m["hospital_sd"])), 10),
        "atrial_fib_model": dict(m["atrial_fib"], hospital_sd=m["af_hospital_sd"]),
        "missingness_model": {"atrial_fib": dict(m["af_missing"], n_pilot_hospitals=m["n_pilot_hospitals"]),
                              "dead_or_dependent": dict(m["outcome_missing"])},
    }


def with_reference_columns(frame: pd.DataFrame, seed: int, *, decimals: int | None = None) -> pd.DataFrame:
    """A trial registry with the columns the nested-model references add (a copy).

    ``age_c = (age - 70) / 10`` and ``sbp_c = (sbp - 160) / 25`` (unscaled,
    lme4's finite-difference Hessian of the binomial analysis model is
    degenerate and it falls back to standard errors that ignore the variance
    parameters), and a gaussian ``score = 50 + 2 age_c + 3 [M] + country (SD
    4) + hospital (SD 3) + N(0, 10^2)``, drawn with ``seed`` and rounded to
    ``decimals`` when given. Used by ``tests/test_nested_analysis.py`` and
    ``bench/bench_nested_fit.py``.
    """
    frame = frame.copy()
    rng = np.random.default_rng(seed)
    country = frame["country"].astype("category").cat.codes.to_numpy()
    hospital = frame["hospital"].astype("category").cat.codes.to_numpy()
    frame["age_c"] = (frame["age"] - 70.0) / 10.0
    frame["sbp_c"] = (frame["sbp"] - 160.0) / 25.0
    effects = rng.normal(0, 4, country.max() + 1)[country] + rng.normal(0, 3, hospital.max() + 1)[hospital]
    score = 50 + 2 * frame["age_c"] + 3 * (frame["sex"] == "M") + effects + rng.normal(0, 10, len(frame))
    frame["score"] = score if decimals is None else score.round(decimals)
    return frame


# --------------------------------------------------------------------------
# scale_registry
# --------------------------------------------------------------------------
#: Model of :func:`scale_registry` (logit scale for the outcome and the missingness).
SCALE_MODEL = {
    "site_size_log_sd": 0.8, "min_site_size": 5, "size_score_clip": 2.5, "major_centre_share": 0.2,
    "outcome_site_sd": 0.5, "lactate_site_sd": 0.5, "corr_doc_quality_outcome_re": -0.5,
    "age_mean": 55.0, "age_sd": 18.0, "age_range": (16, 99),
    "severity_median": 12.0, "severity_log_sd": 0.7, "severity_range": (1, 75),
    "lactate": {"intercept": 1.2, "age": 0.01, "severity": 0.06, "major_centre": 0.3, "residual_sd": 0.7,
                "floor": 0.3},
    "outcome": {"Intercept": -6.0, "age": 0.03, "severity": 0.06, "lactate": 0.35},
    "missingness": {"intercept": -1.0, "doc_quality": -1.0, "severity_std": -0.4},
    "n_structural_sites": 2, "structural_min_size": 20,
}

#: The params file of a scale registry (``{name}``, ``{data}`` and ``{truth}`` filled in by the caller).
SCALE_PARAMS = """\
# A trauma registry at scale (hmlib.simulate.scale.scale_registry).
name: {name}
data: {data}
truth: {truth}
cluster: site
outcome: died
outcome_family: binomial
predictors: [age, severity, lactate]
cluster_covariates: [site_type]
focus: lactate
seed: 14
"""


def scale_registry(seed: int = 14, n_patients: int = 100_000, n_sites: int = 400) -> pd.DataFrame:
    """A trauma registry of any size: three predictors, lactate incomplete, sites of two types.

    Model (constants :data:`SCALE_MODEL`), in draw order:

    - site sizes: stratified lognormal (log SD 0.8, at least 5, exactly
      ``n_patients`` in all); the ``round(0.2 J)`` largest sites are major
      trauma centres;
    - site effects: outcome ``u_j ~ N(0, 0.5^2)``, lactate ``v_j ~ N(0,
      0.5^2)``, documentation quality ``d_j`` correlated -0.5 with ``u_j``;
    - age ``N(55, 18^2)`` clipped to 16-99 (1 decimal); severity
      ``exp(N(log 12, 0.7^2))`` clipped to 1-75 (whole numbers);
    - lactate ``max(0.3, 1.2 + 0.01 age + 0.06 severity + 0.3 [major] + v_j
      + N(0, 0.7^2))`` (2 decimals);
    - outcome ``logit P = -6 + 0.03 age + 0.06 severity + 0.35 lactate +
      u_j``;
    - lactate missing at random given the site and severity: ``logit P =
      -1 - 1.0 d_j - 0.4 z(severity)``, and never recorded in the two sites
      of at least 20 patients with the lowest ``d_j``.

    Parameters
    ----------
    seed : int
    n_patients : int, default 100000
    n_sites : int, default 400

    Returns
    -------
    pandas.DataFrame
        Columns ``site`` (``S001`` ...), ``site_type``, ``age, severity,
        lactate, died``.

    Examples
    --------
    >>> frame = scale_registry(1, n_patients=2000, n_sites=20)
    >>> frame.shape, int(frame["site"].nunique())
    ((2000, 6), 20)
    """
    m = SCALE_MODEL
    lm, om, mm = m["lactate"], m["outcome"], m["missingness"]
    rng = np.random.default_rng(seed)
    sizes = stratified_lognormal_cluster_sizes(rng, n_patients, n_sites, log_sd=m["site_size_log_sd"],
                                               score_clip=m["size_score_clip"], min_size=m["min_site_size"])
    major = np.zeros(n_sites, dtype=bool)
    major[np.argsort(-sizes, kind="stable")[:round(m["major_centre_share"] * n_sites)]] = True
    j = cluster_index(sizes)
    n = j.size
    u = normal_cluster_effects(rng, n_sites, m["outcome_site_sd"])
    v = normal_cluster_effects(rng, n_sites, m["lactate_site_sd"])
    doc = correlated_cluster_effect(rng, u, m["outcome_site_sd"], m["corr_doc_quality_outcome_re"])
    age = np.clip(rng.normal(m["age_mean"], m["age_sd"], n), *m["age_range"]).round(1)
    severity = np.clip(np.exp(rng.normal(np.log(m["severity_median"]), m["severity_log_sd"], n)),
                       *m["severity_range"]).round()
    lactate = np.maximum(lm["floor"], lm["intercept"] + lm["age"] * age + lm["severity"] * severity
                         + lm["major_centre"] * major[j] + v[j] + rng.normal(0.0, lm["residual_sd"], n)).round(2)
    died = logistic_draws(rng, om["Intercept"] + om["age"] * age + om["severity"] * severity
                          + om["lactate"] * lactate + u[j])
    structural = lowest_clusters(doc, sizes >= m["structural_min_size"], m["n_structural_sites"])
    p_missing = special.expit(mm["intercept"] + mm["doc_quality"] * doc[j] + mm["severity_std"] * standardise(severity))
    missing = bernoulli(rng, p_missing, n) | structural[j]
    return pd.DataFrame({
        "site": cluster_labels(n_sites, "S", start=1, width=3)[j],
        "site_type": np.where(major[j], "major trauma centre", "trauma unit"),
        "age": age, "severity": severity, "lactate": with_gaps(lactate, missing), "died": died.astype(float),
    })


def scale_registry_truth() -> dict:
    """Values that generated :func:`scale_registry` (``terms`` of ``died ~ age + severity + lactate + (1 | site)``)."""
    m = SCALE_MODEL
    return {
        "generator": "hmlib.simulate.scale.scale_registry",
        "analysis_model": "died ~ age + severity + lactate + (1|site), binomial(logit)",
        "terms": {**m["outcome"], "sd(site)": m["outcome_site_sd"]},
        "lactate_model": {**m["lactate"], "site_sd": m["lactate_site_sd"]},
        "missingness_model": {**m["missingness"], "n_structural_sites": m["n_structural_sites"]},
    }
