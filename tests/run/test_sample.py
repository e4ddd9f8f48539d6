"""certseg.run.sample: shard planning, resumable sampling, identical results for 1/2/3 shards,
the default sampler against an independent reference, and a NaN-producing model."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.run.context import RunContext
from certseg.run.models import load_models
from certseg.run.prepare import prepare_store
from certseg.run.sample import Shard, plan_shards, run_samples, sample_shard
from certseg.storage import SampleStore
from tests.pipeline_fixtures import CountingSampler, make_models_dir, poisoned_models, tiny_context


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


def _run(ctx: RunContext, sampler: CountingSampler, shards: int) -> None:
    models = load_models(ctx)
    prepare_store(ctx, models)
    for shard in plan_shards(4, shards):
        sample_shard(ctx, shard, models=models, sampler=sampler)


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
    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    models = load_models(ctx)
    prepared = prepare_store(ctx, models)
    assert prepared.created and prepared.num_images == 4
    first = CountingSampler()
    shards = plan_shards(4, 2)
    told: list[tuple[int, bool]] = []
    report = sample_shard(  # "killed" after shard 0
        ctx, shards[0], models=models, sampler=first, progress=lambda n, r: told.append((n, r))
    )
    # 2 images × 2 σ × 2 groups × (1 selection block + 3 estimation blocks of ≤ 3)
    assert first.calls == 2 * 2 * 2 * 4 == report.sampled_blocks
    assert first.samples == 2 * 2 * 2 * (3 + 8)
    assert told and all(not resumed for _, resumed in told)
    assert sum(n for n, _ in told) == first.samples
    # Lose one block of image 3's work mid-flight: data absent, flag absent.
    second = CountingSampler()
    again = prepare_store(ctx, models)
    assert not again.created
    told.clear()
    for shard in shards:
        sample_shard(
            ctx, shard, models=models, sampler=second, progress=lambda n, r: told.append((n, r))
        )
    assert second.calls == 2 * 2 * 2 * 4  # only shard 1's images
    # the progress callback saw every sample of the run once: shard 0's as resumed
    assert sum(n for n, _ in told) == run_samples(ctx, 4)
    assert sum(n for n, resumed in told if resumed) == first.samples
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    store.group["done/sigma_0.5/ddpm/estimation"][3] = np.array([1, 0, 1], dtype=np.uint8)
    third = CountingSampler()
    for shard in shards:
        sample_shard(ctx, shard, models=models, sampler=third)
    assert third.calls == 1 and third.samples == 3
    fourth = CountingSampler()
    for shard in shards:
        sample_shard(ctx, shard, models=models, sampler=fourth)
    assert fourth.calls == 0


def test_results_identical_for_1_2_3_shards(models_dir: Path, tmp_path: Path) -> None:
    results = []
    stores = []
    for shards in (1, 2, 3):
        url = tmp_path / f"s{shards}.zarr"
        ctx = tiny_context(models_dir, url, shards=shards)
        _run(ctx, CountingSampler(), shards)
        stores.append(SampleStore.open(str(url)))
        params = CertifyParams(n=ctx.config.n, alpha=ctx.config.alpha, tau=ctx.config.tau)
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


def test_default_sampler_matches_the_reference(models_dir: Path, tmp_path: Path) -> None:
    """The real certseg.sampling path writes what a one-sample-at-a-time loop computes."""
    ctx = tiny_context(models_dir, tmp_path / "real.zarr")
    models = load_models(ctx)
    prepare_store(ctx, models)
    sample_shard(ctx, Shard(0, 0, 1), models=models)  # default: sample_class_maps
    reference = tiny_context(models_dir, tmp_path / "ref.zarr")
    prepare_store(reference, models)
    sample_shard(reference, Shard(0, 0, 1), models=models, sampler=CountingSampler())
    real = SampleStore.open(str(tmp_path / "real.zarr"))
    ref = SampleStore.open(str(tmp_path / "ref.zarr"))
    for sigma in (0.25, 0.5):
        for variant in ("clean", "matched", "denoised"):
            for phase in ("selection", "estimation"):
                a = real.read_samples(sigma, variant, phase, 0)
                b = ref.read_samples(sigma, variant, phase, 0)
                assert np.array_equal(a, b), (sigma, variant, phase)


def test_nan_under_noise_fails_the_shard_and_flags_nothing(
    models_dir: Path, tmp_path: Path
) -> None:
    """A segmenter finite on the clean image but NaN under noise: sampling fails with the
    model, σ, image and samples named; no sample block is flagged done (a re-run retries it)."""
    from certseg.errors import NonFiniteOutputError

    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    prepare_store(ctx, load_models(ctx, denoisers=False))
    models = poisoned_models(load_models(ctx), "clean", threshold=1.0)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    with pytest.raises(NonFiniteOutputError) as caught:
        sample_shard(ctx, Shard(0, 0, 1), models=models)
    image_id = store.image_ids[0]
    message = str(caught.value)
    assert "segmenter 'clean'" in message and f"image {image_id!r}" in message
    assert "sigma=0.25" in message and "phase 'selection'" in message and "samples [" in message
    assert store.clean_done("clean", 0)  # the clean prediction was finite
    for sigma in ctx.config.sigmas:
        for group in ctx.config.denoiser_groups():
            for phase in ("selection", "estimation"):
                assert not store.done_blocks(sigma, group, phase, 0).any()


def test_nan_on_the_clean_image_fails_before_anything_is_written(
    models_dir: Path, tmp_path: Path
) -> None:
    from certseg.errors import NonFiniteOutputError

    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    prepare_store(ctx, load_models(ctx, denoisers=False))
    models = poisoned_models(load_models(ctx), "clean", threshold=None)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    with pytest.raises(NonFiniteOutputError, match=r"segmenter 'clean'.*clean image"):
        sample_shard(ctx, Shard(0, 0, 1), models=models)
    assert not store.clean_done("clean", 0)
    assert not store.done_blocks(0.25, "none", "selection", 0).any()


def _digest_store(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def test_background_writer_writes_the_same_store_as_the_synchronous_loop(
    models_dir: Path, tmp_path: Path
) -> None:
    """Every chunk (samples, flags, clean predictions) byte for byte, writer depth 0 / 1 / 3."""
    digests = []
    for depth in (0, 1, 3):
        url = tmp_path / f"d{depth}.zarr"
        ctx = tiny_context(models_dir, url)
        models = load_models(ctx)
        prepare_store(ctx, models)
        for shard in plan_shards(4, 2):
            sample_shard(ctx, shard, models=models, sampler=CountingSampler(), writer_depth=depth)
        digests.append(_digest_store(url))
    assert digests[0].keys() == digests[1].keys() == digests[2].keys()
    assert any(k.startswith("samples/") for k in digests[0])
    assert digests[0] == digests[1] == digests[2]


def test_a_failing_write_fails_the_shard_and_flags_only_what_landed(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 5th block write raises in the writer thread: sample_shard raises that error; the
    blocks written before it are flagged, that block and every later one are not; a re-run
    draws exactly the unflagged blocks and ends with the reference store."""
    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    models = load_models(ctx)
    prepare_store(ctx, models)
    original = SampleStore.write_samples
    calls = {"n": 0}

    def flaky(self: SampleStore, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("object store refused the write")
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SampleStore, "write_samples", flaky)
    sampler = CountingSampler()
    with pytest.raises(OSError, match="refused the write"):
        sample_shard(ctx, Shard(0, 0, 1), models=models, sampler=sampler)
    monkeypatch.setattr(SampleStore, "write_samples", original)
    store = SampleStore.open(str(tmp_path / "s.zarr"))
    flagged = sum(
        int(store.done_blocks(sigma, group, phase, 0).sum())
        for sigma in ctx.config.sigmas
        for group in ctx.config.denoiser_groups()
        for phase in ("selection", "estimation")
    )
    # group "none" writes 2 variants per block, so writes 1-4 are its first 2 blocks
    assert flagged == 2
    assert sampler.calls >= 3  # the writer overlapped the drawing of the next blocks
    again = CountingSampler()
    sample_shard(ctx, Shard(0, 0, 1), models=models, sampler=again)
    total = 2 * 2 * 4  # σ × groups × blocks per image
    assert again.calls == total - 2
    reference = tiny_context(models_dir, tmp_path / "ref.zarr")
    prepare_store(reference, models)
    sample_shard(reference, Shard(0, 0, 1), models=models, sampler=CountingSampler())
    assert _digest_store(tmp_path / "s.zarr") == _digest_store(tmp_path / "ref.zarr")


