"""Dask aggregation: stored class maps → counts → certificates → merged metrics, per (σ, variant).

One Dask task per (σ, variant, image) opens the store, and either reads the persisted counts (when
they were computed from the same n) or streams the image's stored samples block by block:
selection votes → selected labels ĉ (n0 phase), estimation votes over the first n samples →
agreement counts k and the smoothed (majority) labels. It then certifies with
`certseg.stats.certify_pixels`, computes per-pixel radii (`pixel_radii`), and returns a small
`ImageSummary` (confusion accumulators and a radius histogram, all integer counts). Summaries are
folded per (σ, variant) on the workers (dask.bag.foldby), so the result does not depend on the
order, the number of shards or the number of workers. Nothing ever holds an (N, H, W) array.

Counts are persisted to the store (counts/<σ>/<variant>/...) when computed with the store's full n,
so `recertify` with new α, τ or correction reads them instead of the samples; a smaller n recounts
from the first n stored samples.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from certseg.config import CertifyParams as CertifyParams
from certseg.redact import check_unredacted, redact_url
from certseg.storage import SampleStore, sigma_key

RADIUS_BINS = 250
RADIUS_MAX_OVER_SIGMA = 5.0
"""Radius histogram: RADIUS_BINS equal bins of radius/σ over [0, RADIUS_MAX_OVER_SIGMA]."""


def radius_edges(sigma: float) -> np.ndarray:
    """(RADIUS_BINS + 1,) bin edges of the radius histogram at σ, in [0, 1] image units."""
    return sigma * np.linspace(0.0, RADIUS_MAX_OVER_SIGMA, RADIUS_BINS + 1)


@dataclass
class ImageSummary:
    """Integer tallies of one or more images for one (σ, variant); merge by adding.

    certified / smoothed / clean: ConfusionAccumulator dicts (see certseg.stats). radius_hist:
    (RADIUS_BINS,) counts of correctly certified pixels by per-pixel radius (Cohen/Bonferroni),
    the last bin also holding radii beyond the range. min_count: the smallest certifiable k of
    the images (min over images). first_count: the smallest k the first correction step can
    certify (level α/m, m = the image's pixels), min over images: above n, no pixel of any image
    can be certified (-1: not computed, e.g. a summary written before this field existed).
    """

    sigma: float
    variant: str
    num_images: int
    certified: dict[str, Any]
    smoothed: dict[str, Any]
    clean: dict[str, Any]
    radius_hist: list[int]
    min_count: int
    recounted: int = 0
    first_count: int = -1

    def merge(self, other: ImageSummary) -> ImageSummary:
        """The summary of both (the same σ and variant)."""
        from certseg.stats import ConfusionAccumulator

        if (self.sigma, self.variant) != (other.sigma, other.variant):
            raise ValueError(
                f"cannot merge summaries of {(self.sigma, self.variant)} and "
                f"{(other.sigma, other.variant)}"
            )

        def add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            merged = ConfusionAccumulator.from_dict(a) + ConfusionAccumulator.from_dict(b)
            return merged.to_dict()

        return ImageSummary(
            sigma=self.sigma,
            variant=self.variant,
            num_images=self.num_images + other.num_images,
            certified=add(self.certified, other.certified),
            smoothed=add(self.smoothed, other.smoothed),
            clean=add(self.clean, other.clean),
            radius_hist=[a + b for a, b in zip(self.radius_hist, other.radius_hist, strict=True)],
            min_count=min(self.min_count, other.min_count),
            recounted=self.recounted + other.recounted,
            first_count=_min_known(self.first_count, other.first_count),
        )


def _min_known(a: int, b: int) -> int:
    known = [v for v in (a, b) if v >= 0]
    return min(known) if known else -1


@dataclass(frozen=True)
class ImageCounts:
    """One image's votes at one (σ, variant): selected labels ĉ, agreement counts k of the first
    n estimation samples, and the smoothed (majority over those n) labels; (H, W) int32 each."""

    labels_selected: np.ndarray
    k: np.ndarray
    labels_smoothed: np.ndarray
    n: int


def count_image(store: SampleStore, sigma: float, variant: str, image: int, n: int) -> ImageCounts:
    """Stream an image's stored class maps block by block into its counts (first n samples).

    Selected labels: the mode of the n0 selection maps (`select_labels`; the selection blocks are
    read and joined, n0 · H · W bytes). k and the smoothed labels: one pass over the estimation
    blocks of the first n samples (`count_estimation`: a comparison with ĉ per map, per-class
    votes only where k <= n / 2). Equal, value for value, to counting every class on every map
    (`count_votes` + `labels_from_votes`), for any block size.
    """
    from certseg.stats import count_estimation, select_labels

    if not 1 <= n <= store.n:
        raise ValueError(f"n must be in [1, {store.n}] (the samples stored), got {n}")
    c = store.num_classes
    selection = [
        store.read_samples(sigma, variant, "selection", image, start, stop)
        for start, stop in store.blocks("selection")
    ]
    labels = select_labels(selection[0] if len(selection) == 1 else np.concatenate(selection), c)
    del selection
    estimation = (
        store.read_samples(sigma, variant, "estimation", image, start, min(stop, n))
        for start, stop in store.blocks("estimation")
        if start < n
    )
    counts = count_estimation(estimation, labels, n, c)
    return ImageCounts(
        labels_selected=labels, k=counts.k, labels_smoothed=counts.labels_smoothed, n=n
    )


def summarize_image(
    store: SampleStore,
    sigma: float,
    variant: str,
    image: int,
    params: CertifyParams,
    *,
    persist_counts: bool = True,
) -> ImageSummary:
    """Certify one image at one (σ, variant) and tally it (see the module docstring)."""
    from certseg.stats import (
        ConfusionAccumulator,
        certify_pixels,
        min_count_to_certify,
        pixel_radii,
    )

    recounted = 0
    if store.counts_n(sigma, variant, image) == params.n:
        stored = store.read_counts(sigma, variant, image)
        counts = ImageCounts(
            stored["labels_selected"], stored["k"], stored["labels_smoothed"], params.n
        )
    else:
        counts = count_image(store, sigma, variant, image, params.n)
        recounted = 1
        if persist_counts and params.n == store.n:
            store.write_counts(
                sigma,
                variant,
                image,
                labels_selected=counts.labels_selected,
                k=counts.k,
                labels_smoothed=counts.labels_smoothed,
                n=counts.n,
            )
    target = store.read_target(image)
    result = certify_pixels(
        counts.labels_selected,
        counts.k,
        params.n,
        alpha=params.alpha,
        tau=params.tau,
        sigma=sigma,
        correction=params.correction,
    )
    c, ignore = store.num_classes, store.ignore_index
    certified = ConfusionAccumulator(c).update(result.labels, target, ignore)
    smoothed = ConfusionAccumulator(c).update(counts.labels_smoothed, target, ignore)
    clean_prediction = store.read_clean(store.segmenter_of(variant, sigma), image)
    clean = ConfusionAccumulator(c).update(clean_prediction, target, ignore)
    radii = pixel_radii(counts.k, params.n, alpha=params.alpha, sigma=sigma)
    good = (radii > 0) & (counts.labels_selected == target) & (target != ignore)
    edges = radius_edges(sigma)
    hist, _ = np.histogram(np.minimum(radii[good], edges[-1]), bins=edges)
    return ImageSummary(
        sigma=sigma,
        variant=variant,
        num_images=1,
        certified=certified.to_dict(),
        smoothed=smoothed.to_dict(),
        clean=clean.to_dict(),
        radius_hist=[int(v) for v in hist],
        min_count=int(result.min_count),
        recounted=recounted,
        first_count=min_count_to_certify(params.n, params.tau, params.alpha / counts.k.size),
    )


# --- Dask ------------------------------------------------------------------------------------


def _summarize_partition(
    items: Sequence[tuple[float, str, int]],
    url: str,
    options: Mapping[str, Any],
    params: CertifyParams,
    persist_counts: bool,
) -> list[ImageSummary]:
    """Summaries of a partition's (σ, variant, image) items; the store is opened once."""
    store = SampleStore.open(url, storage_options=options)
    return [
        summarize_image(store, sigma, variant, image, params, persist_counts=persist_counts)
        for sigma, variant, image in items
    ]


def _summary_key(summary: ImageSummary) -> tuple[float, str]:
    return (summary.sigma, summary.variant)


def _merge(a: ImageSummary, b: ImageSummary) -> ImageSummary:
    return a.merge(b)


@dataclass
class AggregateResult:
    """Per (σ, variant) merged summaries, in the store's σ and variant order."""

    params: CertifyParams
    summaries: dict[tuple[float, str], ImageSummary] = field(default_factory=dict)

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
) -> AggregateResult:
    """Certify every stored image for each (σ, variant) and merge the tallies, with Dask.

    client: a dask.distributed Client (LocalCluster or a scheduler address; see `dask_client`),
    or None for dask's synchronous scheduler (in-process). The store must be completely sampled.
    """
    db: Any = importlib.import_module("dask.bag")  # untyped library

    options = dict(storage_options or {})
    store = SampleStore.open(store_url, storage_options=options)
    if params.n > store.n:
        raise ValueError(
            f"n={params.n} exceeds the {store.n} estimation samples in {redact_url(store_url)!r}"
        )
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
    summaries = bag.map_partitions(_summarize_partition, store_url, options, params, persist_counts)
    folded = summaries.foldby(_summary_key, _merge, combine=_merge)
    if client is None:
        pairs = folded.compute(scheduler="synchronous")
    else:
        pairs = client.compute(folded, sync=True)
    merged = dict(pairs)
    result = AggregateResult(params)
    for sigma in sigma_list:
        for variant in variant_list:
            result.summaries[(sigma, variant)] = merged[(sigma, variant)]
    return result


def _check_complete(store: SampleStore, sigmas: Sequence[float], variants: Sequence[str]) -> None:
    group_of = {v: g for g, names in store.groups.items() for v in names}
    for sigma in sigmas:
        for group in {group_of[v] for v in variants}:
            for phase in ("selection", "estimation"):
                for image in range(store.num_images):
                    if not store.done_blocks(sigma, group, phase, image).all():
                        raise ValueError(
                            f"store {redact_url(store.url)!r} is not completely sampled: image "
                            f"{store.image_ids[image]!r}, {sigma_key(sigma)}, group {group!r}, "
                            f"phase {phase!r}; run certify (it resumes) first"
                        )
        for segmenter in {store.segmenter_of(v, sigma) for v in variants}:
            for image in range(store.num_images):
                if not store.clean_done(segmenter, image):
                    raise ValueError(
                        f"store {redact_url(store.url)!r} lacks the clean prediction of "
                        f"{segmenter!r} for image {store.image_ids[image]!r}; run certify (it "
                        "resumes) first"
                    )


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
