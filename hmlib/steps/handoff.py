"""Step 3's primary multilevel imputation handed to step 5 within one ``hmreport run``.

Step 5's primary imputation is the imputation step 3 calls ``multilevel_mi``:
the same registry, method, residual variance, ``m``, iterations and seed, so
the same numbers. Making it twice cost a sixth of the sensitivity step on the
trial-shaped registry (20 chains of 10 iterations). The notebooks run in
separate kernels, so step 3 leaves it in the run's staging folder and step 5
reads it back when every part of its key matches (:func:`handoff_key`); when
anything differs, or the file is absent, step 5 imputes as before.

What is written holds no observed value: the imputed cells (model draws), which
cells were missing, the chains' means and end states (model parameters), the
engine's notes. It is written only inside a run's staging folder
(``reports/<name>/.run-<id>/``), which the runner deletes when the run ends,
whether it succeeded or not, and never moves into the report folder
(:data:`HANDOFF_DIR`); a step run on its own (JupyterLab, papermill) neither
writes nor reads it. The format is ``.npz`` arrays plus JSON (no pickle: nothing
read back can run code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.stats.imputation import ImputationResult
from hmlib.stats.imputation.completed import CompletedData, ImputedColumn

__all__ = ["HANDOFF_DIR", "handoff_key", "handoff_path", "save_primary", "load_primary", "hand_over", "take_over"]

#: Folder of the handoff inside a run's staging folder (never moved into the report folder).
HANDOFF_DIR = ".handoff"
#: Prefix of a run's staging folder (:func:`hmlib.report.runner._stage`).
_STAGING_PREFIX = ".run-"
_FILE = "primary_imputation.npz"
_VERSION = 1


def handoff_key(inputs: dict, *, m: int, iterations: int, seed: int, cluster_specific: bool) -> dict:
    """What makes two primary imputations the same: the inputs' SHA-256, ``m``, iterations, seed, residual variance."""
    return {"data_sha256": inputs["data_sha256"], "params_sha256": inputs["params_sha256"], "method": "multilevel",
            "continuous": "norm", "m": int(m), "iterations": int(iterations), "seed": int(seed),
            "cluster_residual_variance": bool(cluster_specific), "version": _VERSION}


def handoff_path(output_dir: str | Path) -> Path | None:
    """Where the handoff lives for this output folder: in a run's staging folder only, else None."""
    output_dir = Path(output_dir)
    if not output_dir.name.startswith(_STAGING_PREFIX):
        return None
    return output_dir / HANDOFF_DIR / _FILE


