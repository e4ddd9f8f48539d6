"""Sample a shard: draw every missing sample block of its images and write it to the store.

For each image, σ and denoiser group, the sampler (`certseg.sampling.sample_class_maps`) is
called once per sample block (one denoiser pass feeds every segmenter of the group); a
background writer (`certseg.storage.writer.BlockWriter`) writes each variant's class maps to its
chunk, then the block's completion flag, while the next block is drawn. Blocks already
flagged are skipped, so a re-run resumes where a killed run stopped. Each image is loaded (decoded)
once per shard, and only when something of it is missing; models load on first need.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from certseg.noise import noise_stream
from certseg.redact import redact_url
from certseg.run.context import RunContext
from certseg.run.looks import GroupLooks
from certseg.run.models import Models, load_models, sampling_precision
from certseg.storage import PHASES_STORED, SampleStore, sigma_key
from certseg.storage.store import check_noise_stream, check_sampling_precision
from certseg.storage.writer import BlockWriter

if TYPE_CHECKING:
    from certseg.data.base import Example, SegmentationDataset

Sampler = Callable[..., Mapping[str, np.ndarray]]
"""The signature of certseg.sampling.sample_class_maps (tests pass counting stand-ins)."""

Progress = Callable[[int, bool], None]
"""Told (samples, resumed) after each block: drawn now (False) or found done (True)."""


@dataclass(frozen=True)
class Shard:
    """A contiguous range of images [start, stop) sampled by one task."""

    index: int
    start: int
    stop: int


def plan_shards(num_images: int, shards: int) -> tuple[Shard, ...]:
    """Split N images into at most `shards` contiguous, near-equal ranges (none empty)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    count = min(shards, num_images)
    bounds = [round(i * num_images / count) for i in range(count + 1)]
    return tuple(Shard(i, bounds[i], bounds[i + 1]) for i in range(count))


def run_samples(ctx: RunContext, num_images: int) -> int:
    """Samples a full run draws: images × σ × denoiser groups × (n0 + n) (progress total)."""
    config = ctx.config
    return num_images * len(config.sigmas) * len(config.denoiser_groups()) * (config.n0 + config.n)


@dataclass(frozen=True)
class ShardReport:
    """What a shard did: blocks sampled and skipped, samples drawn, seconds spent sampling."""

    shard: int
    sampled_blocks: int
    skipped_blocks: int
    samples: int
    seconds: float
    per_sigma: dict[str, dict[str, float]] = field(default_factory=dict)
    """sigma_key → {"samples": model evaluations (samples × segmenters), "seconds": ...}."""
    not_needed_blocks: int = 0
    """Sequential stores: estimation blocks left unsampled because every variant of their
    denoiser group stopped at an earlier look (flagged "not needed" in the store)."""


def sampling_rates(reports: Sequence[ShardReport]) -> dict[str, float]:
    """sigma_key → model evaluations per second over the shards that sampled (resumed: none)."""
    totals: dict[str, list[float]] = {}
    for report in reports:
        for key, stats in report.per_sigma.items():
            pair = totals.setdefault(key, [0.0, 0.0])
            pair[0] += stats["samples"]
            pair[1] += stats["seconds"]
    return {key: s / t for key, (s, t) in totals.items() if t > 0}


def default_sampler() -> Sampler:
    """certseg.sampling.sample_class_maps (imported on first use: it imports torch)."""
    from certseg.sampling import sample_class_maps

    return sample_class_maps


def predict_clean(
    segmenter: Any, image: np.ndarray, device: str = "cpu", *, image_key: str = "?"
) -> np.ndarray:
    """(H, W) argmax of a segmenter on the clean (3, H, W) [0, 1] image (no noise).

    NonFiniteOutputError (naming the segmenter and image_key) when the logits hold NaN or inf.
    """
    import torch

    from certseg.sampling import check_finite

    with torch.inference_mode():
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
        logits = segmenter(batch)
        check_finite(
            logits,
            model=f"segmenter {getattr(segmenter, 'name', type(segmenter).__name__)!r}",
            where=f"the clean image {image_key!r} (no noise)",
        )
        prediction: np.ndarray = logits.argmax(dim=1)[0].cpu().numpy()
    return prediction


