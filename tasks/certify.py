"""The tasks of certify-dataset and recertify. Each wraps one certseg call.

Sampling and store writes retry on transient errors only (`is_transient`: I/O to object storage,
connections, timeouts, a lost Dask worker, a CUDA out-of-memory). A permanent error fails at once:
a ValueError (bad config, store written under another config, invalid dataset, untracked run) or
an OSError that cannot pass by waiting (a missing file, a path that is a file, no permission).
Retrying a shard is safe: rewriting a region gives identical bytes and completed blocks are
skipped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from certseg.aggregate import AggregateResult, CertifyParams, aggregate_store, dask_client
from certseg.config import RunConfig, config_from_dict, load_config
from certseg.pipeline import (
    HealthResult,
    PreparedStore,
    RunOutcome,
    Shard,
    ShardReport,
    finalize_run,
    load_models,
    plan_shards,
    prepare_store,
    read_health_results,
    run_health_check,
    sample_shard,
)
from certseg.redact import redact_url
from certseg.storage import SampleStore

_PROGRESS: list[Callable[[int], None]] = []


def set_progress_hook(hook: Callable[[int], None] | None) -> None:
    """Install (or remove, with None) the in-process callback told of each finished block's
    sample count; the CLI uses it for its progress bar."""
    _PROGRESS.clear()
    if hook is not None:
        _PROGRESS.append(hook)


def _notify(count: int) -> None:
    for hook in _PROGRESS:
        hook(count)


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


@task(name="load-config", cache_policy=NO_CACHE)
def load_config_task(
    config: str | Mapping[str, Any], base_dir: str | None = None, skip_invalid: bool = False
) -> RunConfig:
    """A RunConfig from a YAML path or a mapping; `skip_invalid` turns on the dataset option."""
    if isinstance(config, str):
        loaded = load_config(config, base_dir=base_dir)
    else:
        data = dict(config)
        if base_dir is not None:
            data["base_dir"] = base_dir
        loaded = config_from_dict(data)
    if skip_invalid and not loaded.dataset.skip_invalid:
        dataset = dataclasses.replace(loaded.dataset, skip_invalid=True)
        loaded = loaded.model_copy(update={"dataset": dataset})
    return loaded


@task(
    name="prepare-store",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def prepare_store_task(
    config: RunConfig, store_url: str, storage_options: Mapping[str, Any]
) -> PreparedStore:
    """Validate the dataset, then create (or reopen) the store from its template."""
    models = load_models(config)
    prepared = prepare_store(
        config,
        num_classes=models.num_classes,
        store_url=store_url,
        storage_options=storage_options,
        models=models,
    )
    get_run_logger().info(
        "store %s %s (%d images, config_id %s)",
        redact_url(store_url),
        "created" if prepared.created else "reopened",
        prepared.num_images,
        config.config_id[:12],
    )
    return prepared


@task(name="check-tracking", cache_policy=NO_CACHE)
def check_tracking_task(tracking_uri: str) -> None:
    """Open (or create whole) the MLflow tracking store before any sampling; fail fast if not."""
    from certseg.tracking import prepare_tracking_store

    prepare_tracking_store(tracking_uri)


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_shards_task(num_images: int, shards: int) -> tuple[Shard, ...]:
    """Contiguous image ranges, one per sampling task."""
    return plan_shards(num_images, shards)


@task(
    name="health-check",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def health_check_task(
    config: RunConfig, store_url: str, storage_options: Mapping[str, Any]
) -> list[HealthResult]:
    """Base accuracy of every variant per σ on the held-out set (resumable)."""
    results = run_health_check(config, store_url=store_url, storage_options=storage_options)
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
def sample_shard_task(
    config: RunConfig, shard: Shard, store_url: str, storage_options: Mapping[str, Any]
) -> ShardReport:
    """Sample the missing blocks of one shard's images into the store."""
    report = sample_shard(
        config, shard, store_url=store_url, storage_options=storage_options, progress=_notify
    )
    get_run_logger().info(
        "shard %d [%d, %d): %d blocks sampled, %d skipped (already done)",
        shard.index,
        shard.start,
        shard.stop,
        report.sampled_blocks,
        report.skipped_blocks,
    )
    return report


@task(
    name="aggregate-votes",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def aggregate_task(
    store_url: str,
    storage_options: Mapping[str, Any],
    params: CertifyParams,
    dask_address: str | None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    processes: bool = True,
) -> AggregateResult:
    """Counts → certificates → merged metrics on a Dask cluster (address, else a LocalCluster)."""
    with dask_client(
        dask_address,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
    ) as client:
        return aggregate_store(store_url, params, storage_options=storage_options, client=client)


@task(
    name="report-and-track",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def finalize_task(
    config: RunConfig,
    result: AggregateResult,
    store_url: str,
    storage_options: Mapping[str, Any],
    health: list[HealthResult],
    rates: Mapping[str, float],
    out_dir: str,
    tracking_uri: str,
    config_file: str | None = None,
    track: bool = True,
    extra_tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Results table, Parquet/CSV, plots and the MLflow run."""
    return finalize_run(
        config,
        result,
        store_url=store_url,
        storage_options=storage_options,
        health=health,
        rates=rates,
        out_dir=out_dir,
        tracking_uri=tracking_uri,
        config_file=config_file,
        track=track,
        extra_tags=extra_tags,
    )


@task(
    name="open-store-config",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_transient,
)
def store_config_task(
    store_url: str, storage_options: Mapping[str, Any]
) -> tuple[RunConfig, int, list[HealthResult]]:
    """The config a store was written under (as persisted: secrets redacted), its n, and its
    stored health results. The store is opened with the caller's storage_options, never the
    persisted (redacted) ones."""
    store = SampleStore.open(store_url, storage_options=storage_options, read_only=True)
    config = config_from_dict(
        json.loads(store.attrs["config"]), source=f"store {redact_url(store_url)}"
    )
    return config, store.n, read_health_results(store, config)


def default_out_dir(config: RunConfig, store_url: str) -> str:
    """Results folder beside a local store ("<store>.results"), else ./certseg-results/<name>."""
    if "://" not in store_url:
        return str(Path(store_url).with_suffix("")) + "-results"
    return str(Path("certseg-results") / config.name)
