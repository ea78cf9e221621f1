"""The general mixed-model fitter (hmlib.stats.mixed.fit_mixed) against lme4, against itself, and at the edges.

Reference numbers: ``tests/results/lme4_general_fits.json``, made by
``tests/results/lme4_general_fits.R`` (lme4 1.1-31, R 4.2.2) from the
simulated data sets ``tests/results/general_*.csv`` (written by this module:
``python tests/test_mixed_general.py --write-data``, from the simulators of
``hmlib.stats.mixed.synthetic`` with the seeds in ``REFERENCE_DATA``) and
from the real data sets in ``data/real/``.

Test IDs
--------
GEN-DATA-001        the reference CSVs are what the simulators give with their seeds
GEN-LME4-001..013   each case of lme4_general_fits.json (in its order; new cases are appended):
                    estimates, SEs, SDs, correlations, logLik, singularity, n
GEN-MODES-001       conditional modes and their SDs against lme4's ranef(condVar = TRUE)
GEN-RI-001          one random intercept: the general fitter reproduces fit_random_intercept
GEN-CHOL-001        the nested factor: log det, solves and inverse blocks = dense linear algebra
GEN-GRAD-001/002    analytic gradients (gaussian profiled, binomial Laplace) = finite differences
GEN-LAPL-001        Laplace objective = dense-matrix Laplace approximation
GEN-SCALE-001       fits are equivariant: rescaling or shifting a slope changes only its scale
GEN-EDGE-001..003   SD at the boundary, labels reused across parents, row order and inputs untouched
GEN-WARM-001        binomial warm starts (the imputation's refits): Newton steps from an earlier optimum
                    reach the cold fit's optimum; ``hessian`` is returned as given, ``newton_matrix``
                    gives the fit's own Hessian at the optimum; a start with an SD at 0 still escapes
GEN-API-001         to_frame terms and intervals, effects frames, summary, estimate_rows
GEN-ERR-001         each FitError names the problem
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import linalg

from hmlib.exceptions import FitError
from hmlib.stats.mixed import RandomEffects, RandomLevel, fit_mixed, fit_random_intercept
from hmlib.results import estimate_rows
from hmlib.stats.mixed.binomial import logistic
from hmlib.stats.mixed.laplace import LaplaceObjective
from hmlib.stats.mixed.profiled import ProfiledDeviance
from hmlib.stats.mixed.synthetic import simulate_nested, simulate_slopes
from hmlib.stats.mixed.terms import prepare_nested
from hmlib.stats.mixed.variance_parameters import ThetaLayout

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "results"
REPO = HERE.parent

# The simulated reference data: file -> (simulator, arguments). Each file holds the gaussian outcome
# ``y`` and the binary outcome ``yb`` simulated from the same design and random effects.
REFERENCE_DATA = {
    "general_nested2.csv": (simulate_nested, dict(seed=20251, levels=("country", "hospital"),
                                                  branching=(15, 8), patients=12.0, sds=(0.5, 0.7))),
    "general_nested3.csv": (simulate_nested, dict(seed=20252, levels=("country", "region", "hospital"),
                                                  branching=(12, 3, 4), patients=12.0, sds=(0.4, 0.5, 0.6))),
    "general_slopes.csv": (simulate_slopes, dict(seed=20253, patients=250, visits=6)),
    "general_slopes_singular.csv": (simulate_slopes, dict(seed=1, sd_slope=0.0, cor=0.0)),
    "general_slopes_binomial.csv": (simulate_slopes, dict(seed=20254, patients=400, visits=8,
                                                          beta=(-0.5, 0.4, 0.5, 0.3), sd_intercept=1.0,
                                                          sd_slope=0.6, cor=0.3)),
}


def reference_frame(name: str) -> pd.DataFrame:
    """The reference data set ``name`` as the simulator gives it (``y`` gaussian, ``yb`` binary)."""
    simulate, kwargs = REFERENCE_DATA[name]
    frame, _ = simulate(family="gaussian", **kwargs)
    binary, _ = simulate(family="binomial", **kwargs)
    frame["yb"] = binary["y"].astype(int)
    return frame


def write_reference_data(folder: Path = REFERENCE) -> None:
    """Write the simulated reference CSVs (the input of lme4_general_fits.R)."""
    for name in REFERENCE_DATA:
        reference_frame(name).to_csv(folder / name, index=False)


LME4_CASES = json.loads((REFERENCE / "lme4_general_fits.json").read_text())
_RANDOM_TERM = re.compile(r"\(\s*([01])\s*(?:\+\s*([\w.]+)\s*)?\|\s*([\w.:]+)\s*\)")


def _data(file: str) -> pd.DataFrame:
    path = REFERENCE / file if file.startswith("general_") else REPO / "data" / "real" / file
    if not path.exists():
        pytest.fail(f"reference data {path} is missing (see tests/results/lme4_general_fits.R)")
    frame = pd.read_csv(path)
    if file == "pbcseq.csv":
        frame["year"] = frame["day"] / 365  # lme4_general_fits.R: pbc_prep
    return frame


def lme4_design(case: dict):
    """y, X, RandomEffects and term names for a case of lme4_general_fits.json, built as lme4 builds them.

    Rows with a missing model variable are dropped; categorical predictors are
    treatment-coded with the alphabetically first level as reference
    (``<column><level>``); ``log(v)`` is the log of v; a random term
    ``(1 [+ slope] | a:b)`` is the level named ``a:b`` (its labels are b's,
    nested in the levels before it), ``(0 + slope | g)`` a level without
    intercept; a grouping used twice is named ``g.1`` the second time, as in
    lme4's VarCorr.
    """
    frame = _data(case["data"])
    lhs, rhs = (part.strip() for part in case["formula"].split("~"))
    random_terms = _RANDOM_TERM.findall(rhs)
    fixed_terms = [t.strip() for t in _RANDOM_TERM.sub("", rhs).split("+") if t.strip()]
    log_outcome = re.fullmatch(r"log\((.+)\)", lhs)
    outcome = log_outcome.group(1) if log_outcome else lhs
    used = {outcome, *fixed_terms}
    for _, slope, grouping in random_terms:
        used.update(grouping.split(":"))
        if slope:
            used.add(slope)
    frame = frame.dropna(subset=sorted(used)).reset_index(drop=True)
    y = frame[outcome].to_numpy(dtype=float)
    if log_outcome:
        y = np.log(y)
    columns, names = [np.ones(len(frame))], ["(Intercept)"]
    for term in fixed_terms:
        values = frame[term]
        if pd.api.types.is_numeric_dtype(values):
            columns.append(values.to_numpy(dtype=float))
            names.append(term)
        else:
            for level in sorted(values.unique())[1:]:
                columns.append((values == level).to_numpy(dtype=float))
                names.append(f"{term}{level}")
    levels, seen = [], set()
    for intercept, slope, grouping in sorted(random_terms, key=lambda t: t[2].count(":")):
        name = f"{grouping}.1" if grouping in seen else grouping
        seen.add(grouping)
        levels.append(RandomLevel(name, frame[grouping.split(":")[-1]], slopes={slope: frame[slope]} if slope else {},
                                  intercept=intercept == "1"))
    return y, np.column_stack(columns), RandomEffects(levels), names



@pytest.fixture(scope="module")
def lme4_fits():
    """Our fit of each reference case, keyed by case name."""
    out = {}
    for case in LME4_CASES:
        y, X, structure, names = lme4_design(case)
        out[case["name"]] = fit_mixed(y, X, structure, family=case["family"], term_names=names)
    return out


def _column(name: str) -> str:
    return "Intercept" if name == "(Intercept)" else name


def _varcorr(fit, entry: dict) -> float:
    """Our value of one row of lme4's VarCorr table."""
    level = fit.level(entry["grp"])
    cols = list(level.columns)
    r = cols.index(_column(entry["var1"]))
    if entry["var2"] is None:
        return float(level.sd[r])
    return float(level.cor[r, cols.index(_column(entry["var2"]))])


