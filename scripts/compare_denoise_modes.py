"""Compare how the denoiser meets images larger than its input: resize (the paper) vs tiled.

One command (docs/denoiser.md, "Resize or tiles"):

    python scripts/compare_denoise_modes.py --size 128 --num-images 3

Images: the embedded synthetic test scenes generated at `--size` (objects scale with the image,
`--layout scaled`), or `--layout mosaic`: a size×size mosaic of distinct 64×64 scenes (objects
at the scale the models were trained on, more of them per image — the case of a large photo).
For each σ, every image is certified (certseg.smoothing.SmoothedSegmenter, the pipeline's
per-image computation: same keyed noise, n0 selection + n estimation samples, Holm) with:

- none: no denoiser, the segmenter noise-trained at that σ (SegCertify);
- resize-1: the shipped denoiser at its 64×64 input via resize (attenuation-matched t*), one-shot,
  then the clean segmenter (the paper's variant);
- tiled-1: the shipped denoiser at full resolution in overlapping 64×64 tiles, one-shot;
- resize-k / tiled-k: the same with k-step DDIM (`--steps`).

Reports certified accuracy, certified mIoU, abstain, UNet and segmenter forward passes per image
and seconds per image; writes the table (Markdown), the numbers (JSON) and a plot (PNG: certified
accuracy vs UNet passes per image) under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
SCENE = 64
NOISE_SEGMENTERS = {0.25: "segmenter-noise-0.25", 0.5: "segmenter-noise-0.50"}


@dataclass(frozen=True)
class Row:
    """One (σ, mode) line of the table; passes are per image (n0 + n samples)."""

    sigma: float
    mode: str
    label: str
    certified_accuracy: float
    certified_miou: float
    abstain: float
    unet_passes: int
    segmenter_passes: int
    seconds_per_image: float


def load_images(layout: str, size: int, num_images: int, seed: int) -> list[tuple[str, Any, Any]]:
    """(image id, (3, size, size) float32 image in [0, 1], (size, size) uint8 target) per image."""
    from certseg.data.synthetic import SyntheticDataset

    if layout == "scaled":
        data = SyntheticDataset(seed=seed, num_images=num_images, size=size, split="test")
        return [(e.image_id, e.image, e.target) for e in map(data.load, range(num_images))]
    if size % SCENE:
        raise ValueError(f"--size {size}: a mosaic needs a multiple of {SCENE}")
    per = (size // SCENE) ** 2
    scenes = SyntheticDataset(seed=seed, num_images=num_images * per, size=SCENE, split="test")
    out = []
    for i in range(num_images):
        image = np.empty((3, size, size), dtype=np.float32)
        target = np.empty((size, size), dtype=np.uint8)
        for j in range(per):
            r, c = divmod(j, size // SCENE)
            window = (slice(r * SCENE, (r + 1) * SCENE), slice(c * SCENE, (c + 1) * SCENE))
            example = scenes.load(i * per + j)
            image[(slice(None), *window)] = example.image
            target[window] = example.target
        out.append((f"mosaic-{size}-{i}", image, target))
    return out


def modes(steps: int) -> list[tuple[str, str, str | None, int]]:
    """(mode, label, denoiser mode or None, DDIM steps)."""
    return [
        ("none", "no denoiser, segmenter noise-trained at σ (SegCertify)", None, 1),
        ("resize-1", "resize to 64×64, one-shot (the paper)", "resize", 1),
        ("tiled-1", "tiled 64×64 at full resolution, one-shot", "tiled", 1),
        (f"resize-{steps}", f"resize to 64×64, {steps}-step DDIM", "resize", steps),
        (f"tiled-{steps}", f"tiled 64×64, {steps}-step DDIM", "tiled", steps),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.smoothing import SmoothedSegmenter
    from certseg.stats.metrics import ConfusionAccumulator

    images = load_images(args.layout, args.size, args.num_images, args.seed)
    clean = build_segmenter(SegmenterSpec("compact", str(WEIGHTS / "segmenter-clean")))
    rows = []
    for sigma in args.sigmas:
        noisy_segmenter = build_segmenter(
            SegmenterSpec("compact", str(WEIGHTS / NOISE_SEGMENTERS[sigma]))
        )
        for mode, label, denoise_mode, steps in modes(args.steps):
            denoiser = None
            if denoise_mode is not None:
                denoiser = load_denoiser(
                    WEIGHTS / "denoiser",
                    resolution=SCENE,
                    mode=denoise_mode,
                    num_steps=steps,
                    tile_overlap=args.overlap,
                )
            smoothed = SmoothedSegmenter(
                noisy_segmenter if denoiser is None else clean,
                denoiser,
                sigma=sigma,
                seed=args.seed,
                batch_size=args.batch_size,
            )
            confusion = ConfusionAccumulator(clean.num_classes)
            start = time.perf_counter()
            for image_id, image, target in images:
                result = smoothed.certify(
                    image,
                    image_key=image_id,
                    n0=args.n0,
                    n=args.n,
                    alpha=args.alpha,
                    tau=args.tau,
                )
                confusion.update(result.labels, target)
            seconds = (time.perf_counter() - start) / len(images)
            metrics = confusion.metrics()
            samples = args.n0 + args.n
            per_sample = 0 if denoiser is None else denoiser.unet_passes(image.shape[1:], sigma)
            row = Row(
                sigma,
                mode,
                label,
                metrics.accuracy,
                metrics.miou,
                metrics.abstain_rate,
                samples * per_sample,
                samples,
                seconds,
            )
            print(json.dumps(asdict(row)), flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| σ | mode | certified acc | certified mIoU | abstain | UNet passes / image "
        "| segmenter passes / image | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.sigma} | {r.mode}: {r.label} | {r.certified_accuracy:.3f} | "
            f"{r.certified_miou:.3f} | {r.abstain:.3f} | {r.unet_passes:,} | "
            f"{r.segmenter_passes:,} | {r.seconds_per_image:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigmas = sorted({r.sigma for r in rows})
    fig, axes = plt.subplots(1, len(sigmas), figsize=(5 * len(sigmas), 4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas, strict=True):
        for r in (r for r in rows if r.sigma == sigma):
            ax.scatter(max(r.unet_passes, 1), r.certified_accuracy, s=40)
            ax.annotate(r.mode, (max(r.unet_passes, 1), r.certified_accuracy), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("UNet forward passes per image (log; 'none' plotted at 1)")
        ax.set_ylabel("certified accuracy")
        ax.set_title(f"σ = {sigma}")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("scaled", "mosaic"), default="scaled")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--num-images", type=int, default=3)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--tau", type=float, default=0.75)
    parser.add_argument("--steps", type=int, default=2, help="k of the k-step rows")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile_overlap of tiled rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "denoise-modes")
    args = parser.parse_args()
    for sigma in args.sigmas:
        if sigma not in NOISE_SEGMENTERS:
            parser.error(f"--sigmas: the shipped noise-trained segmenters cover {NOISE_SEGMENTERS}")

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args)
    total = time.perf_counter() - start
    title = (
        f"{args.num_images} synthetic {args.layout} {args.size}×{args.size} images, n0={args.n0}, "
        f"n={args.n}, τ={args.tau}, α={args.alpha}, Holm, overlap {args.overlap}, "
        f"{args.threads} thread(s), {total / 60:.1f} min"
    )
    table = markdown(rows)
    print(f"\n{title}\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.layout}-{args.size}"
    out = args.out.resolve()
    shown_out = str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)
    (args.out / f"{stem}.md").write_text(f"{title}\n\n{table}\n")
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {"settings": vars(args) | {"out": shown_out}, "rows": [asdict(r) for r in rows]},
            indent=1,
        )
        + "\n"
    )
    plot(rows, args.out / f"{stem}.png", title)


if __name__ == "__main__":
    main()
