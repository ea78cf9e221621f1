"""Data checks: each bad input gets a clear message before any model is fitted."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from hmlib.data import load_registry
from hmlib.exceptions import DataError
from hmlib.params import load_params
from hmlib.simulate.registries import small_registry


def _load(path):
    return load_registry(load_params(path))


def test_data_001_clean_registry(write_case):
    """DATA-001: a clean file loads; kinds, levels and focus (most missing) are resolved."""
    reg = _load(write_case())
    assert reg.n_patients == 300 and reg.n_clusters == 12
    assert reg.kinds == {"died": "numeric", "age": "numeric", "sex": "categorical", "lab": "numeric"}
    assert reg.levels == {"sex": ["female", "male"]}
    assert reg.params.focus == "lab"
    assert reg.incomplete_variables == ("lab",)


def test_data_002_parquet_reads_like_csv(write_case):
    """DATA-002: Parquet input gives the same analysis frame as CSV."""
    a = _load(write_case()).frame
    b = _load(write_case(suffix=".parquet")).frame
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_data_003_input_file_never_modified(write_case):
    """DATA-003: loading (with pseudonyms and exclusions) leaves the file's bytes unchanged."""
    frame = small_registry()
    frame.loc[3, "site"] = np.nan
    path = write_case(frame, privacy={"pseudonymize_clusters": True})
    data = path.parent / "registry.csv"
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    reg = _load(path)
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before == reg.data_sha256
    assert not set(reg.frame["site"]) & set(frame["site"].dropna())


def test_data_004_missing_column_named_with_suggestion(write_case):
    """DATA-004: a named column absent from the file: name it, suggest the closest one."""
    with pytest.raises(DataError, match=r"column 'agee' named in case.yaml is not in registry.csv\. Did you mean 'age'"):
        _load(write_case(predictors=["agee", "sex"]))


def test_data_005_binomial_outcome_not_01(write_case):
    """DATA-005: outcome not 0/1 for binomial names the count and an example value."""
    frame = small_registry()
    frame["died"] = frame["died"].astype(object)
    frame.loc[[1, 2], "died"] = "yes"
    with pytest.raises(DataError, match=r"'died' must be 0/1 .* 2 value\(s\) are not, e.g. 'yes'"):
        _load(write_case(frame))


def test_data_006_text_in_numeric_column(write_case):
    """DATA-006: text in a numeric column: column, count, example, fix."""
    frame = small_registry()
    frame["age"] = frame["age"].astype(object)
    frame.loc[[5, 6, 7], "age"] = "unknown"
    with pytest.raises(DataError, match=r"column 'age' holds numbers but 3 value\(s\) are text, e.g. 'unknown'"):
        _load(write_case(frame))


def test_data_007_constant_and_all_missing_columns(write_case):
    """DATA-007: a constant predictor or an all-missing one is refused."""
    frame = small_registry()
    frame["age"] = 40.0
    with pytest.raises(DataError, match="predictor 'age' takes a single value"):
        _load(write_case(frame))
    frame = small_registry()
    frame["lab"] = np.nan
    with pytest.raises(DataError, match="predictor 'lab' is missing in all 300 rows"):
        _load(write_case(frame))
    frame = small_registry()
    frame["died"] = 0
    with pytest.raises(DataError, match="outcome 'died' takes a single value"):
        _load(write_case(frame))


def test_data_008_empty_files(write_case, tmp_path):
    """DATA-008: a 0-byte file and a header-only file are named as empty."""
    path = write_case()
    (path.parent / "registry.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        _load(path)
    (path.parent / "registry.csv").write_text("site,age,sex,lab,died\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        _load(path)


def test_data_009_missing_cluster_ids_excluded_and_counted(write_case):
    """DATA-009: rows without a cluster id are excluded and reported with their count."""
    frame = small_registry()
    frame.loc[[0, 10, 20], "site"] = np.nan
    reg = _load(write_case(frame))
    assert reg.n_excluded_missing_cluster == 3 and reg.n_patients == 297
    # the notice reaches the report: a count below min_cell (11) is not printed
    assert any(n.code == "missing-cluster-id" and "fewer than 11 row(s)" in n.message for n in reg.notices)
    frame.loc[list(range(0, 120, 10)), "site"] = np.nan
    reg = _load(write_case(frame))
    assert any(n.code == "missing-cluster-id" and "12 row(s)" in n.message for n in reg.notices)


def test_data_010_singleton_clusters_kept_and_flagged(write_case):
    """DATA-010: a cluster with one patient is kept and flagged."""
    frame = small_registry()
    frame = pd.concat([frame, frame.iloc[[0]].assign(site="LONE")], ignore_index=True)
    reg = _load(write_case(frame))
    assert reg.singleton_clusters == ("LONE",)
    assert "LONE" in set(reg.frame["site"])
    assert any(n.code == "singleton-clusters" for n in reg.notices)


def test_data_011_structural_gap_is_a_notice(write_case):
    """DATA-011: a variable never recorded in a site is reported (the report is about it)."""
    frame = small_registry()
    frame.loc[frame["site"] == "S03", "lab"] = np.nan
    reg = _load(write_case(frame))
    assert any(n.code == "structural-gap" and "'lab' is never recorded in 1 of 12" in n.message
               for n in reg.notices)


def test_data_012_cluster_covariate_must_be_constant(write_case):
    """DATA-012: a cluster covariate that varies within a cluster is refused."""
    frame = small_registry()
    frame.loc[0, "site_type"] = "Z"
    with pytest.raises(DataError, match="cluster covariate 'site_type' varies within 1 cluster"):
        _load(write_case(frame, cluster_covariates=["site_type"]))


def test_data_013_single_cluster_refused(write_case):
    """DATA-013: one cluster only cannot support a hierarchical model."""
    frame = small_registry().assign(site="ONE")
    with pytest.raises(DataError, match="needs at least two clusters"):
        _load(write_case(frame))


def test_data_014_unparseable_file(write_case):
    """DATA-014: a file that is not CSV gets a readable message, not a parser traceback."""
    path = write_case()
    (path.parent / "registry.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage")
    with pytest.raises(DataError, match="cannot read"):
        _load(path)


def test_data_015_too_many_levels_looks_like_an_identifier(write_case):
    """DATA-015: a text predictor with very many values is refused as an identifier."""
    frame = small_registry()
    frame["sex"] = [f"id{i}" for i in range(len(frame))]
    with pytest.raises(DataError, match="at most 50"):
        _load(write_case(frame))


def test_data_016_every_bundled_params_file_validates():
    """DATA-016: the real datasets' params files pass every check."""
    from conftest import REPO

    for name in ("brandsma", "pbcseq", "opt_periodontal", "cdystonia"):
        reg = _load(REPO / "params" / f"{name}.yaml")
        assert reg.n_clusters >= 4
