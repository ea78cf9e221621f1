"""The params contract: every bad params file fails early with a message naming the fix."""

from __future__ import annotations

import pytest

from hmlib.exceptions import ParamsError
from hmlib.params import load_params


def _write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


BASE = "name: t\ndata: d.csv\ncluster: site\noutcome: y\noutcome_family: binomial\npredictors: [a, b]\n"


def test_params_001_valid_file_resolves_paths_and_defaults(tmp_path):
    """PARAMS-001: relative data paths resolve against the YAML's folder; defaults apply."""
    p = load_params(_write(tmp_path, BASE))
    assert p.data == (tmp_path / "d.csv").resolve()
    assert p.predictors == ("a", "b")
    assert p.privacy.min_cell == 11 and p.privacy.pseudonymize_clusters is False
    assert p.seed == 2026 and p.fast is False and p.focus is None
    assert load_params(_write(tmp_path, BASE), fast=True).fast is True


@pytest.mark.parametrize("text, needle", [
    (BASE + "predictor: [c]\n", "unknown key 'predictor'. Did you mean 'predictors'?"),
    (BASE + "privacy: {min_cells: 5}\n", "unknown key 'privacy.min_cells'"),
    (BASE.replace("binomial", "poisson"), "'outcome_family' must be one of binomial, gaussian"),
    (BASE.replace("cluster: site\n", ""), "the key 'cluster' is missing"),
    (BASE.replace("predictors: [a, b]", "predictors: []"), "'predictors' is empty"),
    (BASE.replace("predictors: [a, b]", "predictors: [a, a]"), "more than once"),
    (BASE.replace("predictors: [a, b]", "predictors: [a, site]"), "column 'site' is given both"),
    (BASE + "focus: c\n", "'focus' must be one of the predictors"),
    (BASE + "seed: -1\n", "'seed' must be a non-negative whole number"),
    (BASE + "fast: maybe\n", "'fast' must be true or false"),
    (BASE + "privacy: {min_cell: 0}\n", "'privacy.min_cell' must be a whole number >= 1"),
    (BASE.replace("d.csv", "d.xlsx"), "must be a .csv or .parquet file"),
    (BASE.replace("name: t", "name: ../evil"), "'name' must be letters"),
    (BASE + "categorical: [z]\n", "not in 'predictors'"),
    (BASE + "diagnose: {structural_share: 1.5}\n", "structural_share"),
])
def test_params_002_bad_values_are_named(tmp_path, text, needle):
    """PARAMS-002: unknown keys, wrong kinds and role clashes are errors naming key and fix."""
    with pytest.raises(ParamsError) as err:
        load_params(_write(tmp_path, text))
    assert needle in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("name: t\n  data: [oops\n", "is not valid YAML at line"),
    ("", "is empty"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_params_003_broken_yaml(tmp_path, text, needle):
    """PARAMS-003: broken YAML reports the line, no parser traceback."""
    with pytest.raises(ParamsError) as err:
        load_params(_write(tmp_path, text))
    assert needle in str(err.value)


def test_params_004_missing_file(tmp_path):
    """PARAMS-004: a params path that does not exist is named."""
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_params_005_every_bundled_params_file_loads():
    """PARAMS-005: the params files shipped in params/ are valid."""
    from conftest import REPO

    files = sorted((REPO / "params").glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        assert load_params(path).name == path.stem
