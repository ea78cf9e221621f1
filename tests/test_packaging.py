"""Packaging: pyproject.toml and environment.yml name the same pinned dependencies."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["test"]
    pins = {}
    for spec in specs:
        name, _, version = spec.partition("==")
        assert version, f"{spec} in pyproject.toml is not pinned with =="
        pins[_norm(name)] = version
    return pins


def _conda_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and dep not in ("pip",) and not dep.startswith("python="):
            name, _, version = dep.partition("=")
            pins[_norm(name)] = version
    return pins


def test_pack_001_environment_matches_pyproject():
    """PACK-001: environment.yml and pyproject.toml pin the same packages at the same versions."""
    assert _conda_pins() == _pyproject_pins()


def test_pack_002_python_floor_agrees():
    """PACK-002: both ask for Python 3.12 or newer."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert project["requires-python"] == ">=3.12"
    assert "python=3.12" in env["dependencies"]


def test_pack_003_ci_calls_the_readme_test_command():
    """PACK-003: .ci/run calls `make test`, the README's second command."""
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert readme.index("make report") < readme.index("make test")
