"""The imputation engine's speed-ups give the numbers of the plain computation.

Test IDs: MI-FAST (the warm-started 2l.bin fit and its analytic Laplace
Hessian against :func:`hmlib.stats.mixed.fit_random_intercept` and central
differences; the per-chain caches of a design no imputation changes; the
blocked sufficient statistics of the Gibbs sampler), MI-WARM (chains started
from given completed data sets: the warm start of step 5's scenarios).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmlib.simulate.registries import icc_imputation_data
from hmlib.simulate.scale import trial_registry
from hmlib.stats.imputation import impute, kernels, problem, ri_logistic, univariate
from hmlib.stats.imputation.kernels import prepare_design
from hmlib.stats.mixed import fit_random_intercept
from hmlib.stats.mixed.binomial import BinomialObjective

TRIAL_ROLES = dict(cluster="hospital", outcome="dead_or_dependent", outcome_family="binomial",
                   predictors=["age", "sex", "sbp", "conscious", "stroke_type", "aspirin", "atrial_fib"],
                   higher_levels=["country"], kinds={c: "categorical" for c in ("sex", "conscious", "stroke_type",
                                                                                  "aspirin")})


def _binary_design(seed: int, n_clusters: int = 60, per_cluster: int = 30, p: int = 6):
    """A standardised design (intercept first), 0/1 outcome with cluster effects, cluster codes."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_clusters), per_cluster)
    n = groups.size
    X = rng.normal(size=(n, p - 1)) + 0.5 * rng.normal(size=(n_clusters, p - 1))[groups]
    eta = -0.4 + X @ rng.normal(scale=0.4, size=p - 1) + rng.normal(scale=0.8, size=n_clusters)[groups]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    Do, _, _ = prepare_design(X, [f"x{k}" for k in range(p - 1)], np.ones(n, bool), np.zeros(n, bool))
    return Do, y, groups


def _central_difference_hessian(objective, x, h=1e-4):
    k = x.size
    hess = np.empty((k, k))
    for i in range(k):
        e = np.zeros(k)
        e[i] = h
        hess[:, i] = (objective(x + e)[1] - objective(x - e)[1]) / (2 * h)
    return 0.5 * (hess + hess.T)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_MI_FAST_001_analytic_laplace_hessian_equals_central_differences(seed):
    """MI-FAST-001: laplace_hessian (analytic) equals central differences of the analytic gradient of
    BinomialObjective to 1e-6 relative, at the optimum and away from it (ri_logistic module docstring)."""
    Do, y, groups = _binary_design(seed)
    fit = fit_random_intercept(y, Do, groups, family="binomial")
    d = ri_logistic._prepared(Do, y, groups)
    objective = BinomialObjective(d, 1)
    rng = np.random.default_rng(seed)
    for x in (np.r_[fit.coef, fit.cluster_sd], np.r_[fit.coef + 0.1 * rng.normal(size=fit.coef.size), 1.3]):
        value, gradient, analytic = ri_logistic.laplace_hessian(objective, x)
        numeric = _central_difference_hessian(objective, x)
        assert np.abs(analytic - numeric).max() < 1e-6 * np.abs(numeric).max()
        assert value == pytest.approx(objective(x)[0], rel=1e-12)


def test_MI_FAST_007_sparse_cluster_sums_equal_segment_sums(monkeypatch):
    """MI-FAST-007: the Hessian's weighted cluster sums as one sparse product (large designs) equal the
    segment sums of the weighted design (small ones) to rounding, clusters of one row included, and so
    does laplace_hessian on either path (ri_logistic._weighted_cluster_sums)."""
    Do, y, groups = _binary_design(7, n_clusters=25, per_cluster=12)
    groups = groups.copy()
    groups[:3] = [100, 101, 102]                       # three clusters of one row
    d = ri_logistic._prepared(Do, y, groups)
    weights = np.random.default_rng(7).normal(size=(4, y.size))
    monkeypatch.setattr(ri_logistic, "SPARSE_SUMS_MIN_CELLS", 10 ** 9)
    dense = ri_logistic._weighted_cluster_sums(d, weights)
    x = np.r_[np.zeros(Do.shape[1]), 0.7]
    dense_hessian = ri_logistic.laplace_hessian(BinomialObjective(d, 1), x)[2]
    monkeypatch.setattr(ri_logistic, "SPARSE_SUMS_MIN_CELLS", 0)
    sparse = ri_logistic._weighted_cluster_sums(d, weights)
    sparse_hessian = ri_logistic.laplace_hessian(BinomialObjective(d, 1), x)[2]
    for a, b in zip(sparse, dense):
        assert a.shape == (d.m, Do.shape[1])
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
    np.testing.assert_allclose(sparse_hessian, dense_hessian, rtol=0, atol=1e-12 * np.abs(dense_hessian).max())


