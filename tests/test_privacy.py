"""Tests of hmlib.privacy: small-cell suppression and cluster pseudonyms.

IDs: PRIV-SUPP-xxx (suppression), PRIV-ATTACK-xxx (recovery attacks),
PRIV-PSEUDO-xxx (pseudonyms).
"""

import json

import numpy as np
import pandas as pd
import pytest

from hmlib.exceptions import DataError, ParamsError
from hmlib.privacy import SUPPRESSED_LABEL, pseudonymize_clusters, suppress_counts


def _by_cluster(n, n_missing):
    n = np.asarray(n)
    n_missing = np.asarray(n_missing)
    return pd.DataFrame({
        "cluster": [f"c{i}" for i in range(len(n))],
        "n": n,
        "n_missing": n_missing,
        "n_observed": n - n_missing,
        "share_missing": n_missing / n,
    })


def test_PRIV_SUPP_001_small_count_and_its_complement_in_the_row():
    """PRIV-SUPP-001: 3 of 40 missing -> n_missing hidden, and n_observed = n - n_missing too."""
    t = _by_cluster([40, 50, 60], [3, 20, 30])
    s = suppress_counts(t, ["n_missing", "n_observed"], 11, total_column="n",
                        derived_columns={"share_missing": ["n_missing", "n"]})
    assert s.primary["n_missing"].tolist() == [True, False, False]
    assert s.mask["n_observed"].tolist() == [True, True, False]
    # the column total of n_missing (53) is public: the next-smallest count (20) goes too
    assert s.mask["n_missing"].tolist() == [True, True, False]
    assert s.mask["share_missing"].tolist() == [True, True, False]
    assert not s.mask["n"].any()
    assert s.display.loc[0, "n_missing"] == SUPPRESSED_LABEL
    assert s.display.loc[2, "n_missing"] == 30
    assert np.isnan(s.values.loc[0, "share_missing"])
    assert s.n_primary == 1
    assert s.n_complementary == 3
    # input untouched
    assert t["n_missing"].tolist() == [3, 20, 30]


def test_PRIV_SUPP_002_zero_is_not_sensitive():
    """PRIV-SUPP-002: a zero count is shown; counts >= min_cell are shown."""
    t = _by_cluster([40, 50], [0, 11])
    s = suppress_counts(t, ["n_missing", "n_observed"], 11, total_column="n")
    assert not s.mask.to_numpy().any()
    assert s.display["n_missing"].tolist() == [0, 11]


def test_PRIV_SUPP_003_min_cell_boundary():
    """PRIV-SUPP-003: 10 is suppressed and 11 is not at min_cell=11; min_cell=5 moves the line."""
    t = pd.DataFrame({"k": [10, 11, 4, 5, 30]})
    s = suppress_counts(t, ["k"], 11, column_totals=False)
    assert s.primary["k"].tolist() == [True, False, True, True, False]
    s5 = suppress_counts(t, ["k"], 5, column_totals=False)
    assert s5.primary["k"].tolist() == [False, False, True, False, False]


def test_PRIV_SUPP_004_small_total_and_column_complement():
    """PRIV-SUPP-004: a cluster of 7 patients: n is small too; another cluster's n is hidden
    so that the published grand total does not give it away."""
    t = _by_cluster([7, 40, 25], [0, 20, 12])
    s = suppress_counts(t, ["n_missing", "n_observed"], 11, total_column="n")
    assert s.primary["n"].tolist() == [True, False, False]
    assert s.primary["n_observed"].tolist() == [True, False, False]
    assert s.mask["n"].tolist() == [True, False, True]  # 25 is the smallest other size
    # 0 missing in the small cluster stays visible
    assert not s.mask.loc[0, "n_missing"]


def test_PRIV_SUPP_005_groups_are_separate_blocks():
    """PRIV-SUPP-005: with group_columns, complements are chosen inside the block."""
    t = pd.DataFrame({"variable": ["a", "a", "b", "b", "b"], "k": [3, 50, 30, 20, 40]})
    s = suppress_counts(t, ["k"], 11, group_columns=["variable"])
    assert s.mask["k"].tolist() == [True, True, False, False, False]