# Tolerances: gaussian ML is matched as tightly as both optimisers allow; binomial within the
# lag of lme4's Laplace curvature (its PIRLS curvature is that of the iteration before the last).
TOLERANCES = {
    "gaussian": dict(coef=1e-6, se=1e-6, sd=2e-6, cor=1e-6, loglik=1e-8),
    "binomial": dict(coef=2e-5, se=1e-3, sd=1e-4, cor=1e-4, loglik=1e-4),
}


# --------------------------------------------------------------------------
# Against lme4
# --------------------------------------------------------------------------
def test_gen_data_001_reference_csvs_are_the_simulators_output():
    """GEN-DATA-001: each general_*.csv is what its simulator gives with its seed (so the lme4
    reference data can be regenerated: ``python tests/test_mixed_general.py --write-data``)."""
    for name in REFERENCE_DATA:
        on_disk = pd.read_csv(REFERENCE / name)
        again = reference_frame(name)
        assert list(on_disk.columns) == list(again.columns)
        for col in again.columns:
            if pd.api.types.is_numeric_dtype(again[col]):
                # to 1e-12: the last digits of a simulated value may differ with the BLAS/CPU path
                np.testing.assert_allclose(on_disk[col].to_numpy(float), again[col].to_numpy(float),
                                           rtol=1e-12, atol=0)
            else:
                assert on_disk[col].astype(str).tolist() == again[col].astype(str).tolist()


