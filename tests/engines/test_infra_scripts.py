"""infra/local/*.sh: syntax (default run) and, marked slow, the whole loopback stack up and down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from engine_procs import REPO_ROOT, free_port, http_ok, port_open

SCRIPTS = sorted((REPO_ROOT / "infra" / "local").glob("*.sh"))


def test_scripts_exist_and_parse() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"lib.sh", "s3.sh", "mlflow.sh", "dask.sh", "prefect.sh", "deploy.sh", "up.sh"} <= names
    assert "down.sh" in names
    bash = shutil.which("bash")
    assert bash is not None, "bash is required by infra/local"
    for script in SCRIPTS:
        result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        if script.name != "lib.sh":
            assert os.access(script, os.X_OK), f"{script.name} is not executable"


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.mark.slow
def test_up_then_down_on_loopback(tmp_path: Path) -> None:
    """up.sh starts S3, MLflow, Dask, Prefect (server + worker) and deploys; down.sh stops all."""
    ports = {name: free_port() for name in ("prefect", "dask", "dash", "s3", "mlflow")}
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(
        CERTSEG_INFRA_STATE=str(state),
        CERTSEG_PREFECT_PORT=str(ports["prefect"]),
        CERTSEG_DASK_PORT=str(ports["dask"]),
        CERTSEG_DASK_DASHBOARD_PORT=str(ports["dash"]),
        CERTSEG_S3_PORT=str(ports["s3"]),
        CERTSEG_MLFLOW_PORT=str(ports["mlflow"]),
    )
    local = REPO_ROOT / "infra" / "local"
    try:
        up = subprocess.run(
            [str(local / "up.sh")], env=env, capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in up.stdout.splitlines()
            if line.startswith("export ")
        )
        assert exports["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['prefect']}/api"
        assert exports["CERTSEG_DASK_ADDRESS"] == f"tcp://127.0.0.1:{ports['dask']}"
        assert http_ok(exports["PREFECT_API_URL"] + "/health")
        assert http_ok(exports["MLFLOW_TRACKING_URI"] + "/health")
        assert http_ok(exports["AWS_ENDPOINT_URL"] + "/moto-api/")
        assert port_open(ports["dask"])
        request = urllib.request.Request(
            exports["PREFECT_API_URL"] + "/deployments/filter",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            deployments = {d["name"] for d in json.loads(response.read())}
        assert {"certseg-local", "certseg-cluster"} <= deployments
    finally:
        down = subprocess.run(
            [str(local / "down.sh")], env=env, capture_output=True, text=True, timeout=300
        )
    assert down.returncode == 0, down.stderr[-3000:]
    assert not any(_alive(p) for p in state.glob("*.pid"))
    assert not list(state.glob("*.pid"))
    assert not port_open(ports["prefect"]) and not port_open(ports["dask"])
