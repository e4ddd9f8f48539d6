"""certify-dataset: resolve → check tracking → prepare the store → health check → sample shards →
aggregate with Dask → report and MLflow. Re-running the same config resumes; re-running a
finished run reads its results (certseg.run.finished) and redoes nothing.

Prefect entrypoint `flows/certify_dataset.py:certify_dataset` (installed as
certseg.flows.certify_dataset). Shards go to the flow's task runner: on its local thread pool,
`sampling.workers` of them at once (certseg.run.resources splits the cores between them);
flows/certify_on_dask.py runs this same flow with prefect-dask's DaskTaskRunner, which gets every
shard at once and lets the cluster's worker slots bound them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from prefect import flow
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from certseg.run.context import RunContext
from certseg.run.finalize import finished_summary, run_summary
from certseg.run.sample import Shard, ShardReport
from certseg.tasks.certify import (
    aggregate_task,
    check_tracking_task,
    finalize_task,
    finished_run_task,
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
    # The pool is unbounded: _sample_shards bounds the shards in flight by sampling.workers.
    task_runner=cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner()),
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
    finished = finished_run_task(ctx)
    if finished is not None:  # nothing to sample, aggregate or log: read its results
        return finished_summary(ctx, finished)
    if ctx.track:  # a broken tracking store fails here, before any sampling
        check_tracking_task(ctx)
    prepared = prepare_store_task(ctx)
    health = health_check_task(ctx)
    plan = plan_shards_task(prepared, ctx)
    reports = _sample_shards(ctx, plan)
    result = aggregate_task(ctx)
    outcome = finalize_task(ctx, result, health, reports)
    return run_summary(ctx, outcome, reports=reports, prepared=prepared)


def _sample_shards(ctx: RunContext, plan: Sequence[Shard]) -> list[ShardReport]:
    """Run every shard; on the local thread pool at most ctx.parallelism.workers at once (the
    next starts when one ends), elsewhere all submitted at once. Reports in plan order; the
    first failed shard's error is raised after the shards in flight have ended."""
    run = FlowRunContext.get()
    local = run is None or isinstance(run.task_runner, ThreadPoolTaskRunner)
    window = ctx.parallelism.workers if local else max(1, len(plan))
    pending = list(enumerate(plan))
    running: dict[Any, int] = {}
    reports: dict[int, ShardReport] = {}
    while pending or running:
        while pending and len(running) < window:
            index, shard = pending.pop(0)
            running[sample_shard_task.submit(ctx, shard)] = index
        done = next(as_completed(list(running)))
        index = running.pop(done)
        try:
            reports[index] = done.result()
        except BaseException:
            for future in running:  # let the shards in flight end before failing the flow
                future.wait()
            raise
    return [reports[i] for i in range(len(plan))]
