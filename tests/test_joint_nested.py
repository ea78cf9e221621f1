"""The joint model with levels above the cluster (params ``higher_levels``): nested random intercepts.

Test IDs
--------
JOINT-NEST-001  the data: each cluster's unit of each level above it, outermost first; a cluster in two units, or
                a level with one unit, is refused with a FitError naming the level
JOINT-NEST-002  the model: every submodel (outcome, missingness, each incomplete predictor) has an SD and unit
                effects per level above; a cluster's total effect is its own plus its units' (evaluated at a
                random point); without higher levels the model's variables are exactly the two-level model's
JOINT-NEST-003  a fit on three-level data: estimates.csv rows sd(country) then sd(hospital); the focus
                coefficient within 3 posterior SDs of the truth; every level's SD in the draws kept for the prior
                scenarios' reweighting
JOINT-NEST-004  who borrows from whom: the partial-pooling table names each hospital's country and that country's
                effect (one value per country, the total effect minus the hospital's own part); a hospital's pooled
                effect lies nearer its country's effect than its own raw estimate does (on average over hospitals
                with observed values); the figure by country and the narrative's nested-pooling sentence are made;
                without higher levels the columns are empty and neither is made
JOINT-NEST-005  centred or not with levels above: the rule's ML fits are nested, so each level's share uses its
                own SD (the missingness of the generator varies by country only: its clusters' share is small and
                non-centred, where a two-level fit's SD, holding the countries' variation, would have said
                centred; the country level's share is large and centred); each share is the formula of the
                module docstring with the nested fit's SDs; an override ``<submodel>@above`` sets the level above,
                a plain one the clusters only; any other suffix, or ``@above`` without higher levels, is refused
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmlib.exceptions import FitError
from hmlib.simulate.studies import three_level_registry, three_level_registry_truth
from hmlib.stats import joint as jm

ROLES = dict(outcome="y", predictors=["x", "age", "z"], cluster="hospital", family="binomial")


def _frame(seed=2, **sizes):
    frame = three_level_registry(seed, **sizes)
    rng = np.random.default_rng(seed)
    frame["z"] = (frame["age"] + rng.normal(size=len(frame)) > 0).astype(float)
    frame.loc[rng.random(len(frame)) < 0.1, "z"] = np.nan
    return frame


def test_joint_nest_001_data():
    """JOINT-NEST-001: parents of the clusters, outermost first; bad nesting refused."""
    frame = _frame(n_countries=6, hospitals_per_country=3, per_hospital=10)
    frame["region"] = frame["country"] + "-" + (frame["hospital"].str[1:].astype(int) % 2).astype(str)
    data = jm.prepare_joint_data(frame, higher_levels=["region", "country"], **ROLES)
    assert [h.name for h in data.higher] == ["country", "region"]
    country = data.higher[0]
    clusters = pd.Series(data.cluster_labels)
    truth = clusters.map(frame.groupby("hospital")["country"].first())
    assert (country.labels[country.parent] == truth.to_numpy()).all()
    bad = frame.copy()
    bad.loc[bad.index[0], "country"] = "K99"          # one patient of H000 in another country
    with pytest.raises(FitError, match="exactly one unit of 'country'"):
        jm.prepare_joint_data(bad, higher_levels=["country"], **ROLES)
    with pytest.raises(FitError, match="has one unit"):
        jm.prepare_joint_data(frame.assign(world="all"), higher_levels=["world"], **ROLES)


def test_joint_nest_002_model():
    """JOINT-NEST-002: SDs and unit effects per submodel; totals are sums; no change without higher levels."""
    import pymc as pm

    frame = _frame(n_countries=6, hospitals_per_country=3, per_hospital=10)
    data = jm.prepare_joint_data(frame, higher_levels=["country"], **ROLES)
    model = jm.build_joint_model(data)
    names = set(model.named_vars)
    for prefix in ("outcome", "miss", "x0", "b0"):
        assert {f"{prefix}_above0_cluster_sd", f"{prefix}_above0", f"{prefix}_cluster"} <= names, prefix
    point = model.initial_point()
    rng = np.random.default_rng(1)
    point = {k: v + rng.normal(scale=0.3, size=np.shape(v)) for k, v in point.items()}
    fn = model.compile_fn([model["outcome_cluster"], model["outcome_within"], model["outcome_above0"]],
                          inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    total, within, above = fn(point)
    np.testing.assert_allclose(total, within + above[data.higher[0].parent], rtol=1e-10)
    assert np.isfinite(model.compile_logp()(point))
    flat = jm.build_joint_model(jm.prepare_joint_data(frame, **ROLES))
    assert not any("above" in n or "within" in n for n in flat.named_vars)


def test_joint_nest_005_parameterisation_by_level():
    """JOINT-NEST-005: each level's share from its own SD of a nested ML fit; overrides per level."""
    from hmlib.stats.joint import parameterisation as rule

    frame = three_level_registry(7, n_countries=12, hospitals_per_country=5, per_hospital=30)
    roles = dict(outcome="y", predictors=["x", "age"], cluster="hospital", family="binomial")
    data = jm.prepare_joint_data(frame, higher_levels=["country"], **roles)
    fits = rule.ml_fits(data)
    choice, shares = rule.choose_parameterisation(data, fits, None)
    miss_fit, rows = fits["missingness"]
    assert len(miss_fit.higher) == 1 and miss_fit.higher[0].sd > 2 * miss_fit.cluster_sd
    assert choice["missingness"] == "noncentred" and choice["missingness@above"] == "centred"
    # the formula, by hand, with the nested fit's own SDs
    rate = data.focus_missing.mean()
    counts = np.bincount(data.codes, minlength=data.n_clusters)
    units = np.bincount(data.higher[0].parent[data.codes], minlength=data.higher[0].n_units)
    for n_j, tau, key in ((counts, miss_fit.cluster_sd, "missingness"),
                          (units, miss_fit.higher[0].sd, "missingness@above")):
        info = n_j * rate * (1 - rate) * tau ** 2
        assert shares[key] == pytest.approx(np.mean(info / (1 + info)), rel=1e-9)
    # a two-level fit's SD holds the countries' variation: it would have called the clusters centred
    flat = rule.ml_fits(jm.prepare_joint_data(frame, **roles))["missingness"][0]
    info = counts * rate * (1 - rate) * flat.cluster_sd ** 2
    assert np.mean(info / (1 + info)) >= rule.CENTRED_SHARE
    forced, _ = rule.choose_parameterisation(data, fits, {"missingness@above": "noncentred",
                                                          "x": "centred"})
    assert forced["missingness@above"] == "noncentred" and forced["missingness"] == "noncentred"
    assert forced["x0"] == "centred" and forced["x0@above"] == choice["x0@above"]
    with pytest.raises(FitError, match="only suffix is '@above'"):
        rule.choose_parameterisation(data, fits, {"outcome@country": "centred"})
    flat_data = jm.prepare_joint_data(frame, **roles)
    with pytest.raises(FitError, match="only suffix is '@above'"):
        rule.choose_parameterisation(flat_data, rule.ml_fits(flat_data), {"outcome@above": "centred"})


