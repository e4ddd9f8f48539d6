"""Benchmark: counting stored samples (k, selected and smoothed labels) and certify_pixels.

One 1024×2048 image, C = 19, n0 = 10, n = 100, on one CPU core. Measured in one run, the paths
interleaved (old, plain, new, ..., repeated; medians), on the same synthetic class maps:
- old: the landed ``count_image`` — ``count_votes`` over every class on every selection and
  estimation map, ``labels_from_votes``, k by ``take_along_axis`` — rebuilt here from the public
  functions, as the reference;
- plain: ``k += (block == labels).sum(0)`` over the estimation blocks (the target's yardstick);
- new: ``certseg.certificates.count_stored_image`` (``select_labels`` + ``count_estimation``),
  with the estimation maps in one block of 100 and in blocks of 10, and at C = 150 (C independence);
- ``certify_pixels`` against one ``np.bincount`` over the counts, and against the landed
  certify_pixels body (rebuilt here from the public pieces: the p-value map and the masked write);
- peak memory of one call of each counting path (tracemalloc, which traces numpy's allocations).
New and old results must be identical (labels_selected, k, labels_smoothed; certified labels) or
the script exits non-zero.

The synthetic maps: a label map of 32×32 tiles of random classes; 80 % of the pixels agree with
it with probability p ~ Beta(30, 1), 20 % (boundary pixels) with p ~ U(0.3, 0.95); a disagreeing
map picks the tile's neighbour class with probability 0.7, else a uniform class. The sample
source serves views of in-memory arrays in the store's blocks (no copy), so the peaks count the
counting's own allocations, not the blocks read.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_counting`` (pins itself to one core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from certseg.certificates import count_stored_image as count_image
from certseg.stats import (
    ABSTAIN,
    ImageCounts,
    certify_pixels,
    count_votes,
    labels_from_votes,
    pvalue_table,
    reject_by_count,
)
from certseg.storage import SampleStore


@dataclass
class MemorySamples:
    """The part of SampleStore that count_image reads, over in-memory (count, H, W) class maps."""

    selection: np.ndarray
    estimation: np.ndarray
    num_classes: int
    samples_per_chunk: int

    @property
    def n0(self) -> int:
        return int(self.selection.shape[0])

    @property
    def n(self) -> int:
        return int(self.estimation.shape[0])

    def blocks(self, phase: str) -> list[tuple[int, int]]:
        total = self.n0 if phase == "selection" else self.n
        size = min(total, self.samples_per_chunk)
        return [(start, min(start + size, total)) for start in range(0, total, size)]

    def read_samples(
        self, sigma: float, variant: str, phase: str, image: int, start: int, stop: int
    ) -> np.ndarray:
        maps = self.selection if phase == "selection" else self.estimation
        return maps[start:stop]

    def as_store(self) -> SampleStore:
        return cast(SampleStore, self)


def synthetic_maps(
    rng: np.random.Generator, shape: tuple[int, int], n0: int, n: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n0, H, W) selection and (n, H, W) estimation uint8 class maps (see the module docstring)."""
    tiles = rng.integers(0, num_classes, size=(-(-shape[0] // 32), -(-shape[1] // 32)))
    truth = tiles.repeat(32, 0).repeat(32, 1)[: shape[0], : shape[1]].astype(np.uint8)
    neighbour = ((truth.astype(np.int64) + 1) % num_classes).astype(np.uint8)
    confident = rng.random(shape) < 0.8
    p = np.where(confident, rng.beta(30.0, 1.0, size=shape), rng.uniform(0.3, 0.95, size=shape))
    p = p.astype(np.float32)
    p_neighbour = p + (1 - p) * np.float32(0.7)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, *shape), dtype=np.uint8)
        for s in range(count):
            u = rng.random(shape, dtype=np.float32)
            noise = rng.integers(0, num_classes, size=shape, dtype=np.uint8)
            out[s] = np.where(u < p, truth, np.where(u < p_neighbour, neighbour, noise))
        return out

    return draw(n0), draw(n)


def old_count_image(source: MemorySamples, n: int) -> ImageCounts:
    """The landed count_image: every class counted on every map (count_votes), then the modes."""
    c = source.num_classes
    selection_votes = None
    for start, stop in source.blocks("selection"):
        votes = count_votes(source.read_samples(0.0, "", "selection", 0, start, stop), c)
        selection_votes = votes if selection_votes is None else selection_votes + votes
    assert selection_votes is not None
    labels = labels_from_votes(selection_votes)
    estimation_votes = None
    for start, stop in source.blocks("estimation"):
        if start >= n:
            break
        maps = source.read_samples(0.0, "", "estimation", 0, start, min(stop, n))
        votes = count_votes(maps, c)
        estimation_votes = votes if estimation_votes is None else estimation_votes + votes
    assert estimation_votes is not None
    k = np.take_along_axis(estimation_votes, labels[None].astype(np.intp), axis=0)[0]
    return ImageCounts(labels, k.astype(np.int32), labels_from_votes(estimation_votes), n)


def plain_pass(source: MemorySamples, labels: np.ndarray, n: int) -> np.ndarray:
    """The yardstick: k += (block == labels).sum(0) over the estimation blocks."""
    k = np.zeros(labels.shape, dtype=np.int64)
    for start, stop in source.blocks("estimation"):
        block = source.read_samples(0.0, "", "estimation", 0, start, min(stop, n))
        k += (block == labels).sum(0)
    return k


def landed_certify_labels(
    labels: np.ndarray, counts: np.ndarray, n: int, alpha: float, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """The landed certify_pixels body (after validation): certified by lookup, the masked label
    write and the (H, W) float64 p-value map. Returns (labels, p-values)."""
    table = pvalue_table(n, tau)
    histogram = np.bincount(counts.ravel(), minlength=n + 1)
    reject_k = reject_by_count(histogram, table, alpha, "holm")
    certified = reject_k[counts]
    out = labels.astype(np.int32)
    out[~certified] = ABSTAIN
    return out, table[counts]


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, the calls run in turn `repeats` times (A B C A B C ...)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def peak_mib(call: Callable[[], Any]) -> float:
    """Peak traced MiB of one call."""
    tracemalloc.start()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def same_counts(a: ImageCounts, b: ImageCounts) -> bool:
    return all(
        np.array_equal(x, y)
        for x, y in (
            (a.labels_selected, b.labels_selected),
            (a.k, b.k),
            (a.labels_smoothed, b.labels_smoothed),
        )
    )


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print markdown tables and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--wide-classes", type=int, default=150, help="C of the C-independence run")
    parser.add_argument("--small-block", type=int, default=10, help="samples per block, 2nd run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--certify-repeats", type=int, default=101)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--tau", type=float, default=0.75)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    shape = (args.height, args.width)
    n, c = args.n, args.num_classes
    rng = np.random.default_rng(args.seed)
    selection, estimation = synthetic_maps(rng, shape, args.n0, n, c)
    one_block = MemorySamples(selection, estimation, c, samples_per_chunk=max(n, args.n0))
    small = MemorySamples(selection, estimation, c, samples_per_chunk=args.small_block)
    wide_selection, wide_estimation = synthetic_maps(rng, shape, args.n0, n, args.wide_classes)
    wide = MemorySamples(wide_selection, wide_estimation, args.wide_classes, max(n, args.n0))

    reference = old_count_image(one_block, n)
    labels = reference.labels_selected
    wide_reference = old_count_image(wide, n)
    checks = {
        f"new, blocks of {one_block.samples_per_chunk}": same_counts(
            count_image(one_block.as_store(), 0.0, "", 0, n), reference
        ),
        f"new, blocks of {args.small_block}": same_counts(
            count_image(small.as_store(), 0.0, "", 0, n), reference
        ),
        f"new, C = {args.wide_classes}": same_counts(
            count_image(wide.as_store(), 0.0, "", 0, n), wide_reference
        ),
        "plain pass k": bool(np.array_equal(plain_pass(one_block, labels, n), reference.k)),
    }
    undecided = float(np.mean(reference.k <= n // 2))
    wide_undecided = float(np.mean(wide_reference.k <= n // 2))
    print(
        f"image {shape[0]}x{shape[1]} (m = {labels.size}), n0 = {args.n0}, n = {n}, C = {c} "
        f"(and {args.wide_classes}), uint8 maps, numpy {np.__version__}, one core "
        f"(affinity {sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'})"
    )
    print(
        f"pixels with k <= n/2 (per-class votes needed): {undecided:.3f} at C = {c}, "
        f"{wide_undecided:.3f} at C = {args.wide_classes}; k > 0.75 n: "
        f"{float(np.mean(reference.k > 0.75 * n)):.3f}"
    )
    print("identical to the old path: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
    if not all(checks.values()):
        raise SystemExit("MISMATCH: a counting path differs from the landed count_votes path")

    wide_labels = wide_reference.labels_selected
    paths: dict[str, Callable[[], Any]] = {
        f"old count_image (count_votes, C = {c})": lambda: old_count_image(one_block, n),
        "plain pass (block == labels).sum(0)": lambda: plain_pass(one_block, labels, n),
        f"new count_image, blocks of {one_block.samples_per_chunk}": lambda: count_image(
            one_block.as_store(), 0.0, "", 0, n
        ),
        f"new count_image, blocks of {args.small_block}": lambda: count_image(
            small.as_store(), 0.0, "", 0, n
        ),
        f"plain pass, C = {args.wide_classes}": lambda: plain_pass(wide, wide_labels, n),
        f"new count_image, C = {args.wide_classes}": lambda: count_image(
            wide.as_store(), 0.0, "", 0, n
        ),
    }
    times = interleaved(paths, args.repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    peaks = {name: peak_mib(call) for name, call in paths.items()}
    print("\n| counting path | median s | min s | repeats | peak MiB |\n|---|---|---|---|---|")
    for name in paths:
        print(
            f"| {name} | {median[name]:.3f} | {min(times[name]):.3f} | {args.repeats} "
            f"| {peaks[name]:.1f} |"
        )

    counts = reference.k
    alpha, tau, sigma = args.alpha, args.tau, args.sigma
    landed_labels, _ = landed_certify_labels(labels, counts, n, alpha, tau)
    result = certify_pixels(labels, counts, n, alpha=alpha, tau=tau, sigma=sigma)
    certify_same = np.array_equal(result.labels, landed_labels)
    if not certify_same:
        raise SystemExit("MISMATCH: certify_pixels differs from the landed body")
    certify_calls: dict[str, Callable[[], Any]] = {
        "np.bincount(counts)": lambda: np.bincount(counts.ravel(), minlength=n + 1),
        "certify_pixels": lambda: certify_pixels(
            labels, counts, n, alpha=alpha, tau=tau, sigma=sigma
        ),
        "certify_pixels + .pvalues": lambda: (
            certify_pixels(labels, counts, n, alpha=alpha, tau=tau, sigma=sigma).pvalues
        ),
        "landed certify_pixels body (no argument checks)": lambda: landed_certify_labels(
            labels, counts, n, alpha, tau
        ),
    }
    certify_times = interleaved(certify_calls, args.certify_repeats)
    names_c = list(certify_calls)
    certify_median = {name: statistics.median(t) for name, t in certify_times.items()}
    print(
        f"\ncertify: n = {n}, tau = {tau}, alpha = {alpha}, holm; certified "
        f"{result.num_certified} / {result.num_pixels}; "
        f"identical to the landed body: {certify_same}"
    )
    print("\n| certify step | median ms | min ms | repeats |\n|---|---|---|---|")
    for name, t in certify_times.items():
        print(f"| {name} | {certify_median[name] * 1e3:.2f} | {min(t) * 1e3:.2f} | {len(t)} |")

    names = list(paths)
    old, plain, new, new_small, wide_plain, new_wide = names
    landed = "landed certify_pixels body (no argument checks)"
    ratios = [
        (f"new / plain pass, C = {c}", times[new], times[plain]),
        (f"new (blocks of {args.small_block}) / plain pass", times[new_small], times[plain]),
        (f"new / plain pass, C = {args.wide_classes}", times[new_wide], times[wide_plain]),
        (f"old / new, C = {c}", times[old], times[new]),
        ("certify_pixels / bincount", certify_times["certify_pixels"], certify_times[names_c[0]]),
        ("landed certify body / certify_pixels", certify_times[landed], certify_times[names_c[1]]),
    ]
    print("\n| ratio | of medians | median of paired (same round) |\n|---|---|---|")
    for name, top, bottom in ratios:
        paired = statistics.median(a / b for a, b in zip(top, bottom, strict=True))
        print(
            f"| {name} | {statistics.median(top) / statistics.median(bottom):.2f} | {paired:.2f} |"
        )
    print(f"\npeak memory old / new (blocks of 100): {peaks[old]:.1f} / {peaks[new]:.1f} MiB")


if __name__ == "__main__":
    main()