@pytest.mark.parametrize("case", LME4_CASES, ids=[f"GEN-LME4-{i + 1:03d}-{c['name']}"
                                                  for i, c in enumerate(LME4_CASES)])
def test_gen_lme4_001_013_reference_fits(case, lme4_fits):
    """GEN-LME4-001..013: fixed effects, SEs, every SD and correlation, residual SD, logLik,
    singularity (isSingular), rows and clusters against lme4 (gaussian: coefficients 1e-6 abs, SEs
    1e-6 rel, SDs 2e-6 rel, correlations 1e-6 abs, logLik 1e-8; binomial Laplace: 2e-5, 1e-3, 1e-4,
    1e-4, 1e-4). Measured: gaussian
    coefficients within 3.5e-7, logLik within 7e-11; binomial coefficients within 1.8e-6, SDs 8e-6
    rel, logLik 1e-5 (the brief's bars: 1e-3 for coefficients, 1% for SDs)."""
    fit = lme4_fits[case["name"]]
    tol = TOLERANCES[case["family"]]
    names = list(case["fixed"])
    assert list(fit.term_names) == names
    est = np.array([case["fixed"][n]["estimate"] for n in names])
    se = np.array([case["fixed"][n]["std_error"] for n in names])
    np.testing.assert_allclose(fit.coef, est, rtol=0, atol=tol["coef"])
    np.testing.assert_allclose(fit.std_error, se, rtol=tol["se"])
    for entry in case["varcorr"]:
        ours = _varcorr(fit, entry)
        if entry["var2"] is None:
            assert ours == pytest.approx(entry["sdcor"], rel=tol["sd"]), entry
        else:
            assert ours == pytest.approx(entry["sdcor"], abs=tol["cor"]), entry
    assert fit.loglik == pytest.approx(case["logLik"], abs=tol["loglik"])
    assert fit.singular == case["singular"]
    assert fit.n_obs == case["n_used"]
    assert fit.n_clusters_by_level == {name: case["n_groups"][name.removesuffix(".1")] for name in fit.level_names}
    if case["family"] == "gaussian":
        assert fit.residual_sd == pytest.approx(case["residual_sd"], rel=1e-7)
        assert fit.method == "ML"
    else:
        assert fit.residual_sd is None and fit.method == "ML, Laplace"
    assert fit.converged
    # lme4 with its default optimizer control never finds a higher likelihood than our fit
    assert case["logLik_default_control"] <= fit.loglik + tol["loglik"]


def test_gen_modes_001_conditional_modes_and_their_sds(lme4_fits):
    """GEN-MODES-001: conditional modes and conditional SDs of every cluster at every level against
    lme4's ranef(condVar = TRUE): gaussian random slopes (1e-7 abs, SDs 1e-6 rel) and binomial nested
    intercepts (1e-5 abs, SDs 1e-4 rel)."""
    for case in (c for c in LME4_CASES if "modes" in c):
        fit = lme4_fits[case["name"]]
        gaussian = case["family"] == "gaussian"
        for grp, ref in case["modes"].items():
            frame = fit.effects_frame(grp)
            key = frame[list(fit.level_names[:fit.level_names.index(grp) + 1])].astype(str).agg(":".join, axis=1)
            frame = frame.set_index(key).loc[[str(c) for c in ref["cluster"]]]
            for col, values in ref["effects"].items():
                np.testing.assert_allclose(frame[_column(col)], values, rtol=0, atol=1e-7 if gaussian else 1e-5)
                np.testing.assert_allclose(frame[f"{_column(col)}_sd"], ref["sd"][col],
                                           rtol=1e-6 if gaussian else 1e-4)


# --------------------------------------------------------------------------
# The random-intercept special case
# --------------------------------------------------------------------------
def _random_intercept_data(seed, family, sd=0.7):
    frame, _ = simulate_nested(seed, levels=("site",), branching=(40,), patients=15.0, sds=(sd,),
                               family=family)
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.x2])
    return frame.y.to_numpy(), X, frame.site.to_numpy()


@pytest.mark.parametrize("family,seed,sd", [("gaussian", 1, 0.7), ("binomial", 2, 0.7), ("gaussian", 3, 0.0),
                                            ("gaussian", 2, 0.0), ("binomial", 1, 0.0)])
