"""Visits within patients within sites: repeated measures with random slopes and missingness over time.

The data of issue #16 ("encounters within patients"): each patient of a site
has scheduled visits; the outcome has a patient random intercept and a
random slope on time (correlated) and a site intercept; a covariate varies
from visit to visit; visits are missed now and then (intermittent
missingness, more often in some sites and during a pilot phase of the
registry) and patients drop out for good (monotone missingness) with a
hazard that depends on the site and on the last observed outcome, which
makes the dropout missing at random given the observed history (MAR on
history), not completely at random. All draws come from one
``numpy.random.default_rng(seed)`` in the order the docstring states.

Generators
----------
longitudinal_registry
    One row per scheduled visit (a full grid: missed visits and visits after
    dropout are rows with the outcome and covariate missing), as
    ``cdystonia.csv`` in ``../shared/data/real``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from hmlib.simulate.blocks import cluster_index, lognormal_cluster_sizes, normal_cluster_effects

__all__ = ["LONGITUDINAL_MODEL", "longitudinal_registry", "longitudinal_registry_truth"]

#: Model of :func:`longitudinal_registry` (time in months; missingness on the logit scale).
LONGITUDINAL_MODEL = {
    "site_size_log_sd": 0.5, "min_site_size": 5,
    "visit_interval_months": 3, "accrual_months": 24, "start": "2020-01-01",
    "days_per_month": 30.4375,
    "outcome": {"intercept": 10.0, "month": 0.15, "x": 0.5, "site_sd": 0.8, "patient_sd": 2.0,
                "slope_sd": 0.1, "slope_cor": -0.3, "residual_sd": 1.5},
    "x": {"patient_sd": 0.7, "month": 0.02, "residual_sd": 1.0, "item_missing": 0.05},
    "missed_visit": {"intercept": -2.4, "site_sd": 0.7},
    "dropout": {"intercept": -3.0, "site_sd": 0.5, "centre": 10.0},
}


def _patient_effects(rng: np.random.Generator, n: int, m: dict) -> np.ndarray:
    """Patient intercepts and slopes, shape (n, 2), from one bivariate normal draw."""
    sd = np.array([m["patient_sd"], m["slope_sd"]])
    cov = np.outer(sd, sd) * np.array([[1.0, m["slope_cor"]], [m["slope_cor"], 1.0]])
    return rng.multivariate_normal([0.0, 0.0], cov, n)


def _dropout_visits(y: np.ndarray, missed: np.ndarray, hazard_base: np.ndarray, uniform: np.ndarray,
                    last_value: float, centre: float) -> np.ndarray:
    """First visit of each patient's dropout (``n_visits`` for none), visit by visit.

    At visit ``t >= 1`` a patient still in the study drops out with
    ``P = expit(hazard_base + last_value * (y_last - centre))``, ``y_last``
    the outcome at the latest visit before ``t`` that was not missed
    (``centre`` when there is none yet).
    """
    n, n_visits = y.shape
    dropout = np.full(n, n_visits)
    last = np.full(n, centre)
    for t in range(n_visits):
        if t >= 1:
            active = dropout == n_visits
            p = special.expit(hazard_base + last_value * (last - centre))
            dropout[active & (uniform[:, t] < p)] = t
        seen = (dropout == n_visits) & ~missed[:, t]
        last[seen] = y[seen, t]
    return dropout


def longitudinal_registry(seed: int, *, n_sites: int = 20, n_patients: int = 600, n_visits: int = 8,
                          dropout_last_value: float = 0.25, pilot_months: float = 6.0,
                          pilot_shift: float = 1.5) -> pd.DataFrame:
    """Patients in sites seen at scheduled visits, with missed visits, dropout and a pilot phase.

    Model (constants :data:`LONGITUDINAL_MODEL`; ``t`` = months since the
    patient's enrolment, visits at ``t = 0, 3, ..., 3 (n_visits - 1)``), in
    draw order:

    - site sizes ``exp(N(0, 0.5^2))`` scaled to ``n_patients`` (at least 5;
      :func:`~hmlib.simulate.blocks.lognormal_cluster_sizes`);
    - site effects: outcome ``s_j ~ N(0, 0.8^2)``, missed visits ``m_j ~
      N(0, 0.7^2)``, dropout ``d_j ~ N(0, 0.5^2)`` (independent);
    - patient intercept and slope ``(a_i, b_i) ~ N(0, [[2^2, -0.3 * 2 *
      0.1], [., 0.1^2]])`` (one ``multivariate_normal`` draw);
    - enrolment day ``floor(U(0, 24 months))`` after 2020-01-01; a visit's
      date is enrolment + ``round(t * 30.4375)`` days;
    - covariate ``x_it = c_i + 0.02 t + N(0, 1)``: first ``c_i ~ N(0,
      0.7^2)``, then the visit noise;
    - outcome ``y_it = 10 + 0.15 t + 0.5 x_it + s_j + a_i + b_i t + e_it``,
      ``e_it ~ N(0, 1.5^2)``;
    - missed visits (intermittent, the baseline included): ``logit P = -2.4
      + m_j + pilot_shift * [date < 2020-01-01 + pilot_months months]``
      (one uniform per visit); a missed visit has ``x`` and ``y`` missing;
    - dropout (monotone): at visit ``t >= 1`` a patient still in the study
      leaves with ``logit P = -3 + d_j + dropout_last_value * (y_last -
      10)``, ``y_last`` the last observed outcome (10 when none yet); from
      that visit on ``x`` and ``y`` are missing (one uniform per visit,
      drawn for every visit, used from visit 1 on);
    - ``x`` also missing completely at random in 5% of the remaining visits
      (one uniform per visit).

    Dropout is missing at random given the observed history (the last
    observed outcome), not given the current visit's data: a screen of
    dropout on the last observed value should find ``dropout_last_value``
    (per outcome point) and, at 0, nothing beyond chance.

    Parameters
    ----------
    seed : int
    n_sites : int, default 20
        Sites numbered ``1 .. n_sites``.
    n_patients : int, default 600
        Approximate number of patients (sizes are rounded down, at least 5).
    n_visits : int, default 8
        Scheduled visits per patient (at least 2).
    dropout_last_value : float, default 0.25
        Log odds ratio of dropout per outcome point of the last observed
        value (0: dropout depends on the site only).
    pilot_months : float, default 6.0
        Length of the pilot phase from 2020-01-01 (calendar time).
    pilot_shift : float, default 1.5
        Log odds ratio of a missed visit during the pilot phase (0: no drift).

    Returns
    -------
    pandas.DataFrame
        One row per scheduled visit, sorted by site, patient and visit:
        ``site, patient, visit, month, date, x, y`` (``patient`` numbered
        ``1 ..`` over the registry, ``visit`` ``0 .. n_visits - 1``,
        ``date`` datetime64).

    See Also
    --------
    longitudinal_registry_truth

    Examples
    --------
    >>> frame = longitudinal_registry(1, n_sites=5, n_patients=50, n_visits=4)
    >>> list(frame.columns)
    ['site', 'patient', 'visit', 'month', 'date', 'x', 'y']
    """
    if n_visits < 2:
        raise ValueError(f"n_visits must be at least 2, got {n_visits}.")
    m = LONGITUDINAL_MODEL
    om, xm, vm, dm = m["outcome"], m["x"], m["missed_visit"], m["dropout"]
    rng = np.random.default_rng(seed)
    sizes = lognormal_cluster_sizes(rng, n_patients, n_sites, log_sd=m["site_size_log_sd"],
                                    min_size=m["min_site_size"])
    site = cluster_index(sizes)
    n = site.size
    s = normal_cluster_effects(rng, n_sites, om["site_sd"])
    miss_site = normal_cluster_effects(rng, n_sites, vm["site_sd"])
    drop_site = normal_cluster_effects(rng, n_sites, dm["site_sd"])
    effects = _patient_effects(rng, n, om)
    days_per_month = m["days_per_month"]
    enrol = np.floor(rng.uniform(0.0, m["accrual_months"] * days_per_month, n))
    month = np.arange(n_visits) * float(m["visit_interval_months"])
    day = enrol[:, None] + np.round(month * days_per_month)[None, :]
    x = (rng.normal(0.0, xm["patient_sd"], n)[:, None] + xm["month"] * month
         + rng.normal(0.0, xm["residual_sd"], (n, n_visits)))
    y = (om["intercept"] + om["month"] * month + om["x"] * x + (s[site] + effects[:, 0])[:, None]
         + effects[:, [1]] * month + rng.normal(0.0, om["residual_sd"], (n, n_visits)))
    pilot = day < pilot_months * days_per_month
    missed = rng.random((n, n_visits)) < special.expit(vm["intercept"] + miss_site[site][:, None]
                                                       + pilot_shift * pilot)
    dropout = _dropout_visits(y, missed, dm["intercept"] + drop_site[site], rng.random((n, n_visits)),
                              dropout_last_value, dm["centre"])
    gone = missed | (np.arange(n_visits)[None, :] >= dropout[:, None])
    x_gone = gone | (rng.random((n, n_visits)) < xm["item_missing"])
    start = np.datetime64(m["start"], "D")
    return pd.DataFrame({
        "site": np.repeat(site + 1, n_visits),
        "patient": np.repeat(np.arange(1, n + 1), n_visits),
        "visit": np.tile(np.arange(n_visits), n),
        "month": np.tile(month, n),
        "date": pd.to_datetime(start + day.ravel().astype("timedelta64[D]")),
        "x": np.where(x_gone, np.nan, x).ravel(),
        "y": np.where(gone, np.nan, y).ravel(),
    })


def longitudinal_registry_truth(*, dropout_last_value: float = 0.25, pilot_months: float = 6.0,
                                pilot_shift: float = 1.5) -> dict:
    """Values that generated :func:`longitudinal_registry` with the same keyword arguments.

    Returns
    -------
    dict
        ``terms`` of the analysis model ``y ~ month + x + (1 | site) + (1 +
        month | site:patient)`` keyed as hmlib's results contract
        (``Intercept``, ``month``, ``x``, ``sd(site)``, ``sd(patient)``,
        ``sd(month|patient)``, ``cor(month|patient)``), ``residual_sd``, the
        ``missed_visit`` and ``dropout`` models, and ``pilot_end`` (the date
        the pilot phase ends, ISO text).
    """
    m = LONGITUDINAL_MODEL
    om = m["outcome"]
    pilot_end = (pd.Timestamp(m["start"]) + pd.Timedelta(days=pilot_months * m["days_per_month"])).floor("D")
    return {
        "generator": "hmlib.simulate.longitudinal.longitudinal_registry",
        "analysis_model": "y ~ month + x + (1|site) + (1 + month|site:patient), gaussian",
        "terms": {"Intercept": om["intercept"], "month": om["month"], "x": om["x"], "sd(site)": om["site_sd"],
                  "sd(patient)": om["patient_sd"], "sd(month|patient)": om["slope_sd"],
                  "cor(month|patient)": om["slope_cor"]},
        "residual_sd": om["residual_sd"],
        "x_model": dict(m["x"]),
        "missed_visit": {**m["missed_visit"], "pilot_shift": pilot_shift, "pilot_months": pilot_months},
        "dropout": {**m["dropout"], "last_value": dropout_last_value},
        "pilot_end": pilot_end.date().isoformat(),
        "mar_on_history": dropout_last_value != 0,
    }
