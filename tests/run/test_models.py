"""certseg.run.models: each model is loaded once per process, the denoiser only when asked, and
again only when its files change."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import certseg.run.models as run_models
from certseg.run.models import load_models
from tests.pipeline_fixtures import (
    context_of,
    make_models_dir,
    tiny_config_dict,
    write_torchscript_segmenter,
)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A fresh model cache (a new process, as far as loading goes) and the files loaded."""
    import diffusers
    import torch

    monkeypatch.setattr(run_models, "_CACHE", {})
    seen: dict[str, list[str]] = {"segmenter": [], "denoiser": []}
    jit_load = torch.jit.load
    unet_load = diffusers.UNet2DModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def counting_jit(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen["segmenter"].append(Path(str(path)).name)
        return jit_load(path, *args, **kwargs)

    def counting_unet(cls: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        seen["denoiser"].append(str(path))
        return unet_load(cls, path, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", counting_jit)
    monkeypatch.setattr(diffusers.UNet2DModel, "from_pretrained", classmethod(counting_unet))
    return seen


def test_each_model_loads_once_per_process(
    models_dir: Path, tmp_path: Path, loads: dict[str, list[str]]
) -> None:
    ctx = context_of(tiny_config_dict(models_dir, tmp_path / "s.zarr"))
    first = load_models(ctx, denoisers=False)  # what preparing a store needs
    assert sorted(loads["segmenter"]) == ["clean.pt", "noisy.pt"]
    assert loads["denoiser"] == [] and first.denoisers == {}
    second = load_models(ctx)  # what sampling needs: the denoiser now, the segmenters cached
    assert sorted(loads["segmenter"]) == ["clean.pt", "noisy.pt"]
    assert len(loads["denoiser"]) == 1 and set(second.denoisers) == {"ddpm"}
    assert all(second.segmenters[n] is first.segmenters[n] for n in first.segmenters)
    # another config over the same models (another n: another config_id) shares them
    data = tiny_config_dict(models_dir, tmp_path / "other.zarr")
    data["n"] = 9
    other = load_models(context_of(data))
    assert other.denoisers["ddpm"] is second.denoisers["ddpm"]
    assert all(other.segmenters[n] is first.segmenters[n] for n in first.segmenters)
    assert len(loads["segmenter"]) == 2 and len(loads["denoiser"]) == 1


def test_a_model_rewritten_in_place_is_loaded_again(
    models_dir: Path, tmp_path: Path, loads: dict[str, list[str]]
) -> None:
    """A long-lived worker must not sample with the old weights of a retrained model."""
    private = tmp_path / "models"
    shutil.copytree(models_dir, private)
    ctx = context_of(tiny_config_dict(private, tmp_path / "s.zarr"))
    before = load_models(ctx, denoisers=False)
    write_torchscript_segmenter(private / "clean.pt", seed=11)
    after = load_models(ctx, denoisers=False)
    assert after.segmenters["clean"] is not before.segmenters["clean"]
    assert after.segmenters["noisy"] is before.segmenters["noisy"]
    assert sorted(loads["segmenter"]) == ["clean.pt", "clean.pt", "noisy.pt"]


def test_the_denoiser_is_built_with_the_configured_mode(
    models_dir: Path, tmp_path: Path, loads: dict[str, list[str]]
) -> None:
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["denoisers"]["ddpm"].update(mode="tiled", resolution=[16, 8], tile_overlap=0.5)
    denoiser = load_models(context_of(data)).denoisers["ddpm"]
    assert (denoiser.mode, denoiser.resolution, denoiser.tile_overlap) == ("tiled", (16, 8), 0.5)
    plain = load_models(context_of(tiny_config_dict(models_dir, tmp_path / "p.zarr")))
    assert plain.denoisers["ddpm"].mode == "resize"


def test_channels_last_converts_the_weights_and_keeps_the_predictions(
    loads: dict[str, list[str]],
) -> None:
    """sampling.channels_last: the shipped models' conv weights in channels_last; the class maps
    of the same keyed samples agree with the default format on all but a rounding sliver; it
    enters config_id only when true."""
    import numpy as np
    import torch

    from certseg.data.synthetic import SyntheticDataset
    from certseg.run.context import read_config_file, run_context
    from certseg.sampling import sample_class_maps

    base, _ = read_config_file(Path(__file__).parents[2] / "configs" / "tiny.yaml")
    sampling = base.sampling.model_copy(update={"channels_last": True})
    fast = base.model_copy(update={"sampling": sampling})
    assert fast.config_id != base.config_id
    assert base.identity().get("channels_last") is None
    maps = []
    for config in (base, fast):
        models = load_models(run_context(config))
        name = config.used_segmenters()[0]
        conv = next(
            p for p in models.segmenters[name].parameters() if p.dim() == 4 and p.shape[-1] > 1
        )
        assert conv.is_contiguous(memory_format=torch.channels_last) == (config is fast)
        example = SyntheticDataset(seed=0, num_images=1, size=64, split="test").load(0)
        maps.append(
            sample_class_maps(
                example.image,
                image_key=example.image_id,
                phase="estimation",
                start=0,
                count=4,
                sigma=0.25,
                seed=0,
                denoiser=next(iter(models.denoisers.values())),
                segmenters={name: models.segmenters[name]},
                autocast_dtype=models.autocast_dtype,
            )[name]
        )
    assert np.mean(maps[0] != maps[1]) < 0.01