def draw_block(
    ctx: RunContext,
    models: Models,
    sampler: Sampler,
    example: Example,
    *,
    sigma: float,
    group: str,
    segmenters: Sequence[str],
    phase: str,
    start: int,
    count: int,
    batch_size: int | None = None,
) -> Mapping[str, np.ndarray]:
    """Samples [start, start + count) of one image in `phase` at σ through denoiser `group`
    ("none": no denoiser), class maps per named segmenter: {name: (count, H, W)}, in forward
    batches of batch_size (None: sampling.batch_size; see `plan_micro_batch`)."""
    return sampler(
        example.image,
        image_key=example.image_id,
        phase=phase,
        start=start,
        count=count,
        sigma=sigma,
        seed=ctx.config.seed,
        denoiser=None if group == "none" else models.denoisers[group],
        segmenters={name: models.segmenters[name] for name in segmenters},
        batch_size=ctx.config.sampling.batch_size if batch_size is None else batch_size,
        device=models.device,
        autocast_dtype=models.autocast_dtype,
    )


def open_run_dataset(ctx: RunContext) -> SegmentationDataset:
    """The dataset the config certifies (subset applied; not yet validated)."""
    from certseg.data.registry import open_dataset

    return open_dataset(ctx.config.dataset.resolved(ctx.base_dir))


class _ModelsOnDemand:
    """The run's models, loaded on first use: a shard with nothing missing loads none."""

    def __init__(self, ctx: RunContext, models: Models | None, store: SampleStore) -> None:
        self.ctx = ctx
        self.models = models
        self.store = store
        self.checked = False

    def get(self) -> Models:
        if self.models is None:
            self.models = load_models(self.ctx)
        if not self.checked:  # a worker on another kind of machine may resolve bf16 otherwise
            precision = sampling_precision(self.models)
            check_sampling_precision(self.store.url, self.store.attrs, precision)
            stream = noise_stream(self.models.device)
            check_noise_stream(self.store.url, self.store.attrs, stream)
            self.checked = True
        return self.models


def plan_micro_batch(
    ctx: RunContext,
    models: Models,
    example: Example,
    *,
    sigma: float,
    group: str,
    segmenters: Sequence[str],
    max_pixels: int,
) -> int:
    """The forward batch for denoiser `group` and `segmenters`: sampling.batch_size, lowered so
    a batch of the largest frame (max_pixels) fits sampling.memory_mib. One sample of `example`
    is measured (`certseg.sampling.measure_sample_bytes`) and scaled to max_pixels;
    MemoryBudgetError before anything is drawn when one sample does not fit. The class maps do
    not depend on the batch (keyed noise), so neither do the stored samples."""
    from certseg.sampling import measure_sample_bytes, micro_batch_size

    height, width = example.image.shape[-2:]
    measured = measure_sample_bytes(
        example.image,
        image_key=example.image_id,
        seed=ctx.config.seed,
        sigma=sigma,
        denoiser=None if group == "none" else models.denoisers[group],
        segmenters={name: models.segmenters[name] for name in segmenters},
        device=models.device,
        autocast_dtype=models.autocast_dtype,
    )
    scaled = measured * max(1.0, max_pixels / (int(height) * int(width)))
    return micro_batch_size(
        ctx.config.sampling.batch_size,
        int(scaled),
        ctx.config.sampling.memory_mib * 2**20,
        what=(
            f"{int(height)}x{int(width)} (largest frame {max_pixels} pixels) through denoiser "
            f"group {group!r} and segmenters {list(segmenters)}"
        ),
    )


def write_block(
    store: SampleStore,
    maps: Mapping[str, np.ndarray],
    *,
    sigma: float,
    group: str,
    phase: str,
    image: int,
    block: int,
    start: int,
) -> None:
    """Write one sample block: each variant's (count, H, W) class maps (variant → maps) to its
    chunk, then the block's completion flag (only after every write returned)."""
    for variant, variant_maps in maps.items():
        store.write_samples(sigma, variant, phase, image, start, variant_maps)
    store.mark_done(sigma, group, phase, image, block)


