"""Threads benchmark: how to spend this machine's cores on sampling (the rule of
certseg.run.resources).

The same work — `--shards` shards of `--samples` samples each of one frame (bench/frames.py
mosaic, `--height`×`--width`), the denoised variant (shipped denoiser at its native 64×64... or
`--denoiser-resolution`, then the shipped segmenter at full size), the pipeline's precision (bf16
autocast where supported) — done three ways in one process, the way certify-dataset runs shards:

  1 shard at a time × 1 thread       the baseline
  1 shard at a time × C threads      torch's default (C = the cores of this process)
  C shards at once  × 1 thread       the rule: threads = cores // workers (certseg default
                                     sampling.workers = 1 gives the row above)

Rounds alternate the three (medians over rounds); ratios are against the baseline, measured in
one run. `--load K` adds K busy CPU processes for the whole run (a loaded machine, e.g. Dask
workers or another job on the same box): the oversubscribed case.

Run: ``.venv/bin/python -m bench.bench_threads`` (and ``--load 2``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.frames import DENOISER, mosaic_frame

WAYS = ("1 shard × 1 thread", "1 shard × C threads", "C shards × 1 thread")


def _busy(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2147483648


def _shard_work(frame: Any, models: tuple[Any, Any], samples: int, shard: int, dtype: Any) -> None:
    from certseg.sampling import sample_class_maps

    segmenter, denoiser = models
    sample_class_maps(
        frame.image,
        image_key=f"bench-threads-{shard}",
        phase="estimation",
        start=0,
        count=samples,
        sigma=0.25,
        seed=0,
        denoiser=denoiser,
        segmenters={"seg": segmenter},
        batch_size=samples,
        autocast_dtype=dtype,
    )


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    import torch

    from bench.frames import SEGMENTER
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.run.resources import available_cores, resolve_parallelism
    from certseg.sampling import bf16_supported

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4, help="samples per shard per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load", type=int, default=0, help="busy CPU processes alongside")
    parser.add_argument("--denoiser-resolution", type=int, default=None)
    args = parser.parse_args(argv)

    cores = available_cores()
    rule = resolve_parallelism(workers=cores, threads=None, shards=cores)
    frame = mosaic_frame(args.height, args.width, 64)
    models = (
        build_segmenter(SegmenterSpec("compact", str(SEGMENTER))).eval(),
        load_denoiser(DENOISER, resolution=args.denoiser_resolution),
    )
    dtype = torch.bfloat16 if bf16_supported("cpu") else None
    shards = cores  # the same work for every way: C shards

    def serial(threads: int) -> Callable[[], None]:
        def run() -> None:
            torch.set_num_threads(threads)
            for shard in range(shards):
                _shard_work(frame, models, args.samples, shard, dtype)

        return run

    def concurrent() -> None:
        torch.set_num_threads(rule.threads)
        workers = [
            threading.Thread(target=_shard_work, args=(frame, models, args.samples, s, dtype))
            for s in range(shards)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    ways = {WAYS[0]: serial(1), WAYS[1]: serial(cores), WAYS[2]: concurrent}
    stop = multiprocessing.Event()
    load = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(args.load)]
    for process in load:
        process.start()
    times: dict[str, list[float]] = {way: [] for way in ways}
    try:
        with torch.no_grad():
            serial(1)()  # warm-up: allocator, oneDNN kernels
            for _ in range(args.rounds):
                for way, run in ways.items():
                    times[way].append(_timed(run))
    finally:
        stop.set()
        for process in load:
            process.join()

    total = shards * args.samples
    base = statistics.median(times[WAYS[0]])
    print(
        f"frame {args.height}x{args.width}, denoised variant (denoiser at "
        f"{args.denoiser_resolution or 'its native size'}), {'bf16' if dtype else 'fp32'}, "
        f"{cores} cores (C), {shards} shards x {args.samples} samples per round, "
        f"{args.rounds} rounds, {args.load} busy processes alongside; torch {torch.__version__}"
    )
    print(f"rule: sampling.workers = C → threads = {rule.threads} per shard ({rule.rule})")
    print("| way | median s per round | samples/s | speed vs 1 shard × 1 thread |")
    print("|---|---:|---:|---:|")
    for way in ways:
        median = statistics.median(times[way])
        print(f"| {way} | {median:.2f} | {total / median:.2f} | {base / median:.2f}× |")


if __name__ == "__main__":
    main()
