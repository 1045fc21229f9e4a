"""The package's shape: every module imports, and no two subpackages of dadf import each other (imports inside
functions count too: a cycle hidden in a function is still a cycle)."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import dadf

PACKAGE = Path(dadf.__file__).parent
# The one allowed edge against the layering: the old pickle path of CellJob (jobs queued on a cluster before the
# class moved to dadf.grid.runner still unpickle through it). It imports lazily, on attribute access only.
ALLOWED = {("dadf/train/job.py", "dadf.grid")}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="dadf."))


def _unit(module: str) -> str:
    """dadf.grid.cells -> dadf.grid; dadf.atomic -> dadf.atomic (a top-level module is a unit of its own)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(path: Path) -> set[str]:
    """Every dadf module a file imports, at any depth of the file (functions included)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dadf")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dadf") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()}
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE.parent))
        src = _unit(rel[:-3].replace("/", ".").removesuffix(".__init__"))
        for target in _imports(path):
            dst = _unit(target)
            if dst != src and dst != "dadf" and (rel, dst) not in ALLOWED:
                edges.setdefault(src, set()).add(dst)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_import_cycle_between_subpackages():
    cycle = _cycle(_graph())
    assert cycle is None, f"import cycle between subpackages: {' -> '.join(cycle)}"


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