def test_gen_ri_001_reproduces_fit_random_intercept(family, seed, sd):
    """GEN-RI-001: with one random intercept the general fitter reproduces fit_random_intercept:
    estimates, SEs, cluster SD, SE of log(SD), logLik, cluster effects and their SDs (gaussian to
    1e-8, binomial Laplace to 1e-6; a small SD on a flat profile, seed 3, to 1e-6), also with the SD
    estimated on the boundary (gaussian seed 2, binomial seed 1: exactly 0 in both fitters)."""
    y, X, site = _random_intercept_data(seed, family, sd)
    names = ["Intercept", "x1", "x2"]
    ri = fit_random_intercept(y, X, site, family=family, term_names=names, cluster_name="site")
    gen = fit_mixed(y, X, RandomEffects.nested(("site", site)), family=family, term_names=names)
    tol = 1e-8 if family == "gaussian" else 1e-6
    np.testing.assert_allclose(gen.coef, ri.coef, rtol=0, atol=tol)
    np.testing.assert_allclose(gen.std_error, ri.std_error, rtol=100 * tol)
    level = gen.levels[0]
    assert level.sd[0] == pytest.approx(ri.cluster_sd, abs=max(tol, 1e-6))
    assert gen.loglik == pytest.approx(ri.loglik, abs=tol)
    np.testing.assert_allclose(level.modes[:, 0], ri.cluster_effects, atol=10 * tol)
    np.testing.assert_allclose(level.mode_sd[:, 0], ri.cluster_effect_sd, atol=10 * tol)
    if ri.cluster_sd == 0:
        assert level.sd[0] == 0 and np.isnan(level.log_sd_std_error[0])
    else:
        assert level.log_sd_std_error[0] == pytest.approx(ri.log_cluster_sd_std_error, rel=1e-4)
    ours, theirs = gen.to_frame(), ri.to_frame()
    assert ours["term"].tolist() == theirs["term"].tolist()
    np.testing.assert_allclose(ours[["estimate", "std_error", "ci_lower", "ci_upper"]].to_numpy(float),
                               theirs[["estimate", "std_error", "ci_lower", "ci_upper"]].to_numpy(float),
                               rtol=1e-3, atol=10 * tol)   # a log-scale interval amplifies the SE



# --------------------------------------------------------------------------
# Internal consistency against dense linear algebra
# --------------------------------------------------------------------------
def _small_design(family: str, seed: int = 0):
    """Three nested levels with slopes at two of them: q = (1, 2, 3); x1 is a slope at two levels."""
    frame, _ = simulate_nested(seed, levels=("country", "region", "hospital"), branching=(4, 3, 3),
                               patients=6.0, sds=(0.4, 0.5, 0.6), family=family)
    frame["t"] = np.random.default_rng(seed).uniform(0.0, 3.0, len(frame))
    structure = RandomEffects([RandomLevel("country", frame.country),
                               RandomLevel("region", frame.region, slopes={"x1": frame.x1}),
                               RandomLevel("hospital", frame.hospital, slopes={"t": frame.t, "x1": frame.x1})])
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.x2, frame.t])
    return prepare_nested(frame.y, X, structure, family, None)


def _dense(design, theta):
    """Dense Z (rows in the design's order; effect (level k, cluster a, column j) at a q_k + j after
    the levels before) and Lambda = blockdiag(I_m (x) Lambda_k)."""
    n = design.base.n
    blocks = []
    for k, (m, q) in enumerate(zip(design.n_clusters, design.q)):
        Zk = np.zeros((n, m * q))
        for j, c in enumerate(design.coords(k)):
            Zk[np.arange(n), design.row_codes[k] * q + j] = design.covariates[:, design.coord_covariate[c]]
        blocks.append(Zk)
    lambdas = ThetaLayout(design.q).lambdas(theta)
    lam = linalg.block_diag(*[np.kron(np.eye(m), lk) for m, lk in zip(design.n_clusters, lambdas)])
    return np.hstack(blocks), lam


def _random_theta(layout, seed):
    rng = np.random.default_rng(seed)
    return np.where(layout.diagonal, rng.uniform(0.3, 1.2, layout.size), rng.normal(scale=0.3, size=layout.size))


