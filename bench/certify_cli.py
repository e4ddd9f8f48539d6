"""One `certseg certify` process, end to end and timed, for the pipeline benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CERTSEG = Path(sys.executable).with_name("certseg")


def certify_cli(config: Path, work: Path, name: str) -> float:
    """Wall seconds of `certseg certify config` in a fresh process (imports, Prefect's ephemeral
    server, sampling, Dask, report, MLflow), its store `<name>.zarr`, results `<name>-results`,
    MLflow `mlruns.db` and Prefect home under `work` (the working directory)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    began = time.perf_counter()
    subprocess.run(
        [
            str(CERTSEG),
            "certify",
            str(config),
            "--store",
            str(work / f"{name}.zarr"),
            "--tracking-uri",
            f"sqlite:///{work / 'mlruns.db'}",
            "--out",
            str(work / f"{name}-results"),
            "--quiet",
        ],
        check=True,
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - began
