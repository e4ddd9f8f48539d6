"""certify-dataset: resolve → check tracking → prepare the store → health check → sample shards →
aggregate with Dask → report and MLflow. Re-running the same config resumes.

Prefect entrypoint `flows/certify_dataset.py:certify_dataset` (installed as
certseg.flows.certify_dataset). Shards go to the flow's task runner, one at a time by default;
flows/certify_on_dask.py runs this same flow with prefect-dask's DaskTaskRunner.
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from certseg.run.finalize import run_summary
from certseg.tasks.certify import (
    aggregate_task,
    check_tracking_task,
    finalize_task,
    health_check_task,
    plan_shards_task,
    prepare_store_task,
    resolve_run_task,
    sample_shard_task,
)


@flow(
    name="certify-dataset",
    # TaskRunner is invariant in its future type, so prefect's own annotation rejects its
    # ThreadPoolTaskRunner under mypy; the cast only restates what prefect accepts at run time.
    task_runner=cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=1)),
    log_prints=True,
)
def certify_dataset(
    config: str | dict[str, Any],
    store_url: str | None = None,
    storage_options: dict[str, Any] | None = None,
    dask_address: str | None = None,
    tracking_uri: str | None = None,
    shards: int | None = None,
    out_dir: str | None = None,
    base_dir: str | None = None,
    skip_invalid: bool = False,
    track: bool = True,
    started_ms: int | None = None,
) -> dict[str, Any]:
    """Certify a dataset as a config describes (a YAML path or a mapping).

    store_url / storage_options / dask_address / tracking_uri / shards / out_dir override the
    config (resolved once, into the RunContext every task receives). Returns {"config_id",
    "store_url", "tracking_uri", "run_id", "out_dir", "rows", "sampled_blocks", ...} (URLs with
    any credentials redacted; certseg.run.finalize.run_summary). started_ms: when the run began
    (Unix ms; the CLI passes the moment the command started), the MLflow run's start_time
    (default: when this flow resolves the run).

    Prefect records every parameter of a flow run in its database (and shows it in the UI): give
    credentials through the environment of the worker and Dask workers (AWS_* / AWS_PROFILE,
    MLFLOW_TRACKING_USERNAME/PASSWORD), never in store_url, storage_options or tracking_uri.
    """
    ctx = resolve_run_task(
        config,
        base_dir=base_dir,
        skip_invalid=skip_invalid,
        store_url=store_url,
        storage_options=storage_options,
        tracking_uri=tracking_uri,
        dask_address=dask_address,
        shards=shards,
        out_dir=out_dir,
        track=track,
        started_ms=started_ms,
    )
    if ctx.track:  # a broken tracking store fails here, before any sampling
        check_tracking_task(ctx)
    prepared = prepare_store_task(ctx)
    health = health_check_task(ctx)
    plan = plan_shards_task(prepared, ctx)
    futures = [sample_shard_task.submit(ctx, shard) for shard in plan]
    reports = [future.result() for future in futures]
    result = aggregate_task(ctx)
    outcome = finalize_task(ctx, result, health, reports)
    return run_summary(ctx, outcome, reports=reports, prepared=prepared)
