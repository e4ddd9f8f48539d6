"""Each set of string options (a typing.Literal) is declared once in certseg/, imported elsewhere.

Read from the source with ast: every `Literal[...]` subscript, whether bound to a name
(`Correction = Literal["holm", "bonferroni"]`) or written inline in an annotation.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("certseg", "flows", "tasks")
"""Folders scanned."""


def literal_options(tree: ast.AST) -> list[tuple[frozenset[str], int]]:
    """(the string options, line) of every Literal[...] subscript of `tree` with >= 1 string."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Subscript):
            continue
        name = node.value
        if not (
            (isinstance(name, ast.Name) and name.id == "Literal")
            or (isinstance(name, ast.Attribute) and name.attr == "Literal")
        ):
            continue
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        options = frozenset(
            item.value
            for item in items
            if isinstance(item, ast.Constant) and isinstance(item.value, str)
        )
        if options:
            found.append((options, node.lineno))
    return found


def declarations(roots: tuple[str, ...]) -> dict[frozenset[str], list[str]]:
    """String-option set → "path:line" of each Literal declaring it under `roots`."""
    seen: dict[frozenset[str], list[str]] = defaultdict(list)
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for options, line in literal_options(tree):
                seen[options].append(f"{path.relative_to(REPO)}:{line}")
    return seen


def test_the_scan_sees_inline_and_named_literals() -> None:
    tree = ast.parse(
        'A = Literal["x", "y"]\n'
        'def f(c: typing.Literal["y", "x"] = "x") -> Literal["auto"] | bool: ...\n'
    )
    found = sorted((line, sorted(options)) for options, line in literal_options(tree))
    assert found == [(1, ["x", "y"]), (2, ["auto"]), (2, ["x", "y"])]


def test_each_literal_is_declared_once() -> None:
    seen = declarations(ROOTS)
    assert frozenset({"holm", "bonferroni"}) in seen  # the scan reads the real tree
    repeated = {tuple(sorted(options)): where for options, where in seen.items() if len(where) > 1}
    assert repeated == {}


def test_each_shared_literal_has_one_home() -> None:
    """Where the shared option sets live (the lowest module that needs each)."""
    from certseg import config, noise
    from certseg.data import spec as data_spec
    from certseg.models import spec as models_spec
    from certseg.stats import correction

    assert config.Correction is correction.Correction
    assert config.TimestepRule is noise.TimestepRule
    homes = {
        ("bonferroni", "holm"): "certseg/stats/correction.py",
        ("laousy2023", "matched"): "certseg/noise.py",
        ("cityscapes", "folder", "pascal_context", "synthetic"): "certseg/data/spec.py",
        ("compact", "module", "python", "segformer", "torchscript"): "certseg/models/spec.py",
        ("resize", "tiled"): "certseg/noise.py",
    }
    seen = declarations(ROOTS)
    for options, home in homes.items():
        [where] = seen[frozenset(options)]
        assert where.split(":")[0] == home, (options, where)
    assert data_spec.DATASET_KINDS == ("synthetic", "cityscapes", "pascal_context", "folder")
    assert models_spec.FAMILY_NAMES == ("compact", "module", "python", "torchscript", "segformer")
    assert noise.TIMESTEP_RULES == ("matched", "laousy2023")
