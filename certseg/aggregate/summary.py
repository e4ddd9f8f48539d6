"""Per-image summaries of a certificate: integer tallies that merge by adding, and kept maps.

A summary holds counts only (confusion matrices, a radius histogram), so summaries of any split of
the images, merged in any order, are the same; `CertifiedMap` is an image's certified labels kept
whole for the overlay figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from certseg.certificates import ImageCertificate
from certseg.config import CertifyParams
from certseg.stats import ConfusionAccumulator, min_count_to_certify, pixel_radii

RADIUS_BINS = 250
RADIUS_MAX_OVER_SIGMA = 5.0
"""Radius histogram: RADIUS_BINS equal bins of radius/σ over [0, RADIUS_MAX_OVER_SIGMA]."""


def radius_edges(sigma: float) -> np.ndarray:
    """(RADIUS_BINS + 1,) bin edges of the radius histogram at σ, in [0, 1] image units."""
    return sigma * np.linspace(0.0, RADIUS_MAX_OVER_SIGMA, RADIUS_BINS + 1)


@dataclass(frozen=True)
class ImageSummary:
    """Integer tallies of one or more images at one (σ, variant); `merge` adds them.

    certified / smoothed / clean: confusion counts over valid pixels of the certified labels
    (ABSTAIN counted as abstained), the smoothed (majority) labels and the clean prediction.
    radius_hist: (RADIUS_BINS,) counts of correctly certified pixels by per-pixel radius
    (Cohen/Bonferroni, bins of `radius_edges(sigma)`), the last bin also holding radii beyond
    the range. min_count: the smallest certifiable k (min over images). first_count: the
    smallest k the first correction step can certify (level α/m, m = the image's pixels), min
    over images: above n, no pixel of any image can be certified. recounted: images whose
    counts were counted from stored samples (not read from persisted counts).
    estimation_samples: the estimation samples the certificates used, summed over the images
    (n each at fixed n; n_l of each image's stopping look when sequential).
    """

    sigma: float
    variant: str
    num_images: int
    certified: ConfusionAccumulator
    smoothed: ConfusionAccumulator
    clean: ConfusionAccumulator
    radius_hist: tuple[int, ...]
    min_count: int
    first_count: int
    recounted: int = 0
    estimation_samples: int = 0

    def merge(self, other: ImageSummary) -> ImageSummary:
        """The summary of both (the same σ and variant)."""
        if (self.sigma, self.variant) != (other.sigma, other.variant):
            raise ValueError(
                f"cannot merge summaries of {(self.sigma, self.variant)} and "
                f"{(other.sigma, other.variant)}"
            )
        return ImageSummary(
            sigma=self.sigma,
            variant=self.variant,
            num_images=self.num_images + other.num_images,
            certified=self.certified + other.certified,
            smoothed=self.smoothed + other.smoothed,
            clean=self.clean + other.clean,
            radius_hist=tuple(
                a + b for a, b in zip(self.radius_hist, other.radius_hist, strict=True)
            ),
            min_count=min(self.min_count, other.min_count),
            first_count=min(self.first_count, other.first_count),
            recounted=self.recounted + other.recounted,
            estimation_samples=self.estimation_samples + other.estimation_samples,
        )


@dataclass(frozen=True, eq=False)
class CertifiedMap:
    """One image's certified labels at one (σ, variant), kept by aggregation for the overlays.

    image: the store's image index. labels: (H, W) class indices in the smallest signed integer
    type that holds them (int8 up to 128 classes: 2 MiB for a 1024 × 2048 map), ABSTAIN (-1)
    where the certificate abstains.
    """

    sigma: float
    variant: str
    image: int
    labels: np.ndarray


def certified_map(certificate: ImageCertificate, variant: str, image: int) -> CertifiedMap:
    """The certificate's labels in the smallest signed type that holds them."""
    labels = certificate.labels
    high = int(labels.max()) if labels.size else 0
    dtype = next(t for t in (np.int8, np.int16, np.int32) if high <= np.iinfo(t).max)
    return CertifiedMap(certificate.sigma, variant, image, labels.astype(dtype))


def summarize_certificate(
    certificate: ImageCertificate,
    *,
    variant: str,
    target: np.ndarray,
    clean: np.ndarray,
    num_classes: int,
    ignore_index: int,
    params: CertifyParams,
) -> ImageSummary:
    """Tally one image's certificate against its target.

    target: (H, W) class indices, ignore_index where not evaluated. clean: (H, W) the segmenter's
    prediction on the clean image. params: those the certificate was made with.
    """
    sigma, counts = certificate.sigma, certificate.counts
    c = num_classes
    certified = ConfusionAccumulator(c).update(certificate.labels, target, ignore_index)
    smoothed = ConfusionAccumulator(c).update(counts.labels_smoothed, target, ignore_index)
    clean_tally = ConfusionAccumulator(c).update(clean, target, ignore_index)
    n, alpha = counts.n, certificate.result.alpha
    radii = pixel_radii(counts.k, n, alpha=alpha, sigma=sigma)
    good = (radii > 0) & (counts.labels_selected == target) & (target != ignore_index)
    edges = radius_edges(sigma)
    hist, _ = np.histogram(np.minimum(radii[good], edges[-1]), bins=edges)
    return ImageSummary(
        sigma=sigma,
        variant=variant,
        num_images=1,
        certified=certified,
        smoothed=smoothed,
        clean=clean_tally,
        radius_hist=tuple(int(v) for v in hist),
        min_count=int(certificate.result.min_count),
        first_count=min_count_to_certify(n, params.tau, alpha / counts.k.size),
        recounted=int(certificate.recounted),
        estimation_samples=int(n),
    )