@pytest.mark.parametrize("seed", [4, 5])
def test_MI_FAST_002_warm_fit_is_the_maximum_likelihood_fit(seed):
    """MI-FAST-002: a fit warm-started from a nearby point (as the next chained-equations iteration)
    reaches fit_random_intercept's estimate (coefficients and cluster SD to 1e-6) and covariance
    (1e-5 relative: central differences against the analytic Hessian), and says it was warm."""
    Do, y, groups = _binary_design(seed)
    reference = fit_random_intercept(y, Do, groups, family="binomial")
    rng = np.random.default_rng(seed)
    start = (reference.coef + 0.05 * rng.normal(size=reference.coef.size), reference.cluster_sd * 1.2)
    fit = ri_logistic.fit_ri_logistic(Do, y, groups, start=start)
    assert fit.warm
    np.testing.assert_allclose(fit.coef, reference.coef, atol=1e-6)
    assert fit.cluster_sd == pytest.approx(reference.cluster_sd, abs=1e-6)
    assert np.abs(fit.cov - reference.cov).max() < 1e-5 * np.abs(reference.cov).max()
    assert fit.log_sd_se == pytest.approx(reference.log_cluster_sd_std_error, rel=1e-4)
    cold = ri_logistic.fit_ri_logistic(Do, y, groups)
    assert not cold.warm
    np.testing.assert_array_equal(cold.coef, reference.coef)


def test_MI_FAST_003_warm_fit_falls_back_to_the_full_fit():
    """MI-FAST-003: a start at the boundary (SD below WARM_MIN_SD), of the wrong length or not finite
    gives fit_random_intercept's own fit (warm False), identical to it."""
    Do, y, groups = _binary_design(7)
    reference = fit_random_intercept(y, Do, groups, family="binomial")
    for start in ((reference.coef, 0.0), (reference.coef[:-1], 0.8), (np.full(reference.coef.size, np.nan), 0.8)):
        fit = ri_logistic.fit_ri_logistic(Do, y, groups, start=start)
        assert not fit.warm
        np.testing.assert_array_equal(fit.coef, reference.coef)
        np.testing.assert_array_equal(fit.cov, 0.5 * (reference.cov + reference.cov.T))


def test_MI_FAST_004_fixed_design_cache_changes_nothing(monkeypatch):
    """MI-FAST-004: with one incomplete variable (its design the same in every iteration and chain) the
    design, its standardisation, the fit of 2l.bin, the Gibbs sampler's sums and the flat logistic mode
    are made once; the completed data (multilevel and flat) are identical to those made without the
    cache (Problem.fixed_cache returning None)."""
    frame = trial_registry(3, n_patients=1500, n_hospitals=40, n_countries=4)
    frame["dead_or_dependent"] = frame["dead_or_dependent"].fillna(0.0)      # atrial_fib the only gap
    cont, _ = icc_imputation_data(3, n_clusters=30, per_cluster=20, icc=0.4, missing=0.3)
    cases = [(frame, TRIAL_ROLES), (cont, dict(cluster="site", outcome="y", outcome_family="binomial",
                                               predictors=["x"]))]
    for (data, roles), method in [(case, method) for case in cases for method in ("multilevel", "flat")]:
        cached = impute(data, method=method, m=3, iterations=3, seed=11, **roles)
        with monkeypatch.context() as patch:
            patch.setattr(problem.Problem, "fixed_cache", lambda self, var, key: None)
            plain = impute(data, method=method, m=3, iterations=3, seed=11, **roles)
        for a, b in zip(cached.completed, plain.completed):
            pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_MI_FAST_005_blocked_sufficient_statistics_are_exact(monkeypatch):
    """MI-FAST-005: the Gibbs sampler's per-cluster sums taken in blocks of whole clusters equal the
    sums taken in one pass, bit for bit (each cluster is summed within one block)."""
    rng = np.random.default_rng(3)
    co = rng.integers(0, 40, 3000)
    Do = np.column_stack([np.ones(3000), rng.normal(size=(3000, 4))])
    z = rng.normal(size=3000)
    whole = kernels.cluster_sufficient_statistics(Do, z, co, 45)
    monkeypatch.setattr(kernels, "SUFFICIENT_STATISTICS_BLOCK", 500)
    blocked = kernels.cluster_sufficient_statistics(Do, z, co, 45)
    np.testing.assert_array_equal(whole, blocked)
    assert np.all(whole[40:] == 0)


