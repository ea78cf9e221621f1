"""Random-slope multilevel imputation (2l.pan type 2): :mod:`hmlib.stats.imputation.random_slopes`.

Truth by simulation: ``bench/random_slope_imputation_truth.py``; speed: ``bench/bench_random_slope_imputation.py``.
R reference: ``tests/results/random_slope_imputation.R`` (mice 2l.pan, 5 seeds x m = 20 per setting). The Monte
Carlo error of a pooled estimate over ``m`` imputations is ``sqrt(B / m)`` (B the between-imputation variance;
White, Royston & Wood 2011); the R side's is over its 100 imputations, and the SD of its 5 seeds' pooled estimates
(stored beside it) agrees with ``sqrt(B / 20)``.

Test IDs
--------
RS-IMP-001  the joint draw of ``(beta, b) | Psi, sigma^2``: its means solve the dense precision system of the full
            model, and 20,000 draws have the dense covariance (4 clusters, intercept + slope, 3 coefficients)
RS-IMP-002  the inverse-Wishart draw: mean ``scale / (df - q - 1)`` and the mean log-determinant of scipy's invwishart
RS-IMP-003  the scale trap (#16: 2l.pan with time in days gave 0.10 for a true 0.35): time in days (0..3650) gives
            the same imputations and pooled estimate as the same time in years, and that estimate is near the truth
RS-IMP-004  the whole sampler, a long run: the posterior means of beta, sd(Intercept), sd(t), cor and sigma given the
            recorded rows are within a fraction of a standard error of the ML fit of those rows (fit_mixed, matched
            to lme4), and the posterior SDs of beta are near the ML standard errors
RS-IMP-005  unsorted input: with rows shuffled, each imputed value sits in its own cluster (clusters 50 apart) and
            the chains are the sorted frame's (Psi, sigma and the imputed means equal to 1e-6 relative: rounding, amplified
            by the 50-unit cluster spread)
RS-IMP-006  the input frame is unchanged; recorded values are never changed; completed() returns copies
RS-IMP-007  clear errors: a slope that does not vary within clusters, a slope or predictor with missing values, a
            non-numeric column, an unknown column (DataError); too few clusters (FitError)
RS-IMP-008  binary target: the random-slope logistic kernel (2l.bin type 2), 0/1 values, named in the model, its
            Psi (logit scale) traced at every call and no residual SD; pmm: imputed values are recorded values
RS-IMP-009  R parity, simulated registry: pooled coefficients of lmer(y ~ t + x + treat + (1 + t | patient)) within
            3.5 combined Monte Carlo SEs of mice 2l.pan's; the mean slope SD within 3.5 combined MC SEs + 0.005
RS-IMP-010  R parity, cdystonia (twstrs missing at missed visits): the same for lmer(twstrs ~ week + treat + age +
            sex + (1 + week | patient_id))
RS-IMP-014  R parity, pbcseq (log cholesterol missing at 42% of visits, never for 8 patients; time in days, which
            hmlib takes as it is and R is given standardised): lmer(log bili ~ years + log chol + albumin + age + trt
            + male + (1 + years | id))
RS-IMP-011  chain diagnostics: split R-hat of the imputed mean, the SDs, the correlation and sigma below 1.1 on the
            simulated registry (6 chains of 100 calls: the lag-1 autocorrelation of sd(t) between calls is about 0.45)
RS-IMP-012  the prior of Psi is weak: with 30 clusters and a small slope SD, the posterior median of sd(t) is within
            one standard error of the ML fit of the recorded rows (the inverse-Wishart(q + 1, 1e-3 I) tried first gave
            0.4 of the ML estimate, an identity scale 2.8 times it)
RS-IMP-013  a patient who never records the target gets effects drawn from N(0, Psi), not 0
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hmlib.exceptions import DataError, FitError
from hmlib.stats.imputation.kernels import prepare_design, standardise_target
from hmlib.stats.imputation.random_slopes import (draw_inverse_wishart, impute_random_slopes,
                                                  random_slopes_gibbs_draw)
from hmlib.stats.imputation.slopes_kernel import _cluster_blocks, _coefficients_draw
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed
from hmlib.stats.pooling import rubin_arrays

RESULTS = Path(__file__).resolve().parent / "results"
REGISTRY = RESULTS / "random_slope_registry.csv"
CDYSTONIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "cdystonia.csv"
if not CDYSTONIA.exists():
    CDYSTONIA = Path("/work/shared/data/real/cdystonia.csv")
SIM = dict(target="x", predictors=["y", "treat"], cluster="patient", slopes=["t"])


def _pooled(frames, outcome, fixed, cluster, slope):
    """Rubin-pooled fixed effects (intercept first) and the slope SDs of
    lmer(outcome ~ fixed + (1 + slope | cluster))."""
    est, var, sds = [], [], []
    for done in frames:
        X = np.column_stack([np.ones(len(done)), done[fixed].to_numpy(float)])
        level = RandomLevel(cluster, done[cluster].to_numpy(), slopes={slope: done[slope].to_numpy(float)})
        fit = fit_mixed(done[outcome].to_numpy(float), X, RandomEffects((level,)))
        est.append(fit.coef)
        var.append(fit.std_error ** 2)
        sds.append(fit.levels[0].sd[1])
    pooled = rubin_arrays(np.array(est), np.array(var))
    names = ["(Intercept)", *fixed]
    return {nm: (pooled["estimate"][k], pooled["between"][k]) for k, nm in enumerate(names)}, np.array(sds)


def _small_problem(seed=3, J=30, visits=6):
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(J), visits)
    t = np.tile(np.arange(visits, dtype=float), J) + rng.uniform(-0.2, 0.2, J * visits)
    y = (rng.normal(0, 1, J)[patient] + (0.3 + 0.2 * rng.normal(size=J))[patient] * t
         + rng.normal(0, 0.5, J * visits))
    return pd.DataFrame({"patient": patient, "t": t, "z": rng.normal(size=J * visits), "y": y})


def test_rs_imp_001_joint_draw_is_the_dense_gaussian():
    """RS-IMP-001: means and covariance of (beta, b) | Psi, sigma^2 equal the dense computation."""
    rng = np.random.default_rng(11)
    J, n = 4, 22
    co = np.sort(rng.integers(0, J, n))
    D = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    z = rng.normal(size=n)
    r = [0, 1]
    psi = np.array([[0.5, 0.1], [0.1, 0.2]])
    sig2, ridge = 0.7, np.array([0.0, 0.0, 0.3])
    XX = np.stack([D[co == j].T @ D[co == j] for j in range(J)])
    Xz = np.stack([D[co == j].T @ z[co == j] for j in range(J)])
    args = (XX.sum(0), Xz.sum(0), XX[:, r][:, :, r], XX[:, r, :], Xz[:, r], sig2,
            _cluster_blocks(XX[:, r][:, :, r], sig2, psi), ridge)
    # dense precision over (beta, b_1, ..., b_J)
    Z = np.zeros((n, 2 * J))
    for j in range(J):
        Z[co == j, 2 * j:2 * j + 2] = D[co == j][:, r]
    F = np.column_stack([D, Z])
    prior = np.zeros((3 + 2 * J, 3 + 2 * J))
    prior[:3, :3] = np.diag(ridge)
    for j in range(J):
        prior[3 + 2 * j:5 + 2 * j, 3 + 2 * j:5 + 2 * j] = np.linalg.inv(psi)
    P = F.T @ F / sig2 + prior
    cov = np.linalg.inv(P)
    mean = cov @ F.T @ z / sig2
    beta_hat, b_hat, _, _ = _coefficients_draw(*args, rng)
    np.testing.assert_allclose(np.r_[beta_hat, b_hat.ravel()], mean, atol=1e-10)
    draws = np.array([np.r_[d[2], d[3].ravel()] for d in (_coefficients_draw(*args, rng) for _ in range(20000))])
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * np.sqrt(np.diag(cov) / 20000).max())
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.abs(cov).max())


def test_rs_imp_002_inverse_wishart():
    """RS-IMP-002: the Bartlett draw has the inverse-Wishart mean and log-determinant."""
    rng = np.random.default_rng(5)
    scale = np.array([[2.0, 0.4, 0.1], [0.4, 1.0, -0.2], [0.1, -0.2, 0.5]])
    df = 12
    draws = np.array([draw_inverse_wishart(df, scale, rng) for _ in range(20000)])
    np.testing.assert_allclose(draws.mean(0), scale / (df - 3 - 1), atol=0.01)
    reference = stats.invwishart.rvs(df, scale, size=20000, random_state=np.random.default_rng(6))
    assert np.mean(np.linalg.slogdet(draws)[1]) == pytest.approx(np.mean(np.linalg.slogdet(reference)[1]), abs=0.02)


def test_rs_imp_003_time_in_days_equals_time_in_years():
    """RS-IMP-003: the scale trap does not happen: days and years give the same imputations and pooled estimate."""
    years = pd.read_csv(REGISTRY)
    days = years.assign(t=years["t"] * 365.25)
    assert days["t"].max() > 1000
    res_y = impute_random_slopes(years, **SIM, m=10, iterations=10, seed=4)
    res_d = impute_random_slopes(days, **SIM, m=10, iterations=10, seed=4)
    np.testing.assert_allclose(res_d.values, res_y.values, rtol=0, atol=1e-6)
    pooled_y, sds_y = _pooled(res_y.completed(years), "y", ["t", "x", "treat"], "patient", "t")
    pooled_d, sds_d = _pooled(res_d.completed(days), "y", ["t", "x", "treat"], "patient", "t")
    assert pooled_d["x"][0] == pytest.approx(pooled_y["x"][0], abs=1e-6)
    assert pooled_y["x"][0] == pytest.approx(0.35, abs=0.07)              # truth; R's 2l.pan in days: trap_days
    np.testing.assert_allclose(sds_d * 365.25, sds_y, rtol=1e-5)       # the slope SD, per day vs per year
    # the random-effect covariance is reported per the user's unit of time
    sd_t = np.sqrt(res_y.random_cov[:, -1, 1, 1].mean())
    assert np.sqrt(res_d.random_cov[:, -1, 1, 1].mean()) * 365.25 == pytest.approx(sd_t, rel=1e-6)
    assert 0.15 < sd_t < 0.6                                             # x's true slope SD: 0.3 per year


def test_rs_imp_004_long_run_matches_the_ml_fit():
    """RS-IMP-004: posterior means of the sampler near the ML fit of the recorded rows (large J: they agree)."""
    frame = _small_problem(seed=8, J=200, visits=6)
    frame.loc[np.random.default_rng(2).random(len(frame)) < 0.3, "y"] = np.nan
    obs = frame["y"].notna().to_numpy()
    codes = frame["patient"].to_numpy()
    Do, Dp, kept = prepare_design(frame[["t", "z"]].to_numpy(), ["t", "z"], obs, ~obs)
    centre, scale = standardise_target(frame["y"].to_numpy()[obs])
    z = (frame["y"].to_numpy()[obs] - centre) / scale
    fit = fit_mixed(z, Do, RandomEffects((RandomLevel("patient", codes[obs], slopes={"t": Do[:, 1]}),)))
    rng = np.random.default_rng(3)
    state, cache, trace = {}, {}, []
    for _ in range(700):
        random_slopes_gibbs_draw(Do, frame["y"].to_numpy()[obs], codes[obs], Dp, codes[~obs], 200, rng,
                                 random_columns=[0, 1], state=state, cache=cache)
        psi = state["psi"]
        trace.append(np.r_[state["beta"], np.sqrt(np.diag(psi)), psi[0, 1] / np.sqrt(psi[0, 0] * psi[1, 1]),
                           np.sqrt(state["sig2"])])
    trace = np.array(trace)[100:]
    post_mean, post_sd = trace.mean(0), trace.std(0)
    np.testing.assert_allclose(post_mean[:3], fit.coef, atol=0.25 * fit.std_error.max())
    np.testing.assert_allclose(post_sd[:3], fit.std_error, rtol=0.2)
    level = fit.levels[0]
    sd_se = level.sd * level.log_sd_std_error
    np.testing.assert_allclose(post_mean[3:5], level.sd, atol=0.4 * sd_se.max())
    cor = level.covariance[0, 1] / np.prod(level.sd)
    assert post_mean[5] == pytest.approx(cor, abs=0.1)
    assert post_mean[6] == pytest.approx(fit.residual_sd, rel=0.02)


def test_rs_imp_005_unsorted_rows():
    """RS-IMP-005: shuffled rows are imputed within their own clusters, as the sorted frame is."""
    frame = _small_problem(seed=4, J=40)
    frame["y"] += 50.0 * frame["patient"]
    frame.loc[np.random.default_rng(9).random(len(frame)) < 0.3, "y"] = np.nan
    shuffled = frame.sample(frac=1.0, random_state=3)
    res = impute_random_slopes(shuffled, target="y", predictors=["z"], cluster="patient", slopes=["t"], m=5,
                               iterations=5, seed=1)
    done = res.columns()
    assert done.index.equals(shuffled.index)
    assert res.missing.sum() == shuffled["y"].isna().sum() and (res.missing == shuffled["y"].isna().to_numpy()).all()
    for column in done:
        imputed = done.loc[res.missing, column]
        assert (np.abs(imputed - 50.0 * shuffled.loc[res.missing, "patient"]) < 15).all()
    ordered = impute_random_slopes(frame, target="y", predictors=["z"], cluster="patient", slopes=["t"], m=5,
                                   iterations=5, seed=1)
    # the same chains: the sampler works on per-cluster sums, so its traces are the sorted frame's up to rounding;
    # only which missing row gets which residual draw follows the row order (their sum does not)
    np.testing.assert_allclose(res.random_cov, ordered.random_cov, rtol=1e-6)
    np.testing.assert_allclose(res.residual_sd, ordered.residual_sd, rtol=1e-6)
    np.testing.assert_allclose(res.chain_means, ordered.chain_means, rtol=1e-6)


def test_rs_imp_006_input_unchanged():
    """RS-IMP-006: the frame is not modified; recorded values are kept; completed() gives copies."""
    frame = pd.read_csv(REGISTRY)
    before = frame.copy(deep=True)
    res = impute_random_slopes(frame, **SIM, m=3, iterations=3, seed=2)
    pd.testing.assert_frame_equal(frame, before)
    recorded = frame["x"].notna().to_numpy()
    for done in res.completed(frame):
        np.testing.assert_array_equal(done.loc[recorded, "x"], frame.loc[recorded, "x"])
        assert done["x"].notna().all() and done is not frame
    pd.testing.assert_frame_equal(frame, before)


def test_rs_imp_007_clear_errors():
    """RS-IMP-007: bad slope columns and too few clusters are refused with what to do."""
    frame = _small_problem()
    frame.loc[::5, "y"] = np.nan
    kw = dict(target="y", cluster="patient", m=2, iterations=2)
    frame["baseline"] = frame.groupby("patient")["t"].transform("first")
    with pytest.raises(DataError, match="does not vary within any 'patient'"):
        impute_random_slopes(frame, predictors=[], slopes=["baseline"], **kw)
    gappy = frame.assign(t=frame["t"].where(np.arange(len(frame)) % 7 != 0))
    with pytest.raises(DataError, match="slope column 't' has .* missing values"):
        impute_random_slopes(gappy, predictors=[], slopes=["t"], **kw)
    with pytest.raises(DataError, match="predictor column 'z' has .* missing values"):
        impute_random_slopes(frame.assign(z=frame["y"]), predictors=["z"], slopes=["t"], **kw)
    with pytest.raises(DataError, match="non-numeric"):
        impute_random_slopes(frame.assign(z="a"), predictors=["z"], slopes=["t"], **kw)
    with pytest.raises(DataError, match="'nope' is not in the data"):
        impute_random_slopes(frame, predictors=["nope"], slopes=["t"], **kw)
    with pytest.raises(DataError, match="at least one slope"):
        impute_random_slopes(frame, predictors=[], slopes=[], **kw)
    few = frame[frame["patient"] < 8]
    with pytest.raises(FitError, match="only 8 clusters record 'y'"):
        impute_random_slopes(few, predictors=[], slopes=["t"], **kw)


def test_rs_imp_008_binary_fallback_and_pmm():
    """RS-IMP-008: see the module docstring."""
    frame = _small_problem()
    frame["flag"] = (frame["y"] > frame["y"].median()).astype(float)
    frame.loc[::4, "flag"] = np.nan
    res = impute_random_slopes(frame, target="flag", predictors=["z"], cluster="patient", slopes=["t"], m=3,
                               iterations=2, seed=1)
    assert set(np.unique(res.values)) == {0.0, 1.0}
    assert "logistic mixed model with a random intercept and random slope(s) on 't'" in res.model
    assert "2l.bin type 2" in res.model and "Gibbs sampler" in res.model
    # the sampler's Psi on the logit scale: a covariance matrix at every call of every chain
    assert np.all(np.isfinite(res.random_cov)) and np.all(np.linalg.eigvalsh(res.random_cov) > 0)
    assert np.isnan(res.residual_sd).all()
    frame.loc[::4, "y"] = np.nan
    res = impute_random_slopes(frame, target="y", predictors=["z"], cluster="patient", slopes=["t"], m=3,
                               iterations=2, seed=1, continuous="pmm")
    assert np.isin(res.values[:, res.missing], frame["y"].dropna().to_numpy()).all()


@pytest.fixture(scope="module")
def reference():
    return json.loads((RESULTS / "random_slope_imputation.json").read_text())


def _check_parity(pooled, sds, ref, m, terms):
    for term in terms:
        r = ref["pooled"][term]
        mc = np.sqrt(r["mc_se"] ** 2 + pooled[term][1] / m)
        assert abs(pooled[term][0] - r["estimate"]) < 3.5 * mc, (term, pooled[term][0], r["estimate"], mc)
    mc = np.sqrt(ref["slope_sd"]["mc_se"] ** 2 + sds.var(ddof=1) / sds.size)
    assert abs(sds.mean() - ref["slope_sd"]["mean"]) < 3.5 * mc + 0.005, (sds.mean(), ref["slope_sd"]["mean"])


def test_rs_imp_009_r_parity_simulated(reference):
    """RS-IMP-009: pooled coefficients and slope SD equal mice 2l.pan's within Monte Carlo error."""
    frame = pd.read_csv(REGISTRY)
    res = impute_random_slopes(frame, **SIM, m=40, iterations=10, seed=7)
    pooled, sds = _pooled(res.completed(frame), "y", ["t", "x", "treat"], "patient", "t")
    _check_parity(pooled, sds, reference["simulated"], 40, ["(Intercept)", "t", "x", "treat"])


