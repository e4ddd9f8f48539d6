"""Kill -9 sweep: kill `certseg certify` at named points, resume it, compare with a clean run.

Usage (from the repository root; docs/reliability.md has the results):

    python scripts/kill_sweep.py --points all          # every point, a table at the end
    python scripts/kill_sweep.py --points sample-before-flag,mlflow-mid-log --keep /tmp/ks
    python scripts/kill_sweep.py --points default --chain   # one run killed at each in turn
    python scripts/kill_sweep.py --mlflow-migrations   # kill MLflow's first use per migration
    python scripts/kill_sweep.py --list                # the kill points

Black box: every run is the real CLI (`certseg certify`, Prefect flow, Zarr store, Dask
aggregation in this process's threads, results folder, MLflow on a fresh sqlite file) in a child
process of its own process group, on a config derived from configs/tiny.yaml (`sweep_config`).
The child wraps one named function (`KillPoint.target`) so that its k-th matching call kills the
whole process group with SIGKILL, before or after the real call; it also logs every block the
sampler draws, every completion flag and every health write to a JSON-lines file. Nothing in
certseg knows about this: the hooks are installed by monkeypatching in the child.

Each point: run with the kill (it must die by SIGKILL at that point, else the point is "not
reached"), run again without it (the resume), then compare the resumed run with an uninterrupted
reference run of the same config: every array of the store (samples, flags, clean predictions,
counts, health, targets), the certified maps re-derived from the store, results.csv value for
value except `TIME_COLUMNS`, results.md and config.yaml byte for byte, and the finished MLflow
run's metrics, params and artifact names. No block may be sampled twice: a block drawn again
on resume must be one the killed run drew but never flagged done (the block in flight).

The test tests/reliability/test_kill_resume.py loads this file and runs a chain of three points
by default and every point as a slow test. Points that fail on the current code carry
`known_failure` (the tests mark them xfail(strict=True)); remove it once the fix lands.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]

TIME_COLUMNS: tuple[str, ...] = ("samples_per_second",)
"""results.csv columns (and MLflow metric prefixes) that measure time, so differ run to run:
`samples_per_second` is the sampling rate of this run's own sampling (NaN where a resumed run
sampled nothing). Every other column is compared value for value."""

STORE_ATTRS: tuple[str, ...] = (
    "config_id",
    "config",
    "image_ids",
    "sigmas",
    "variants",
    "groups",
    "n0",
    "n",
    "num_classes",
    "dataset_manifest_sha256",
    "health_manifest_sha256",
    "models_sha256",
    "template_complete",
)
"""Root attributes of the store compared with the reference: its deterministic identity (not
code_version, which says "dirty" when the checkout changes between runs, nor whatever
run-specific marker a store may carry)."""

Matcher = Callable[[tuple[Any, ...], dict[str, Any]], bool]


# --- kill points ----------------------------------------------------------------------------


def _key_is(name: str) -> Matcher:
    """Match a `__setitem__(self, key, value)` call with this key."""
    return lambda args, kwargs: len(args) > 1 and args[1] == name


def _path_in_write_counts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """SampleStore._array(".../n") called from write_counts: the completion marker of counts."""
    return (
        len(args) > 1
        and str(args[1]).endswith("/n")
        and sys._getframe(2).f_code.co_name == "write_counts"
    )


@dataclass(frozen=True)
class KillPoint:
    """Where the child kills itself: the `nth` matching call of `target`, `when` before/after it.

    target: "module:attribute.path" (a function in a module or a method of a class).
    match: which calls count (None: all). known_failure: why it fails on the current code (the
    tests expect the failure, strictly); None when it must pass.
    """

    name: str
    stage: str
    target: str
    when: Literal["before", "after"]
    nth: int
    what: str
    match: Matcher | None = None
    known_failure: str | None = None
    default_run: bool = False


POINTS: tuple[KillPoint, ...] = (
    KillPoint(
        "validate-start",
        "validation",
        "certseg.data.registry:validate_dataset",
        "before",
        1,
        "before the dataset is validated (nothing written)",
    ),
    KillPoint(
        "validate-done",
        "validation",
        "certseg.data.registry:validate_dataset",
        "after",
        2,
        "both datasets validated, store not yet created",
    ),
    KillPoint(
        "store-mid-arrays",
        "store",
        "zarr.core.group:Group.create_array",
        "before",
        12,
        "store creation: root group written, 11 arrays created, the rest not",
    ),
    KillPoint(
        "store-before-complete",
        "store",
        "zarr.core.attributes:Attributes.__setitem__",
        "before",
        1,
        "store creation: every array and target written, template_complete not set",
        match=_key_is("template_complete"),
    ),
    KillPoint(
        "health-mid",
        "health",
        "certseg.storage.store:SampleStore.write_health",
        "after",
        1,
        "health check: the first variant of a denoiser group recorded, the second not",
    ),
    KillPoint(
        "sample-first-block",
        "sampling",
        "certseg.storage.store:SampleStore.write_samples",
        "before",
        1,
        "the first block sampled, nothing of it written",
    ),
    KillPoint(
        "sample-between-variants",
        "sampling",
        "certseg.storage.store:SampleStore.write_samples",
        "after",
        3,
        "a block's first variant written, its second variant and its flag not",
    ),
    KillPoint(
        "sample-before-flag",
        "sampling",
        "certseg.storage.store:SampleStore.mark_done",
        "before",
        3,
        "a block's samples all written, its completion flag not",
        default_run=True,
    ),
    KillPoint(
        "sample-after-flag",
        "sampling",
        "certseg.storage.store:SampleStore.mark_done",
        "after",
        5,
        "right after a block's completion flag",
    ),
    KillPoint(
        "aggregate-mid-counts",
        "aggregation",
        "certseg.storage.store:SampleStore._array",
        "before",
        2,
        "aggregation (Dask thread): an image's labels and k persisted, its counts n marker not",
        match=_path_in_write_counts,
        default_run=True,
    ),
    KillPoint(
        "aggregate-after-counts",
        "aggregation",
        "certseg.storage.store:SampleStore.write_counts",
        "after",
        3,
        "aggregation (Dask thread): three images' counts persisted, the rest not",
    ),
    KillPoint(
        "results-written",
        "report",
        "certseg.report:write_results",
        "after",
        1,
        "results.parquet/.csv written; results.md, plots and config copy not",
    ),
    KillPoint(
        "plots-mid",
        "plots",
        "certseg.report:plot_class_iou",
        "before",
        1,
        "accuracy_vs_radius.png written, class_iou.png and overlays.png not",
    ),
    KillPoint(
        "mlflow-db-tables",
        "tracking",
        "alembic.command:upgrade",
        "before",
        1,
        "fresh MLflow sqlite DB: initial tables created, no schema migration run yet",
    ),
    KillPoint(
        "mlflow-db-migration-1",
        "tracking",
        "alembic.runtime.migration:HeadMaintainer.update_to_step",
        "before",
        1,
        "fresh MLflow sqlite DB: the first schema migration run, its version not stamped",
    ),
    KillPoint(
        "mlflow-db-migration-40",
        "tracking",
        "alembic.runtime.migration:HeadMaintainer.update_to_step",
        "before",
        40,
        "fresh MLflow sqlite DB: 39 of 67 schema migrations stamped, the 40th run, not stamped",
    ),
    KillPoint(
        "mlflow-mid-log",
        "tracking",
        "mlflow.tracking.client:MlflowClient.log_batch",
        "before",
        2,
        "MLflow run created and its params logged; tags, metrics, artifacts not",
        default_run=True,
    ),
    KillPoint(
        "mlflow-before-end",
        "tracking",
        "mlflow.tracking.client:MlflowClient.set_terminated",
        "before",
        1,
        "everything logged to MLflow, the run not yet marked finished",
    ),
)

POINTS_BY_NAME: dict[str, KillPoint] = {point.name: point for point in POINTS}


# --- the child: hooks, then the real CLI -----------------------------------------------------


class EventLog:
    """Append-only JSON-lines log written with os.write (nothing buffered is lost on SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **event: Any) -> None:
        event["t"] = round(time.time(), 3)
        os.write(self.fd, (json.dumps(event, sort_keys=True) + "\n").encode())


