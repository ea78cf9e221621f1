"""Step 2 by level above the cluster (params ``higher_levels``, issue #15): retention and estimand shift by unit.

The statistics are :func:`hmlib.stats.complete_case.retention_by_unit` and
:func:`~hmlib.stats.complete_case.standardized_differences_by`; what is
published (suppression consistent across levels, the records, the sentences)
is in :mod:`hmlib.steps.complete_case_levels`.

Test IDs
--------
CC-LEVEL-001  retention by unit, by hand: patients, complete cases, clusters and clusters lost per country add up
CC-LEVEL-002  a country whose every patient misses the outcome is reported lost (result, narrative, artifact)
CC-LEVEL-003  suppression across levels: small counts hidden, and no hidden count recoverable by subtraction from
              a row, a column total, or the sum of the cells of the level below
CC-LEVEL-004  a unit size that would give back a cluster size step 1 hides is hidden
CC-LEVEL-005  without higher levels step 2's result is exactly the previous one (by_level empty)
CC-LEVEL-006  the shift table by unit equals standardized_differences on that unit's subset; small units and units
              with a hidden count are suppressed, a lost unit has no SMD; the sentences name the lost unit and
              the unit whose outcome or focus shifts most (or say none shifts)
CC-LEVEL-007  two nested levels in either order: outermost first, the region table consistent with the country's
CC-LEVEL-008  the artifact (version 2) round-trips with its by_level records; the methods text names the levels
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.privacy import SUPPRESSED_LABEL
from hmlib.simulate.registries import small_registry
from hmlib.simulate.scale import TRIAL_PARAMS, trial_registry
from hmlib.stats.complete_case import (complete_case_mask, retention_by_cluster, retention_by_unit,
                                       standardized_differences, standardized_differences_by)
from hmlib.steps.complete_case import CompleteCaseArtifact, complete_case_check, methods_text
from hmlib.steps.complete_case_levels import (LevelCheck, published_retention, retention_hidden_by_step1, suppressed_retention,
                                              suppressed_shift)

COUNTS = ["n_all", "n_complete", "n_dropped"]


def _trial(tmp_path, frame=None, **changes):
    """Step 2 on a trial-shaped registry (hospitals in countries), 3,000 patients in 60 hospitals in 8 countries."""
    frame = trial_registry(7, n_patients=3000, n_hospitals=60, n_countries=8) if frame is None else frame
    frame.to_csv(tmp_path / "data.csv", index=False)
    params = yaml.safe_load(TRIAL_PARAMS.format(name="t", data="data.csv", truth="none"))
    params.pop("truth")
    params.update(changes)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    return load_registry(load_params(tmp_path / "p.yaml"))


def test_cc_level_001_retention_by_unit_hand_computed():
    """CC-LEVEL-001: per country, by hand: X has sites A (2 of 3 complete) and B (none of 2), Y has C (1 of 1);
    counts, clusters and clusters lost, and the sums over countries equal the cluster table's."""
    frame = pd.DataFrame({"country": list("XXXXXY"), "site": list("AAABBC")})
    complete = np.array([1, 1, 0, 0, 0, 1], bool)
    t = retention_by_unit(frame, "country", "site", complete).set_index("country")
    assert t.loc["X", COUNTS].tolist() == [5, 2, 3] and t.loc["Y", COUNTS].tolist() == [1, 1, 0]
    assert t.loc["X", ["n_clusters", "n_clusters_lost"]].tolist() == [2, 1]
    assert t.loc["Y", ["n_clusters", "n_clusters_lost"]].tolist() == [1, 0]
    assert t["retained"].to_dict() == pytest.approx({"X": 0.4, "Y": 1.0})
    assert t["share_after"].to_dict() == pytest.approx({"X": 2 / 3, "Y": 1 / 3})
    assert not t["lost"].any()
    clusters = retention_by_cluster(frame, "site", complete)
    assert t[COUNTS].sum().tolist() == clusters[COUNTS].sum().tolist()
    assert t["n_clusters_lost"].sum() == clusters["lost"].sum()


