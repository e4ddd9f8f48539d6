"""certseg.run.health: base accuracy on held-out images, stored, resumable, on the validated set."""

from __future__ import annotations

from pathlib import Path

import pytest

from certseg.run.health import open_health_dataset, read_health_results, run_health_check
from certseg.run.models import load_models
from certseg.run.prepare import prepare_store
from certseg.storage import SampleStore
from tests.pipeline_fixtures import (
    CountingSampler,
    context_of,
    make_models_dir,
    poisoned_models,
    tiny_config_dict,
    tiny_context,
)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


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
    ctx = context_of(data)
    models = load_models(ctx)
    prepared = prepare_store(ctx, models)
    assert [file for file, _ in prepared.skipped] == ["JPEGImages/2008_000004.jpg"]
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    assert store.image_ids == val_ids[:2]
    assert [file for file, _ in store.attrs["skipped_files"]] == [prepared.skipped[0][0]]
    assert store.health_ids == ("2008_000011",)  # the first 2 of train, the truncated one dropped
    results = run_health_check(ctx, models=models, sampler=CountingSampler())
    assert results and all(r.num_images == 1 and r.valid > 0 for r in results)


def test_health_check_flags_a_broken_base_classifier(models_dir: Path, tmp_path: Path) -> None:
    ctx = tiny_context(models_dir, tmp_path / "s.zarr", broken=True)
    models = load_models(ctx)
    prepare_store(ctx, models)
    sampler = CountingSampler()
    results = run_health_check(ctx, models=models, sampler=sampler)
    by_key = {(r.sigma, r.variant): r for r in results}
    assert len(results) == 2 * 4
    # the held-out targets, measured independently of the run layer
    health = open_health_dataset(ctx)
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
    assert run_health_check(ctx, models=models, sampler=again) == results
    assert again.calls == 0  # stored, not re-measured
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    assert read_health_results(store, ctx.config) == results


def test_nan_model_fails_the_health_check_and_stores_no_accuracy(
    models_dir: Path, tmp_path: Path
) -> None:
    from certseg.errors import NonFiniteOutputError

    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    prepare_store(ctx, load_models(ctx, denoisers=False))
    models = poisoned_models(load_models(ctx), "clean", threshold=None)
    with pytest.raises(NonFiniteOutputError, match=r"segmenter 'clean'.*phase 'health'"):
        run_health_check(ctx, models=models)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    for sigma in ctx.config.sigmas:
        assert (store.read_health(sigma, "clean")[:, 0] < 0).all()


def test_a_health_check_that_did_not_run_is_not_flagged() -> None:
    """recertify of a run with the health check off has NaN base accuracy: never below the floor
    (NaN >= floor is False, which flagged every such row before)."""
    import math

    from certseg.outcomes import HealthResult

    assert not HealthResult(0.25, "v", math.nan, 0, 0, 0, 0.5).flagged
    assert HealthResult(0.25, "v", 0.49, 49, 100, 1, 0.5).flagged
    assert not HealthResult(0.25, "v", 0.5, 50, 100, 1, 0.5).flagged
