"""Functions the engine tests run INSIDE the engines (Dask workers, Prefect flow runs).

The engine processes get this directory on PYTHONPATH (see conftest.engine_env), so they import
this module by the same name as the tests do; the test modules themselves are not importable there.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from certseg.storage import SampleStore


def block_maps(
    image: int, sigma: float, phase: str, start: int, shape: tuple[int, int]
) -> np.ndarray:
    """Deterministic (2, H, W) class maps for one sample block (a pure function of the region)."""
    seed = [image, int(sigma * 100), 0 if phase == "selection" else 1, start]
    return np.random.default_rng(seed).integers(0, 3, size=(2, *shape)).astype(np.uint8)


def write_image(url: str, storage_options: dict[str, Any], image: int) -> tuple[int, int]:
    """Open the store by URL and write every block of one image (run inside a Dask worker)."""
    store = SampleStore.open(url, storage_options=storage_options)
    shape = tuple(int(v) for v in store.image_shapes[image])
    for sigma in store.sigmas:
        for phase in ("selection", "estimation"):
            for block, (start, _stop) in enumerate(store.blocks(phase)):
                maps = block_maps(image, sigma, phase, start, (shape[0], shape[1]))
                store.write_samples(sigma, "plain", phase, image, start, maps)
                store.mark_done(sigma, "none", phase, image, block)
    return image, os.getpid()
