"""The package's shape: every module imports, no two subpackages of dadf import each other, and inside each
subpackage no two modules do (imports inside functions count too: a cycle hidden in a function is still a cycle)."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import dadf

PACKAGE = Path(dadf.__file__).parent
ALLOWED: set[tuple[str, str]] = set()  # (file, unit) edges allowed against the layering: none


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


# ---------------------------------------------------------------------------------------------------------------
# Inside a subpackage: no two of its modules import each other, directly or round a longer loop (function-level
# imports count). A sub-subpackage is one module of its parent; a package's own __init__ is the package itself,
# not one of its modules (a registry's __init__ importing the modules that register with it is no cycle).

SUBPACKAGES = sorted(".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("*/__init__.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _targets(path: Path) -> set[str]:
    """Every dadf module a file imports, at any depth of the file, relative imports resolved."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dadf")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.startswith("dadf"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
    return found


def _inner_graph(package: str) -> dict[str, set[str]]:
    """Edges between the modules of `package` (its sub-subpackages as one module each)."""
    def unit(module: str) -> str | None:
        if not module.startswith(package + "."):
            return None
        return f"{package}.{module[len(package) + 1:].split('.')[0]}"

    edges: dict[str, set[str]] = {}
    for path in (PACKAGE.parent / package.replace(".", "/")).rglob("*.py"):
        src = unit(_module_name(path))
        for target in _targets(path) if src else ():
            dst = unit(target)
            if dst and dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_no_import_cycle_inside_a_subpackage(package):
    cycle = _cycle(_inner_graph(package))
    assert cycle is None, f"import cycle inside {package}: {' -> '.join(cycle)}"


def test_the_inner_graph_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "dadf" / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "c.py"):
        (pkg / name).write_text("")
    (pkg / "a.py").write_text("from dadf.pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import d\n")  # function-level, relative, to a subpackage
    (pkg / "sub" / "d.py").write_text("from ... import pkg\nfrom ..a import x\n")  # the package itself: no edge
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "dadf")
    assert _inner_graph("dadf.pkg") == {"dadf.pkg.a": {"dadf.pkg.b"}, "dadf.pkg.b": {"dadf.pkg.sub"},
                                        "dadf.pkg.sub": {"dadf.pkg.a"}}
    assert _cycle(_inner_graph("dadf.pkg")) == ["dadf.pkg.a", "dadf.pkg.b", "dadf.pkg.sub", "dadf.pkg.a"]
