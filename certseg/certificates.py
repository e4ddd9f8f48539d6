"""Certify one image: its counts (from the store or from streamed class maps), then the certificate.

Counts come from the store (persisted, else recounted from the stored samples) or from class maps
streamed in blocks; the certificate is SegCertify's (`certify_pixels`). The one path from votes to
a certificate. Aggregation certifies every stored image through `certify_stored_image` (and hands
the overlays the maps it made); `SmoothedSegmenter` certifies an image in memory through
`certify_class_maps`. Both count with `certseg.stats.count_image_votes` and certify with
`certify_counts`, so the same maps give the same certificate, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from certseg.config import CertifyParams
from certseg.redact import redact_url
from certseg.stats import CertificationResult, ImageCounts, certify_pixels, count_image_votes
from certseg.stats.sequential import certify_at_look
from certseg.storage import SampleStore, sigma_key


@dataclass(frozen=True, eq=False)
class ImageCertificate:
    """One image's certificate at one σ, with the counts it was made from.

    counts: the image's `ImageCounts` ((H, W) int32 ĉ, k and smoothed labels). result: the
    `CertificationResult` ((H, W) int32 labels, ABSTAIN where the certificate abstains; radius
    σΦ⁻¹(τ) in [0, 1] image units). recounted: the counts were counted from stored samples now
    (False: read from the store's persisted counts, or counted from maps handed in).
    look: the 0-based sequential look the certificate was made at (None: fixed n); its counts
    then hold the look's n_l estimation samples and result.alpha is the look's α_l.
    """

    sigma: float
    counts: ImageCounts
    result: CertificationResult
    recounted: bool = False
    look: int | None = None

    @property
    def estimation_samples(self) -> int:
        """The estimation samples the certificate used: n, or n_l at a sequential look."""
        return self.counts.n

    @property
    def labels(self) -> np.ndarray:
        """(H, W) int32 certified labels, ABSTAIN where the certificate abstains."""
        return self.result.labels


def certify_counts(counts: ImageCounts, *, sigma: float, params: CertifyParams) -> ImageCertificate:
    """The certificate of counts made from params.n estimation samples at σ ([0, 1] units)."""
    if counts.n != params.n:
        raise ValueError(f"counts hold n = {counts.n} estimation samples, params.n = {params.n}")
    result = certify_pixels(
        counts.labels_selected,
        counts.k,
        params.n,
        alpha=params.alpha,
        tau=params.tau,
        sigma=sigma,
        correction=params.correction,
    )
    return ImageCertificate(sigma=sigma, counts=counts, result=result)


def certify_class_maps(
    selection: Iterable[np.ndarray],
    estimation: Iterable[np.ndarray],
    *,
    sigma: float,
    params: CertifyParams,
    num_classes: int,
) -> ImageCertificate:
    """Certify one image from its class maps streamed in blocks ((count, H, W) each): the n0
    selection maps, then exactly params.n estimation maps (see `count_image_votes`)."""
    counts = count_image_votes(selection, estimation, n=params.n, num_classes=num_classes)
    return certify_counts(counts, sigma=sigma, params=params)


def count_stored_image(
    store: SampleStore, sigma: float, variant: str, image: int, n: int
) -> ImageCounts:
    """Count an image's stored class maps, chunk by chunk, over the first n estimation samples.

    The selection chunks are read and joined (n0 · H · W bytes); the estimation chunks are read
    one at a time. Equal, value for value, to counting every class on every map.
    """
    if not 1 <= n <= store.n:
        raise ValueError(f"n must be in [1, {store.n}] (the samples stored), got {n}")
    selection = (
        store.read_samples(sigma, variant, "selection", image, start, stop)
        for start, stop in store.blocks("selection")
    )
    estimation = (
        store.read_samples(sigma, variant, "estimation", image, start, min(stop, n))
        for start, stop in store.blocks("estimation")
        if start < n
    )
    return count_image_votes(selection, estimation, n=n, num_classes=store.num_classes)


def read_or_count(
    store: SampleStore,
    sigma: float,
    variant: str,
    image: int,
    n: int,
    *,
    persist: bool = True,
) -> tuple[ImageCounts, bool]:
    """An image's counts over n estimation samples: the store's persisted counts when they were
    made from n samples, else counted from the stored samples (`count_stored_image`).

    Returns (counts, recounted). persist: write recounted counts to the store when n is the
    store's full n (so recertify with new α, τ or correction reads them); counts of a smaller n
    are never persisted.
    """
    if store.counts_n(sigma, variant, image) == n:
        stored = store.read_counts(sigma, variant, image)
        counts = ImageCounts(stored["labels_selected"], stored["k"], stored["labels_smoothed"], n)
        return counts, False
    counts = count_stored_image(store, sigma, variant, image, n)
    if persist and n == store.n:
        store.write_counts(
            sigma,
            variant,
            image,
            labels_selected=counts.labels_selected,
            k=counts.k,
            labels_smoothed=counts.labels_smoothed,
            n=counts.n,
        )
    return counts, True


def certify_stored_image(
    store: SampleStore,
    sigma: float,
    variant: str,
    image: int,
    params: CertifyParams,
    *,
    persist_counts: bool = True,
) -> ImageCertificate:
    """Certify one stored image at one (σ, variant) with params (counts via `read_or_count`).

    A sequential store (store.looks) is certified at the image's recorded stopping look l:
    the counts of the first n_l estimation samples at level α_l (`certify_at_look`; params.n
    must be the store's n and params.alpha the α the looks split)."""
    if store.looks:
        return certify_stored_look(
            store, sigma, variant, image, params, persist_counts=persist_counts
        )
    counts, recounted = read_or_count(
        store, sigma, variant, image, params.n, persist=persist_counts
    )
    certificate = certify_counts(counts, sigma=sigma, params=params)
    return ImageCertificate(sigma, counts, certificate.result, recounted=recounted)


def check_sequential_params(store: SampleStore, params: CertifyParams) -> None:
    """ValueError unless params fit the sequential store: n its n and α the α its looks split
    (the levels α_l were fixed before sampling; another α or n would need other looks)."""
    if params.n != store.n or params.alpha != store.sequential_alpha:
        raise ValueError(
            f"store {redact_url(store.url)!r} was sampled sequentially (looks {list(store.looks)}, "
            f"α = {store.sequential_alpha} split as {list(store.look_alphas)}): it is certified "
            f"only with n = {store.n} and α = {store.sequential_alpha}, each image at its "
            f"recorded stopping look; got n = {params.n}, α = {params.alpha}"
        )


def certify_stored_look(
    store: SampleStore,
    sigma: float,
    variant: str,
    image: int,
    params: CertifyParams,
    *,
    persist_counts: bool = True,
) -> ImageCertificate:
    """Certify one image of a sequential store at its recorded stopping look l: counts over the
    first n_l estimation samples (`read_or_count`), `certify_at_look` at α_l with params' τ and
    correction. Guarantee: FWER <= α over the looks (union bound, docs/method.md §5).
    ValueError when the image has no stopping look yet (not completely sampled)."""
    check_sequential_params(store, params)
    look = store.read_stop(sigma, variant, image)
    if look < 0:
        raise ValueError(
            f"store {redact_url(store.url)!r}: image {store.image_ids[image]!r}, "
            f"{sigma_key(sigma)}, variant {variant!r} has no stopping look yet (sampling did not "
            "finish); run certify (it resumes) first"
        )
    n_look = store.looks[look]
    counts, recounted = read_or_count(store, sigma, variant, image, n_look, persist=persist_counts)
    result = certify_at_look(
        counts.labels_selected,
        counts.k,
        n_look,
        store.look_alphas[look],
        tau=params.tau,
        sigma=sigma,
        correction=params.correction,
    )
    return ImageCertificate(sigma, counts, result, recounted=recounted, look=look)
