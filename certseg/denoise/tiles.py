"""The tiled mode's geometry: where the tiles of an image go (`plan_tiles`, `tile_starts`), the
blend window whose placed weights sum to one at every pixel, and mirror padding of short axes.

Pure numpy: no torch, no model. certseg.denoise.core runs the UNet on the tiles of a `TilePlan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WINDOW_FLOOR = 0.05
"""The blend window's least weight (relative to its peak 1): a tile's edge pixels keep some
weight, so every covered pixel has a positive total weight."""


def blend_window(length: int) -> np.ndarray:
    """(length,) float64 1-D blend window: max(sin²(π(i + ½)/length), WINDOW_FLOOR), i.e. a Hann
    window sampled at pixel centres (symmetric, peak ≈ 1 in the middle), floored at the edges.
    A tile's 2-D window is the outer product of its two axes' windows."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    centres = (np.arange(length, dtype=np.float64) + 0.5) / length
    window: np.ndarray = np.maximum(np.sin(np.pi * centres) ** 2, WINDOW_FLOOR)
    return window


def tile_starts(length: int, tile: int, overlap: float) -> tuple[int, ...]:
    """Start offsets of the tiles along one axis of `length` pixels, tiles of `tile` pixels.

    length ≤ tile: one tile at 0 (the axis is padded to `tile` when shorter, see `plan_tiles`).
    Otherwise the fewest tiles whose neighbours overlap by at least o = min(round(overlap·tile),
    tile − 1) pixels, spread evenly: count = ceil((length − tile)/(tile − o)) + 1, start_i =
    round(i·(length − tile)/(count − 1)); the first starts at 0, the last ends at `length`.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be >= 1, got length={length}, tile={tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a fraction of the tile in [0, 1), got {overlap}")
    if length <= tile:
        return (0,)
    step = tile - min(round(overlap * tile), tile - 1)
    count = math.ceil((length - tile) / step) + 1
    return tuple(int(v) for v in np.rint(np.linspace(0, length - tile, count)))


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image size go and how they are blended.

    image_hw: the image's (H, W). padded_hw: (max(H, th), max(W, tw)) — an axis shorter than the
    tile is extended by mirror reflection to the tile's length and cropped back after denoising.
    tile_hw: (th, tw). origins: (top, left) of each tile in the padded image, row-major.
    weights: (len(origins), th, tw) float64, each tile's window divided by the sum of all placed
    windows at that pixel: at every pixel of the padded image the weights of the tiles covering it
    are > 0 and sum to one (up to float rounding; exactly 1.0 where one tile covers a pixel).
    """

    image_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    tile_hw: tuple[int, int]
    origins: tuple[tuple[int, int], ...]
    weights: np.ndarray

    def blend(self, tiles: np.ndarray) -> np.ndarray:
        """Σ_k weights[k]·tiles[k] placed at origins[k]: (K, ..., th, tw) → (..., *padded_hw)."""
        th, tw = self.tile_hw
        out = np.zeros((*tiles.shape[1:-2], *self.padded_hw), dtype=np.float64)
        for (top, left), weight, tile in zip(self.origins, self.weights, tiles, strict=True):
            out[..., top : top + th, left : left + tw] += weight * tile
        return out


def plan_tiles(image_hw: Sequence[int], tile_hw: Sequence[int], overlap: float) -> TilePlan:
    """The TilePlan of an image of size image_hw in tiles of tile_hw overlapping by `overlap`
    (a fraction of the tile side, in [0, 1); see `tile_starts`). Every pixel is covered."""
    h, w = (int(v) for v in image_hw)
    th, tw = (int(v) for v in tile_hw)
    if min(h, w, th, tw) < 1:
        raise ValueError(f"image and tile sizes must be >= 1, got {image_hw!r} and {tile_hw!r}")
    padded = (max(h, th), max(w, tw))
    tops = tile_starts(padded[0], th, overlap)
    lefts = tile_starts(padded[1], tw, overlap)
    origins = tuple((top, left) for top in tops for left in lefts)
    window = np.outer(blend_window(th), blend_window(tw))
    total = np.zeros(padded, dtype=np.float64)
    for top, left in origins:
        total[top : top + th, left : left + tw] += window
    weights = np.stack([window / total[top : top + th, left : left + tw] for top, left in origins])
    return TilePlan((h, w), padded, (th, tw), origins, weights)


def mirror_indices(length: int, padded: int) -> np.ndarray:
    """(padded,) indices into an axis of `length` pixels that extend it by mirror reflection
    (edge pixel not repeated: 0 1 2 1 0 1 2 …; a 1-pixel axis repeats it)."""
    if length < 1 or padded < length:
        raise ValueError(f"need 1 <= length <= padded, got length={length}, padded={padded}")
    if length == 1:
        return np.zeros(padded, dtype=np.int64)
    period = 2 * (length - 1)
    index = np.arange(padded) % period
    return np.where(index < length, index, period - index).astype(np.int64)