def test_PRIV_SUPP_006_wide_table_with_several_partitions():
    """PRIV-SUPP-006: one row per cluster, n = missing + observed for each of two variables."""
    t = pd.DataFrame({"n": [30, 40, 50], "a_mis": [2, 15, 20], "a_obs": [28, 25, 30],
                      "b_mis": [0, 0, 12], "b_obs": [30, 40, 38]})
    s = suppress_counts(t, ["a_mis", "a_obs", "b_mis", "b_obs"], 11, total_column="n",
                        parts=[["a_mis", "a_obs"], ["b_mis", "b_obs"]])
    assert s.mask["a_mis"].tolist() == [True, True, False]
    assert s.mask["a_obs"].tolist() == [True, True, False]
    assert not s.mask[["n", "b_mis", "b_obs"]].to_numpy().any()


def test_PRIV_SUPP_007_bad_input_is_refused():
    """PRIV-SUPP-007: parts that do not add up, negative or fractional counts, bad min_cell."""
    t = _by_cluster([40, 50], [3, 20])
    bad = t.assign(n_observed=[30, 30])
    with pytest.raises(DataError, match="does not equal"):
        suppress_counts(bad, ["n_missing", "n_observed"], total_column="n")
    with pytest.raises(DataError, match="whole numbers"):
        suppress_counts(t.assign(n_missing=[-1, 2]), ["n_missing"])
    with pytest.raises(DataError, match="not in the table"):
        suppress_counts(t, ["nope"])
    with pytest.raises(ParamsError):
        suppress_counts(t, ["n_missing"], 0)


def test_PRIV_SUPP_008_records_are_json_and_flag_suppressed_fields():
    """PRIV-SUPP-008: to_records gives JSON-ready dicts, None for hidden values, named."""
    t = _by_cluster([40, 50, 60], [3, 20, 30])
    s = suppress_counts(t, ["n_missing", "n_observed"], total_column="n",
                        derived_columns={"share_missing": ["n_missing"]})
    records = s.to_records()
    json.dumps(records)
    assert records[0]["n_missing"] is None
    assert set(records[0]["suppressed"]) == {"n_missing", "n_observed", "share_missing"}
    assert records[2]["n_missing"] == 30 and records[2]["suppressed"] == []


def _recovery_attack(published: np.ndarray, truth: np.ndarray, row_parts, total_col, public_blocks,
                     share=None, share_total=None):
    """Recover hidden cells by subtraction, repeatedly, as an attacker would.

    ``published`` holds NaN for hidden cells. The attacker knows: each row
    relation sum(parts) = total; the column totals of the ``(rows, column)`` blocks in
    ``public_blocks`` (computed from the truth, as if published in another table); and a
    published share
    (count / total) whenever it is shown. Returns the cells recovered.
    """
    known = published.copy()
    recovered = set()
    progress = True
    while progress:
        progress = False
        relations = []
        for r in range(known.shape[0]):
            for part in row_parts:
                relations.append(([(r, c) for c in part], (r, total_col)))
        for rows, c in public_blocks:
            relations.append(([(r, c) for r in rows], float(truth[rows, c].sum())))
        for members, total in relations:
            total_value = total if isinstance(total, float) else known[total]
            cells = list(members) + ([] if isinstance(total, float) else [total])
            unknown = [cell for cell in cells if np.isnan(known[cell])]
            if len(unknown) != 1:
                continue
            cell = unknown[0]
            if cell == total:
                value = sum(known[m] for m in members)
            else:
                value = total_value - sum(known[m] for m in members if m != cell)
            known[cell] = value
            recovered.add(cell)
            progress = True
        if share is not None:
            for r in range(known.shape[0]):
                cell = (r, share_total[0])
                if np.isnan(known[cell]) and not np.isnan(share[r]) and not np.isnan(known[r, share_total[1]]):
                    known[cell] = share[r] * known[r, share_total[1]]
                    recovered.add(cell)
                    progress = True
    return recovered


