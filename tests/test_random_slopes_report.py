"""Random slopes in the report (params ``random_slopes``, issue #16): the analysis model of steps 2-5, the
pooling of its random part, the multilevel imputation with slopes, the checks of the input.

Reference: ``tests/results/random_slope_analysis.R`` fits the report's analysis model with lme4 on the real
repeated-measures data (``data/real/cdystonia.csv``, ``data/real/pbcseq.csv``).

Test IDs
--------
RS-REP-001  fit_analysis_model with random_slopes equals lme4: cdystonia (lmer, (1 | site) +
            (1 + week | site:patient_id)) and pbcseq (glmer Laplace, (1 + year | id)): fixed effects within
            1e-3 of their SE, SEs within 1%, SDs and the correlation within 1e-2 (relative for SDs), log-likelihood
            within 1e-3
RS-REP-002  the slope's units do not matter: pbcseq fitted with the slope in days equals the fit in years with
            the day coefficient and the slope SD divided by 365.25 and the same correlation and intercept SD
RS-REP-003  the rows: sd(<cluster>), sd(<slope>|<cluster>), cor(<slope>|<cluster>) after the fixed effects (and
            after the higher levels' SDs); without random_slopes nothing changes (the same random-intercept fit)
RS-REP-004  Rubin's rules on random-slope fits: the slope SD pooled on the log scale and the correlation on
            Fisher's z scale, equal to a by-hand computation from the m fits; m copies of one data set pool to the
            single fit; the ICC leaves the slope SD out
RS-REP-005  params and data checks: a slope that is not a predictor, categorical, repeated, text, missing in some
            row or constant within every cluster is an error naming the column and the fix, before any fit
RS-REP-006  the chained equations with random_slopes call the random-slope kernel for continuous targets
            (model description "random intercept and slopes on month") and the random-slope logistic kernel for
            binary ones; with higher_levels both keep the site's random intercept beside the slopes (three
            levels, no fixed site indicators in the design); with one incomplete variable their
            pooled estimates equal impute_random_slopes' on the same data within Monte Carlo error
RS-REP-007  the conclusion rule judges neither the slope SD nor the correlation (no scale for a clinically
            relevant difference), but still the cluster SD
RS-REP-008  (slow) the full report on a simulated longitudinal registry with random_slopes: every analysis (LOCF too)
            (complete case, missing indicator, the four imputations, the sensitivity scenarios) carries the slope
            SD and correlation rows; so do the joint model's, with sd(site) (it has the site level too);
            the methods section names the random slope and says that the joint model has no missingness
            submodel (the default with random slopes, JOINT-RS-011)
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from hmlib.data import load_registry
from hmlib.exceptions import DataError, ParamsError
from hmlib.params import load_params
from hmlib.simulate.longitudinal import longitudinal_registry
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.imputation import impute
from hmlib.stats.imputation.random_slopes import impute_random_slopes
from hmlib.stats.pooling import analyse_imputations, pool_fits, rubin_arrays

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = json.loads((RESULTS / "random_slope_analysis.json").read_text())["cases"]
CDYSTONIA = REPO / "data" / "real" / "cdystonia.csv"
PBCSEQ = REPO / "data" / "real" / "pbcseq.csv"
PBC_PREDICTORS = ["trt", "age", "sex", "day", "albumin", "platelet"]


def _case(name: str) -> dict:
    return next(c for c in REFERENCE if c["name"] == name)


def _lme4_term(term: str) -> str:
    """lme4's name of an hmlib term (treatment contrasts without brackets)."""
    return "(Intercept)" if term == "Intercept" else term.replace("[", "").replace("]", "")


@pytest.fixture(scope="module")
def cdystonia_fit():
    frame = pd.read_csv(CDYSTONIA)
    return fit_analysis_model(frame, outcome="twstrs", predictors=["treat", "week", "age", "sex"],
                              cluster="patient_id", family="gaussian", higher_levels=["site"],
                              random_slopes=["week"])


