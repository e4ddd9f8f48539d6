"""Scale benchmark: the per-sample cost of certifying a Cityscapes-size frame, stage by stage.

One 1024×2048 frame (bench/frames.py: a mosaic of distinct synthetic scenes), 19 classes, n0 = 10,
n = 100, σ = 0.25, the denoised variant (the shipped denoiser run at 256×256 via resize, then the
shipped compact segmenter at full resolution), the default config's precision (bf16 autocast
where supported). Per sample, in the order the pipeline runs them:

  noise            sample_noise_batch on the device (per-sample keyed generator)
  noisy input      x + σ·ε
  denoiser: UNet   the UNet forward alone (timed inside the denoiser)
  denoiser: rest   DiffusionDenoiser.denoise minus the UNet: [0,1]→[−1,1], resize to 256×256 and
                   back (antialiased bilinear), scaling and clamps
  finite check     check_finite on the denoiser output and on the logits
  segmenter: net   the network forward alone
  segmenter: rest  Segmenter.forward(native_dtype=True) minus the network: normalization
  argmax           certseg.sampling.argmax_classes (running maximum over the class planes)
  to host          labels.cpu() (CPU: no copy; CUDA: the device→host transfer of uint8 labels)
  cast             .numpy().astype(uint8, copy=False)
  encode           what SampleStore.write_samples does before zarr: range check, padded copy
  compress         the store's codec alone (zarr 3.1's default ZstdCodec(level=0): zstd 3)
  store write      a local zarr array laid out like the store's sample arrays (chunks
                   (1, S, H, W)), minus the codec: the write without compress
  store read       reading the chunk back (decompress included), as counting does
  vote counting    certseg.certificates.count_stored_image (select_labels + count_estimation)
                   over n0 + n synthetic maps (bench/bench_counting.py's generator), per stored map

The same stages are then run with the model forwards replaced by zero-cost stand-ins (a UNet that
returns zeros and a network that returns cached 19-class logits, both in the autocast dtype), and
`sample_class_maps` itself is timed with the stand-ins: the pipeline's own cost per sample. The
real and stand-in stages alternate within each round (medians over rounds). `--samples` samples
are timed per round (not all n0 + n: the stages cost the same for every sample) and reported per
sample. The shipped segmenter predicts 7 classes; the stand-in's logits have 19.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_scale`` (``--device cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.frames import CITYSCAPES_CLASSES, Frame, load_models, mosaic_frame, to_19_classes

TARGET = 0.10
"""Everything but the model forwards (and, on the CPU, the noise) ≤ 10 % of the forward time."""

FORWARD_STAGES = ("denoiser: UNet", "segmenter: net")
MODEL_STAGES = (
    "noise",
    "noisy input",
    "denoiser: UNet",
    "denoiser: rest",
    "finite check",
    "segmenter: net",
    "segmenter: rest",
    "argmax",
    "to host",
    "cast",
)
STORE_STAGES = ("encode", "compress", "store write", "store read", "vote counting")


class Clock:
    """Seconds per named stage, with a device synchronization before each reading."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def timed_module(inner: Any, clock: Clock, stage: str) -> Any:
    """`inner` wrapped so each forward's wall time is added to `stage` (and excluded by the
    caller from the enclosing stage)."""
    from torch import nn

    class Timed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.config = getattr(inner, "config", None)

        def forward(self, *args: Any) -> Any:
            began = clock.now()
            out = self.inner(*args)
            clock.add(stage, clock.now() - began)
            return out

    return Timed()


def stand_ins(
    denoiser: Any, height: int, width: int, batch: int, dtype: Any, device: Any
) -> tuple[Any, Any]:
    """(denoiser with a zero-cost UNet, segmenter with a zero-cost 19-class network): the same
    wrappers (DiffusionDenoiser, Segmenter) around modules that return cached outputs."""
    import torch
    from torch import nn

    from certseg.denoise import DiffusionDenoiser
    from certseg.models.segmenter import Segmenter

    out_dtype = torch.float32 if dtype is None else dtype

    class ZeroUNet(nn.Module):
        def forward(self, x: Any, t: Any) -> Any:
            return torch.zeros(x.shape, dtype=out_dtype, device=x.device)

    generator = torch.Generator().manual_seed(0)
    cached = torch.randn((batch, CITYSCAPES_CLASSES, height, width), generator=generator)
    cached = cached.to(device=device, dtype=out_dtype)

    class CachedLogits(nn.Module):
        def forward(self, x: Any) -> Any:
            return cached[: x.shape[0]]

    fake_denoiser = DiffusionDenoiser(
        ZeroUNet(), denoiser.scheduler, resolution=denoiser.resolution
    )
    fake_segmenter = Segmenter(
        CachedLogits(),
        num_classes=CITYSCAPES_CLASSES,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        name="stand-in",
    )
    return fake_denoiser.to(device), fake_segmenter.to(device)


