"""Base accuracy of every shipped embedded variant at σ = 0.25 and 0.5 (one noise draw, no
certificate): the numbers quoted in docs/embedded-benchmark.md.

Variants: clean segmenter on the noisy image; noise-trained segmenters on the noisy image;
denoiser → clean segmenter (the paper's variant, no retraining); denoiser → fine-tuned segmenter.
The denoiser runs once per noisy batch and both segmenters behind it see the same output.

    python scripts/eval_embedded.py --images 256 --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table: variant × σ → pixel accuracy / mIoU on synthetic test images."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", type=Path, default=Path("weights"))
    p.add_argument("--images", type=int, default=256, help="synthetic test images (seed 0)")
    p.add_argument("--noise-seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from certseg.data.synthetic import CLASSES, SyntheticDataset
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter

    torch.set_num_threads(args.threads)
    ds = SyntheticDataset(seed=0, num_images=args.images, split="test")
    examples = [ds.load(i) for i in range(len(ds))]
    images = torch.from_numpy(np.stack([e.image for e in examples]))
    targets = np.stack([e.target for e in examples]).astype(np.int64)
    names = ("clean", "noise-0.25", "noise-0.50", "finetuned-denoised")
    seg = {
        n: build_segmenter(
            SegmenterSpec(family="compact", path=str(args.weights / f"segmenter-{n}"))
        )
        for n in names
    }
    denoiser = load_denoiser(args.weights / "denoiser")
    gen = torch.Generator().manual_seed(args.noise_seed)
    k = len(CLASSES)

    def score(pred: np.ndarray) -> str:
        conf = np.bincount(targets.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)
        tp = np.diag(conf)
        union = conf.sum(0) + conf.sum(1) - tp
        miou = (tp[union > 0] / union[union > 0]).mean()
        return f"{tp.sum() / conf.sum():.4f} / {miou:.4f}"

    rows: dict[str, list[str]] = {}
    for sigma in (0.25, 0.5):
        noisy = images + sigma * torch.randn(images.shape, generator=gen)
        preds: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            for i in range(0, len(noisy), 64):
                batch = noisy[i : i + 64]
                den = denoiser.denoise(batch, sigma)  # one denoiser pass feeds both segmenters
                for label, model, x in (
                    ("clean segmenter on noisy input", "clean", batch),
                    ("noise-trained σ=0.25 on noisy input", "noise-0.25", batch),
                    ("noise-trained σ=0.50 on noisy input", "noise-0.50", batch),
                    ("denoiser → clean segmenter (no retraining)", "clean", den),
                    ("denoiser → fine-tuned segmenter (needs training)", "finetuned-denoised", den),
                ):
                    preds.setdefault(label, []).append(seg[model](x).argmax(1).numpy())
        for label, parts in preds.items():
            rows.setdefault(label, []).append(score(np.concatenate(parts)))
    print(f"{args.images} synthetic test images, one noise draw (seed {args.noise_seed})")
    print("| base classifier | σ=0.25 acc / mIoU | σ=0.5 acc / mIoU |\n|---|---|---|")
    for label, cells in rows.items():
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