def test_PRIV_ATTACK_001_no_suppressed_cell_recoverable_in_random_tables():
    """PRIV-ATTACK-001 (property): for 300 random cluster tables, no hidden count can be
    recovered by chained subtraction from row totals, complementary columns, the column
    totals of each block (published elsewhere unless small) or a published share; and along
    every relation with a published total each hidden cell may still be >= min_cell."""
    rng = np.random.default_rng(20240501)
    n_checked_hidden = 0
    n_given_up = 0
    for trial in range(300):
        n_rows = int(rng.integers(1, 12))
        n_groups = int(rng.integers(1, 4))
        n = np.where(rng.random(n_rows) < 0.3, rng.integers(1, 15, n_rows), rng.integers(10, 80, n_rows))
        p = rng.uniform(0, 1, size=n_rows) ** rng.uniform(0.3, 3)
        n_missing = rng.binomial(n, p)
        group = rng.integers(0, n_groups, size=n_rows)
        t = pd.DataFrame({"g": group, "n": n, "n_missing": n_missing,
                          "n_observed": n - n_missing, "share": n_missing / n})
        s = suppress_counts(t, ["n_missing", "n_observed"], 11, total_column="n",
                            group_columns=["g"], derived_columns={"share": ["n_missing", "n"]})
        cols = ["n_missing", "n_observed", "n"]
        truth = t[cols].to_numpy(float)
        published = s.values[cols].to_numpy(float)
        small = (truth >= 1) & (truth < 11)
        assert np.isnan(published[small]).all()
        # block totals as another table would publish them: small ones are suppressed there,
        # and so is the total of a one-row block whose cell is hidden (the cell *is* the total;
        # suppress_counts reports such blocks as unprotectable)
        blocks = [np.flatnonzero(group == g) for g in np.unique(group)]
        public_blocks = [(b, c) for b in blocks for c in range(3)
                         if not 1 <= truth[b, c].sum() < 11
                         and not (len(b) == 1 and np.isnan(published[b[0], c]))]
        for b in blocks:
            if len(b) == 1 and np.isnan(published[b[0], :2]).any():
                assert s.unprotectable
        recovered = _recovery_attack(published, truth, [[0, 1]], 2, public_blocks,
                                     share=s.values["share"].to_numpy(float), share_total=(0, 2))
        assert not recovered, f"trial {trial}: cells {recovered} recovered from\n{t}"
        # protection interval along each relation with a published total
        relations = [([(r, 0), (r, 1)], published[r, 2], None) for r in range(n_rows)]
        block_number = {int(g): i for i, g in enumerate(np.unique(group))}
        relations += [([(r, c) for r in b], truth[b, c].sum(),
                       f"column {cols[c]}, block {block_number[int(group[b[0]])]}") for b, c in public_blocks]
        for cells, total, name in relations:
            if np.isnan(total):
                continue
            hidden = [cell for cell in cells if np.isnan(published[cell])]
            if not hidden:
                continue
            if len(hidden) == len(cells) and name in s.unprotectable:
                n_given_up += 1  # nothing left to hide: the whole block is hidden and reported
                continue
            hidden_sum = sum(truth[cell] for cell in hidden)
            assert len(hidden) >= 2 and hidden_sum - (len(hidden) - 1) >= 11, (
                f"trial {trial}: hidden cells {hidden} of a relation can be bounded below 11\n{t}")
        n_checked_hidden += int(np.isnan(published).sum())
    assert n_checked_hidden > 200  # the property was exercised on many hidden cells
    assert n_given_up > 0  # and so was the fallback of hiding a whole block


def test_PRIV_ATTACK_002_attack_finds_unprotected_cells():
    """PRIV-ATTACK-002: the attack itself works: primary suppression alone leaks."""
    truth = np.array([[3, 37, 40], [20, 30, 50], [30, 30, 60]], dtype=float)
    published = truth.copy()
    published[0, 0] = np.nan
    recovered = _recovery_attack(published, truth, [[0, 1]], 2, [(np.arange(3), c) for c in range(3)])
    assert recovered == {(0, 0)}


