"""Scaling: `certseg certify` wall time against the work (images × n) and against the shards
sampled at once.

Each point is one fresh `certseg certify` process end to end (imports, Prefect's ephemeral
server, store, sampling, Dask aggregation, report, MLflow) on synthetic 64×64 test scenes with
the shipped denoiser + compact segmenter (one variant, σ = 0.25, n0 = 10, health check off):

  work     images ∈ --images, n ∈ --ns, one shard: the wall time is fixed costs + a slope in
           the samples, which the fit reports (seconds per sample and the intercept);
  shards   the largest work point again with shards = workers = 1 … --max-workers (the cores
           split between them by sampling.workers' rule).

Writes the table to stdout and the plot to --plot (docs/benchmarks-scaling.png).

Run: ``.venv/bin/python -m bench.bench_scaling``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.certify_cli import certify_cli
from bench.frames import DENOISER, SEGMENTER


def config(images: int, n: int, shards: int) -> dict[str, Any]:
    return {
        "name": "bench-scaling",
        "dataset": {"kind": "synthetic", "split": "test", "seed": 0, "num_images": images},
        "segmenters": {"clean": {"family": "compact", "path": str(SEGMENTER)}},
        "denoisers": {"ddpm": {"path": str(DENOISER)}},
        "variants": [{"name": "denoised", "segmenter": "clean", "denoiser": "ddpm"}],
        "sigmas": [0.25],
        "n0": 10,
        "n": n,
        "sampling": {"batch_size": 32, "workers": shards},
        "health": {"num_images": 0},
        "shards": shards,
        "tracking": {"experiment": "bench-scaling"},
    }


def certify(work: Path, data: dict[str, Any], name: str) -> float:
    import yaml

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return certify_cli(path, work, name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--ns", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=Path("docs/benchmarks-scaling.png"))
    args = parser.parse_args(argv)

    work_points: list[tuple[int, int, float]] = []
    shard_points: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        for images in args.images:
            for n in args.ns:
                seconds = certify(work, config(images, n, 1), f"w{images}-{n}")
                work_points.append((images, n, seconds))
        images, n = max(args.images), max(args.ns)
        for workers in range(1, args.max_workers + 1):
            if workers == 1:
                seconds = next(s for i, m, s in work_points if (i, m) == (images, n))
            else:
                seconds = certify(work, config(images, n, workers), f"s{workers}")
            shard_points.append((workers, seconds))

    samples = np.array([i * (10 + m) for i, m, _ in work_points], dtype=float)
    walls = np.array([s for _, _, s in work_points])
    slope, intercept = np.polyfit(samples, walls, 1)
    print(
        f"synthetic 64x64 scenes, denoised variant (shipped denoiser + compact segmenter), "
        f"sigma 0.25, n0 = 10, batch 32, one certify process per point; cores {os.cpu_count()}"
    )
    print("| images | n | samples (images × (n0 + n)) | wall s |")
    print("|---:|---:|---:|---:|")
    for (images, n, seconds), count in zip(work_points, samples, strict=True):
        print(f"| {images} | {n} | {int(count)} | {seconds:.1f} |")
    print(f"fit: wall ≈ {intercept:.1f} s + {slope * 1000:.1f} ms × samples")
    print("| shards = workers | wall s | speed vs 1 |")
    print("|---:|---:|---:|")
    for workers, seconds in shard_points:
        print(f"| {workers} | {seconds:.1f} | {shard_points[0][1] / seconds:.2f}× |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(samples, walls, "o")
    grid = np.linspace(0, samples.max() * 1.05, 50)
    left.plot(
        grid, intercept + slope * grid, "-", label=f"{intercept:.0f} s + {slope:.3f} s/sample"
    )
    left.set(xlabel="noisy samples (images × (n0 + n))", ylabel="wall s", title="work")
    left.legend()
    right.plot([w for w, _ in shard_points], [s for _, s in shard_points], "o-")
    right.set(xlabel="shards sampled at once", ylabel="wall s", title=f"{images} images, n={n}")
    figure.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=100)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