def _resolve(target: str) -> tuple[Any, str]:
    """(owner object, attribute name) of "module:attr.path"."""
    import importlib

    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    parts = path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    if not hasattr(owner, parts[-1]):
        raise AttributeError(f"kill point target {target!r}: no attribute {parts[-1]!r}")
    return owner, parts[-1]


def _kill_group(log: EventLog, point: KillPoint) -> None:
    """Log the kill, then SIGKILL this process's whole group (the Prefect server with it)."""
    log.write(ev="kill", point=point.name)
    if os.getpgrp() == os.getpid():  # started as a group leader by the sweep: take the group
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner: Any, attr: str, wrapper_of: Callable[[Any], Any]) -> None:
    """Replace owner.attr by wrapper_of(original); class/static methods stay what they were."""
    original = vars(owner)[attr] if attr in vars(owner) else getattr(owner, attr)
    if isinstance(original, classmethod | staticmethod):
        setattr(owner, attr, type(original)(wrapper_of(original.__func__)))
    else:
        setattr(owner, attr, wrapper_of(original))


def _block_key(sigma: float, phase: str, image_id: str, start: int, group: str) -> str:
    return f"{float(sigma)!r}|{phase}|{image_id}|{start}|{group}"


STAGES: tuple[tuple[str, str], ...] = (
    ("load config", "certseg.run.context:read_config_file"),
    ("load models", "certseg.run.models:load_models"),
    ("validate", "certseg.data.registry:validate_dataset"),
    ("create store", "certseg.storage.store:SampleStore.create"),
    ("health", "certseg.run.health:run_health_check"),
    ("sample shard", "certseg.run.sample:sample_shard"),
    ("aggregate", "certseg.aggregate:aggregate_store"),
    ("results", "certseg.report:write_results"),
    ("plots", "certseg.report:write_plots"),
    ("mlflow", "certseg.tracking:log_run"),
)
"""Functions whose entry and exit the child logs (the run's timeline; not kill points)."""


