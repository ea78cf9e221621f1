"""Step 1 by higher unit (params ``higher_levels``, issue #15): the heatmap and funnels by country.

What is published is in :mod:`hmlib.steps.diagnose_units`; the small-cell rules across levels in
:mod:`hmlib.privacy_levels` (shared with step 2's retention tables).

Test IDs
--------
DIAG-UNIT-001  exposed_by_totals by hand: a unit with one hidden member cell, or hidden cells summing to too little,
               must not show its total; two hidden cells with enough between them may
DIAG-UNIT-002  suppress_unit_counts by hand: a country's count that would give back its one hidden hospital cell
               is hidden, and the complement protecting it is a country that hides a hospital count, never one
               whose hospitals are all shown (hiding that would protect nothing)
DIAG-UNIT-003  no subtraction across levels, on 60 random registries (countries of 1-6 hospitals of 1-60
               patients, two incomplete variables): every country count from 1 to 10 is hidden; a country count
               shown (or derived from a shown share and size, or from the row n = missing + recorded) leaves its
               hospitals' hidden counts protected (two or more, their sum at least 10 more than one per other);
               the hidden hospital counts inside the countries whose count is not known are protected against
               the published total; a small country count cannot be derived from its row, its hospitals or the
               column total
DIAG-UNIT-004  the funnel by country: each country's share against its patients, the limits exact binomial around
               the overall rate (the clusters' funnel code with the country as the grouping), by hand
DIAG-UNIT-005  step 1 with higher_levels: the heatmap and funnels by country in the result, the artifact (version 4,
               round trip), the figures (``by_level``, caption keys of their own, outside the
               clusters' ``funnel-`` group), the narrative and the methods; the
               by-hospital tables are those of the run without higher levels
DIAG-UNIT-006  without higher_levels nothing changes: no by_unit, no by_level figure, no sentence, no methods
               sentence, the record's other fields those of version 3
DIAG-UNIT-007  two higher levels (hospital in region in country): both levels, outermost first; a country count
               shown leaves its regions' hidden counts protected
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmlib.privacy import SUPPRESSED_LABEL
from hmlib.privacy_levels import exposed_by_totals, suppress_unit_counts
from hmlib.stats.missingness import binomial_control_limits, missingness_overview
from hmlib.steps.diagnose_tables import publish_overview, publish_tables
from hmlib.steps.diagnose_units import missingness_by_unit

MIN_CELL = 11


def test_diag_unit_001_exposed_by_totals_by_hand():
    """DIAG-UNIT-001: X has one hidden site (exposed); Y two hidden summing to 8 (8 - 1 < 11: exposed); Z two
    hidden summing to 30 (protected); W none hidden."""
    units = pd.Series(["X", "X", "Y", "Y", "Y", "Z", "Z", "W"])
    values = pd.DataFrame({"m": [40, 30, 3, 5, 50, 12, 18, 7]})
    hidden = pd.DataFrame({"m": [True, False, True, True, False, True, True, False]})
    exposed = exposed_by_totals(units, values, hidden, MIN_CELL)["m"]
    assert exposed.to_dict() == {"W": False, "X": True, "Y": True, "Z": False}


def test_diag_unit_002_complements_hide_something():
    """DIAG-UNIT-002: hospitals' missing counts m (n = m + o) in countries A, B, C, D; A's hospital a1 has its
    m and o hidden (and only it): A's m and o would give them back, so both are hidden. The column totals then
    need a second hidden country in each column: B's hospitals are all shown (hiding B's count protects
    nothing), so the complement is C or D, whose counts hide hospital counts of their own."""
    members = pd.DataFrame({"m": [5, 40, 20, 25, 12, 15, 30, 30], "o": [20, 60, 80, 75, 13, 14, 70, 70]},
                           index=["a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2"])
    members["n"] = members["m"] + members["o"]
    hidden = pd.DataFrame(False, index=members.index, columns=["m", "o", "n"])
    hidden.loc[["a1", "c1", "c2"], ["m", "o"]] = True
    units = pd.Series(["A", "A", "B", "B", "C", "C", "D", "D"], index=members.index)
    res = suppress_unit_counts(members, hidden, units, ["m", "o"], MIN_CELL, total_column="n", parts=[["m", "o"]])
    mask = res.table.mask
    assert mask.loc["A", "m"] and mask.loc["A", "o"]
    assert res.public.loc["B"].all() and not res.public.loc["C", "m"]
    for column in ("m", "o"):
        effective = mask[column] & ~res.public[column]
        assert effective.sum() >= 2, column
        atoms = members.loc[hidden[column] & units.isin(effective.index[effective]).to_numpy(), column]
        assert len(atoms) >= 2 and atoms.sum() - (len(atoms) - 1) >= MIN_CELL
    assert res.failed == ()


def _random_nested(rng, n_countries: int) -> pd.DataFrame:
    """Countries of 1-6 hospitals of 1-60 patients; x missing with a hospital-specific probability (some never),
    y rarely."""
    rows = []
    k = 0
    for c in range(n_countries):
        for _ in range(rng.integers(1, 7)):
            size = int(rng.integers(1, 61))
            p = rng.choice([0.0, 0.05, 0.3, 1.0])
            for _ in range(size):
                rows.append({"country": f"C{c}", "hospital": f"H{k:02d}", "outcome": rng.normal(),
                             "x": np.nan if rng.random() < p else rng.normal(),
                             "y": np.nan if rng.random() < 0.04 else rng.normal()})
            k += 1
    return pd.DataFrame(rows)


def _published(frame, higher_levels=("country",)):
    """Step 1's cluster tables and tables by unit, without the models (the publication is what is tested)."""
    variables = ["outcome", "x", "y"]
    overview_raw = missingness_overview(frame, variables, "hospital")
    incomplete = [v for v, k in zip(variables, overview_raw["n_missing"]) if k > 0]
    overview = publish_overview(overview_raw, MIN_CELL)
    names = {h: h for h in frame["hospital"].unique()}
    tables = publish_tables(frame, incomplete, "hospital", overview=overview, min_cell=MIN_CELL,
                            structural_share=0.9, level=0.95, names=names, cluster_noun="hospital")
    broken_down = [v for v in tables.modelled(incomplete) if v not in tables.no_breakdown]
    by_unit = missingness_by_unit(frame, tables.hidden, broken_down, "hospital", list(higher_levels),
                                  min_cell=MIN_CELL, notes=[])
    return tables, by_unit, broken_down


