"""The package's floors, read from its own import statements: imports point down (or sideways
within a floor), no module imports itself back through others, and no file grows past the cap.
docs/architecture.md describes the floors."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "revsnn"
MAX_LINES = 450

#: floor of each top-level part of the package (a higher number is a higher floor); "" is the
#: package's own __init__ (the public API, on the models' floor)
FLOORS: Dict[str, int] = {
    "spiking": 0, "reversible": 0, "data": 0, "units": 0, "errors": 0, "interop": 0,
    "models": 1, "": 1,
    "measure": 2,
    "bench": 3, "plan": 3, "export": 3,
    "train": 4,
    "cli": 5, "__main__": 5,
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, is_package: bool, source: str, modules: Dict[str, Path]) -> Set[str]:
    """The package's modules that module ``name`` imports, anywhere in its source (function
    bodies included): ``from .x import y`` names module ``x.y`` when that is a module, else
    ``x``."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [(module, [a.name for a in node.names])]
        else:
            continue
        for module, names in targets:
            if module != "revsnn" and not module.startswith("revsnn."):
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            out.update(subs if subs and len(subs) == len(names) else [module, *subs])
    out.discard(name)
    return {m for m in out if m in modules}


def _floor_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = _modules()
GRAPH = {name: _imports(name, path.name == "__init__.py", path.read_text(), MODULES)
         for name, path in MODULES.items()}


def test_every_part_of_the_package_has_a_floor():
    missing = sorted({_floor_key(m) for m in GRAPH} - set(FLOORS))
    assert not missing, f"give these parts of the package a floor in FLOORS: {missing}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    """No module imports a module of a higher floor."""
    here = FLOORS[_floor_key(module)]
    up = sorted(t for t in GRAPH[module] if FLOORS[_floor_key(t)] > here)
    assert not up, f"{module} (floor {here}) imports higher floors: {up}"


def test_no_import_cycle():
    """Depth-first search over the module graph; a back edge is a cycle."""
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack: List[str] = []
    cycles: List[List[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_floors_see_a_known_upward_import():
    """The checker itself: an upward import written in a file is found (not a test that
    cannot fail)."""
    source = ("from ..reversible import mode\n"
              "def f():\n    from ..train.loop import run\n    import revsnn.bench.timing\n")
    found = _imports("revsnn.models.probe", False, source, MODULES)
    assert found == {"revsnn.reversible.mode", "revsnn.train.loop", "revsnn.bench.timing"}
    assert [t for t in sorted(found) if FLOORS[_floor_key(t)] > FLOORS["models"]] == [
        "revsnn.bench.timing", "revsnn.train.loop"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: _name(p))
def test_no_source_file_over_the_cap(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(SRC)} has {n} lines (cap {MAX_LINES})"
