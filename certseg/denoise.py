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
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from certseg.errors import ModelFileError, NonFiniteOutputError, loader_reason
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


SCHEDULER_CLASSES: tuple[str, ...] = ("DDPMScheduler", "DDIMScheduler")
"""diffusers schedulers a denoiser folder may name: discrete variance-preserving schedules whose
`alphas_cumprod` (T,) the σ → timestep rule reads (x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε)."""


def _load_scheduler(folder: Path) -> Any:
    """The scheduler of a diffusers folder: a class of SCHEDULER_CLASSES built from
    scheduler_config.json (plain JSON), with a decreasing alphas_cumprod in (0, 1]."""
    import diffusers

    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        raise ModelFileError(f"scheduler folder {folder} has no scheduler_config.json")
    try:
        payload = json.loads(config_file.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{config_file} is not JSON ({error})") from error
    class_name = payload.get("_class_name", "DDPMScheduler") if isinstance(payload, dict) else None
    if class_name not in SCHEDULER_CLASSES:
        raise ModelFileError(
            f"{config_file}: scheduler class {class_name!r} is not supported; expected one of "
            f"{SCHEDULER_CLASSES} (a discrete noise schedule with alphas_cumprod)"
        )
    scheduler_class = getattr(diffusers, class_name)
    try:
        scheduler = scheduler_class.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ModelFileError(f"{config_file}: cannot build {class_name} ({error})") from error
    alphas = np.asarray(scheduler.alphas_cumprod, dtype=np.float64)
    if (
        alphas.ndim != 1
        or alphas.size < 2
        or not np.all(np.isfinite(alphas))
        or alphas.min() <= 0
        or alphas.max() > 1
        or np.any(np.diff(alphas) > 0)
    ):
        raise ModelFileError(
            f"{config_file}: {class_name} gives an alphas_cumprod that is not a decreasing "
            "schedule in (0, 1]"
        )
    return scheduler


_UNET_WEIGHTS: tuple[tuple[str, bool], ...] = (
    ("diffusion_pytorch_model.safetensors", True),
    ("diffusion_pytorch_model.safetensors.index.json", True),
    ("diffusion_pytorch_model.bin", False),
    ("diffusion_pytorch_model.bin.index.json", False),
)
"""UNet weight files in order of preference, with whether they are safetensors."""


def _load_unet(folder: Path) -> Any:
    """The diffusers UNet2DModel of `folder` (config.json + weights; safetensors preferred, a
    .bin read with weights_only=True only). ModelFileError naming the file on any failure."""
    from diffusers import UNet2DModel

    if not (folder / "config.json").is_file():
        raise ModelFileError(f"denoiser UNet folder {folder} has no config.json")
    found = [(name, safe) for name, safe in _UNET_WEIGHTS if (folder / name).is_file()]
    if not found:
        raise ModelFileError(
            f"denoiser UNet weights not found: expected {folder / _UNET_WEIGHTS[0][0]} "
            "(or a diffusion_pytorch_model.bin of tensors only)"
        )
    name, safe = found[0]
    try:
        return UNet2DModel.from_pretrained(  # type: ignore[no-untyped-call]
            str(folder), local_files_only=True, low_cpu_mem_usage=False, use_safetensors=safe
        )
    except Exception as error:
        raise ModelFileError(
            f"denoiser UNet weights {folder / name} do not load ({loader_reason(error)}); "
            "expected diffusers "
            "UNet2DModel weights (safetensors, or a .bin that torch.load(weights_only=True) "
            "accepts)"
        ) from error


def load_denoiser(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    adm_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> DiffusionDenoiser:
    """Load a DiffusionDenoiser from local files; nothing is downloaded.

    path: a diffusers folder with `unet/` (UNet2DModel: config.json and safetensors weights, or
    a .bin read with weights_only=True) and `scheduler/` (scheduler_config.json naming one of
    SCHEDULER_CLASSES) subfolders, or a single OpenAI guided-diffusion (ADM) `.pt` checkpoint
    (converted by certseg.adm; `adm_options` are passed to `certseg.adm.load_adm_checkpoint`,
    e.g. {"flags": ADMFlags(...)}; default: the 256×256 unconditional preset). options:
    DiffusionDenoiser keyword arguments (resolution, timestep_rule, num_steps, mode,
    tile_overlap, autocast_dtype). The files are data: nothing in them is run. ModelFileError
    (a ValueError) names the file when one is missing or does not load.
    """
    source = Path(path)
    if source.is_file():
        if source.suffix not in (".pt", ".pth"):
            raise ModelFileError(f"denoiser file {source} must be an ADM .pt/.pth checkpoint")
        from certseg.adm import load_adm_checkpoint

        unet, scheduler = load_adm_checkpoint(source, **dict(adm_options or {}))
    elif source.is_dir():
        for sub in ("unet", "scheduler"):
            if not (source / sub).is_dir():
                raise ModelFileError(f"denoiser folder {source} has no {sub}/ subfolder")
        scheduler = _load_scheduler(source / "scheduler")
        unet = _load_unet(source / "unet")
    else:
        raise ModelFileError(f"denoiser path {source} does not exist")
    unet = unet.to(device).eval()
    return DiffusionDenoiser(unet, scheduler, path=source, **options)
