"""MLflow lineage: the only module that imports mlflow.

A run records params (the full config, flattened), tags (config_id, code version, dataset manifest
sha256, each model file's sha256, the store URL), metrics per σ and variant, and artifacts
(results.parquet and .csv, plots, the config file). The tracking URI is always passed in (default
`sqlite:///mlruns.db` in the working directory; MLflow 3.17 refuses a ./mlruns file store); with a
sqlite URI, artifacts go to an `mlartifacts/` folder beside the database file.
"""

from __future__ import annotations

import functools
import hashlib
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS: tuple[str, ...] = (
    "certified_accuracy",
    "certified_miou",
    "abstain_rate",
    "smoothed_accuracy",
    "smoothed_miou",
    "health_accuracy",
    "clean_accuracy",
    "clean_miou",
    "samples_per_second",
)
"""Row keys logged as metrics, each as `<metric>/sigma_<σ>/<variant>`."""


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks.

    Cached per (resolved path, size, mtime): a run hashes its model files once for the store's
    identity check and again for lineage tags, and a checkpoint can be gigabytes.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _file_sha256(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metric_key(metric: str, sigma: float, variant: str) -> str:
    """MLflow metric name of one (metric, σ, variant), e.g. certified_accuracy/sigma_0.25/clean."""
    return f"{metric}/sigma_{sigma:g}/{variant}"


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///") :])
    return (database.resolve().parent / "mlartifacts" / experiment).as_uri()


def _experiment_id(client: Any, tracking_uri: str, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    return str(
        client.create_experiment(
            experiment, artifact_location=_artifact_location(tracking_uri, experiment)
        )
    )


@dataclass(frozen=True)
class RunRecord:
    """What was logged: the run id, its experiment and the tracking URI."""

    run_id: str
    experiment_id: str
    tracking_uri: str


def log_run(
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    rows: Sequence[Mapping[str, Any]],
    artifacts: Sequence[Path] = (),
    artifact_dirs: Mapping[str, Path] | None = None,
    model_files: Mapping[str, Path] | None = None,
) -> RunRecord:
    """Create one MLflow run and log everything; returns its id.

    params: flattened config (values truncated to MLflow's 6000 characters). tags: lineage tags;
    model_files: label → file, logged as tags `model_sha256/<label>`. rows: results rows (see
    certseg.report.build_rows); each METRICS key becomes a metric per (σ, variant); a flagged
    health check adds the tag `health_flagged/sigma_<σ>/<variant>` = "true". artifacts: files
    logged at the artifact root; artifact_dirs: artifact path → local folder.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, tracking_uri, experiment)
    run = client.create_run(experiment_id, run_name=run_name)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        all_tags = dict(tags)
        for label, path in sorted((model_files or {}).items()):
            all_tags[f"model_sha256/{label}"] = file_sha256(path)
        flagged = []
        metrics = []
        for row in rows:
            for name in METRICS:
                value = row.get(name)
                if isinstance(value, int | float) and not math.isnan(float(value)):
                    key = metric_key(name, row["sigma"], row["variant"])
                    metrics.append(Metric(key, float(value), 0, 0))
            if row.get("health_flagged"):
                flagged.append(f"sigma_{row['sigma']:g}/{row['variant']}")
                all_tags[f"health_flagged/sigma_{row['sigma']:g}/{row['variant']}"] = "true"
        all_tags["health_flagged"] = ",".join(flagged) if flagged else "none"
        param_list = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        tag_list = [RunTag(k, str(v)[:5000]) for k, v in sorted(all_tags.items())]
        for start in range(0, len(param_list), 100):
            client.log_batch(run_id, params=param_list[start : start + 100])
        for start in range(0, len(tag_list), 100):
            client.log_batch(run_id, tags=tag_list[start : start + 100])
        for start in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[start : start + 500])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        for name, folder in (artifact_dirs or {}).items():
            client.log_artifacts(run_id, str(folder), artifact_path=name)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return RunRecord(run_id=run_id, experiment_id=experiment_id, tracking_uri=tracking_uri)


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


def latest_run_id(*, tracking_uri: str, experiment: str) -> str:
    """The most recent run of an experiment (ValueError when there is none)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri!r}")
    runs = client.search_runs(
        [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        raise ValueError(f"MLflow experiment {experiment!r} at {tracking_uri!r} has no runs")
    return str(runs[0].info.run_id)
