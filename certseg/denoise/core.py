"""A diffusion denoiser for denoised smoothing: diffusers UNet + scheduler, one-shot or k-step DDIM.

docs/method.md §2: the input x̃ is in [0, 1] units with Gaussian noise of std σ already added (never
clipped). y = 2x̃ − 1 carries noise std 2σ; an optional resize to the denoiser's resolution scales
it by the resize's attenuation a; t* is the smallest t with sqrt((1 − ᾱ_t)/ᾱ_t) ≥ 2σa (or the
"laousy2023" rule); x_t = sqrt(ᾱ_t*)·y (no noise is added); one-shot x̂₀ from the model's output
(epsilon / v_prediction / sample; 2C-channel learned-variance outputs keep the first C), clipped to
[−1, 1], resized back and mapped to [0, 1].

mode "tiled" (instead of "resize"): no resize at all; the image is denoised at its own resolution
in overlapping tiles of the UNet's size (`plan_tiles`), each tile's x̂₀ (and, between DDIM steps,
ε̂) blended with a fixed window whose weights sum to one at every pixel; t* is matched to the
un-resized noise (attenuation 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from certseg.denoise.tiles import TilePlan, mirror_indices, plan_tiles
from certseg.errors import NonFiniteOutputError
from certseg.noise import (
    DENOISE_MODES,
    TIMESTEP_RULES,
    from_model_range,
    resize_attenuation,
    resize_images,
    timestep_for_sigma,
    to_model_range,
)

if TYPE_CHECKING:
    import torch

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def ddim_timesteps(t_star: int, num_steps: int) -> list[int]:
    """The k = num_steps descending timesteps of the deterministic reverse process from t*.

    round(linspace(t*, 0, k + 1))[:-1], duplicates removed (so fewer than k when t* < k); the
    last step jumps to the clean image (ᾱ = 1). With k = 1 this is the one-shot x̂₀ at t*.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if t_star < 0:
        raise ValueError(f"t_star must be >= 0, got {t_star}")
    grid = np.rint(np.linspace(t_star, 0, num_steps + 1)[:-1]).astype(int)
    return sorted({int(t) for t in grid}, reverse=True)


def _resolution(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        pair: tuple[int, ...] = (value, value)
    else:
        pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"resolution must be an int or (height, width) > 0, got {value!r}")
    return pair[0], pair[1]