def test_MI_WARM_001_chains_start_from_the_given_completed_data(monkeypatch):
    """MI-WARM-001: with start=completed data sets, chain k begins with the missing cells as in
    start[k]: numeric, categorical (labels back to codes) and cluster-level values. Checked with the
    updates switched off, so the completed data equal the start."""
    frame = trial_registry(4, n_patients=1200, n_hospitals=30, n_countries=3)
    frame.loc[frame.index[::13], "conscious"] = np.nan
    frame["unit_type"] = np.where(frame["hospital"].str[-1].isin(list("02468")), "stroke unit", "general")
    frame.loc[frame["hospital"].isin(["H003", "H010"]), "unit_type"] = np.nan
    roles = dict(TRIAL_ROLES, kinds={**TRIAL_ROLES["kinds"], "unit_type": "categorical"},
                 cluster_covariates=["unit_type"])
    first = impute(frame, method="multilevel", m=2, iterations=2, seed=5, **roles)
    monkeypatch.setattr(univariate, "impute_variable", lambda *args, **kwargs: None)
    import hmlib.stats.imputation.chained as chained
    monkeypatch.setattr(chained, "impute_variable", lambda *args, **kwargs: None)
    again = impute(frame, method="multilevel", m=2, iterations=1, seed=99, start=first.completed, **roles)
    for a, b in zip(first.completed, again.completed):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_MI_WARM_002_start_must_match_the_rows():
    """MI-WARM-002: start data sets of other rows, or not m of them, are refused with a clear error."""
    data, _ = icc_imputation_data(1, n_clusters=10, per_cluster=10, icc=0.3, missing=0.3)
    roles = dict(cluster="site", outcome="y", outcome_family="binomial", predictors=["x"])
    done = impute(data, method="multilevel", m=2, iterations=2, seed=1, **roles).completed
    with pytest.raises(ValueError, match="m = 2 completed data sets"):
        impute(data, method="multilevel", m=2, iterations=1, seed=1, start=done[:1], **roles)
    with pytest.raises(ValueError, match="rows"):
        impute(data.iloc[5:], method="multilevel", m=2, iterations=1, seed=1, start=done, **roles)


def test_MI_WARM_003_warm_chains_as_tasks_equal_serial_chains():
    """MI-WARM-003: warm-started chains (start and start_states) run as tasks that each get a pickled copy
    of their task and of the shared problem (as in worker processes: hmlib.parallel) give the completed
    data, chain means, notes and end states of the chains run here, bit for bit (chained._chain_task)."""
    import pickle

    frame = trial_registry(6, n_patients=900, n_hospitals=30, n_countries=3)
    frame.loc[frame.index[::11], "conscious"] = np.nan
    first = impute(frame, method="multilevel", m=3, iterations=2, seed=5, **TRIAL_ROLES)

    def in_other_processes(fn, tasks, shared, progress=None):
        return [pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(task)), pickle.loads(pickle.dumps(shared)))))
                for task in tasks]

    kwargs = dict(method="multilevel", m=3, iterations=2, seed=8, start=first.completed,
                  start_states=first.chain_states, **TRIAL_ROLES)
    serial = impute(frame, **kwargs)
    tasks = impute(frame, map_tasks=in_other_processes, **kwargs)
    for a, b in zip(serial.completed, tasks.completed):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    for name, values in serial.chain_means.items():
        np.testing.assert_array_equal(values, tasks.chain_means[name])
    assert serial.notes == tasks.notes
    def same(a, b):
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return np.array_equal(a, b)

    assert same(serial.chain_states, tasks.chain_states) and serial.chain_states
    assert not all(a.equals(b) for a, b in zip(serial.completed, first.completed))


def test_MI_FAST_006_transport_fits_start_from_the_background_chains(monkeypatch):
    """MI-FAST-006: the transport check's masked imputations started from the fits of the chains that made
    their backgrounds (fit_starts: 2l.bin's last fit, no Gibbs state) are warm fits and give the table of
    cold fits, to optimiser tolerance (the same draws)."""
    from hmlib.stats.imputation import fit_starts
    from hmlib.stats.transport import transport_check_frame

    frame = trial_registry(6, n_patients=3000, n_hospitals=60, n_countries=3)
    frame["dead_or_dependent"] = frame["dead_or_dependent"].fillna(0.0)
    # two-level 2l.bin (country indicators): the three-level binary fits have no warm start
    main = impute(frame, method="multilevel", m=4, iterations=3, seed=2, higher_effects="fixed", **TRIAL_ROLES)
    assert all("start" in state["atrial_fib"] for state in main.chain_states)
    assert fit_starts(main.chain_states)[0] == {"atrial_fib": {"start": main.chain_states[0]["atrial_fib"]["start"]}}
    common = dict(focus="atrial_fib", methods={"multilevel": ("multilevel", {"higher_effects": "fixed"})},
                  backgrounds={"multilevel": main.completed}, max_clusters=4, m=4, seed=3, **TRIAL_ROLES)
    cold = transport_check_frame(frame, **common)
    fits = []
    real = kernels.fit_ri_logistic

    def spy(*args, **kwargs):
        fit = real(*args, **kwargs)
        fits.append(fit.warm)
        return fit

    monkeypatch.setattr(kernels, "fit_ri_logistic", spy)
    warm = transport_check_frame(frame, background_states={"multilevel": main.chain_states}, **common)
    assert len(cold.table) == 4 and fits == [True] * 4
    pd.testing.assert_frame_equal(cold.table, warm.table, check_exact=False, rtol=1e-9, atol=1e-9)