def sample_shard(
    ctx: RunContext,
    shard: Shard,
    *,
    models: Models | None = None,
    sampler: Sampler | None = None,
    progress: Progress | None = None,
    writer_depth: int = 1,
) -> ShardReport:
    """Sample every missing block of the images in `shard` and write them to the store.

    models: loaded on first need when None (a shard with nothing missing loads none).
    sampler: `certseg.sampling.sample_class_maps` by default. progress: see `Progress`.
    Each drawn block goes to a background writer (certseg.storage.writer.BlockWriter) that
    writes its variants' chunks and then its flag while the next block is drawn; at most
    writer_depth drawn blocks are not yet written (0: write in this thread). The store's bytes
    are the same either way; an error of a write is raised here; a kill leaves the blocks not
    yet written unflagged. The forward batch is `plan_micro_batch`'s (sampling.memory_mib).
    """
    config = ctx.config
    store = SampleStore.open(
        ctx.store_url, storage_options=ctx.storage_options, config_id=ctx.config_id
    )
    sampler = sampler or default_sampler()
    dataset = open_run_dataset(ctx)
    positions = {image_id: i for i, image_id in enumerate(dataset.image_ids())}
    on_demand = _ModelsOnDemand(ctx, models, store)
    sampled = skipped = samples = not_needed = 0
    seconds = 0.0
    per_sigma: dict[str, dict[str, float]] = {}
    max_pixels = int(np.prod(store.image_shapes, axis=1).max())
    # (denoiser group, segmenters) → forward batch, measured on first need
    micro_batches: dict[tuple[str, tuple[str, ...]], int] = {}
    with BlockWriter(writer_depth) as writer:
        for image in range(shard.start, shard.stop):
            image_id = store.image_ids[image]
            if image_id not in positions:
                raise ValueError(
                    f"image {image_id!r} of store {redact_url(ctx.store_url)!r} is not in the "
                    f"dataset {dataset.name!r} any more"
                )
            example: Example | None = None
            for name in config.used_segmenters():
                if not store.clean_done(name, image):
                    example = example or dataset.load(positions[image_id])
                    active = on_demand.get()
                    prediction = predict_clean(
                        active.segmenters[name], example.image, active.device, image_key=image_id
                    )
                    store.write_clean(name, image, prediction)
            for sigma in config.sigmas:
                stats = per_sigma.setdefault(sigma_key(sigma), {"samples": 0.0, "seconds": 0.0})
                for group, variant_names in config.denoiser_groups().items():
                    wiring = {v: config.variant(v).segmenter_for(sigma) for v in variant_names}
                    segmenters = sorted(set(wiring.values()))
                    looks = (
                        GroupLooks(store, config, sigma, tuple(variant_names), image)
                        if store.looks
                        else None
                    )
                    # every variant's stopping look recorded: the group is decided (resume)
                    decided = looks.recorded_end() if looks is not None else None
                    if looks is not None and decided is not None:
                        writer.submit(functools.partial(looks.mark_not_needed, group, decided))
                        looks = None  # nothing to count: only draw what may be missing

                    for phase in PHASES_STORED:
                        done = store.done_blocks(sigma, group, phase, image)
                        blocks = store.blocks(phase)
                        if decided is not None and phase == "estimation":
                            skipped += len(blocks)  # sampled up to the stop, then not needed
                            for start, stop in blocks:
                                if progress is not None:
                                    progress(stop - start, True)
                            continue
                        for block, (start, stop) in enumerate(blocks):
                            if done[block]:
                                skipped += 1
                                if progress is not None:
                                    progress(stop - start, True)
                                if looks is None:
                                    continue
                                by_variant = looks.read(phase, start, stop)
                            else:
                                example = example or dataset.load(positions[image_id])
                                batch_key = (group, tuple(segmenters))
                                if batch_key not in micro_batches:
                                    micro_batches[batch_key] = plan_micro_batch(
                                        ctx,
                                        on_demand.get(),
                                        example,
                                        sigma=sigma,
                                        group=group,
                                        segmenters=segmenters,
                                        max_pixels=max_pixels,
                                    )
                                began = time.perf_counter()
                                maps = draw_block(
                                    ctx,
                                    on_demand.get(),
                                    sampler,
                                    example,
                                    sigma=sigma,
                                    group=group,
                                    segmenters=segmenters,
                                    phase=phase,
                                    start=start,
                                    count=stop - start,
                                    batch_size=micro_batches[batch_key],
                                )
                                elapsed = time.perf_counter() - began
                                by_variant = {v: maps[name] for v, name in wiring.items()}
                                writer.submit(
                                    functools.partial(
                                        write_block,
                                        store,
                                        by_variant,
                                        sigma=sigma,
                                        group=group,
                                        phase=phase,
                                        image=image,
                                        block=block,
                                        start=start,
                                    )
                                )
                                sampled += 1
                                samples += stop - start
                                seconds += elapsed
                                stats["samples"] += (stop - start) * len(wiring)
                                stats["seconds"] += elapsed
                                if progress is not None:
                                    progress(stop - start, False)
                            if looks is None:
                                continue
                            if looks.add(phase, by_variant, stop):  # every variant stopped
                                writer.submit(functools.partial(looks.record, group))
                                for rest_start, rest_stop in blocks[block + 1 :]:
                                    not_needed += 1
                                    if progress is not None:
                                        progress(rest_stop - rest_start, True)
                                break
    return ShardReport(
        shard.index, sampled, skipped, samples, seconds, per_sigma, not_needed_blocks=not_needed
    )
