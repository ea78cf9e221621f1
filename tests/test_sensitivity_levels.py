"""Step 5 with levels above the cluster (params ``higher_levels``): exclusion and leave-out at each level.

Test IDs
--------
SENS-LEVEL-001  the plan: besides the cluster-level scenarios, exclusion at each threshold and leave-out of the
                best-documented units (at most HIGHER_LEAVE_OUT) at each higher level; no new scenario without
                higher levels
SENS-LEVEL-002  a country-level exclusion and a country leave-out drop exactly the hospitals of those countries
                (excluded_clusters, patient counts), re-impute and re-analyse with sd(country) rows
"""

from __future__ import annotations

import pandas as pd
import pytest

from hmlib.simulate.scale import TRIAL_PARAMS
from test_nested_analysis import nested_trial


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from hmlib.data import load_registry
    from hmlib.params import load_params

    folder = tmp_path_factory.mktemp("sens_levels")
    nested_trial().to_csv(folder / "data.csv", index=False)
    (folder / "p.yaml").write_text(TRIAL_PARAMS.format(name="t", data="data.csv", truth="none")
                                   .replace("truth: none\n", ""))
    return load_registry(load_params(folder / "p.yaml", fast=True))


def test_sens_level_001_plan(registry):
    """SENS-LEVEL-001: scenarios at the country level beside the hospital level's."""
    import dataclasses

    from hmlib.steps.sensitivity_scenarios import (HIGHER_LEAVE_OUT, SensitivitySettings, best_documented_clusters,
                                                   plan_scenarios)

    settings = SensitivitySettings(families=("exclusion", "leave-out"))
    names = [s.name for s in plan_scenarios(registry, settings)]
    assert [n for n in names if n.startswith("exclude")] == [
        "exclude-missing>20%", "exclude-missing>40%", "exclude-missing>60%",
        "exclude-missing>20%:country", "exclude-missing>40%:country", "exclude-missing>60%:country"]
    countries = best_documented_clusters(registry.frame, "country", registry.params.focus, HIGHER_LEAVE_OUT)
    assert [n for n in names if n.startswith("leave-out:country=")] == [f"leave-out:country={c}" for c in countries]
    assert len([n for n in names if n.startswith("leave-out:") and "=" not in n]) == settings.n_influential
    flat = dataclasses.replace(registry, params=registry.params.with_overrides(higher_levels=()))
    assert not any("country" in s.name for s in plan_scenarios(flat, settings))


def test_sens_level_002_country_scenarios_run(registry):
    """SENS-LEVEL-002: the country scenarios drop whole countries and re-analyse the nested model."""
    from hmlib.steps.sensitivity import run_sensitivity
    from hmlib.steps.sensitivity_scenarios import SensitivitySettings, clusters_above_threshold

    frame, p = registry.frame, registry.params
    settings = SensitivitySettings(families=("exclusion", "leave-out"), exclusion_thresholds=(0.1,),
                                   n_influential=1)
    result = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    table = result.scenarios.set_index("scenario")
    excluded_countries = clusters_above_threshold(frame, "country", p.focus, 0.1)
    assert excluded_countries, "the check needs a country above the threshold"
    hospitals = sorted(frame.loc[frame["country"].isin(excluded_countries), "hospital"].unique(), key=str)
    row = table.loc["exclude-missing>10%:country"]
    assert row["status"] == "ok"
    assert sorted(row["excluded_clusters"], key=str) == hospitals
    assert row["n_patients_excluded"] == int(frame["country"].isin(excluded_countries).sum())
    leave = [name for name in table.index if name.startswith("leave-out:country=")]
    assert len(leave) == 1
    country = leave[0].split("=", 1)[1]
    assert sorted(table.loc[leave[0], "excluded_clusters"], key=str) == sorted(
        frame.loc[frame["country"] == country, "hospital"].unique(), key=str)
    rows = result.estimates
    for name in ("exclude-missing>10%:country", leave[0]):
        terms = rows.loc[rows["method"].str.endswith(name), "term"].tolist()
        assert "sd(country)" in terms and "sd(hospital)" in terms, name
