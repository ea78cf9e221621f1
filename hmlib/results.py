"""The results contract shared by every step: ``estimates.csv`` and artifacts.

``reports/<name>/estimates.csv`` has one row per method x term with columns
``method, term, estimate, std_error, ci_lower, ci_upper, n_patients,
n_clusters``. Terms are predictor names (categorical levels as
``name[level]``), ``Intercept`` and ``sd(<cluster>)`` for the random-intercept
SD. A step replaces its own methods' rows and leaves the others alone, so
steps can be re-run one at a time.

Each step also writes ``artifacts/<step>.json`` (aggregated figures only: no
patient-level rows) that later steps and the final report read.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.exceptions import DataError
from hmlib.methods import NOT_ESTIMABLE

__all__ = ["ESTIMATE_COLUMNS", "estimate_rows", "update_estimates", "read_estimates",
           "write_artifact", "read_artifact", "atomic_write_text", "load_truth", "with_truth",
           "to_jsonable", "json_scalar", "load_complete_data_terms"]

ESTIMATE_COLUMNS = ("method", "term", "estimate", "std_error", "ci_lower", "ci_upper",
                    "n_patients", "n_clusters")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and a rename.

    A reader never sees a half-written file, and a crash leaves the previous
    version in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def estimate_rows(fit, method: str, level: float = 0.95) -> pd.DataFrame:
    """Rows of ``estimates.csv`` for one fitted random-intercept model.

    Parameters
    ----------
    fit : hmlib.stats.mixed.RandomInterceptFit
    method : str
        E.g. ``"complete_case"``, ``"multilevel_mi"``; a fit with separated
        (diverging) terms gets the flag ``:not_estimable``.
    level : float
        Confidence level of the intervals.
    """
    table = fit.to_frame(level=level).copy()
    if getattr(fit, "separated", ()):  # diverging terms: the fit is flagged, never presented as a result
        method = f"{method}:{NOT_ESTIMABLE}"
    table.insert(0, "method", method)
    table["n_patients"] = int(fit.n_obs)
    table["n_clusters"] = int(fit.n_clusters)
    return table.loc[:, list(ESTIMATE_COLUMNS)]


def read_estimates(path: str | Path) -> pd.DataFrame:
    """Read ``estimates.csv``; an empty frame with the contract's columns if absent."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=list(ESTIMATE_COLUMNS))
    return pd.read_csv(path)


def update_estimates(path: str | Path, rows: pd.DataFrame, *, drop_methods=()) -> pd.DataFrame:
    """Replace the rows of the methods in ``rows`` and write the file atomically.

    ``drop_methods`` names further methods whose old rows go (e.g. a flagged
    variant of a method from an earlier run). Returns the full table as written.
    """
    missing = [c for c in ESTIMATE_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"estimate rows lack columns {missing}")
    current = read_estimates(path)
    keep = current.loc[~current["method"].isin([*rows["method"].unique(), *drop_methods])]
    parts = [p for p in (keep, rows.loc[:, list(ESTIMATE_COLUMNS)]) if len(p)]
    table = pd.concat(parts, ignore_index=True) if parts else rows.loc[:, list(ESTIMATE_COLUMNS)]
    atomic_write_text(path, table.to_csv(index=False))
    return table


def json_scalar(value):
    """A plain Python scalar for ``json.dumps``: None for NaN, inf, NA and NaT."""
    if value is None:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value if isinstance(value, (int, str)) else str(value)


def to_jsonable(value):
    """Recursively turn dicts, lists, frames and arrays into JSON-ready values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return to_jsonable(value.to_dict(orient="records"))
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    return json_scalar(value)


def write_artifact(output_dir: str | Path, step: str, payload: dict) -> Path:
    """Write ``artifacts/<step>.json`` (NaN becomes null) atomically."""
    path = Path(output_dir) / "artifacts" / f"{step}.json"
    text = json.dumps(to_jsonable(payload), indent=1, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_artifact(output_dir: str | Path, step: str) -> dict:
    """Read ``artifacts/<step>.json``; raises FileNotFoundError naming the step to run."""
    path = Path(output_dir) / "artifacts" / f"{step}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run step '{step}' first (hmreport run PARAMS --only {step}).")
    return json.loads(path.read_text(encoding="utf-8"))


def load_truth(path: str | Path | None) -> dict[str, float]:
    """True values by term from a truth JSON (simulated data), or ``{}`` when there is none.

    The demo's truth file holds ``{"terms": {"Intercept": ..., "lactate": ...,
    "sd(site)": ...}}`` keyed like ``estimates.csv``.

    Raises
    ------
    DataError
        The params name a truth file that is absent, not JSON, or whose
        ``terms`` are not numbers (checked when the inputs are checked).
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the truth file {path} named in the params does not exist; fix 'truth' or remove the key.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"the truth file {path.name} is not valid JSON ({exc}); fix it or remove 'truth'.") from None
    terms = payload.get("terms") if isinstance(payload, dict) else None
    if not isinstance(terms, dict) or not terms:
        raise DataError(f"the truth file {path.name} needs a 'terms' object mapping estimate terms to true values, "
                        'e.g. {"terms": {"lactate": 0.3}}; fix it or remove \'truth\'.')
    bad = [k for k, v in terms.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        raise DataError(f"the truth file {path.name} has non-numeric true values for {bad[:3]}; fix it or remove "
                        "'truth'.")
    return {str(k): float(v) for k, v in terms.items()}


def load_complete_data_terms(path: str | Path | None) -> dict[str, float]:
    """The analysis model fitted to the simulated registry *before* values went
    missing (``complete_data_terms`` of a truth JSON), or ``{}``.

    Shown next to the truth, it separates the sampling error of this one
    registry from the error a missing-data method adds.
    """
    if path is None or not Path(path).is_file():
        return {}
    terms = json.loads(Path(path).read_text(encoding="utf-8")).get("complete_data_terms", {})
    return {str(k): float(v) for k, v in terms.items()}


def with_truth(estimates: pd.DataFrame, truth: dict[str, float],
               complete_data: dict[str, float] | None = None) -> pd.DataFrame:
    """Add a ``truth`` column (NaN where unknown) and whether each interval covers it.

    With ``complete_data`` (:func:`load_complete_data_terms`) a column
    ``before_missing`` shows what the registry gave before values went missing.
    """
    table = estimates.copy()
    if complete_data:
        table["before_missing"] = table["term"].map(complete_data).astype(float)
    table["truth"] = table["term"].map(truth).astype(float)
    covers = (table["ci_lower"] <= table["truth"]) & (table["truth"] <= table["ci_upper"])
    table["covers_truth"] = covers.astype("boolean").mask(table["truth"].isna())
    return table
