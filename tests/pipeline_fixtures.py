"""Stand-ins for pipeline tests: tiny segmenters and a tiny diffusers denoiser written to disk, a
tiny run config pointing at them, and an independent per-sample reference sampler.

The models have fixed or seeded random weights: they exercise the plumbing, never produce a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

NUM_CLASSES = 7  # the synthetic benchmark's classes


def _colour_module(seed: int, constant: int | None = None) -> Any:
    """A 1×1-conv "segmenter" (3 → 7 logits), seeded; or one that always predicts `constant`."""
    import torch
    from torch import nn

    class ColourNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, NUM_CLASSES, 1)
            self.smooth = nn.Conv2d(NUM_CLASSES, NUM_CLASSES, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.smooth(torch.relu(self.conv(x)))

    generator = torch.Generator().manual_seed(seed)
    net = ColourNet()
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
        if constant is not None:
            net.smooth.weight.zero_()
            net.smooth.bias.fill_(-10.0)
            net.smooth.bias[constant] = 10.0
    return net.eval()


def write_torchscript_segmenter(path: Path, seed: int, constant: int | None = None) -> Path:
    """Save a scripted stand-in segmenter to `path` (a .pt file)."""
    import torch

    scripted = torch.jit.script(_colour_module(seed, constant))
    torch.jit.save(scripted, str(path))
    return path


def write_tiny_denoiser(folder: Path) -> Path:
    """A tiny random UNet2DModel + linear DDPM scheduler saved as a diffusers folder."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    unet.save_pretrained(str(folder / "unet"))
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(str(folder / "scheduler"))
    return folder


def make_models_dir(root: Path) -> Path:
    """Write the stand-in models once under root/models (clean, noisy, broken, denoiser)."""
    models = root / "models"
    if (models / "done").exists():
        return models
    models.mkdir(parents=True, exist_ok=True)
    write_torchscript_segmenter(models / "clean.pt", seed=1)
    write_torchscript_segmenter(models / "noisy.pt", seed=2)
    write_torchscript_segmenter(models / "broken.pt", seed=3, constant=6)
    write_tiny_denoiser(models / "denoiser")
    (models / "done").write_text("ok")
    return models


def tiny_config_dict(
    models: Path,
    store: Path,
    *,
    tracking_uri: str | None = None,
    broken: bool = False,
    shards: int = 2,
) -> dict[str, Any]:
    """A tiny run config (4 synthetic 32×32 images, n0=3, n=8) over the stand-in models."""
    seg = {
        "family": "torchscript",
        "num_classes": NUM_CLASSES,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
    }
    variants: list[dict[str, Any]] = [
        {"name": "clean", "segmenter": "clean", "label": "clean alone"},
        {
            "name": "matched",
            "segmenter_by_sigma": {0.25: "noisy", 0.5: "clean"},
            "label": "per sigma",
        },
        {"name": "denoised", "segmenter": "clean", "denoiser": "ddpm", "label": "denoised"},
    ]
    if broken:
        variants.append({"name": "broken", "segmenter": "broken", "label": "constant class"})
    return {
        "name": "tiny-test",
        "dataset": {"kind": "synthetic", "split": "test", "seed": 3, "num_images": 4, "size": 32},
        "segmenters": {
            "clean": {**seg, "path": str(models / "clean.pt")},
            "noisy": {**seg, "path": str(models / "noisy.pt")},
            "broken": {**seg, "path": str(models / "broken.pt")},
        },
        "denoisers": {"ddpm": {"path": str(models / "denoiser")}},
        "variants": variants,
        "sigmas": [0.25, 0.5],
        "n0": 3,
        "n": 8,
        "alpha": 0.1,
        "tau": 0.6,
        "correction": "holm",
        "seed": 0,
        "sampling": {"batch_size": 4, "samples_per_chunk": 3, "bf16": False, "threads": 1},
        "health": {"num_images": 2, "split": "val", "floor": 0.3},
        "store": {"url": str(store)},
        "tracking": {
            "uri": tracking_uri or f"sqlite:///{store.parent / 'mlruns.db'}",
            "experiment": "certseg-test",
        },
        "dask": {"n_workers": 1, "threads_per_worker": 1, "processes": False},
        "shards": shards,
    }


def tiny_context(models: Path, store: Path, **kwargs: Any) -> Any:
    """The RunContext of `tiny_config_dict(models, store, **kwargs)` (no override)."""
    from certseg.config import config_from_dict
    from certseg.run.context import run_context

    return run_context(config_from_dict(tiny_config_dict(models, store, **kwargs)))