def _known_units(res, var) -> pd.DataFrame:
    """What a reader knows of each country's counts of ``var``: n, missing, recorded (NaN: not known), from the
    funnel table (n, n_missing, rate) and the heatmap's share, closed under n = missing + recorded."""
    table = res.funnels[var].table.set_index("cluster")
    n = table["n"].astype(float)
    m = table["n_missing"].astype(float)
    share = res.heatmap[var].reindex(table.index).astype(float)
    m = m.fillna((share * n).round())
    o = n - m
    return pd.DataFrame({"n": n, "m": m, "o": o})


def _known_hospitals(tables, var) -> pd.DataFrame:
    rows = tables.by_cluster.values
    rows = rows.loc[rows["variable"] == var].set_index("cluster")
    n, m, o = (rows[c].astype(float) for c in ("n", "n_missing", "n_observed"))
    m = m.fillna((rows["share_missing"].astype(float) * n).round())
    return pd.DataFrame({"n": n, "m": m.fillna(n - o), "o": o.fillna(n - m)})


def _check_protected(cells: pd.Series, where) -> None:
    if len(cells):
        assert len(cells) >= 2 and cells.sum() - (len(cells) - 1) >= MIN_CELL, where


def _close(known_c: pd.DataFrame, known_h: pd.DataFrame, truth_h: pd.DataFrame, country_of: pd.Series) -> pd.DataFrame:
    """Every country count a reader can derive: shown, the sum of its hospitals when all are known, the row
    n = missing + recorded, and the published column total less the other countries."""
    known = known_c.copy()
    totals = truth_h.sum()
    while True:
        before = known.notna().to_numpy().sum()
        for column in ("n", "m", "o"):
            all_known = known_h[column].notna().groupby(country_of).all()
            sums = known_h[column].groupby(country_of).sum()
            known[column] = known[column].fillna(sums.where(all_known))
        known["n"] = known["n"].fillna(known["m"] + known["o"])
        known["m"] = known["m"].fillna(known["n"] - known["o"])
        known["o"] = known["o"].fillna(known["n"] - known["m"])
        for column in ("n", "m", "o"):
            if known[column].isna().sum() == 1:
                known[column] = known[column].fillna(totals[column] - known[column].sum())
        if known.notna().to_numpy().sum() == before:
            return known