def test_gen_chol_001_nested_factor_equals_dense_algebra():
    """GEN-CHOL-001: the nested factor (three levels, q = 1, 2, 3) gives log det H, the Schur
    complement of [X, y], solves, every chain block of H^-1 and the profiled deviance as dense
    matrix algebra does (1e-10 rel)."""
    design = _small_design("gaussian")
    objective = ProfiledDeviance(design)
    theta = _random_theta(objective.layout, 1)
    sol = objective.solve(theta)
    Z, lam = _dense(design, theta)
    ZL = Z @ lam
    H = np.eye(ZL.shape[1]) + ZL.T @ ZL
    assert sol.factor.logdet == pytest.approx(np.linalg.slogdet(H)[1], rel=1e-12)
    E = np.column_stack([design.base.Xs, design.base.y])
    schur = E.T @ E - E.T @ ZL @ np.linalg.solve(H, ZL.T @ E)
    np.testing.assert_allclose(sol.factor.schur, schur, rtol=1e-10, atol=1e-9)
    rng = np.random.default_rng(2)
    rhs = [rng.normal(size=(m, q)) for m, q in zip(design.n_clusters, design.q)]
    solved = np.concatenate([x.reshape(-1) for x in sol.factor.solve(rhs)])
    np.testing.assert_allclose(solved, np.linalg.solve(H, np.concatenate([r.reshape(-1) for r in rhs])),
                               rtol=1e-10, atol=1e-12)
    H_inv = np.linalg.inv(H)
    starts = np.r_[0, np.cumsum([m * q for m, q in zip(design.n_clusters, design.q)])]
    for k, P in enumerate(sol.factor.chain_covariance()):
        for a in range(design.n_clusters[k]):
            chain = np.concatenate([starts[j] + design.ancestors[k][j][a] * design.q[j] + np.arange(design.q[j])
                                    for j in range(k + 1)])
            np.testing.assert_allclose(P[a], H_inv[np.ix_(chain, chain)], rtol=1e-9, atol=1e-12)
    # profiled deviance from the marginal covariance V0 = I + Z Lambda Lambda' Z'
    V0 = np.eye(design.base.n) + ZL @ ZL.T
    X, y = design.base.Xs, design.base.y
    beta = np.linalg.solve(X.T @ np.linalg.solve(V0, X), X.T @ np.linalg.solve(V0, y))
    r = y - X @ beta
    n = design.base.n
    deviance = n * np.log(2 * np.pi * (r @ np.linalg.solve(V0, r)) / n) + np.linalg.slogdet(V0)[1] + n
    assert sol.deviance == pytest.approx(deviance, rel=1e-11)
    np.testing.assert_allclose(sol.beta_s, beta, rtol=1e-9)


def test_gen_grad_001_profiled_gradient_matches_finite_differences():
    """GEN-GRAD-001: the analytic gradient of the gaussian profiled deviance over theta (three nested
    levels with slopes) equals central finite differences (rel 1e-6)."""
    objective = ProfiledDeviance(_small_design("gaussian"))
    theta = _random_theta(objective.layout, 3)
    grad = objective(theta)[1]
    fd = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = 1e-6
        fd[i] = (objective(theta + e)[0] - objective(theta - e)[0]) / 2e-6
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


def _dense_laplace(design, beta_s, theta):
    Z, lam = _dense(design, theta)
    ZL = Z @ lam
    off = design.base.Xs @ beta_s
    y = design.base.y
    u = np.zeros(ZL.shape[1])
    for _ in range(50):
        mu, w, _ = logistic(off + ZL @ u)
        H = np.eye(u.size) + ZL.T @ (w[:, None] * ZL)
        step = np.linalg.solve(H, ZL.T @ (y - mu) - u)
        u = u + step
        if np.max(np.abs(step)) < 1e-13:
            break
    eta = off + ZL @ u
    mu, w, softplus = logistic(eta)
    H = np.eye(u.size) + ZL.T @ (w[:, None] * ZL)
    return -(y @ eta - softplus.sum()) + 0.5 * u @ u + 0.5 * np.linalg.slogdet(H)[1]


def test_gen_lapl_001_laplace_objective_equals_dense_laplace():
    """GEN-LAPL-001: the Laplace objective (PIRLS with the nested factor) equals the Laplace
    approximation computed with dense matrices, mode found by plain Newton (1e-10 rel)."""
    design = _small_design("binomial")
    objective = LaplaceObjective(design)
    theta = _random_theta(objective.layout, 4)
    beta_s = np.array([-0.4, 0.5, -0.3, 0.1])
    assert objective(np.r_[beta_s, theta])[0] == pytest.approx(_dense_laplace(design, beta_s, theta), rel=1e-10)


