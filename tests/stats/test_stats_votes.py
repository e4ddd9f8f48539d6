"""Votes: per-class counts, mode selection (ties to the lowest class) and agreement counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from certseg.stats import (
    ABSTAIN,
    count_agreement,
    count_votes,
    labels_from_votes,
    select_labels,
)


def _mode_loop(maps: np.ndarray) -> np.ndarray:
    """Reference: per-pixel Counter, the most frequent class, ties to the lowest index."""
    _, height, width = maps.shape
    out = np.empty((height, width), dtype=np.int64)
    for i in range(height):
        for j in range(width):
            tally = Counter(int(v) for v in maps[:, i, j])
            best = max(tally.values())
            out[i, j] = min(c for c, v in tally.items() if v == best)
    return out


@pytest.mark.parametrize("n0", [1, 2, 4, 10])
@pytest.mark.parametrize("num_classes", [1, 3, 21])
def test_select_labels_matches_loop(n0: int, num_classes: int) -> None:
    rng = np.random.default_rng(n0 * 100 + num_classes)
    maps = rng.integers(0, num_classes, size=(n0, 7, 9), dtype=np.uint8)
    selected = select_labels(maps, num_classes)
    assert selected.shape == (7, 9)
    assert selected.dtype == np.int32
    np.testing.assert_array_equal(selected, _mode_loop(maps))


def test_select_labels_ties_go_to_lowest_class() -> None:
    # pixel (0, 0) votes 4, 1, 4, 1: a tie between 1 and 4 -> 1.
    # pixel (0, 1) votes 3, 2, 3, 5: 3 wins outright.
    maps = np.array([[[4, 3]], [[1, 2]], [[4, 3]], [[1, 5]]], dtype=np.uint8)
    np.testing.assert_array_equal(select_labels(maps, 6), [[1, 3]])
    # a three-way tie 3, 2, 5 -> 2
    np.testing.assert_array_equal(select_labels(np.array([[[3]], [[2]], [[5]]]), 6), [[2]])


def test_count_votes_chunks_add_up_and_sum_to_n() -> None:
    rng = np.random.default_rng(1)
    maps = rng.integers(0, 5, size=(13, 6, 4), dtype=np.uint16)
    votes = count_votes(maps, 5)
    assert votes.shape == (5, 6, 4)
    assert votes.dtype == np.int32
    np.testing.assert_array_equal(votes.sum(axis=0), np.full((6, 4), 13))
    chunked = count_votes(maps[:4], 5) + count_votes(maps[4:9], 5) + count_votes(maps[9:], 5)
    np.testing.assert_array_equal(chunked, votes)
    np.testing.assert_array_equal(labels_from_votes(chunked), select_labels(maps, 5))
    for c in range(5):
        np.testing.assert_array_equal(votes[c], (maps == c).sum(axis=0))


def test_count_agreement_matches_loop() -> None:
    rng = np.random.default_rng(2)
    maps = rng.integers(0, 4, size=(30, 5, 6), dtype=np.uint8)
    labels = rng.integers(0, 4, size=(5, 6)).astype(np.int32)
    labels[0, 0] = ABSTAIN  # a label no map predicts agrees nowhere
    counts = count_agreement(maps, labels)
    expected = np.zeros((5, 6), dtype=np.int64)
    for s in range(30):
        for i in range(5):
            for j in range(6):
                expected[i, j] += int(maps[s, i, j] == labels[i, j])
    np.testing.assert_array_equal(counts, expected)
    assert counts[0, 0] == 0
    assert counts.dtype == np.int32


def test_one_by_one_image() -> None:
    maps = np.array([[[2]], [[2]], [[0]]])
    np.testing.assert_array_equal(select_labels(maps, 3), [[2]])
    np.testing.assert_array_equal(count_agreement(maps, np.array([[2]])), [[2]])


def test_validation_names_the_argument() -> None:
    good = np.zeros((2, 3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="selection"):
        select_labels(np.full((2, 3, 3), 7, dtype=np.uint8), 7)
    with pytest.raises(ValueError, match="selection"):
        select_labels(np.full((2, 3, 3), -1), 7)
    with pytest.raises(ValueError, match="selection"):
        select_labels(good.astype(np.float32), 3)
    with pytest.raises(ValueError, match="selection"):
        select_labels(np.zeros((0, 3, 3), dtype=np.uint8), 3)
    with pytest.raises(ValueError, match="num_classes"):
        select_labels(good, 0)
    with pytest.raises(ValueError, match="class_maps"):
        count_votes(good[0], 3)
    with pytest.raises(ValueError, match="labels"):
        count_agreement(good, np.zeros((3, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="estimation"):
        count_agreement(good[0], np.zeros((3, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="votes"):
        labels_from_votes(np.zeros((0, 3, 3), dtype=np.int32))


def test_labels_from_votes_ties_and_dtypes() -> None:
    votes = np.array([[[1, 5, 0]], [[3, 5, 0]], [[3, 2, 0]]])  # (C=3, H=1, W=3)
    for dtype in (np.int32, np.int64, np.uint16, np.uint64):
        np.testing.assert_array_equal(labels_from_votes(votes.astype(dtype)), [[1, 0, 0]])
