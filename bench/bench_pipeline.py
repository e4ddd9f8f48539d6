"""Fixed costs: the whole `certseg certify` run against a bare torch loop doing the same forward
passes, and re-running a finished store.

Workload (realistic size): `--frames` frames of `--height`×`--width` (bench/frames.py mosaics of
64×64 synthetic scenes, written as a folder dataset with their label masks), one variant — the
shipped denoiser (at `--denoiser-resolution` via resize, the paper's way) in front of the shipped
compact segmenter at full resolution — σ = 0.25, n0 = 10, n = `--n`, batch 8, bf16 where
supported, one shard, the health check off (the bare loop has none).

Arms, in one run:
  bare loop   models loaded, then for every frame and every sample: noise (torch.randn), x + σε,
              denoise, segment, argmax, labels to numpy — nothing stored, no certificate.
  certify     `certseg certify` in a fresh process, end to end (imports, Prefect's ephemeral
              server, store, sampling, Dask aggregation, report, MLflow).
  re-run      the same command again on the finished store.

Reported: each arm's wall seconds and the ratios certify / bare loop (target ≤ 1.15) and
re-run / certify (the re-run should read stored results: seconds, not a fresh run's time).

Run: ``.venv/bin/python -m bench.bench_pipeline`` (≈ 2 × the bare loop + the re-run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.certify_cli import certify_cli
from bench.frames import DENOISER, REPO, SEGMENTER

TILE = 64


def write_folder_dataset(root: Path, frames: int, height: int, width: int) -> None:
    """`frames` mosaic frames of distinct synthetic scenes with their masks, as a folder dataset."""
    from PIL import Image

    from certseg.data.synthetic import SyntheticDataset

    rows, cols = height // TILE, width // TILE
    scenes = SyntheticDataset(seed=7, num_images=frames * rows * cols, size=TILE, split="test")
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(f"class{c}" for c in range(7)) + "\n")
    for frame in range(frames):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), dtype=np.uint8)
        for index in range(rows * cols):
            r, c = divmod(index, cols)
            example = scenes.load(frame * rows * cols + index)
            window = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
            image[window] = np.rint(example.image.transpose(1, 2, 0) * 255).astype(np.uint8)
            target = example.target.astype(np.int64)
            mask[window] = np.where(target < 0, 255, target).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"frame{frame:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"frame{frame:03d}.png")


def write_config(path: Path, dataset: Path, args: argparse.Namespace) -> None:
    import yaml

    resolution = args.denoiser_resolution
    config: dict[str, Any] = {
        "name": "bench-pipeline",
        "dataset": {"kind": "folder", "root": str(dataset), "ignore_index": 255},
        "segmenters": {"clean": {"family": "compact", "path": str(SEGMENTER)}},
        "denoisers": {
            "ddpm": {
                "path": str(DENOISER),
                "timestep_rule": "matched",
                "num_steps": 1,
                **({"resolution": resolution} if resolution else {}),
            }
        },
        "variants": [{"name": "denoised", "segmenter": "clean", "denoiser": "ddpm"}],
        "sigmas": [0.25],
        "n0": 10,
        "n": args.n,
        "sampling": {
            "batch_size": args.batch,
            "device": "cpu",
            "bf16": "auto",
            "channels_last": args.channels_last,
        },
        "health": {"num_images": 0},
        "shards": 1,
        "tracking": {"experiment": "bench-pipeline"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def bare_loop(dataset: Path, args: argparse.Namespace) -> float:
    """Seconds of the bare loop (models loaded before the clock starts)."""
    import torch
    from PIL import Image

    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.sampling import bf16_supported

    dtype = torch.bfloat16 if bf16_supported("cpu") else None
    segmenter = build_segmenter(SegmenterSpec("compact", str(SEGMENTER))).eval()
    denoiser = load_denoiser(DENOISER, resolution=args.denoiser_resolution, autocast_dtype=dtype)
    # Contiguous (3, H, W) like every dataset loader's image: a transposed view would carry an
    # NHWC layout into the convolutions, i.e. channels_last (1.7x faster here), and compare the
    # pipeline's default against another memory format.
    images = [
        torch.from_numpy(
            np.ascontiguousarray(np.asarray(Image.open(p), dtype=np.float32).transpose(2, 0, 1))
            / 255
        )
        for p in sorted((dataset / "images").iterdir())
    ]
    if args.channels_last:
        segmenter = segmenter.to(memory_format=torch.channels_last)
        denoiser.unet = denoiser.unet.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    began = time.perf_counter()
    with torch.inference_mode():
        for image in images:
            remaining = 10 + args.n
            while remaining:
                count = min(args.batch, remaining)
                remaining -= count
                batch = image[None].expand(count, -1, -1, -1)
                noisy = batch + 0.25 * torch.randn(batch.shape, generator=generator)
                denoised = denoiser.denoise(noisy, 0.25)
                with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    logits = segmenter(denoised)
                logits.float().argmax(dim=1).numpy().astype(np.uint8)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--denoiser-resolution", type=int, default=128)
    parser.add_argument(
        "--channels-last", action="store_true", help="both arms with sampling.channels_last"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        write_folder_dataset(work / "data", args.frames, args.height, args.width)
        config = work / "run.yaml"
        write_config(config, work / "data", args)
        bare = bare_loop(work / "data", args)
        certify = certify_cli(config, work, "store")
        rerun = certify_cli(config, work, "store")

    samples = args.frames * (10 + args.n)
    print(
        f"{args.frames} frames of {args.height}x{args.width}, n0 = 10, n = {args.n} "
        f"({samples} samples), denoiser at {args.denoiser_resolution} via resize + compact "
        f"segmenter at full size, batch {args.batch}, bf16 auto, channels_last "
        f"{args.channels_last}, 1 shard, "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__}; repo {REPO.name}"
    )
    print("| arm | wall s | ratio |")
    print("|---|---:|---:|")
    print(f"| bare torch loop (same forward passes) | {bare:.1f} | 1.00 |")
    print(f"| `certseg certify`, fresh | {certify:.1f} | {certify / bare:.2f} × bare |")
    print(f"| `certseg certify`, finished store | {rerun:.1f} | {rerun / certify:.2f} × fresh |")


if __name__ == "__main__":
    main()