@pytest.fixture(scope="module")
def pbc_frames():
    frame = pd.read_csv(PBCSEQ)
    frame = frame.dropna(subset=["ascites", *PBC_PREDICTORS]).reset_index(drop=True)
    return frame.assign(year=frame["day"] / 365.25)


@pytest.fixture(scope="module")
def pbc_fits(pbc_frames):
    common = dict(outcome="ascites", cluster="id", family="binomial")
    in_years = fit_analysis_model(pbc_frames, predictors=[p if p != "day" else "year" for p in PBC_PREDICTORS],
                                  random_slopes=["year"], **common)
    in_days = fit_analysis_model(pbc_frames, predictors=PBC_PREDICTORS, random_slopes=["day"], **common)
    return in_years, in_days


def _check_against_lme4(fit, case: dict, random_names: dict) -> None:
    table = fit.to_frame().set_index("term")
    for term, se in zip(fit.term_names, fit.std_error):
        ref = case["fixed"][_lme4_term(term)]
        assert abs(table.loc[term, "estimate"] - ref["estimate"]) < 1e-3 * ref["std_error"], term
        assert se == pytest.approx(ref["std_error"], rel=1e-2), term
    for ours, theirs in random_names.items():
        value, ref = table.loc[ours, "estimate"], case["random"][theirs]
        if ours.startswith("cor("):
            assert abs(value - ref) < 1e-2, ours
        else:
            assert value == pytest.approx(ref, rel=1e-2), ours
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-3)
    assert fit.n_obs == case["n_obs"]


def test_rs_rep_001_gaussian_with_a_site_level_equals_lmer(cdystonia_fit):
    """RS-REP-001 (cdystonia): see the module docstring."""
    _check_against_lme4(cdystonia_fit, _case("cdystonia"), {
        "sd(site)": "sd(site)", "sd(patient_id)": "sd(site:patient_id)",
        "sd(week|patient_id)": "sd(week|site:patient_id)", "cor(week|patient_id)": "cor(week|site:patient_id)"})
    assert cdystonia_fit.residual_sd == pytest.approx(_case("cdystonia")["residual_sd"], rel=1e-3)


def test_rs_rep_001_binomial_equals_glmer(pbc_fits):
    """RS-REP-001 (pbcseq): see the module docstring."""
    in_years, _ = pbc_fits
    _check_against_lme4(in_years, _case("pbcseq"), {
        "sd(id)": "sd(id)", "sd(year|id)": "sd(year|id)", "cor(year|id)": "cor(year|id)"})


def test_rs_rep_002_the_slope_units_do_not_matter(pbc_fits):
    """RS-REP-002: see the module docstring."""
    in_years, in_days = pbc_fits
    years, days = in_years.to_frame().set_index("term"), in_days.to_frame().set_index("term")
    assert days.loc["day", "estimate"] == pytest.approx(years.loc["year", "estimate"] / 365.25, rel=1e-4)
    assert days.loc["sd(day|id)", "estimate"] == pytest.approx(years.loc["sd(year|id)", "estimate"] / 365.25,
                                                                rel=1e-4)
    assert days.loc["cor(day|id)", "estimate"] == pytest.approx(years.loc["cor(year|id)", "estimate"], abs=1e-4)
    assert days.loc["sd(id)", "estimate"] == pytest.approx(years.loc["sd(id)", "estimate"], rel=1e-4)
    assert days.loc["albumin", "estimate"] == pytest.approx(years.loc["albumin", "estimate"], rel=1e-4)


