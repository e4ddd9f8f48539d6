"""certify-dataset: plan → validate and create the store → health check → sample shards →
aggregate with Dask → report and MLflow. Re-running the same config resumes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from certseg.aggregate import CertifyParams
from certseg.pipeline import sampling_rates
from tasks.certify import (
    aggregate_task,
    default_out_dir,
    finalize_task,
    health_check_task,
    load_config_task,
    plan_shards_task,
    prepare_store_task,
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
) -> dict[str, Any]:
    """Certify a dataset as a config describes (a YAML path or a mapping).

    store_url / storage_options / dask_address / tracking_uri / shards override the config.
    Sampling shards are submitted to the flow's task runner (one at a time by default; use
    `certify_dataset.with_options(task_runner=DaskTaskRunner(address))` to spread them).
    Returns {"config_id", "store_url", "run_id", "out_dir", "rows"}.
    """
    cfg = load_config_task(config, base_dir, skip_invalid)
    url = store_url or cfg.store.url
    options: Mapping[str, Any] = (
        storage_options if storage_options is not None else cfg.store.storage_options
    )
    prepared = prepare_store_task(cfg, url, options)
    health = health_check_task(cfg, url, options)
    plan = plan_shards_task(prepared.num_images, shards or cfg.shards)
    futures = [sample_shard_task.submit(cfg, shard, url, options) for shard in plan]
    reports = [future.result() for future in futures]
    params = CertifyParams(n=cfg.n, alpha=cfg.alpha, tau=cfg.tau, correction=cfg.correction)
    result = aggregate_task(
        url,
        options,
        params,
        dask_address or cfg.dask.address,
        cfg.dask.n_workers,
        cfg.dask.threads_per_worker,
        cfg.dask.processes,
    )
    outcome = finalize_task(
        cfg,
        result,
        url,
        options,
        health,
        sampling_rates(reports),
        out_dir or default_out_dir(cfg, url),
        tracking_uri or cfg.tracking.uri,
        config if isinstance(config, str) else None,
        track,
    )
    return {
        "config_id": cfg.config_id,
        "store_url": url,
        "run_id": outcome.run_id,
        "out_dir": outcome.out_dir,
        "rows": outcome.rows,
        "sampled_blocks": sum(r.sampled_blocks for r in reports),
        "skipped_blocks": sum(r.skipped_blocks for r in reports),
        "skipped_files": [list(item) for item in prepared.skipped],
    }
