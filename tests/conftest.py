"""Shared fixtures: a small clean registry written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def small_registry(seed: int = 0, n_clusters: int = 12, per_cluster: int = 25) -> pd.DataFrame:
    """A tidy clustered frame with a binary outcome and one incomplete predictor."""
    rng = np.random.default_rng(seed)
    site = np.repeat([f"S{j:02d}" for j in range(n_clusters)], per_cluster)
    u = np.repeat(rng.normal(0, 0.5, n_clusters), per_cluster)
    age = rng.normal(50, 10, site.size).round(1)
    sex = rng.choice(["female", "male"], site.size)
    lab = rng.normal(2, 1, site.size).round(2)
    eta = -2 + 0.03 * (age - 50) + 0.5 * lab + u
    outcome = (rng.random(site.size) < 1 / (1 + np.exp(-eta))).astype(int)
    lab = np.where(rng.random(site.size) < 0.2, np.nan, lab)
    site_type = np.array(["A" if int(s[1:]) % 2 else "B" for s in site])
    return pd.DataFrame({"site": site, "site_type": site_type, "age": age, "sex": sex,
                         "lab": lab, "died": outcome})


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
