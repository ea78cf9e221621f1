"""The demo registry: a seeded synthetic trauma registry with known truth.

``hmreport demo`` writes this registry so that a new user gets a report whose
findings can be checked against the values that generated the data. It is
built to show what the report is about: lactate (the focus variable) is
missing at rates that vary by site, so that

- complete-case analysis is a *site selection*: two sites never record
  lactate (a structural gap) and poorly documenting sites, which also have
  higher mortality, lose most of their patients;
- flat (single-level) imputation *blends distinct sites*: each site has its
  own lactate level (assay, venous or arterial sampling, timing protocol),
  unrelated to its mortality effect, and the sites whose level is far from
  the others' (point-of-care or non-standard workflows) record lactate
  least often. An imputation model that ignores sites imputes every site at
  the common level, so within such a site the imputed values are shifted
  by the site's offset against the observed ones, a shift unrelated to
  outcome that attenuates the lactate coefficient of the random-intercept
  analysis model; multilevel imputation (site intercepts, cluster means)
  keeps the site levels. Over 200 seeds the flat estimate is lower by
  about 0.05 (a sixth of the truth) on average and the multilevel one about
  unbiased, but in one registry the difference exceeds half the multilevel
  standard error in only about half of the seeds (numbers:
  ``bench/results/demo_design.json``).

Algorithm
---------
With ``J`` sites and ``N`` patients, all draws from one
``numpy.random.default_rng(seed)``, in this order (the blocks are those of
:mod:`hmlib.simulate.blocks`: ``stratified_lognormal_cluster_sizes``,
``normal_cluster_effects``, ``exactly_correlated_scores``,
``uncorrelated_scores``, ``lowest_clusters``, ``bernoulli``):

1. Site sizes: stratified lognormal draws, ``w_j = exp(1.0 Phi^-1(q_j))`` with
   ``q_j`` uniform in the ``j``-th of ``J`` equal probability strata (so the
   smallest and largest sites are always in the tails), normal scores clipped
   to +/-2.5, randomly assigned to the site labels, scaled to sum to ``N`` by
   largest remainders with at least :data:`MIN_SITE_SIZE` patients each. The
   ``round(J / 5)`` largest sites are major trauma centres, the others trauma
   units.
2. Site effects: outcome random intercept ``u_j ~ N(0, 0.6^2)``, centred to
   mean 0 over sites; a documentation quality ``d_j`` (mean 0, SD 1) whose
   realised correlation with ``u`` is exactly -0.5 (poorly documenting sites
   have higher mortality); a lactate offset (assay, sampling protocol)
   ``v_j = 0.3 [trauma unit] + 1.0 z_j`` where ``z_j`` has mean 0, SD 1 and
   realised correlation exactly 0 with ``u`` and ``d`` (the offset is
   unrelated to the site's mortality effect and to its documentation;
   Gram-Schmidt on normal draws). The two trauma units with at least 20
   patients and the lowest ``d_j`` record no lactate at all.
3. Patients: age ``N(52, 21^2)`` clipped to 16-99 (1 decimal); sex male with
   probability 0.62; severity ``round(exp(N(log m, 0.7^2)))`` clipped to
   1-75 with median ``m`` 9 in trauma units, 12 in major trauma centres;
   systolic blood pressure ``138 - 0.8 (severity - 9) + 0.1 (age - 50) +
   N(0, 20^2)`` clipped to 50-230 (whole mmHg).
4. Lactate (mmol/L, 2 decimals; values below the assay floor 0.3 recorded
   as 0.3): ``lactate = 3.8 + 0.1 severity + 0.005 age - 0.015 sbp + v_j +
   e``, ``e ~ N(0, 0.8^2)``. Normal within a site given the covariates, so
   the normal random-intercept imputation model (mice's ``2l.norm`` /
   ``2l.pan``, :mod:`hmlib.stats.imputation`) is compatible with the outcome model
   (a logistic model linear in lactate tilts a normal by a mean shift);
   right-skewed overall through severity. The site offsets make about 60 %
   of the lactate variance given the covariates lie between sites (more
   than assay differences alone give in real registries; chosen so that the
   demo shows what flat imputation does). Because ``v_j`` is uncorrelated
   with ``u_j``, the between-site association of lactate with mortality
   follows the same coefficient as the within-site one, and the
   random-intercept analysis model is unbiased on the complete data.
5. Outcome: ``logit P(death within 30 days) = b0 + 0.035 age + 0.25 [male]
   + 0.07 severity + 0.3 lactate - 0.012 sbp + u_j`` (an odds ratio of 1.35
   per mmol/L of lactate at given severity), using the rounded
   values that are written to the file. ``b0`` is calibrated for each seed
   so that the expected mortality given the drawn sites and patients is 10 %,
   rounded to 4 decimals and then used; the truth records the value used.
6. Missing lactate, missing at random given site and severity:
   ``logit P(missing) = -0.9 - 1.0 d_j + 1.5 (|z_j| - sqrt(2 / pi)) + 1.0
   (severity - 12) / 10`` (time-critical, severely injured patients are
   less often documented, in the same direction as the site effect, so that
   complete cases have lower mortality on both counts; sites with an
   extreme offset, whose lactate comes from point-of-care or non-standard
   workflows, transfer it to the registry less often; ``|z|`` is centred at
   its expectation so the overall rate stays near the intercept's), and
   100 % in the structural sites. Systolic
   blood pressure is missing completely at random in 3 % of patients.

The truth (:attr:`DemoRegistry.truth`) keys the outcome model's terms as in
hmlib's results contract (``Intercept``, ``age``, ``sex[male]``,
``severity``, ``lactate``, ``sbp``, ``sd(site)``). They are the values of the
*conditional* (site-specific) model that generated the data; the marginal
(population-averaged) coefficients are smaller in absolute value.
``complete_data_terms`` holds, with the same keys, the analysis model
(:func:`hmlib.stats.design.fit_analysis_model`) fitted to the registry before
values went missing (:func:`simulate_complete_data`): the gap between it and
``terms`` is the sampling error of this one registry, the gap between it and
a method's estimate is what the missing data and the method add.

References
----------
.. [1] Resche-Rigon M, White IR. Multiple imputation by chained equations for
   systematically and sporadically missing multilevel data. Stat Methods Med
   Res. 2018;27(6):1634-49.
.. [2] Audigier V, White IR, Jolani S, et al. Multiple imputation for
   multilevel data with continuous and binary variables. Stat Sci.
   2018;33(2):160-83.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special

from hmlib import __version__
from hmlib.exceptions import ParamsError
from hmlib.simulate.blocks import (bernoulli, cluster_index, cluster_labels, exactly_correlated_scores,
                                   lowest_clusters, normal_cluster_effects, stratified_lognormal_cluster_sizes,
                                   uncorrelated_scores)
from hmlib.stats.design import fit_analysis_model

__all__ = [
    "DemoRegistry",
    "DemoPaths",
    "simulate_registry",
    "simulate_complete_data",
    "write_demo",
    "DEFAULT_SEED",
    "DEMO_PARAMS_YAML",
    "COLUMNS",
]

#: Seed of the registry ``hmreport demo`` writes.
DEFAULT_SEED = 20261127
#: Bumped whenever the same seed would give different data.
GENERATOR_VERSION = "2"
#: Columns of the registry, in file order.
COLUMNS = (
    "patient_id", "site", "site_type", "age", "sex", "severity", "lactate",
    "sbp", "mortality_30d",
)
MIN_SITE_SIZE = 3
MAJOR_CENTRE = "major trauma centre"
TRAUMA_UNIT = "trauma unit"

#: Outcome model (conditional logistic, per unit of each column); the
#: intercept is calibrated per seed to :data:`TARGET_MORTALITY`.
OUTCOME_COEFFICIENTS = {
    "age": 0.035,
    "sex[male]": 0.25,
    "severity": 0.07,
    "lactate": 0.30,
    "sbp": -0.012,
}
SITE_SD = 0.6
#: Patient-level predictors of the analysis model (as in :data:`DEMO_PARAMS_YAML`).
ANALYSIS_PREDICTORS = ("age", "sex", "severity", "lactate", "sbp")
TARGET_MORTALITY = 0.10

SITE_SIZE_MODEL = {"lognormal_sd": 1.0, "normal_score_clip": 2.5,
                   "min_size": MIN_SITE_SIZE, "major_centre_share": 0.2}
PATIENT_MODEL = {
    "age_mean": 52.0, "age_sd": 21.0, "age_range": [16.0, 99.0],
    "p_male": 0.62,
    "severity_median_trauma_unit": 9.0, "severity_median_major_centre": 12.0,
    "severity_log_sd": 0.7, "severity_range": [1, 75],
    "sbp_intercept": 138.0, "sbp_severity": -0.8, "sbp_severity_centre": 9.0,
    "sbp_age": 0.1, "sbp_age_centre": 50.0, "sbp_sd": 20.0,
    "sbp_range": [50, 230],
}
#: Lactate model (mmol/L): ``lactate = intercept + severity * severity + age *
#: age + sbp * sbp + v_j + e``, normal residual ``e ~ N(0, residual_sd^2)``
#: and site offset ``v_j = trauma_unit * [trauma unit] + site_sd * z_j`` with
#: ``z_j`` standardised and uncorrelated with the outcome random effect and the
#: documentation quality; values below ``floor`` (the assay's lower limit) are
#: recorded as ``floor``.
LACTATE_MODEL = {
    "intercept": 3.8,
    "severity": 0.1,
    "age": 0.005,
    "sbp": -0.015,
    "trauma_unit": 0.3,
    "site_sd": 1.0,
    "residual_sd": 0.8,
    "floor": 0.3,
}
#: logit P(lactate missing) for sites that record lactate at all;
#: ``offset_extremeness`` multiplies ``|z_j| - sqrt(2 / pi)`` (``z_j`` the
#: standardised site offset of :data:`LACTATE_MODEL`).
MISSINGNESS_MODEL = {
    "mechanism": "MAR given site (documentation quality) and severity",
    "intercept": -0.9,
    "doc_quality": -1.0,
    "severity_std": 1.0,
    "severity_centre": 12.0,
    "severity_scale": 10.0,
    "offset_extremeness": 1.5,
    "corr_doc_quality_outcome_re": -0.5,
    "n_structural_sites": 2,
    "structural_min_size": 20,
}
SBP_MISSING_RATE = 0.03

#: The params file ``hmreport demo`` writes beside the data. Its ``seed`` is
#: the seed of the report's own random steps, not of the data.
DEMO_PARAMS_YAML = """\
# Demo: synthetic trauma registry written by `hmreport demo` (hmlib.simulate.demo).
name: demo
data: ../data/demo/demo_registry.csv
truth: ../data/demo/demo_registry_truth.json
cluster: site
outcome: mortality_30d
outcome_family: binomial
predictors: [age, sex, severity, lactate, sbp]
cluster_covariates: [site_type]
focus: lactate
seed: 20261127
"""


@dataclass(frozen=True)
class DemoRegistry:
    """A simulated registry and the values that generated it.

    Attributes
    ----------
    data : pandas.DataFrame
        One row per patient, columns :data:`COLUMNS`.
    truth : dict
        JSON-ready description of the generator: call, ``terms`` (true
        conditional coefficients and ``sd(site)``), the lactate and
        missingness models, realised summaries and ``per_site`` rows.
    """

    data: pd.DataFrame
    truth: dict


@dataclass(frozen=True)
class DemoPaths:
    """Files written by :func:`write_demo`.

    Attributes
    ----------
    data, truth, params : pathlib.Path
        The registry CSV, its truth JSON and the params YAML.
    """

    data: Path
    truth: Path
    params: Path


def _check_call(seed, n_patients, n_sites) -> None:
    for name, value in (("seed", seed), ("n_patients", n_patients), ("n_sites", n_sites)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ParamsError(f"{name} must be an integer, got {value!r}.")
    if seed < 0:
        raise ParamsError(f"seed must be non-negative, got {seed}.")
    if n_sites < 10:
        raise ParamsError(
            f"n_sites must be at least 10 (two structural sites and enough others), got {n_sites}."
        )
    if n_patients < 20 * n_sites:
        raise ParamsError(
            f"n_patients must be at least 20 per site ({20 * n_sites} for {n_sites} sites), "
            f"got {n_patients}; lower n_sites or raise n_patients."
        )


def _calibrate_intercept(eta_without_intercept: np.ndarray) -> float:
    """Intercept giving expected mortality :data:`TARGET_MORTALITY`, 4 decimals."""
    def gap(b0: float) -> float:
        return float(special.expit(b0 + eta_without_intercept).mean() - TARGET_MORTALITY)

    root = optimize.brentq(gap, -40.0, 40.0, xtol=1e-10)
    return round(float(root), 4)


def simulate_registry(seed: int = DEFAULT_SEED, n_patients: int = 3000,
                      n_sites: int = 30) -> DemoRegistry:
    """Simulate the demo trauma registry.

    Parameters
    ----------
    seed : int, default 20261127
        Seed of ``numpy.random.default_rng``; the same seed gives the same
        registry and truth (with the same numpy version).
    n_patients : int, default 3000
        Number of patients; at least 20 per site.
    n_sites : int, default 30
        Number of sites, labelled ``"Site 01"``, ``"Site 02"``, ...; at
        least 10.

    Returns
    -------
    DemoRegistry
        ``data`` (columns :data:`COLUMNS`) and ``truth`` (see the module
        docstring for the generating model).

    Raises
    ------
    hmlib.exceptions.ParamsError
        If an argument is not an integer or out of range.

    Examples
    --------
    >>> demo = simulate_registry(seed=1)
    >>> demo.truth["terms"]["lactate"]
    0.3
    >>> bool(demo.data["lactate"].isna().mean() > 0.2)
    True
    """
    data, _, truth = _simulate(seed, n_patients, n_sites)
    return DemoRegistry(data=data, truth=truth)


def simulate_complete_data(seed: int = DEFAULT_SEED, n_patients: int = 3000,
                           n_sites: int = 30) -> pd.DataFrame:
    """The demo registry before lactate and systolic blood pressure went missing.

    Same arguments, rows and values as :func:`simulate_registry`, with every
    cell filled: fitting the analysis model to it shows what the registry
    would have given without missing data, which separates the sampling
    error of one registry from the error a missing-data method adds.

    Parameters
    ----------
    seed, n_patients, n_sites : int
        As for :func:`simulate_registry`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, no missing values.

    Examples
    --------
    >>> full = simulate_complete_data(seed=1)
    >>> int(full["lactate"].isna().sum())
    0
    """
    _, complete, _ = _simulate(seed, n_patients, n_sites)
    return complete


def _simulate(seed, n_patients, n_sites):
    """Registry with gaps, the same registry complete, and the truth."""
    _check_call(seed, n_patients, n_sites)
    seed, n_patients, n_sites = int(seed), int(n_patients), int(n_sites)
    rng = np.random.default_rng(seed)

    # --- sites -----------------------------------------------------------
    labels = cluster_labels(n_sites, "Site ", start=1, width=max(2, len(str(n_sites))))
    sizes = stratified_lognormal_cluster_sizes(
        rng, n_patients, n_sites, log_sd=SITE_SIZE_MODEL["lognormal_sd"],
        score_clip=SITE_SIZE_MODEL["normal_score_clip"], min_size=MIN_SITE_SIZE)
    n_major = max(1, round(n_sites * SITE_SIZE_MODEL["major_centre_share"]))
    major = np.zeros(n_sites, dtype=bool)
    major[np.argsort(-sizes, kind="stable")[:n_major]] = True
    trauma_unit = ~major

    u = normal_cluster_effects(rng, n_sites, SITE_SD)
    u = u - u.mean()
    doc = exactly_correlated_scores(rng, u, MISSINGNESS_MODEL["corr_doc_quality_outcome_re"])
    offset_score = uncorrelated_scores(rng, n_sites, [u, doc])
    v = LACTATE_MODEL["trauma_unit"] * trauma_unit + LACTATE_MODEL["site_sd"] * offset_score
    structural = lowest_clusters(doc, trauma_unit & (sizes >= MISSINGNESS_MODEL["structural_min_size"]),
                                 MISSINGNESS_MODEL["n_structural_sites"])

    # --- patients --------------------------------------------------------
    site_idx = cluster_index(sizes)
    pm = PATIENT_MODEL
    age = np.round(np.clip(rng.normal(pm["age_mean"], pm["age_sd"], n_patients),
                           *pm["age_range"]), 1)
    male = bernoulli(rng, pm["p_male"], n_patients)
    median_sev = np.where(major[site_idx], pm["severity_median_major_centre"],
                          pm["severity_median_trauma_unit"])
    severity = np.clip(np.round(np.exp(np.log(median_sev) + rng.normal(
        0.0, pm["severity_log_sd"], n_patients))), *pm["severity_range"]).astype(np.int64)
    sbp = np.clip(np.round(pm["sbp_intercept"]
                           + pm["sbp_severity"] * (severity - pm["sbp_severity_centre"])
                           + pm["sbp_age"] * (age - pm["sbp_age_centre"])
                           + rng.normal(0.0, pm["sbp_sd"], n_patients)), *pm["sbp_range"])

    lm = LACTATE_MODEL
    lactate = (lm["intercept"] + lm["severity"] * severity + lm["age"] * age
               + lm["sbp"] * sbp + v[site_idx] + rng.normal(0.0, lm["residual_sd"], n_patients))
    lactate = np.maximum(np.round(lactate, 2), lm["floor"])

    beta = OUTCOME_COEFFICIENTS
    eta = (beta["age"] * age + beta["sex[male]"] * male + beta["severity"] * severity
           + beta["lactate"] * lactate + beta["sbp"] * sbp + u[site_idx])
    intercept = _calibrate_intercept(eta)
    p_death = special.expit(intercept + eta)
    mortality = bernoulli(rng, p_death, n_patients).astype(np.int64)

    mm = MISSINGNESS_MODEL
    severity_std = (severity - mm["severity_centre"]) / mm["severity_scale"]
    # Centred at E|Z| so that the extremeness term leaves the overall rate
    # roughly where the intercept puts it.
    extremeness = np.abs(offset_score) - np.sqrt(2.0 / np.pi)
    p_missing = special.expit(mm["intercept"] + mm["doc_quality"] * doc[site_idx]
                              + mm["offset_extremeness"] * extremeness[site_idx]
                              + mm["severity_std"] * severity_std)
    lactate_missing = bernoulli(rng, p_missing, n_patients) | structural[site_idx]
    sbp_missing = bernoulli(rng, SBP_MISSING_RATE, n_patients)

    # An extract lists patients in arrival order, not grouped by site.
    order = rng.permutation(n_patients)
    data = pd.DataFrame({
        "patient_id": np.arange(1, n_patients + 1, dtype=np.int64),
        "site": pd.array(labels[site_idx][order], dtype="str"),
        "site_type": pd.array(np.where(major, MAJOR_CENTRE, TRAUMA_UNIT)[site_idx][order],
                              dtype="str"),
        "age": age[order],
        "sex": pd.array(np.where(male, "male", "female")[order], dtype="str"),
        "severity": severity[order],
        "lactate": np.where(lactate_missing, np.nan, lactate)[order],
        "sbp": np.where(sbp_missing, np.nan, sbp)[order],
        "mortality_30d": mortality[order],
    })

    complete = data.assign(lactate=lactate[order], sbp=sbp[order].astype(float))
    truth = _truth(seed=seed, n_patients=n_patients, n_sites=n_sites, labels=labels,
                   sizes=sizes, major=major, u=u, v=v, doc=doc, structural=structural,
                   site_idx=site_idx, intercept=intercept, p_death=p_death,
                   mortality=mortality, lactate=lactate, lactate_missing=lactate_missing,
                   sbp_missing=sbp_missing, complete_data_terms=_complete_data_terms(complete))
    return data, complete, truth


def _complete_data_terms(complete: pd.DataFrame) -> dict:
    """The analysis model fitted to the registry before values went missing."""
    fit = fit_analysis_model(complete, outcome="mortality_30d", predictors=ANALYSIS_PREDICTORS,
                             cluster="site", family="binomial", levels={"sex": ["female", "male"]})
    return {**{name: _r(value) for name, value in zip(fit.term_names, fit.coef)},
            "sd(site)": _r(fit.cluster_sd)}


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


def _truth(*, seed, n_patients, n_sites, labels, sizes, major, u, v, doc, structural,
           site_idx, intercept, p_death, mortality, lactate, lactate_missing,
           sbp_missing, complete_data_terms) -> dict:
    complete = ~lactate_missing & ~sbp_missing
    per_site = []
    for j, label in enumerate(labels):
        rows = site_idx == j
        per_site.append({
            "site": str(label),
            "n": int(sizes[j]),
            "site_type": MAJOR_CENTRE if major[j] else TRAUMA_UNIT,
            "outcome_re": _r(u[j]),
            "lactate_site_offset": _r(v[j]),
            "doc_quality": _r(doc[j]),
            "structural_missing": bool(structural[j]),
            "missing_rate": _r(lactate_missing[rows].mean()),
            "observed_mortality": _r(mortality[rows].mean()),
        })
    terms = {"Intercept": intercept, **OUTCOME_COEFFICIENTS, "sd(site)": SITE_SD}
    return {
        "generator": "hmlib.simulate.demo.simulate_registry",
        "generator_version": GENERATOR_VERSION,
        "hmlib_version": __version__,
        "numpy_version": np.__version__,
        "seed": seed,
        "call": {"seed": seed, "n_patients": n_patients, "n_sites": n_sites},
        "analysis_model": ("mortality_30d ~ age + sex + severity + lactate + sbp + (1|site), "
                           "binomial(logit)"),
        "terms": terms,
        "terms_note": ("conditional (site-specific) data-generating values; Intercept "
                       "calibrated for this seed to expected mortality "
                       f"{TARGET_MORTALITY}"),
        "complete_data_terms": complete_data_terms,
        "complete_data_note": ("the analysis model (random-intercept logistic, Laplace) fitted to "
                               "this registry before lactate and sbp went missing: its distance "
                               "from terms is sampling error, the rest of a method's error is "
                               "missing-data error"),
        "site_sd_realised": _r(u.std(ddof=1)),
        "site_size_model": SITE_SIZE_MODEL,
        "patient_model": PATIENT_MODEL,
        "lactate_model": {**LACTATE_MODEL,
                          "fraction_floored": _r((lactate <= LACTATE_MODEL["floor"]).mean()),
                          "site_sd_realised": _r(v.std(ddof=1)),
                          "corr_site_offset_outcome_re_realised": _r(np.corrcoef(v, u)[0, 1])},
        "missingness_model": {
            **MISSINGNESS_MODEL,
            "corr_doc_quality_outcome_re_realised": _r(np.corrcoef(doc, u)[0, 1]),
            "structural_sites": [str(s) for s in labels[structural]],
            "lactate_missing_rate": _r(lactate_missing.mean()),
            "sbp_missing_rate_model": SBP_MISSING_RATE,
            "sbp_missing_rate": _r(sbp_missing.mean()),
        },
        "mortality": {
            "overall": _r(mortality.mean()),
            "complete_case": _r(mortality[complete].mean()),
            "lactate_observed": _r(mortality[~lactate_missing].mean()),
            "model_implied_given_sites": _r(p_death.mean()),
        },
        "n_patients": n_patients,
        "n_sites": n_sites,
        "n_complete_cases": int(complete.sum()),
        "n_sites_below_15": int((sizes < 15).sum()),
        "per_site": per_site,
    }


def write_demo(root: str | Path, *, seed: int = DEFAULT_SEED, n_patients: int = 3000,
               n_sites: int = 30) -> DemoPaths:
    """Write the demo registry, its truth and its params file under ``root``.

    Parameters
    ----------
    root : str or path-like
        Project folder; files go to ``root/data/demo/demo_registry.csv``,
        ``root/data/demo/demo_registry_truth.json`` and
        ``root/params/demo.yaml`` (folders are created, files overwritten).
    seed, n_patients, n_sites : int
        Passed to :func:`simulate_registry`.

    Returns
    -------
    DemoPaths
        The three paths written.

    Notes
    -----
    The CSV and JSON are byte-identical for the same arguments (and numpy
    version): floats are written with ``%.10g`` after the rounding done in
    :func:`simulate_registry`, the JSON with sorted keys. The params file is
    always :data:`DEMO_PARAMS_YAML`, whose ``seed`` seeds the report's
    analysis, whatever ``seed`` generated the data.

    See Also
    --------
    simulate_registry
    """
    demo = simulate_registry(seed=seed, n_patients=n_patients, n_sites=n_sites)
    root = Path(root)
    data_dir = root / "data" / "demo"
    params_dir = root / "params"
    data_dir.mkdir(parents=True, exist_ok=True)
    params_dir.mkdir(parents=True, exist_ok=True)
    paths = DemoPaths(data=data_dir / "demo_registry.csv",
                      truth=data_dir / "demo_registry_truth.json",
                      params=params_dir / "demo.yaml")
    demo.data.to_csv(paths.data, index=False, float_format="%.10g", lineterminator="\n")
    paths.truth.write_text(json.dumps(demo.truth, indent=2, sort_keys=True) + "\n",
                           encoding="utf-8")
    paths.params.write_text(DEMO_PARAMS_YAML, encoding="utf-8")
    return paths