def test_diag_unit_003_no_hospital_cell_recovered_by_subtraction():
    """DIAG-UNIT-003: (module docstring) on 60 random registries."""
    rng = np.random.default_rng(2026)
    exercised = {"shown_with_hidden": 0, "small_country": 0}
    for _ in range(60):
        frame = _random_nested(rng, int(rng.integers(3, 10)))
        tables, by_unit, variables = _published(frame)
        if not variables:
            continue
        res = by_unit["country"]
        country_of = frame.groupby("hospital")["country"].first()
        for var in res.variables:
            truth_h = frame.assign(m=frame[var].isna()).groupby("hospital").agg(n=("m", "size"), m=("m", "sum"))
            truth_h["o"] = truth_h["n"] - truth_h["m"]
            truth_c = truth_h.groupby(country_of).sum()
            known_h = _known_hospitals(tables, var).reindex(truth_h.index)
            shown_c = _known_units(res, var).reindex(truth_c.index)
            for column in ("n", "m", "o"):  # what is shown is true
                ok = shown_c[column].notna()
                assert (shown_c.loc[ok, column] == truth_c.loc[ok, column]).all()
            known_c = _close(shown_c, known_h, truth_h, country_of)
            for column in ("n", "m", "o"):
                hidden_h = known_h[column].isna()
                known = known_c[column].notna()
                small = (truth_c[column] >= 1) & (truth_c[column] < MIN_CELL)
                assert not (small & known).any(), (var, column)
                exercised["small_country"] += int(small.sum())
                for country in truth_c.index[known.to_numpy()]:
                    inside = country_of.index[(country_of == country).to_numpy()]
                    atoms = truth_h.loc[inside, column][hidden_h.loc[inside]]
                    _check_protected(atoms, (var, column, country))
                    exercised["shown_with_hidden"] += len(atoms) > 0
                # the published total less the known countries: the hidden hospitals inside the others
                unknown = country_of.index[country_of.map(~known).to_numpy(dtype=bool)]
                _check_protected(truth_h.loc[unknown, column][hidden_h.loc[unknown]], (var, column, "total"))
    assert exercised["shown_with_hidden"] > 20 and exercised["small_country"] > 5, exercised


def test_diag_unit_004_funnel_by_country_by_hand():
    """DIAG-UNIT-004: country X (hospitals of 50 and 50 patients, 15 missing in each) and Y (300 and 300, 11
    missing in each): X 30 of 100, Y 22 of 600, overall 52 of 700; the limits are binomial_control_limits at each
    country's size; X lies above the 99.8% limits, Y below. No count is small: nothing hidden."""
    frame = pd.DataFrame({"country": ["X"] * 100 + ["Y"] * 600,
                          "hospital": ["A"] * 50 + ["B"] * 50 + ["C"] * 300 + ["D"] * 300, "outcome": 0.0})
    frame["x"] = frame["y"] = 1.0
    frame.loc[list(range(15)) + list(range(50, 65)) + list(range(100, 111)) + list(range(400, 411)), "x"] = np.nan
    tables, by_unit, _ = _published(frame)
    funnel = by_unit["country"].funnels["x"]
    table = funnel.table.set_index("cluster")
    assert funnel.overall_rate == pytest.approx(52 / 700)
    assert table["n"].tolist() == [100, 600] and table["n_missing"].tolist() == [30, 22]
    assert table["rate"].to_numpy() == pytest.approx([0.3, 22 / 600])
    lo, hi = binomial_control_limits(52 / 700, [100, 600], 0.998)
    assert table.loc[["X", "Y"], "upper_99.8"].to_numpy() == pytest.approx(hi)
    assert table.loc[["X", "Y"], "lower_99.8"].to_numpy() == pytest.approx(lo)
    assert funnel.above == ("X",) and funnel.below == ("Y",)
    assert by_unit["country"].heatmap.loc["X", "x"] == pytest.approx(0.3)


