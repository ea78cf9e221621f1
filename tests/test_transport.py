"""Transport check: masked clusters imputed from the others.

Test IDs: TRANSPORT-COVER (the prediction-interval coverage core),
TRANSPORT-SUMMARY (bias and its SD units), TRANSPORT-SHIFT (a cluster moved
far from what the others predict is named), TRANSPORT-HOMOG (no cluster is
named in a homogeneous simulation), TRANSPORT-PRIV (small per-cluster counts
suppressed with what is computed from them), TRANSPORT-CAP (the cluster cap
and its note), TRANSPORT-SEED (determinism), TRANSPORT-FAIL (failures kept),
TRANSPORT-BAD (bad input).

The check is :mod:`hmlib.stats.transport`; its publication (TRANSPORT-PRIV) is
the step's (:mod:`hmlib.steps.imputation_transport`).
"""

from __future__ import annotations

import dataclasses

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hmlib.stats import transport as tr
from hmlib.exceptions import DataError
from hmlib.privacy import SUPPRESSED_LABEL
from hmlib.results import to_jsonable
from hmlib.simulate.registries import shifted_cluster_registry
from hmlib.stats.transport import interval_coverage, masked_cluster_summary, transport_check_frame
from hmlib.steps.imputation_transport import publish_transport

ROLES = dict(focus="x", cluster="site", outcome="y", outcome_family="binomial", predictors=["age", "x"])


# ---------------------------------------------------------------------------
def test_transport_cover_001_exact_example():
    """TRANSPORT-COVER-001: |y - dbar| <= t_{m-1} s sqrt(1 + 1/m), checked by hand."""
    draws = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    half = stats.t.ppf(0.975, 2) * 1.0 * np.sqrt(1 + 1 / 3)
    assert interval_coverage([1.0 + half - 1e-9, 2.0 + half + 1e-9], draws).tolist() == [True, False]


def test_transport_cover_002_nominal_with_small_m():
    """TRANSPORT-COVER-002: with exchangeable normal draws the interval keeps its level even at m = 5."""
    rng = np.random.default_rng(1)
    n, m = 40000, 5
    centre = rng.normal(size=n)
    draws = centre + rng.normal(size=(m, n))
    observed = centre + rng.normal(size=n)
    for level in (0.95, 0.8):
        share = interval_coverage(observed, draws, level).mean()
        assert abs(share - level) < 0.01, (level, share)
    # the empirical min-max range of 5 draws would cover only (m - 1) / (m + 1) = 67 %
    assert interval_coverage(observed, draws).mean() > 0.9


def test_transport_cover_003_bad_shapes():
    """TRANSPORT-COVER-003: shapes that do not match and m < 2 are errors."""
    with pytest.raises(ValueError):
        interval_coverage([1.0, 2.0], np.zeros((3, 3)))
    with pytest.raises(ValueError):
        interval_coverage([1.0], np.zeros((1, 1)))


def test_transport_summary_001_bias_in_sd_units():
    """TRANSPORT-SUMMARY-001: bias = mean imputed - mean observed, bias_sd = bias / scale; 0/1 has no coverage."""
    observed = np.array([1.0, 2.0, 3.0])
    draws = np.array([[2.0, 3.0, 4.0], [2.0, 3.0, 4.0], [3.0, 4.0, 5.0]])
    out = masked_cluster_summary(observed, draws, scale=2.0)
    assert out["n_observed"] == 3
    assert out["bias"] == pytest.approx(draws.mean() - 2.0)
    assert out["bias_sd"] == pytest.approx(out["bias"] / 2.0)
    binary = masked_cluster_summary([0.0, 1.0], np.array([[0.0, 1.0], [1.0, 1.0]]), scale=0.5, binary=True)
    assert np.isnan(binary["coverage"]) and binary["bias"] == pytest.approx(0.25)