def test_cc_level_002_country_without_outcome_is_lost(tmp_path):
    """CC-LEVEL-002: every patient of one country misses the outcome: the country is lost with all its hospitals,
    named in the narrative ("1 of 8 countries have no complete case: ...") and in the artifact."""
    frame = trial_registry(7, n_patients=3000, n_hospitals=60, n_countries=8)
    columns = ["dead_or_dependent", "age", "sex", "sbp", "conscious", "stroke_type", "aspirin", "atrial_fib"]
    already = frame.assign(cc=complete_case_mask(frame, columns)).groupby("country")["cc"].any()
    gone = already.index[already][0]  # a country with complete cases, until its outcomes go missing
    frame.loc[frame["country"] == gone, "dead_or_dependent"] = np.nan
    expected = sorted([*already.index[~already], gone])
    result = complete_case_check(_trial(tmp_path, frame))
    (check,) = result.by_level
    assert check.level == "country" and sorted(check.units_lost) == expected
    row = check.retention.set_index("country").loc[gone]
    assert row["n_complete"] == 0 and bool(row["lost"])
    assert row["n_clusters_lost"] == row["n_clusters"] == frame.loc[frame["country"] == gone, "hospital"].nunique()
    sentence = next(s for s in result.narrative() if "have no complete case" in s)
    assert sentence.startswith(f"{len(expected)} of 8 countries have no complete case: ")
    assert gone in sentence and sentence.endswith("; the complete-case analysis says nothing about them.")
    assert set(result.to_artifact().by_level[0].units_lost) == set(expected)


def _random_nested(rng, n_countries):
    """Countries of 1-6 sites of 1-60 patients, complete with a site-specific probability."""
    countries, sites, complete = [], [], []
    k = 0
    for c in range(n_countries):
        for _ in range(rng.integers(1, 7)):
            size = int(rng.integers(1, 61))
            countries += [f"C{c}"] * size
            sites += [f"S{k:02d}"] * size
            complete += list(rng.random(size) < rng.choice([0.0, 0.5, 0.9, 1.0]))
            k += 1
    return pd.DataFrame({"country": countries, "site": sites}), np.array(complete, bool)


def _hidden(table):
    return table[COUNTS] == SUPPRESSED_LABEL


def test_cc_level_003_suppression_consistent_across_levels():
    """CC-LEVEL-003: in the country and the site table, every count from 1 to 10 is hidden; no row has a single
    hidden count (n_all = n_complete + n_dropped), no column a single one (column total); a country count hidden
    is not the sum of its sites' shown counts, and a country count shown leaves its sites' hidden counts
    protected (two or more, summing to at least 10 more than one per other hidden cell)."""
    rng = np.random.default_rng(15)
    min_cell = 11
    checked = 0
    for _ in range(40):
        frame, complete = _random_nested(rng, int(rng.integers(3, 9)))
        clusters = retention_by_cluster(frame, "site", complete)
        units = {"country": retention_by_unit(frame, "country", "site", complete)}
        cluster_units = frame.groupby("site")[["country"]].first().reindex(clusters["cluster"]).set_axis(clusters.index)
        shown_sites, shown = published_retention(clusters, units, cluster_units, min_cell)
        countries = shown["country"].set_index(units["country"]["country"])
        for raw, table in ((clusters, shown_sites), (units["country"], shown["country"])):
            hidden = _hidden(table)
            values = raw[COUNTS]
            assert hidden.to_numpy()[((values >= 1) & (values < min_cell)).to_numpy()].all()
            assert not (hidden.sum(axis=1) == 1).any()
            assert not (hidden.sum(axis=0) == 1).any()
        site_hidden = _hidden(shown_sites).set_axis(clusters["cluster"])
        site_values = clusters.set_index("cluster")[COUNTS]
        of_country = cluster_units["country"].set_axis(clusters["cluster"])
        for country in countries.index:
            sites = of_country.index[of_country == country]
            for column in COUNTS:
                h = site_hidden.loc[sites, column]
                if countries.loc[country, column] == SUPPRESSED_LABEL:
                    assert h.any() or site_values.loc[sites, column].sum() == 0, (country, column)
                    checked += 1
                elif h.any():
                    s = site_values.loc[sites, column][h].sum()
                    assert h.sum() >= 2 and s - (h.sum() - 1) >= min_cell, (country, column)
    assert checked > 20  # the rule about hidden country counts was exercised


