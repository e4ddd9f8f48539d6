"""One image's counts from its class maps streamed in blocks: selected labels ĉ, k, smoothed labels.

The one streamed vote counter: the pipeline feeds it a store's sample chunks
(certseg.certificates), SmoothedSegmenter the sampler's blocks as they are drawn. Either way the
counts are those of all the maps at once, value for value, whatever the split into blocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from certseg.stats.votes import count_estimation, select_labels


@dataclass(frozen=True, eq=False)
class ImageCounts:
    """One image's votes at one (σ, variant); (H, W) int32 arrays.

    labels_selected: ĉ, the mode of the n0 selection maps, ties to the lowest class (METHOD §3
      step 1). k: agreement counts #{s < n : estimation map s == ĉ} in [0, n] (step 2).
    labels_smoothed: the majority class over the same n estimation maps, ties to the lowest
      class (the smoothed prediction without a certificate). n: the estimation maps counted.
    """

    labels_selected: np.ndarray
    k: np.ndarray
    labels_smoothed: np.ndarray
    n: int


def count_image_votes(
    selection: Iterable[np.ndarray],
    estimation: Iterable[np.ndarray],
    *,
    n: int,
    num_classes: int,
) -> ImageCounts:
    """Count one image's selection and estimation class maps, each streamed in blocks.

    selection: (count, H, W) blocks of the n0 >= 1 selection maps, integer classes in
    [0, num_classes); they are joined (n0 · H · W values) and their mode taken (`select_labels`).
    estimation: (count, H, W) blocks of exactly n estimation maps, consumed one block at a time
    (`count_estimation`: memory O(C · H · W) whatever n). Raises ValueError naming the argument
    for bad maps, block sizes or counts.
    """
    blocks = list(selection)
    if not blocks:
        raise ValueError("selection must hold at least one block of class maps (n0 >= 1)")
    joined = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    del blocks
    labels = select_labels(joined, num_classes)
    del joined
    counts = count_estimation(estimation, labels, n, num_classes)
    return ImageCounts(
        labels_selected=labels, k=counts.k, labels_smoothed=counts.labels_smoothed, n=n
    )
