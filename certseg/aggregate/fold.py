"""Fold every stored image's certificate into per-(σ, variant) summaries on a Dask cluster.

Each partition of (σ, variant, image) items opens the store once and certifies each image through
`certseg.certificates.certify_stored_image` (persisted counts when made from the same n, else a
recount streamed chunk by chunk), then tallies it (`summarize_certificate`). Summaries are folded
per (σ, variant) on the workers (dask.bag.foldby), so the result does not depend on the order,
the number of partitions or of workers. The certified maps of the images asked for (`keep_maps`,
the overlays') come back whole with the summaries; nothing ever holds an (N, H, W) array.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from certseg.aggregate.summary import (
    CertifiedMap,
    ImageSummary,
    certified_map,
    summarize_certificate,
)
from certseg.certificates import certify_stored_image, check_sequential_params
from certseg.config import CertifyParams
from certseg.redact import check_unredacted, redact_url
from certseg.storage import SampleStore


def _certify_partition(
    items: Sequence[tuple[float, str, int]],
    url: str,
    options: Mapping[str, Any],
    params: CertifyParams,
    persist_counts: bool,
    keep_maps: frozenset[int],
) -> list[_Tally]:
    """Tallies of a partition's (σ, variant, image) items; the store is opened once."""
    store = SampleStore.open(url, storage_options=options)
    out = []
    for sigma, variant, image in items:
        certificate = certify_stored_image(
            store, sigma, variant, image, params, persist_counts=persist_counts
        )
        summary = summarize_certificate(
            certificate,
            variant=variant,
            target=store.read_target(image),
            clean=store.read_clean(store.segmenter_of(variant, sigma), image),
            num_classes=store.num_classes,
            ignore_index=store.ignore_index,
            params=params,
        )
        kept = (certified_map(certificate, variant, image),) if image in keep_maps else ()
        out.append(_Tally(summary, kept))
    return out


@dataclass(frozen=True)
class _Tally:
    """What the fold carries: a merged summary and the kept maps of its images."""

    summary: ImageSummary
    maps: tuple[CertifiedMap, ...] = ()


def _tally_key(tally: _Tally) -> tuple[float, str]:
    return (tally.summary.sigma, tally.summary.variant)


def _merge(a: _Tally, b: _Tally) -> _Tally:
    return _Tally(a.summary.merge(b.summary), a.maps + b.maps)


@dataclass(frozen=True)
class AggregateResult:
    """Per (σ, variant) merged summaries, in the store's σ and variant order, and the certified
    maps kept for the overlays (by image, then σ and variant in that order)."""

    params: CertifyParams
    summaries: Mapping[tuple[float, str], ImageSummary] = field(default_factory=dict)
    maps: tuple[CertifiedMap, ...] = ()

    def get(self, sigma: float, variant: str) -> ImageSummary:
        """The summary of one (σ, variant)."""
        return self.summaries[(sigma, variant)]


def aggregate_store(
    store_url: str,
    params: CertifyParams,
    *,
    storage_options: Mapping[str, Any] | None = None,
    client: Any = None,
    sigmas: Sequence[float] | None = None,
    variants: Sequence[str] | None = None,
    persist_counts: bool = True,
    partitions: int | None = None,
    keep_maps: Sequence[int] = (),
) -> AggregateResult:
    """Certify every stored image for each (σ, variant) and merge the tallies, with Dask.

    client: a dask.distributed Client (LocalCluster or a scheduler address; see `dask_client`),
    or None for dask's synchronous scheduler (in-process). The store must be completely sampled.
    keep_maps: image indices whose certified maps the result keeps (for the overlay figure);
    indices past the store's images are left out.
    """
    db: Any = importlib.import_module("dask.bag")  # untyped library

    options = dict(storage_options or {})
    store = SampleStore.open(store_url, storage_options=options)
    if params.n > store.n:
        raise ValueError(
            f"n={params.n} exceeds the {store.n} estimation samples in {redact_url(store_url)!r}"
        )
    if store.looks:  # sequential: each image at its stopping look, with the stored α split
        check_sequential_params(store, params)
    sigma_list = list(sigmas) if sigmas is not None else list(store.sigmas)
    variant_list = list(variants) if variants is not None else list(store.variants)
    _check_complete(store, sigma_list, variant_list)
    items = [
        (sigma, variant, image)
        for sigma in sigma_list
        for variant in variant_list
        for image in range(store.num_images)
    ]
    workers = 1
    if client is not None:
        with contextlib.suppress(Exception):
            workers = max(1, len(client.scheduler_info().get("workers", {})))
    npartitions = partitions or max(1, min(len(items), 4 * workers))
    bag = db.from_sequence(items, npartitions=npartitions)
    keep = frozenset(i for i in keep_maps if 0 <= i < store.num_images)
    tallies = bag.map_partitions(
        _certify_partition, store_url, options, params, persist_counts, keep
    )
    folded = tallies.foldby(_tally_key, _merge, combine=_merge)
    if client is None:
        pairs = folded.compute(scheduler="synchronous")
    else:
        pairs = client.compute(folded, sync=True)
    merged: dict[tuple[float, str], _Tally] = dict(pairs)
    order = {(s, v): i for i, (s, v) in enumerate((s, v) for s in sigma_list for v in variant_list)}
    maps = sorted(
        (m for tally in merged.values() for m in tally.maps),
        key=lambda m: (m.image, order[(m.sigma, m.variant)]),
    )
    return AggregateResult(
        params,
        {(s, v): merged[(s, v)].summary for s in sigma_list for v in variant_list},
        tuple(maps),
    )


def _check_complete(store: SampleStore, sigmas: Sequence[float], variants: Sequence[str]) -> None:
    missing = store.first_missing(sigmas, variants)
    if missing is not None:
        raise ValueError(f"{missing}; run certify (it resumes) first")


@contextlib.contextmanager
def dask_client(
    address: str | None = None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    processes: bool = True,
) -> Iterator[Any]:
    """A dask.distributed Client: to the scheduler at `address`, else a fresh LocalCluster.

    The LocalCluster (and the client) are closed on exit; a remote scheduler is left running.
    An address holding certseg.redact.REDACTED (from a config certseg saved) raises ValueError.
    """
    if address:
        check_unredacted(address, "dask.address")
    distributed: Any = importlib.import_module("dask.distributed")  # untyped library
    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    if address:
        client = Client(address)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        dashboard_address=None,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
