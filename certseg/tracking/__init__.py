"""MLflow lineage: the only package that imports mlflow (certseg.tracking and its modules).

A run records params (the full config, flattened), tags (config_id, code version, dataset manifest
sha256, each model file's sha256, the store URL), metrics per σ and variant, and artifacts
(results.parquet and .csv, plots, the config file). The tracking URI is always passed in (default
`sqlite:///mlruns.db` in the working directory; MLflow 3.17 refuses a ./mlruns file store); with a
sqlite URI, artifacts go to an `mlartifacts/` folder beside the database file.

Robustness: `prepare_tracking_store` is called before any sampling, so a broken or unreachable
tracking store fails fast. A new sqlite database is built under a temporary name and linked into
place only when complete, so a kill -9 or a second process during its creation never leaves a
half-made database behind. Every failure to track raises `TrackingError` (a ValueError: never
retried) with a message saying what to do. A run is keyed (`certseg.run_key`): logging the same
key again returns the finished run instead of a duplicate, and continues an interrupted one.

The package, one job per module: `store` (prepare the tracking store, `TrackingError`), `log`
(log a keyed run, lineage hashes, re-log a results folder), `read` (read runs back, find the
latest or a finished keyed run). Every name is importable from certseg.tracking; importing it
loads no mlflow (each function imports it when called).
"""

from __future__ import annotations

from certseg.tracking.log import (
    METRICS,
    RUN_KEY_TAG,
    TRACKING_FILE,
    RunRecord,
    file_sha256,
    log_run,
    metric_key,
    relog_results,
    run_key,
)
from certseg.tracking.read import RunData, finished_run_id, latest_run_id, read_run
from certseg.tracking.store import TrackingError, prepare_tracking_store

__all__ = [
    "METRICS",
    "RUN_KEY_TAG",
    "TRACKING_FILE",
    "RunData",
    "RunRecord",
    "TrackingError",
    "file_sha256",
    "finished_run_id",
    "latest_run_id",
    "log_run",
    "metric_key",
    "prepare_tracking_store",
    "read_run",
    "relog_results",
    "run_key",
]
