"""The pure modules import no heavy framework: checked in a fresh interpreter (a subprocess)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "prefect", "mlflow", "diffusers", "zarr", "dask", "statsmodels", "transformers")
REPO = Path(__file__).resolve().parents[1]


def _heavy_modules_loaded_by(module: str, heavy: tuple[str, ...]) -> list[str]:
    """Import `module` in a fresh interpreter; return the packages of `heavy` it loaded."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("module", ["certseg.stats", "certseg.data.base", "certseg.redact"])
def test_pure_module_loads_no_heavy_framework(module: str) -> None:
    assert _heavy_modules_loaded_by(module, HEAVY) == []


def test_the_probe_sees_an_import() -> None:
    """The probe is not blind: certseg.stats does load scipy, and the probe reports it."""
    assert _heavy_modules_loaded_by("certseg.stats", ("scipy", "torch")) == ["scipy"]


MLFLOW_HOME = "certseg/tracking"
"""The one place that imports mlflow (docs/architecture.md)."""


def mlflow_importers(roots: tuple[str, ...]) -> set[str]:
    """Repository-relative paths of the .py files under `roots` with any `import mlflow...` or
    `from mlflow... import` statement, at any depth (function-local and type-only included)."""
    found: set[str] = set()
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )
                if any(name.split(".")[0] == "mlflow" for name in names):
                    found.add(path.relative_to(REPO).as_posix())
    return found


def test_only_the_tracking_package_imports_mlflow() -> None:
    importers = mlflow_importers(("certseg", "flows", "tasks"))
    assert f"{MLFLOW_HOME}/log.py" in importers  # the scan sees the real imports
    assert {path for path in importers if not path.startswith(f"{MLFLOW_HOME}/")} == set()


def test_the_mlflow_scan_sees_a_stray_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function-local `from mlflow.x import y` outside the tracking package is reported."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from mlflow.tracking import X\n")
    (tmp_path / "pkg" / "b.py").write_text("import json\nimport mlflowish\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert mlflow_importers(("pkg",)) == {"pkg/a.py"}


def test_importing_the_tracking_package_loads_no_mlflow() -> None:
    """mlflow is imported by the functions that need it, so `certseg.tracking` is cheap to
    import (the CLI's --help, the run steps that only hash files)."""
    assert _heavy_modules_loaded_by("certseg.tracking", ("mlflow",)) == []
