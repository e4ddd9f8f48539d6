"""Train the embedded compact segmenters on the synthetic benchmark and write their model cards.

Modes (docs/embedded-benchmark.md explains the recipes):
  clean     — clean images with off-the-shelf augmentations (flip, scale/crop, colour jitter,
              blur); never Gaussian noise. The "off-the-shelf" segmenter of the paper's variant.
  noise     — the same augmentations, then x + σ·ε (ε ~ N(0, I), unclipped) on every image:
              the SegCertify-style baseline at one σ (--sigma).
  denoised  — fine-tune an existing segmenter (--init) on one-shot-denoised noisy training images:
              x̃ = x + σ·ε with σ drawn per image from --sigmas, denoised once by certseg.denoise
              (the shipped denoiser, --denoiser) into a fixed pool, then trained with flips and
              scale/crop. One model for every σ the demo certifies, as the paper uses one
              segmenter behind the denoiser at every σ.

Seeded and reproducible for a given --steps and --threads (a --minutes budget becomes a fixed step
count after 10 calibration steps; the card records it). Writes OUT/config.json,
OUT/model.safetensors, OUT/MODEL_CARD.md.

    python scripts/train_segmenter.py --mode clean --out weights/segmenter-clean --minutes 8
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CARD_SUBSET = 48
"""Test-split images (from index 0) the shipped-weights test re-measures; the card records them."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("clean", "noise", "denoised"), required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--sigma", type=float, default=0.0, help="noise mode: σ in [0, 1] units")
    p.add_argument("--sigmas", type=str, default="0.25,0.5", help="denoised mode: σ mixture")
    p.add_argument("--init", type=Path, default=None, help="start from this compact folder")
    p.add_argument("--denoiser", type=Path, default=None, help="denoised mode: diffusers folder")
    p.add_argument("--pool-size", type=int, default=2048, help="denoised mode: pool images")
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, batches, augment, noise)")
    p.add_argument("--data-seed", type=int, default=0, help="SyntheticDataset seed")
    p.add_argument("--num-train", type=int, default=4000, help="synthetic train images in memory")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--widths", type=str, default="24,48,64,96", help="CompactArch widths")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="exact number of steps (reproducible)")
    p.add_argument("--minutes", type=float, default=0.0, help="wall budget → fixed step count")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--eval-images", type=int, default=256, help="held-out test images for the card")
    args = p.parse_args(argv)
    if (args.steps > 0) == (args.minutes > 0):
        p.error("give exactly one of --steps or --minutes")
    if args.mode == "noise" and args.sigma <= 0:
        p.error("--mode noise needs --sigma > 0")
    if args.mode == "denoised" and (args.denoiser is None or args.init is None):
        p.error("--mode denoised needs --denoiser and --init")
    return args


def lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    """Linear warm-up for `warmup` steps (independent of `total`), then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def load_split(seed: int, count: int, size: int, split: str) -> tuple[Any, Any]:
    """(count, 3, S, S) float32 images in [0, 1] and (count, S, S) int64 targets, as tensors."""
    import torch

    from certseg.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(seed, count, size, split=split)
    examples = [ds.load(i) for i in range(count)]
    images = torch.from_numpy(np.stack([e.image for e in examples]))
    targets = torch.from_numpy(np.stack([e.target for e in examples]).astype(np.int64))
    return images, targets


def augment_geometry(images: Any, targets: Any, gen: Any, *, ignore_index: int) -> tuple[Any, Any]:
    """Random horizontal flip and scale (0.75–1.33) / crop (random shift), per image.

    images (B, 3, H, W) float, targets (B, H, W) int64. Bilinear for images, nearest for labels;
    pixels that come from outside the image get `ignore_index` (and reflected image content).
    """
    import torch
    import torch.nn.functional as F

    b = images.shape[0]
    scale = torch.exp(torch.empty(b).uniform_(math.log(0.75), math.log(1.33), generator=gen))
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    inv = 1.0 / scale  # grid coordinates: output pixel → input position
    max_shift = (1.0 - inv).abs() + 0.1
    shift_x = (torch.rand(b, generator=gen) * 2 - 1) * max_shift
    shift_y = (torch.rand(b, generator=gen) * 2 - 1) * max_shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = inv * flip
    theta[:, 1, 1] = inv
    theta[:, 0, 2] = shift_x
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    lab = (
        F.grid_sample(
            targets[:, None].float() + 1.0,
            grid,
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )[:, 0].long()
        - 1
    )  # 0 (outside) → −1 → ignore
    lab = torch.where(lab < 0, torch.full_like(lab, ignore_index), lab)
    return out, lab


def augment_photometric(images: Any, gen: Any) -> Any:
    """Colour jitter (brightness 0.75–1.25, contrast 0.75–1.25, saturation 0.7–1.3) and, on half
    the images, a Gaussian blur with std 0.3–1.2 px. (B, 3, H, W) in [0, 1] → same, clipped."""
    import torch
    import torch.nn.functional as F

    b = images.shape[0]

    def u(lo: float, hi: float) -> Any:
        return torch.empty(b, 1, 1, 1).uniform_(lo, hi, generator=gen)

    x = images * u(0.75, 1.25)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.75, 1.25) + mean
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = (x - gray) * u(0.7, 1.3) + gray
    x = x.clamp(0.0, 1.0)
    blur_std = torch.empty(b).uniform_(0.3, 1.2, generator=gen)
    blur_on = torch.rand(b, generator=gen) < 0.5
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * blur_std[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (offsets == 0).float()[None].expand(b, -1)
    kernel = torch.where(blur_on[:, None], kernel, identity)  # (B, 7)
    k = kernel.repeat_interleave(3, dim=0)  # (3B, 7), one per channel
    h, w = x.shape[-2:]
    flat = x.reshape(1, b * 3, h, w)
    flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * 3)
    flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="reflect"), k[:, None, :, None], groups=b * 3)
    return flat.reshape(b, 3, h, w)


def confusion(pred: Any, target: Any, num_classes: int, ignore_index: int) -> np.ndarray:
    """(C, C) int64 confusion matrix (rows = truth, columns = prediction) over valid pixels."""
    valid = target != ignore_index
    idx = target[valid] * num_classes + pred[valid]
    counts = np.bincount(idx.numpy().ravel(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def scores(conf: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and mIoU (mean over classes with a non-empty union) of a confusion matrix."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return {"pixel_accuracy": float(tp.sum() / conf.sum()), "miou": float(iou.mean())}


def predict(model: Any, images: Any, mean: Any, std: Any, batch: int = 64) -> Any:
    """(N, H, W) int64 argmax predictions, fp32, for [0, 1] images (N, 3, H, W)."""
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            outs.append(model((images[i : i + batch] - mean) / std).argmax(1))
    return torch.cat(outs)


def build_denoised_pool(args: argparse.Namespace, images: Any, gen: Any) -> tuple[Any, Any, Any]:
    """Pool of one-shot-denoised noisy train images: (pool, σ per image, source index).

    Each pool image is a random train image with colour jitter/blur (flip/scale/crop are left to
    training time), made noisy once at a σ from --sigmas and denoised once through
    certseg.denoise (bf16 autocast when enabled).
    """
    import torch

    from certseg.denoise import load_denoiser

    sigmas = torch.tensor([float(s) for s in args.sigmas.split(",")])
    dtype = torch.bfloat16 if args.use_bf16 else None
    denoiser = load_denoiser(args.denoiser, autocast_dtype=dtype)
    src = torch.randint(0, len(images), (args.pool_size,), generator=gen)
    which = torch.randint(0, len(sigmas), (args.pool_size,), generator=gen)
    pool = torch.empty(args.pool_size, *images.shape[1:])
    start = time.perf_counter()
    for i in range(0, args.pool_size, 32):
        sl = slice(i, min(i + 32, args.pool_size))
        x = augment_photometric(images[src[sl]], gen)  # the clean model's jitter/blur, pre-noise
        eps = torch.randn(x.shape, generator=gen)
        for j in range(len(sigmas)):  # one σ per denoise call
            rows = (which[sl] == j).nonzero().flatten()
            if len(rows) == 0:
                continue
            sigma = float(sigmas[j])
            noisy = x[rows] + sigma * eps[rows]
            pool[sl][rows] = denoiser.denoise(noisy, sigma)
        if (i // 32) % 10 == 0:
            print(
                f"denoised pool {sl.stop}/{args.pool_size} {time.perf_counter() - start:.0f}s",
                flush=True,
            )
    return pool, sigmas[which], src


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train and save; return run facts and metrics for the card."""
    import torch
    import torch.nn.functional as F

    from certseg.data.synthetic import CLASSES, SyntheticDataset
    from certseg.models.compact import (
        CompactArch,
        CompactConfig,
        build_compact_segmenter,
        load_compact_segmenter,
        read_compact_config,
        save_compact_segmenter,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.use_bf16 = args.bf16 == "on" or (
        args.bf16 == "auto" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )
    ignore = SyntheticDataset.ignore_index
    gen = torch.Generator().manual_seed(args.seed)

    t0 = time.perf_counter()
    images, targets = load_split(args.data_seed, args.num_train, args.size, "train")
    print(f"generated {len(images)} train images in {time.perf_counter() - t0:.1f}s", flush=True)
    if args.init is not None:
        config = read_compact_config(args.init)
        model = load_compact_segmenter(args.init)
    else:
        widths = tuple(int(w) for w in args.widths.split(","))
        config = CompactConfig(len(CLASSES), arch=CompactArch(widths))  # type: ignore[arg-type]
        model = build_compact_segmenter(config)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    params = sum(p.numel() for p in model.parameters())

    pool_seconds = 0.0
    if args.mode == "denoised":
        t0 = time.perf_counter()
        pool, _, src = build_denoised_pool(args, images, gen)
        pool_seconds = time.perf_counter() - t0
        images, targets = pool, targets[src]
    print(f"{args.mode}: {params} params, bf16={args.use_bf16}, threads={args.threads}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total = args.steps if args.steps > 0 else 10**9
    start = time.perf_counter()
    step, losses = 0, []
    model.train()
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr)
        idx = torch.randint(0, len(images), (args.batch_size,), generator=gen)
        x, y = augment_geometry(images[idx], targets[idx], gen, ignore_index=ignore)
        if args.mode != "denoised":
            x = augment_photometric(x, gen)
        if args.mode == "noise":
            x = x + args.sigma * torch.randn(x.shape, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.use_bf16):
            logits = model((x - mean) / std)
        loss = F.cross_entropy(logits.float(), y, ignore_index=ignore)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if args.minutes > 0 and step == 10:
            per_step = (time.perf_counter() - start) / 10
            total = max(60, int(args.minutes * 60 / per_step))
            print(f"calibrated: {per_step:.2f}s/step → --steps {total}", flush=True)
        if step % 50 == 0 or step == total:
            print(
                f"step {step}/{total} loss {np.mean(losses[-50:]):.4f} "
                f"{(time.perf_counter() - start) / 60:.1f} min",
                flush=True,
            )
    wall = time.perf_counter() - start
    model.eval()
    save_compact_segmenter(model, config, args.out)
    model = load_compact_segmenter(args.out)  # evaluate exactly what was saved

    test_images, test_targets = load_split(args.data_seed, args.eval_images, args.size, "test")
    pred = predict(model, test_images, mean, std)
    conf = confusion(pred, test_targets, len(CLASSES), ignore)
    metrics: dict[str, Any] = {"clean": scores(conf)}
    subset = confusion(pred[:CARD_SUBSET], test_targets[:CARD_SUBSET], len(CLASSES), ignore)
    metrics["clean_subset"] = scores(subset)
    noise_gen = torch.Generator().manual_seed(4321)
    for sigma in (0.25, 0.5):  # one noise draw, segmenter alone (the SegCertify base classifier)
        noisy = test_images + sigma * torch.randn(test_images.shape, generator=noise_gen)
        metrics[f"noisy_{sigma:.2f}"] = scores(
            confusion(predict(model, noisy, mean, std), test_targets, len(CLASSES), ignore)
        )
    if args.mode == "denoised":
        from certseg.denoise import load_denoiser

        denoiser = load_denoiser(args.denoiser)
        for sigma in (0.25, 0.5):
            noisy = test_images + sigma * torch.randn(test_images.shape, generator=noise_gen)
            with torch.inference_mode():
                den = torch.cat(
                    [denoiser.denoise(noisy[i : i + 64], sigma) for i in range(0, len(noisy), 64)]
                )
            metrics[f"denoised_{sigma:.2f}"] = scores(
                confusion(predict(model, den, mean, std), test_targets, len(CLASSES), ignore)
            )
    for key, value in metrics.items():
        print(f"{key}: acc {value['pixel_accuracy']:.4f} mIoU {value['miou']:.4f}", flush=True)
    return {
        "params": params,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "pool_time_s": round(pool_seconds, 1),
        "final_loss_50": round(float(np.mean(losses[-50:])), 4),
        "bf16": args.use_bf16,
        "metrics": metrics,
    }


RECIPES = {
    "clean": (
        "Trained from scratch on clean synthetic train images with off-the-shelf augmentations\n"
        "only: horizontal flip, random scale 0.75–1.33 with random crop/shift (out-of-image label\n"
        "pixels ignored), colour jitter (brightness, contrast, saturation), Gaussian blur (std\n"
        "0.3–1.2 px) on half the images. Never Gaussian noise: this is the off-the-shelf\n"
        "segmenter that the paper's variant (denoiser → segmenter) uses without retraining."
    ),
    "noise": (
        "{start} with the same augmentations as the clean segmenter, then Gaussian\n"
        "noise x + σ·ε (ε ~ N(0, I), [0, 1] units, not clipped) added to every training image:\n"
        "the SegCertify-style noise-trained baseline at σ = {sigma}. It needs training per σ."
    ),
    "denoised": (
        "Fine-tuned from `{init}` on one-shot-denoised training images: each of {pool} random\n"
        "train images got one noise draw at σ drawn uniformly from {{{sigmas}}} and was denoised\n"
        "once by the shipped denoiser through `certseg.denoise` (one-shot x̂₀ at the matched\n"
        "timestep); training then used flip and scale/crop on that fixed pool. One model\n"
        "serves every σ the demo certifies. This variant NEEDS TRAINING (the paper's variant\n"
        "needs none)."
    ),
}


def write_card(args: argparse.Namespace, facts: dict[str, Any], command: str) -> None:
    """MODEL_CARD.md: YAML front matter (read by tests) + prose."""
    import yaml

    from certseg.data.synthetic import DESIGN

    metrics = facts["metrics"]
    rounded = {k: {m: round(v, 4) for m, v in val.items()} for k, val in metrics.items()}
    name = args.out.name
    front = {
        "model": name,
        "family": "compact",
        "mode": args.mode,
        "sigma": args.sigma if args.mode == "noise" else None,
        "sigmas": args.sigmas if args.mode == "denoised" else None,
        "init": str(args.init) if args.init else None,
        "denoiser": str(args.denoiser) if args.denoiser else None,
        "params": facts["params"],
        "train_data": {
            "dataset": "synthetic",
            "split": "train",
            "seed": args.data_seed,
            "num_images": args.num_train,
            "size": args.size,
        },
        "seed": args.seed,
        "steps": facts["steps"],
        "batch_size": args.batch_size,
        "wall_time_s": facts["wall_time_s"],
        "pool_time_s": facts["pool_time_s"],
        "threads": args.threads,
        "bf16_autocast": facts["bf16"],
        "final_train_loss": facts["final_loss_50"],
        "command": command,
        "eval": {
            "split": "test",
            "seed": args.data_seed,
            "num_images": args.eval_images,
            "subset_images": CARD_SUBSET,
            "noise_seed": 4321,
            "precision": "fp32",
        },
        "metrics": rounded,
    }
    recipe = RECIPES[args.mode].format(
        sigma=args.sigma,
        init=args.init,
        pool=args.pool_size,
        sigmas=args.sigmas,
        start="Trained from scratch" if args.init is None else f"Fine-tuned from `{args.init}`",
    )
    rows = "\n".join(
        f"| {k} | {v['pixel_accuracy']:.4f} | {v['miou']:.4f} |" for k, v in rounded.items()
    )
    text = (
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n"
        f"# {name}: compact segmenter ({args.mode})\n\n"
        "Compact U-shaped encoder–decoder (`certseg.models.compact`), "
        f"{facts['params']} parameters,\n"
        "7 synthetic classes (`certseg.data.synthetic`: background, ground, disc, ring, box,\n"
        "triangle, striped), input normalized with mean 0.5 / std 0.25 per channel.\n\n"
        f"{DESIGN}\n## Training\n\n{recipe}\n\n"
        f"Data: {args.num_train} synthetic train images (split `train`, seed {args.data_seed},\n"
        f"{args.size}×{args.size}). AdamW lr {args.lr} (weight decay 1e-4), "
        f"batch {args.batch_size},\n"
        "50 warm-up steps then cosine decay; cross-entropy. "
        f"{facts['steps']} steps in {facts['wall_time_s'] / 60:.1f} min on {args.threads} CPU\n"
        f"thread(s), bf16 autocast: {facts['bf16']}"
        + (
            f"; building the denoised pool took {facts['pool_time_s'] / 60:.1f} min"
            if args.mode == "denoised"
            else ""
        )
        + ".\n\n"
        "## Held-out evaluation (fp32)\n\n"
        f"{args.eval_images} synthetic *test* images (seed {args.data_seed}); `clean_subset` =\n"
        f"the first {CARD_SUBSET} of them (re-measured by tests/models/test_shipped_weights.py).\n"
        "`noisy_σ` = the segmenter alone on one noise draw per image (torch seed 4321);\n"
        "`denoised_σ` = on the shipped denoiser's one-shot output. These are base-classifier\n"
        "accuracies, not certified accuracies.\n\n"
        f"| input | pixel accuracy | mIoU |\n|---|---|---|\n{rows}\n\n"
        f"## Reproduce\n\n```\n{command}\n```\n"
        "Deterministic for the same --steps and thread count on the same CPU.\n"
    )
    (args.out / "MODEL_CARD.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    facts = train(args)
    flags = [f"--mode {args.mode}", f"--out {args.out}"]
    if args.mode == "noise":
        flags.append(f"--sigma {args.sigma}")
    if args.init is not None:
        flags.append(f"--init {args.init}")
    if args.mode == "denoised":
        flags += [
            f"--sigmas {args.sigmas}",
            f"--denoiser {args.denoiser}",
            f"--pool-size {args.pool_size}",
        ]
    flags += [
        f"--seed {args.seed}",
        f"--data-seed {args.data_seed}",
        f"--num-train {args.num_train}",
        f"--size {args.size}",
    ]
    if args.init is None:
        flags.append(f"--widths {args.widths}")
    flags += [
        f"--batch-size {args.batch_size}",
        f"--lr {args.lr}",
        f"--threads {args.threads}",
        f"--steps {facts['steps']}",
        f"--bf16 {args.bf16}",
        f"--eval-images {args.eval_images}",
    ]
    command = "python scripts/train_segmenter.py " + " ".join(flags)
    write_card(args, facts, command)
    print(f"wrote {args.out} ({shlex.quote(command)})", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