def test_PRIV_SUPP_009_protection_interval():
    """PRIV-SUPP-009: hidden 1 and 9 in a column with a public total would each be <= 9:
    a third cell (the smallest >= 3, here 40) is hidden too."""
    t = pd.DataFrame({"k": [1, 9, 40, 50]})
    s = suppress_counts(t, ["k"], 11)
    assert s.mask["k"].tolist() == [True, True, True, False]


def test_PRIV_SUPP_010_unprotectable_block_hidden_entirely():
    """PRIV-SUPP-010: ten clusters with one missing value each and zeros elsewhere: no
    complement can help, so the whole column is hidden and reported."""
    k = np.r_[np.ones(10, int), np.zeros(30, int)]
    t = pd.DataFrame({"n": 40, "n_missing": k, "n_observed": 40 - k})
    s = suppress_counts(t, ["n_missing", "n_observed"], 11, total_column="n")
    assert s.mask["n_missing"].all()
    assert s.unprotectable == ("column n_missing, block 0",)
    # the row relations then hide every n_observed (n = 40 is published)
    assert s.mask["n_observed"].all() and not s.mask["n"].any()


def test_PRIV_PSEUDO_001_deterministic_and_order_free():
    """PRIV-PSEUDO-001: same seed -> same mapping whatever the input order; other seed differs."""
    labels = list(range(1, 41))
    a = pseudonymize_clusters(labels, seed=7)
    b = pseudonymize_clusters(list(reversed(labels)) + labels, seed=7)
    c = pseudonymize_clusters(labels, seed=8)
    assert a == b
    assert a != c
    assert len(set(a.values())) == 40
    assert all(v.startswith("Cluster ") and len(v) == len("Cluster A07") for v in a.values())


def test_PRIV_PSEUDO_002_order_does_not_reveal_labels():
    """PRIV-PSEUDO-002: the sorted pseudonyms are not in the labels' order (rank correlation
    across seeds averages about zero)."""
    labels = list(range(50))
    correlations = []
    for seed in range(40):
        mapping = pseudonymize_clusters(labels, seed=seed)
        ranks = pd.Series([mapping[x] for x in labels]).rank().to_numpy()
        correlations.append(np.corrcoef(ranks, np.arange(50))[0, 1])
    assert abs(np.mean(correlations)) < 0.1
    assert max(abs(x) for x in correlations) < 0.6


def test_PRIV_PSEUDO_003_missing_label_refused():
    """PRIV-PSEUDO-003: a missing label is an error, not a pseudonym."""
    with pytest.raises(DataError):
        pseudonymize_clusters(["a", None, "b"], seed=1)
    assert set(pseudonymize_clusters(["b", "a", 3], seed=1)) == {"a", "b", 3}


def test_privacy_cluster_counts_001_observed_and_derived_hidden():
    """PRIV-CLUSTER-001: per-cluster observed counts below min_cell are hidden with their
    complement, and a mean of those few observed values is hidden too."""
    import pandas as pd

    from hmlib.privacy import suppress_cluster_counts

    table = pd.DataFrame({"cluster": ["A", "B", "C", "D"], "n": [40, 30, 25, 50],
                          "n_obs": [38, 3, 0, 45], "raw_mean": [3.1, 2.2, float("nan"), 3.0]})
    shown = suppress_cluster_counts(table, n_column="n", observed_column="n_obs", min_cell=11,
                                    derived_from_observed=["raw_mean"])
    b = shown.set_index("cluster").loc["B"]
    assert b["n_obs"] == "suppressed" and b["raw_mean"] == "suppressed"
    hidden = (shown[["n", "n_obs"]] == "suppressed").sum()
    assert hidden["n_obs"] != 1, "a single hidden observed count is recoverable from the total"
    assert table.loc[1, "n_obs"] == 3  # input untouched


def test_privacy_empty_cluster_table_is_returned_as_is():
    """PRIV-EMPTY-001: a per-cluster table with no rows (no incomplete variable) is shown as it is, not an error
    (a registry without missing values crashed step 4 with KeyError: 'n_patients')."""
    from hmlib.privacy import suppress_cluster_counts

    out = suppress_cluster_counts(pd.DataFrame(), n_column="n_patients", observed_column="n_observed", min_cell=11)
    assert out.empty