@pytest.mark.slow
def test_joint_nest_003_fit():
    """JOINT-NEST-003: rows per level, the focus coefficient near the truth, every SD kept for reweighting."""
    frame = _frame(seed=3, n_countries=16, hospitals_per_country=5, per_hospital=25)
    fit = jm.fit_joint_model(frame, seed=4, higher_levels=["country"], **ROLES)
    rows = fit.to_estimates()
    assert [t for t in rows["term"] if t.startswith("sd(")] == ["sd(country)", "sd(hospital)"]
    x = rows.set_index("term").loc["x"]
    assert abs(x["estimate"] - three_level_registry_truth()["terms"]["x"]) < 3 * x["std_error"]
    assert {"outcome_above0_cluster_sd", "outcome_cluster_sd", "x0_above0_cluster_sd"} <= set(fit.sd_draws)


def test_joint_nest_004_pooling_by_country():
    """JOINT-NEST-004: the pooling table by country, the figure and the sentence (a short run: structure only)."""
    from hmlib.figures.joint_model import pooling_by_unit

    frame = _frame(seed=5, n_countries=8, hospitals_per_country=4, per_hospital=20)
    roles = dict(ROLES, predictors=["z", "age"])      # the binary z is the focus (10% missing)
    fit = jm.fit_joint_model(frame, seed=6, higher_levels=["country"], draws=150, tune=150, chains=2, **roles)
    pooled = fit.partial_pooling()
    assert fit.data.focus == "z" and len(pooled) == 32
    country = frame.groupby("hospital")["country"].first()
    assert (pooled["unit"].to_numpy() == country.loc[pooled["cluster"]].to_numpy()).all()
    assert pooled.groupby("unit")["unit_effect"].nunique().eq(1).all()
    assert pooled["unit_effect"].nunique() == 8
    seen = pooled.loc[pooled["n_observed"] > 0]
    pull = (seen["pooled_effect"] - seen["unit_effect"]).abs().mean()
    own = (seen["raw_effect"] - seen["unit_effect"]).abs().mean()
    assert pull < own
    text = " ".join(fit.narrative())
    assert "Partial pooling is nested: a hospital's z effect is pooled towards its country's" in text
    figure = pooling_by_unit(pooled, focus="z", unit_name="country", min_cell=11, cluster_noun="hospital")
    assert len(figure.axes[0].get_xticklabels()) == 8
    flat_fit = jm.fit_joint_model(frame, seed=6, draws=100, tune=100, chains=2, **roles)
    flat = flat_fit.partial_pooling()
    assert flat["unit"].isna().all() and flat["unit_effect"].isna().all()
    assert "Partial pooling is nested" not in " ".join(flat_fit.narrative())