def test_cc_level_004_unit_size_hides_step1_cluster_size():
    """CC-LEVEL-004: a country with one site whose size step 1 hides (given ``hidden=``) gets its own size
    hidden: else the country size less its other sites' published sizes gives it back."""
    frame = pd.DataFrame({"country": ["X"] * 70 + ["Y"] * 80 + ["Z"] * 90,
                          "site": ["A"] * 40 + ["B"] * 30 + ["C"] * 50 + ["D"] * 30 + ["E"] * 90})
    complete = np.ones(len(frame), bool)
    complete[:20] = complete[70:90] = complete[150:170] = False
    clusters = retention_by_cluster(frame, "site", complete)
    units = {"country": retention_by_unit(frame, "country", "site", complete)}
    cluster_units = frame.groupby("site")[["country"]].first().reindex(clusters["cluster"]).set_axis(clusters.index)
    step1 = pd.DataFrame({"n_all": clusters["cluster"] == "B", "n_dropped": False}, index=clusters.index)
    _, without = published_retention(clusters, units, cluster_units, 11)
    assert not _hidden(without["country"]).any().any()  # nothing small: nothing hidden
    sites, shown = published_retention(clusters, units, cluster_units, 11, hidden=step1)
    by_country = shown["country"].set_index(units["country"]["country"])
    assert by_country.loc["X", "n_all"] == SUPPRESSED_LABEL
    assert sites.set_index("cluster").loc["B", "n_all"] == SUPPRESSED_LABEL
    assert not (_hidden(shown["country"]).sum(axis=0) == 1).any()


