"""Votes of the base classifier: per-class counts, the selected (mode) class and agreement counts k.

A class map is one prediction of the base classifier f on one noisy copy of the image: (H, W)
integer class indices in [0, C). A stack of N of them is (N, H, W). Counts are int32 (N < 2**31).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

from certseg.stats._checks import check_integer_array


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_class_maps(class_maps: object, num_classes: int, name: str) -> np.ndarray:
    array = check_integer_array(class_maps, name)
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got shape {array.shape}")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name} must hold class indices in [0, num_classes = {num_classes}), "
                f"got values in [{low}, {high}]"
            )
    return array


def count_votes(class_maps: np.ndarray, num_classes: int) -> np.ndarray:
    """Count, per pixel, how many of the N class maps vote for each class.

    class_maps: (N, H, W) integer class indices in [0, num_classes). Returns (C, H, W) int32 with
    ``counts[c, i, j] = #{s : class_maps[s, i, j] == c}``; ``counts.sum(0) == N`` everywhere.
    Counts of disjoint chunks of samples add up, so a stream of chunks can be counted piecewise.
    Cost: O(C · N · H · W) byte comparisons, memory O(C · H · W) (no (N, H, W) temporaries).
    """
    return _count_votes(class_maps, num_classes, "class_maps")


def _count_votes(class_maps: object, num_classes: object, name: str) -> np.ndarray:
    num_classes = _check_num_classes(num_classes)
    maps = _check_class_maps(class_maps, num_classes, name)
    counts = np.zeros((num_classes, *maps.shape[1:]), dtype=np.int32)
    for c in range(num_classes):
        _sum_votes(maps, c, out=counts[c])
    return counts


def select_labels(selection: np.ndarray, num_classes: int) -> np.ndarray:
    """The per-pixel mode of the selection class maps (METHOD §3 step 1), ties to the lowest class.

    selection: (n0, H, W) integer class indices in [0, num_classes), n0 >= 1.
    Returns (H, W) int32 selected classes ĉ. Cost O(n0 · min(n0, C) · H · W) comparisons, memory
    O(H · W): with fewer maps than classes each map's class is counted against all maps (pairwise),
    otherwise each class is counted (one class plane at a time).
    """
    num_classes = _check_num_classes(num_classes)
    maps = _check_class_maps(selection, num_classes, "selection")
    if maps.shape[0] == 0:
        raise ValueError("selection must hold at least one class map (n0 >= 1), got n0 = 0")
    if maps.shape[0] < num_classes:
        return _pairwise_mode(maps)
    return _running_mode((_sum_votes(maps, c) for c in range(num_classes)), maps.shape[1:])


def _pairwise_mode(maps: np.ndarray) -> np.ndarray:
    """Mode of (N, H, W) maps: the class of map s gets #{t : maps[t] == maps[s]} votes; the lowest
    class among those with the most votes wins (every modal class is some map's class)."""
    shape = maps.shape[1:]
    best = np.zeros(shape, dtype=np.int32)
    best_votes = np.full(shape, -1, dtype=np.int32)
    votes = np.empty(shape, dtype=np.int32)
    for candidate in maps:
        votes.fill(0)
        for sample in maps:
            votes += sample == candidate
        better = (votes > best_votes) | ((votes == best_votes) & (candidate < best))
        np.copyto(best, candidate, casting="unsafe", where=better)
        np.copyto(best_votes, votes, where=better)
    return best


def _sum_votes(maps: np.ndarray, c: int, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int32 number of the (N, H, W) maps that predict class c, added into `out` if given."""
    plane = np.zeros(maps.shape[1:], dtype=np.int32) if out is None else out
    for sample in maps:
        plane += sample == c
    return plane


def _running_mode(planes: Iterable[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Index of the first maximal plane per pixel (ties to the lowest index), int32."""
    best = np.zeros(shape, dtype=np.int32)
    best_votes = np.full(shape, -1, dtype=np.int64)
    for c, plane in enumerate(planes):
        better = plane > best_votes  # strict: an equal later class never wins a tie
        best[better] = c
        np.copyto(best_votes, plane, casting="unsafe", where=better)  # counts fit in int64
    return best


def labels_from_votes(votes: np.ndarray) -> np.ndarray:
    """Mode per pixel of (C, H, W) vote counts (e.g. summed over chunks), ties to the lowest class.

    Returns (H, W) int32; equals ``select_labels`` of the class maps the votes were counted from.
    """
    array = check_integer_array(votes, "votes")
    if array.ndim != 3 or array.shape[0] < 1:
        raise ValueError(f"votes must have shape (C, H, W) with C >= 1, got shape {array.shape}")
    return _running_mode(array, array.shape[1:])


def count_agreement(estimation: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Count, per pixel, the estimation class maps that agree with the label (METHOD §3 step 2).

    estimation: (n, H, W) integer class maps; labels: (H, W) integer selected classes.
    Returns (H, W) int32 counts k in [0, n]. A label that no map predicts (e.g. ABSTAIN) gets k = 0.
    Memory O(H · W): the maps are compared one at a time.
    """
    maps = check_integer_array(estimation, "estimation")
    selected = check_integer_array(labels, "labels")
    if maps.ndim != 3:
        raise ValueError(f"estimation must have shape (n, H, W), got shape {maps.shape}")
    if selected.shape != maps.shape[1:]:
        raise ValueError(
            f"labels must have shape (H, W) = {maps.shape[1:]} to match estimation, "
            f"got shape {selected.shape}"
        )
    counts = np.zeros(selected.shape, dtype=np.int32)
    for sample in maps:
        counts += sample == selected
    return counts
