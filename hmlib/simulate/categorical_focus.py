"""Registries whose focus is an incomplete categorical variable with three levels, with known truth.

The joint model's categorical truth study (``bench/joint_categorical_truth.py``),
the R comparisons of ``tests/results/joint_categorical.R`` and the
categorical MNAR sensitivity tests draw from here. The focus has three
levels (``normal`` the reference, ``raised``, ``high``), its own site effects,
and is missing at random given site and severity, with two sites that never
record it; optionally it is missing not at random, with a known
pattern-mixture odds ratio (:func:`categorical_focus_registry`'s
``mnar_log_odds``).

All draws come from one ``numpy.random.default_rng(seed)`` in the order the
docstring states (see :mod:`hmlib.simulate.blocks`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from hmlib.simulate.blocks import (bernoulli, cluster_index, correlated_cluster_effect, logistic_draws,
                                   lognormal_cluster_sizes, lowest_clusters, normal_cluster_effects, standardise)

__all__ = ["CATEGORICAL_FOCUS_MODEL", "CATEGORICAL_LEVELS", "categorical_focus_registry",
           "categorical_focus_registry_truth"]

#: Levels of the focus ``band``, lowest first; the first is the reference.
CATEGORICAL_LEVELS = ("normal", "raised", "high")

#: Model of :func:`categorical_focus_registry` (logit scales).
CATEGORICAL_FOCUS_MODEL = {
    "site_size_log_sd": 0.6, "min_site_size": 10,
    "outcome_site_sd": 0.5, "band_site_sd": 0.5, "corr_doc_quality_outcome_re": -0.5,
    # nominal: log odds of raised and high against normal
    "nominal": {"intercept": (-0.3, -1.0), "severity": (0.5, 1.0)},
    # ordinal: logit P(band >= raised), P(band >= high) = 0.9 severity + v_j - cut
    "ordinal": {"cutpoints": (-0.2, 1.4), "severity": 0.9},
    "outcome": {"intercept": -1.6, "age": 0.3, "severity": 0.4, "raised": 0.5, "high": 1.0},
    "missingness": {"intercept": -0.8, "doc_quality": -1.0, "severity": -0.3},
    "n_structural_sites": 2, "structural_min_size": 20,
}


def categorical_focus_registry(seed: int, n_sites: int = 40, n_patients: int = 2000, *, ordinal: bool = False,
                               mnar_log_odds: float = 0.0, n_structural: int | None = None,
                               keep_complete: bool = False) -> pd.DataFrame:
    """A registry with a three-level focus ``band`` missing at random given site and severity (or not at random).

    Model (constants :data:`CATEGORICAL_FOCUS_MODEL`), in draw order:

    - site sizes ``exp(N(0, 0.6^2))`` scaled to ``n_patients`` (at least 10);
    - site effects: outcome ``u_j ~ N(0, 0.5^2)``; band: nominal, two
      ``v_kj ~ N(0, 0.5^2)`` (raised, then high); ordinal, one ``v_j ~ N(0,
      0.5^2)``; documentation quality ``d_j`` with correlation -0.5 with ``u_j``;
    - age and severity, standard normal (patient level);
    - band: nominal, ``log P(k) / P(normal) = a_k + s_k severity + v_kj`` with
      ``a = (-0.3, -1.0)``, ``s = (0.5, 1.0)``; ordinal, ``logit P(band >= k)
      = 0.9 severity + v_j - theta_k``, ``theta = (-0.2, 1.4)``; drawn by one
      uniform per patient;
    - outcome ``logit P = -1.6 + 0.3 age + 0.4 severity + 0.5 [raised] + 1.0
      [high] + u_j``;
    - missingness ``logit P = -0.8 - 1.0 d_j - 0.3 severity + mnar_log_odds
      [band is not normal]``, and always missing in the two sites (or
      ``n_structural``) of at least 20 patients with the lowest ``d_j``.

    With ``mnar_log_odds = delta`` the missing patients have ``e^delta``
    times the odds of each non-reference band (against ``normal``) of the
    recorded patients with the same site, severity, age and outcome: exactly
    the pattern-mixture model of the categorical delta adjustment
    (:func:`hmlib.stats.sensitivity.tilt_categories`), since the odds ratio
    of missingness between two bands is ``e^delta`` whatever else is given
    (outside the structural sites, where every band is missing; set
    ``n_structural=0`` for the exact model everywhere).

    Parameters
    ----------
    seed : int
    n_sites : int, default 40
    n_patients : int, default 2000
    ordinal : bool
        Draw the band from the cumulative logit model instead of the nominal one.
    mnar_log_odds : float
        Missing-not-at-random log odds ratio (0: missing at random).
    n_structural : int, optional
        Sites that never record the band (default 2).
    keep_complete : bool
        Add ``band_complete``, the band before values went missing (for truth studies; no extra draw).

    Returns
    -------
    pandas.DataFrame
        Columns ``site, outcome, age, severity, band`` (band text, None where missing).

    Examples
    --------
    >>> frame = categorical_focus_registry(1, n_sites=10, n_patients=400)
    >>> list(frame.columns)
    ['site', 'outcome', 'age', 'severity', 'band']
    """
    m = CATEGORICAL_FOCUS_MODEL
    om, mm = m["outcome"], m["missingness"]
    rng = np.random.default_rng(seed)
    sizes = lognormal_cluster_sizes(rng, n_patients, n_sites, log_sd=m["site_size_log_sd"],
                                    min_size=m["min_site_size"])
    j = cluster_index(sizes)
    n = j.size
    u = normal_cluster_effects(rng, n_sites, m["outcome_site_sd"])
    v = np.column_stack([normal_cluster_effects(rng, n_sites, m["band_site_sd"]) for _ in range(1 if ordinal else 2)])
    doc = correlated_cluster_effect(rng, u, m["outcome_site_sd"], m["corr_doc_quality_outcome_re"])
    age = rng.normal(size=n).round(3)
    severity = rng.normal(size=n).round(3)
    if ordinal:
        om_ = m["ordinal"]
        at_least = special.expit(om_["severity"] * severity[:, None] + v[j] - np.asarray(om_["cutpoints"])[None, :])
        probs = np.column_stack([1 - at_least[:, 0], at_least[:, 0] - at_least[:, 1], at_least[:, 1]])
    else:
        nm = m["nominal"]
        logits = np.column_stack([np.zeros(n), *(nm["intercept"][k] + nm["severity"][k] * severity + v[j, k]
                                                 for k in range(2))])
        probs = np.exp(logits - special.logsumexp(logits, axis=1, keepdims=True))
    band = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(max=2)
    eta = (om["intercept"] + om["age"] * age + om["severity"] * severity + om["raised"] * (band == 1)
           + om["high"] * (band == 2) + u[j])
    outcome = logistic_draws(rng, eta).astype(float)
    n_structural = m["n_structural_sites"] if n_structural is None else int(n_structural)
    structural = lowest_clusters(doc, sizes >= m["structural_min_size"], n_structural)
    p_missing = special.expit(mm["intercept"] + mm["doc_quality"] * doc[j] + mm["severity"] * standardise(severity)
                              + float(mnar_log_odds) * (band > 0))
    missing = bernoulli(rng, p_missing, n) | structural[j]
    complete = np.asarray(CATEGORICAL_LEVELS, dtype=object)[band]
    labels = complete.copy()
    labels[missing] = None
    frame = pd.DataFrame({"site": j + 1, "outcome": outcome, "age": age, "severity": severity, "band": labels})
    if keep_complete:
        frame["band_complete"] = complete
    return frame


def categorical_focus_registry_truth(ordinal: bool = False, mnar_log_odds: float = 0.0) -> dict:
    """Values that generated :func:`categorical_focus_registry`.

    Returns
    -------
    dict
        ``terms`` (``band[raised]``, ``band[high]``, ``age``, ``severity``,
        ``sd(site)``), ``levels`` (reference first), ``ordinal``,
        ``mnar_log_odds`` and ``model``.
    """
    om = CATEGORICAL_FOCUS_MODEL["outcome"]
    return {"terms": {"band[raised]": om["raised"], "band[high]": om["high"], "age": om["age"],
                      "severity": om["severity"], "sd(site)": CATEGORICAL_FOCUS_MODEL["outcome_site_sd"]},
            "levels": list(CATEGORICAL_LEVELS), "ordinal": bool(ordinal), "mnar_log_odds": float(mnar_log_odds),
            "model": CATEGORICAL_FOCUS_MODEL}
