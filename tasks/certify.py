"""The tasks of certify-dataset and recertify. Each wraps one certseg.run step and declares its
retries; none holds a formula.

Sampling and store writes retry on transient errors only (`is_transient`: I/O to object storage,
connections, timeouts, a lost Dask worker, a CUDA out-of-memory). A permanent error fails at once:
a ValueError (bad config, store written under another config, invalid dataset, untracked run) or
an OSError that cannot pass by waiting (a missing file, a path that is a file, no permission).
Retrying a shard is safe: rewriting a region gives identical bytes and completed blocks are
skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from certseg.aggregate import AggregateResult, aggregate_store, dask_client
from certseg.outcomes import HealthResult
from certseg.redact import redact_url
from certseg.run.context import RunContext, certify_context
from certseg.run.finalize import RunOutcome, finalize_run
from certseg.run.finished import FinishedRun, finished_run
from certseg.run.health import run_health_check
from certseg.run.models import load_models
from certseg.run.prepare import PreparedStore, prepare_store
from certseg.run.recertify import StoredRun, read_stored_run, recertify_context
from certseg.run.resources import torch_threads
from certseg.run.sample import (
    Shard,
    ShardReport,
    plan_shards,
    run_samples,
    sample_shard,
    sampling_rates,
)
from certseg.stats.correction import Correction
from certseg.tasks.progress import progress_sink

PERMANENT_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
"""OSErrors that waiting cannot fix (s3fs maps NoSuchKey/NoSuchBucket and AccessDenied here)."""


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed: I/O and connection errors, timeouts, a lost Dask worker, an
    out-of-memory; never a ValueError or a permanent OSError (PERMANENT_OS_ERRORS)."""
    if isinstance(error, (ValueError, *PERMANENT_OS_ERRORS)):
        return False
    if isinstance(error, OSError | ConnectionError | TimeoutError):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"KilledWorker", "OutOfMemoryError"}:
        return True
    # A RuntimeError is a bug or a model that cannot take the input (permanent), unless it is
    # an allocation failure that another moment's memory pressure may not repeat.
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only `is_transient` errors."""
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False


@task(name="resolve-run", cache_policy=NO_CACHE)
def resolve_run_task(
    config: str | Mapping[str, Any],
    *,
    base_dir: str | None,
    skip_invalid: bool,
    store_url: str | None,
    storage_options: Mapping[str, Any] | None,
    tracking_uri: str | None,
    dask_address: str | None,
    shards: int | None,
    out_dir: str | None,
    track: bool,
    started_ms: int | None = None,
) -> RunContext:
    """Parse the config (a YAML path, once, or a mapping) and resolve every override."""
    return certify_context(
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


@task(name="find-finished-run", cache_policy=NO_CACHE)
def finished_run_task(ctx: RunContext) -> FinishedRun | None:
    """The earlier identical run when it is finished (its results are read, nothing redone)."""
    return finished_run(ctx)


@task(name="check-tracking", cache_policy=NO_CACHE)
def check_tracking_task(ctx: RunContext) -> None:
    """Open (or create whole) the MLflow tracking store before any sampling; fail fast if not."""
    from certseg.tracking import prepare_tracking_store

    prepare_tracking_store(ctx.tracking_uri)


@task(
    name="prepare-store",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def prepare_store_task(ctx: RunContext) -> PreparedStore:
    """Validate the dataset, probe the segmenters, then create (or reopen) the store."""
    prepared = prepare_store(ctx, load_models(ctx, denoisers=False))
    sink = progress_sink()
    if sink is not None:
        sink.start(run_samples(ctx, prepared.num_images))
    get_run_logger().info(
        "store %s %s (%d images, config_id %s)",
        redact_url(ctx.store_url),
        "created" if prepared.created else "reopened",
        prepared.num_images,
        ctx.config_id[:12],
    )
    return prepared


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_shards_task(prepared: PreparedStore, ctx: RunContext) -> tuple[Shard, ...]:
    """Contiguous image ranges, one per sampling task."""
    return plan_shards(prepared.num_images, ctx.shards)


@task(
    name="health-check",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def health_check_task(ctx: RunContext) -> list[HealthResult]:
    """Base accuracy of every variant per σ on the held-out set (resumable)."""
    results = run_health_check(ctx)
    for result in results:
        if result.flagged:
            get_run_logger().warning(
                "health: variant %s at sigma=%g has base accuracy %.3f below the floor %.3f",
                result.variant,
                result.sigma,
                result.accuracy,
                result.floor,
            )
    return results


@task(
    name="sample-shard",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_transient,
)
def sample_shard_task(ctx: RunContext, shard: Shard) -> ShardReport:
    """Sample the missing blocks of one shard's images into the store."""
    sink = progress_sink()
    report = sample_shard(ctx, shard, progress=sink.advance if sink is not None else None)
    get_run_logger().info(
        "shard %d [%d, %d): %d blocks sampled, %d skipped (already done), torch threads %d",
        shard.index,
        shard.start,
        shard.stop,
        report.sampled_blocks,
        report.skipped_blocks,
        torch_threads(),
    )
    return report


@task(
    name="aggregate-votes",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def aggregate_task(ctx: RunContext) -> AggregateResult:
    """Counts → certificates → merged metrics on a Dask cluster (address, else a LocalCluster);
    the certified maps of the config's first report.overlay_images images are kept."""
    with dask_client(
        ctx.dask.address,
        n_workers=ctx.dask.n_workers,
        threads_per_worker=ctx.dask.threads_per_worker,
        processes=ctx.dask.processes,
    ) as client:
        return aggregate_store(
            ctx.store_url,
            ctx.params,
            storage_options=ctx.storage_options,
            client=client,
            keep_maps=range(ctx.config.report.overlay_images),
        )


@task(
    name="report-and-track",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def finalize_task(
    ctx: RunContext,
    result: AggregateResult,
    health: Sequence[HealthResult],
    reports: Sequence[ShardReport] = (),
) -> RunOutcome:
    """Results table, Parquet/CSV, plots and the MLflow run."""
    return finalize_run(ctx, result, health=health, rates=sampling_rates(reports))


@task(
    name="open-store-config",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def read_stored_run_task(store_url: str, storage_options: Mapping[str, Any] | None) -> StoredRun:
    """The config a store was written under (as persisted: secrets redacted), its n and its
    stored health results; the store opened with the caller's storage_options."""
    return read_stored_run(store_url, storage_options)


@task(name="resolve-recertify", cache_policy=NO_CACHE)
def resolve_recertify_task(
    stored: StoredRun,
    *,
    store_url: str,
    storage_options: Mapping[str, Any] | None,
    alpha: float | None,
    tau: float | None,
    correction: Correction | None,
    n: int | None,
    dask_address: str | None,
    tracking_uri: str | None,
    out_dir: str | None,
    track: bool,
) -> RunContext:
    """The recertify run's context: the stored config with the new α, τ, correction, n."""
    return recertify_context(
        stored,
        store_url=store_url,
        storage_options=storage_options,
        alpha=alpha,
        tau=tau,
        correction=correction,
        n=n,
        dask_address=dask_address,
        tracking_uri=tracking_uri,
        out_dir=out_dir,
        track=track,
    )
