"""Votes of the base classifier: per-class counts, the selected (mode) class and agreement counts k.

A class map is one prediction of the base classifier f on one noisy copy of the image: (H, W)
integer class indices in [0, C). A stack of N of them is (N, H, W). Counts are int32 (N < 2**31).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from certseg.stats._checks import check_count_n, check_integer_array


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
        high = int(array.max())  # unsigned maps cannot be negative: one reduction
        if high >= num_classes or (array.dtype.kind == "i" and int(array.min()) < 0):
            low = int(array.min())
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
    Returns (H, W) int32 selected classes ĉ, equal to ``labels_from_votes(count_votes(selection,
    num_classes))``. Cost O(n0 · min(n0, C) · H · W) comparisons: with fewer maps than classes
    each pair of maps is compared once (pairwise; memory n0 · H · W counts), otherwise each class
    is counted (one class plane at a time; memory O(H · W)). Counts are kept in the smallest
    unsigned type holding n0 and the mode is a running maximum of one packed key per candidate
    (`_ModeKey`), so no masked writes.
    """
    num_classes = _check_num_classes(num_classes)
    maps = _check_class_maps(selection, num_classes, "selection")
    if maps.shape[0] == 0:
        raise ValueError("selection must hold at least one class map (n0 >= 1), got n0 = 0")
    if maps.shape[0] < num_classes:
        return _pairwise_mode(maps, num_classes)
    return _per_class_mode(maps, num_classes)


