"""Real engines on 127.0.0.1 for the engine tests: a Dask cluster, an S3 API, a Prefect server.

Every fixture here starts real OS processes (no in-process stand-ins), on free loopback ports,
waits for them to answer with a bounded timeout, and always stops them at teardown: each process
is started in its own session (process group) and the whole group is sent SIGTERM, then SIGKILL,
right after the last test of this directory (or at the end of the session).

- ``dask_cluster``: ``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 1`` (two worker
  processes behind nannies), workers with one BLAS/torch thread.
- ``s3_server``: ``python -m moto.server`` with a bucket created through s3fs.
- ``prefect_server``: ``prefect server start`` with a temporary PREFECT_HOME (its own SQLite DB).
- ``prefect_worker``: a ``process`` work pool on that server, ``prefect worker start`` polling it.

A missing engine makes a fixture raise, so the test FAILS rather than skips: these engines are
dependencies of the dev install (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines.engine_procs import (
    BIN,
    DASK_WORKERS,
    ENGINE_TESTS,
    HOST,
    REPO_ROOT,
    S3_BUCKET,
    START_TIMEOUT_S,
    WORK_POOL,
    DaskCluster,
    EngineProcess,
    PrefectServer,
    PrefectWorker,
    S3Server,
    engine_env,
    http_ok,
    port_open,
    prefect_api,
    run_cli,
    start_engine,
    start_listening,
    stop_all,
    wait_ready,
)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the engines right after the last engine test, rather than at the end of the whole
    session, so they do not idle through the rest of the suite. (Engine tests are contiguous
    in pytest's default order; the fixtures' own teardown then finds them stopped.)"""
    if nextitem is None or ENGINE_TESTS not in nextitem.path.parents:
        stop_all()


@pytest.fixture(scope="session")
def engine_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory all engine logs go to (kept after the run for debugging)."""
    return tmp_path_factory.mktemp("engine-logs")


# --------------------------------------------------------------------------- Prefect


@pytest.fixture(scope="session")
def prefect_server(
    engine_logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """``prefect server start`` with its own PREFECT_HOME (SQLite inside it), no UI."""
    home = tmp_path_factory.mktemp("prefect-home")
    server_env = engine_env(
        PREFECT_HOME=str(home),
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    proc, port = start_listening(
        "prefect-server",
        lambda port: [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)],
        server_env,
        engine_logs,
        ready=lambda port: http_ok(f"http://{HOST}:{port}/api/health"),
    )
    api_url = f"http://{HOST}:{port}/api"
    client_env = engine_env(
        PREFECT_HOME=str(home), PREFECT_API_URL=api_url, PREFECT_LOGGING_LEVEL="WARNING"
    )
    try:
        yield PrefectServer(api_url=api_url, home=home, env=client_env)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: PrefectServer, engine_logs: Path) -> Iterator[PrefectWorker]:
    """Create the process work pool, start ``prefect worker start`` on it, wait until it polls.

    The worker gets ``CERTSEG_ROOT`` (the repository), which the ``pull`` step of prefect.yaml
    uses as the flow run's working directory, and polls every second.
    """
    env = dict(prefect_server.env)
    run_cli(
        [str(BIN / "prefect"), "work-pool", "create", WORK_POOL, "--type", "process"],
        env,
        timeout=60.0,
    )
    worker_name = "certseg-test-worker"
    worker_env = dict(
        env,
        CERTSEG_ROOT=str(REPO_ROOT),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
    )
    proc = start_engine(
        "prefect-worker",
        [
            str(BIN / "prefect"),
            "worker",
            "start",
            "--pool",
            WORK_POOL,
            "--type",
            "process",
            "--name",
            worker_name,
            "--install-policy",
            "never",
        ],
        worker_env,
        engine_logs,
    )

    def polling() -> bool:
        try:
            path = f"/work_pools/{WORK_POOL}/workers/filter"
            workers = prefect_api(prefect_server, "POST", path, {})
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(w.get("name") == worker_name for w in workers)

    try:
        wait_ready(proc, polling, f"heartbeat on work pool {WORK_POOL!r}")
        yield PrefectWorker(server=prefect_server, pool=WORK_POOL, name=worker_name)
    finally:
        proc.stop()


# --------------------------------------------------------------------------- Dask


@pytest.fixture(scope="session")
def dask_cluster(
    engine_logs: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: PrefectServer
) -> Iterator[DaskCluster]:
    """``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 1`` with one BLAS thread each.

    The workers share the standing Prefect server's PREFECT_API_URL: Prefect tasks submitted
    through a DaskTaskRunner report to it (without it, each worker would start its own server).
    """
    from distributed import Client

    env = dict(prefect_server.env)
    scheduler, port = start_listening(
        "dask-scheduler",
        lambda port: [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-dashboard",
        ],
        env,
        engine_logs,
        ready=port_open,
    )
    address = f"tcp://{HOST}:{port}"
    workers: EngineProcess | None = None
    try:
        workers = start_engine(
            "dask-workers",
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nworkers",
                str(DASK_WORKERS),
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "2GiB",
                "--local-directory",
                str(tmp_path_factory.mktemp("dask-worker-space")),
            ],
            env,
            engine_logs,
        )
        with Client(address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(DASK_WORKERS, timeout=START_TIMEOUT_S)
            if workers.popen.poll() is not None:
                raise RuntimeError("dask workers exited; log:\n" + workers.log_tail())
        yield DaskCluster(address=address, n_workers=DASK_WORKERS)
    finally:
        if workers is not None:
            workers.stop()
        scheduler.stop()


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def s3_server(engine_logs: Path) -> Iterator[S3Server]:
    """``python -m moto.server`` on a free port, with bucket ``certseg-test`` made through s3fs."""
    import s3fs

    proc, port = start_listening(
        "moto-s3",
        lambda port: [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        engine_env(),
        engine_logs,
        ready=lambda port: http_ok(f"http://{HOST}:{port}/moto-api/"),
    )
    server = S3Server(endpoint_url=f"http://{HOST}:{port}", bucket=S3_BUCKET)
    try:
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
        fs.mkdir(S3_BUCKET)
        yield server
    finally:
        proc.stop()