def test_rs_rep_003_rows_and_nothing_changes_without_slopes(cdystonia_fit):
    """RS-REP-003: see the module docstring."""
    terms = cdystonia_fit.to_frame()["term"].tolist()
    assert terms[len(cdystonia_fit.term_names):] == ["sd(site)", "sd(patient_id)", "sd(week|patient_id)",
                                                     "cor(week|patient_id)"]
    assert cdystonia_fit.slopes == ("week",)
    frame = pd.read_csv(CDYSTONIA)
    kw = dict(outcome="twstrs", predictors=["treat", "week", "age", "sex"], cluster="patient_id", family="gaussian")
    plain, empty = fit_analysis_model(frame, **kw), fit_analysis_model(frame, random_slopes=(), **kw)
    assert type(plain).__name__ == "RandomInterceptFit" and plain.to_frame().equals(empty.to_frame())
    assert plain.to_frame()["term"].tolist()[-1] == "sd(patient_id)"


@pytest.fixture(scope="module")
def longitudinal():
    frame = longitudinal_registry(3, n_sites=12, n_patients=300, n_visits=6).drop(columns=["date", "visit"])
    return frame


def _perturbed_fits(frame, m=5):
    """m random-slope fits of bootstrap-like resamples of the patients (different but similar fits)."""
    rng = np.random.default_rng(5)
    patients = frame["patient"].unique()
    fits = []
    for _ in range(m):
        keep = frame["patient"].isin(rng.choice(patients, size=int(0.8 * patients.size), replace=False))
        fits.append(fit_analysis_model(frame.loc[keep], outcome="y", predictors=["x", "month"], cluster="patient",
                                       family="gaussian", random_slopes=["month"]))
    return fits


def test_rs_rep_004_rubin_on_the_random_part(longitudinal):
    """RS-REP-004: see the module docstring."""
    fits = _perturbed_fits(longitudinal.dropna())
    pooled = pool_fits(fits, method="x_mi", n_patients=100, n_clusters=10)
    table = pooled.to_frame().set_index("term")
    dfcom = fits[0].n_obs - (3 + 3 + 1)  # fixed effects, the 2 x 2 covariance, the residual variance
    sd = rubin_arrays(np.log([f.cluster_level.sd[1] for f in fits]),
                      np.array([f.cluster_level.log_sd_std_error[1] for f in fits]) ** 2, dfcom, 0.95)
    assert table.loc["sd(month|patient)", "estimate"] == pytest.approx(np.exp(sd["estimate"]), rel=1e-12)
    assert table.loc["sd(month|patient)", "ci_upper"] == pytest.approx(np.exp(sd["ci_upper"]), rel=1e-12)
    cor = rubin_arrays(np.arctanh([f.cluster_level.cor[1, 0] for f in fits]),
                       np.array([f.cluster_level.atanh_cor_std_error[1, 0] for f in fits]) ** 2, dfcom, 0.95)
    assert table.loc["cor(month|patient)", "estimate"] == pytest.approx(np.tanh(cor["estimate"]), rel=1e-12)
    assert table.loc["cor(month|patient)", "ci_lower"] == pytest.approx(np.tanh(cor["ci_lower"]), rel=1e-12)
    assert -1 < table.loc["cor(month|patient)", "ci_lower"] < table.loc["cor(month|patient)", "ci_upper"] < 1
    per = pooled.per_imputation
    assert set(per["term"]) >= {"sd(month|patient)", "cor(month|patient)"}
    # m copies of one fit pool to that fit
    same = pool_fits([fits[0]] * 4, method="x_mi", n_patients=100, n_clusters=10).to_frame().set_index("term")
    single = fits[0].to_frame().set_index("term")
    for term in ("x", "sd(patient)", "sd(month|patient)", "cor(month|patient)"):
        assert same.loc[term, "estimate"] == pytest.approx(single.loc[term, "estimate"], rel=1e-12)
    assert same.loc["cor(month|patient)", "std_error"] == pytest.approx(single.loc["cor(month|patient)",
                                                                                   "std_error"], rel=1e-9)
    residual = pooled.residual_sd["estimate"]
    between = table.loc["sd(patient)", "estimate"]
    assert pooled.icc == pytest.approx(between ** 2 / (between ** 2 + residual ** 2), rel=1e-12)


