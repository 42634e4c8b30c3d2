"""The import graph: packages depend one way and no module imports itself back through others.

Every `import` counts, function-local ones included (an import moved into a function still ties the modules
together; it only hides the cycle from Python's loader).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("common", "factory", "search", "train", "toolwoz", "taubench", "sql")
# package -> the project packages it may import (architecture.md, "Dependency direction"); every package may
# import `common`, the ground floor, which imports none of them
ALLOWED = {
    "common": set(),
    "factory": {"common", "search", "train", "toolwoz", "taubench", "sql"},
    "search": {"common", "toolwoz"},
    "train": {"common"},
    "toolwoz": {"common", "sql"},
    "taubench": {"common", "sql"},  # an environment: search/ and factory/ reach it through search/environment.py
    "sql": {"common"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules that `path` imports anywhere in its body. `from a import b` counts the module a.b when b
    is one, else a (a package's own `__init__` is not counted for its submodules: Python runs it first anyway)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(path, set(modules)) - {name} for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_scan_sees_the_project() -> None:
    edges = graph()
    assert {"factory.cli", "factory.jobs.rollouts", "search.josh", "train.sft", "toolwoz.tools"} <= set(edges)
    assert "factory.store.runs" in edges["factory.jobs.rollouts"]


def test_no_import_cycle() -> None:
    assert cycle(graph()) is None, " -> ".join(cycle(graph()) or [])


def test_packages_import_one_way() -> None:
    wrong = sorted((module, target) for module, targets in graph().items() for target in targets
                   if (a := module.split(".")[0]) != (b := target.split(".")[0]) and b not in ALLOWED[a])
    assert wrong == []


def test_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


# factory/'s floors, bottom up: a module imports its own floor or those below (factory/__init__, errors, signals
# and output are the ground floor).
FLOORS = ("ground", "store", "present", "jobs", "cli")


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 2 and parts[1] in FLOORS else 0


def test_factory_floors_import_only_down() -> None:
    edges = graph()
    assert {floor(m) for m in edges if m.startswith("factory.")} == set(range(len(FLOORS))), "a floor is empty"
    up = sorted((m, t) for m, targets in edges.items() if m.startswith("factory")
                for t in targets if t.startswith("factory") and floor(t) > floor(m))
    assert up == []
