"""Tracking never costs the sampling: a killed or concurrent first use of the default sqlite store,
a broken store (clear error, results kept, `certseg log` re-logs), no duplicate runs, and which
errors the tasks retry."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.run.context import run_context
from certseg.run.finalize import finalize_run
from certseg.tracking import (
    RUN_KEY_TAG,
    TrackingError,
    log_run,
    prepare_tracking_store,
    relog_results,
)
from tests.pipeline_fixtures import fill_toy_store
from tests.test_report import toy_config

# A child that dies by SIGKILL in the middle of MLflow's schema migrations of a new sqlite file:
# at the 50th SQL statement (of ~1,700), inside a migration (measured to break a plain MLflow
# database: the next open fails with "duplicate column name: step").
_KILL_DURING_CREATION = textwrap.dedent(
    """
    import os, signal, sys
    import sqlalchemy
    from sqlalchemy import event

    statements = [0]

    @event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
    def count(*args):
        statements[0] += 1
        if statements[0] == 50:
            os.kill(os.getpid(), signal.SIGKILL)

    uri = sys.argv[1]
    if sys.argv[2] == "certseg":
        from certseg.tracking import prepare_tracking_store
        prepare_tracking_store(uri)
    else:  # what the tracking layer did before: let MLflow create the database in place
        from mlflow.tracking import MlflowClient
        MlflowClient(tracking_uri=uri).search_experiments()
    """
)


def _kill_during_creation(uri: str, how: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _KILL_DURING_CREATION, uri, how], capture_output=True, timeout=300
    )
    return done.returncode


def _runs(uri: str, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_kill_during_first_use_leaves_no_broken_database(tmp_path: Path) -> None:
    # The hazard is real: MLflow creating the file in place and killed leaves a half-made DB.
    plain = tmp_path / "plain" / "mlruns.db"
    plain.parent.mkdir()
    assert _kill_during_creation(f"sqlite:///{plain}", "mlflow") == -9
    assert plain.exists()
    with pytest.raises(TrackingError, match="move it aside"):
        prepare_tracking_store(f"sqlite:///{plain}")
    # certseg builds it under a temporary name: the kill leaves nothing at the final name.
    database = tmp_path / "ours" / "mlruns.db"
    uri = f"sqlite:///{database}"
    assert _kill_during_creation(uri, "certseg") == -9
    assert not database.exists()
    prepare_tracking_store(uri)  # the next run creates it whole
    record = log_run(
        tracking_uri=uri, experiment="e", run_name="r", params={"a": "1"}, tags={}, rows=[]
    )
    assert [r.info.run_id for r in _runs(uri, "e")] == [record.run_id]


def _first_use(uri: str, index: int, barrier: Any) -> str:
    barrier.wait()
    return log_run(
        tracking_uri=uri,
        experiment="e",
        run_name=f"r{index}",
        params={"i": str(index)},
        tags={},
        rows=[],
        key=f"key-{index}",
    ).run_id


def test_concurrent_first_use(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(3)
        with context.Pool(3) as pool:
            ids = pool.starmap(_first_use, [(uri, i, barrier) for i in range(3)])
    assert len(set(ids)) == 3
    assert sorted(r.info.run_id for r in _runs(uri, "e")) == sorted(ids)
    assert not list(tmp_path.glob(".mlruns.db.creating-*"))


def _finalize(tmp_path: Path, uri: str, out: str = "out") -> Any:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    config = toy_config(store.url)
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    return finalize_run(run_context(config, out_dir=tmp_path / out, tracking_uri=uri), result)


def test_broken_store_keeps_results_and_relog(tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    with sqlite3.connect(broken) as db:  # a database MLflow never finished creating
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
    outcome = _finalize(tmp_path, f"sqlite:///{broken}")
    assert outcome.run_id is None
    assert outcome.tracking_error is not None
    assert "cannot be used" in outcome.tracking_error
    assert f"certseg log {tmp_path / 'out'}" in outcome.tracking_error
    for name in ("results.parquet", "results.csv", "results.md", "config.yaml", "tracking.json"):
        assert (tmp_path / "out" / name).is_file(), name
    good = f"sqlite:///{tmp_path / 'good.db'}"
    record = relog_results(tmp_path / "out", tracking_uri=good)
    assert not record.already_logged
    again = relog_results(tmp_path / "out", tracking_uri=good)
    assert again.already_logged and again.run_id == record.run_id
    assert len(_runs(good, "certseg")) == 1
    from certseg.tracking import read_run

    run = read_run(record.run_id, tracking_uri=good)
    assert [r["certified_accuracy"] for r in run.rows] == [
        r["certified_accuracy"] for r in outcome.rows
    ]
    assert run.params["tau"] == "0.6"


def test_relog_names_a_folder_that_is_not_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tracking\.json: no such file"):
        relog_results(tmp_path)


def test_rerun_does_not_duplicate_and_interrupted_run_is_finished(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    first = _finalize(tmp_path, uri)
    second = _finalize(tmp_path, uri, out="out2")
    assert not first.already_logged and second.already_logged
    assert second.run_id == first.run_id
    assert len(_runs(uri, "certseg")) == 1
    # A run killed while logging stays RUNNING: the next try finishes that run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("certseg").experiment_id
    killed = client.create_run(experiment, tags={RUN_KEY_TAG: "k2"}).info.run_id
    record = log_run(
        tracking_uri=uri, experiment="certseg", run_name="r", params={}, tags={}, rows=[], key="k2"
    )
    assert record.run_id == killed and not record.already_logged
    assert client.get_run(killed).info.status == "FINISHED"
    assert len(_runs(uri, "certseg")) == 2


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ValueError("bad config"), False),
        (FileNotFoundError("weights"), False),
        (NotADirectoryError("store is a file"), False),
        (FileExistsError("store is a file"), False),
        (PermissionError("read-only store"), False),
        (TrackingError("locked"), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (OSError("connection reset"), True),
        (ConnectionError("refused"), True),
        (TimeoutError("slow"), True),
    ],
)
def test_retry_only_transient_errors(error: BaseException, transient: bool) -> None:
    from certseg.tasks.certify import is_transient

    assert is_transient(error) is transient


def test_lost_worker_and_out_of_memory_are_transient() -> None:
    import torch
    from distributed.scheduler import KilledWorker

    from certseg.tasks.certify import is_transient

    assert is_transient(KilledWorker("task", "worker", 3))
    assert is_transient(torch.OutOfMemoryError("CUDA out of memory"))


def test_relog_refuses_a_redacted_tracking_uri(tmp_path: Path) -> None:
    import json

    outcome = _finalize(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    record_file = Path(outcome.out_dir) / "tracking.json"
    record = json.loads(record_file.read_text())
    record["tracking_uri"] = "http://user:***redacted***@mlflow.invalid:5000"
    record_file.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="pass --tracking-uri"):
        relog_results(Path(outcome.out_dir))
