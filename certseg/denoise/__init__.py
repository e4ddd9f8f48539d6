"""A diffusion denoiser for denoised smoothing: diffusers UNet + scheduler, one-shot or k-step DDIM.

How the noisy input becomes x̂₀ (units, t*, one-shot, DDIM, resize or tiles) is stated once,
in `core`'s docstring, after docs/method.md §2.

The package, one job per module: `core` (`DiffusionDenoiser`: σ → t*, x̂₀ per prediction type,
DDIM, resize or tiled), `tiles` (the tiled mode's tile plan and blend window), `load`
(`load_denoiser`: diffusers folder or ADM checkpoint, scheduler checks). Every name is importable
from certseg.denoise.
"""

from __future__ import annotations

from certseg.denoise.core import PREDICTION_TYPES, DiffusionDenoiser, ddim_timesteps
from certseg.denoise.load import SCHEDULER_CLASSES, load_denoiser
from certseg.denoise.tiles import (
    WINDOW_FLOOR,
    TilePlan,
    blend_window,
    mirror_indices,
    plan_tiles,
    tile_starts,
)

__all__ = [
    "PREDICTION_TYPES",
    "SCHEDULER_CLASSES",
    "WINDOW_FLOOR",
    "DiffusionDenoiser",
    "TilePlan",
    "blend_window",
    "ddim_timesteps",
    "load_denoiser",
    "mirror_indices",
    "plan_tiles",
    "tile_starts",
]
