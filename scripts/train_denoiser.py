"""Train the embedded DDPM denoiser (a small diffusers UNet2DModel) on synthetic train images.

DDPM, 1000 steps, linear betas 1e-4 … 0.02, epsilon prediction, images in [−1, 1]. Seeded and
reproducible for a given --steps and --threads (a --minutes budget is turned into a fixed step
count after 10 calibration steps, and the card records that count). Writes a diffusers folder:
OUT/unet/ (config.json + diffusion_pytorch_model.safetensors) and
OUT/scheduler/scheduler_config.json, then, with --card, OUT/MODEL_CARD.md with the one-shot
denoising MSE measured through certseg.denoise.

    python scripts/train_denoiser.py --out weights/denoiser --minutes 20 --threads 1
    python scripts/train_denoiser.py --out weights/denoiser --eval-only   # (re)write the card
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BLOCKS = {"plain": ("DownBlock2D", "UpBlock2D"), "attn": ("AttnDownBlock2D", "AttnUpBlock2D")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output diffusers folder")
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, batches, noise, t)")
    p.add_argument("--data-seed", type=int, default=0, help="SyntheticDataset seed")
    p.add_argument("--num-train", type=int, default=4000, help="synthetic train images in memory")
    p.add_argument("--size", type=int, default=64, help="image size (pixels)")
    p.add_argument("--widths", type=str, default="32,48,64,96", help="UNet block_out_channels")
    p.add_argument("--attn", type=str, default="0,0,1,0", help="1 = attention block at that level")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay of the saved weights")
    p.add_argument(
        "--low-t-fraction",
        type=float,
        default=0.5,
        help="share of samples with t drawn from [0, low-t-max) instead of [0, 1000)",
    )
    p.add_argument("--low-t-max", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="exact number of steps (reproducible)")
    p.add_argument("--minutes", type=float, default=0.0, help="wall budget → fixed step count")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--eval-images", type=int, default=128, help="test images for the card")
    p.add_argument("--card", action="store_true", help="write MODEL_CARD.md after training")
    p.add_argument("--eval-only", action="store_true", help="only (re)write the card")
    args = p.parse_args(argv)
    if not args.eval_only and (args.steps > 0) == (args.minutes > 0):
        p.error("give exactly one of --steps or --minutes")
    return args


def bf16_available() -> bool:
    """True when this CPU runs bf16 matmuls natively (oneDNN bf16 support)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    """Linear warm-up for `warmup` steps (independent of `total`), then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_unet(widths: tuple[int, ...], attn: tuple[bool, ...], size: int) -> Any:
    """The diffusers UNet2DModel for 3-channel images of `size`×`size`."""
    from diffusers import UNet2DModel

    down = tuple(BLOCKS["attn" if a else "plain"][0] for a in attn)
    up = tuple(BLOCKS["attn" if a else "plain"][1] for a in reversed(attn))
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=widths,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=8,
        attention_head_dim=32,
    )


def make_scheduler() -> Any:
    """DDPM, 1000 steps, linear betas 1e-4 … 0.02, epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="epsilon",
        clip_sample=True,
    )


