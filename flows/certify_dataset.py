"""certify-dataset: plan → validate and create the store → health check → sample shards →
aggregate with Dask → report and MLflow. Re-running the same config resumes."""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from certseg.aggregate import CertifyParams
from certseg.pipeline import sampling_rates, store_location
from certseg.redact import redact_url
from tasks.certify import (
    aggregate_task,
    check_tracking_task,
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
    sample_on_dask: bool = False,
) -> dict[str, Any]:
    """Certify a dataset as a config describes (a YAML path or a mapping).

    store_url / storage_options / dask_address / tracking_uri / shards override the config.
    Sampling shards are submitted to the flow's task runner (one at a time by default).
    sample_on_dask: run the shards as Dask tasks on `dask_address` (or the config's dask.address)
    instead — this flow runs again as a subflow with prefect-dask's DaskTaskRunner, so a deployment
    can choose it by a parameter; the Dask workers must reach this run's Prefect API (a standing
    server). From Python, `certify_dataset.with_options(task_runner=DaskTaskRunner(address))` is
    the same. Returns {"config_id", "store_url", "run_id", "out_dir", "rows", ...} (store_url
    with any credentials redacted).

    Prefect records every parameter of a flow run in its database (and shows it in the UI): give
    credentials through the environment of the worker and Dask workers (AWS_* / AWS_PROFILE,
    MLFLOW_TRACKING_USERNAME/PASSWORD), never in store_url, storage_options or tracking_uri.
    """
    cfg = load_config_task(config, base_dir, skip_invalid)
    if sample_on_dask:
        from prefect_dask.task_runners import DaskTaskRunner

        address = dask_address or cfg.dask.address
        if not address:
            raise ValueError(
                "sample_on_dask: needs a Dask scheduler address (the dask_address parameter "
                "or dask.address in the config)"
            )
        runner = cast("TaskRunner[PrefectFuture[Any]]", DaskTaskRunner(address=address))
        on_cluster = certify_dataset.with_options(task_runner=runner)
        return on_cluster(
            config,
            store_url=store_url,
            storage_options=storage_options,
            dask_address=address,
            tracking_uri=tracking_uri,
            shards=shards,
            out_dir=out_dir,
            base_dir=base_dir,
            skip_invalid=skip_invalid,
            track=track,
        )
    url, options = store_location(cfg, store_url, storage_options)
    if track:  # a broken tracking store fails here, before any sampling
        check_tracking_task(tracking_uri or cfg.tracking.uri)
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
        "store_url": redact_url(url),
        "run_id": outcome.run_id,
        "already_logged": outcome.already_logged,
        "tracking_error": outcome.tracking_error,
        "out_dir": outcome.out_dir,
        "rows": outcome.rows,
        "sampled_blocks": sum(r.sampled_blocks for r in reports),
        "skipped_blocks": sum(r.skipped_blocks for r in reports),
        "skipped_files": [list(item) for item in prepared.skipped],
    }
