"""The import graph of certseg/, flows/ and tasks/ has no cycle and follows the layers written in
docs/architecture.md (the table between `<!-- layers:begin -->` and `<!-- layers:end -->`).

Static: every module's source is parsed (ast) and every import counts — top-level, inside a
function, under `if TYPE_CHECKING:` — since each is a dependency a reader has to follow. flows/ and
tasks/ are the packages certseg.flows and certseg.tasks (pyproject.toml's package-dir); this test
also checks that pyproject.toml lists exactly the packages on disk.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"
PACKAGE_DIRS = {
    "certseg": REPO / "certseg",
    "certseg.flows": REPO / "flows",
    "certseg.tasks": REPO / "tasks",
}

KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()
"""Cycles tolerated: none (the data registry ↔ loaders cycle was removed in issue 14)."""


# --- reading the tree and the layers -----------------------------------------------------------


def module_files() -> dict[str, Path]:
    """Module name → file, for every .py file of the three package folders."""
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imported_modules(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The certseg modules `name` imports anywhere in its source (resolved to a module of
    `known`: `from a.b import c` is a.b.c when that is a module, else a.b)."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        # one group of candidate names per imported name, most specific first
        groups: list[list[str]] = []
        if isinstance(node, ast.Import):
            groups = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            groups = [[f"{base}.{alias.name}", base] for alias in node.names]
        for group in groups:
            if group[0].split(".")[0] in ("flows", "tasks"):
                found.add(group[0])  # the old top-level names: reported as in no layer
                continue
            for target in group:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
                    break
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the certseg modules it imports."""
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def read_layers(text: str) -> dict[str, int]:
    """Unit (a module or package name) → layer number, from the marked Markdown table."""
    match = re.search(r"<!-- layers:begin -->(.*?)<!-- layers:end -->", text, re.S)
    assert match, f"{ARCHITECTURE}: no <!-- layers:begin --> ... <!-- layers:end --> table"
    layers: dict[str, int] = {}
    for line in match.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        for unit in re.findall(r"`([a-z_.]+)`", cells[2]):
            assert unit not in layers, f"{ARCHITECTURE}: {unit} is in two layers"
            layers[unit] = int(cells[0])
    assert layers, f"{ARCHITECTURE}: the layers table lists no unit"
    return layers


def unit_of(module: str, layers: Mapping[str, int]) -> str | None:
    """The longest declared unit that is `module` or one of its packages."""
    candidates = [u for u in layers if module == u or module.startswith(u + ".")]
    return max(candidates, key=len) if candidates else None


# --- the checks, as functions (unit-tested below on small graphs) --------------------------------


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_violations(graph: Mapping[str, Iterable[str]], layers: Mapping[str, int]) -> list[str]:
    """Each import that is not down the layers (same unit excepted), and each undeclared module."""
    problems = []
    for module in sorted(graph):
        unit = unit_of(module, layers)
        if unit is None:
            problems.append(f"{module}: in no layer of {ARCHITECTURE.name}")
            continue
        for target in sorted(graph[module]):
            other = unit_of(target, layers)
            if other is None:
                problems.append(f"{module} imports {target}, which is in no layer")
            elif other != unit and layers[other] >= layers[unit]:
                problems.append(
                    f"{module} (layer {layers[unit]}) imports {target} (layer {layers[other]}): "
                    "imports only go down"
                )
    return problems


# --- the tests -----------------------------------------------------------------------------------


def test_no_import_cycle() -> None:
    cycles = set(find_cycles(import_graph()))
    assert cycles - KNOWN_CYCLES == set(), [sorted(c) for c in cycles - KNOWN_CYCLES]
    gone = KNOWN_CYCLES - cycles
    assert not gone, f"cycle(s) fixed, remove from KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def test_imports_only_go_down_the_documented_layers() -> None:
    graph = import_graph()
    layers = read_layers(ARCHITECTURE.read_text())
    assert layer_violations(graph, layers) == []
    declared_but_absent = [u for u in layers if not any(unit_of(m, {u: 0}) for m in graph)]
    assert declared_but_absent == [], "the layers table names modules that do not exist"


def test_the_checks_can_fail() -> None:
    """The checker finds a planted cycle, an upward import, a sideways one, an undeclared module
    and a function-local import of the old top-level `tasks` package."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        frozenset({"a", "b", "c"})
    ]
    layers = {"low": 0, "mid": 1, "mid2": 1, "high": 2}
    graph = {"low.x": {"high"}, "mid": {"mid2"}, "high": {"low.x"}, "stray": set()}
    problems = layer_violations(graph, layers)
    assert any(p.startswith("low.x (layer 0) imports high") for p in problems)
    assert any(p.startswith("mid (layer 1) imports mid2 (layer 1)") for p in problems)
    assert any(p.startswith("stray: in no layer") for p in problems)
    assert not any(p.startswith("high") for p in problems)


def test_function_local_and_old_package_imports_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from certseg.run.context import RunContext\n"
        "def f():\n    from tasks.certify import is_transient\n    import certseg.stats\n"
    )
    found = imported_modules("certseg.m", source, module_files())
    assert found == {"certseg.run.context", "tasks.certify.is_transient", "certseg.stats"}


def test_pyproject_lists_every_package_on_disk() -> None:
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert listed == on_disk


@pytest.mark.parametrize("name", sorted(module_files()))
def test_every_module_states_its_job_first(name: str) -> None:
    """Each module's docstring starts with one line naming its job."""
    path = module_files()[name]
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and docstring.splitlines()[0].strip(), f"{path}: no first docstring line"