# --------------------------------------------------------------------------
# Step 1 with and without higher levels
# --------------------------------------------------------------------------
#: The fields of step 1's record before the tables by unit (artifact version 3).
VERSION_3_FIELDS = {"by_cluster", "cluster_variation", "cluster_variation_without_structural", "focus_levels",
                    "focus_variation_adjusted", "funnels", "gap_summary", "heatmap", "higher_gaps",
                    "incomplete_variables", "input_notices", "level_correlation", "level_variation",
                    "missingness_predictors", "n_clusters", "n_excluded_missing_cluster", "n_patients", "n_rows_read",
                    "narrative", "notes", "outcome_correlation", "overview", "patterns", "settings", "variables"}


def _three_level(**sizes) -> pd.DataFrame:
    from hmlib.simulate.studies import three_level_registry

    return three_level_registry(5, **({"n_countries": 12, "hospitals_per_country": 4, "per_hospital": 25} | sizes))


def _step1(frame, higher_levels):
    from hmlib.steps.diagnose import diagnose

    return diagnose(frame, cluster="hospital", outcome="y", outcome_family="binomial", predictors=["x", "age"],
                    higher_levels=higher_levels, nagq=1)


@pytest.fixture(scope="module")
def with_and_without():
    frame = _three_level()
    return _step1(frame, ["country"]), _step1(frame, ())


def test_diag_unit_005_step1_with_higher_levels(with_and_without):
    """DIAG-UNIT-005: (module docstring)."""
    from hmlib.figures.style import caption_of
    from hmlib.steps.diagnose import DiagnoseArtifact, methods_text

    res, plain = with_and_without
    unit = res.by_unit["country"]
    assert list(res.by_unit) == ["country"] and unit.variables == ("x",) and unit.n_units == 12
    assert len(unit.heatmap) == 12 and list(unit.heatmap.columns) == ["x"]
    never = res.higher_gaps.set_index("variable").loc["x", "structural_units"]
    assert (unit.heatmap.loc[list(never), "x"] == 1.0).all()  # a country that never records x: 100% (no count)
    funnel = unit.funnels["x"]
    assert set(never) <= set(funnel.above) and funnel.overall_rate == res.funnels["x"].overall_rate
    assert DiagnoseArtifact.VERSION == 6  # 5: over_time (params time; tests/test_diagnose_time.py); 6: its profiles
    record = res.to_artifact()
    assert DiagnoseArtifact.from_json(record.to_json()) == record
    assert record.by_unit["country"].funnels["x"].above == funnel.above
    assert record.by_unit["country"].heatmap.clusters == tuple(unit.heatmap.index)
    figures = res.figures()
    assert [caption_of(f)[0] for f in figures["by_level"]] == ["level-heatmap-country", "level-funnel-country-x"]
    assert "countries ordered by the share missing of x" in caption_of(figures["by_level"][0])[1]
    assert any(line.startswith("By country, the share missing of x lies beyond the 99.8% exact binomial limits")
               for line in res.narrative())
    ev = type("Ev", (), {"noun": "hospital"})()
    assert "Heatmaps and funnel plots were also drawn by the units of each level" in methods_text(record, ev)[0]
    # the by-hospital tables do not depend on the levels above
    pd.testing.assert_frame_equal(res.heatmap, plain.heatmap)
    pd.testing.assert_frame_equal(res.by_cluster.display, plain.by_cluster.display)
    pd.testing.assert_frame_equal(res.funnels["x"].table, plain.funnels["x"].table)


