"""recertify: new α, τ, correction or a smaller n from an existing store, without sampling.

Prefect entrypoint `flows/recertify.py:recertify` (installed as certseg.flows.recertify).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from certseg.run.finalize import run_summary
from certseg.stats.correction import Correction
from certseg.tasks.certify import (
    aggregate_task,
    check_tracking_task,
    finalize_task,
    read_stored_run_task,
    resolve_recertify_task,
)


@flow(name="recertify", log_prints=True)
def recertify(
    store_url: str,
    storage_options: dict[str, Any] | None = None,
    alpha: float | None = None,
    tau: float | None = None,
    correction: Correction | None = None,
    n: int | None = None,
    dask_address: str | None = None,
    tracking_uri: str | None = None,
    out_dir: str | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Certify the stored samples again with new parameters (None keeps the store's config).

    Reads the persisted counts when n is the store's n; a smaller n recounts from the first n
    stored samples. Returns {"config_id", "store_url", "tracking_uri", "run_id",
    "already_logged", "tracking_error", "out_dir", "rows"} (URLs redacted).

    The guarantee holds for α, τ, correction and n fixed before the samples are looked at:
    choosing them after seeing results (trying several and reporting the best) voids it.

    storage_options: how to reach the store now (None: none; credentials best from the
    environment). The store's persisted config has its secrets redacted and its storage_options,
    tracking URI or Dask address are never used as credentials: where the persisted tracking URI
    or Dask address held credentials, pass tracking_uri / dask_address (else a clear error).
    """
    stored = read_stored_run_task(store_url, storage_options)
    ctx = resolve_recertify_task(
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
    if ctx.track:  # before any work
        check_tracking_task(ctx)
    result = aggregate_task(ctx)
    outcome = finalize_task(ctx, result, stored.health)
    return run_summary(ctx, outcome)
