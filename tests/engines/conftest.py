"""Real engines on 127.0.0.1 for the engine tests: a Dask cluster, an S3 API, a Prefect server.

Every fixture here starts real OS processes (no in-process stand-ins), on free loopback ports,
waits for them to answer with a bounded timeout, and always stops them at teardown: each process
is started in its own session (process group) and the whole group is sent SIGTERM, then SIGKILL.

- ``dask_cluster``: ``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 1`` (two worker
  processes behind nannies), workers with one BLAS/torch thread.
- ``s3_server``: ``python -m moto.server`` with a bucket created through s3fs.
- ``prefect_server``: ``prefect server start`` with a temporary PREFECT_HOME (its own SQLite DB).
- ``prefect_worker``: a ``process`` work pool on that server, ``prefect worker start`` polling it.

A missing engine makes a fixture raise, so the test FAILS rather than skips: these engines are
dependencies of the dev install (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ENGINE_TESTS = Path(__file__).resolve().parent
REPO_ROOT = ENGINE_TESTS.parents[1]
HOST = "127.0.0.1"
BIN = Path(sys.executable).parent

# Bounded waits (seconds). Generous: the CI box has 2 shared cores.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0

# moto accepts any credentials; these are the conventional fake ones.
S3_KEY = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"
S3_BUCKET = "certseg-test"

WORK_POOL = "certseg-process"


# --------------------------------------------------------------------------- process helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """Whether GET ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def engine_env(**overrides: str) -> dict[str, str]:
    """The environment for an engine process: the test env, one thread, no telemetry.

    ``PREFECT_API_URL`` is dropped unless given in ``overrides``, so no engine talks to a
    server it was not pointed at.
    """
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        DO_NOT_TRACK="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONUNBUFFERED="1",
        # engine_jobs.py: functions the tests ship to Dask workers by reference.
        PYTHONPATH=os.pathsep.join(
            p for p in (str(ENGINE_TESTS), os.environ.get("PYTHONPATH", "")) if p
        ),
    )
    env.update(overrides)
    return env


@dataclass
class EngineProcess:
    """One started engine: its Popen handle and the file its stdout/stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the process log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text[-chars:]

    def stop(self) -> None:
        """SIGTERM the process group, wait (bounded), then SIGKILL whatever is left of it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        # The leader may be gone while children (nannies, flow-run subprocesses) linger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_TIMEOUT_S)


def start_engine(
    name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path | None = None
) -> EngineProcess:
    """Start ``argv`` in its own process group with output to ``log_dir/name.log``."""
    executable = argv[0]
    if shutil.which(executable) is None:
        raise RuntimeError(f"engine {name!r}: executable {executable!r} not found")
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    try:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=str(cwd or REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log_file.close()
    return EngineProcess(name=name, popen=popen, log_path=log_path)


def wait_ready(
    proc: EngineProcess, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S
) -> None:
    """Poll ``ready`` until true; raise (with the log tail) on exit or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        code = proc.popen.poll()
        if code is not None:
            raise RuntimeError(
                f"engine {proc.name!r} exited with code {code} before {what}; log:\n"
                + proc.log_tail()
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"engine {proc.name!r}: no {what} within {timeout:.0f} s; log:\n" + proc.log_tail()
            )
        time.sleep(0.25)


def start_listening(
    name: str,
    make_argv: Callable[[int], Sequence[str]],
    env: Mapping[str, str],
    log_dir: Path,
    ready: Callable[[int], bool],
    attempts: int = 3,
) -> tuple[EngineProcess, int]:
    """Start a server on a free port; retry on another port if it dies (e.g. the port was taken)."""
    last_error: RuntimeError | None = None
    for _ in range(attempts):
        port = free_port()
        proc = start_engine(name, make_argv(port), env, log_dir)
        try:
            wait_ready(proc, lambda port=port: ready(port), f"answer on port {port}")
        except RuntimeError as error:
            proc.stop()
            last_error = error
            continue
        return proc, port
    assert last_error is not None
    raise last_error


def run_cli(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = 120.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short CLI command to completion; raise with its output if it fails."""
    result = subprocess.run(
        list(argv),
        env=dict(env),
        cwd=str(cwd or REPO_ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"command {' '.join(argv)!r} failed with code {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def engine_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory all engine logs go to (kept after the run for debugging)."""
    return tmp_path_factory.mktemp("engine-logs")


# --------------------------------------------------------------------------- Prefect


@dataclass(frozen=True)
class PrefectServer:
    """A standing ``prefect server start`` on loopback."""

    api_url: str
    home: Path
    env: dict[str, str] = field(repr=False)  # for clients: PREFECT_API_URL + PREFECT_HOME set


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


def prefect_api(server: PrefectServer, method: str, path: str, body: Any = None) -> Any:
    """Call the Prefect REST API of ``server`` (JSON in, JSON out)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.api_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10.0) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


@dataclass(frozen=True)
class PrefectWorker:
    """A ``process`` work pool on ``server`` and one worker polling it."""

    server: PrefectServer
    pool: str
    name: str


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


@dataclass(frozen=True)
class DaskCluster:
    """A standing ``dask scheduler`` and its worker processes."""

    address: str  # tcp://127.0.0.1:PORT
    n_workers: int


DASK_WORKERS = 2


@pytest.fixture(scope="session")
def dask_cluster(
    engine_logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaskCluster]:
    """``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 1`` with one BLAS thread each."""
    from distributed import Client

    env = engine_env()
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


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on loopback with one bucket; how fsspec/s3fs reaches it."""

    endpoint_url: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` for ``s3://`` URLs on this server (explicit credentials)."""
        return {
            "key": S3_KEY,
            "secret": S3_SECRET,
            "endpoint_url": self.endpoint_url,
        }

    @property
    def env(self) -> dict[str, str]:
        """The same credentials as environment variables (how a deployed worker gets them)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def url(self, prefix: str) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"


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
