"""Model compute: the shipped denoiser's and segmenter's FLOP/s as a fraction of matmul FLOP/s.

FLOPs of one forward are counted by torch.utils.flop_counter.FlopCounterMode (convolutions,
matmuls and attention: 2 per multiply-add; elementwise work — norms, activations, resizes — is
not counted, so the fraction understates the arithmetic done). The reference is a square matmul
of the same dtype in the same process, sized to about the model's FLOPs (n = (FLOPs / 2)^(1/3),
a multiple of 256, at most 4096). Variants: fp32; bf16 autocast; channels_last (weights and
input) in fp32 and bf16; torch.compile (inductor) of the fp32 and bf16 models when `--compile`
(its compile time is reported). Each variant and its matmul run once per round, all variants in
turn (A B C … A B C …), medians over rounds.

Models: the UNet of weights/denoiser at `--unet-size` (the resolution the scale benchmark runs it
at, 256×256), and the compact segmenter of weights/segmenter-clean (Segmenter wrapper, so its
normalization is included) at `--seg-size` (H×W; FLOPs and time scale with the pixels).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_flops`` (``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.frames import load_models


@dataclass
class Variant:
    """One way to run a model: its callable, dtype name, and (for compile) the compile seconds."""

    model: str
    name: str
    dtype: str
    run: Callable[[], Any]
    compile_s: float | None = None


def count_flops(run: Callable[[], Any]) -> int:
    """FLOPs of one call, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet-size", type=int, default=256)
    parser.add_argument("--seg-size", default="512x1024", help="HxW of the segmenter input")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args(argv)

    import torch

    from certseg.sampling import bf16_supported

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._dynamo.*")
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    segmenter, denoiser = load_models(None)
    unet = denoiser.unet.to(device).eval()
    segmenter = segmenter.to(device).eval()
    height, width = (int(v) for v in args.seg_size.lower().split("x"))
    generator = torch.Generator().manual_seed(0)
    batch = args.batch_size
    unet_input = torch.randn((batch, 3, args.unet_size, args.unet_size), generator=generator)
    seg_input = torch.rand((batch, 3, height, width), generator=generator)
    unet_input, seg_input = unet_input.to(device), seg_input.to(device)
    steps = torch.full((batch,), 100, dtype=torch.long, device=device)
    has_bf16 = bf16_supported(device)
    dtypes = ["fp32"] + (["bf16"] if has_bf16 else [])

    def autocast(dtype: str) -> Any:
        if dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def call(model: Any, inputs: tuple[Any, ...], dtype: str) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode(), autocast(dtype):
                return model(*inputs)

        return run

    cl = torch.channels_last
    unet_cl = _channels_last_copy(unet)
    seg_cl = _channels_last_copy(segmenter)
    cases = {
        "denoiser UNet": (
            unet,
            unet_cl,
            (unet_input, steps),
            (unet_input.contiguous(memory_format=cl), steps),
        ),
        "segmenter": (segmenter, seg_cl, (seg_input,), (seg_input.contiguous(memory_format=cl),)),
    }
    variants: list[Variant] = []
    flops: dict[str, int] = {}
    for model_name, (model, model_cl, inputs, inputs_cl) in cases.items():
        flops[model_name] = count_flops(call(model, inputs, "fp32"))
        for dtype in dtypes:
            variants.append(Variant(model_name, f"{dtype}", dtype, call(model, inputs, dtype)))
            variants.append(
                Variant(
                    model_name, f"{dtype} channels_last", dtype, call(model_cl, inputs_cl, dtype)
                )
            )
            if args.compile:
                compiled = torch.compile(model)
                run = call(compiled, inputs, dtype)
                began = time.perf_counter()
                try:
                    run()
                    sync()
                except Exception as error:  # report any compile failure and go on
                    print(
                        f"torch.compile of {model_name} ({dtype}) failed: "
                        f"{type(error).__name__}: {error}"
                    )
                    continue
                variants.append(
                    Variant(
                        model_name,
                        f"{dtype} torch.compile",
                        dtype,
                        run,
                        time.perf_counter() - began,
                    )
                )

    sizes = {
        m: min(4096, max(256, 256 * round((f / 2) ** (1 / 3) / 256))) for m, f in flops.items()
    }
    matmuls: dict[tuple[str, str], Callable[[], Any]] = {}
    for model_name, n in sizes.items():
        for dtype in dtypes:
            kind = torch.float32 if dtype == "fp32" else torch.bfloat16
            a = torch.randn((n, n), generator=generator).to(device=device, dtype=kind)
            b = torch.randn((n, n), generator=generator).to(device=device, dtype=kind)
            matmuls[(model_name, dtype)] = lambda a=a, b=b: torch.matmul(a, b)

    def seconds(run: Callable[[], Any]) -> float:
        sync()
        began = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - began

    for variant in variants:  # warm-up (first-call costs, oneDNN primitive creation)
        variant.run()
    for run in matmuls.values():
        run()
    model_times: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    matmul_times: dict[tuple[str, str], list[float]] = {key: [] for key in matmuls}
    for _ in range(args.rounds):
        for index, variant in enumerate(variants):
            model_times[index].append(seconds(variant.run))
            key = (variant.model, variant.dtype)
            matmul_times[key].append(seconds(matmuls[key]))

    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {batch}, bf16 supported: {has_bf16}, rounds {args.rounds}; UNet at "
        f"{args.unet_size}x{args.unet_size}, segmenter at {height}x{width}"
    )
    for model_name, count in flops.items():
        print(
            f"{model_name}: {count / 1e9:.2f} GFLOP per forward (FlopCounterMode), "
            f"reference matmul n = {sizes[model_name]}"
        )
    print(
        "\n| model | variant | median ms | model GFLOP/s | matmul GFLOP/s (same dtype, same round) "
        "| fraction of matmul | speed vs fp32 | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for index, variant in enumerate(variants):
        t = statistics.median(model_times[index])
        if variant.name == "fp32":
            base[variant.model] = t
        mm = statistics.median(matmul_times[(variant.model, variant.dtype)])
        n = sizes[variant.model]
        rate = flops[variant.model] / t / 1e9
        mm_rate = 2 * n**3 / mm / 1e9
        compile_s = "-" if variant.compile_s is None else f"{variant.compile_s:.0f}"
        print(
            f"| {variant.model} | {variant.name} | {1e3 * t:.1f} | {rate:.1f} | {mm_rate:.1f} | "
            f"{rate / mm_rate:.2f} | {base[variant.model] / t:.2f} | {compile_s} |"
        )


def _channels_last_copy(model: Any) -> Any:
    """A deep copy of `model` with its 4-D weights in channels_last memory format."""
    import copy

    import torch

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


if __name__ == "__main__":
    main()