def test_diag_unit_006_without_higher_levels_nothing_changes(with_and_without):
    """DIAG-UNIT-006: (module docstring). (The whole artifact and the figures' captions of this registry were
    compared with the previous version's, without higher levels, when by_unit was added: equal.)"""
    from hmlib.figures.style import caption_of
    from hmlib.steps.diagnose import methods_text

    _, plain = with_and_without
    assert plain.by_unit == {}
    figures = plain.figures()
    assert figures["by_level"] == []
    assert [caption_of(f)[0] for f in figures["by_cluster"]] == ["missingness-heatmap", "bars-x", "funnel-x"]
    assert not any(line.startswith("By country") for line in plain.narrative())
    record = plain.to_artifact().to_json()
    assert set(record) == VERSION_3_FIELDS | {"by_unit", "over_time"} and record["by_unit"] == {}
    assert record["over_time"] is None
    ev = type("Ev", (), {"noun": "hospital"})()
    assert "Heatmaps and funnel plots" not in methods_text(plain.to_artifact(), ev)[0]


def test_diag_unit_007_two_higher_levels():
    """DIAG-UNIT-007: hospitals (8 patients each, so many counts hidden) in regions of two hospitals in
    countries: both levels, outermost first; a country count known leaves its regions' unknown counts
    protected (a region is known when shown, or when all its hospitals are)."""
    frame = _three_level(n_countries=16, per_hospital=8)
    number = frame["hospital"].str[1:].astype(int)
    frame["region"] = frame["country"] + "-R" + (number // 2).astype(str)
    tables, by_unit, _ = _published(frame.rename(columns={"y": "outcome"}).assign(y=0.0), ("country", "region"))
    assert list(by_unit) == ["country", "region"]
    hospitals = _known_hospitals(tables, "x")
    region_of = frame.groupby("hospital")["region"].first()
    country_of_region = frame.groupby("region")["country"].first()
    truth = frame.assign(m=frame["x"].isna()).groupby("region").agg(n=("m", "size"), m=("m", "sum"))
    regions = _known_units(by_unit["region"], "x").reindex(truth.index)
    for column in ("n", "m"):
        all_known = hospitals[column].notna().groupby(region_of).all()
        regions[column] = regions[column].fillna(hospitals[column].groupby(region_of).sum().where(all_known))
    countries = _known_units(by_unit["country"], "x")
    checked = 0
    for column in ("n", "m"):
        for country in countries.index[countries[column].notna()]:
            inside = country_of_region.index[country_of_region == country]
            unknown = truth.loc[inside, column][regions.loc[inside, column].isna()]
            _check_protected(unknown, (column, country))
            checked += len(unknown) > 0
    assert checked > 0


def test_diag_unit_008_later_steps_hide_what_step1_hides_by_unit(tmp_path):
    """DIAG-UNIT-008: the decision recorded for the later steps (hmlib.steps.disclosure.hidden_counts) is step 1's
    by unit too, and step 2's retention table by country hides at least the country sizes step 1 hides. In this
    registry (seed 52 of the random generator) step 1 hides country C6's size as a complement, which step 2's own
    rules would show: without step 1's cells by unit the test fails."""
    import yaml

    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.steps.complete_case import complete_case_check
    from hmlib.steps.diagnose import diagnose_registry
    from hmlib.steps.disclosure import hidden_counts

    rng = np.random.default_rng(52)
    frame = _random_nested(rng, 8).assign(outcome=lambda f: (f["outcome"] > 0).astype(float))
    frame["y"] = frame["y"].fillna(0.0)
    frame.to_csv(tmp_path / "d.csv", index=False)
    params = {"name": "t", "data": "d.csv", "cluster": "hospital", "outcome": "outcome",
              "outcome_family": "binomial", "predictors": ["x", "y"], "higher_levels": ["country"]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    registry = load_registry(load_params(tmp_path / "p.yaml"))
    step1 = diagnose_registry(registry).by_unit["country"]
    recorded = hidden_counts(registry)
    assert recorded.unit_sizes["country"] == step1.hidden_units()
    assert recorded.unit_counts["country"] == {"x": step1.hidden_units("x")}
    hidden_sizes = step1.hidden_units()
    assert "C6" in hidden_sizes
    (check,) = complete_case_check(registry).by_level
    shown = check.retention_display.set_index(check.retention["country"].astype(str))
    assert (shown.loc[sorted(hidden_sizes), "n_all"] == SUPPRESSED_LABEL).all()
