"""Loading a denoiser from local files: a diffusers folder (UNet2DModel + a DDPM/DDIM scheduler,
each checked and named in every error) or an ADM .pt checkpoint, into a `DiffusionDenoiser`.

The files are data: nothing in them is run (safetensors preferred, a .bin only through
torch.load(weights_only=True), the scheduler built from plain JSON); nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from certseg.denoise.core import DiffusionDenoiser
from certseg.errors import ModelFileError, loader_reason

if TYPE_CHECKING:
    import torch


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
