"""Rubin's rules: hand computations, mice's pool() numbers, pooling of fits.

The mice reference numbers are those of
``/work/shared/reference/r_methods_sim_registry.json`` (mice 3.15.0,
lme4 1.1-31, R 4.2.2), produced in R by::

    imp <- mice(sim, method = ..., m = 20, maxit = 5, seed = 1)
    fit <- with(imp, glmer(outcome ~ lactate + age + severity + (1 | site),
                           family = binomial))
    summary(pool(fit), conf.int = TRUE)   # estimate, std.error, df, 2.5 %, 97.5 %
    pool(fit)$pooled$lambda

The per-imputation estimates are not stored, but Rubin's quantities only
depend on (Qbar, Ubar, B, m, dfcom): from mice's reported standard error
(``sqrt(T)``) and ``lambda`` we rebuild m estimates with exactly that
between-imputation variance and check that our df and interval equal
mice's to rounding error.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hmlib.stats.pooling import analyse_imputations, pool_fits, pool_rubin, rubin_arrays
from hmlib.results import ESTIMATE_COLUMNS

REFERENCE = Path("/work/shared/reference/r_methods_sim_registry.json")


def test_RUBIN_001_hand_computation():
    """RUBIN-001: Rubin (1987) eqs. 3.1.2-3.1.7 and Barnard-Rubin df, by hand on 5 made-up values."""
    Q = np.array([1.10, 0.90, 1.30, 1.00, 1.20])
    U = np.array([0.040, 0.050, 0.045, 0.055, 0.060])
    m, dfcom = 5, 30.0
    qbar = 1.10
    ubar = 0.050
    b = (0.0 ** 2 + 0.2 ** 2 + 0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2) / 4      # 0.025
    t = ubar + (1 + 1 / m) * b                                         # 0.08
    lam = (1 + 1 / m) * b / t                                          # 0.375
    riv = (1 + 1 / m) * b / ubar                                       # 0.6
    df_old = (m - 1) / lam ** 2
    df_obs = (dfcom + 1) / (dfcom + 3) * dfcom * (1 - lam)
    df = df_old * df_obs / (df_old + df_obs)
    fmi = (riv + 2 / (df + 3)) / (riv + 1)
    p = pool_rubin(Q, U, n_obs=32, n_params=2)
    assert p.estimate == pytest.approx(qbar)
    assert p.within == pytest.approx(ubar)
    assert p.between == pytest.approx(b)
    assert p.total == pytest.approx(0.08)
    assert p.lambda_ == pytest.approx(0.375)
    assert p.riv == pytest.approx(0.6)
    assert p.df == pytest.approx(df)
    assert p.df_complete == pytest.approx(dfcom)
    assert p.fmi == pytest.approx(fmi)
    half = stats.t.ppf(0.975, df) * np.sqrt(0.08)
    assert (p.ci_lower, p.ci_upper) == pytest.approx((qbar - half, qbar + half))
    assert p.std_error == pytest.approx(np.sqrt(0.08))


def test_RUBIN_002_large_sample_df_is_rubin_1987():
    """RUBIN-002: with no complete-data df (n_obs=None) df = (m - 1) / lambda^2 (Rubin 1987, 3.1.6)."""
    Q = np.array([0.2, 0.5, 0.3, 0.4])
    U = np.full(4, 0.01)
    p = pool_rubin(Q, U)
    assert p.df == pytest.approx(3 / p.lambda_ ** 2)
    assert np.isinf(p.df_complete)


@pytest.mark.parametrize("name", ["mice_flat_pmm", "mice_2l_pan_ri", "mice_2l_norm", "mice_2l_pan",
                                  "jomo_1rancon"])
def test_RUBIN_BR_001_reproduces_mice_pool(name):
    """RUBIN-BR-001: df and 95% interval equal mice::pool() on glmer fits (dfcom = n - 5 = lme4 npar)."""
    ref = json.loads(REFERENCE.read_text())
    lac = ref["methods"][name]["lactate"]
    m = ref["settings"]["m"]
    total = lac["se"] ** 2
    between = lac["fmi_lambda"] * total / (1 + 1 / m)
    within = total - (1 + 1 / m) * between
    z = np.linspace(-1.0, 1.0, m)
    z = (z - z.mean()) / z.std(ddof=1)
    Q = lac["estimate"] + np.sqrt(between) * z
    p = pool_rubin(Q, np.full(m, within), n_obs=ref["n_patients"], n_params=4 + 1)
    assert p.df == pytest.approx(lac["df"], rel=1e-9)
    assert p.ci_lower == pytest.approx(lac["ci_lower"], abs=1e-9)
    assert p.ci_upper == pytest.approx(lac["ci_upper"], abs=1e-9)
    assert p.lambda_ == pytest.approx(lac["fmi_lambda"], rel=1e-9)


def test_RUBIN_BR_002_zero_between_variance_uses_mice_floor():
    """RUBIN-BR-002: B = 0 gives lambda 0 but a finite df (lambda floored at 1e-4 as mice)."""
    p = pool_rubin([0.3, 0.3, 0.3], [0.01, 0.01, 0.01], n_obs=100, n_params=2)
    lam = 1e-4
    df_old = 2 / lam ** 2
    df_obs = 99 / 101 * 98 * (1 - lam)
    assert p.lambda_ == 0.0 and p.riv == 0.0
    assert p.df == pytest.approx(df_old * df_obs / (df_old + df_obs))
    assert p.std_error == pytest.approx(0.1)


def test_RUBIN_003_bad_input():
    """RUBIN-003: m < 2, mismatched shapes, negative variances and non-finite values are refused."""
    with pytest.raises(ValueError, match="at least 2"):
        pool_rubin([1.0], [0.1])
    with pytest.raises(ValueError, match="same shape"):
        rubin_arrays([1.0, 2.0], [0.1])
    with pytest.raises(ValueError, match="non-negative"):
        pool_rubin([1.0, 2.0], [0.1, -0.1])
    with pytest.raises(ValueError, match="finite"):
        pool_rubin([1.0, np.nan], [0.1, 0.1])
    with pytest.raises(ValueError, match="positive"):
        pool_rubin([1.0, 2.0], [0.1, 0.1], n_obs=3, n_params=3)


def test_RUBIN_004_vectorised_equals_scalar():
    """RUBIN-004: the array core gives per-column the same numbers as pool_rubin."""
    rng = np.random.default_rng(2)
    Q = rng.normal(size=(7, 3))
    U = rng.uniform(0.1, 0.3, size=(7, 3))
    out = rubin_arrays(Q, U, 50.0)
    for k in range(3):
        p = pool_rubin(Q[:, k], U[:, k], n_obs=51, n_params=1)
        assert out["df"][k] == pytest.approx(p.df)
        assert out["ci_upper"][k] == pytest.approx(p.ci_upper)


def _fake_fit(coef, se, sd, log_se, n_obs=500, family="binomial", residual_sd=None):
    return SimpleNamespace(term_names=("Intercept", "x"), coef=np.asarray(coef, float),
                           std_error=np.asarray(se, float), cluster_sd=sd, log_cluster_sd_std_error=log_se,
                           n_obs=n_obs, n_clusters=20, cluster_name="site", family=family,
                           residual_sd=residual_sd)


def test_POOL_FITS_001_terms_and_log_sd():
    """POOL-FITS-001: fixed effects pooled directly; sd(site) pooled on the log scale and back-transformed."""
    fits = [_fake_fit([1.0, 0.5], [0.2, 0.1], 0.6, 0.15), _fake_fit([1.2, 0.4], [0.2, 0.1], 0.7, 0.14),
            _fake_fit([1.1, 0.6], [0.2, 0.1], 0.5, 0.16)]
    pooled = pool_fits(fits, method="multilevel_mi", n_patients=500, n_clusters=20)
    frame = pooled.to_frame()
    assert list(frame.columns) == list(ESTIMATE_COLUMNS)
    assert frame["term"].tolist() == ["Intercept", "x", "sd(site)"]
    x = pool_rubin([0.5, 0.4, 0.6], [0.01, 0.01, 0.01], n_obs=500, n_params=3)
    assert frame.loc[1, "estimate"] == pytest.approx(x.estimate)
    assert frame.loc[1, "ci_lower"] == pytest.approx(x.ci_lower)
    logs = np.log([0.6, 0.7, 0.5])
    sd = pool_rubin(logs, np.array([0.15, 0.14, 0.16]) ** 2, n_obs=500, n_params=3)
    assert frame.loc[2, "estimate"] == pytest.approx(np.exp(sd.estimate))
    assert frame.loc[2, "ci_lower"] == pytest.approx(np.exp(sd.ci_lower))
    assert frame.loc[2, "ci_upper"] == pytest.approx(np.exp(sd.ci_upper))
    assert frame.loc[2, "std_error"] == pytest.approx(np.exp(sd.estimate) * sd.std_error)
    diag = pooled.diagnostics
    assert list(diag.columns) == ["term", "riv", "lambda", "fmi", "df"]
    assert diag.loc[2, "fmi"] == pytest.approx(sd.fmi)
    assert pooled.per_imputation.shape == (9, 4)
    assert (frame["n_patients"] == 500).all() and (frame["n_clusters"] == 20).all()


def test_POOL_FITS_002_gaussian_dfcom_counts_residual_variance():
    """POOL-FITS-002: complete-data df = n - (p + 2) for gaussian fits (lme4 npar incl. sigma)."""
    fits = [_fake_fit([1.0, 0.5], [0.2, 0.1], 0.6, 0.15, n_obs=30, family="gaussian"),
            _fake_fit([1.2, 0.3], [0.2, 0.1], 0.7, 0.14, n_obs=30, family="gaussian")]
    pooled = pool_fits(fits, method="x", n_patients=30, n_clusters=5)
    assert pooled.df_complete[0] == 30 - 4


def test_POOL_FITS_003_zero_sd_fallback_and_term_mismatch():
    """POOL-FITS-003: a boundary SD (0) is averaged without interval, with a note; different terms refused."""
    fits = [_fake_fit([1.0, 0.5], [0.2, 0.1], 0.0, np.nan), _fake_fit([1.2, 0.4], [0.2, 0.1], 0.2, 0.5)]
    pooled = pool_fits(fits, method="x", n_patients=500, n_clusters=20)
    row = pooled.to_frame().iloc[-1]
    assert row["estimate"] == pytest.approx(0.1)
    assert np.isnan(row["ci_lower"]) and np.isnan(row["std_error"])
    assert any("log scale" in n for n in pooled.notes)
    other = SimpleNamespace(**{**vars(fits[1]), "term_names": ("Intercept", "z")})
    with pytest.raises(ValueError, match="different terms"):
        pool_fits([fits[1], other], method="x", n_patients=1, n_clusters=1)
    with pytest.raises(ValueError, match="at least 2"):
        pool_fits([fits[1]], method="x", n_patients=1, n_clusters=1)


def test_POOL_RESID_001_gaussian_residual_sd_and_icc():
    """POOL-RESID-001: the residual SD is pooled on the log scale (within variance 1 / (2 (n - J - p + 1)))
    and the ICC comes from the pooled SDs; binomial ICC on the latent scale, no residual SD."""
    from hmlib.stats.pooling import intraclass_correlation, residual_log_sd_se

    fits = [_fake_fit([1.0, 0.5], [0.2, 0.1], 0.6, 0.15, family="gaussian", residual_sd=1.1),
            _fake_fit([1.2, 0.4], [0.2, 0.1], 0.7, 0.14, family="gaussian", residual_sd=0.9),
            _fake_fit([1.1, 0.6], [0.2, 0.1], 0.5, 0.16, family="gaussian", residual_sd=1.0)]
    pooled = pool_fits(fits, method="m", n_patients=500, n_clusters=20)
    se = residual_log_sd_se(500, 20, 2)
    assert se == pytest.approx(1 / np.sqrt(2 * (500 - 20 - 1)))
    ref = pool_rubin(np.log([1.1, 0.9, 1.0]), [se ** 2] * 3, n_obs=500, n_params=4)
    rs = pooled.residual_sd
    assert rs["estimate"] == pytest.approx(np.exp(ref.estimate))
    assert rs["ci_lower"] == pytest.approx(np.exp(ref.ci_lower))
    assert rs["ci_upper"] == pytest.approx(np.exp(ref.ci_upper))
    assert rs["fmi"] == pytest.approx(ref.fmi)
    su = pooled.term("sd(site)")["estimate"]
    assert pooled.icc == pytest.approx(su ** 2 / (su ** 2 + rs["estimate"] ** 2))
    assert 0 < pooled.icc < 1
    assert "sd(residual)" in set(pooled.per_imputation["term"])
    assert "ICC" in pooled.summary() and "residual SD" in pooled.summary()
    # the estimates contract is unchanged: no residual row
    assert pooled.to_frame()["term"].tolist() == ["Intercept", "x", "sd(site)"]
    binom = pool_fits([_fake_fit([1.0, 0.5], [0.2, 0.1], 0.6, 0.15), _fake_fit([1.2, 0.4], [0.2, 0.1], 0.7, 0.14)],
                      method="b", n_patients=500, n_clusters=20)
    assert binom.residual_sd is None
    su = binom.term("sd(site)")["estimate"]
    assert binom.icc == pytest.approx(su ** 2 / (su ** 2 + np.pi ** 2 / 3))
    assert np.isnan(intraclass_correlation(0.5, "gaussian", None))


def test_POOL_RESID_002_log_residual_sd_se_matches_sampling_spread():
    """POOL-RESID-002: the large-sample SE of log(residual SD) agrees with the spread of ML estimates over
    150 simulated data sets (J = 20 clusters of 10) within 20 %."""
    from hmlib.stats.mixed import fit_random_intercept
    from hmlib.stats.pooling import residual_log_sd_se

    rng = np.random.default_rng(11)
    J, nj = 20, 10
    g = np.repeat(np.arange(J), nj)
    x = rng.normal(size=g.size)
    X = np.column_stack([np.ones(g.size), x])
    logs = []
    for _ in range(150):
        y = 1 + 0.5 * x + rng.normal(0, 0.7, J)[g] + rng.normal(0, 1.0, g.size)
        logs.append(np.log(fit_random_intercept(y, X, g, family="gaussian").residual_sd))
    assert np.std(logs, ddof=1) == pytest.approx(residual_log_sd_se(g.size, J, 2), rel=0.2)


def test_POOL_MID_001_imputed_outcomes_left_out():
    """POOL-MID-001: analyse_imputations drops patients whose outcome was imputed (von Hippel 2007)."""
    from hmlib.stats.imputation import impute

    rng = np.random.default_rng(4)
    site = np.repeat(np.arange(12), 40)
    x = rng.normal(size=site.size) + rng.normal(0, 0.5, 12)[site]
    y = 1.0 + 0.5 * x + rng.normal(0, 0.5, 12)[site] + rng.normal(size=site.size)
    y[rng.random(site.size) < 0.15] = np.nan
    x[rng.random(site.size) < 0.2] = np.nan
    data = pd.DataFrame({"site": site, "y": y, "x": x})
    result = impute(data, method="multilevel", cluster="site", outcome="y", outcome_family="gaussian",
                    predictors=["x"], m=3, iterations=3, seed=1)
    pooled = analyse_imputations(result, outcome="y", predictors=["x"], cluster="site", family="gaussian")
    assert pooled.n_patients == int(np.isfinite(y).sum())
    assert any("von Hippel" in n for n in pooled.notes)
    assert pooled.family == "gaussian" and 0 < pooled.icc < 1
    assert pooled.method == "multilevel_mi"
    kept = analyse_imputations(result, outcome="y", predictors=["x"], cluster="site", family="gaussian",
                               delete_imputed_outcomes=False, method="all_rows")
    assert kept.n_patients == len(data) and kept.method == "all_rows"
