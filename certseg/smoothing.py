"""The smoothed segmenter in memory: one image in, a SegCertify certificate out (no store, no flow).

`SmoothedSegmenter.certify` is the pipeline's per-image computation in one call — for notebooks,
unit checks and small experiments. The batch pipeline (certseg.run / flows) computes the same
numbers through the Zarr store and Dask: both draw sample j of phase p of image `image_key` from
`certseg.noise.sample_noise(seed, image_key, p, j)`, so for the same seed, image key, n0 and n
they see the same noise and return the same certificate: both count and certify through
`certseg.certificates` (`certify_class_maps` here, `certify_stored_image` in aggregation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from certseg.certificates import certify_class_maps
from certseg.config import CertifyParams
from certseg.stats import CertificationResult
from certseg.stats.correction import Correction

if TYPE_CHECKING:
    import torch

    from certseg.denoise import DiffusionDenoiser
    from certseg.models import Segmenter


@dataclass(frozen=True)
class SmoothedSegmenter:
    """g(x) = per-pixel argmax_c P[f(x + σε) = c] for f = segmenter ∘ denoiser (or the segmenter
    alone when `denoiser` is None: the SegCertify baseline).

    sigma: noise std in [0, 1] image units. seed: base seed of the keyed noise. Samples are drawn
    in blocks of `block` and counted as they come, so memory is O(C · H · W) whatever n is (plus
    the n0 selection maps, joined: n0 · H · W bytes).
    A model returning NaN or inf fails the call with NonFiniteOutputError (nothing certified).
    """

    segmenter: Segmenter
    denoiser: DiffusionDenoiser | None
    sigma: float
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    autocast_dtype: torch.dtype | None = None
    block: int = 50

    def _class_maps(
        self, image: np.ndarray, image_key: str, phase: str, start: int, count: int
    ) -> np.ndarray:
        from certseg.sampling import sample_class_maps

        maps = sample_class_maps(
            image,
            image_key=image_key,
            phase=phase,
            start=start,
            count=count,
            sigma=self.sigma,
            seed=self.seed,
            denoiser=self.denoiser,
            segmenters={self.segmenter.name: self.segmenter},
            batch_size=self.batch_size,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
        )
        return np.asarray(maps[self.segmenter.name])

    def _blocks(self, total: int) -> list[tuple[int, int]]:
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")
        return [(s, min(s + self.block, total)) for s in range(0, total, self.block)]

    def certify(
        self,
        image: np.ndarray,
        *,
        image_key: str,
        n0: int,
        n: int,
        alpha: float,
        tau: float,
        correction: Correction = "holm",
    ) -> CertificationResult:
        """Certify every pixel of one image (docs/method.md §3).

        image: (3, H, W) float32 in [0, 1] units. n0 selection samples (phase "selection") pick the
        candidate label per pixel; n fresh estimation samples (phase "estimation") count agreement;
        `certify_pixels` tests and corrects over the image's pixels. Guarantee: with probability at
        least 1 − alpha over the noise, every certified pixel keeps its label under any L2
        perturbation of norm below `result.radius` = σΦ⁻¹(τ).
        """
        if n0 < 1 or n < 1:
            raise ValueError(f"n0 and n must be >= 1, got n0={n0}, n={n}")
        params = CertifyParams(n=n, alpha=alpha, tau=tau, correction=correction)
        selection = (
            self._class_maps(image, image_key, "selection", start, stop - start)
            for start, stop in self._blocks(n0)
        )
        estimation = (
            self._class_maps(image, image_key, "estimation", start, stop - start)
            for start, stop in self._blocks(n)
        )
        certificate = certify_class_maps(
            selection,
            estimation,
            sigma=self.sigma,
            params=params,
            num_classes=self.segmenter.num_classes,
        )
        return certificate.result