def test_gen_grad_002_laplace_gradient_matches_finite_differences():
    """GEN-GRAD-002: the analytic gradient of the Laplace objective over (beta, theta), including
    the dependence of the modes and of the curvature on the parameters, equals central finite
    differences (rel 1e-5), for nested levels with slopes."""
    objective = LaplaceObjective(_small_design("binomial"))
    x = np.r_[-0.4, 0.5, -0.3, 0.1, _random_theta(objective.layout, 5)]
    grad = objective(x)[1]
    state = objective.snapshot()
    fd = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = 1e-5
        objective.restore(state)
        plus = objective(x + e)[0]
        objective.restore(state)
        fd[i] = (plus - objective(x - e)[0]) / 2e-5
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Invariances and edges
# --------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_gen_scale_001_slopes_are_equivariant(family):
    """GEN-SCALE-001: rescaling a slope (10 time) divides its SD and fixed effect by 10; shifting it
    (time + 3) moves the intercept to time = -3 (intercept variance v0 - 6 c + 9 v1); the
    log-likelihood is unchanged (gaussian 1e-8, binomial 1e-6): the internal standardisation of
    slopes is exact."""
    frame = pd.read_csv(REFERENCE / ("general_slopes.csv" if family == "gaussian" else "general_slopes_binomial.csv"))
    y = frame.y if family == "gaussian" else frame.yb

    def fit(time):
        X = np.column_stack([np.ones(len(frame)), time, frame.treat])
        return fit_mixed(y, X, RandomEffects([RandomLevel("patient", frame.patient, slopes={"time": time})]),
                         family=family)

    base, scaled, shifted = fit(frame.time), fit(10 * frame.time), fit(frame.time + 3)
    tol = 1e-8 if family == "gaussian" else 1e-6
    assert scaled.loglik == pytest.approx(base.loglik, abs=tol)
    assert shifted.loglik == pytest.approx(base.loglik, abs=tol)
    cov = base.levels[0].covariance
    np.testing.assert_allclose(scaled.levels[0].sd, base.levels[0].sd / [1, 10], rtol=1e-4)
    assert scaled.coef[1] == pytest.approx(base.coef[1] / 10, rel=1e-4)
    assert shifted.levels[0].covariance[0, 0] == pytest.approx(cov[0, 0] - 6 * cov[1, 0] + 9 * cov[1, 1], rel=1e-4)
    assert shifted.levels[0].sd[1] == pytest.approx(base.levels[0].sd[1], rel=1e-4)


@pytest.mark.parametrize("family,seed", [("gaussian", 1), ("binomial", 3)])
def test_gen_edge_001_level_sd_on_the_boundary(family, seed):
    """GEN-EDGE-001: a level whose SD is estimated at 0 (country, true SD 0) is exactly 0, its row
    has no standard error or interval, the fit converges, and it equals the fit without that level
    (fit_random_intercept on country:hospital; logLik 1e-9, hospital SD 1e-6)."""
    frame, _ = simulate_nested(seed, branching=(10, 6), patients=10.0, sds=(0.0, 0.6), family=family)
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.x2])
    fit = fit_mixed(frame.y, X, RandomEffects.nested(("country", frame.country), ("hospital", frame.hospital)),
                    family=family)
    ri = fit_random_intercept(frame.y, X, frame.country + ":" + frame.hospital.astype(str), family=family)
    assert fit.levels[0].sd[0] == 0.0 and fit.converged and fit.singular and "singular fit" in fit.summary()
    row = fit.to_frame().set_index("term").loc["sd(country)"]
    assert row["estimate"] == 0 and row[["std_error", "ci_lower", "ci_upper"]].isna().all()
    assert fit.loglik == pytest.approx(ri.loglik, abs=1e-9)
    assert fit.levels[1].sd[0] == pytest.approx(ri.cluster_sd, abs=1e-6)


def test_gen_warm_001_warm_starts_reach_the_cold_optimum():
    """GEN-WARM-001: binomial refits from an earlier fit (hmlib.stats.mixed.laplace.fit_laplace).

    On data differing from the earlier fit's in a few outcomes (as an imputation chain's next
    iteration), Newton steps from its optimum with its Hessian end at the cold fit's optimum (1e-6)
    and return that Hessian unchanged; with it as ``newton_matrix`` only, the Hessian returned is
    the fit's own at the optimum (= the cold fit's, 1e-4). A start with the country SD at 0 when
    the data say it is not (a saddle the Newton steps cannot leave) still reaches the optimum.
    """
    frame, _ = simulate_nested(5, branching=(12, 8), patients=25.0, sds=(0.5, 0.6), family="binomial")
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.x2])
    groups = RandomEffects.nested(("country", frame.country), ("hospital", frame.hospital))
    earlier = fit_mixed(frame.y, X, groups, family="binomial")
    y = frame.y.to_numpy().copy()
    y[::97] = 1 - y[::97]                                  # the next iteration: a few values redrawn
    cold = fit_mixed(y, X, groups, family="binomial")
    reused = fit_mixed(y, X, groups, family="binomial", start=earlier.optimum, hessian=earlier.optimum_hessian)
    own = fit_mixed(y, X, groups, family="binomial", start=earlier.optimum,
                    newton_matrix=earlier.optimum_hessian)
    for fit in (reused, own):
        assert fit.converged
        np.testing.assert_allclose(fit.optimum, cold.optimum, atol=1e-6)
        assert fit.loglik == pytest.approx(cold.loglik, abs=1e-8)
    np.testing.assert_array_equal(reused.optimum_hessian, earlier.optimum_hessian)
    assert not np.allclose(own.optimum_hessian, earlier.optimum_hessian, rtol=1e-4)
    np.testing.assert_allclose(own.optimum_hessian, cold.optimum_hessian, rtol=1e-4, atol=1e-4)
    saddle = earlier.optimum.copy()
    saddle[X.shape[1]] = 0.0                                # theta of the country level: SD 0
    escaped = fit_mixed(y, X, groups, family="binomial", start=saddle, hessian=earlier.optimum_hessian)
    assert escaped.levels[0].sd[0] > 0.1
    np.testing.assert_allclose(escaped.optimum, cold.optimum, atol=1e-5)