def _cdystonia():
    raw = pd.read_csv(CDYSTONIA)
    return pd.DataFrame({"patient_id": raw["patient_id"], "week": raw["week"].astype(float),
                         "t5000": (raw["treat"] == "5000U").astype(float),
                         "tplacebo": (raw["treat"] == "Placebo").astype(float), "age": raw["age"].astype(float),
                         "male": (raw["sex"] == "M").astype(float), "twstrs": raw["twstrs"]})


def test_rs_imp_010_r_parity_cdystonia(reference):
    """RS-IMP-010: the real repeated-measures data: pooled coefficients within Monte Carlo error of 2l.pan's."""
    frame = _cdystonia()
    assert frame["twstrs"].isna().sum() == 23
    res = impute_random_slopes(frame, target="twstrs", predictors=["t5000", "tplacebo", "age", "male"],
                               cluster="patient_id", slopes=["week"], m=20, iterations=10, seed=7)
    fixed = ["week", "t5000", "tplacebo", "age", "male"]
    pooled, sds = _pooled(res.completed(frame), "twstrs", fixed, "patient_id", "week")
    _check_parity(pooled, sds, reference["cdystonia"], 20, ["(Intercept)", *fixed])


def _pbcseq():
    raw = pd.read_csv(CDYSTONIA.parent / "pbcseq.csv")
    return pd.DataFrame({"id": raw["id"], "day": raw["day"].astype(float), "lbili": np.log(raw["bili"]),
                         "albumin": raw["albumin"], "age": raw["age"], "trt": raw["trt"].astype(float),
                         "male": (raw["sex"] == "m").astype(float), "lchol": np.log(raw["chol"])})


