"""certseg: certified semantic segmentation by randomized smoothing with a diffusion denoiser."""

from __future__ import annotations

__version__ = "0.1.0"