class DiffusionDenoiser:
    """Denoise x̃ = x + σε ([0, 1] units) with a diffusion model at the timestep matching σ.

    unet: a diffusers UNet2DModel (or any module called as unet(x, t).sample / returning a tensor)
    whose input has C channels and output C or 2C channels. scheduler: a diffusers scheduler with
    `alphas_cumprod` (T,) and `config.prediction_type`. resolution: run the UNet at this (H, W)
    (or square int) — y is resized there and back by certseg.noise.resize_images (antialiased
    bilinear); None runs at the input size. timestep_rule: "matched" or "laousy2023".
    num_steps: 1 = one-shot x̂₀; k > 1 = deterministic DDIM (eta = 0) from t* to 0 in k steps.
    mode: "resize" (above) or "tiled": `resolution` is the tile size, the image is never resized
    (t* for attenuation 1) and is denoised in tiles overlapping by `tile_overlap` (a fraction of
    the tile side, `plan_tiles`); every UNet call takes one tile position of every sample of the
    batch, so one image costs tiles × num_steps UNet passes per sample. An image smaller than the
    tile along an axis is mirror-padded to it (one tile) and cropped back. At the tile's own size
    "tiled" and "resize" give bit-identical outputs (one tile of weight exactly 1).
    autocast_dtype: e.g. torch.bfloat16 to run the UNet under torch.autocast; the output is
    always float32.
    path: where the weights came from (for lineage; not read).
    """

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        *,
        resolution: int | Sequence[int] | None = None,
        timestep_rule: str = "matched",
        num_steps: int = 1,
        mode: str = "resize",
        tile_overlap: float = 0.25,
        autocast_dtype: torch.dtype | None = None,
        path: str | Path | None = None,
    ) -> None:
        if timestep_rule not in TIMESTEP_RULES:
            raise ValueError(
                f"timestep_rule must be one of {TIMESTEP_RULES}, got {timestep_rule!r}"
            )
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        if mode not in DENOISE_MODES:
            raise ValueError(f"mode must be one of {DENOISE_MODES}, got {mode!r}")
        if mode == "tiled" and resolution is None:
            raise ValueError(
                "mode 'tiled' needs resolution: the tile size, the UNet's input (H, W) "
                "(e.g. its config.sample_size)"
            )
        if not 0.0 <= tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be a fraction in [0, 1), got {tile_overlap!r}")
        alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise ValueError(
                "scheduler must expose alphas_cumprod (a diffusers DDPM/DDIM scheduler)"
            )
        prediction_type = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"scheduler prediction_type must be one of {PREDICTION_TYPES}, got "
                f"{prediction_type!r}"
            )
        if hasattr(alphas_cumprod, "detach"):
            alphas_cumprod = alphas_cumprod.detach().cpu().double().numpy()
        self.alphas_cumprod: np.ndarray = np.asarray(alphas_cumprod, dtype=np.float64)
        self.unet = unet.eval() if hasattr(unet, "eval") else unet
        self.scheduler = scheduler
        self.prediction_type: str = prediction_type
        self.resolution = _resolution(resolution)
        self.timestep_rule = timestep_rule
        self.num_steps = num_steps
        self.mode = mode
        self.tile_overlap = float(tile_overlap)
        self.autocast_dtype = autocast_dtype
        self.path = None if path is None else Path(path)
        self._timesteps: dict[tuple[float, float], int] = {}
        self._attenuations: dict[tuple[int, int], float] = {}
        self._plans: dict[tuple[int, int], TilePlan] = {}

    @property
    def in_channels(self) -> int:
        """Channels the UNet expects (3 for RGB)."""
        config = getattr(self.unet, "config", None)
        return int(getattr(config, "in_channels", 3))

    def to(self, device: torch.device | str) -> DiffusionDenoiser:
        """Move the UNet to `device` (in place); returns self."""
        self.unet.to(device)
        return self

    def attenuation(self, in_hw: tuple[int, int]) -> float:
        """Noise-std attenuation of the resize from in_hw to the denoiser resolution (1 if none;
        always 1 in mode "tiled", which never resizes)."""
        if self.mode == "tiled" or self.resolution is None or tuple(in_hw) == self.resolution:
            return 1.0
        key = (int(in_hw[0]), int(in_hw[1]))
        if key not in self._attenuations:
            self._attenuations[key] = resize_attenuation(key, self.resolution)
        return self._attenuations[key]

    def timestep(self, sigma: float, attenuation: float = 1.0) -> int:
        """t* for noise std σ ([0, 1] units) after a resize of std factor `attenuation` (cached)."""
        key = (float(sigma), float(attenuation))
        if key not in self._timesteps:
            self._timesteps[key] = timestep_for_sigma(
                self.alphas_cumprod, sigma, attenuation=attenuation, rule=self.timestep_rule
            )
        return self._timesteps[key]

    def timestep_for_input(self, sigma: float, in_hw: tuple[int, int]) -> int:
        """t* used for inputs of spatial size in_hw at noise σ."""
        return self.timestep(sigma, self.attenuation(in_hw))

    def tile_plan(self, in_hw: tuple[int, int]) -> TilePlan:
        """The TilePlan of mode "tiled" for inputs of spatial size in_hw (cached)."""
        if self.resolution is None:
            raise ValueError("tile_plan needs a resolution (the tile size)")
        key = (int(in_hw[0]), int(in_hw[1]))
        if key not in self._plans:
            self._plans[key] = plan_tiles(key, self.resolution, self.tile_overlap)
        return self._plans[key]

    def unet_passes(self, in_hw: tuple[int, int], sigma: float) -> int:
        """UNet forward passes per sample for an input of size in_hw at σ: the DDIM steps
        actually taken (≤ num_steps), times the tiles in mode "tiled"."""
        steps = len(ddim_timesteps(self.timestep_for_input(sigma, in_hw), self.num_steps))
        if self.mode == "tiled":
            return steps * len(self.tile_plan(in_hw).origins)
        return steps

    def _model_output(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        import torch

        steps = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x_t.device.type, dtype=self.autocast_dtype):
                out = self.unet(x_t, steps)
        else:
            out = self.unet(x_t, steps)
        out = getattr(out, "sample", out)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"unet returned {type(out).__name__}, expected a tensor or .sample")
        channels = x_t.shape[1]
        if out.shape[1] == 2 * channels:
            out = out[:, :channels]  # learned variance: [mean-part, variance-part]
        elif out.shape[1] != channels:
            raise ValueError(
                f"unet output has {out.shape[1]} channels; expected {channels} or {2 * channels}"
            )
        out = out.float()
        if not bool(torch.isfinite(out).all()):
            bad = (~torch.isfinite(out)).flatten(1).any(dim=1).nonzero().flatten().tolist()
            raise NonFiniteOutputError(
                f"the UNet output at timestep {t} is not finite for batch items {bad}",
                items=tuple(int(i) for i in bad),
            )
        return out

    def predict(self, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, ε̂) at timestep t from the model output, per the scheduler's prediction type.

        x_t: (B, C, h, w) in [−1, 1] units, scaled as sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε. No clipping.
        """
        out = self._model_output(x_t, t)
        a = float(self.alphas_cumprod[t])
        sa, sb = math.sqrt(a), math.sqrt(1.0 - a)
        if self.prediction_type == "epsilon":
            return (x_t - sb * out) / sa, out
        if self.prediction_type == "v_prediction":
            return sa * x_t - sb * out, sa * out + sb * x_t
        return out, (x_t - sa * out) / sb

    def denoise(self, noisy: torch.Tensor, sigma: float) -> torch.Tensor:
        """Denoise a batch: (B, C, H, W) x̃ in [0, 1] units (noise std σ, unclipped) → (B, C, H, W)
        x̂ in [0, 1] units, float32, on the input's device. Gradient-free; works under
        torch.inference_mode. NonFiniteOutputError (with the batch items) when the UNet output
        holds a NaN or ±inf at any step (checked before the clamp, which would hide an inf).
        """
        import torch

        if noisy.ndim != 4 or noisy.shape[1] != self.in_channels:
            raise ValueError(
                f"noisy must be (B, {self.in_channels}, H, W), got {tuple(noisy.shape)}"
            )
        in_hw = (int(noisy.shape[-2]), int(noisy.shape[-1]))
        with torch.no_grad():
            y = to_model_range(noisy.float())
            if self.mode == "tiled":
                x0 = self._denoise_tiled(y, sigma, in_hw)
            else:
                if self.resolution is not None and in_hw != self.resolution:
                    y = resize_images(y, self.resolution)
                x0 = self._reverse(y, self.timestep_for_input(sigma, in_hw))
                if x0.shape[-2:] != noisy.shape[-2:]:
                    x0 = resize_images(x0, in_hw)
            result: torch.Tensor = from_model_range(x0).clamp(0.0, 1.0)
        return result

    def _reverse(self, y: torch.Tensor, t_star: int) -> torch.Tensor:
        """x̂₀ (clipped to [−1, 1]) of y ([−1, 1] units, noise matched to t*): one-shot or DDIM."""
        x = math.sqrt(float(self.alphas_cumprod[t_star])) * y
        steps = ddim_timesteps(t_star, self.num_steps)
        x0 = x
        for i, t in enumerate(steps):
            x0, eps = self.predict(x, t)
            x0 = x0.clamp(-1.0, 1.0)
            if i + 1 < len(steps):
                a_prev = float(self.alphas_cumprod[steps[i + 1]])
                x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
        return x0

    def _denoise_tiled(self, y: torch.Tensor, sigma: float, in_hw: tuple[int, int]) -> torch.Tensor:
        """x̂₀ of y ((B, C, H, W), [−1, 1] units) denoised in tiles at full resolution.

        Each DDIM step runs the UNet once per tile position on that tile of every sample, clips
        each tile's x̂₀ and blends x̂₀ and ε̂ with the plan's weights (which sum to one at every
        pixel, so the blended x̂₀ stays in [−1, 1]); the next x_t is formed from the blended
        x̂₀ and ε̂ over the whole image, so overlapping tiles agree at every step.
        """
        import torch

        plan = self.tile_plan(in_hw)
        (h, w), (ph, pw), (th, tw) = plan.image_hw, plan.padded_hw, plan.tile_hw
        if (ph, pw) != (h, w):
            rows = torch.as_tensor(mirror_indices(h, ph), device=y.device)
            cols = torch.as_tensor(mirror_indices(w, pw), device=y.device)
            y = y.index_select(-2, rows).index_select(-1, cols)
        weights = torch.as_tensor(plan.weights, dtype=torch.float32, device=y.device)
        t_star = self.timestep(sigma, 1.0)
        x = math.sqrt(float(self.alphas_cumprod[t_star])) * y
        steps = ddim_timesteps(t_star, self.num_steps)
        x0 = x
        for i, t in enumerate(steps):
            last = i + 1 == len(steps)
            x0 = torch.zeros_like(x)
            eps = None if last else torch.zeros_like(x)
            for (top, left), weight in zip(plan.origins, weights, strict=True):
                window = (slice(None), slice(None), slice(top, top + th), slice(left, left + tw))
                tile_x0, tile_eps = self.predict(x[window].contiguous(), t)
                x0[window] += weight * tile_x0.clamp(-1.0, 1.0)
                if eps is not None:
                    eps[window] += weight * tile_eps
            if eps is not None:
                a_prev = float(self.alphas_cumprod[steps[i + 1]])
                x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
        return x0[..., :h, :w]

    __call__ = denoise
