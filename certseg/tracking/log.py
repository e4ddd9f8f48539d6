"""Logging one MLflow run: params, lineage tags (each model file's sha256), metrics per σ and
variant, artifacts; keyed so that logging the same run again never duplicates it; re-logging a
results folder that could not be tracked (`relog_results`).

A run is keyed (tag `certseg.run_key`): logging the same key again returns the finished run
instead of a duplicate, and continues an interrupted one. Every failure raises `TrackingError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

from certseg.storage.layout import sigma_key
from certseg.tracking.store import (
    TrackingError,
    _artifact_location,
    _first_line,
    prepare_tracking_store,
)

METRICS: tuple[str, ...] = (
    "certified_accuracy",
    "certified_miou",
    "abstain_rate",
    "certified_wrong",
    "smoothed_accuracy",
    "smoothed_miou",
    "health_accuracy",
    "clean_accuracy",
    "clean_miou",
    "samples_per_second",
    "samples_per_image",
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


_P = ParamSpec("_P")


RUN_KEY_TAG = "certseg.run_key"
"""Tag holding a run's identity: the same key is logged once (see `log_run`)."""


TRACKING_FILE = "tracking.json"
"""What `finalize_run` would log, written to the results folder first (`certseg log` re-logs it)."""


def metric_key(metric: str, sigma: float, variant: str) -> str:
    """MLflow metric name of one (metric, σ, variant), e.g. certified_accuracy/sigma_0.25/clean;
    σ is named by the store's `sigma_key`, so distinct σ values never share a metric."""
    return f"{metric}/{sigma_key(sigma)}/{variant}"


def run_key(**identity: Any) -> str:
    """sha256 of the canonical JSON of what identifies a logged run (config_id, α, τ, ...)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


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
    """What was logged: the run id, its experiment and the tracking URI.

    already_logged: a finished run with the same run key existed; nothing new was logged.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    already_logged: bool = False


def _as_tracking_error(call: Callable[_P, RunRecord]) -> Callable[_P, RunRecord]:
    """Any failure of `call` (other than a TrackingError) re-raised as a TrackingError naming its
    `tracking_uri` keyword, so callers handle one type (a ValueError: never retried)."""

    @functools.wraps(call)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> RunRecord:
        try:
            return call(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as error:
            raise TrackingError(
                f"logging to the MLflow tracking store {kwargs.get('tracking_uri')!r} failed: "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from error

    return wrapper


@_as_tracking_error
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
    key: str | None = None,
    start_time_ms: int | None = None,
) -> RunRecord:
    """Log one MLflow run (or find it logged already); returns its id.

    params: flattened config (values truncated to MLflow's 6000 characters). tags: lineage tags;
    model_files: label → file, logged as tags `model_sha256/<label>`. rows: results rows (see
    certseg.report.build_rows); each METRICS key becomes a metric per (σ, variant); a flagged
    health check adds the tag `health_flagged/sigma_<σ>/<variant>` = "true". artifacts: files
    logged at the artifact root; artifact_dirs: artifact path → local folder.
    key: the run's identity (tag `certseg.run_key`, set when the run is created). A FINISHED run
    with the same key is returned as it is (already_logged=True; no duplicate run); an unfinished
    one (a killed run) is logged into again and finished. start_time_ms: when the run began
    (Unix ms; default now): the MLflow run spans the actual run, from then until it is logged.
    Any failure raises TrackingError.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    prepare_tracking_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, tracking_uri, experiment)
    present: dict[str, str] = {}
    found = _find_run(client, experiment_id, key) if key else None
    if found is not None and found.info.status == "FINISHED":
        return RunRecord(found.info.run_id, experiment_id, tracking_uri, already_logged=True)
    if found is not None:  # an interrupted earlier try: finish it instead of adding a run
        run_id = str(found.info.run_id)
        present = dict(found.data.params)
        client.update_run(run_id, status="RUNNING")
    else:
        # The key is a tag from the first moment, so a run killed at any later point is found.
        first_tags = {RUN_KEY_TAG: key} if key else None
        run_id = client.create_run(
            experiment_id, start_time=start_time_ms, run_name=run_name, tags=first_tags
        ).info.run_id
    status = "FAILED"
    try:
        all_tags = dict(tags)
        if key:
            all_tags[RUN_KEY_TAG] = key
        for label, path in sorted((model_files or {}).items()):
            all_tags[f"model_sha256/{label}"] = file_sha256(path)
        flagged = []
        metrics = []
        for row in rows:
            for name in METRICS:
                value = row.get(name)
                if isinstance(value, int | float) and not math.isnan(float(value)):
                    metric = metric_key(name, row["sigma"], row["variant"])
                    metrics.append(Metric(metric, float(value), 0, 0))
            if row.get("health_flagged"):
                flagged.append(f"{sigma_key(row['sigma'])}/{row['variant']}")
                all_tags[f"health_flagged/{sigma_key(row['sigma'])}/{row['variant']}"] = "true"
        all_tags["health_flagged"] = ",".join(flagged) if flagged else "none"
        param_list = [
            Param(k, str(v)[:6000]) for k, v in sorted(params.items()) if k not in present
        ]
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


def _find_run(client: Any, experiment_id: str, key: str) -> Any:
    """The newest run of the experiment tagged with this run key (None if there is none)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def relog_results(folder: Path, *, tracking_uri: str | None = None) -> RunRecord:
    """Log a results folder that `finalize_run` wrote but could not track (its tracking.json).

    tracking_uri: where to log (default: the URI recorded in tracking.json).
    """
    folder = Path(folder)
    record_file = folder / TRACKING_FILE
    if not record_file.is_file():
        raise ValueError(f"{record_file}: no such file; expected a certseg results folder")
    try:
        record = json.loads(record_file.read_text())
        uri = tracking_uri or str(record["tracking_uri"])
        files = [folder / name for name in record["artifacts"]]
        dirs = {name: folder / sub for name, sub in record["artifact_dirs"].items()}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{record_file}: not a certseg tracking record ({error})") from None
    from certseg.redact import check_unredacted

    check_unredacted(uri, f"{record_file}: tracking_uri (pass --tracking-uri)")
    missing = [str(p) for p in [*files, *dirs.values()] if not p.exists()]
    if missing:
        raise ValueError(f"{record_file}: listed results are missing: {', '.join(missing)}")
    from certseg.report import read_results

    return log_run(
        tracking_uri=uri,
        experiment=str(record["experiment"]),
        run_name=str(record["run_name"]),
        params=record["params"],
        tags=record["tags"],
        rows=read_results(folder / "results.parquet"),
        artifacts=files,
        artifact_dirs=dirs,
        key=record.get("key"),
        start_time_ms=record.get("start_time_ms"),
    )