def load_images(seed: int, count: int, size: int, split: str) -> np.ndarray:
    """(count, 3, size, size) float32 synthetic images in [0, 1]."""
    from certseg.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(seed, count, size, split=split)
    return np.stack([ds.load(i).image for i in range(count)])


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, save the EMA weights and scheduler to args.out; return run facts for the card."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and bf16_available())
    widths = tuple(int(w) for w in args.widths.split(","))
    attn = tuple(bool(int(a)) for a in args.attn.split(","))
    if len(widths) != len(attn):
        raise ValueError("--widths and --attn must have the same number of entries")

    t0 = time.perf_counter()
    images = torch.from_numpy(load_images(args.data_seed, args.num_train, args.size, "train"))
    print(f"generated {len(images)} train images in {time.perf_counter() - t0:.1f}s", flush=True)
    unet = build_unet(widths, attn, args.size)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    scheduler = make_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    params = sum(p.numel() for p in unet.parameters())
    print(f"UNet2DModel {params} params, bf16={use_bf16}, threads={args.threads}", flush=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)

    total = args.steps if args.steps > 0 else 10**9
    start = time.perf_counter()
    step, losses = 0, []
    unet.train()
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr)
        idx = torch.randint(0, len(images), (args.batch_size,), generator=gen)
        x0 = images[idx] * 2.0 - 1.0
        flip = torch.rand(args.batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        low = torch.rand(args.batch_size, generator=gen) < args.low_t_fraction
        t_all = torch.randint(0, 1000, (args.batch_size,), generator=gen)
        t_low = torch.randint(0, args.low_t_max, (args.batch_size,), generator=gen)
        t = torch.where(low, t_low, t_all)
        eps = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            pred = unet(xt, t).sample
        loss = torch.nn.functional.mse_loss(pred.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        losses.append(float(loss))
        step += 1
        if args.minutes > 0 and step == 10:
            per_step = (time.perf_counter() - start) / 10
            total = max(60, int(args.minutes * 60 / per_step))
            print(f"calibrated: {per_step:.2f}s/step → --steps {total}", flush=True)
        if step % 50 == 0 or step == total:
            elapsed = time.perf_counter() - start
            print(
                f"step {step}/{total} loss {np.mean(losses[-50:]):.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {elapsed / 60:.1f} min",
                flush=True,
            )
    wall = time.perf_counter() - start
    unet.load_state_dict(ema)
    unet.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(args.out / "unet", safe_serialization=True)
    scheduler.save_pretrained(args.out / "scheduler")
    facts = {
        "params": params,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "final_loss_50": round(float(np.mean(losses[-50:])), 5),
        "bf16": use_bf16,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    (args.out / "train_facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"saved {args.out} after {step} steps, {wall / 60:.1f} min", flush=True)
    return facts


def evaluate(folder: Path, data_seed: int, count: int, size: int) -> dict[str, Any]:
    """One-shot denoising MSE (to the clean image, [0, 1] units) vs the noisy input's MSE.

    Uses certseg.denoise (the library's one-shot x̂₀); noise from a fixed torch seed (1234).
    """
    import torch

    from certseg.denoise import load_denoiser

    denoiser = load_denoiser(folder)
    clean = torch.from_numpy(load_images(data_seed, count, size, "test"))
    gen = torch.Generator().manual_seed(1234)
    result: dict[str, Any] = {"eval_images": count, "eval_split": "test", "eval_seed": data_seed}
    for sigma in (0.25, 0.5):
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        with torch.inference_mode():
            out = torch.cat(
                [denoiser.denoise(noisy[i : i + 32], sigma) for i in range(0, count, 32)]
            )
        mse_noisy = float(((noisy - clean) ** 2).mean())
        mse_denoised = float(((out.float() - clean) ** 2).mean())
        key = f"sigma_{sigma:.2f}"
        result[key] = {
            "mse_noisy": round(mse_noisy, 6),
            "mse_one_shot": round(mse_denoised, 6),
            "factor": round(mse_noisy / mse_denoised, 2),
        }
        print(f"σ={sigma}: noisy MSE {mse_noisy:.5f}, one-shot MSE {mse_denoised:.5f}", flush=True)
    return result


def write_card(
    folder: Path, args: argparse.Namespace, command: str, metrics: dict[str, Any]
) -> None:
    """MODEL_CARD.md: YAML front matter (read by tests) + prose."""
    import yaml

    from certseg.data.synthetic import DESIGN

    facts = json.loads((folder / "train_facts.json").read_text())
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    front = {
        "model": "denoiser",
        "kind": "diffusers UNet2DModel DDPM (epsilon prediction)",
        "params": facts["params"],
        "block_out_channels": unet_cfg["block_out_channels"],
        "down_block_types": unet_cfg["down_block_types"],
        "schedule": "DDPM 1000 steps, linear betas 1e-4..0.02",
        "train_data": {
            "dataset": "synthetic",
            "split": "train",
            "seed": args.data_seed,
            "num_images": args.num_train,
            "size": args.size,
        },
        "seed": args.seed,
        "steps": facts["steps"],
        "wall_time_s": facts["wall_time_s"],
        "threads": args.threads,
        "bf16_autocast": facts["bf16"],
        "final_train_loss": facts["final_loss_50"],
        "command": command,
        "one_shot_denoising": metrics,
    }
    s25, s50 = metrics["sigma_0.25"], metrics["sigma_0.50"]
    text = (
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n"
        "# Embedded DDPM denoiser\n\n"
        "A small diffusers `UNet2DModel` trained as an unconditional DDPM (epsilon prediction,\n"
        "1000-step linear schedule 1e-4…0.02) on synthetic *train* images in [−1, 1] with\n"
        "horizontal flips. Timesteps: half of each batch uniform over [0, 1000), half uniform\n"
        f"over [0, {args.low_t_max}) — the range one-shot denoising at σ ≤ 0.5 uses\n"
        "(t* ≈ 145 / 259) — to spend a small CPU budget where it matters; it is still a full\n"
        f"DDPM. The saved weights are an EMA (decay {args.ema}) of the training weights.\n"
        f"AdamW lr {args.lr}, batch {args.batch_size}, 50 warm-up steps then cosine decay,\n"
        "grad-norm clip 1.\n\n"
        f"{DESIGN}\n## One-shot denoising on held-out synthetic test images\n\n"
        f"{metrics['eval_images']} test images (split `test`, seed {args.data_seed}), one noise\n"
        "draw each (torch seed 1234), x̂₀ from `certseg.denoise` at the matched timestep. MSE\n"
        "to the clean image in [0, 1] units:\n\n"
        "| σ | noisy-input MSE | one-shot MSE | factor |\n|---|---|---|---|\n"
        f"| 0.25 | {s25['mse_noisy']:.5f} | {s25['mse_one_shot']:.5f} | {s25['factor']}× |\n"
        f"| 0.50 | {s50['mse_noisy']:.5f} | {s50['mse_one_shot']:.5f} | {s50['factor']}× |\n\n"
        "## Reproduce\n\n"
        f"```\n{command}\n```\n"
        f"Trained {facts['steps']} steps in {facts['wall_time_s'] / 60:.1f} min on "
        f"{args.threads} CPU thread(s) (bf16 autocast: {facts['bf16']}).\n"
        f"Deterministic for the same --steps {facts['steps']} and thread count on the same CPU.\n"
    )
    (folder / "MODEL_CARD.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    if not args.eval_only:
        train(args)
    if args.card or args.eval_only:
        facts = json.loads((args.out / "train_facts.json").read_text())
        trained = facts["args"]  # the card describes the training run, not this invocation
        for key in (
            "seed",
            "data_seed",
            "num_train",
            "size",
            "widths",
            "attn",
            "batch_size",
            "lr",
            "ema",
            "low_t_fraction",
            "low_t_max",
            "threads",
            "bf16",
        ):
            setattr(args, key, trained[key])
        metrics = evaluate(args.out, args.data_seed, args.eval_images, args.size)
        command = (
            "python scripts/train_denoiser.py "
            f"--out {args.out} --seed {args.seed} --data-seed {args.data_seed} "
            f"--num-train {args.num_train} --widths {args.widths} --attn {args.attn} "
            f"--batch-size {args.batch_size} --lr {args.lr} --ema {args.ema} "
            f"--low-t-fraction {args.low_t_fraction} --low-t-max {args.low_t_max} "
            f"--threads {args.threads} --steps {facts['steps']} --bf16 {args.bf16} --card"
        )
        write_card(args.out, args, command, metrics)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