def _install_logging(log: EventLog) -> None:
    """Log each sampled block, each completion flag, each health write and the STAGES."""
    import inspect

    import certseg.sampling
    from certseg.storage.store import SampleStore

    signature = inspect.signature(certseg.sampling.sample_class_maps)

    def sampler_wrapper(original: Any) -> Any:
        def sample(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            bound = signature.bind(*args, **kwargs).arguments
            denoised = "denoised" if bound.get("denoiser") is not None else "none"
            segmenters = ",".join(sorted(bound["segmenters"]))
            group = f"{denoised}:{segmenters}"
            log.write(
                ev="sample" if bound["phase"] in ("selection", "estimation") else "health-sample",
                key=_block_key(
                    bound["sigma"], bound["phase"], bound["image_key"], bound["start"], group
                ),
            )
            return result

        return sample

    def flag_wrapper(original: Any) -> Any:
        def mark_done(
            self: Any, sigma: float, group: str, phase: str, image: int, block: int
        ) -> Any:
            result = original(self, sigma, group, phase, image, block)
            denoised = "none" if group == "none" else "denoised"
            segmenters = ",".join(sorted({self.segmenter_of(v, sigma) for v in self.groups[group]}))
            start = self.blocks(phase)[block][0]
            log.write(
                ev="flag",
                key=_block_key(
                    sigma, phase, self.image_ids[image], start, f"{denoised}:{segmenters}"
                ),
            )
            return result

        return mark_done

    def health_wrapper(original: Any) -> Any:
        def write_health(self: Any, sigma: float, variant: str, index: int, **kw: Any) -> Any:
            result = original(self, sigma, variant, index, **kw)
            log.write(ev="health", key=f"{float(sigma)!r}|{variant}|{index}")
            return result

        return write_health

    def stage_wrapper(label: str) -> Callable[[Any], Any]:
        def wrapper_of(original: Any) -> Any:
            def staged(*args: Any, **kwargs: Any) -> Any:
                log.write(ev="enter", stage=label)
                result = original(*args, **kwargs)
                log.write(ev="leave", stage=label)
                return result

            return staged

        return wrapper_of

    for label, target in STAGES:
        _wrap(*_resolve(target), stage_wrapper(label))
    _wrap(certseg.sampling, "sample_class_maps", sampler_wrapper)
    _wrap(SampleStore, "mark_done", flag_wrapper)
    _wrap(SampleStore, "write_health", health_wrapper)


def install_kill(log: EventLog, point: KillPoint) -> None:
    owner, attr = _resolve(point.target)
    seen = 0

    def kill_wrapper(original: Any) -> Any:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            nonlocal seen
            hit = point.match is None or point.match(args, kwargs)
            if hit:
                seen += 1
            if hit and seen == point.nth and point.when == "before":
                _kill_group(log, point)
            result = original(*args, **kwargs)
            if hit and seen == point.nth and point.when == "after":
                _kill_group(log, point)
            return result

        return hooked

    _wrap(owner, attr, kill_wrapper)


def child_main(point_name: str, log_path: Path, certify_args: Sequence[str]) -> int:
    """In the child: install the hooks, then run `certseg certify <certify_args>`."""
    log = EventLog(log_path)
    _install_logging(log)
    if point_name != "none":
        install_kill(log, POINTS_BY_NAME[point_name])
    log.write(ev="start", point=point_name)
    from certseg.cli import app

    try:
        app(args=list(certify_args), prog_name="certseg")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        log.write(ev="exit", code=code)
        return code
    log.write(ev="exit", code=0)
    return 0


MIGRATION_STEP = "alembic.runtime.migration:HeadMaintainer.update_to_step"
"""Called once per MLflow schema migration, after it ran and before its version is stamped."""


def tracking_probe_main(nth: int, database: Path) -> int:
    """In a child: certseg's tracking call (certseg.tracking.log_run, an empty run) on a sqlite
    file, killed before the nth schema migration's version stamp when nth > 0."""
    log = EventLog(database.parent / f"events-{nth}.jsonl")
    if nth > 0:
        point = KillPoint(f"migration-{nth}", "tracking", MIGRATION_STEP, "before", nth, "probe")
        install_kill(log, point)
    from certseg.tracking import log_run

    log_run(
        tracking_uri=f"sqlite:///{database}",
        experiment="kill-sweep-probe",
        run_name="probe",
        params={},
        tags={},
        rows=[],
    )
    print("ok")
    return 0


@dataclass(frozen=True)
class MigrationProbe:
    """A fresh tracking DB killed before migration `nth` was stamped, then opened again."""

    nth: int
    reopened: bool
    error: str


def probe_migrations(root: Path, *, limit: int = 500) -> list[MigrationProbe]:
    """For k = 1, 2, ...: kill certseg's first tracking call on a fresh sqlite DB before the
    k-th schema migration's stamp, then make the same call again; stop at the first k that is
    not reached (every migration ran)."""
    out = []
    for nth in range(1, limit + 1):
        database = root / f"migration-{nth}" / "mlruns.db"
        database.parent.mkdir(parents=True, exist_ok=True)
        if _tracking_probe(nth, database).returncode != -signal.SIGKILL:
            break
        again = _tracking_probe(0, database)
        reopened = again.returncode == 0
        out.append(MigrationProbe(nth, reopened, "" if reopened else error_line(again.stdout)))
    return out


def _tracking_probe(nth: int, database: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "_tracking_probe", str(nth)]
    return subprocess.run(
        [*command, str(database)],
        cwd=database.parent,
        env=child_env(RunDirs(database.parent)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        timeout=600,
    )


# --- the parent: runs, snapshots, comparison ------------------------------------------------


def sweep_config(folder: Path) -> Path:
    """A config derived from configs/tiny.yaml, as small as still meaningful; returns its path.

    2 synthetic 32×32 images (2 shards), one σ (0.25), the three tiny variants (two denoiser
    groups, one with two variants), n0 = 2, n = 16 in blocks of 8 (3 blocks per image and group,
    12 in all), one health image. τ = 0.51 and n = 16 let Holm at α = 0.05 certify pixels
    (0.51¹⁶ < 0.05/1024), so the certified maps compared are not all ABSTAIN. Dask aggregates
    in this process's threads (dask.processes false), so the hooks fire there too.
    """
    import yaml

    data = yaml.safe_load((REPO_ROOT / "configs" / "tiny.yaml").read_text())
    data.update(
        name="kill-sweep",
        base_dir=str(REPO_ROOT),
        sigmas=[0.25],
        n0=2,
        n=16,
        tau=0.51,
        alpha=0.05,
        shards=2,
    )
    data["dataset"]["num_images"] = 2
    data["sampling"]["samples_per_chunk"] = 8
    data["health"]["num_images"] = 1
    data["dask"] = {"n_workers": 1, "threads_per_worker": 1, "processes": False}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kill-sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class RunDirs:
    """One scenario's folder: store, results, MLflow DB and Prefect home (shared by its runs)."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / "store.zarr"

    @property
    def out(self) -> Path:
        return self.root / "results"

    @property
    def database(self) -> Path:
        return self.root / "mlruns.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.database}"


@dataclass(frozen=True)
class RunResult:
    """One child run: exit code (-9: SIGKILL), whether the point killed it, its events, time."""

    returncode: int
    killed: bool
    events: list[dict[str, Any]]
    seconds: float
    output_tail: str

    def keys(self, event: str) -> list[str]:
        return [e["key"] for e in self.events if e["ev"] == event]

    @property
    def error_line(self) -> str:
        return error_line(self.output_tail)


def error_line(output: str) -> str:
    """The last `error:` line of a run's output, else the last exception line of a traceback,
    else the last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b.*: ", line)]
    return (errors or raised or lines or [""])[-1][:240]


def child_env(dirs: RunDirs, prefect_api: str | None = None) -> dict[str, str]:
    """The child's environment: this checkout first on PYTHONPATH, Prefect home in the run
    folder, no telemetry, one torch thread; Prefect's API at `prefect_api` (a standing server)
    or, when None, an ephemeral server the child starts in its own process group."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    python_path = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        PYTHONPATH=os.pathsep.join(python_path),
        PREFECT_HOME=str(dirs.root / "prefect-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        OMP_NUM_THREADS="1",
        COLUMNS="200",
    )
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    return env


def run_certify(
    config: Path,
    dirs: RunDirs,
    point: KillPoint | None,
    label: str,
    *,
    prefect_api: str | None = None,
    timeout: float = 900.0,
) -> RunResult:
    """Run `certseg certify` in a child process group (killed at `point` when given).

    The child's events go to dirs.root/events-<label>.jsonl, its output to output-<label>.txt.
    Whatever is left of its process group afterwards is killed.
    """
    dirs.root.mkdir(parents=True, exist_ok=True)
    log_path = dirs.root / f"events-{label}.jsonl"
    log_path.unlink(missing_ok=True)
    args = [
        "certify",
        str(config),
        "--store",
        str(dirs.store),
        "--out",
        str(dirs.out),
        "--tracking-uri",
        dirs.tracking_uri,
        "--quiet",
    ]
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_child",
        point.name if point else "none",
        str(log_path),
        *args,
    ]
    began = time.perf_counter()
    with (dirs.root / f"output-{label}.txt").open("w+") as output:
        child = subprocess.Popen(
            command,
            cwd=dirs.root,
            env=child_env(dirs, prefect_api),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = -999
        finally:
            _end_group(child.pid)
            child.wait()
        output.seek(0)
        tail = output.read()[-4000:]
    seconds = time.perf_counter() - began
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    killed = returncode == -signal.SIGKILL and any(e["ev"] == "kill" for e in events)
    return RunResult(returncode, killed, events, seconds, tail)


def _end_group(pgid: int) -> None:
    """SIGKILL what is left of the process group the sweep started for one child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Snapshot:
    """What a finished run left: store arrays and identity, certified maps, results, MLflow."""

    arrays: dict[str, bytes]
    attrs: dict[str, Any]
    certified: dict[str, bytes]
    rows: list[dict[str, str]]
    files: dict[str, bytes]
    mlflow_runs: list[tuple[str, str]]
    metrics: dict[str, float]
    params: dict[str, str]
    artifacts: list[str]


def _arrays(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, member in sorted(group.members()):
        path = f"{prefix}{name}"
        if hasattr(member, "shape"):
            yield path, member
        else:
            yield from _arrays(member, path + "/")


def snapshot(dirs: RunDirs, config: Path) -> Snapshot:
    """Read back everything a run left in its folder (the store opened read-only).

    Certified maps are re-derived from the store with the config's α, τ and correction
    (certseg.certificates.certify_stored_image: the persisted counts when present).
    """
    import numpy as np
    import zarr

    from certseg.certificates import certify_stored_image
    from certseg.config import load_config
    from certseg.storage import SampleStore

    cfg = load_config(config)
    group = zarr.open_group(str(dirs.store), mode="r")
    arrays = {path: np.asarray(array[...]).tobytes() for path, array in _arrays(group)}
    attrs = {key: group.attrs.get(key) for key in STORE_ATTRS}
    store = SampleStore.open(str(dirs.store), read_only=True)
    certified = {}
    for sigma in store.sigmas:
        for variant in store.variants:
            for image in range(store.num_images):
                labels = certify_stored_image(
                    store, sigma, variant, image, cfg.certify_params(), persist_counts=False
                ).labels
                certified[f"{sigma!r}/{variant}/{image}"] = np.asarray(labels).tobytes()
    with (dirs.out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    files = {name: (dirs.out / name).read_bytes() for name in ("results.md", "config.yaml")}
    runs, metrics, params, artifacts = _mlflow_state(dirs.database)
    return Snapshot(arrays, attrs, certified, rows, files, runs, metrics, params, artifacts)


def _mlflow_state(
    database: Path,
) -> tuple[list[tuple[str, str]], dict[str, float], dict[str, str], list[str]]:
    """(run id, status) of every run, and the metrics, params and artifact file names of the
    last FINISHED run, read with sqlite3 in read-only mode (MLflow itself would migrate it)."""
    from urllib.parse import unquote, urlparse

    if not database.is_file():
        return [], {}, {}, []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        try:
            runs = connection.execute(
                "SELECT run_uuid, status, artifact_uri FROM runs ORDER BY start_time"
            ).fetchall()
        except sqlite3.Error:  # a DB whose creation was killed may lack the table
            return [], {}, {}, []
        finished = [r for r in runs if r[1] == "FINISHED"]
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        artifacts: list[str] = []
        if finished:
            run_id, _, artifact_uri = finished[-1]
            metrics = dict(
                connection.execute(
                    "SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)
                ).fetchall()
            )
            params = dict(
                connection.execute(
                    "SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)
                ).fetchall()
            )
            folder = Path(unquote(urlparse(artifact_uri).path))
            artifacts = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    finally:
        connection.close()
    return [(r[0], r[1]) for r in runs], metrics, params, artifacts


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare(reference: Snapshot, resumed: Snapshot) -> list[str]:
    """Every difference between a resumed run and the reference (empty: identical).

    TIME_COLUMNS (and their MLflow metrics) are left out; everything else must be equal.
    """
    out: list[str] = []
    for what, ref, got in (
        ("store array", reference.arrays, resumed.arrays),
        ("certified map", reference.certified, resumed.certified),
        ("output file", reference.files, resumed.files),
    ):
        for key in sorted(set(ref) | set(got)):
            if ref.get(key) != got.get(key):
                out.append(f"{what} {key} differs")
    for key in STORE_ATTRS:
        if reference.attrs.get(key) != resumed.attrs.get(key):
            out.append(f"store attribute {key} differs")
    if [list(r) for r in reference.rows] != [list(r) for r in resumed.rows]:
        out.append("results.csv columns or row count differ")
    for index, (ref_row, row) in enumerate(zip(reference.rows, resumed.rows, strict=False)):
        for column in ref_row:
            if column not in TIME_COLUMNS and ref_row[column] != row.get(column):
                out.append(f"results.csv row {index} {column}: {row.get(column)!r}")
    if not resumed.metrics:
        out.append("no FINISHED MLflow run")
    else:
        timed = tuple(f"{c}/" for c in TIME_COLUMNS)
        ref_metrics = {k: v for k, v in reference.metrics.items() if not k.startswith(timed)}
        metrics = {k: v for k, v in resumed.metrics.items() if not k.startswith(timed)}
        if set(ref_metrics) != set(metrics):
            out.append(f"MLflow metric names differ: {sorted(set(ref_metrics) ^ set(metrics))}")
        for key in sorted(set(ref_metrics) & set(metrics)):
            if not _same_value(ref_metrics[key], metrics[key]):
                out.append(f"MLflow metric {key}: {metrics[key]} != {ref_metrics[key]}")
        if reference.params != resumed.params:
            out.append("MLflow params differ")
        if reference.artifacts != resumed.artifacts:
            out.append(f"MLflow artifacts differ: {resumed.artifacts}")
    return out


@dataclass(frozen=True)
class SamplingAudit:
    """The blocks drawn by a sequence of runs on one store (killed runs, then the resume).

    drawn: blocks drawn by each run. in_flight: drawn by a killed run and never flagged by it
    (at most the block it was killed in). redone: blocks drawn again that an earlier run drew
    but did not flag (allowed: they were in flight). sampled_twice: blocks drawn again although
    an earlier run had flagged them done, or drawn twice within one run (must be 0).
    flagged_twice: completion flags written twice (must be 0). missing: blocks of the reference
    that no run flagged (must be 0). health_twice: health rows measured twice (must be 0).
    """

    drawn: tuple[int, ...]
    reference: int
    in_flight: int
    redone: int
    sampled_twice: int
    flagged_twice: int
    missing: int
    health_twice: int

    @property
    def ok(self) -> bool:
        return not (self.sampled_twice or self.flagged_twice or self.missing or self.health_twice)


def audit_sampling(runs: Sequence[RunResult], reference: RunResult) -> SamplingAudit:
    """Check that no block was sampled twice across runs on one store, in order."""
    flagged: set[str] = set()
    unflagged: set[str] = set()
    flags: Counter[str] = Counter()
    health: Counter[str] = Counter()
    in_flight = redone = twice = 0
    for run in runs:
        drawn = Counter(run.keys("sample"))
        twice += sum(count - 1 for count in drawn.values() if count > 1)
        twice += len(set(drawn) & flagged)
        redone += len((set(drawn) & unflagged) - flagged)
        run_flags = run.keys("flag")
        flags.update(run_flags)
        health.update(run.keys("health"))
        in_flight += len(set(drawn) - set(run_flags)) if run.killed else 0
        flagged |= set(run_flags)
        unflagged = (unflagged | set(drawn)) - flagged
    return SamplingAudit(
        drawn=tuple(len(run.keys("sample")) for run in runs),
        reference=len(reference.keys("sample")),
        in_flight=in_flight,
        redone=redone,
        sampled_twice=twice,
        flagged_twice=sum(count - 1 for count in flags.values() if count > 1),
        missing=len(set(reference.keys("flag")) - flagged),
        health_twice=sum(count - 1 for count in health.values() if count > 1),
    )


@dataclass
class Reference:
    """The uninterrupted run every scenario is compared with."""

    config: Path
    dirs: RunDirs
    run: RunResult
    snapshot: Snapshot


def reference_run(root: Path, *, prefect_api: str | None = None) -> Reference:
    """Write the sweep config under root and run it once without a kill."""
    config = sweep_config(root)
    dirs = RunDirs(root / "reference")
    run = run_certify(config, dirs, None, "reference", prefect_api=prefect_api)
    if run.returncode != 0:
        raise RuntimeError(f"the reference run failed ({run.returncode}): {run.output_tail}")
    return Reference(config, dirs, run, snapshot(dirs, config))


@dataclass
class Outcome:
    """One scenario: killed at each of `points` in turn (one run per kill), then resumed."""

    points: tuple[KillPoint, ...]
    killed: tuple[bool, ...]
    resumed: bool = False
    identical: bool = False
    audit: SamplingAudit | None = None
    differences: list[str] = field(default_factory=list)
    error: str = ""
    second_resume: bool | None = None
    kill_seconds: tuple[float, ...] = ()
    resume_seconds: float = 0.0
    mlflow_runs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " → ".join(p.name for p in self.points)

    @property
    def stage(self) -> str:
        return " → ".join(dict.fromkeys(p.stage for p in self.points))

    @property
    def known_failure(self) -> str | None:
        return next((p.known_failure for p in self.points if p.known_failure), None)

    @property
    def ok(self) -> bool:
        return bool(
            all(self.killed)
            and self.resumed
            and self.identical
            and self.audit is not None
            and self.audit.ok
        )

    def problems(self) -> str:
        """What went wrong, in one line (empty when ok)."""
        if not all(self.killed):
            missed = self.points[len(self.killed) - 1].name
            return f"point {missed} not reached ({self.error})"
        if not self.resumed:
            again = {None: "", True: "; a 2nd resume passed", False: "; a 2nd resume failed too"}
            other = [d for d in self.differences if "MLflow" not in d]
            left = f"{len(other)} differences" if other else "identical"
            return (
                f"resume failed: {self.error}{again[self.second_resume]}; "
                f"store, certified maps and results: {left}"
            )
        parts = self.differences[:5]
        if len(self.differences) > 5:
            parts.append(f"... {len(self.differences)} differences")
        if self.audit is not None and not self.audit.ok:
            parts.append(f"sampling audit: {self.audit}")
        return "; ".join(parts)


def run_scenario(
    points: Sequence[KillPoint],
    reference: Reference,
    root: Path,
    *,
    prefect_api: str | None = None,
    second_resume: bool = True,
) -> Outcome:
    """Kill a run at each point in turn, resume, compare with the reference.

    One fresh folder under root (store, results, MLflow DB, Prefect home) serves every run of
    the scenario. The resume must exit 0; when it fails and `second_resume` is set, one more
    resume tells whether the failure is permanent.
    """
    dirs = RunDirs(root / "+".join(p.name for p in points))
    runs: list[RunResult] = []
    for index, point in enumerate(points):
        run = run_certify(reference.config, dirs, point, f"killed-{index}", prefect_api=prefect_api)
        runs.append(run)
        if not run.killed:
            return Outcome(
                tuple(points),
                tuple(r.killed for r in runs),
                error=f"the run ended with exit code {run.returncode}: {run.error_line}",
                kill_seconds=tuple(r.seconds for r in runs),
            )
    resumed = run_certify(reference.config, dirs, None, "resumed", prefect_api=prefect_api)
    outcome = Outcome(
        tuple(points),
        tuple(r.killed for r in runs),
        resumed=resumed.returncode == 0,
        audit=audit_sampling([*runs, resumed], reference.run),
        kill_seconds=tuple(r.seconds for r in runs),
        resume_seconds=resumed.seconds,
    )
    if not outcome.resumed:
        outcome.error = f"exit code {resumed.returncode}: {resumed.error_line}"
        if second_resume:
            again = run_certify(reference.config, dirs, None, "resumed-2", prefect_api=prefect_api)
            outcome.second_resume = again.returncode == 0
    try:  # a failed resume may still have left a complete store and results folder
        result = snapshot(dirs, reference.config)
    except Exception as error:
        outcome.differences = [f"cannot read the resumed run back: {error!r}"]
        return outcome
    outcome.mlflow_runs = result.mlflow_runs
    outcome.differences = compare(reference.snapshot, result)
    outcome.identical = outcome.resumed and not outcome.differences
    return outcome


def format_table(outcomes: Sequence[Outcome]) -> str:
    """A Markdown table of the sweep, one row per scenario."""
    lines = [
        "| point | stage | killed | resumed ok | identical | blocks sampled twice "
        "| in-flight blocks redone | MLflow runs (finished/all) | s (kill + resume) "
        "| expected | problems |",
        "|" + "---|" * 11,
    ]
    yes = {True: "yes", False: "no"}
    for o in outcomes:
        audit = o.audit
        finished = sum(1 for _, status in o.mlflow_runs if status == "FINISHED")
        seconds = " + ".join(f"{s:.0f}" for s in (*o.kill_seconds, o.resume_seconds))
        lines.append(
            f"| {o.name} | {o.stage} | {yes[all(o.killed)]} | {yes[o.resumed]} "
            f"| {yes[o.identical] if o.resumed else '—'} "
            f"| {audit.sampled_twice if audit else '—'} "
            f"| {f'{audit.redone}/{audit.in_flight}' if audit else '—'} "
            f"| {f'{finished}/{len(o.mlflow_runs)}' if o.mlflow_runs else '—'} "
            f"| {seconds} | {'fails (issue 13)' if o.known_failure else 'passes'} "
            f"| {o.problems()} |"
        )
    return "\n".join(lines)


def select_points(spec: str) -> list[KillPoint]:
    """The points named by "all", "default" or a comma-separated list of names."""
    if spec == "all":
        return list(POINTS)
    if spec == "default":
        return [p for p in POINTS if p.default_run]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in POINTS_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown kill points {unknown}; known: {sorted(POINTS_BY_NAME)}")
    return [POINTS_BY_NAME[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    """The sweep's command line; exits 1 when a scenario behaves other than expected."""
    parser = argparse.ArgumentParser(description="Kill -9 sweep of `certseg certify`.")
    parser.add_argument(
        "--points", default="all", help='"all", "default" or point names, comma-separated'
    )
    parser.add_argument(
        "--chain",
        action="store_true",
        help="One scenario killed at every selected point in turn (in the order given), "
        "instead of one scenario per point.",
    )
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    parser.add_argument(
        "--prefect-api",
        help="A standing Prefect server's API URL for every run (default: each run starts an "
        "ephemeral server in its own process group, killed with it).",
    )
    parser.add_argument("--list", action="store_true", help="List the kill points and exit.")
    parser.add_argument(
        "--mlflow-migrations",
        action="store_true",
        help="Instead: kill certseg's first tracking call on a fresh sqlite DB before each "
        "schema migration's stamp in turn, and report which kills leave the DB unusable.",
    )
    args = parser.parse_args(argv)
    if args.list:
        for p in POINTS:
            known = "  [fails today: issue 13]" if p.known_failure else ""
            print(f"{p.name:24} {p.stage:12} {p.what}{known}")
        return 0
    root = args.keep or Path(tempfile.mkdtemp(prefix="certseg-kill-sweep-"))
    if args.mlflow_migrations:
        probes = probe_migrations(root)
        broken = [p for p in probes if not p.reopened]
        for probe in probes:
            print(f"migration {probe.nth}: {'ok' if probe.reopened else probe.error}", flush=True)
        recovered = ", ".join(str(p.nth) for p in probes if p.reopened) or "none"
        print(f"\n{len(broken)} of {len(probes)} kills left the tracking DB unusable")
        print(f"recovered after the kill before migration: {recovered}")
        return 1 if broken else 0
    points = select_points(args.points)
    began = time.perf_counter()
    reference = reference_run(root, prefect_api=args.prefect_api)
    print(f"reference run: {reference.run.seconds:.0f} s; folders under {root}", flush=True)
    scenarios = [points] if args.chain else [[p] for p in points]
    outcomes = []
    for scenario in scenarios:
        outcome = run_scenario(scenario, reference, root, prefect_api=args.prefect_api)
        outcomes.append(outcome)
        print(
            f"{outcome.name}: {'ok' if outcome.ok else 'FAILED'} {outcome.problems()}", flush=True
        )
    print()
    print(format_table(outcomes))
    unexpected = [o.name for o in outcomes if o.ok == bool(o.known_failure)]
    print(f"\n{len(outcomes)} scenarios in {time.perf_counter() - began:.0f} s; ", end="")
    print(f"not as expected: {unexpected}" if unexpected else "all as expected")
    return 1 if unexpected else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        sys.exit(child_main(sys.argv[2], Path(sys.argv[3]), sys.argv[4:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_tracking_probe":
        sys.exit(tracking_probe_main(int(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(main())
