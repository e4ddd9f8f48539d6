"""Sampling throughput of the hot loop (`certseg.sampling.sample_class_maps`) on the shipped models.

Two ratios, each measured within one run on the same image and noise:
1. bf16 autocast vs fp32 (CPU with AVX512-BF16/AMX, or a CUDA device with bf16), for the segmenter
   alone and for denoiser → segmenter; with the fraction of pixels whose class differs.
2. One denoiser pass shared by two segmenters vs one denoiser pass per segmenter (what a pipeline
   without the shared pass would pay for the paper's variant plus the fine-tuned variant).

Run from the repository root: `python -m bench.bench_sampling [--threads 1] [--samples 128]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _best_of(repeats: int, run: Callable[[], object]) -> float:
    """Best wall time of `repeats` calls, in seconds (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from certseg.data.synthetic import SyntheticDataset
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.sampling import bf16_supported, sample_class_maps

    torch.set_num_threads(args.threads)
    image = SyntheticDataset(seed=0, num_images=1, size=64, split="test").load(0).image
    clean = build_segmenter(SegmenterSpec("compact", str(REPO / "weights/segmenter-clean")))
    tuned = build_segmenter(
        SegmenterSpec("compact", str(REPO / "weights/segmenter-finetuned-denoised"))
    )
    denoiser = load_denoiser(REPO / "weights/denoiser")
    has_bf16 = bf16_supported("cpu")

    def sample(den: object, segs: dict[str, object], dtype: object) -> dict[str, np.ndarray]:
        return sample_class_maps(
            image,
            image_key="bench",
            phase="estimation",
            start=0,
            count=args.samples,
            sigma=0.5,
            seed=0,
            denoiser=den,  # type: ignore[arg-type]
            segmenters=segs,  # type: ignore[arg-type]
            batch_size=args.batch_size,
            autocast_dtype=dtype,  # type: ignore[arg-type]
        )

    rows: list[tuple[str, float, str]] = []
    print(
        f"torch {torch.__version__}, threads {args.threads}, 64x64 image, {args.samples} samples, "
        f"batch {args.batch_size}, sigma 0.5, bf16 supported: {has_bf16}"
    )
    dtypes = [("fp32", None)] + ([("bf16", torch.bfloat16)] if has_bf16 else [])
    rates: dict[tuple[str, str], float] = {}
    for case, den, segs in (
        ("segmenter alone", None, {"clean": clean}),
        ("denoiser -> segmenter", denoiser, {"clean": clean}),
    ):
        maps = {}
        for label, dtype in dtypes:
            seconds = _best_of(args.repeats, lambda d=den, s=segs, t=dtype: sample(d, s, t))
            rates[(case, label)] = args.samples / seconds
            maps[label] = sample(den, segs, dtype)["clean"]
            rows.append((f"{case}, {label}", args.samples / seconds, "samples/s"))
        if "bf16" in maps:
            differ = float(np.mean(maps["bf16"] != maps["fp32"]))
            ratio = rates[(case, "bf16")] / rates[(case, "fp32")]
            note = f"ratio; pixels differing {differ:.4f}"
            rows.append((f"{case}: bf16 / fp32 speed", ratio, note))

    dtype = torch.bfloat16 if has_bf16 else None
    shared = _best_of(args.repeats, lambda: sample(denoiser, {"a": clean, "b": tuned}, dtype))
    separate = _best_of(
        args.repeats,
        lambda: (sample(denoiser, {"a": clean}, dtype), sample(denoiser, {"b": tuned}, dtype)),
    )
    rows.append(("2 segmenters, one shared denoiser pass", args.samples / shared, "samples/s"))
    rows.append(("2 segmenters, one denoiser pass each", args.samples / separate, "samples/s"))
    rows.append(("shared / separate speed", separate / shared, "ratio"))

    print("\n| measurement | value | note |\n|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value:.2f} | {note} |")


if __name__ == "__main__":
    main()
