"""certseg.run.prepare: the store is created only after the dataset and the models check out, a
store of another config or model identity is refused untouched, images of different sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.config import config_from_dict
from certseg.run.context import RunContext
from certseg.run.models import load_models
from certseg.run.prepare import ModelProbeError, prepare_store
from certseg.run.sample import Shard, plan_shards, sample_shard
from certseg.storage import SampleStore, StoreMismatchError
from tests.pipeline_fixtures import (
    CountingSampler,
    context_of,
    make_models_dir,
    tiny_config_dict,
    tiny_context,
    write_torchscript_segmenter,
)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


def _run(ctx: RunContext) -> None:
    models = load_models(ctx)
    prepare_store(ctx, models)
    for shard in plan_shards(4, 1):
        sample_shard(ctx, shard, models=models, sampler=CountingSampler())


def _snapshot(root: Path) -> list[tuple[Path, int]]:
    return sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_other_config_refused_store_untouched(models_dir: Path, tmp_path: Path) -> None:
    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    _run(ctx)
    before = _snapshot(tmp_path / "s.zarr")
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["n"] = 9
    data["seed"] = 4
    other = context_of(data)
    with pytest.raises(StoreMismatchError, match=ctx.config_id) as refused:
        prepare_store(other, load_models(other, denoisers=False))
    # the refusal names the settings that changed, and only those (issue 16)
    assert str(refused.value).endswith("the settings that differ: n: 8 → 9; seed: 0 → 4")
    with pytest.raises(StoreMismatchError, match=other.config_id):
        sample_shard(other, Shard(0, 0, 4), models=load_models(ctx), sampler=CountingSampler())
    assert _snapshot(tmp_path / "s.zarr") == before


def test_model_changed_under_same_config_refused_store_untouched(
    models_dir: Path, tmp_path: Path
) -> None:
    """A model retrained into the same path keeps config_id but must not resume the store."""
    private = tmp_path / "models"
    shutil.copytree(models_dir, private)
    ctx = tiny_context(private, tmp_path / "s.zarr")
    _run(ctx)
    before = _snapshot(tmp_path / "s.zarr")
    write_torchscript_segmenter(private / "clean.pt", seed=11)  # "retrained" in place
    same = tiny_context(private, tmp_path / "s.zarr")
    assert same.config_id == ctx.config_id
    with pytest.raises(StoreMismatchError, match="model files sha256"):
        prepare_store(same, load_models(same, denoisers=False))
    assert _snapshot(tmp_path / "s.zarr") == before
    shutil.copyfile(models_dir / "clean.pt", private / "clean.pt")  # the original bytes again
    again = tiny_context(private, tmp_path / "s.zarr")
    assert not prepare_store(again, load_models(again, denoisers=False)).created


def test_a_failing_probe_writes_nothing(models_dir: Path, tmp_path: Path) -> None:
    """A segmenter with another class count than the dataset's fails its probe, naming it and
    the image, before the store is created."""
    import torch
    from torch import nn

    torch.jit.save(torch.jit.script(nn.Conv2d(3, 5, 1).eval()), str(tmp_path / "five.pt"))
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["segmenters"]["noisy"]["path"] = str(tmp_path / "five.pt")
    ctx = context_of(data)
    with pytest.raises(
        ModelProbeError, match=r"segmenter 'noisy' \(.*five\.pt\) failed on dataset image"
    ):
        prepare_store(ctx, load_models(ctx, denoisers=False))
    assert not (tmp_path / "s.zarr").exists()


def test_folder_dataset_refuses_a_health_check_on_its_own_images(
    models_dir: Path, tmp_path: Path
) -> None:
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["dataset"] = {"kind": "folder", "root": str(tmp_path)}
    data["health"] = {"num_images": 2, "split": "train", "floor": 0.0}
    with pytest.raises(ValueError, match=r"config\.health\.num_images: a folder dataset has no"):
        config_from_dict(data)


def write_folder_dataset(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """A folder dataset of 7 classes: one random image and mask per stem, of the given (H, W)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(7)) + "\n")
    rng = np.random.default_rng(0)
    for stem, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        mask = rng.integers(0, 7, (h, w), dtype=np.uint8)
        mask[0, 0] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


def test_images_of_different_sizes_end_to_end(models_dir: Path, tmp_path: Path) -> None:
    """A folder dataset with three image sizes: padded store, cropped reads, certified tallies."""
    root = write_folder_dataset(tmp_path / "folder", {"a": (20, 24), "b": (24, 20), "c": (16, 16)})
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["dataset"] = {"kind": "folder", "root": str(root)}
    data["health"] = {"num_images": 0}
    ctx = context_of(data)
    models = load_models(ctx)
    prepared = prepare_store(ctx, models)
    assert prepared.num_images == 3
    for shard in plan_shards(3, 2):
        sample_shard(ctx, shard, models=models, sampler=CountingSampler())
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    assert store.image_shapes.tolist() == [[20, 24], [24, 20], [16, 16]]
    assert store.group["targets"].shape == (3, 24, 24)
    assert store.read_samples(0.5, "denoised", "estimation", 1).shape == (8, 24, 20)
    result = aggregate_store(str(tmp_path / "s.zarr"), CertifyParams(n=8, alpha=0.1, tau=0.6))

    metrics = result.get(0.25, "clean").certified.metrics()
    assert metrics.num_valid == 20 * 24 + 24 * 20 + 16 * 16 - 3


def test_each_image_is_decoded_once_while_preparing(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation, the probe, the image shapes and the targets written to the store share one
    read of each file (before: three reads of each, four of the first)."""
    import certseg.data.files as files

    decoded: list[str] = []
    decode = files.decode_image

    def counting(data: bytes, path: Path, *, rel: str) -> np.ndarray:
        decoded.append(rel)
        return decode(data, path, rel=rel)

    monkeypatch.setattr(files, "decode_image", counting)
    root = write_folder_dataset(tmp_path / "folder", {"a": (20, 24), "b": (24, 20), "c": (16, 16)})
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["dataset"] = {"kind": "folder", "root": str(root)}
    data["health"] = {"num_images": 0}
    ctx = context_of(data)
    prepare_store(ctx, load_models(ctx, denoisers=False))
    assert sorted(decoded) == ["images/a.png", "images/b.png", "images/c.png"]
    store = SampleStore.open(str(tmp_path / "s.zarr"))  # the targets kept are the dataset's
    from certseg.data.registry import open_dataset

    reference = open_dataset(ctx.config.dataset.resolved(ctx.base_dir))
    for index in range(3):
        assert np.array_equal(store.read_target(index), reference.load(index).target)