def test_gen_edge_002_inner_labels_reused_across_parents():
    """GEN-EDGE-002: hospital labels restart in every country (1, 2, ...); a level's clusters are the
    (country, hospital) pairs, as lme4's country:hospital, so the fit equals the one with globally
    unique hospital labels."""
    frame = pd.read_csv(REFERENCE / "general_nested2.csv")
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.x2])
    reused = fit_mixed(frame.y, X, RandomEffects.nested(("country", frame.country), ("hospital", frame.hospital)))
    unique = frame.country + "/" + frame.hospital.astype(str)
    again = fit_mixed(frame.y, X, RandomEffects.nested(("country", frame.country), ("hospital", unique)))
    assert reused.n_clusters_by_level == again.n_clusters_by_level == {
        "country": 15, "hospital": frame.groupby(["country", "hospital"]).ngroups}
    assert frame.hospital.nunique() < reused.n_clusters
    assert reused.loglik == pytest.approx(again.loglik, abs=1e-10)
    ours = reused.effects_frame("hospital")
    ours.index = ours["country"] + "/" + ours["hospital"].astype(str)
    theirs = again.effects_frame("hospital").set_index("hospital")
    np.testing.assert_allclose(ours["Intercept"], theirs.loc[ours.index, "Intercept"], atol=1e-10)


def test_gen_edge_003_row_order_and_inputs():
    """GEN-EDGE-003: shuffling the rows changes nothing (estimates 1e-9, logLik 1e-9, the same
    effects per cluster); the inputs are not modified; pandas and plain arrays give the same fit."""
    frame = pd.read_csv(REFERENCE / "general_slopes.csv")
    X = np.column_stack([np.ones(len(frame)), frame.time, frame.treat, frame.age])
    copies = (X.copy(), frame.copy())
    fit = fit_mixed(frame.y, X, RandomEffects([RandomLevel("patient", frame.patient, slopes={"time": frame.time})]))
    np.testing.assert_array_equal(X, copies[0])
    pd.testing.assert_frame_equal(frame, copies[1])
    order = np.random.default_rng(7).permutation(len(frame))
    shuffled = frame.iloc[order]
    again = fit_mixed(shuffled.y.to_numpy(), X[order],
                      RandomEffects([RandomLevel("patient", shuffled.patient.to_numpy(),
                                                 slopes={"time": shuffled.time.to_numpy()})]))
    np.testing.assert_allclose(again.coef, fit.coef, rtol=0, atol=1e-9)
    assert again.loglik == pytest.approx(fit.loglik, abs=1e-9)
    pd.testing.assert_frame_equal(again.effects_frame("patient"), fit.effects_frame("patient"), atol=1e-8)


