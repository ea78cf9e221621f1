"""Typed, versioned step artifacts: written and read by the same code.

Each step writes one ``reports/<name>/artifacts/<step>.json`` holding its
aggregated results (never a patient-level row). The file is the JSON form of
a frozen dataclass, a subclass of :class:`Artifact`, defined beside the step
that writes it (``hmlib.steps.<step>``). Later steps and the report read the
file back into the same class with :meth:`Artifact.read`, so:

- a field the writer no longer writes, or a field the reader does not know,
  is an :class:`~hmlib.exceptions.ArtifactError` naming the field, not a
  silent ``'?'`` in the report;
- every file records its ``kind`` and schema ``version``; a file of another
  version is refused with the command that rewrites it.

Nested tables are tuples of row records (:class:`Record` subclasses); a
field annotated ``dict`` or ``list`` holds free JSON (used for settings and
for tables that are only displayed, never read field by field). Missing
numbers are ``None`` (JSON ``null``; NaN and infinity are not JSON).

Supported field annotations: ``int``, ``float``, ``str``, ``bool``,
``X | None``, ``tuple[X, ...]``, ``dict[str, X]``, a :class:`Record`
subclass, ``dict`` / ``list`` (free JSON) and ``typing.Any``.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Row(Record):
...     variable: str
...     share: float | None
>>> Row.from_json({"variable": "lactate", "share": None}).share is None
True
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from hmlib.exceptions import ArtifactError
from hmlib.results import atomic_write_text, to_jsonable

__all__ = ["Record", "Artifact", "artifact_path", "ARTIFACTS_DIR"]

#: Folder of the artifacts inside a report folder.
ARTIFACTS_DIR = "artifacts"

_HINTS: dict[type, dict] = {}


def artifact_path(output_dir: str | Path, key: str) -> Path:
    """``<output_dir>/artifacts/<key>.json``."""
    return Path(output_dir) / ARTIFACTS_DIR / f"{key}.json"


def _hints(cls: type) -> dict:
    if cls not in _HINTS:
        module = __import__(cls.__module__, fromlist=["_"])
        _HINTS[cls] = typing.get_type_hints(cls, globalns=vars(module))
    return _HINTS[cls]


def _convert(value, hint, where: str):
    """``value`` (parsed JSON) as the type ``hint`` says; ArtifactError where it cannot be."""
    if hint is Any or hint in (dict, list):
        if hint in (dict, list) and value is not None and not isinstance(value, hint):
            raise ArtifactError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ArtifactError(f"{where}: is null but must be {hint}")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ArtifactError as exc:
                errors.append(str(exc))
        raise ArtifactError(errors[0] if errors else f"{where}: cannot be read as {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise ArtifactError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{where}[{k}]") for k, v in enumerate(value))
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ArtifactError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value, where=where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArtifactError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArtifactError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ArtifactError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    raise ArtifactError(f"{where}: unsupported field type {hint!r}")  # a programming error


@dataclasses.dataclass(frozen=True)
class Record:
    """A frozen dataclass that round-trips through JSON, strictly.

    Subclasses are frozen dataclasses whose fields use the annotations in
    the module docstring.
    """

    def to_json(self) -> dict:
        """The record as JSON-ready values (nested records too; NaN as ``None``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Record):
                out[f.name] = value.to_json()
            elif isinstance(value, tuple) and value and isinstance(value[0], Record):
                out[f.name] = [v.to_json() for v in value]
            elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), Record):
                out[f.name] = {str(k): v.to_json() for k, v in value.items()}
            else:
                out[f.name] = to_jsonable(value)
        return out

    @classmethod
    def from_json(cls, data: dict, *, where: str | None = None):
        """Build the record from parsed JSON.

        Raises
        ------
        ArtifactError
            A field is missing, unknown, or of the wrong type; the message
            names it (``diagnose.overview[2].share_missing: ...``).
        """
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: expected a mapping, got {type(data).__name__}")
        hints = _hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ArtifactError(f"{where}: unknown field(s) {', '.join(unknown)} (not in {cls.__name__})")
        missing = [n for n in names if n not in data]
        if missing:
            raise ArtifactError(f"{where}: field(s) {', '.join(missing)} missing (required by {cls.__name__})")
        return cls(**{n: _convert(data[n], hints[n], f"{where}.{n}") for n in names})


@dataclasses.dataclass(frozen=True)
class Artifact(Record):
    """The typed record of one step, stored as ``artifacts/<KEY>.json``.

    Subclasses set ``KEY`` (the step key) and ``VERSION`` (bumped whenever a
    field is added, removed, renamed or changes meaning).
    """

    KEY: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def alert(self) -> str | None:
        """A line the runner prints loudly after the step (e.g. a failed convergence gate), or None."""
        return None

    def notice(self) -> str | None:
        """A line the runner prints after the step about what it did by itself (e.g. extended a sampler), or None."""
        return None

    def write(self, output_dir: str | Path, inputs: dict | None = None) -> Path:
        """Write ``artifacts/<KEY>.json`` atomically (a reader never sees half a file).

        ``inputs`` identifies what the record was made from (``data_sha256``,
        ``params_sha256``: :meth:`hmlib.steps.base.StepContext.inputs`); the
        runner refuses to put records of other inputs into one report.
        """
        payload = {"kind": self.KEY, "version": self.VERSION, "inputs": dict(inputs or {}),
                   "record": self.to_json()}
        text = json.dumps(payload, indent=1, sort_keys=True, allow_nan=False)
        return atomic_write_text(artifact_path(output_dir, self.KEY), text + "\n")

    @classmethod
    def read_inputs(cls, output_dir: str | Path) -> dict | None:
        """What the stored record was made from (``{}`` if not recorded), or None when there is no record."""
        path = artifact_path(output_dir, cls.KEY)
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return {}
        return dict(payload.get("inputs") or {}) if isinstance(payload, dict) else {}

    @classmethod
    def read(cls, output_dir: str | Path):
        """Read the record back; ``None`` when the step has not written one.

        Raises
        ------
        ArtifactError
            The file is not this step's, is of another schema version, or
            its fields do not match this class.
        """
        path = artifact_path(output_dir, cls.KEY)
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ArtifactError(f"{path} is not valid JSON ({exc}); rerun step '{cls.KEY}'.") from None
        rerun = f"rerun it with `hmreport run PARAMS --only {cls.KEY}`"
        if not isinstance(payload, dict) or payload.get("kind") != cls.KEY or "record" not in payload:
            raise ArtifactError(f"{path} is not a '{cls.KEY}' artifact of this hmlib; {rerun}.")
        if payload.get("version") != cls.VERSION:
            raise ArtifactError(f"{path} has schema version {payload.get('version')}, this hmlib reads "
                                f"version {cls.VERSION}; {rerun}.")
        return cls.from_json(payload["record"], where=cls.KEY)