# ---------------------------------------------------------------------------
def test_transport_shift_001_finds_the_shifted_cluster():
    """TRANSPORT-SHIFT-001: a cluster moved 3 SD away is named, with the right sign.

    Flat imputation names it alone. The multilevel imputation names it too;
    with the engine's cluster-mean predictors it may name other clusters as
    well: with 15 clusters, one of them an outlier, the between-cluster
    coefficients are poorly determined and a masked cluster with unusual
    covariate means is extrapolated far off (a genuine transport failure of
    that model, which is what the check is for). Without cluster means only
    the shifted cluster is named.
    """
    data = shifted_cluster_registry(seed=3, shift=(7, 3.0))
    methods = {"flat_mi": ("flat", {"continuous": "pmm"}), "multilevel_mi": ("multilevel", {}),
               "multilevel_no_means": ("multilevel", {"cluster_means": False})}
    res = transport_check_frame(data, **ROLES, methods=methods, m=12, iterations=4, seed=5)
    assert res.flagged("flat_mi") == ["S07"]
    assert res.flagged("multilevel_no_means") == ["S07"]
    assert "S07" in res.flagged("multilevel_mi")
    for method in methods:
        row = res.table.loc[(res.table["method"] == method) & (res.table["cluster"] == "S07")].iloc[0]
        assert row["bias_sd"] < -1.5  # imputed far below the shifted observed values
        assert "bias" in row["reason"]
        # the pooled model is confidently wrong there: most masked values fall outside their intervals
        assert row["coverage"] < 0.5
    assert any("S07" in s for s in res.narrative())


def test_transport_shift_002_monte_carlo_error_is_not_a_flag():
    """TRANSPORT-SHIFT-002: a bias within t_{m-1, 0.975} Monte Carlo SEs of the threshold does not flag."""
    noisy = masked_cluster_summary(np.zeros(50), np.repeat(np.array([[1.4], [-0.2]]), 50, axis=1), scale=1.0)
    assert noisy["bias_sd"] == pytest.approx(0.6)
    assert noisy["bias_mc_se"] == pytest.approx(np.std([1.4, -0.2], ddof=1) / np.sqrt(2))
    assert abs(noisy["bias_sd"]) - stats.t.ppf(tr.MC_LEVEL, 1) * noisy["bias_mc_se"] < 0.5


def test_transport_shift_003_unstable_imputations_flagged(monkeypatch):
    """TRANSPORT-SHIFT-003: imputations whose cluster level swings by tens of SDs between draws are
    flagged as unstable, although their huge intervals cover everything and their bias drowns in
    Monte Carlo error (what a random-intercept model with cluster means does when it extrapolates
    from 3 clusters)."""
    data = shifted_cluster_registry(seed=10, n_clusters=5, per_cluster=60)
    real = tr.impute
    rng = np.random.default_rng(0)

    def wild(frame, **kwargs):
        result = real(frame, **kwargs)
        if kwargs["iterations"] == 1 and kwargs["method"] == "multilevel":
            masked = frame["x"].isna().to_numpy()
            frames = []
            for done in result.completed:  # one cluster-level offset per draw, SD 50
                done.loc[masked, "x"] = done.loc[masked, "x"] + rng.normal(0, 50)
                frames.append(done)
            # completed data sets are built on access (CompletedData): hand back the altered frames
            result = dataclasses.replace(result, completed=frames)
        return result

    monkeypatch.setattr(tr, "impute", wild)
    res = transport_check_frame(data, **ROLES, m=6, iterations=2, seed=1)
    ml = res.table.loc[res.table["method"] == "multilevel_mi"]
    assert ml["flagged"].all() and ml["reason"].str.contains("unstable").all()
    assert (ml["draw_sd"] > 10).all() and (ml["coverage"] > 0.9).all()
    assert res.flagged("flat_mi") == []


def test_transport_homog_001_no_flags_without_cluster_differences():
    """TRANSPORT-HOMOG-001: in a homogeneous simulation (no cluster effects) no cluster is flagged.

    About 60 observed values per cluster: a cluster mean's noise is ~0.13 SD,
    so |bias| > 0.5 SD would be a 3.8-sigma event; coverage is ~95%.
    """
    data = shifted_cluster_registry(seed=4, cluster_sd=0.0)
    res = transport_check_frame(data, **ROLES, m=8, iterations=4, seed=6)
    assert res.n_checked == 15
    for method in ("flat_mi", "multilevel_mi"):
        assert res.flagged(method) == [], res.table.loc[res.table["flagged"]]
        sub = res.table.loc[res.table["method"] == method]
        assert 0.88 < sub["coverage"].median() <= 1.0
        assert sub["bias_sd"].abs().max() < 0.5
    assert any("every checked cluster is reproduced" in s for s in res.narrative())


