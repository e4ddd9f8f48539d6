"""Votes: per-class counts, mode selection (ties to the lowest class) and agreement counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certseg.stats import (
    ABSTAIN,
    EstimationCounts,
    count_agreement,
    count_estimation,
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


# --- count_estimation: k and the majority labels in one pass, against the count_votes path ----


def _old_path(maps: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, ...]:
    """The landed aggregation: count every class on every map, k by lookup, the mode of votes."""
    votes = count_votes(maps, num_classes)
    k = np.take_along_axis(votes, labels[None].astype(np.intp), axis=0)[0]
    return k, labels_from_votes(votes)


def _split(maps: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(maps, sorted(set(cuts)))


def _assert_same_as_old(
    blocks: list[np.ndarray], labels: np.ndarray, num_classes: int
) -> EstimationCounts:
    maps = np.concatenate(blocks)
    got = count_estimation(blocks, labels, maps.shape[0], num_classes)
    k, smoothed = _old_path(maps, labels, num_classes)
    np.testing.assert_array_equal(got.k, k)
    np.testing.assert_array_equal(got.labels_smoothed, smoothed)
    np.testing.assert_array_equal(got.labels_smoothed, _mode_loop(maps))
    assert got.k.dtype == np.int32 and got.labels_smoothed.dtype == np.int32
    assert got.n == maps.shape[0]
    return got


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.uint64])
@pytest.mark.parametrize("num_classes", [2, 19])
@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_count_estimation_matches_count_votes_on_random_maps(
    dtype: type, num_classes: int, n: int
) -> None:
    rng = np.random.default_rng(n * 100 + num_classes)
    shape = (6, 7)
    labels = select_labels(
        rng.integers(0, num_classes, size=(5, *shape)).astype(dtype), num_classes
    )
    # a mix of confident pixels (mostly the label), split pixels and pure noise
    agree = rng.choice([0.95, 0.5, 0.3, 0.0], size=shape)
    noise = rng.integers(0, num_classes, size=(n, *shape))
    maps = np.where(rng.random((n, *shape)) < agree, labels, noise).astype(dtype)
    for cuts in ([], [n // 2], list(range(1, n)), [1, n - 1]):
        blocks = _split(maps, [c for c in cuts if 0 < c < n])
        _assert_same_as_old(blocks, labels, num_classes)
        _assert_same_as_old(blocks[::-1], labels, num_classes)  # any order of blocks


def test_count_estimation_adversarial_ties_and_half() -> None:
    """Hand-made pixels at the edges of the k > n/2 shortcut, n = 10 in blocks of 4, 4, 2."""
    n, num_classes = 10, 19
    columns = {
        # k exactly n/2 and another class also at n/2: tie -> the lower class wins
        "tie, lower other class": [5] * 5 + [2] * 5,  # label 5 -> smoothed 2
        "tie, higher other class": [2] * 5 + [5] * 5,  # label 2 -> smoothed 2
        # k = n/2 + 1: settled, the label
        "just a majority": [7] * 6 + [1] * 4,
        # k = n/2 with the rest spread: the label is the mode
        "half, rest spread": [3] * 5 + [0, 1, 2, 4, 6],
        # k = 0: the label never predicted
        "label never seen": [4] * 3 + [8] * 3 + [9] * 4,
        # the label agrees fully in the first block, loses overall
        "early full agreement": [6] * 4 + [11] * 4 + [11] * 2,
        # a three-way tie among other classes
        "three-way": [1, 1, 1, 18, 18, 18, 12, 12, 12, 0],
        # every map different
        "all different": list(range(10)),
    }
    labels_of = {
        "tie, lower other class": 5,
        "tie, higher other class": 2,
        "just a majority": 7,
        "half, rest spread": 3,
        "label never seen": 0,
        "early full agreement": 6,
        "three-way": 0,
        "all different": 9,
    }
    names = list(columns)
    maps = np.array([columns[name] for name in names], dtype=np.uint8).T.reshape(n, 1, -1)
    labels = np.array([[labels_of[name] for name in names]], dtype=np.int32)
    got = _assert_same_as_old([maps[:4], maps[4:8], maps[8:]], labels, num_classes)
    expected = {
        "tie, lower other class": 2,
        "tie, higher other class": 2,
        "just a majority": 7,
        "half, rest spread": 3,
        "label never seen": 9,
        "early full agreement": 11,
        "three-way": 1,
        "all different": 0,
    }
    assert got.labels_smoothed[0].tolist() == [expected[name] for name in names]
    assert got.k[0].tolist() == [5, 5, 6, 5, 0, 4, 1, 1]
    _assert_same_as_old([maps], labels, num_classes)  # one block
    _assert_same_as_old([maps[i : i + 1] for i in range(n)], labels, num_classes)  # one map each


def test_count_estimation_two_classes_at_half_odd_and_even_n() -> None:
    """C = 2: with n even every split k = n/2 is a tie (class 0 wins); with n odd none is."""
    for n in (8, 9):
        maps = np.zeros((n, 1, n + 1), dtype=np.uint8)
        for j in range(n + 1):  # pixel j: j maps say 1
            maps[:j, 0, j] = 1
        for label in (0, 1):
            labels = np.full((1, n + 1), label, dtype=np.int32)
            _assert_same_as_old([maps[:3], maps[3:]], labels, 2)


def test_count_estimation_classes_beyond_uint8() -> None:
    rng = np.random.default_rng(9)
    num_classes = 300
    maps = rng.choice([3, 260, 299], size=(12, 4, 5)).astype(np.uint16)
    labels = select_labels(maps[:5], num_classes)
    _assert_same_as_old([maps[:5], maps[5:]], labels, num_classes)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 24),
    num_classes=st.integers(1, 6),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(1, 23), max_size=4),
    wide=st.booleans(),
)
def test_count_estimation_property(
    n: int, num_classes: int, width: int, seed: int, cuts: list[int], wide: bool
) -> None:
    """Any maps, any labels, any split: equal to the count_votes path (few classes: many ties)."""
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if wide else np.uint8
    maps = rng.integers(0, num_classes, size=(n, 2, width)).astype(dtype)
    labels = rng.integers(0, num_classes, size=(2, width)).astype(np.int32)
    _assert_same_as_old(_split(maps, [c for c in cuts if c < n]), labels, num_classes)


def test_count_estimation_validation() -> None:
    maps = np.zeros((4, 2, 3), dtype=np.uint8)
    labels = np.zeros((2, 3), dtype=np.int32)
    with pytest.raises(ValueError, match="expected n = 5"):
        count_estimation([maps], labels, 5, 3)
    with pytest.raises(ValueError, match="more than n = 3"):
        count_estimation([maps], labels, 3, 3)
    with pytest.raises(ValueError, match="expected n = 1"):
        count_estimation([], labels, 1, 3)
    with pytest.raises(ValueError, match="blocks must have shape"):
        count_estimation([np.zeros((4, 3, 2), dtype=np.uint8)], labels, 4, 3)
    with pytest.raises(ValueError, match="blocks"):
        count_estimation([np.full((4, 2, 3), 3, dtype=np.uint8)], labels, 4, 3)
    with pytest.raises(ValueError, match="labels"):
        count_estimation([maps], np.full((2, 3), 3), 4, 3)
    with pytest.raises(ValueError, match="labels"):
        count_estimation([maps], np.zeros(6, dtype=np.int32), 4, 3)
    with pytest.raises(ValueError, match="n must"):
        count_estimation([maps], labels, 0, 3)
    with pytest.raises(ValueError, match="num_classes"):
        count_estimation([maps], labels, 4, 0)


@pytest.mark.parametrize("num_classes", [3, 300])
def test_select_labels_equals_labels_of_votes_both_paths(num_classes: int) -> None:
    """Pairwise (n0 < C) and per-class (n0 >= C) modes equal labels_from_votes(count_votes)."""
    rng = np.random.default_rng(num_classes)
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    for n0 in (1, 2, num_classes - 1, num_classes, num_classes + 4):
        maps = rng.integers(0, min(num_classes, 4), size=(n0, 3, 4)).astype(dtype)
        maps[:, 0, 0] = num_classes - 1  # the largest class somewhere
        expected = labels_from_votes(count_votes(maps, num_classes))
        np.testing.assert_array_equal(select_labels(maps, num_classes), expected)


def test_select_labels_per_class_skips_classes_the_dtype_cannot_hold() -> None:
    """uint8 maps with C = 300 and n0 >= C: classes >= 256 get no votes (and no overflow)."""
    maps = np.zeros((300, 1, 2), dtype=np.uint8)
    maps[:160, 0, 1] = 255
    np.testing.assert_array_equal(select_labels(maps, 300), [[0, 255]])
