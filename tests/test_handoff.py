"""Step 3's primary multilevel imputation handed to step 5 within a run (hmlib.steps.handoff).

Test IDs
--------
HANDOFF-001  the premise: step 3's ``multilevel_mi`` imputation is the imputation step 5 makes with the same
             settings (completed data sets equal), so handing it over changes no result
HANDOFF-002  round trip: what step 5 reads back equals what step 3 wrote (completed data sets, mask, chain
             means, R-hat, notes, models, chain states with the three-level fits' optima and Hessians); the file
             holds no observed value of the data
HANDOFF-003  nothing is read back when any part of the key differs (m, iterations, seed, residual variance, data
             or params) or outside a run's staging folder (nothing is written there either)
HANDOFF-004  the runner never moves the handoff into the report folder
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hmlib.simulate.scale import TRIAL_PARAMS
from hmlib.steps.handoff import HANDOFF_DIR, handoff_key, handoff_path, load_primary, save_primary
from test_nested_analysis import nested_trial

M, ITERATIONS = 2, 2
INPUTS = {"data_sha256": "d" * 64, "params_sha256": "p" * 64}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from hmlib.data import load_registry
    from hmlib.params import load_params

    folder = tmp_path_factory.mktemp("handoff")
    nested_trial().to_csv(folder / "data.csv", index=False)
    (folder / "p.yaml").write_text(TRIAL_PARAMS.format(name="t", data="data.csv", truth="none")
                                   .replace("truth: none\n", ""))
    return load_registry(load_params(folder / "p.yaml", fast=True))


@pytest.fixture(scope="module")
def step3_run(registry):
    """Step 3's multilevel_mi run, made as the step makes it."""
    from hmlib.steps.imputation import _run_method, default_methods

    spec = next(s for s in default_methods(registry.params.cluster) if s.method == "multilevel")
    run = _run_method(registry, spec, m=M, iterations=ITERATIONS, max_fallback_share=0.5)
    assert run.ok, run.reason
    return run


def _key(registry, **changes):
    settings = dict(m=M, iterations=ITERATIONS, seed=registry.params.seed, cluster_specific=False) | changes
    return handoff_key(INPUTS, **settings)


def test_handoff_001_step3_imputation_is_step5s(registry, step3_run):
    """HANDOFF-001: step 5's own primary imputation (as run_sensitivity makes it) equals step 3's."""
    from hmlib.steps.imputation import impute_registry

    own = impute_registry(registry, method="multilevel", m=M, iterations=ITERATIONS, cluster_residual_variance=False)
    assert step3_run.spec.options == {"cluster_residual_variance": False}
    for mine, theirs in zip(own.completed, step3_run.imputation.completed):
        pd.testing.assert_frame_equal(mine, theirs)


def test_handoff_002_round_trip(registry, step3_run, tmp_path):
    """HANDOFF-002: read back = written; no observed value in the file."""
    staging = tmp_path / ".run-abc"
    written = step3_run.imputation
    path = save_primary(staging, written, _key(registry))
    assert path == staging / HANDOFF_DIR / "primary_imputation.npz" and path.is_file()
    back = load_primary(staging, registry.frame, _key(registry))
    assert back is not None
    for mine, theirs in zip(back.completed, written.completed):
        pd.testing.assert_frame_equal(mine, theirs)
    pd.testing.assert_frame_equal(back.imputed_mask, written.imputed_mask)
    assert back.label == written.label and back.m == written.m and back.seed == written.seed
    assert back.notes == list(written.notes) and back.models == written.models
    assert back.rhat == pytest.approx(written.rhat, nan_ok=True)
    for name in written.chain_means:
        np.testing.assert_array_equal(back.chain_means[name], written.chain_means[name])
    nested = [state for chain in written.chain_states for state in chain.values() if "nested_start" in state]
    assert nested, "the three-level binary models' fits are part of the chain states"
    for chain_back, chain in zip(back.chain_states, written.chain_states):
        assert chain_back.keys() == chain.keys()
        for name, state in chain.items():
            for key, value in state.items():
                got = chain_back[name][key]
                if key == "nested_start":
                    np.testing.assert_array_equal(got[0], value[0])
                    np.testing.assert_array_equal(got[1], value[1])
                    assert got[2] == value[2]
                else:
                    np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(value, dtype=float))
    # only the imputed cells (m per missing cell), the masks, chain means and states: no column of the data
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        assert {f.rstrip("0123456789") for f in stored.files} <= {"meta", "rows", "values", "means", "state"}
        n_values = sum(stored[f].size for f in stored.files if f.startswith("values"))
    assert n_values == sum(int(written.imputed_mask[c].sum()) for c in written.imputed_mask) * M
    assert set(meta) == {"key", "columns", "base_columns", "means", "mask_columns", "result", "chain_states"}


@pytest.mark.parametrize("change", [{"m": 3}, {"iterations": 5}, {"seed": 99}, {"cluster_specific": True}])
def test_handoff_003_other_settings_or_folders_read_nothing(registry, step3_run, tmp_path, change):
    """HANDOFF-003: a key that differs in one part, other inputs, or a folder that is not a run's staging."""
    staging = tmp_path / ".run-abc"
    save_primary(staging, step3_run.imputation, _key(registry))
    assert load_primary(staging, registry.frame, _key(registry, **change)) is None
    other_data = handoff_key({**INPUTS, "data_sha256": "e" * 64}, m=M, iterations=ITERATIONS,
                             seed=registry.params.seed, cluster_specific=False)
    assert load_primary(staging, registry.frame, other_data) is None
    report_folder = tmp_path / "case"
    assert handoff_path(report_folder) is None
    assert save_primary(report_folder, step3_run.imputation, _key(registry)) is None
    assert not report_folder.exists()
    assert load_primary(report_folder, registry.frame, _key(registry)) is None


def test_handoff_004_runner_never_commits_it(registry, step3_run, tmp_path):
    """HANDOFF-004: _commit moves the staged outputs but not the handoff."""
    from hmlib.report.runner import _commit

    output = tmp_path / "case"
    output.mkdir()
    staging = output / ".run-abc"
    (staging / "artifacts").mkdir(parents=True)
    (staging / "artifacts" / "imputation.json").write_text("{}")
    save_primary(staging, step3_run.imputation, _key(registry))
    _commit(staging, output, [])
    assert (output / "artifacts" / "imputation.json").is_file()
    assert not any(HANDOFF_DIR in p.parts for p in output.rglob("*") if ".run-abc" not in p.parts)