def _count_dtype(n: int) -> np.dtype:
    """The smallest unsigned integer type that holds every count in [0, n]."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"counts up to {n} do not fit in 64 bits")


@dataclass(frozen=True)
class _ModeKey:
    """(votes, class) packed in one unsigned key whose maximum is the mode, ties to the lowest.

    key = votes · 2**bits + (2**bits - 1 - class), with 2**bits >= num_classes: a larger vote count
    always gives a larger key, and among equal counts the lower class gives the larger key.
    """

    bits: int
    dtype: np.dtype

    @classmethod
    def of(cls, max_votes: int, num_classes: int) -> _ModeKey:
        bits = max(1, (num_classes - 1).bit_length())
        return cls(bits, _count_dtype(((max_votes + 1) << bits) - 1))

    def pack(self, votes: np.ndarray, classes: np.ndarray | int, out: np.ndarray) -> np.ndarray:
        """out = votes · 2**bits + (2**bits - 1 - classes), in self.dtype."""
        np.left_shift(votes, self.bits, out=out, dtype=self.dtype, casting="unsafe")
        np.add(out, self.dtype.type((1 << self.bits) - 1), out=out)
        np.subtract(out, classes, out=out, dtype=self.dtype, casting="unsafe")
        return out

    def label(self, key: np.ndarray) -> np.ndarray:
        """The class packed in each key, int32."""
        mask = self.dtype.type((1 << self.bits) - 1)
        low: np.ndarray = np.bitwise_and(key, mask)
        np.subtract(mask, low, out=low)
        return low.astype(np.int32)


def _pairwise_mode(maps: np.ndarray, num_classes: int) -> np.ndarray:
    """Mode of (N, H, W) maps: the class of map s gets #{t : maps[t] == maps[s]} votes; the lowest
    class among those with the most votes wins (every modal class is some map's class). Each pair
    is compared once (N (N - 1) / 2 comparisons); memory N · H · W counts (N < C: fewer than the
    C planes of per-class counting)."""
    count, shape = maps.shape[0], maps.shape[1:]
    key = _ModeKey.of(count, num_classes)
    votes = np.ones((count, *shape), dtype=_count_dtype(count))  # each map agrees with itself
    equal = np.empty(shape, dtype=bool)
    for s in range(count):
        for t in range(s + 1, count):
            np.equal(maps[s], maps[t], out=equal)
            np.add(votes[s], equal.view(np.uint8), out=votes[s])
            np.add(votes[t], equal.view(np.uint8), out=votes[t])
    candidate_key = np.empty(shape, dtype=key.dtype)
    best = np.zeros(shape, dtype=key.dtype)  # every real key is larger: votes >= 1
    for s in range(count):
        np.maximum(best, key.pack(votes[s], maps[s], candidate_key), out=best)
    return key.label(best)


def _per_class_mode(maps: np.ndarray, num_classes: int) -> np.ndarray:
    """Mode of (N, H, W) maps by counting each class in turn (one plane of counts at a time)."""
    shape = maps.shape[1:]
    key = _ModeKey.of(maps.shape[0], num_classes)
    votes = np.empty(shape, dtype=_count_dtype(maps.shape[0]))
    equal = np.empty(shape, dtype=bool)
    class_key = np.empty(shape, dtype=key.dtype)
    best = np.zeros(shape, dtype=key.dtype)
    for c in range(min(num_classes, _max_value(maps.dtype) + 1)):  # larger classes get no votes
        votes.fill(0)
        for sample in maps:
            np.equal(sample, c, out=equal)
            np.add(votes, equal.view(np.uint8), out=votes)
        np.maximum(best, key.pack(votes, c, class_key), out=best)
    return key.label(best)


def _max_value(dtype: np.dtype) -> int:
    return int(np.iinfo(dtype).max)


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


@dataclass(frozen=True, eq=False)
class EstimationCounts:
    """What the n estimation class maps give at each pixel, for selected classes ĉ.

    k: (H, W) int32 agreement counts #{s : map_s == ĉ} in [0, n] (as ``count_agreement``).
    labels_smoothed: (H, W) int32 majority class over the n maps, ties to the lowest class
      (as ``labels_from_votes(count_votes(maps, C))``).
    n: the number of estimation maps counted.
    """

    k: np.ndarray
    labels_smoothed: np.ndarray
    n: int


def count_estimation(
    blocks: Iterable[np.ndarray], labels: np.ndarray, n: int, num_classes: int
) -> EstimationCounts:
    """Agreement counts k and majority labels of n estimation maps streamed in blocks (one pass).

    blocks: (count, H, W) integer class maps in [0, num_classes), any number of blocks whose counts
    add up to n (e.g. a store's sample chunks, in order or not). labels: (H, W) selected classes ĉ
    in [0, num_classes) (from ``select_labels``). Returns ``EstimationCounts`` with k equal to
    ``count_agreement`` and labels_smoothed equal to ``labels_from_votes(count_votes(maps, C))`` of
    all n maps, value for value, whatever the split into blocks.

    Cost: k is one comparison with ĉ per map (O(n · H · W), independent of C, counted in the
    smallest unsigned type holding n). Votes for the other classes are counted only where they can
    change the majority:

    Claim: at a pixel with k > n / 2, the majority class is ĉ. Proof: ĉ has k > n / 2 votes and
    every other class at most n - k < n / 2 < k, so ĉ is the unique maximum of the vote counts and
    the tie rule never applies. Counts only grow, so once the running k of a pixel exceeds n / 2
    (strictly; integer k, so k >= n // 2 + 1) the pixel is settled.

    The other pixels (running k <= n // 2 after a block: "undecided") keep the block's columns of
    maps wherever some map disagrees with ĉ (a block whose maps all say ĉ at a pixel adds votes to
    ĉ only, and those are in k). These raw columns are counted into per-pixel votes, for the pixels
    still undecided then, at the end or when they would outgrow one (C, H, W) int32 vote array.
    At the end the vote for ĉ is set to k, so every pixel still undecided (final k <= n // 2) holds
    its exact vote vector: the undecided set only shrinks, so such a pixel was undecided after
    every block and its columns were kept from every block that voted for another class. Its label
    is the first maximum of that vector (``np.argmax``: ties to the lowest class), as
    ``labels_from_votes``. Each kept map value adds one vote by an indexed increment, so this part
    costs O(kept values), not O(C · kept values), plus one argmax over the u · C final votes.

    Memory: k and one block's comparison buffers O(H · W); the kept columns (counted as soon as
    they pass 4 · C · H · W bytes, so at most that plus one block); votes (u, C) for the u pixels
    still undecided. With one block of all n
    maps only the pixels with k <= n // 2 are kept; with smaller blocks every pixel that disagrees
    anywhere is kept until n // 2 + 1 maps are seen.
    Raises ValueError naming the argument for bad labels, maps, n or block sizes.
    """
    num_classes = _check_num_classes(num_classes)
    n = check_count_n(n)
    selected = _check_selected(labels, num_classes)
    shape, m = selected.shape, selected.size
    flat_labels = selected.reshape(m)
    dtype = _count_dtype(n)
    half = n // 2
    k = np.zeros(m, dtype=dtype)
    agree = np.empty(m, dtype=dtype)
    equal = np.empty(m, dtype=bool)
    undecided = _UndecidedVotes(num_classes, m, dtype, limit_bytes=4 * num_classes * m)
    seen = 0
    targets: dict[np.dtype, np.ndarray] = {}  # the labels in each maps' dtype met
    for block in blocks:
        maps = _check_class_maps(block, num_classes, "blocks")
        if maps.shape[1:] != shape:
            raise ValueError(
                f"blocks must have shape (count, H, W) with (H, W) = {shape} as labels, "
                f"got shape {maps.shape}"
            )
        size = maps.shape[0]
        seen += size
        if seen > n:
            raise ValueError(f"blocks hold more than n = {n} class maps")
        if size == 0:
            continue
        flat = maps.reshape(size, m)
        if maps.dtype not in targets:
            targets[maps.dtype] = _as_map_dtype(flat_labels, maps.dtype)
        target = targets[maps.dtype]
        agree.fill(0)
        for sample in flat:
            np.equal(sample, target, out=equal)
            np.add(agree, equal.view(np.uint8), out=agree)
        k += agree
        undecided.narrow(k, half)
        undecided.keep_disagreeing(flat, agree, size)
    if seen != n:
        raise ValueError(f"blocks hold {seen} class maps, expected n = {n}")
    return EstimationCounts(
        k=k.reshape(shape).astype(np.int32),
        labels_smoothed=undecided.majority(k, flat_labels).reshape(shape),
        n=n,
    )


_VOTES_TILE_BYTES = 2**18
"""Votes are counted a tile of pixels at a time whose (pixels, C) votes take about this many
bytes, so the indexed increments hit cache whatever C."""


class _UndecidedVotes:
    """count_estimation's state for the pixels with running k <= n // 2 (see its docstring).

    pixels: (u,) sorted flat indices of the undecided pixels (None before the first block).
    votes: (u, C) votes counted so far (None until the kept columns are first counted).
    kept: (pixels (q,), columns (count, q)) raw map columns not counted yet.
    """

    def __init__(self, num_classes: int, m: int, dtype: np.dtype, limit_bytes: int) -> None:
        self.num_classes, self.m, self.dtype, self.limit_bytes = num_classes, m, dtype, limit_bytes
        self.pixels: np.ndarray | None = None
        self.votes: np.ndarray | None = None
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.kept_bytes = 0

    def narrow(self, k: np.ndarray, half: int) -> None:
        """Drop the pixels whose running k now exceeds n / 2 (they are settled)."""
        if self.pixels is None:
            self.pixels = np.flatnonzero(k <= half)
            return
        still = k[self.pixels] <= half
        if not still.all():
            self.pixels = self.pixels[still]
            if self.votes is not None:
                self.votes = self.votes[still]

    def keep_disagreeing(self, flat: np.ndarray, agree: np.ndarray, size: int) -> None:
        """Keep the block's columns at undecided pixels where some map is not the label."""
        assert self.pixels is not None
        pixels = self.pixels[agree[self.pixels] < size]
        if not pixels.size:
            return
        columns = flat if pixels.size == self.m else np.take(flat, pixels, axis=1)
        self.kept.append((pixels, columns))
        self.kept_bytes += columns.nbytes
        if self.kept_bytes > self.limit_bytes:
            self._count_kept()

    def _count_kept(self) -> None:
        """Add the kept columns of the still-undecided pixels to their votes; forget the rest."""
        assert self.pixels is not None
        u, c = self.pixels.size, self.num_classes
        if self.votes is None:
            self.votes = np.zeros((u, c), dtype=self.dtype)
        if self.kept and u:
            position = np.full(self.m, -1, dtype=np.int32)  # m < 2**31 pixels
            position[self.pixels] = np.arange(u, dtype=np.int32)
            flat_votes = self.votes.reshape(u * c)  # a view: votes is C-contiguous
            for pixels, columns in self.kept:
                rows = position[pixels]
                live = rows >= 0
                if not live.all():
                    rows, columns = rows[live], columns[:, live]
                tile = max(1, _VOTES_TILE_BYTES // (c * self.votes.itemsize))
                for start in range(0, rows.size, tile):  # a tile's votes stay in cache
                    base = rows[start : start + tile].astype(np.intp) * c
                    index = np.empty_like(base)
                    for sample in columns[:, start : start + tile]:
                        np.add(base, sample, out=index, dtype=np.intp, casting="unsafe")
                        flat_votes[index] += 1  # one pixel per index in a map: no repeats
        self.kept, self.kept_bytes = [], 0

    def majority(self, k: np.ndarray, flat_labels: np.ndarray) -> np.ndarray:
        """(m,) int32 majority labels: ĉ at settled pixels, the first maximal vote elsewhere."""
        self._count_kept()
        assert self.pixels is not None and self.votes is not None
        out = flat_labels.astype(np.int32)
        if self.pixels.size:
            self.votes[np.arange(self.pixels.size), flat_labels[self.pixels]] = k[self.pixels]
            out[self.pixels] = np.argmax(self.votes, axis=1)
        return out


def _check_selected(labels: object, num_classes: int) -> np.ndarray:
    selected = check_integer_array(labels, "labels")
    if selected.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got shape {selected.shape}")
    if selected.size:
        low, high = int(selected.min()), int(selected.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must hold class indices in [0, num_classes = {num_classes}), "
                f"got values in [{low}, {high}]"
            )
    return selected


def _as_map_dtype(labels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Labels in the maps' integer type when every label fits it (a byte compare is fastest);
    otherwise unchanged (numpy then compares in a common type: no label can wrap around)."""
    info = np.iinfo(dtype)
    if labels.size and info.min <= int(labels.min()) and int(labels.max()) <= info.max:
        return labels.astype(dtype, copy=False)
    return labels
