"""A diffusion denoiser for denoised smoothing: diffusers UNet + scheduler, one-shot or k-step DDIM.

METHOD.md §2: the input x̃ is in [0, 1] units with Gaussian noise of std σ already added (never
clipped). y = 2x̃ − 1 carries noise std 2σ; an optional resize to the denoiser's resolution scales
it by the resize's attenuation a; t* is the smallest t with sqrt((1 − ᾱ_t)/ᾱ_t) ≥ 2σa (or the
"laousy2023" rule); x_t = sqrt(ᾱ_t*)·y (no noise is added); one-shot x̂₀ from the model's output
(epsilon / v_prediction / sample; 2C-channel learned-variance outputs keep the first C), clipped to
[−1, 1], resized back and mapped to [0, 1].

mode "tiled" (instead of "resize"): no resize at all; the image is denoised at its own resolution
in overlapping tiles of the UNet's size (`plan_tiles`), each tile's x̂₀ (and, between DDIM steps,
ε̂) blended with a fixed window whose weights sum to one at every pixel; t* is matched to the
un-resized noise (attenuation 1).

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