def run_model_stages(
    frame: Frame,
    denoiser: Any,
    segmenter: Any,
    *,
    sigma: float,
    samples: int,
    batch_size: int,
    dtype: Any,
    device: Any,
) -> tuple[dict[str, float], np.ndarray]:
    """Seconds per stage for `samples` samples (the sampling loop unrolled, stage by stage) and
    the (samples, H, W) uint8 maps."""
    import torch

    from certseg.noise import sample_noise_batch
    from certseg.sampling import argmax_classes, check_finite

    clock = Clock(device)
    denoiser.unet = timed_module(denoiser.unet, clock, "denoiser: UNet")
    segmenter.model = timed_module(segmenter.model, clock, "segmenter: net")
    clean = torch.as_tensor(frame.image).to(device)
    maps = np.empty((samples, *frame.image.shape[1:]), dtype=np.uint8)

    def autocast() -> Any:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

    try:
        with torch.inference_mode():
            for offset in range(0, samples, batch_size):
                indices = range(offset, min(offset + batch_size, samples))
                t0 = clock.now()
                noise = sample_noise_batch(
                    clean.shape,
                    seed=0,
                    image_key="bench-frame",
                    phase="estimation",
                    indices=indices,
                    device=device,
                )
                t1 = clock.now()
                noisy = clean.unsqueeze(0) + sigma * noise
                t2 = clock.now()
                unet_before = clock.seconds.get("denoiser: UNet", 0.0)
                with autocast():
                    denoised = denoiser.denoise(noisy, sigma)
                t3 = clock.now()
                check_finite(denoised, model="denoiser", where="bench")
                t4 = clock.now()
                net_before = clock.seconds.get("segmenter: net", 0.0)
                with autocast():
                    logits = segmenter(denoised.float(), native_dtype=True)
                t5 = clock.now()
                check_finite(logits, model="segmenter", where="bench")
                t6 = clock.now()
                labels = argmax_classes(logits)
                t7 = clock.now()
                host = labels.cpu()
                t8 = clock.now()
                maps[offset : offset + len(indices)] = host.numpy().astype(np.uint8, copy=False)
                t9 = clock.now()
                unet = clock.seconds["denoiser: UNet"] - unet_before
                net = clock.seconds["segmenter: net"] - net_before
                for stage, seconds in (
                    ("noise", t1 - t0),
                    ("noisy input", t2 - t1),
                    ("denoiser: rest", t3 - t2 - unet),
                    ("finite check", (t4 - t3) + (t6 - t5)),
                    ("segmenter: rest", t5 - t4 - net),
                    ("argmax", t7 - t6),
                    ("to host", t8 - t7),
                    ("cast", t9 - t8),
                ):
                    clock.add(stage, seconds)
    finally:
        denoiser.unet = denoiser.unet.inner
        segmenter.model = segmenter.model.inner
    return clock.seconds, maps