# --------------------------------------------------------------------------
# One decision across sections (hmlib.steps.disclosure)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory):
    """The demo registry (3,000 patients, 30 sites), checked as a run checks it."""
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.simulate.demo import write_demo

    root = tmp_path_factory.mktemp("demo")
    write_demo(root)
    return load_registry(load_params(root / "params" / "demo.yaml"))


def test_priv_cross_002_hidden_counts_are_step_1s_decision(demo_registry):
    """PRIV-CROSS-002: hmlib.steps.disclosure.hidden_counts reproduces exactly the cells step 1 publishes as
    hidden (cluster sizes; missing or recorded counts per variable) on the demo, where complementary suppression
    hides counts of 11 or more (e.g. a site's recorded lactate values beside a missing count below 11)."""
    from hmlib.steps.diagnose import diagnose_registry
    from hmlib.steps.disclosure import hidden_counts

    hidden = hidden_counts(demo_registry)
    by_cluster = diagnose_registry(demo_registry).to_artifact().by_cluster
    sizes = {str(r.cluster) for r in by_cluster if r.n is None}
    counts = {(str(r.cluster), r.variable) for r in by_cluster if r.n_missing is None or r.n_observed is None}
    assert hidden.sizes == sizes and sizes
    assert {(c, v) for v, cs in hidden.counts.items() for c in cs} == counts
    # some hidden recorded counts are 11 or more: a table suppressing on its own terms would print them
    frame, p = demo_registry.frame, demo_registry.params
    observed = frame.groupby(p.cluster)["lactate"].count()
    assert any(observed[c] >= 11 for c, v in counts if v == "lactate" and c not in sizes)


def test_priv_cross_003_later_tables_hide_step_1s_cells(demo_registry):
    """PRIV-CROSS-003: step 2's retention table hides every cluster size step 1 hides, and a transport-check
    table published with step 1's decision hides each cluster whose focus count step 1 hides (complementary
    suppression then protects the table's own relations)."""
    from hmlib.stats.transport import TransportResult
    from hmlib.steps.complete_case import complete_case_check
    from hmlib.steps.disclosure import hidden_counts
    from hmlib.steps.imputation_transport import publish_transport

    hidden = hidden_counts(demo_registry)
    retention = complete_case_check(demo_registry).retention_display
    shown = retention.loc[retention["n_all"] != SUPPRESSED_LABEL, "cluster"].astype(str)
    assert not set(shown) & hidden.sizes
    frame, p = demo_registry.frame, demo_registry.params
    per_cluster = frame.groupby(p.cluster)["lactate"].count().rename("n_observed").reset_index()
    per_cluster = per_cluster.rename(columns={p.cluster: "cluster"})
    table = per_cluster.assign(method="multilevel_mi", bias=0.0, bias_sd=0.0, bias_mc_se=0.0, draw_sd=1.0,
                               coverage=0.95, flagged=False, reason="", mean_observed=0.0, mean_imputed=0.0)
    check = TransportResult(focus="lactate", methods=("multilevel_mi",), table=table, failures={}, scale=1.0,
                            bias_threshold=0.5, coverage_threshold=0.8, spread_threshold=2.0, level=0.95, m=5,
                            iterations=5, max_clusters=30, n_eligible=len(table), seconds=0.0)
    published = publish_transport(check, 11, hidden=hidden)
    visible = published.display.loc[published.display["n_observed"] != SUPPRESSED_LABEL, "cluster"]
    must_hide = {c for c in hidden.counts["lactate"]} | hidden.sizes
    assert not set(visible.astype(str)) & must_hide
    alone = publish_transport(check, 11)
    alone_visible = set(alone.display.loc[alone.display["n_observed"] != SUPPRESSED_LABEL, "cluster"].astype(str))
    assert alone_visible & must_hide, "without step 1's decision the table would show some of these counts"
