"""Process helpers and engine handles for the engine tests (fixtures live in conftest.py).

Every engine is a real OS process started in its own session (process group) with output to a log
file; readiness is polled with a bounded wait, and `EngineProcess.stop` sends SIGTERM to the
whole group, then SIGKILL. Test modules import the handles from here
(``from tests.engines.engine_procs import ...``): tests/ is a package, and pytest puts the
repository root on sys.path.
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
DASK_WORKERS = 2


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
        # tests/engines/engine_jobs.py: functions the tests ship to Dask workers by reference
        # (as tests.engines.engine_jobs, so the workers need the repository root).
        PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
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
    stopped: bool = False

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the process log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text[-chars:]

    def stop(self) -> None:
        """SIGTERM the process group, wait (bounded), then SIGKILL whatever is left of it.

        Only the first call signals (a later one could hit a reused process-group id).
        """
        if self.stopped:
            return
        self.stopped = True
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


RUNNING: list[EngineProcess] = []
"""Every engine started in this test session and not yet stopped, in start order."""


def stop_all() -> None:
    """Stop every running engine, the last started first."""
    while RUNNING:
        RUNNING.pop().stop()


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
    proc = EngineProcess(name=name, popen=popen, log_path=log_path)
    RUNNING.append(proc)
    return proc


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


# --------------------------------------------------------------------------- handles


@dataclass(frozen=True)
class PrefectServer:
    """A standing ``prefect server start`` on loopback."""

    api_url: str
    home: Path
    env: dict[str, str] = field(repr=False)  # for clients: PREFECT_API_URL + PREFECT_HOME set


# What Prefect's own client retries: the server answers 503 when its database is busy (a
# SQLite write lock held past its timeout on a loaded 2-core CI box) and rolls that request back.
RETRIED_HTTP_CODES = frozenset({429, 502, 503})


def prefect_api(
    server: PrefectServer, method: str, path: str, body: Any = None, *, attempts: int = 6
) -> Any:
    """Call the Prefect REST API of ``server`` (JSON in, JSON out).

    Retries the transient answers in ``RETRIED_HTTP_CODES`` with exponential backoff (0.5 s,
    1 s, 2 s, ...), as ``prefect.client`` does; any other error, or the last attempt's, is raised.
    """
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(
            server.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10.0) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            if error.code not in RETRIED_HTTP_CODES or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)
            continue
        return json.loads(payload) if payload else None
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PrefectWorker:
    """A ``process`` work pool on ``server`` and one worker polling it."""

    server: PrefectServer
    pool: str
    name: str


@dataclass(frozen=True)
class DaskCluster:
    """A standing ``dask scheduler`` and its worker processes."""

    address: str  # tcp://127.0.0.1:PORT
    n_workers: int


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


# --------------------------------------------------------------------------- flow inputs


@contextlib.contextmanager
def prefect_client_of(server: PrefectServer) -> Iterator[None]:
    """Run in-process flows against ``server`` (PREFECT_API_URL), then drain Prefect's log and
    event workers while it still answers: otherwise workers bound to it outlive it, and a later
    ``prefect_test_harness`` hangs draining them (seen with Prefect 3.9)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        try:
            yield
        finally:
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)


def standin_models(root: Path) -> Path:
    """The pipeline tests' stand-in models written under root (tests/pipeline_fixtures.py:
    seeded tiny torch modules and a tiny random diffusers UNet; plumbing, never results)."""
    from tests.pipeline_fixtures import make_models_dir

    return Path(make_models_dir(root))


def tiny_flow_config(models: Path, root: Path) -> Path:
    """Write root/tiny.yaml: 4 synthetic 32×32 images, σ = 0.25, two variants (segmenter alone;
    denoiser + segmenter), n0 = 3, n = 8 (one sample block each), 2 shards, one health image."""
    from tests.pipeline_fixtures import tiny_config_dict, write_config

    data = tiny_config_dict(models, root / "store.zarr", tracking_uri=f"sqlite:///{root}/ml.db")
    data["sigmas"] = [0.25]
    data["variants"] = [v for v in data["variants"] if v["name"] in ("clean", "denoised")]
    data["sampling"]["samples_per_chunk"] = 8
    data["health"]["num_images"] = 1
    return Path(write_config(root / "tiny.yaml", data))


def wait_for_flow_run(server: PrefectServer, run_id: str, timeout: float) -> dict[str, Any]:
    """Poll a flow run until it is in a terminal state or ``timeout`` s passed; the run."""
    deadline = time.monotonic() + timeout
    while True:
        run = prefect_api(server, "GET", f"/flow_runs/{run_id}")
        state = (run.get("state") or {}).get("type")
        if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} or time.monotonic() > deadline:
            return dict(run)
        time.sleep(1.0)


def flow_run_logs(server: PrefectServer, run_id: str, last: int = 30) -> str:
    """The last log messages of a flow run (for failure messages)."""
    logs = prefect_api(
        server, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}}
    )
    return "\n".join(str(entry["message"]) for entry in logs[-last:])