def run_store_stages(
    maps: np.ndarray, folder: Path, counting: Callable[[], Any], total: int
) -> dict[str, float]:
    """Seconds per stage to store the (S, H, W) maps as one chunk (per stage, for S maps) and to
    count an image's n0 + n = `total` maps (scaled to S maps)."""
    import numcodecs
    import zarr

    count, height, width = maps.shape
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    if int(maps.min()) < 0 or int(maps.max()) >= CITYSCAPES_CLASSES:  # write_samples' range check
        raise SystemExit("maps out of range")
    full = np.zeros((count, height, width), dtype=np.uint8)  # write_samples' padded copy
    full[:, :height, :width] = maps
    seconds["encode"] = time.perf_counter() - began
    codec = numcodecs.Zstd(level=0)  # what zarr's default ZstdCodec(level=0) runs
    began = time.perf_counter()
    codec.encode(full)
    seconds["compress"] = time.perf_counter() - began
    group = zarr.open_group(zarr.storage.LocalStore(folder / "scale.zarr"), mode="a")
    array = group.create_array(
        name=f"samples{len(list(group.array_keys()))}",
        shape=(1, count, height, width),
        chunks=(1, count, height, width),
        dtype="uint8",
        fill_value=0,
        dimension_names=["image", "sample", "y", "x"],
    )
    began = time.perf_counter()
    array[0, 0:count] = full
    seconds["store write"] = time.perf_counter() - began - seconds["compress"]
    began = time.perf_counter()
    back = np.asarray(array[0, 0:count])
    seconds["store read"] = time.perf_counter() - began
    if not np.array_equal(back, maps):
        raise SystemExit("the zarr array does not read back the maps written")
    began = time.perf_counter()
    counting()
    seconds["vote counting"] = (time.perf_counter() - began) * count / total
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--samples", type=int, default=2, help="samples timed per round")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--denoiser-resolution", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from bench.bench_counting import MemorySamples, synthetic_maps
    from certseg.certificates import count_stored_image as count_image
    from certseg.noise import noise_stream
    from certseg.sampling import bf16_supported, sample_class_maps

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_supported(device))
    dtype = torch.bfloat16 if use_bf16 else None
    frame = mosaic_frame(args.height, args.width, args.tile)
    segmenter, denoiser = load_models(args.denoiser_resolution)
    segmenter.to(device)
    denoiser.to(device)
    fake_denoiser, fake_segmenter = stand_ins(
        denoiser, args.height, args.width, args.batch_size, dtype, device
    )
    rng = np.random.default_rng(0)
    selection, estimation = synthetic_maps(
        rng, (args.height, args.width), args.n0, args.n, CITYSCAPES_CLASSES
    )
    source = MemorySamples(selection, estimation, CITYSCAPES_CLASSES, samples_per_chunk=args.n)

    def counting() -> Any:
        return count_image(source.as_store(), 0.0, "", 0, args.n)

    def stand_in_loop() -> None:
        sample_class_maps(
            frame.image,
            image_key="bench-frame",
            phase="estimation",
            start=0,
            count=args.samples,
            sigma=args.sigma,
            seed=0,
            denoiser=fake_denoiser,
            segmenters={"stand-in": fake_segmenter},
            batch_size=args.batch_size,
            device=device,
            autocast_dtype=dtype,
        )

    print(
        f"frame {args.height}x{args.width} ({args.tile}-pixel synthetic scenes), "
        f"{CITYSCAPES_CLASSES} classes, n0 = {args.n0}, n = {args.n}, sigma = {args.sigma}; "
        f"device {device} (noise stream {noise_stream(device)}), "
        f"{'bf16 autocast' if dtype else 'fp32'}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}; {args.samples} samples per round in batches of "
        f"{args.batch_size}, {args.rounds} rounds; denoiser at {args.denoiser_resolution}x"
        f"{args.denoiser_resolution} via resize"
    )
    real: dict[str, list[float]] = {}
    fake: dict[str, list[float]] = {}
    loop: list[float] = []
    common = {
        "sigma": args.sigma,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "dtype": dtype,
        "device": device,
    }
    # One untimed warm-up of each path (allocator, kernels, first-call costs).
    run_model_stages(frame, fake_denoiser, fake_segmenter, **{**common, "samples": 1})
    run_model_stages(frame, denoiser, segmenter, **{**common, "samples": 1})
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            stages, maps = run_model_stages(frame, denoiser, segmenter, **common)
            maps19 = to_19_classes(maps, frame.tiles, segmenter.num_classes)
            stages.update(run_store_stages(maps19, Path(folder), counting, args.n0 + args.n))
            for stage, seconds in stages.items():
                real.setdefault(stage, []).append(seconds / args.samples)
            stages, _ = run_model_stages(frame, fake_denoiser, fake_segmenter, **common)
            # The store stages again on the real maps (the stand-in's argmax of random logits
            # would be incompressible noise): a second measurement of the same work.
            stages.update(run_store_stages(maps19, Path(folder), counting, args.n0 + args.n))
            for stage, seconds in stages.items():
                fake.setdefault(stage, []).append(seconds / args.samples)
            began = time.perf_counter()
            stand_in_loop()
            loop.append((time.perf_counter() - began) / args.samples)

    def med(values: dict[str, list[float]], stage: str) -> float:
        return 1e3 * statistics.median(values.get(stage, [0.0]))

    forward = sum(med(real, s) for s in FORWARD_STAGES)
    noise_cpu = device.type == "cpu"
    print(
        "\n| stage | real models, ms per sample | zero-cost stand-ins, ms per sample "
        "| share of forward time (real) |"
    )
    print("|---|---|---|---|")
    for stage in MODEL_STAGES + STORE_STAGES:
        r, f = med(real, stage), med(fake, stage)
        print(f"| {stage} | {r:.2f} | {f:.2f} | {100 * r / forward:.2f} % |")
    own_real = sum(med(real, s) for s in MODEL_STAGES + STORE_STAGES if s not in FORWARD_STAGES)
    own_fake = sum(med(fake, s) for s in MODEL_STAGES + STORE_STAGES if s not in FORWARD_STAGES)
    excluded = med(real, "noise") if noise_cpu else 0.0
    pipeline = own_real - excluded
    print(
        f"\nmodel forwards (UNet + segmenter net): {forward:.1f} ms per sample; everything else: "
        f"{own_real:.1f} ms (stand-in run: {own_fake:.1f} ms); sample_class_maps with the "
        f"stand-ins: {1e3 * statistics.median(loop):.1f} ms per sample (loop only: no store, no "
        "counting)"
    )
    print(
        f"target: everything except the model forwards{' and the noise (CPU)' if noise_cpu else ''}"
        f" <= {100 * TARGET:.0f} % of the forward time: {pipeline:.1f} ms = "
        f"{100 * pipeline / forward:.2f} % -> "
        f"{'met' if pipeline <= TARGET * forward else 'NOT met'}"
    )
    fake_pipeline = own_fake - (med(fake, "noise") if noise_cpu else 0.0)
    print(
        f"the same with the stand-in's {CITYSCAPES_CLASSES}-class logits (the shipped segmenter "
        f"has {segmenter.num_classes}): {fake_pipeline:.1f} ms = "
        f"{100 * fake_pipeline / forward:.2f} % of the real forward time -> "
        f"{'met' if fake_pipeline <= TARGET * forward else 'NOT met'}"
    )
    print(
        f"noise: {med(real, 'noise'):.1f} ms per 3x{args.height}x{args.width} sample on {device} "
        f"= {100 * med(real, 'noise') / forward:.2f} % of the forward time"
    )
    if noise_cpu:
        gen = np.random.default_rng(0)
        times = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            gen.standard_normal((3, args.height, args.width), dtype=np.float32)
            times.append(time.perf_counter() - began)
        print(
            f"reference only (another stream, not used): numpy PCG64 ziggurat "
            f"standard_normal(float32) per sample: {1e3 * statistics.median(times):.1f} ms"
        )
    print_alternatives(fake_segmenter, frame, device, dtype, args.rounds)