BASE = ("name: t\ndata: d.csv\ncluster: patient\noutcome: y\noutcome_family: gaussian\npredictors: [x, month]\n"
        "seed: 1\n")


@pytest.mark.parametrize("extra, needle", [
    ("random_slopes: [visit]\n", "'random_slopes' names 'visit', which is not in 'predictors'"),
    ("random_slopes: [month]\ncategorical: [month]\n", "which is categorical"),
    ("random_slopes: [month, month]\n", "names ['month'] more than once"),
])
def test_rs_rep_005_params(tmp_path, extra, needle):
    """RS-REP-005 (params): see the module docstring."""
    (tmp_path / "p.yaml").write_text(BASE + extra)
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "p.yaml")
    assert needle in str(err.value)


@pytest.mark.parametrize("change, needle", [
    ("text", "is not numeric"),
    ("missing", "must be recorded in every row"),
    ("constant", "never varies within a patient"),
])
def test_rs_rep_005_data(tmp_path, longitudinal, change, needle):
    """RS-REP-005 (data): see the module docstring."""
    frame = longitudinal.copy()
    if change == "text":
        frame["month"] = "m" + frame["month"].astype(int).astype(str)
    elif change == "missing":
        frame.loc[[3, 40], "month"] = np.nan
    else:
        frame["month"] = frame["patient"] % 7
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "p.yaml").write_text(BASE + "random_slopes: [month]\n")
    with pytest.raises(DataError) as err:
        load_registry(load_params(tmp_path / "p.yaml"))
    assert needle in str(err.value) and "'month'" in str(err.value)
    assert "random_slopes" in str(err.value) or "Fill in" in str(err.value)


def test_rs_rep_006_chained_equations_use_the_slope_kernel(longitudinal):
    """RS-REP-006 (models and notes): see the module docstring."""
    frame = longitudinal.assign(high=(longitudinal["x"] > 0).astype(float).where(longitudinal["x"].notna()))
    res = impute(frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                 predictors=["x", "month", "high"], higher_levels=["site"], random_slopes=["month"], m=2,
                 iterations=2, seed=1)
    assert res.models["x"].startswith("2l.pan: random intercept and slopes on month (unstructured covariance)")
    assert "random intercepts for the cluster and for 'site' (three levels" in res.models["x"]
    assert res.models["high"].startswith("2l.bin: random intercept and slopes on month (unstructured covariance), "
                                         "logistic (Gibbs sampler")
    assert "random intercepts for the cluster and for 'site' (three levels" in res.models["high"]
    assert not any("fixed indicator" in n for n in res.notes)
    no_site = impute(frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                     predictors=["x", "month", "high"], random_slopes=["month"], m=2, iterations=2, seed=1)
    assert no_site.models["high"].startswith("2l.bin: random intercept and slopes on month (unstructured "
                                             "covariance), logistic (Gibbs sampler")
    plain = impute(frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                   predictors=["x", "month", "high"], m=2, iterations=2, seed=1)
    assert "slopes" not in plain.models["x"] and "slopes" not in plain.models["high"]


