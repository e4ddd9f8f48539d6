"""Recertify's inputs: a store's persisted config, n and health results, and the run context.

recertify certifies stored samples again with new α, τ, correction or a smaller n. The store's
persisted config has its secrets redacted: the store is reached with the caller's storage_options,
and a redacted tracking URI or Dask address must be given again (else a clear error).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certseg.aggregate import CertifyParams
from certseg.config import RunConfig, config_from_dict
from certseg.outcomes import HealthResult
from certseg.redact import redact_url
from certseg.run.context import RunContext, run_context
from certseg.run.health import read_health_results
from certseg.stats.correction import Correction
from certseg.storage import SampleStore


@dataclass(frozen=True)
class StoredRun:
    """What a store says of the run that wrote it: its config (as persisted: secrets redacted),
    its n and its stored health results."""

    config: RunConfig
    n: int
    health: tuple[HealthResult, ...]


def read_stored_run(store_url: str, storage_options: Mapping[str, Any] | None) -> StoredRun:
    """Open the store read-only with the caller's storage_options (never the persisted ones).

    ValueError for a sequential store (docs/sequential.md): recertify is refused there."""
    store = SampleStore.open(store_url, storage_options=storage_options, read_only=True)
    config = config_from_dict(
        json.loads(store.attrs["config"]), source=f"store {redact_url(store_url)}"
    )
    if store.looks:
        raise ValueError(
            f"store {redact_url(store_url)!r} was sampled sequentially (sequential.looks "
            f"{list(store.looks)}): its images stopped at different looks with α split as "
            f"{list(store.look_alphas)} before sampling, so recertifying with another α, τ, "
            "correction or n is refused (a smaller n or new looks would need samples the store "
            "may not hold); re-run certify on it to read its certificates, or sample a "
            "fixed-n store (sequential.enabled: false) to recertify"
        )
    return StoredRun(config, store.n, tuple(read_health_results(store, config)))


def recertify_context(
    stored: StoredRun,
    *,
    store_url: str,
    storage_options: Mapping[str, Any] | None = None,
    alpha: float | None = None,
    tau: float | None = None,
    correction: Correction | None = None,
    n: int | None = None,
    dask_address: str | None = None,
    tracking_uri: str | None = None,
    out_dir: str | None = None,
    track: bool = True,
) -> RunContext:
    """The context of recertifying the store that holds `stored`.

    None keeps the stored α, τ, correction and n. The store is reached with the
    caller's storage_options (None: none), never the persisted (redacted) ones; the default
    results folder is the certify one + "-recertify"; the MLflow run is tagged `recertify`.
    """
    params = CertifyParams(
        n=n or stored.n,
        alpha=alpha if alpha is not None else stored.config.alpha,
        tau=tau if tau is not None else stored.config.tau,
        correction=correction or stored.config.correction,
    )
    config = stored.config.model_copy(
        update={"alpha": params.alpha, "tau": params.tau, "correction": params.correction}
    )
    return run_context(
        config,
        store_url=store_url,
        storage_options=dict(storage_options or {}),
        tracking_uri=tracking_uri,
        dask_address=dask_address,
        out_dir=out_dir,
        track=track,
        params=params,
        extra_tags={"recertify": "true", "recertify.n": str(params.n)},
        out_suffix="-recertify",
    )