def print_alternatives(segmenter: Any, frame: Frame, device: Any, dtype: Any, rounds: int) -> None:
    """Before/now rows on the stand-in's float32 logits: torch's argmax over the class axis (what
    sampling.py ran before) vs `argmax_classes` (a running maximum over the class planes, ties to
    the lowest index; identical result checked), and isfinite(x).all() vs `check_finite` (a
    finite float32 sum first; the per-element check only when it is not finite)."""
    import torch

    from certseg.sampling import argmax_classes as running_argmax
    from certseg.sampling import check_finite

    def ms(call: Callable[[], Any]) -> float:
        clock = Clock(device)
        times = []
        for _ in range(rounds):
            began = clock.now()
            call()
            times.append(clock.now() - began)
        return 1e3 * statistics.median(times)

    with torch.inference_mode():
        x = torch.as_tensor(frame.image, device=device).unsqueeze(0)
        with (
            contextlib.nullcontext()
            if dtype is None
            else torch.autocast(device_type=torch.device(device).type, dtype=dtype)
        ):
            logits = segmenter(x)
        if not torch.equal(running_argmax(logits).long(), logits.argmax(dim=1)):
            raise SystemExit("the running-maximum argmax differs from torch.argmax")
        rows = (
            ("torch argmax(dim=1) (before)", lambda: logits.argmax(dim=1)),
            ("argmax_classes: running maximum -> uint8 (now)", lambda: running_argmax(logits)),
            ("bool(isfinite(x).all()) (before)", lambda: bool(torch.isfinite(logits).all())),
            (
                "check_finite: isfinite(x.sum()) (now)",
                lambda: check_finite(logits, model="m", where="w"),
            ),
        )
        print(
            f"\nbefore/now rows on the stand-in's (1, {logits.shape[1]}, H, W) float32 logits "
            "(identical argmax checked):\n"
        )
        print("| alternative | ms per sample |\n|---|---|")
        for name, call in rows:
            print(f"| {name} | {ms(call):.1f} |")


if __name__ == "__main__":
    main()