# ---------------------------------------------------------------------------
def test_transport_priv_001_small_clusters_suppressed():
    """TRANSPORT-PRIV-001: counts below min_cell are suppressed with their bias and coverage."""
    data = shifted_cluster_registry(seed=5, n_clusters=8, per_cluster=60)
    # cluster S03 keeps only 6 observed values
    rows = np.flatnonzero((data["site"] == "S03").to_numpy() & data["x"].notna().to_numpy())
    data.loc[data.index[rows[6:]], "x"] = np.nan
    res = publish_transport(transport_check_frame(data, **ROLES, m=4, iterations=3, seed=1), min_cell=11)
    internal = res.table.loc[res.table["cluster"] == "S03"]
    assert set(internal["n_observed"]) == {6}
    shown = res.display.loc[res.display["cluster"] == "S03"]
    for col in ("n_observed", "bias", "bias_sd", "coverage"):
        assert (shown[col] == SUPPRESSED_LABEL).all(), col
    # complementary suppression: the total of observed values is published elsewhere, so one more
    # cluster's count is hidden too
    hidden = res.display.drop_duplicates("cluster")["n_observed"].eq(SUPPRESSED_LABEL).sum()
    assert hidden >= 2
    wide = res.wide().set_index("cluster")
    assert wide.loc["S03", "n_observed"] == SUPPRESSED_LABEL
    assert wide.loc["S03", "flat_mi: bias (SD)"] == SUPPRESSED_LABEL
    assert wide.loc["S03", "multilevel_mi: coverage"] == SUPPRESSED_LABEL
    published = json.dumps(to_jsonable(res.to_dict()))
    assert "mean_observed" not in published and "mean_imputed" not in published
    counts = [r["n_observed"] for r in res.to_dict()["table"] if r["n_observed"] != SUPPRESSED_LABEL]
    assert all(c >= 11 for c in counts)


def test_transport_cap_001_largest_clusters_and_note():
    """TRANSPORT-CAP-001: only the clusters with most observed values are checked, and the note says so."""
    data = shifted_cluster_registry(seed=6, n_clusters=10, per_cluster=40)
    counts = data.groupby("site")["x"].count().sort_values(ascending=False, kind="stable")
    res = transport_check_frame(data, **ROLES, m=3, iterations=2, seed=2, max_clusters=4)
    assert res.n_checked == 4 and res.n_eligible == 10
    expected = sorted(counts.index, key=lambda c: (-counts[c], c))[:4]
    assert list(dict.fromkeys(res.table["cluster"])) == expected
    assert any("Only the 4 clusters" in n for n in res.notes)


def test_transport_seed_001_deterministic():
    """TRANSPORT-SEED-001: the same seed gives the same table; another seed another one."""
    data = shifted_cluster_registry(seed=7, n_clusters=5, per_cluster=40)
    a = transport_check_frame(data, **ROLES, m=3, iterations=2, seed=11)
    b = transport_check_frame(data, **ROLES, m=3, iterations=2, seed=11)
    c = transport_check_frame(data, **ROLES, m=3, iterations=2, seed=12)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not np.allclose(a.table["mean_imputed"], c.table["mean_imputed"])


def test_transport_fail_001_failures_are_kept(monkeypatch):
    """TRANSPORT-FAIL-001: a masked imputation that raises is recorded with its reason, not hidden."""
    data = shifted_cluster_registry(seed=8, n_clusters=4, per_cluster=40)
    real = tr.impute

    def flaky(frame, **kwargs):
        masked_s01 = frame.loc[frame["site"] == "S01", "x"].isna().all()
        if kwargs["iterations"] == 1 and kwargs["method"] == "multilevel" and masked_s01:
            raise tr.FitError("no variation")
        return real(frame, **kwargs)

    monkeypatch.setattr(tr, "impute", flaky)
    res = transport_check_frame(data, **ROLES, m=3, iterations=2, seed=1)
    assert res.failures == {("S01", "multilevel_mi"): "FitError: no variation"}
    assert ((res.table["cluster"] == "S01") & (res.table["method"] == "flat_mi")).any()
    assert not ((res.table["cluster"] == "S01") & (res.table["method"] == "multilevel_mi")).any()
    assert any("failed" in s for s in res.narrative())
    assert res.to_dict()["failures"][0]["cluster"] == "S01"


def test_transport_bad_001_input_errors():
    """TRANSPORT-BAD-001: categorical or never-observed focus and m < 2 say what is wrong."""
    data = shifted_cluster_registry(seed=9, n_clusters=4, per_cluster=20)
    with pytest.raises(ValueError, match="m >= 2"):
        transport_check_frame(data, **ROLES, m=1)
    cat = data.assign(x=np.where(data["x"] > 0, "high", "low"))
    with pytest.raises(DataError, match="numeric"):
        transport_check_frame(cat, **ROLES, kinds={"x": "categorical"})
    with pytest.raises(DataError, match="never observed"):
        transport_check_frame(data.assign(x=np.nan), **ROLES)
    # the input frame is never modified
    before = data.copy()
    transport_check_frame(data, **ROLES, m=2, iterations=1, max_clusters=1)
    pd.testing.assert_frame_equal(data, before)
