"""The pure modules import no heavy framework: checked in a fresh interpreter (a subprocess)."""

from __future__ import annotations

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