def test_rs_rep_006_chained_equals_the_standalone_imputation(longitudinal):
    """RS-REP-006 (parity): see the module docstring."""
    frame = longitudinal.dropna(subset=["y"]).drop(columns=["site"]).reset_index(drop=True)
    m = 20
    chained = impute(frame, method="multilevel", cluster="patient", outcome="y", outcome_family="gaussian",
                     predictors=["x", "month"], random_slopes=["month"], m=m, iterations=5, seed=11)
    standalone = impute_random_slopes(frame, target="x", predictors=["y"], cluster="patient", slopes=["month"],
                                      m=m, iterations=5, seed=12)

    class _Completed:
        def __init__(self, completed):
            self.completed = completed
            self.imputed_mask = pd.DataFrame({"y": np.zeros(len(frame), dtype=bool)})
            self.label, self.method = "standalone", "standalone"

    kw = dict(outcome="y", predictors=["x", "month"], cluster="patient", family="gaussian",
              random_slopes=["month"])
    a = analyse_imputations(chained, **kw)
    b = analyse_imputations(_Completed(standalone.completed(frame)), **kw)
    for term in ("x", "month", "sd(month|patient)"):
        qa = a.per_imputation.loc[a.per_imputation["term"] == term, "estimate"]
        qb = b.per_imputation.loc[b.per_imputation["term"] == term, "estimate"]
        mc_se = np.sqrt(qa.var(ddof=1) / m + qb.var(ddof=1) / m)  # Monte Carlo SE of the difference of means
        assert abs(qa.mean() - qb.mean()) < 4 * mc_se, (term, qa.mean(), qb.mean(), mc_se)
        assert abs(a.term(term)["std_error"] / b.term(term)["std_error"] - 1) < 0.25, term


def test_rs_rep_007_slope_terms_are_not_judged(tmp_path, longitudinal):
    """RS-REP-007: see the module docstring."""
    from hmlib.steps.sensitivity_rule import resolve_conclusion_rule

    longitudinal.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "p.yaml").write_text(BASE + "random_slopes: [month]\nfocus: x\n")
    registry = load_registry(load_params(tmp_path / "p.yaml"))
    terms = ["Intercept", "x", "month", "sd(patient)", "sd(month|patient)", "cor(month|patient)"]
    rule = resolve_conclusion_rule(registry, terms, "x")
    assert rule.change_rule("x") is not None and rule.change_rule("sd(patient)") is not None
    assert rule.change_rule("sd(month|patient)") is None and rule.change_rule("cor(month|patient)") is None


@pytest.mark.slow
def test_rs_rep_008_full_report(tmp_path):
    """RS-REP-008: see the module docstring."""
    from hmlib.report.runner import run_report
    from hmlib.results import read_estimates

    frame = longitudinal_registry(5, n_sites=16, n_patients=240, n_visits=6).drop(columns=["date"])
    frame.to_csv(tmp_path / "long.csv", index=False)
    params = {"name": "long_rs", "data": str(tmp_path / "long.csv"), "cluster": "patient",
              "higher_levels": ["site"], "time": "month", "outcome": "y", "outcome_family": "gaussian",
              "predictors": ["x", "month"], "focus": "x", "random_slopes": ["month"], "seed": 1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_report(tmp_path / "p.yaml", fast=True, reports_root=tmp_path / "reports")
    assert result.status == "complete", result.message
    estimates = read_estimates(result.output_dir / "estimates.csv")
    methods = [m for m in estimates["method"].unique() if not m.startswith("joint_bayes")
               and not m.startswith("sensitivity:prior")]
    assert {"complete_case", "missing_indicator", "flat_mi", "multilevel_mi", "locf"} <= set(methods)
    for method in methods:
        terms = set(estimates.loc[estimates["method"] == method, "term"])
        assert {"sd(month|patient)", "cor(month|patient)", "sd(site)", "sd(patient)"} <= terms, method
    joint = estimates.loc[estimates["method"].str.startswith("joint_bayes"), "term"]
    assert {"sd(month|patient)", "cor(month|patient)", "sd(patient)", "sd(site)"} <= set(joint)
    text = unescape(re.sub(r"<[^>]+>", "", result.report.read_text()))   # glossary links inside sentences
    assert "no random intercept per site" not in text        # the joint model has the site level too (#16)
    assert "random intercepts and random slopes on month (LKJ prior" in text
    assert "correlation), nested in random intercepts per site, and no missingness submodel (missing at random " \
           "given the recorded data; off by default for visits in patients)" in text   # methods
    assert "a random intercept and a random slope on month per patient" in text
    assert "(1 + month | patient)" in text
