"""recertify: new α, τ, correction or a smaller n from an existing store, without sampling."""

from __future__ import annotations

from typing import Any

from prefect import flow

from certseg.aggregate import CertifyParams
from certseg.redact import check_unredacted, redact_url
from certseg.stats.correction import Correction
from tasks.certify import (
    aggregate_task,
    check_tracking_task,
    default_out_dir,
    finalize_task,
    store_config_task,
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
    stored samples. Returns {"config_id", "store_url", "run_id", "already_logged",
    "tracking_error", "out_dir", "rows"} (store_url redacted).

    The guarantee holds for α, τ, correction and n fixed before the samples are looked at:
    choosing them after seeing results (trying several and reporting the best) voids it.

    storage_options: how to reach the store now (None: none; credentials best from the
    environment). The store's persisted config has its secrets redacted and its storage_options,
    tracking URI or Dask address are never used as credentials: where the persisted tracking URI
    or Dask address held credentials, pass tracking_uri / dask_address (else a clear error).
    """
    options = storage_options or {}
    config, stored_n, health = store_config_task(store_url, options)
    params = CertifyParams(
        n=n or stored_n,
        alpha=alpha if alpha is not None else config.alpha,
        tau=tau if tau is not None else config.tau,
        correction=correction or config.correction,
    )
    config = config.model_copy(
        update={"alpha": params.alpha, "tau": params.tau, "correction": params.correction}
    )
    uri = tracking_uri or config.tracking.uri
    if track:  # before any work: the persisted URI may be a redacted placeholder
        check_unredacted(uri, "tracking.uri")
        check_tracking_task(uri)
    result = aggregate_task(
        store_url,
        options,
        params,
        dask_address or config.dask.address,
        config.dask.n_workers,
        config.dask.threads_per_worker,
        config.dask.processes,
    )
    outcome = finalize_task(
        config,
        result,
        store_url,
        options,
        health,
        {},
        out_dir or default_out_dir(config, store_url) + "-recertify",
        uri,
        None,
        track,
        {"recertify": "true", "recertify.n": str(params.n)},
    )
    return {
        "config_id": outcome.config_id,
        "store_url": redact_url(store_url),
        "run_id": outcome.run_id,
        "already_logged": outcome.already_logged,
        "tracking_error": outcome.tracking_error,
        "out_dir": outcome.out_dir,
        "rows": outcome.rows,
    }
