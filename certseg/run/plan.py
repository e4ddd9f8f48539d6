"""Plan a run before it starts: forward passes, samples, store bytes, memory and wall time.

`plan_run` counts what a config will do (exact: from the config and the dataset listing) and
calibrates what it will cost (measured: a few real samples of the first image through the real
models on the configured device, at the first σ):

- forward passes per model: every denoiser group draws images × σ × (n0 + n) noisy samples; the
  group's denoiser runs once per sample (× num_steps UNet evaluations for k-step denoising) and
  each of its segmenters once; the health check adds health.num_images × σ draws per group and
  the clean predictions one pass per used segmenter and image;
- store bytes: stored class maps (σ × variants × images × (n0 + n)) × H × W × the class-map
  dtype, raw and compressed with the store's codec (the ratio measured on the calibration maps:
  an estimate, exact only for images like the first);
- the forward batch sampling will use per group (micro_batches): sampling.batch_size lowered to
  fit sampling.memory_mib (`plan_micro_batch`; MemoryBudgetError when one sample does not fit);
- peak memory per worker: the process's peak RSS (CPU) or CUDA's peak allocation after a batch of
  1 and the calibration batch (or 2), extrapolated linearly to that batch (an estimate);
- wall time: seconds per noisy sample per group, timed on a second batch of the calibration size
  (sampling.batch_size, capped at CALIBRATION_PIXELS; the first builds the kernels for that
  shape), × the samples, divided by the concurrent shards
  (sampling.workers, capped at the shards): the forward passes dominate, Prefect/Dask/MLflow
  start-up (tens of seconds) is not included.

Nothing is written: no store, no tracking, no results folder.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from certseg.run.context import RunContext
from certseg.run.models import Models, load_models
from certseg.run.sample import default_sampler, draw_block, open_run_dataset, plan_micro_batch
from certseg.storage.layout import class_map_dtype

CALIBRATION_PIXELS = 2**21
"""Pixels (batch × H × W) of a timed calibration batch: a full batch of small images, one
Cityscapes frame."""


def calibration_batch(batch_size: int, pixels: int) -> int:
    """Samples per timed calibration batch: sampling.batch_size, capped at CALIBRATION_PIXELS
    worth of frames (at least 1)."""
    return max(1, min(batch_size, CALIBRATION_PIXELS // max(1, pixels)))


@dataclass(frozen=True)
class RunPlan:
    """What a run will do and cost. Counts are exact; bytes, memory and seconds are estimates
    from the calibration (see the module docstring).

    forward_passes: model label ("denoiser <name>" | "segmenter <name>") → network evaluations.
    seconds_per_sample: denoiser group → seconds per noisy sample through it (all its
    segmenters). micro_batches: group → the forward batch sampling will use (memory budget
    applied). peak_memory_bytes: per worker process at that batch; memory_kind:
    "RSS" (CPU) or "CUDA allocated".
    """

    images: int
    frame: tuple[int, int]
    samples: int
    stored_maps: int
    forward_passes: dict[str, int]
    raw_bytes: int
    store_bytes: int
    peak_memory_bytes: int
    memory_kind: str
    seconds_per_sample: dict[str, float]
    expected_seconds: float
    device: str
    workers: int
    batch_size: int
    calibration_batch: int
    micro_batches: dict[str, int]


def count_forward_passes(ctx: RunContext, images: int) -> tuple[int, dict[str, int]]:
    """(noisy samples drawn, model label → forward passes) of a full run over `images` images,
    health check and clean predictions included."""
    config = ctx.config
    per_image = config.n0 + config.n
    draws = images * per_image + config.health.num_images
    passes: dict[str, int] = {}
    samples = 0
    for sigma in config.sigmas:
        for group, variant_names in config.denoiser_groups().items():
            samples += images * per_image
            if group != "none":
                steps = config.denoisers[group].num_steps
                key = f"denoiser {group}"
                passes[key] = passes.get(key, 0) + draws * steps
            for name in sorted({config.variant(v).segmenter_for(sigma) for v in variant_names}):
                key = f"segmenter {name}"
                passes[key] = passes.get(key, 0) + draws
    for name in config.used_segmenters():
        key = f"segmenter {name}"
        passes[key] = passes.get(key, 0) + images
    return samples, dict(sorted(passes.items()))


def plan_run(ctx: RunContext, *, models: Models | None = None) -> RunPlan:
    """Count and calibrate the run `ctx` describes (module docstring). Loads the models and the
    first image; writes nothing."""
    import numcodecs

    config = ctx.config
    dataset = open_run_dataset(ctx)
    images = len(dataset)
    if images < 1:
        raise ValueError(f"dataset {dataset.name!r} has no images: nothing to plan")
    example = dataset.load(0)
    height, width = example.image.shape[-2:]
    samples, passes = count_forward_passes(ctx, images)
    maps = len(config.sigmas) * len(config.variants) * images * (config.n0 + config.n)
    models = models or load_models(ctx)
    num_classes = max(s.num_classes for s in models.segmenters.values())
    raw_per_map = height * width * np.dtype(class_map_dtype(num_classes)).itemsize

    sampler = default_sampler()
    sigma = config.sigmas[0]
    seconds: dict[str, float] = {}
    compressed: list[float] = []
    memory: list[int] = []
    batches: dict[str, int] = {}
    for group, variant_names in config.denoiser_groups().items():
        wiring = sorted({config.variant(v).segmenter_for(sigma) for v in variant_names})

        def draw(
            count: int, start: int, size: int, *, group: str = group, wiring: list[str] = wiring
        ) -> Mapping[str, np.ndarray]:
            return draw_block(
                ctx,
                models,
                sampler,
                example,
                sigma=sigma,
                group=group,
                segmenters=wiring,
                phase="health",  # any keyed stream: the cost is the same in every phase
                start=start,
                count=count,
                batch_size=size,
            )

        # the batch sampling will use: sampling.batch_size lowered to fit sampling.memory_mib
        # (MemoryBudgetError, a ValueError naming the budget, when one sample does not fit)
        effective = plan_micro_batch(
            ctx,
            models,
            example,
            sigma=sigma,
            group=group,
            segmenters=wiring,
            max_pixels=int(height) * int(width),
        )
        batches[group] = effective
        batch = calibration_batch(effective, int(height) * int(width))
        draw(1, 0, 1)  # warm-up, and the batch-of-1 peak
        one = _peak_memory(models.device)
        slope = 0
        if batch == 1 and effective > 1:
            draw(2, 1, 2)  # a second point for the memory line
            slope = max(0, _peak_memory(models.device) - one)
        draw(batch, 0, batch)  # warm-up at the timed shape (oneDNN builds kernels per shape)
        began = time.perf_counter()
        drawn = draw(batch, batch, batch)
        seconds[group] = (time.perf_counter() - began) / batch
        if batch > 1:
            slope = max(0, _peak_memory(models.device) - one) // (batch - 1)
        memory.append(one + (effective - 1) * slope)
        codec = numcodecs.Zstd(level=3)  # the store's codec: zarr 3's default ZstdCodec
        for block in drawn.values():
            compressed.append(len(codec.encode(np.ascontiguousarray(block))) / len(block))

    total_seconds = sum(
        seconds[group] * images * (config.n0 + config.n) * len(config.sigmas) for group in seconds
    )
    return RunPlan(
        images=images,
        frame=(int(height), int(width)),
        samples=samples,
        stored_maps=maps,
        forward_passes=passes,
        raw_bytes=maps * raw_per_map,
        store_bytes=int(maps * float(np.mean(compressed))) if compressed else 0,
        peak_memory_bytes=max(memory),
        memory_kind="CUDA allocated" if models.device.startswith("cuda") else "RSS",
        seconds_per_sample=seconds,
        expected_seconds=total_seconds / ctx.parallelism.workers,
        device=models.device,
        workers=ctx.parallelism.workers,
        batch_size=config.sampling.batch_size,
        calibration_batch=calibration_batch(min(batches.values()), int(height) * int(width)),
        micro_batches=batches,
    )


def _peak_memory(device: str) -> int:
    """Peak bytes so far: CUDA's peak allocation on a CUDA device, else the process's max RSS."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB
