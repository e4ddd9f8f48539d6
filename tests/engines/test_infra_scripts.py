"""infra/local/*.sh: syntax (default run) and, marked slow, the whole loopback stack up and down."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.engines.engine_procs import (
    BIN,
    REPO_ROOT,
    PrefectServer,
    flow_run_logs,
    free_port,
    http_ok,
    port_open,
    prefect_api,
    standin_models,
    tiny_flow_config,
)

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


# A bind address on a command line: `--host X`, `-H X`, `--dashboard-address X`, `--listen-address`.
_BIND_FLAG = re.compile(r"(?:--host|-H|--dashboard-address|--listen-address)[ =](\S+)")


def test_every_service_binds_the_bind_variable_default_loopback(tmp_path: Path) -> None:
    """Item 7 of issue 13: no script binds a literal address; the variable defaults to 127.0.0.1,
    and another value is honoured (loopback kept for local clients) with a warning."""
    flags = []
    for script in SCRIPTS:
        for line in script.read_text().replace("\\\n", " ").splitlines():  # joined continuations
            if "start_bg " not in line or line.lstrip().startswith("#"):
                continue  # only the commands that start a service
            for value in _BIND_FLAG.findall(line):
                flags.append(value)
                assert value.strip('"').startswith(("$BIND_HOST", "$HOST")), (script.name, line)
    assert len(flags) == 6  # prefect, dask scheduler + dashboard + workers, mlflow, moto
    lib = REPO_ROOT / "infra" / "local" / "lib.sh"
    base = {k: v for k, v in os.environ.items() if k != "CERTSEG_BIND_HOST"}

    def hosts(**env: str) -> tuple[str, str]:
        full = dict(base, CERTSEG_INFRA_STATE=str(tmp_path / "state"), **env)
        done = subprocess.run(
            ["bash", "-c", f'source "{lib}"; echo "$BIND_HOST $HOST"'],
            env=full,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip(), done.stderr

    assert hosts() == ("127.0.0.1 127.0.0.1", "")
    out, warning = hosts(CERTSEG_BIND_HOST="0.0.0.0")
    assert out == "0.0.0.0 127.0.0.1" and "not loopback" in warning
    out, warning = hosts(CERTSEG_BIND_HOST="10.0.0.5")
    assert out == "10.0.0.5 10.0.0.5" and "Exposing beyond one machine safely" in warning


def test_readme_commands_bind_loopback() -> None:
    """Every command block of infra/README.md binds 127.0.0.1; the page says how to expose each
    engine safely."""
    readme = (REPO_ROOT / "infra" / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.DOTALL)
    commands = "\n".join(blocks)
    assert "0.0.0.0" not in commands
    binds = _BIND_FLAG.findall(commands)
    assert len(binds) >= 4 and all(v.startswith("127.0.0.1") for v in binds), binds
    section = readme.split("## Exposing beyond one machine safely", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "**Dask**",
        "REQUIRE_ENCRYPTION",
        "**Prefect server**",
        "PREFECT_SERVER_API_AUTH_STRING",
        "**MLflow**",
        "basic-auth",
        "**MinIO / S3**",
    ):
        assert needed in section, needed


def _run_cluster_deployment(exports: dict[str, str], tmp_path: Path) -> None:
    import s3fs

    from certseg.storage import SampleStore
    from certseg.tracking import read_run

    server = PrefectServer(api_url=exports["PREFECT_API_URL"], home=tmp_path, env={})
    config = tiny_flow_config(standin_models(tmp_path / "models"), tmp_path)
    store_url = f"s3://certseg/stores/{uuid.uuid4().hex}.zarr"
    # The command infra/README.md documents; storage_options stay {} (the deployment's default):
    # credentials and endpoint come from the environment up.sh gave the worker and Dask workers.
    command = [
        str(BIN / "prefect"),
        "deployment",
        "run",
        "certify-dataset-on-dask/certseg-cluster",
        "--param",
        f"config={config}",
        "--param",
        f"store_url={store_url}",
        "--param",
        f"dask_address={exports['CERTSEG_DASK_ADDRESS']}",
        "--param",
        f"tracking_uri={exports['MLFLOW_TRACKING_URI']}",
        "--param",
        f"out_dir={tmp_path / 'results'}",
        "--watch",
        "--watch-timeout",
        "300",
    ]
    env = dict(os.environ, PREFECT_API_URL=exports["PREFECT_API_URL"])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    run = prefect_api(server, "GET", f"/flow_runs/{match.group(1)}")
    state = (run.get("state") or {}).get("type")
    assert result.returncode == 0 and state == "COMPLETED", (
        f"{state}; logs:\n{flow_run_logs(server, run['id'])}"
    )
    assert run["work_queue_name"] == "cluster"

    options = {"key": exports["AWS_ACCESS_KEY_ID"], "secret": exports["AWS_SECRET_ACCESS_KEY"]}
    options["endpoint_url"] = exports["AWS_ENDPOINT_URL"]
    store = SampleStore.open(store_url, storage_options=options, read_only=True)
    assert all(
        store.counts_n(0.25, variant, image) == store.n  # persisted by the Dask workers
        for variant in store.variants
        for image in range(store.num_images)
    )
    tracking = exports["MLFLOW_TRACKING_URI"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    logged = read_run(runs[0].info.run_id, tracking_uri=tracking)
    assert logged.tags["config_id"] == store.config_id
    assert "results.parquet" in logged.artifacts
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    assert any(key.endswith("results.parquet") for key in fs.find("certseg/mlflow-artifacts"))


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.mark.slow
def test_up_run_cluster_deployment_then_down(tmp_path: Path) -> None:
    """up.sh starts S3, MLflow, Dask, Prefect (server + worker) and deploys prefect.yaml; a run of
    `certseg-cluster` completes with the store on S3 (credentials only from the environment the
    scripts gave the worker and the Dask workers), aggregation on the Dask scheduler and lineage
    on the MLflow server (artifacts proxied to S3); down.sh stops everything."""
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
        assert {"certseg-local", "certseg-cluster", "certseg-gpu", "recertify-local"} <= deployments
        _run_cluster_deployment(exports, tmp_path)
    finally:
        down = subprocess.run(
            [str(local / "down.sh")], env=env, capture_output=True, text=True, timeout=300
        )
    assert down.returncode == 0, down.stderr[-3000:]
    assert not any(_alive(p) for p in state.glob("*.pid"))
    assert not list(state.glob("*.pid"))
    assert not port_open(ports["prefect"]) and not port_open(ports["dask"])
