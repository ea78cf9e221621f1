"""Shared fixtures: a small clean registry (:func:`hmlib.simulate.registries.small_registry`)
written to a temporary folder, and the R reference numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from hmlib.simulate.registries import small_registry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_case(tmp_path):
    """Write a frame and a params file; returns the params path."""

    def _write(frame: pd.DataFrame | None = None, suffix: str = ".csv", **overrides) -> Path:
        frame = small_registry() if frame is None else frame
        data_path = tmp_path / f"registry{suffix}"
        if suffix == ".csv":
            frame.to_csv(data_path, index=False)
        else:
            frame.to_parquet(data_path, index=False)
        params = {"name": "case", "data": data_path.name, "cluster": "site", "outcome": "died",
                  "outcome_family": "binomial", "predictors": ["age", "sex", "lab"], "seed": 3}
        params.update(overrides)
        params = {k: v for k, v in params.items() if v is not None}
        path = tmp_path / "case.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    return _write


#: Reference numbers from the R tools, copied from the workplace's
#: shared/reference/ with the scripts that made them (see README.md there).
REFERENCE = REPO / "tests" / "results"


def reference_fit(name: str) -> dict:
    """One case of lme4_fits.json by name."""
    import json

    cases = json.loads((REFERENCE / "lme4_fits.json").read_text())
    return next(c for c in cases if c["name"] == name)


def load_bench(name: str):
    """The module ``bench/<name>.py`` (benches and truth studies are scripts, not a package), imported afresh."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