def context_of(data: dict[str, Any]) -> Any:
    """The RunContext of a config mapping (no override)."""
    from certseg.config import config_from_dict
    from certseg.run.context import run_context

    return run_context(config_from_dict(data))


def poisoned_models(models: Any, name: str, threshold: float | None) -> Any:
    """`models` with segmenter `name` replaced by one whose logits are NaN where an input
    value exceeds `threshold` (None: everywhere). A new Models: the cached one stays intact."""
    import torch
    from torch import nn

    from certseg.models import Segmenter
    from certseg.run.models import Models

    class Poison(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 7, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.conv(x)
            if threshold is None:
                return torch.full_like(logits, float("nan"))
            return logits.masked_fill((x > threshold).any(dim=1, keepdim=True), float("nan"))

    poison = Segmenter(Poison(), num_classes=7, mean=(0, 0, 0), std=(1, 1, 1), name=name)
    return Models(
        {**models.segmenters, name: poison}, models.denoisers, models.autocast_dtype, models.device
    )


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write a config dict as YAML."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def reference_sampler(
    image: np.ndarray,
    *,
    image_key: str,
    phase: str,
    start: int,
    count: int,
    sigma: float,
    seed: int,
    denoiser: Any,
    segmenters: Any,
    batch_size: int = 1,
    device: str = "cpu",
    autocast_dtype: Any = None,
) -> dict[str, np.ndarray]:
    """One sample at a time, straight from METHOD.md: x̃ = x + σε, optional denoiser, argmax."""
    import torch

    from certseg.noise import sample_noise

    out: dict[str, list[np.ndarray]] = {name: [] for name in segmenters}
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))
    with torch.inference_mode():
        for j in range(start, start + count):
            eps = sample_noise(x.shape, seed=seed, image_key=image_key, phase=phase, index=j)
            noisy = (x + sigma * eps)[None]
            if denoiser is not None:
                noisy = denoiser.denoise(noisy, sigma)
            for name, segmenter in segmenters.items():
                out[name].append(segmenter(noisy).argmax(1)[0].numpy().astype(np.uint8))
    return {name: np.stack(maps) for name, maps in out.items()}


class CountingSampler:
    """Wraps a sampler and counts its calls and samples."""

    def __init__(self, inner: Any = reference_sampler) -> None:
        self.inner = inner
        self.calls = 0
        self.samples = 0

    def __call__(self, image: np.ndarray, **kwargs: Any) -> Any:
        self.calls += 1
        self.samples += int(kwargs["count"])
        return self.inner(image, **kwargs)


TOY_CLASSES = 5
TOY_SHAPES = ((12, 10), (9, 12), (12, 12))


def fill_toy_store(url: str, seed: int = 0) -> Any:
    """A store with 3 images of different sizes and random-but-structured class maps."""
    from certseg.storage import SampleStore, StoreTemplate, sigma_key

    template = StoreTemplate(
        config_id="c" * 64,
        config_json="{}",
        code_version="test",
        manifest_sha256="m",
        dataset_name="toy",
        image_ids=("a", "b", "c"),
        image_shapes=TOY_SHAPES,
        num_classes=TOY_CLASSES,
        class_names=tuple("abcde"),
        ignore_index=255,
        sigmas=(0.25, 0.5),
        variants=("v1", "v2"),
        variant_segmenters={v: {sigma_key(0.25): "s", sigma_key(0.5): "s"} for v in ("v1", "v2")},
        groups={"none": ("v1", "v2")},
        n0=4,
        n=20,
        samples_per_chunk=6,
    )
    rng = np.random.default_rng(seed)
    targets = []
    for h, w in TOY_SHAPES:
        target = rng.integers(0, TOY_CLASSES, size=(h, w))
        target[0, :3] = 255
        targets.append(target)
    store = SampleStore.create(url, template, targets)
    for image, (h, w) in enumerate(TOY_SHAPES):
        target = np.where(targets[image] == 255, 0, targets[image])
        store.write_clean("s", image, np.where(rng.random((h, w)) < 0.9, target, 1))
        for sigma in (0.25, 0.5):
            for variant, keep in (("v1", 0.995), ("v2", 0.8)):
                for phase in ("selection", "estimation"):
                    for block, (start, stop) in enumerate(store.blocks(phase)):
                        p = keep - sigma / 20
                        flip = rng.random((stop - start, h, w)) > p
                        noise = rng.integers(0, TOY_CLASSES, size=(stop - start, h, w))
                        maps = np.where(flip, noise, target[None]).astype(np.uint8)
                        store.write_samples(sigma, variant, phase, image, start, maps)
                        if variant == "v2":
                            store.mark_done(sigma, "none", phase, image, block)
    return store