def test_rs_imp_014_r_parity_pbcseq(reference):
    """RS-IMP-014: 42% missing, time in days: pooled coefficients within Monte Carlo error of 2l.pan's."""
    frame = _pbcseq()
    assert frame["lchol"].isna().mean() == pytest.approx(0.422, abs=0.001)
    res = impute_random_slopes(frame, target="lchol", predictors=["lbili", "albumin", "age", "trt", "male"],
                               cluster="id", slopes=["day"], m=40, iterations=10, seed=7)
    fixed = ["years", "lchol", "albumin", "age", "trt", "male"]
    frames = [done.assign(years=done["day"] / 365.25) for done in res.completed(frame)]
    pooled, sds = _pooled(frames, "lbili", fixed, "id", "years")
    _check_parity(pooled, sds, reference["pbcseq"], 40, ["(Intercept)", *fixed])


def test_rs_imp_011_chain_diagnostics():
    """RS-IMP-011: the chains mix on the simulated registry (split R-hat < 1.1)."""
    res = impute_random_slopes(pd.read_csv(REGISTRY), **SIM, m=6, iterations=100, seed=3)
    table = res.diagnostics().set_index("quantity")
    assert list(table.index) == ["mean(imputed)", "sd(Intercept)", "sd(t)", "cor(t)", "sigma"]
    assert (table["rhat"] < 1.1).all(), table


