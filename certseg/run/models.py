"""Load the run's models, each once per process: segmenters, and denoisers only when asked.

A model is cached under what determines it: its config section, resolved path, device, autocast
dtype and the size and mtime of its files — so two configs sharing a model share one copy, and a
model retrained in place (in a long-lived Dask worker) is loaded again rather than reused stale.
Preparing a store needs the segmenters only (their class count and the probe); the diffusion
denoiser is loaded by the steps that sample through it. torch is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certseg.run.context import RunContext
from certseg.run.lineage import WEIGHT_SUFFIXES
from certseg.run.resources import on_dask_worker


@dataclass
class Models:
    """Loaded models of a run: segmenters and denoisers by config key, and the autocast dtype."""

    segmenters: dict[str, Any]
    denoisers: dict[str, Any]
    autocast_dtype: Any = None
    device: str = "cpu"

    @property
    def num_classes(self) -> int:
        """The segmenters' class count (ValueError when they disagree)."""
        counts = {int(s.num_classes) for s in self.segmenters.values()}
        if len(counts) != 1:
            raise ValueError(f"segmenters disagree on num_classes: {sorted(counts)}")
        return counts.pop()


_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def resolve_autocast(ctx: RunContext) -> Any:
    """torch.bfloat16 when sampling.bf16 is true, or "auto" and the device supports it."""
    import torch

    setting = ctx.config.sampling.bf16
    if setting is False:
        return None
    if setting is True:
        return torch.bfloat16
    from certseg.sampling import bf16_supported

    return torch.bfloat16 if bf16_supported(ctx.config.sampling.device) else None


def sampling_precision(models: Models) -> str:
    """ "bf16" when the models run under bf16 autocast, else "fp32" (recorded in the store)."""
    return "fp32" if models.autocast_dtype is None else "bf16"


def load_models(ctx: RunContext, *, denoisers: bool = True, device: str | None = None) -> Models:
    """The used segmenters (and, with denoisers=True, the used denoisers), each from this
    process's cache when already loaded. Sets torch's thread count to the context's resolved
    threads (certseg.run.resources), except on a Dask worker without sampling.threads, where the
    cluster's own setting stands.
    """
    import torch

    config = ctx.config
    device = device or config.sampling.device
    if config.sampling.threads is not None or not on_dask_worker():
        torch.set_num_threads(ctx.parallelism.threads)
    autocast = resolve_autocast(ctx)
    segmenters = {name: _segmenter(ctx, name, device) for name in config.used_segmenters()}
    used = sorted({v.denoiser for v in config.variants if v.denoiser}) if denoisers else []
    loaded = {name: _denoiser(ctx, name, device, autocast) for name in used}
    return Models(segmenters, loaded, autocast, device)


def _segmenter(ctx: RunContext, name: str, device: str) -> Any:
    from certseg.models import build_segmenter

    spec = ctx.config.segmenters[name]
    path = ctx.resolve_path(spec.path) if spec.path is not None else None
    resolved = dataclasses.replace(spec, path=str(path) if path is not None else None, name=name)

    channels_last = ctx.config.sampling.channels_last

    def build() -> Any:
        segmenter = build_segmenter(resolved).to(device).eval()
        return _in_channels_last(segmenter, f"segmenter {name!r}") if channels_last else segmenter

    # Options that are not JSON (an nn.Module from Python) are keyed by identity, never by repr.
    key = json.dumps(
        dataclasses.asdict(resolved),
        sort_keys=True,
        default=lambda value: f"<{type(value).__name__} at {id(value):#x}>",
    )
    return _cached(("segmenter", name, key, _stamp(path), device, channels_last), build)


def _denoiser(ctx: RunContext, name: str, device: str, autocast: Any) -> Any:
    from certseg.denoise import load_denoiser

    spec = ctx.config.denoisers[name]
    path = ctx.resolve_path(spec.path)

    channels_last = ctx.config.sampling.channels_last

    def build() -> Any:
        denoiser = load_denoiser(
            path,
            device=device,
            resolution=spec.resolution,
            timestep_rule=spec.timestep_rule,
            num_steps=spec.num_steps,
            mode=spec.mode,
            tile_overlap=spec.tile_overlap,
            autocast_dtype=autocast,
        )
        if channels_last:
            denoiser.unet = _in_channels_last(denoiser.unet, f"denoiser {name!r}")
        return denoiser

    key = (
        "denoiser",
        name,
        spec.model_dump_json(),
        _stamp(path),
        device,
        str(autocast),
        channels_last,
    )
    return _cached(key, build)


def _in_channels_last(model: Any, what: str) -> Any:
    """`model` with its 4-D weights in channels_last memory format (sampling.channels_last);
    ValueError naming the model when it cannot be converted (e.g. a torch.export program)."""
    import torch

    try:
        return model.to(memory_format=torch.channels_last)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(
            f"sampling.channels_last: {what} cannot be put in channels_last format "
            f"({type(error).__name__}: {error}); set sampling.channels_last: false"
        ) from None


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The model under `key`, built (once per process) when absent."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def _stamp(path: Path | None) -> tuple[tuple[str, int, int], ...]:
    """(file, size, mtime_ns) of a model file, or of each weight file of a model folder."""
    if path is None or not path.exists():
        return ((str(path), -1, -1),)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple(
        (str(f), f.stat().st_size, f.stat().st_mtime_ns)
        for f in files
        if f == path or f.suffix in WEIGHT_SUFFIXES
    )