def _small(tmp_path, **params):
    frame = small_registry()
    frame.loc[frame["site"] == "S05", "lab"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = {"name": "t", "data": "d.csv", "cluster": "site", "outcome": "died", "outcome_family": "binomial",
            "predictors": ["age", "sex", "lab"], **params}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    return load_registry(load_params(tmp_path / "p.yaml"))


#: The fields of step 2's record before issue #15 (artifact version 1).
PREVIOUS_FIELDS = {"n_all", "n_complete", "n_clusters", "n_clusters_lost", "clusters_lost", "outcome_all",
                   "outcome_complete_cases", "retention", "shift", "shift_by_type", "indicator_by_cluster",
                   "narrative", "notes", "flow", "focus_levels", "indicator_term"}


def test_cc_level_005_no_higher_levels_unchanged(tmp_path):
    """CC-LEVEL-005: without higher levels the record has exactly the previous fields plus an empty by_level, the
    cluster table is suppressed as before (suppressed_retention with step 1's cells), and no sentence speaks of
    higher units. (The whole to_dict of this registry was compared with the previous version's when by_level
    was added: equal.)"""
    registry = _small(tmp_path, cluster_covariates=["site_type"])
    result = complete_case_check(registry)
    record = result.to_dict()
    assert set(record) == PREVIOUS_FIELDS | {"by_level", "over_time"} and record["by_level"] == [] \
        and record["over_time"] is None
    assert result.by_level == ()
    expected = suppressed_retention(result.retention, result.min_cell,
                                    hidden=retention_hidden_by_step1(registry, result.retention))
    pd.testing.assert_frame_equal(result.retention_display, expected)
    assert not any("no complete case:" in s or "Within " in s for s in result.narrative())
    assert published_retention(result.retention, {}, pd.DataFrame(index=result.retention.index),
                               result.min_cell)[1] == {}


def test_cc_level_006_shift_by_unit_equals_subset_and_is_suppressed():
    """CC-LEVEL-006: each unit's rows of standardized_differences_by equal standardized_differences on the unit's
    rows; a unit with 3 dropped patients, one whose count the retention table hides, and a unit with no complete
    case (values and SMD shown as missing, not 0) are published as the rule says."""
    rng = np.random.default_rng(6)
    n = [60, 50, 40, 30]
    frame = pd.DataFrame({"country": np.repeat(list("WXYZ"), n), "x": rng.normal(size=sum(n)),
                          "g": rng.choice(["a", "b"], size=sum(n)), "y": rng.integers(0, 2, size=sum(n))})
    frame.loc[frame.index[:20], "x"] = np.nan          # W: 20 of 60 dropped
    frame.loc[frame.index[60:63], "x"] = np.nan        # X: 3 dropped
    frame.loc[frame.index[110:150], "y"] = np.nan      # Y: all 40 dropped: lost
    frame.loc[frame.index[150:165], "g"] = np.nan      # Z: 15 of 30 dropped
    kinds = {"x": "numeric", "g": "categorical", "y": "numeric"}
    complete = complete_case_mask(frame, ["y", "x", "g"])
    by = standardized_differences_by(frame, complete, ["y", "x", "g"], kinds, "country", binary_outcome="y")
    for country, sub in frame.groupby("country"):
        alone = standardized_differences(sub, complete[frame["country"] == country], ["y", "x", "g"], kinds,
                                         binary_outcome="y")
        pd.testing.assert_frame_equal(by.loc[by["country"] == country].drop(columns="country")
                                      .reset_index(drop=True), alone)
    retention = retention_by_unit(frame.assign(site=frame["country"]), "country", "site", complete)
    display = retention.copy()
    display[COUNTS] = display[COUNTS].astype(object)
    display.loc[display["country"] == "Z", "n_complete"] = SUPPRESSED_LABEL
    shown = suppressed_shift(by, retention, "country", 11, display)
    hidden = (shown[["all_patients", "complete_cases", "smd"]] == SUPPRESSED_LABEL).all(axis=1)
    assert hidden.groupby(shown["country"]).all().to_dict() == {"W": False, "X": True, "Y": False, "Z": True}
    lost = shown.loc[shown["country"] == "Y"]
    assert lost["smd"].isna().all() and lost["complete_cases"].isna().all()
    assert lost.loc[lost["variable"] != "y", "all_patients"].notna().all()  # every patient of Y misses y
    # the unpublished table states a number there (0, or a negative SMD for a level no complete case "has")
    assert by.loc[by["country"] == "Y", "smd"].notna().all()
    check = LevelCheck(level="country", retention=retention, retention_display=display, shift=by, shift_display=shown,
                       min_cell=11)
    largest = by.loc[(by["country"] == "W") & by["variable"].isin(["y", "x"])].set_index("variable")["smd"].abs()
    sentences = check.sentences("y", "x")
    assert sentences[0] == ("1 of 4 countries have no complete case: Y; the complete-case analysis says nothing "
                            "about them.")
    assert sentences[1].startswith(f"Within countries, {largest.idxmax()} shifts most in country W: ")
    still = LevelCheck(level="country", retention=retention, retention_display=display, shift=by,
                       shift_display=shown.assign(smd=shown["smd"].where(shown["smd"] == SUPPRESSED_LABEL, 0.0)),
                       min_cell=11)
    assert still.sentences("y", "x")[1] == ("Within the countries shown, neither y nor x shifts among complete "
                                            "cases (every SMD rounds to 0.00).")


def test_cc_level_007_two_levels_outermost_first(tmp_path):
    """CC-LEVEL-007: with higher_levels [region, country] (regions in countries) step 2 reports country first, then
    region; a country count the country table hides is not the sum of its regions' shown counts."""
    frame = trial_registry(7, n_patients=3000, n_hospitals=60, n_countries=8)
    number = frame["hospital"].str[1:].astype(int)
    frame["region"] = frame["country"] + np.where(number % 2 == 0, "-a", "-b")
    result = complete_case_check(_trial(tmp_path, frame, higher_levels=["region", "country"]))
    assert [c.level for c in result.by_level] == ["country", "region"]
    country, region = result.by_level
    of_region = frame.groupby("region")["country"].first()
    regions = region.retention_display.set_axis(region.retention["region"])
    parents = of_region.reindex(regions.index).to_numpy()
    checked = 0
    for label, row in country.retention_display.set_axis(country.retention["country"]).iterrows():
        for column in COUNTS:
            if row[column] == SUPPRESSED_LABEL:
                below = regions.loc[parents == label, column]
                raw = region.retention.set_axis(regions.index).loc[parents == label, column]
                assert (below == SUPPRESSED_LABEL).any() or raw.sum() == 0, (label, column)
                checked += 1
    assert checked  # some country count is hidden in this registry
    assert result.retention_display.shape == result.retention.shape


def test_cc_level_008_artifact_round_trip_and_methods(tmp_path):
    """CC-LEVEL-008: the version-2 artifact of a registry with a country level reads back equal, with one by_level
    record (the published tables, no patient row: no unsuppressed count from 1 to 10); the methods text names
    the level."""
    result = complete_case_check(_trial(tmp_path))
    artifact = result.to_artifact()
    artifact.write(tmp_path / "out")
    payload = json.loads((tmp_path / "out" / "artifacts" / "complete_case.json").read_text())
    assert payload["version"] == CompleteCaseArtifact.VERSION == 3   # 3: over_time (tests/test_complete_case_time.py)
    back = CompleteCaseArtifact.read(tmp_path / "out")
    assert back == artifact
    (level,) = back.by_level
    assert level.level == "country" and level.n_units == 8
    assert [r["country"] for r in level.retention] == result.by_level[0].retention["country"].astype(str).tolist()
    for row in level.retention:
        for column in COUNTS:
            assert not (isinstance(row[column], int) and 0 < row[column] < 11), row
    text = methods_text(back, SimpleNamespace(min_cell=11))[0]
    assert "within each unit of country" in text
