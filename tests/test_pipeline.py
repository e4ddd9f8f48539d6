"""The run layer: shard planning, store preparation, resumable sampling, shards, health."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.config import RunConfig, config_from_dict
from certseg.pipeline import (
    Models,
    Shard,
    load_models,
    plan_shards,
    prepare_store,
    read_health_results,
    run_health_check,
    sample_shard,
)
from certseg.storage import SampleStore, StoreMismatchError
from tests.pipeline_fixtures import CountingSampler, make_models_dir, tiny_config_dict


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


def _config(models_dir: Path, store: Path, **kwargs: object) -> RunConfig:
    return config_from_dict(tiny_config_dict(models_dir, store, **kwargs))  # type: ignore[arg-type]


def _run(config: RunConfig, sampler: CountingSampler, shards: int) -> None:
    models = load_models(config)
    prepare_store(config, num_classes=models.num_classes)
    for shard in plan_shards(4, shards):
        sample_shard(config, shard, models=models, sampler=sampler)


def test_plan_shards() -> None:
    assert plan_shards(4, 1) == (Shard(0, 0, 4),)
    assert plan_shards(5, 2) == (Shard(0, 0, 2), Shard(1, 2, 5)) or plan_shards(5, 2) == (
        Shard(0, 0, 3),
        Shard(1, 3, 5),
    )
    shards = plan_shards(10, 3)
    assert [s.stop - s.start for s in shards] in ([3, 4, 3], [3, 3, 4], [4, 3, 3])
    assert shards[0].start == 0 and shards[-1].stop == 10
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    assert len(plan_shards(2, 5)) == 2
    with pytest.raises(ValueError, match="shards"):
        plan_shards(3, 0)


def test_resume_skips_completed_blocks(models_dir: Path, tmp_path: Path) -> None:
    config = _config(models_dir, tmp_path / "s.zarr")
    models = load_models(config)
    prepared = prepare_store(config, num_classes=models.num_classes)
    assert prepared.created and prepared.num_images == 4
    first = CountingSampler()
    shards = plan_shards(4, 2)
    report = sample_shard(config, shards[0], models=models, sampler=first)  # "killed" after shard 0
    # 2 images × 2 σ × 2 groups × (1 selection block + 3 estimation blocks of ≤ 3)
    assert first.calls == 2 * 2 * 2 * 4 == report.sampled_blocks
    assert first.samples == 2 * 2 * 2 * (3 + 8)
    # Lose one block of image 3's work mid-flight: data absent, flag absent.
    second = CountingSampler()
    again = prepare_store(config, num_classes=models.num_classes)
    assert not again.created
    for shard in shards:
        sample_shard(config, shard, models=models, sampler=second)
    assert second.calls == 2 * 2 * 2 * 4  # only shard 1's images
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    store.group["done/sigma_0.5/ddpm/estimation"][3] = np.array([1, 0, 1], dtype=np.uint8)
    third = CountingSampler()
    for shard in shards:
        sample_shard(config, shard, models=models, sampler=third)
    assert third.calls == 1 and third.samples == 3
    fourth = CountingSampler()
    for shard in shards:
        sample_shard(config, shard, models=models, sampler=fourth)
    assert fourth.calls == 0


def test_other_config_refused_store_untouched(models_dir: Path, tmp_path: Path) -> None:
    config = _config(models_dir, tmp_path / "s.zarr")
    _run(config, CountingSampler(), 1)
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "s.zarr").rglob("*"))
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["n"] = 9
    other = config_from_dict(data)
    with pytest.raises(StoreMismatchError, match=config.config_id):
        prepare_store(other, num_classes=7)
    with pytest.raises(StoreMismatchError, match=other.config_id):
        sample_shard(other, Shard(0, 0, 4), models=load_models(config), sampler=CountingSampler())
    after = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "s.zarr").rglob("*"))
    assert before == after


def test_model_changed_under_same_config_refused_store_untouched(
    models_dir: Path, tmp_path: Path
) -> None:
    """A model retrained into the same path keeps config_id but must not resume the store."""
    import shutil

    from tests.pipeline_fixtures import write_torchscript_segmenter

    private = tmp_path / "models"
    shutil.copytree(models_dir, private)
    config = _config(private, tmp_path / "s.zarr")
    _run(config, CountingSampler(), 1)
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "s.zarr").rglob("*"))
    write_torchscript_segmenter(private / "clean.pt", seed=11)  # "retrained" in place
    same = _config(private, tmp_path / "s.zarr")
    assert same.config_id == config.config_id
    with pytest.raises(StoreMismatchError, match="model files sha256"):
        prepare_store(same, num_classes=7)
    after = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "s.zarr").rglob("*"))
    assert before == after
    shutil.copyfile(models_dir / "clean.pt", private / "clean.pt")  # the original bytes again
    assert not prepare_store(_config(private, tmp_path / "s.zarr"), num_classes=7).created


def test_folder_dataset_refuses_a_health_check_on_its_own_images(
    models_dir: Path, tmp_path: Path
) -> None:
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["dataset"] = {"kind": "folder", "root": str(tmp_path)}
    data["health"] = {"num_images": 2, "split": "train", "floor": 0.0}
    with pytest.raises(ValueError, match=r"config\.health\.num_images: a folder dataset has no"):
        config_from_dict(data)


def test_health_check_uses_the_validated_set_with_skip_invalid(
    models_dir: Path, tmp_path: Path
) -> None:
    """An invalid file inside the health subset is dropped (skip_invalid), not loaded later."""
    import torch

    from tests.data.layouts import truncate, write_pascal_context

    val_ids = ("2008_000002", "2008_000003", "2008_000004")
    root = write_pascal_context(tmp_path / "pc", split="val", ids=val_ids)
    truncate(root / "VOCdevkit/VOC2010/JPEGImages/2008_000004.jpg")  # a certified image
    write_pascal_context(root, split="train", ids=("2008_000010", "2008_000011", "2008_000012"))
    # first health image (train split) is truncated: inside the health subset of 2
    truncate(root / "VOCdevkit/VOC2010/JPEGImages/2008_000010.jpg")
    net = torch.jit.script(torch.nn.Conv2d(3, 59, 1))  # a 59-class stand-in for the plumbing
    torch.jit.save(net, str(tmp_path / "pc59.pt"))
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["dataset"] = {"kind": "pascal_context", "root": str(root), "skip_invalid": True}
    data["health"] = {"num_images": 2, "split": "train", "floor": 0.0}
    for spec in data["segmenters"].values():
        spec.update(path=str(tmp_path / "pc59.pt"), num_classes=59)
    data["variants"] = [v for v in data["variants"] if v["name"] != "matched"]
    config = config_from_dict(data)
    models = load_models(config)
    prepared = prepare_store(config, num_classes=models.num_classes)
    assert [file for file, _ in prepared.skipped] == ["JPEGImages/2008_000004.jpg"]
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    assert store.image_ids == val_ids[:2]
    assert [file for file, _ in store.attrs["skipped_files"]] == [prepared.skipped[0][0]]
    assert store.health_ids == ("2008_000011",)  # the first 2 of train, the truncated one dropped
    results = run_health_check(config, models=models, sampler=CountingSampler())
    assert results and all(r.num_images == 1 and r.valid > 0 for r in results)


def test_results_identical_for_1_2_3_shards(models_dir: Path, tmp_path: Path) -> None:
    results = []
    stores = []
    for shards in (1, 2, 3):
        url = tmp_path / f"s{shards}.zarr"
        config = _config(models_dir, url, shards=shards)
        _run(config, CountingSampler(), shards)
        stores.append(SampleStore.open(str(url)))
        params = CertifyParams(n=config.n, alpha=config.alpha, tau=config.tau)
        results.append(aggregate_store(str(url), params))
    for sigma in (0.25, 0.5):
        for variant in ("clean", "matched", "denoised"):
            for phase in ("selection", "estimation"):
                for image in range(4):
                    maps = [s.read_samples(sigma, variant, phase, image) for s in stores]
                    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])
            summaries = [r.get(sigma, variant) for r in results]
            assert summaries[0] == summaries[1] == summaries[2]
    # the wiring holds: "matched" uses the noisy segmenter at 0.25 only
    store = stores[0]
    assert np.array_equal(
        store.read_samples(0.5, "matched", "estimation", 1),
        store.read_samples(0.5, "clean", "estimation", 1),
    )
    assert not np.array_equal(
        store.read_samples(0.25, "matched", "estimation", 1),
        store.read_samples(0.25, "clean", "estimation", 1),
    )


def test_health_check_flags_a_broken_base_classifier(models_dir: Path, tmp_path: Path) -> None:
    config = _config(models_dir, tmp_path / "s.zarr", broken=True)
    models = load_models(config)
    prepare_store(config, num_classes=models.num_classes)
    sampler = CountingSampler()
    results = run_health_check(config, models=models, sampler=sampler)
    by_key = {(r.sigma, r.variant): r for r in results}
    assert len(results) == 2 * 4
    # the held-out targets, measured independently of the pipeline
    from certseg.pipeline import open_health_dataset

    health = open_health_dataset(config)
    assert health is not None and len(health) == 2
    assert health.image_ids() != SampleStore.open(str(tmp_path / "s.zarr")).image_ids[:2]
    share = sum(int((health.load(i).target == 6).sum()) for i in range(2)) / (2 * 32 * 32)
    for sigma in (0.25, 0.5):
        broken = by_key[(sigma, "broken")]
        assert broken.accuracy == pytest.approx(share)
        assert broken.flagged
        assert broken.valid == 2 * 32 * 32 and broken.num_images == 2
    calls = sampler.calls
    assert calls == 2 * 2 * 2  # images × σ × groups, one draw each
    again = CountingSampler()
    assert run_health_check(config, models=models, sampler=again) == results
    assert again.calls == 0  # stored, not re-measured
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    assert read_health_results(store, config) == results


def test_default_sampler_matches_the_reference(models_dir: Path, tmp_path: Path) -> None:
    """The real certseg.sampling path writes what a one-sample-at-a-time loop computes."""
    config = _config(models_dir, tmp_path / "real.zarr")
    models = load_models(config)
    prepare_store(config, num_classes=models.num_classes)
    sample_shard(config, Shard(0, 0, 1), models=models)  # default: sample_class_maps
    reference = _config(models_dir, tmp_path / "ref.zarr")
    prepare_store(reference, num_classes=models.num_classes)
    sample_shard(reference, Shard(0, 0, 1), models=models, sampler=CountingSampler())
    real = SampleStore.open(str(tmp_path / "real.zarr"))
    ref = SampleStore.open(str(tmp_path / "ref.zarr"))
    for sigma in (0.25, 0.5):
        for variant in ("clean", "matched", "denoised"):
            for phase in ("selection", "estimation"):
                a = real.read_samples(sigma, variant, phase, 0)
                b = ref.read_samples(sigma, variant, phase, 0)
                assert np.array_equal(a, b), (sigma, variant, phase)


def test_images_of_different_sizes_end_to_end(models_dir: Path, tmp_path: Path) -> None:
    """A folder dataset with three image sizes: padded store, cropped reads, certified tallies."""
    from PIL import Image

    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(7)) + "\n")
    rng = np.random.default_rng(0)
    sizes = {"a": (20, 24), "b": (24, 20), "c": (16, 16)}
    for stem, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        mask = rng.integers(0, 7, (h, w), dtype=np.uint8)
        mask[0, 0] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data["dataset"] = {"kind": "folder", "root": str(root)}
    data["health"] = {"num_images": 0}
    config = config_from_dict(data)
    models = load_models(config)
    prepared = prepare_store(config, num_classes=models.num_classes)
    assert prepared.num_images == 3
    for shard in plan_shards(3, 2):
        sample_shard(config, shard, models=models, sampler=CountingSampler())
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    assert store.image_shapes.tolist() == [[20, 24], [24, 20], [16, 16]]
    assert store.group["targets"].shape == (3, 24, 24)
    assert store.read_samples(0.5, "denoised", "estimation", 1).shape == (8, 24, 20)
    result = aggregate_store(str(tmp_path / "s.zarr"), CertifyParams(n=8, alpha=0.1, tau=0.6))
    from certseg.stats import ConfusionAccumulator

    metrics = ConfusionAccumulator.from_dict(result.get(0.25, "clean").certified).metrics()
    assert metrics.num_valid == 20 * 24 + 24 * 20 + 16 * 16 - 3


def _poisoned(models: Models, name: str, threshold: float | None) -> Models:
    """`models` with segmenter `name` replaced by one whose logits are NaN where an input
    value exceeds `threshold` (None: everywhere). A new Models: the cached one stays intact."""
    import torch
    from torch import nn

    from certseg.models import Segmenter

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


def test_nan_under_noise_fails_the_shard_and_flags_nothing(
    models_dir: Path, tmp_path: Path
) -> None:
    """A segmenter finite on the clean image but NaN under noise: sampling fails with the
    model, σ, image and samples named; no sample block is flagged done (a re-run retries it)."""
    from certseg.errors import NonFiniteOutputError

    config = _config(models_dir, tmp_path / "s.zarr")
    models = _poisoned(load_models(config), "clean", threshold=1.0)
    prepare_store(config, num_classes=7)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    with pytest.raises(NonFiniteOutputError) as caught:
        sample_shard(config, Shard(0, 0, 1), models=models)
    image_id = store.image_ids[0]
    message = str(caught.value)
    assert "segmenter 'clean'" in message and f"image {image_id!r}" in message
    assert "sigma=0.25" in message and "phase 'selection'" in message and "samples [" in message
    assert store.clean_done("clean", 0)  # the clean prediction was finite
    for sigma in config.sigmas:
        for group in config.denoiser_groups():
            for phase in ("selection", "estimation"):
                assert not store.done_blocks(sigma, group, phase, 0).any()


def test_nan_on_the_clean_image_fails_before_anything_is_written(
    models_dir: Path, tmp_path: Path
) -> None:
    from certseg.errors import NonFiniteOutputError

    config = _config(models_dir, tmp_path / "s.zarr")
    models = _poisoned(load_models(config), "clean", threshold=None)
    prepare_store(config, num_classes=7)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    with pytest.raises(NonFiniteOutputError, match=r"segmenter 'clean'.*clean image"):
        sample_shard(config, Shard(0, 0, 1), models=models)
    assert not store.clean_done("clean", 0)
    assert not store.done_blocks(0.25, "none", "selection", 0).any()


def test_nan_model_fails_the_health_check_and_stores_no_accuracy(
    models_dir: Path, tmp_path: Path
) -> None:
    from certseg.errors import NonFiniteOutputError

    config = _config(models_dir, tmp_path / "s.zarr")
    models = _poisoned(load_models(config), "clean", threshold=None)
    prepare_store(config, num_classes=7)
    with pytest.raises(NonFiniteOutputError, match=r"segmenter 'clean'.*phase 'health'"):
        run_health_check(config, models=models)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    for sigma in config.sigmas:
        assert (store.read_health(sigma, "clean")[:, 0] < 0).all()
