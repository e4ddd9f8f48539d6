"""Health check: each variant's base accuracy per σ on held-out images (one noisy draw each).

Phase "health", sample 0 of each of the first health.num_images images of health.split, through
the same base classifier the certificate uses, no certificate; accuracy over valid pixels. The
result is stored per held-out image, so a re-run measures only what is missing (and loads no model
when nothing is). Each held-out image is loaded once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from certseg.config import RunConfig
from certseg.outcomes import HealthResult
from certseg.redact import redact_url
from certseg.run.context import RunContext
from certseg.run.models import Models, load_models
from certseg.run.sample import Sampler, default_sampler, draw_block
from certseg.storage import SampleStore

if TYPE_CHECKING:
    from certseg.data.base import SegmentationDataset


def open_health_dataset(ctx: RunContext) -> SegmentationDataset | None:
    """The held-out dataset: the first health.num_images of health.split (None when 0)."""
    config = ctx.config
    if config.health.num_images == 0:
        return None
    from certseg.data.registry import SubsetSpec, open_dataset

    spec = config.dataset.resolved(ctx.base_dir, split=config.health.split)
    if spec.kind == "synthetic":
        spec = dataclasses.replace(spec, num_images=config.health.num_images, subset=None)
    else:
        spec = dataclasses.replace(spec, subset=SubsetSpec(first=config.health.num_images))
    return open_dataset(spec)


def run_health_check(
    ctx: RunContext, *, models: Models | None = None, sampler: Sampler | None = None
) -> list[HealthResult]:
    """Measure what is missing of each variant's base accuracy per σ; return all of it."""
    config = ctx.config
    store = SampleStore.open(
        ctx.store_url, storage_options=ctx.storage_options, config_id=ctx.config_id
    )
    health = open_health_dataset(ctx)
    if health is None:
        return []
    pending = any(
        (store.read_health(sigma, v.name)[:, 0] < 0).any()
        for sigma in config.sigmas
        for v in config.variants
    )
    if not pending:
        return read_health_results(store, config)
    models = models or load_models(ctx)
    sampler = sampler or default_sampler()
    # The store's health ids are the validated set (skip_invalid may have dropped items):
    # find each by id, as sample_shard does, never by position in the unvalidated dataset.
    positions = {image_id: i for i, image_id in enumerate(health.image_ids())}
    for index, image_id in enumerate(store.health_ids):
        if image_id not in positions:
            raise ValueError(
                f"health image {image_id!r} of store {redact_url(ctx.store_url)!r} is not in the "
                f"dataset {health.name!r} any more"
            )
        example = None
        for sigma in config.sigmas:
            for group, variant_names in config.denoiser_groups().items():
                todo = [v for v in variant_names if store.read_health(sigma, v)[index, 0] < 0]
                if not todo:
                    continue
                example = example or health.load(positions[image_id])
                wiring = {v: config.variant(v).segmenter_for(sigma) for v in todo}
                maps = draw_block(
                    ctx,
                    models,
                    sampler,
                    example,
                    sigma=sigma,
                    group=group,
                    segmenters=sorted(set(wiring.values())),
                    phase="health",
                    start=0,
                    count=1,
                )
                valid_mask = example.target != health.ignore_index
                for variant, segmenter_name in wiring.items():
                    prediction = np.asarray(maps[segmenter_name])[0]
                    correct = int(((prediction == example.target) & valid_mask).sum())
                    store.write_health(
                        sigma, variant, index, correct=correct, valid=int(valid_mask.sum())
                    )
    return read_health_results(store, config)


def read_health_results(store: SampleStore, config: RunConfig) -> list[HealthResult]:
    """The stored health-check results per (σ, variant) (NaN accuracy where not run)."""
    results = []
    for sigma in config.sigmas:
        for variant in config.variants:
            rows = store.read_health(sigma, variant.name)
            ran = rows[rows[:, 0] >= 0] if rows.size else rows
            correct = int(ran[:, 0].sum()) if ran.size else 0
            valid = int(ran[:, 1].sum()) if ran.size else 0
            accuracy = correct / valid if valid else float("nan")
            results.append(
                HealthResult(
                    sigma=sigma,
                    variant=variant.name,
                    accuracy=accuracy,
                    correct=correct,
                    valid=valid,
                    num_images=len(ran),
                    floor=config.health.floor,
                )
            )
    return results