def test_rs_imp_012_prior_is_weak():
    """RS-IMP-012: with 30 clusters and a small slope SD, the posterior median of sd(t) is within one standard error
    of the ML fit of the recorded rows (an identity prior scale, 2l.pan's, doubles it)."""
    rng = np.random.default_rng(21)
    J, visits = 30, 8
    patient = np.repeat(np.arange(J), visits)
    t = np.tile(np.arange(visits, dtype=float), J)
    y = rng.normal(0, 1, J)[patient] + (0.2 + 0.06 * rng.normal(size=J))[patient] * t + rng.normal(0, 0.5, J * visits)
    frame = pd.DataFrame({"patient": patient, "t": t, "y": y})
    frame.loc[rng.random(len(frame)) < 0.2, "y"] = np.nan
    rec = frame.dropna()
    fit = fit_mixed(rec["y"].to_numpy(), np.column_stack([np.ones(len(rec)), rec["t"]]),
                    RandomEffects((RandomLevel("patient", rec["patient"].to_numpy(),
                                               slopes={"t": rec["t"].to_numpy()}),)))
    sd_ml = fit.levels[0].sd[1]
    se = sd_ml * fit.levels[0].log_sd_std_error[1]
    res = impute_random_slopes(frame, target="y", predictors=[], cluster="patient", slopes=["t"], m=4, iterations=150,
                               seed=2, cluster_means=False)
    draws = np.sqrt(res.random_cov[:, 20:, 1, 1])
    assert abs(np.median(draws) - sd_ml) < se, (np.median(draws), sd_ml, se)


def test_rs_imp_013_cluster_never_recording_the_target():
    """RS-IMP-013: a patient with no recorded value gets effects drawn from N(0, Psi): its imputed level varies
    between imputations about as much as patients' intercepts do, around the common trajectory."""
    frame = _small_problem(seed=6, J=60)
    frame.loc[frame["patient"] == 0, "y"] = np.nan
    frame.loc[np.random.default_rng(4).random(len(frame)) < 0.2, "y"] = np.nan
    res = impute_random_slopes(frame, target="y", predictors=[], cluster="patient", slopes=["t"], m=40,
                               iterations=3, seed=5, cluster_means=False)
    levels = res.values[:, (frame["patient"] == 0).to_numpy()].mean(axis=1)
    sd_levels = np.sqrt(res.random_cov[:, -1, 0, 0].mean() + res.random_cov[:, -1, 1, 1].mean() * 2.5 ** 2)
    assert np.isfinite(res.values).all()
    assert 0.5 * sd_levels < levels.std(ddof=1) < 1.6 * sd_levels
    assert abs(levels.mean() - frame["y"].mean()) < 3 * sd_levels / np.sqrt(40) + 0.3
