"""The package's shape, read from the source (nothing imported): the rules of issue #11.

ARCH-SIZE-001     no module over 800 lines; no function body over 120 lines (docstring excluded)
ARCH-IMPORT-001   no import cycle between modules (function-local imports count)
ARCH-IMPORT-002   no private name imported from another module
ARCH-WINGS-001    dependencies run one way: stats imports no other wing (nor privacy); figures no steps or
                  report; steps no report
ARCH-WINGS-002    at least three subpackages, and every step of the registry has its module, notebook and
                  figure module named by its key
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO
from hmlib.steps import STEPS

PACKAGE = REPO / "hmlib"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str]]:
    """``(imported module, imported name)`` of every import in a module, nested ones included."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "hmlib":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full if full in MODULES else target, alias.name))
        elif isinstance(node, ast.Import):
            out.extend((a.name, "") for a in node.names if a.name.split(".")[0] == "hmlib")
    return out


def _edges() -> dict[str, set]:
    return {m: {t for t, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}


def test_arch_size_001_modules_and_functions_are_small():
    """ARCH-SIZE-001: every module <= 800 lines, every function body <= 120 lines (docstring excluded)."""
    too_long, long_functions = [], []
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if source.count("\n") + 1 > MAX_MODULE_LINES:
            too_long.append(name)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                has_doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                           and isinstance(body[0].value.value, str))
                start = body[0].end_lineno + 1 if has_doc else body[0].lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name}")
    assert too_long == [] and long_functions == []


def test_arch_import_001_no_cycles():
    """ARCH-IMPORT-001: the module import graph (function-local imports included) has no cycle."""
    edges = _edges()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for module in MODULES:
        if state.get(module) is None and visit(module, []):
            break
    assert cycle == []


def test_arch_import_002_no_private_cross_imports():
    """ARCH-IMPORT-002: no module imports another module's private (underscore) name."""
    private = [f"{m} <- {t}.{name}" for m in MODULES for t, name in _imports(m)
               if name.startswith("_") and not name.startswith("__") and t != m]
    assert private == []


def test_arch_wings_001_dependencies_run_one_way():
    """ARCH-WINGS-001: stats imports nothing from steps, report, figures or privacy; figures nothing from steps
    or report; steps nothing from report."""
    forbidden = {"hmlib.stats": ("hmlib.steps", "hmlib.report", "hmlib.figures", "hmlib.privacy"),
                 "hmlib.figures": ("hmlib.steps", "hmlib.report"),
                 "hmlib.steps": ("hmlib.report",)}
    wrong = []
    for module, targets in _edges().items():
        for wing, banned in forbidden.items():
            if module == wing or module.startswith(wing + "."):
                wrong += [f"{module} -> {t}" for t in targets if any(t == b or t.startswith(b + ".") for b in banned)]
    assert wrong == []


def test_arch_wings_002_subpackages_and_step_files():
    """ARCH-WINGS-002: at least three subpackages; each registered step has hmlib/steps/<key>.py,
    hmlib/figures/<key>.py and its notebook."""
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"stats", "steps", "figures", "report"} <= subpackages
    for step in STEPS:
        assert (PACKAGE / "steps" / f"{step.key}.py").is_file(), step.key
        assert (PACKAGE / "figures" / f"{step.key}.py").is_file(), step.key
        assert (REPO / "notebooks" / step.notebook).is_file(), step.notebook
