"""count_image_votes: one image's counts from streamed blocks equal counting all maps at once."""

from __future__ import annotations

import numpy as np
import pytest

from certseg.stats import count_image_votes, count_votes, labels_from_votes


def _maps(rng: np.random.Generator, count: int, num_classes: int) -> np.ndarray:
    base = rng.integers(0, num_classes, size=(7, 9))
    keep = rng.choice([1.0, 0.7, 0.5, 0.3], size=(7, 9))
    noise = rng.integers(0, num_classes, size=(count, 7, 9))
    return np.where(rng.random((count, 7, 9)) < keep, base, noise).astype(np.uint8)


def _split(maps: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(maps, cuts)


@pytest.mark.parametrize("num_classes", [2, 5, 19])
def test_any_split_gives_the_counts_of_all_maps_at_once(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    selection, estimation = _maps(rng, 6, num_classes), _maps(rng, 12, num_classes)
    votes_selected = count_votes(selection, num_classes)
    labels = labels_from_votes(votes_selected)
    votes = count_votes(estimation, num_classes)
    k = np.take_along_axis(votes, labels[None].astype(np.intp), axis=0)[0]
    for selection_cuts, estimation_cuts in (([], []), ([1, 4], [5]), ([2, 3], [1, 2, 11])):
        counts = count_image_votes(
            iter(_split(selection, selection_cuts)),
            (block for block in _split(estimation, estimation_cuts)),  # consumed lazily
            n=12,
            num_classes=num_classes,
        )
        np.testing.assert_array_equal(counts.labels_selected, labels)
        np.testing.assert_array_equal(counts.k, k)
        np.testing.assert_array_equal(counts.labels_smoothed, labels_from_votes(votes))
        assert counts.n == 12 and counts.k.dtype == np.int32


def test_bad_streams_raise() -> None:
    maps = _maps(np.random.default_rng(0), 4, 3)
    with pytest.raises(ValueError, match="selection must hold at least one block"):
        count_image_votes(iter([]), iter([maps]), n=4, num_classes=3)
    with pytest.raises(ValueError, match="expected n = 5"):
        count_image_votes(iter([maps]), iter([maps]), n=5, num_classes=3)
    with pytest.raises(ValueError, match="class indices"):
        count_image_votes(iter([maps]), iter([maps]), n=4, num_classes=2)
