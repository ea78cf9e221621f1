"""A registry whose focus is categorical: three levels, site-driven missingness, structural gaps.

The data of the categorical-focus evidence: the R reference fits and
imputations (``tests/results/missing_category.R``,
``tests/results/categorical_imputation.R``), the truth study
(``bench/categorical_truth.py``) and the speed comparison with jomo
(``bench/bench_categorical_vs_jomo.py``). All draws come from one
``numpy.random.default_rng(seed)`` in the order the docstring states (see
:mod:`hmlib.simulate.blocks`).

Generators
----------
categorical_registry
    Patients in sites with a three-level ``lactate_band`` (``normal``,
    ``raised``, ``high``) that depends on severity, age and the site, a
    binary outcome, and missingness of the band driven by the sites'
    documentation quality (two sites never record it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from hmlib.simulate.blocks import (bernoulli, cluster_index, logistic_draws, lognormal_cluster_sizes,
                                   lowest_clusters, normal_cluster_effects, standardise)

__all__ = ["CATEGORICAL_MODEL", "CATEGORICAL_LEVELS", "categorical_registry", "categorical_registry_truth"]

#: The band's levels in their clinical order (hmlib sorts levels, so its reference level is ``high``).
CATEGORICAL_LEVELS = ("normal", "raised", "high")

#: Model of :func:`categorical_registry` (logit scale for the band, the outcome and missingness).
CATEGORICAL_MODEL = {
    "site_size_log_sd": 0.8, "min_site_size": 5,
    "outcome_site_sd": 0.6, "band_site_sd": 0.7, "band_site_corr": 0.5,
    "corr_doc_quality_outcome_re": -0.5,
    "age_mean": 55.0, "age_sd": 18.0, "age_range": (16, 99),
    "severity_median": 12.0, "severity_log_sd": 0.7, "severity_range": (1, 75),
    # baseline-category logits against "normal": intercept, per SD of severity, per SD of age
    "band": {"raised": (-0.2, 0.6, 0.2), "high": (-1.0, 1.1, 0.3)},
    # ordinal=True: cumulative logits P(band <= k) = expit(c_k - (0.9 z(severity) + 0.25 z(age) + v_j))
    "ordinal_band": {"cutpoints": (0.0, 1.4), "severity_std": 0.9, "age_std": 0.25},
    # outcome: log odds ratios of the band against "normal"; age and severity as they are
    "outcome": {"intercept": -4.8, "raised": 0.6, "high": 1.2, "age": 0.03, "severity": 0.04},
    "missingness": {"intercept": -0.7, "doc_quality": -1.2, "severity_std": -0.3},
    "n_structural_sites": 2, "structural_min_size": 20,
}


def categorical_registry(seed: int, n_sites: int = 40, n_patients: int = 4000, *,
                         ordinal: bool = False, band_doc_corr: float = 0.0) -> pd.DataFrame:
    """A registry with a three-level focus missing by site (two sites never record it).

    Model (constants :data:`CATEGORICAL_MODEL`), in draw order:

    - site sizes ``exp(N(0, 0.8^2))`` scaled to ``n_patients`` (at least 5;
      :func:`~hmlib.simulate.blocks.lognormal_cluster_sizes`);
    - site effects: outcome ``u_j ~ N(0, 0.6^2)``; the band's two
      baseline-category logits ``(a_j, b_j)`` bivariate normal, SD 0.7 each,
      correlation 0.5 (one ``rng.multivariate_normal`` call); documentation
      quality ``d_j = -0.5 u_j / 0.6 + r b_j / 0.7 + sqrt(0.75 - r^2) N(0, 1)``
      (poorly documenting sites have higher mortality; with ``band_doc_corr
      = r`` below 0 they also record "high" more often, so that the band is
      missing at random given the site but not given the other variables
      alone; ``r = 0`` by default);
    - age ``N(55, 18^2)`` clipped to 16-99 (1 decimal); severity
      ``exp(N(log 12, 0.7^2))`` clipped to 1-75 (1 decimal);
    - ``lactate_band`` from baseline-category logits against ``normal``:
      ``raised: -0.2 + 0.6 z(severity) + 0.2 z(age) + a_j``, ``high: -1.0 +
      1.1 z(severity) + 0.3 z(age) + b_j`` (``z`` standardised over the
      registry), drawn by one uniform per patient (``rng.random(n)``)
      against the cumulative probabilities in the order normal, raised,
      high;
    - with ``ordinal=True`` the band is ordinal instead (a proportional-odds
      model with a random intercept): the site effects are one ``v_j ~
      N(0, 0.7^2)`` (:func:`~hmlib.simulate.blocks.normal_cluster_effects`)
      in place of the bivariate draw, and ``P(band <= k) = expit(c_k - (0.9
      z(severity) + 0.25 z(age) + v_j))`` with cut points ``0`` (normal |
      raised) and ``1.4`` (raised | high), drawn by the same one uniform
      per patient;
    - outcome ``logit P = -4.8 + 0.6 [raised] + 1.2 [high] + 0.03 age +
      0.04 severity + u_j``;
    - the band missing at random given site and severity: ``logit
      P(missing) = -0.7 - 1.2 d_j - 0.3 z(severity)``, and always missing in
      the two sites of at least 20 patients with the lowest ``d_j``
      (structural gaps). About a third of the bands are missing.

    Parameters
    ----------
    seed : int
    n_sites : int, default 40
        Sites labelled ``S01 .. S40``.
    n_patients : int, default 4000
        Approximate number of patients (sizes are rounded down, at least 5).
    ordinal : bool, default False
        Draw the band from a proportional-odds model (the comparison with
        mice's ``polr``) instead of baseline-category logits.
    band_doc_corr : float, default 0.0
        Correlation ``r`` of the sites' documentation quality with their
        effect on "high" (``b_j``; with ``ordinal=True`` with ``v_j``), at
        most ``sqrt(0.75)`` in size. The draws are the same for every value.

    Returns
    -------
    pandas.DataFrame
        Columns ``site, outcome, age, severity, lactate_band`` (text; ``None``
        where missing).

    See Also
    --------
    categorical_registry_truth

    Examples
    --------
    >>> frame = categorical_registry(1, n_sites=10, n_patients=500)
    >>> list(frame.columns)
    ['site', 'outcome', 'age', 'severity', 'lactate_band']
    """
    m = CATEGORICAL_MODEL
    om, mm = m["outcome"], m["missingness"]
    rng = np.random.default_rng(seed)
    sizes = lognormal_cluster_sizes(rng, n_patients, n_sites, log_sd=m["site_size_log_sd"],
                                    min_size=m["min_site_size"])
    j = cluster_index(sizes)
    n = j.size
    u = normal_cluster_effects(rng, n_sites, m["outcome_site_sd"])
    sd, rho = m["band_site_sd"], m["band_site_corr"]
    if ordinal:
        band_effects = normal_cluster_effects(rng, n_sites, sd)[:, None]
    else:
        band_effects = rng.multivariate_normal([0.0, 0.0], sd ** 2 * np.array([[1.0, rho], [rho, 1.0]]), n_sites)
    rho_u = m["corr_doc_quality_outcome_re"]
    if not abs(band_doc_corr) <= np.sqrt(1.0 - rho_u ** 2):
        raise ValueError(f"band_doc_corr must lie within +-{np.sqrt(1.0 - rho_u ** 2):.3f}, got {band_doc_corr!r}.")
    # correlated_cluster_effect's arithmetic plus the band's term (exactly 0.0 when r = 0)
    doc = (rho_u * u / m["outcome_site_sd"] + band_doc_corr * band_effects[:, -1] / sd
           + np.sqrt(1.0 - rho_u ** 2 - band_doc_corr ** 2) * rng.normal(size=n_sites))
    age = np.clip(rng.normal(m["age_mean"], m["age_sd"], n), *m["age_range"]).round(1)
    severity = np.clip(np.exp(rng.normal(np.log(m["severity_median"]), m["severity_log_sd"], n)),
                       *m["severity_range"]).round(1)
    z_sev, z_age = standardise(severity), standardise(age)
    if ordinal:
        om_band = m["ordinal_band"]
        eta_band = om_band["severity_std"] * z_sev + om_band["age_std"] * z_age + band_effects[j, 0]
        cumulative = special.expit(np.asarray(om_band["cutpoints"])[None, :] - eta_band[:, None])
    else:
        logits = [np.zeros(n)]
        for k, level in enumerate(("raised", "high")):
            intercept, b_sev, b_age = m["band"][level]
            logits.append(intercept + b_sev * z_sev + b_age * z_age + band_effects[j, k])
        cumulative = np.cumsum(special.softmax(np.column_stack(logits), axis=1), axis=1)[:, :2]
    code = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    eta = (om["intercept"] + om["raised"] * (code == 1) + om["high"] * (code == 2) + om["age"] * age
           + om["severity"] * severity + u[j])
    outcome = logistic_draws(rng, eta).astype(float)
    structural = lowest_clusters(doc, sizes >= m["structural_min_size"], m["n_structural_sites"])
    p_missing = special.expit(mm["intercept"] + mm["doc_quality"] * doc[j] + mm["severity_std"] * z_sev)
    missing = bernoulli(rng, p_missing, n) | structural[j]
    band = np.array(CATEGORICAL_LEVELS, dtype=object)[code]
    band[missing] = None
    return pd.DataFrame({"site": [f"S{k + 1:02d}" for k in j], "outcome": outcome, "age": age,
                         "severity": severity, "lactate_band": band})


def categorical_registry_truth() -> dict:
    """Values that generated :func:`categorical_registry`.

    Returns
    -------
    dict
        ``terms`` of the analysis model ``outcome ~ lactate_band + age +
        severity + (1 | site)`` keyed as hmlib codes it (levels sorted, so
        the reference level is ``high``: ``lactate_band[normal] = -1.2``,
        ``lactate_band[raised] = -0.6``); ``log_odds_ratios_vs_normal`` the
        same contrasts against ``normal`` (``raised`` 0.6, ``high`` 1.2);
        ``band_model`` (``ordinal_band_model`` with ``ordinal=True``; the
        outcome model is the same) and ``missingness_model``.
    """
    m = CATEGORICAL_MODEL
    om = m["outcome"]
    return {
        "generator": "hmlib.simulate.categorical.categorical_registry",
        "analysis_model": "outcome ~ lactate_band + age + severity + (1|site), binomial(logit)",
        "reference_level": "high",
        "terms": {"Intercept": om["intercept"] + om["high"], "lactate_band[normal]": -om["high"],
                  "lactate_band[raised]": om["raised"] - om["high"], "age": om["age"],
                  "severity": om["severity"], "sd(site)": m["outcome_site_sd"]},
        "log_odds_ratios_vs_normal": {"raised": om["raised"], "high": om["high"]},
        "ordinal_band_model": dict(m["ordinal_band"], site_sd=m["band_site_sd"]),
        "band_model": {"levels": list(CATEGORICAL_LEVELS),
                       "logits_vs_normal": {k: dict(zip(("intercept", "severity_std", "age_std"), v))
                                            for k, v in m["band"].items()},
                       "site_sd": m["band_site_sd"], "site_corr": m["band_site_corr"]},
        "missingness_model": {**m["missingness"], "n_structural_sites": m["n_structural_sites"]},
    }