def test_micro_batches_fit_the_memory_budget_and_keep_the_samples(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample measured at 300 KiB (×1.25 slack) under sampling.memory_mib = 1 gives forward
    batches of 2 instead of sampling.batch_size = 4, and the same store bytes as batches of 4;
    at 2 MiB a sample no batch fits: MemoryBudgetError before anything is drawn or flagged."""
    import certseg.sampling
    from certseg.run.sample import default_sampler
    from certseg.sampling import MemoryBudgetError
    from tests.pipeline_fixtures import context_of, tiny_config_dict

    batches: list[int] = []

    def recording(image: np.ndarray, **kwargs: object) -> object:
        batches.append(int(kwargs["batch_size"]))  # type: ignore[call-overload]
        return default_sampler()(image, **kwargs)

    def run(url: Path, memory_mib: int) -> None:
        data = tiny_config_dict(models_dir, url)
        data["sampling"]["memory_mib"] = memory_mib
        ctx = context_of(data)
        models = load_models(ctx)
        prepare_store(ctx, models)
        sample_shard(ctx, Shard(0, 0, 2), models=models, sampler=recording)

    run(tmp_path / "wide.zarr", 2048)
    assert set(batches) == {4}  # the tiny models' samples fit: sampling.batch_size as given
    batches.clear()
    monkeypatch.setattr(certseg.sampling, "measure_sample_bytes", lambda *a, **k: 300 * 2**10)
    run(tmp_path / "split.zarr", 1)
    assert set(batches) == {2}
    assert _digest_store(tmp_path / "wide.zarr") == _digest_store(tmp_path / "split.zarr")
    batches.clear()
    monkeypatch.setattr(certseg.sampling, "measure_sample_bytes", lambda *a, **k: 2 * 2**20)
    with pytest.raises(MemoryBudgetError, match=r"sampling.memory_mib = 1 MiB") as caught:
        run(tmp_path / "none.zarr", 1)
    assert "32x32" in str(caught.value) and "nothing was sampled" in str(caught.value)
    assert batches == []
    store = SampleStore.open(str(tmp_path / "none.zarr"))
    assert not store.done_blocks(0.25, "none", "selection", 0).any()