# --------------------------------------------------------------------------
# API and errors
# --------------------------------------------------------------------------
def test_gen_api_001_frames_summary_estimate_rows(lme4_fits):
    """GEN-API-001: to_frame gives the estimates.csv terms (fixed effects, sd(<level>),
    sd(<slope>|<level>), cor(<slope>|<level>)) with intervals around the estimates (SDs on the log
    scale, correlations on Fisher's z); effects_frame, summary, level lookup and estimate_rows."""
    fit = lme4_fits["cdystonia_nested_slopes"]
    frame = fit.to_frame(level=0.9)
    assert frame["term"].tolist() == [*fit.term_names, "sd(site)", "sd(site:patient_id)",
                                      "sd(week|site:patient_id)", "cor(week|site:patient_id)"]
    assert (frame["ci_lower"] < frame["estimate"]).all() and (frame["estimate"] < frame["ci_upper"]).all()
    sd_row = frame.set_index("term").loc["sd(site)"]
    log_se = fit.levels[0].log_sd_std_error[0]
    assert sd_row["ci_upper"] / sd_row["estimate"] == pytest.approx(np.exp(1.6448536 * log_se), rel=1e-6)
    cor_row = frame.set_index("term").loc["cor(week|site:patient_id)"]
    z_se = fit.levels[1].atanh_cor_std_error[1, 0]
    assert np.arctanh(cor_row["ci_upper"]) - np.arctanh(cor_row["estimate"]) == pytest.approx(1.6448536 * z_se,
                                                                                               rel=1e-6)
    effects = fit.effects_frame("site:patient_id")
    assert effects.columns.tolist() == ["site", "site:patient_id", "n", "Intercept", "Intercept_sd", "week",
                                        "week_sd"]
    assert len(effects) == 109 and effects["n"].sum() == fit.n_obs
    assert fit.fixed_effects.index.tolist() == list(fit.term_names)
    np.testing.assert_array_equal(fit.std_errors.to_numpy(), fit.std_error)
    assert "sd(week|site:patient_id)" in fit.summary() and "converged" in fit.summary()
    with pytest.raises(KeyError, match="no grouping level"):
        fit.level("country")
    rows = estimate_rows(fit, "complete_case")
    assert rows["n_clusters"].unique().tolist() == [109] and len(rows) == len(frame)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.coef = None
    with pytest.raises(ValueError):
        fit.coef[0] = 1.0


def _err_inputs():
    rng = np.random.default_rng(0)
    n = 60
    g = np.repeat(np.arange(6), 10)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    return rng.normal(size=n), X, g, rng.normal(size=n)


def _slope_level(groups, values, **kwargs):
    return RandomEffects([RandomLevel("a", groups, slopes={"t": values}, **kwargs)])


ERROR_CASES = [
    ("not-a-structure", lambda y, X, g, t: fit_mixed(y, X, g), "RandomEffects structure"),
    ("empty", lambda y, X, g, t: fit_mixed(y, X, RandomEffects([])), "at least one grouping level"),
    ("duplicate-names", lambda y, X, g, t: fit_mixed(y, X, RandomEffects.nested(("a", g), ("a", g))), "must differ"),
    ("no-columns", lambda y, X, g, t: fit_mixed(y, X, RandomEffects([RandomLevel("a", g, intercept=False)])),
     "neither an intercept nor slopes"),
    ("label-length", lambda y, X, g, t: fit_mixed(y, X, RandomEffects.nested(("a", g[:-1]))), "one label per row"),
    ("missing-label", lambda y, X, g, t: fit_mixed(y, X, RandomEffects.nested(("a", np.where(g == 2, np.nan, g)))),
     "missing label"),
    ("one-cluster", lambda y, X, g, t: fit_mixed(y, X, RandomEffects.nested(("a", g * 0))), "only 1 cluster"),
    ("slope-missing", lambda y, X, g, t: fit_mixed(y, X, _slope_level(g, np.r_[np.nan, t[1:]])),
     "missing or infinite"),
    ("slope-constant", lambda y, X, g, t: fit_mixed(y, X, _slope_level(g, t * 0 + 2)), "constant"),
    ("slope-text", lambda y, X, g, t: fit_mixed(y, X, _slope_level(g, ["x"] * 60)), "must be numeric"),
    ("too-many-effects", lambda y, X, g, t: fit_mixed(y, X, _slope_level(np.arange(60) // 2, t)), "not identifiable"),
    ("family", lambda y, X, g, t: fit_mixed(y, X, RandomEffects.nested(("a", g)), family="poisson"), "unknown family"),
    ("binomial-y", lambda y, X, g, t: fit_mixed(y, X, RandomEffects.nested(("a", g)), family="binomial"), "0/1"),
    ("x-nan", lambda y, X, g, t: fit_mixed(y, np.where(np.arange(60)[:, None] == 3, np.nan, X),
                                           RandomEffects.nested(("a", g))), "missing or infinite"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[f"GEN-ERR-001-{c[0]}" for c in ERROR_CASES])
def test_gen_err_001_fit_errors_name_the_problem(case):
    """GEN-ERR-001: each problem with the inputs raises FitError saying what is wrong."""
    _, call, message = case
    with pytest.raises(FitError, match=message):
        call(*_err_inputs())


if __name__ == "__main__" and "--write-data" in sys.argv:
    write_reference_data()
    print("wrote", ", ".join(REFERENCE_DATA))
