"""certseg.data imports go one way: no cycle, nothing imports the registry, nothing reaches above.

Read from the source (every import statement, function-level ones included), so a cycle hidden at
run time by a lazy import is still seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "certseg"
DATA = PACKAGE / "data"


def certseg_imports(path: Path) -> set[str]:
    """Every certseg module `path` imports (`from certseg.x import y` counts as certseg.x.y when
    that is a module, else certseg.x), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py")
                found.add(candidate if is_module.is_file() else node.module)
    return {name for name in found if name == "certseg" or name.startswith("certseg.")}


def data_graph() -> dict[str, set[str]]:
    """certseg.data module → the certseg modules it imports."""
    return {f"certseg.data.{path.stem}": certseg_imports(path) for path in DATA.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for succ in sorted(graph.get(node, ())):
            if state.get(succ) == 1:
                return [*path[path.index(succ) :], succ]
            if succ not in state and (cycle := visit(succ)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from certseg.data.registry import open_dataset\n")
    assert certseg_imports(module) == {"certseg.data.registry"}


def test_certseg_data_has_no_import_cycle() -> None:
    graph = data_graph()
    assert "certseg.data.registry" in graph and "certseg.data.spec" in graph
    assert find_cycle(graph) is None


@pytest.mark.parametrize("path", sorted(DATA.glob("*.py")), ids=lambda p: p.stem)
def test_data_modules_import_nothing_above_them(path: Path) -> None:
    """Only the registry imports the loaders; a data module imports certseg.data modules only."""
    imported = certseg_imports(path)
    assert all(name.startswith("certseg.data.") for name in imported), imported
    if path.stem != "registry":
        assert "certseg.data.registry" not in imported


def test_config_imports_the_specs_not_the_loaders() -> None:
    """The run config sits beside the loaders: it imports the spec, not the registry or loaders."""
    imported = set().union(*(certseg_imports(path) for path in (PACKAGE / "config").glob("*.py")))
    assert "certseg.data.spec" in imported
    assert {name for name in imported if name.startswith("certseg.data.")} == {"certseg.data.spec"}
