"""Reading MLflow runs back: one run's params, tags, metrics and results rows (`read_run`), the
newest run (`latest_run_id`), and the finished run of a run key if one exists (`finished_run_id`,
which never creates a tracking store just to look).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certseg.tracking.log import _find_run
from certseg.tracking.store import _sqlite_path


@dataclass(frozen=True)
class RunData:
    """A logged run read back: params, tags, latest metrics and the results rows."""

    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    artifacts: list[str]


def read_run(run_id: str, *, tracking_uri: str) -> RunData:
    """Read a run back (its results.parquet artifact is downloaded to a temporary folder)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from certseg.report import read_results

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ValueError(f"no MLflow run {run_id!r} at {tracking_uri!r}: {error}") from None
    names = _list_artifacts(client, run_id)
    rows: list[dict[str, Any]] = []
    if "results.parquet" in names:
        with tempfile.TemporaryDirectory() as folder:
            local = client.download_artifacts(run_id, "results.parquet", folder)
            rows = read_results(Path(local))
    return RunData(
        run_id=run_id,
        params=dict(run.data.params),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        metrics=dict(run.data.metrics),
        rows=rows,
        artifacts=names,
    )


def _list_artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out.extend(_list_artifacts(client, run_id, item.path))
        else:
            out.append(item.path)
    return sorted(out)


def latest_run_id(*, tracking_uri: str, experiment: str | None = None) -> str:
    """The most recent run of an experiment, or of any experiment when None (ValueError when
    there is none)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri!r}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    runs = (
        client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1)
        if ids
        else []
    )
    if not runs:
        where = f"experiment {experiment!r}" if experiment else "any experiment"
        raise ValueError(f"no MLflow runs in {where} at {tracking_uri!r}")
    return str(runs[0].info.run_id)


def finished_run_id(*, tracking_uri: str, experiment: str, key: str) -> str | None:
    """The id of the FINISHED run tagged with run key `key` in `experiment`, else None (also
    when the tracking store or the experiment does not exist, or cannot be read)."""
    from mlflow.tracking import MlflowClient

    path = _sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        return None  # never create a database just to look
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        run = _find_run(client, str(found.experiment_id), key) if found is not None else None
    except Exception:  # any backend failure: not known to be logged
        return None
    if run is None or run.info.status != "FINISHED":
        return None
    return str(run.info.run_id)
