"""Cityscapes-size frames for the scale and store benchmarks, made of the shipped synthetic scenes.

There is no Cityscapes data on this machine, so a frame of H×W (1024×2048 by default) is a mosaic
of distinct synthetic test scenes (`certseg.data.synthetic`, `tile`×`tile` pixels each, objects
~6–15 px radius at 64×64, so ~24–60 px at 256), and its class maps are what the shipped compact
segmenter (weights/segmenter-clean, 7 classes) predicts on the whole frame under per-sample noise,
through `certseg.sampling.sample_class_maps`. To give the maps the Cityscapes label space, each
tile's 7 classes are mapped to 7 of 19 labels by a per-tile random injection (`to_19_classes`):
a frame then uses all 19 labels, and a pixel's label still flickers only where the model's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CITYSCAPES_CLASSES = 19
SEGMENTER = REPO / "weights/segmenter-clean"
DENOISER = REPO / "weights/denoiser"


@dataclass(frozen=True)
class Frame:
    """image: (3, H, W) float32 in [0, 1]; tiles: (H, W) int32 index of the scene each pixel
    comes from (for the relabelling to 19 classes)."""

    image: np.ndarray
    tiles: np.ndarray


def mosaic_frame(height: int, width: int, tile: int, seed: int = 0) -> Frame:
    """A (3, height, width) frame of distinct tile×tile synthetic test scenes (row-major)."""
    from certseg.data.synthetic import SyntheticDataset

    if height % tile or width % tile:
        raise ValueError(f"frame {height}x{width} is not a whole number of {tile}-pixel tiles")
    rows, cols = height // tile, width // tile
    scenes = SyntheticDataset(seed=seed, num_images=rows * cols, size=tile, split="test")
    image = np.empty((3, height, width), dtype=np.float32)
    tiles = np.empty((height, width), dtype=np.int32)
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        window = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
        image[(slice(None), *window)] = scenes.load(index).image
        tiles[window] = index
    return Frame(image, tiles)


def to_19_classes(
    maps: np.ndarray, tiles: np.ndarray, num_classes: int, seed: int = 0
) -> np.ndarray:
    """(N, H, W) uint8 maps of `num_classes` (≤ 19) model classes → 19 Cityscapes-like labels:
    class c in tile t becomes lut[t, c], lut[t] a random injection into range(19)."""
    rng = np.random.default_rng(seed)
    count = int(tiles.max()) + 1
    lut = np.stack([rng.permutation(CITYSCAPES_CLASSES)[:num_classes] for _ in range(count)])
    flat = lut.astype(np.uint8).reshape(-1)
    base = (tiles.astype(np.int64) * num_classes)[None]
    return flat[base + maps.astype(np.int64)]


def load_models(denoiser_resolution: int | None) -> tuple[Any, Any]:
    """(shipped compact segmenter, shipped denoiser run at `denoiser_resolution` via resize)."""
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter

    segmenter = build_segmenter(SegmenterSpec("compact", str(SEGMENTER)))
    denoiser = load_denoiser(DENOISER, resolution=denoiser_resolution)
    return segmenter, denoiser


def model_class_maps(
    frame: Frame,
    *,
    segmenter: Any,
    denoiser: Any,
    sigma: float,
    phase: str,
    count: int,
    autocast_dtype: Any = None,
    seed: int = 0,
) -> np.ndarray:
    """(count, H, W) uint8 maps in 19 labels: the shipped segmenter (behind `denoiser`, or alone
    when None) on the frame under the keyed noise of samples 0 … count − 1 of `phase`."""
    from certseg.sampling import sample_class_maps

    maps = sample_class_maps(
        frame.image,
        image_key="bench-frame",
        phase=phase,
        start=0,
        count=count,
        sigma=sigma,
        seed=seed,
        denoiser=denoiser,
        segmenters={"seg": segmenter},
        batch_size=1,
        autocast_dtype=autocast_dtype,
    )["seg"]
    return to_19_classes(maps, frame.tiles, segmenter.num_classes)
