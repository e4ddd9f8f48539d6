"""Functions the engine tests run INSIDE the engines (Dask worker processes).

The engine processes get the repository root on PYTHONPATH (see engine_procs.engine_env), so they
import this module by the same name as the tests do (tests.engines.engine_jobs).

The stored "predictions" are synthetic but structured like real ones: each sample is the target
with a per-pixel flip probability in [0, 0.6), so some pixels certify and others abstain.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from certseg.storage import SampleStore, StoreTemplate, sigma_key

NUM_CLASSES = 3
IGNORE = 255


def toy_template(
    config_id: str = "c" * 64,
    *,
    shapes: tuple[tuple[int, int], ...] = ((5, 7), (6, 4), (5, 5), (3, 8)),
    sigmas: tuple[float, ...] = (0.25,),
    n0: int = 2,
    n: int = 4,
    samples_per_chunk: int = 2,
) -> StoreTemplate:
    """A store template: images of different sizes, one variant "plain" (segmenter "seg")."""
    return StoreTemplate(
        config_id=config_id,
        config_json="{}",
        code_version="engine-test",
        manifest_sha256="m" * 64,
        dataset_name="toy",
        image_ids=tuple(f"img-{i}" for i in range(len(shapes))),
        image_shapes=shapes,
        num_classes=NUM_CLASSES,
        class_names=("x", "y", "z"),
        ignore_index=IGNORE,
        sigmas=sigmas,
        variants=("plain",),
        variant_segmenters={"plain": {sigma_key(s): "seg" for s in sigmas}},
        groups={"none": ("plain",)},
        n0=n0,
        n=n,
        samples_per_chunk=samples_per_chunk,
    )


def toy_targets(template: StoreTemplate) -> list[np.ndarray]:
    """(H, W) int32 targets in [0, NUM_CLASSES), a few pixels IGNORE."""
    targets = []
    for image, shape in enumerate(template.image_shapes):
        rng = np.random.default_rng([11, image])
        target = rng.integers(0, NUM_CLASSES, size=shape).astype(np.int32)
        target[rng.random(shape) < 0.1] = IGNORE
        targets.append(target)
    return targets


def sample_block(
    target: np.ndarray, image: int, sigma: float, phase: str, start: int, count: int
) -> np.ndarray:
    """(count, H, W) uint8 class maps of samples [start, start+count): a pure function of them."""
    base = np.where(target == IGNORE, 0, target)
    flip_prob = np.random.default_rng([image, 7]).uniform(0.0, 0.6, size=target.shape)
    rng = np.random.default_rng([image, round(sigma * 1000), phase == "estimation", start])
    flips = rng.random((count, *target.shape)) < flip_prob
    other = (base + rng.integers(1, NUM_CLASSES, size=(count, *target.shape))) % NUM_CLASSES
    maps: np.ndarray = np.where(flips, other, base).astype(np.uint8)
    return maps


def clean_prediction(target: np.ndarray, image: int) -> np.ndarray:
    """(H, W) uint8: the target with 10% of pixels moved to another class."""
    base = np.where(target == IGNORE, 0, target)
    rng = np.random.default_rng([image, 13])
    wrong = rng.random(target.shape) < 0.1
    prediction: np.ndarray = np.where(wrong, (base + 1) % NUM_CLASSES, base).astype(np.uint8)
    return prediction


def write_image(url: str, storage_options: dict[str, Any], image: int) -> tuple[int, int]:
    """Open the store by URL and write all of one image: every sample block of every σ and
    phase (then its completion flag) and the clean prediction. Returns (image, writer's PID)."""
    store = SampleStore.open(url, storage_options=storage_options)
    target = store.read_target(image)
    for sigma in store.sigmas:
        for phase in ("selection", "estimation"):
            for block, (start, stop) in enumerate(store.blocks(phase)):
                maps = sample_block(target, image, sigma, phase, start, stop - start)
                store.write_samples(sigma, "plain", phase, image, start, maps)
                store.mark_done(sigma, "none", phase, image, block)
    store.write_clean("seg", image, clean_prediction(target, image))
    return image, os.getpid()


def executed_count(dask_worker: Any) -> int:
    """Tasks this Dask worker has executed so far (for `Client.run`)."""
    return int(dask_worker.state.executed_count)


def task_prefixes(dask_scheduler: Any) -> list[str]:
    """Names of every task prefix the Dask scheduler has seen (for `Client.run_on_scheduler`)."""
    return sorted(dask_scheduler.task_prefixes)