# --------------------------------------------------------------------------
# Chain states (nested dicts, tuples, arrays, numbers) as JSON plus arrays
# --------------------------------------------------------------------------
def _encode(obj, arrays: dict):
    if isinstance(obj, np.ndarray):
        key = f"state{len(arrays)}"
        arrays[key] = obj
        return {"@array": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("chain states must have string keys")
        return {"@dict": [[k, _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (tuple, list)):
        return {"@tuple" if isinstance(obj, tuple) else "@list": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot hand off a chain state of type {type(obj).__name__}")


def _decode(obj, arrays):
    if isinstance(obj, dict):
        if "@array" in obj:
            return arrays[obj["@array"]]
        if "@dict" in obj:
            return {k: _decode(v, arrays) for k, v in obj["@dict"]}
        if "@tuple" in obj:
            return tuple(_decode(v, arrays) for v in obj["@tuple"])
        return [_decode(v, arrays) for v in obj["@list"]]
    return obj


# --------------------------------------------------------------------------
# Save and load
# --------------------------------------------------------------------------
def save_primary(output_dir: str | Path, result: ImputationResult, key: dict) -> Path | None:
    """Write ``result`` for step 5 (only inside a run's staging folder); returns the file or None.

    Parameters
    ----------
    output_dir : path
        The step's output folder (a run's staging folder, else nothing is written).
    result : ImputationResult
        Step 3's ``multilevel_mi`` imputation.
    key : dict
        :func:`handoff_key` of the settings it was made with.
    """
    path = handoff_path(output_dir)
    if path is None:
        return None
    completed = result.completed
    if not isinstance(completed, CompletedData):
        return None
    arrays: dict = {}
    columns = []
    for i, column in enumerate(completed.columns):
        arrays[f"rows{i}"] = np.asarray(column.rows, dtype=bool)
        arrays[f"values{i}"] = np.asarray(column.values)
        columns.append({"name": column.name, "categories": [_plain(c) for c in column.categories]})
    means = list(result.chain_means)
    for i, name in enumerate(means):
        arrays[f"means{i}"] = np.asarray(result.chain_means[name], dtype=float)
    meta = {"key": key, "columns": columns, "base_columns": list(completed.base.columns), "means": means,
            "mask_columns": list(result.imputed_mask.columns),
            "result": {"method": result.method, "continuous": result.continuous, "m": result.m,
                       "iterations": result.iterations, "rhat": result.rhat, "notes": list(result.notes),
                       "seed": result.seed, "models": result.models, "strata": result.strata,
                       "fallbacks": result.fallbacks, "cluster_means_dropped": result.cluster_means_dropped,
                       "extrapolated": result.extrapolated},
            "chain_states": _encode(list(result.chain_states), arrays)}
    try:
        meta_text = json.dumps(meta)
    except TypeError:
        return None                                    # something not plain: step 5 imputes itself
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, meta=np.array(meta_text), **arrays)
    os.replace(partial, path)
    return path


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def load_primary(output_dir: str | Path, frame: pd.DataFrame, key: dict) -> ImputationResult | None:
    """Step 3's primary imputation when it was made with ``key`` from these data, else None.

    Parameters
    ----------
    output_dir : path
        Step 5's output folder (a run's staging folder, else None is returned).
    frame : pandas.DataFrame
        The registry's analysis frame (the completed data sets are rebuilt on it).
    key : dict
        :func:`handoff_key` of the imputation step 5 would make.
    """
    path = handoff_path(output_dir)
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("key") != key or not set(meta["base_columns"]) <= set(frame.columns):
        return None
    base = frame.loc[:, meta["base_columns"]].copy()
    columns = [ImputedColumn(c["name"], arrays[f"rows{i}"], arrays[f"values{i}"], tuple(c["categories"]))
               for i, c in enumerate(meta["columns"])]
    if any(c.rows.shape != (len(base),) for c in columns):
        return None
    mask = pd.DataFrame(False, index=base.index, columns=meta["mask_columns"])
    for column in columns:
        mask[column.name] = column.rows
    r = meta["result"]
    return ImputationResult(method=r["method"], continuous=r["continuous"], m=r["m"], iterations=r["iterations"],
                            completed=CompletedData(base, columns, r["m"]), imputed_mask=mask,
                            chain_means={name: arrays[f"means{i}"] for i, name in enumerate(meta["means"])},
                            rhat=r["rhat"], notes=list(r["notes"]), seed=r["seed"], models=r["models"],
                            strata=r["strata"], fallbacks=r["fallbacks"],
                            cluster_means_dropped=r["cluster_means_dropped"], extrapolated=r["extrapolated"],
                            chain_states=_decode(meta["chain_states"], arrays))


def hand_over(ctx, imputation: ImputationResult, *, cluster_specific: bool) -> Path | None:
    """Step 3: leave its ``multilevel_mi`` imputation for step 5 (:func:`save_primary` with the context's key)."""
    key = handoff_key(ctx.inputs, m=imputation.m, iterations=imputation.iterations, seed=ctx.params.seed,
                      cluster_specific=cluster_specific)
    return save_primary(ctx.output_dir, imputation, key)


def take_over(ctx, *, m: int, iterations: int, cluster_specific: bool) -> ImputationResult | None:
    """Step 5: step 3's imputation if it is the one step 5 would make (:func:`load_primary`), else None."""
    key = handoff_key(ctx.inputs, m=m, iterations=iterations, seed=ctx.params.seed,
                      cluster_specific=cluster_specific)
    return load_primary(ctx.output_dir, ctx.registry.frame, key)
