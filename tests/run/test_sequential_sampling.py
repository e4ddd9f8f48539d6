"""Sequential certification wired into sampling and aggregation (issue 17 part 1).

A tiny sequential run (stand-in models, 4 synthetic 32×32 images, n0 = 3, n = 30 in blocks of 5,
looks (10, 20, 30), α = 0.5 split equally, τ = 0.55, fraction tolerance 0.1): some groups stop at
look 20 (their last block is never drawn), every stopping look is recorded, each certificate is
`certify_at_look` on prefix counts recounted here from the stored samples, and a killed run
resumes to the same store and results.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from certseg.aggregate import AggregateResult, CertifyParams, aggregate_store
from certseg.certificates import certify_stored_image
from certseg.config import config_from_dict
from certseg.run.context import RunContext, run_context
from certseg.run.finished import store_complete
from certseg.run.models import Models, load_models
from certseg.run.prepare import prepare_store
from certseg.run.recertify import read_stored_run
from certseg.run.sample import Shard, ShardReport, plan_shards, sample_shard
from certseg.stats import select_labels
from certseg.stats.sequential import (
    LookSchedule,
    certify_at_look,
    counts_at_looks,
    run_sequential,
)
from certseg.storage import SampleStore, StoreTemplate, sigma_key
from tests.pipeline_fixtures import (
    CountingSampler,
    fill_toy_store,
    make_models_dir,
    reference_sampler,
    tiny_config_dict,
)

LOOKS = (10, 20, 30)
N0, N = 3, 30
FIXED_SAMPLES = 4 * 2 * 2 * (N0 + N)  # images × σ × denoiser groups × (n0 + n)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


def _context(models: Path, store: Path, **sequential: Any) -> RunContext:
    data = tiny_config_dict(models, store, broken=True)
    data.update(n=N, alpha=0.5, tau=0.55)
    data["sampling"]["samples_per_chunk"] = 5
    data["sequential"] = {
        "enabled": True,
        "looks": list(LOOKS),
        "alpha_weights": [1.0, 1.0, 1.0],
        "fraction_tolerance": 0.1,
        **sequential,
    }
    return run_context(config_from_dict(data))


def _params(ctx: RunContext) -> CertifyParams:
    config = ctx.config
    return CertifyParams(n=config.n, alpha=config.alpha, tau=config.tau)


def _sample(ctx: RunContext, models: Models, sampler: Any) -> list[ShardReport]:
    prepare_store(ctx, models)
    return [sample_shard(ctx, shard, models=models, sampler=sampler) for shard in plan_shards(4, 2)]


def _all_arrays(url: str) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(url, mode="r")
    return {path: np.asarray(array[...]) for path, array in group.arrays()} | {
        f"{name}/{path}": np.asarray(array[...])
        for name, sub in group.groups()
        for path, array in _walk(sub)
    }


def _walk(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, array in group.arrays():
        yield prefix + name, array
    for name, sub in group.groups():
        yield from _walk(sub, f"{prefix}{name}/")


def _same_results(a: AggregateResult, b: AggregateResult) -> bool:
    return dict(a.summaries) == dict(b.summaries)


@pytest.fixture(scope="module")
def sequential_run(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunContext, CountingSampler, list[ShardReport], AggregateResult]:
    ctx = _context(models_dir, tmp_path_factory.mktemp("seq") / "s.zarr")
    sampler = CountingSampler()
    reports = _sample(ctx, load_models(ctx), sampler)
    return ctx, sampler, reports, aggregate_store(ctx.store_url, _params(ctx))


def test_some_groups_stop_early_and_fewer_samples_are_drawn(
    sequential_run: tuple[RunContext, CountingSampler, list[ShardReport], AggregateResult],
) -> None:
    ctx, sampler, reports, _ = sequential_run
    store = SampleStore.open(ctx.store_url)
    assert store.looks == LOOKS
    not_needed = sum(r.not_needed_blocks for r in reports)
    assert not_needed > 0
    # the forward passes saved: each block not needed is 5 estimation samples of a group
    assert sampler.samples == FIXED_SAMPLES - 5 * not_needed < FIXED_SAMPLES
    stops = {
        (sigma, v, image): store.read_stop(sigma, v, image)
        for sigma in store.sigmas
        for v in store.variants
        for image in range(4)
    }
    assert all(0 <= look < len(LOOKS) for look in stops.values())
    assert any(look < len(LOOKS) - 1 for look in stops.values())
    for sigma in store.sigmas:
        for group, variants in store.groups.items():
            for image in range(4):
                end = LOOKS[max(stops[(sigma, v, image)] for v in variants)]
                flags = store.block_flags(sigma, group, "estimation", image)
                expected = [1 if start < end else 2 for start, _ in store.blocks("estimation")]
                assert flags.tolist() == expected, (sigma, group, image)
                assert store.done_blocks(sigma, group, "estimation", image).all()


def test_certificate_is_the_stopping_looks_from_the_stored_samples(
    sequential_run: tuple[RunContext, CountingSampler, list[ShardReport], AggregateResult],
) -> None:
    ctx, _, _, result = sequential_run
    store = SampleStore.open(ctx.store_url)
    schedule = LookSchedule(LOOKS, (0.5 / 3,) * 3, 0.5)
    params = _params(ctx)
    for sigma in store.sigmas:
        for variant in store.variants:
            used = 0
            for image in range(4):
                look = store.read_stop(sigma, variant, image)
                n_look = LOOKS[look]
                labels = select_labels(
                    store.read_samples(sigma, variant, "selection", image), store.num_classes
                )
                estimation = store.read_samples(sigma, variant, "estimation", image, 0, n_look)
                per_look = counts_at_looks(estimation, labels, LOOKS[: look + 1])
                # the stopping rule, run independently on the same counts, stops at that look
                rerun = run_sequential(
                    labels,
                    iter(per_look),
                    schedule,
                    tau=ctx.config.tau,
                    sigma=sigma,
                    fraction_tolerance=0.1,
                )
                assert rerun.look == look, (sigma, variant, image)
                expected = certify_at_look(
                    labels, per_look[-1], n_look, schedule.alphas[look], tau=0.55, sigma=sigma
                )
                got = certify_stored_image(store, sigma, variant, image, params)
                assert got.look == look and got.estimation_samples == n_look
                assert np.array_equal(got.labels, expected.labels)
                assert got.result.alpha == schedule.alphas[look]
                used += n_look
            summary = result.get(sigma, variant)
            assert summary.estimation_samples == used


def test_rows_report_the_mean_samples_per_image(
    sequential_run: tuple[RunContext, CountingSampler, list[ShardReport], AggregateResult],
) -> None:
    from certseg.report import build_rows

    ctx, _, _, result = sequential_run
    store = SampleStore.open(ctx.store_url)
    rows = build_rows(ctx.config, result, class_names=list(store.attrs["class_names"]))
    for row in rows:
        stops = [store.read_stop(row["sigma"], row["variant"], i) for i in range(4)]
        assert row["samples_per_image"] == N0 + np.mean([LOOKS[s] for s in stops])
    assert min(row["samples_per_image"] for row in rows) < N0 + N


def test_a_killed_run_resumes_to_the_same_store_and_results(
    sequential_run: tuple[RunContext, CountingSampler, list[ShardReport], AggregateResult],
    models_dir: Path,
    tmp_path: Path,
) -> None:
    ctx, full, _, result = sequential_run
    models = load_models(ctx)
    reference = _all_arrays(ctx.store_url)
    for kill_after in (9, 40):
        url = tmp_path / f"killed{kill_after}.zarr"
        killed = _context(models_dir, url)
        calls = 0

        def dying(image: np.ndarray, _limit: int = kill_after, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls > _limit:
                raise KeyboardInterrupt("killed")
            return reference_sampler(image, **kwargs)

        first = CountingSampler(dying)
        with pytest.raises(KeyboardInterrupt):
            _sample(killed, models, first)
        second = CountingSampler()
        _sample(killed, models, second)
        # every block drawn before the kill landed; the resumed run drew only the rest
        assert first.calls == kill_after + 1 and kill_after + second.calls == full.calls
        assert _same_results(aggregate_store(str(url), _params(killed)), result)
        arrays = _all_arrays(str(url))  # both aggregated: persisted counts included
        assert arrays.keys() == reference.keys()
        for path, values in reference.items():
            assert np.array_equal(arrays[path], values), (kill_after, path)


def test_lost_flags_or_stops_are_recomputed_without_sampling(
    models_dir: Path, tmp_path: Path
) -> None:
    ctx = _context(models_dir, tmp_path / "s.zarr")
    models = load_models(ctx)
    _sample(ctx, models, CountingSampler())
    before = _all_arrays(ctx.store_url)
    store = SampleStore.open(ctx.store_url)
    lost = [
        (sigma, group, image)
        for sigma in store.sigmas
        for group in store.groups
        for image in range(4)
        if (store.block_flags(sigma, group, "estimation", image) == 2).any()
    ]
    assert lost
    sigma, group, image = lost[0]
    key = f"done/{sigma_key(sigma)}/{group}/estimation"
    # killed after the stops were written, before "not needed" was flagged
    store.group[key][image, -1] = 0
    # killed between two variants' stops: one stop lost
    store.group[f"stop/{sigma_key(sigma)}/{store.groups[group][0]}"][image] = -1
    again = CountingSampler()
    _sample(ctx, models, again)
    assert again.calls == 0
    after = _all_arrays(ctx.store_url)
    assert all(np.array_equal(after[p], v) for p, v in before.items())


def test_looks_off_the_block_grid_are_refused(models_dir: Path, tmp_path: Path) -> None:
    ctx = _context(models_dir, tmp_path / "s.zarr", looks=[12, 30], alpha_weights=[1.0, 3.0])
    with pytest.raises(ValueError, match=r"sequential\.looks.*\[12\].*blocks of 5 samples"):
        prepare_store(ctx, load_models(ctx))


def test_recertify_and_other_params_are_refused(
    sequential_run: tuple[RunContext, CountingSampler, list[ShardReport], AggregateResult],
) -> None:
    ctx = sequential_run[0]
    with pytest.raises(ValueError, match="sampled sequentially"):
        read_stored_run(ctx.store_url, None)
    for params in (
        CertifyParams(n=20, alpha=0.5, tau=0.55),
        CertifyParams(n=N, alpha=0.1, tau=0.55),
    ):
        with pytest.raises(ValueError, match="sampled sequentially"):
            aggregate_store(ctx.store_url, params)


def test_an_unfinished_sequential_store_is_not_aggregated(models_dir: Path, tmp_path: Path) -> None:
    ctx = _context(models_dir, tmp_path / "s.zarr")
    models = load_models(ctx)
    prepare_store(ctx, models)
    sample_shard(ctx, Shard(0, 0, 4), models=models, sampler=CountingSampler())
    store = SampleStore.open(ctx.store_url)
    assert store_complete(store) is not None
    store.group["stop/sigma_0.25/clean"][1] = -1  # killed after the last block, before its stop
    assert store_complete(store) is None  # so a re-run samples (recounts), not re-reads
    with pytest.raises(ValueError, match="no stopping look yet"):
        aggregate_store(ctx.store_url, _params(ctx))


def test_fixed_n_stores_are_unchanged_and_report_n0_plus_n(tmp_path: Path) -> None:
    """Sequential off: no stop arrays, no `sequential` attribute, flags 0/1, and each image's
    certificate uses all n estimation samples."""
    store = fill_toy_store(str(tmp_path / "toy.zarr"))
    assert store.looks == () and "sequential" not in store.attrs
    assert "stop" not in dict(store.group.groups())
    with pytest.raises(ValueError, match="not sequential"):
        store.read_stop(0.25, "v1", 0)
    with pytest.raises(ValueError, match="not sequential"):
        store.mark_not_needed(0.25, "none", 0, 0)
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.01, tau=0.6))
    assert all(s.estimation_samples == 20 * 3 for s in result.summaries.values())
    template = StoreTemplate(
        config_id="c" * 64,
        config_json="{}",
        code_version="t",
        manifest_sha256="m",
        dataset_name="toy",
        image_ids=("a",),
        image_shapes=((4, 4),),
        num_classes=2,
        class_names=("x", "y"),
        ignore_index=255,
        sigmas=(0.25,),
        variants=("v",),
        variant_segmenters={"v": {sigma_key(0.25): "s"}},
        groups={"none": ("v",)},
        n0=2,
        n=10,
        samples_per_chunk=5,
    )
    assert not any(spec.path.startswith("stop/") for spec in template.array_specs())
    assert "sequential" not in template.root_attrs()


def test_sequential_template_layout_and_block_grid() -> None:
    """The sequential part of the layout contract: one int16 stop array per (σ, variant), fill
    -1, one image per chunk; the `sequential` attribute; looks off the block grid refused."""
    base: dict[str, Any] = {
        "config_id": "c" * 64,
        "config_json": "{}",
        "code_version": "t",
        "manifest_sha256": "m",
        "dataset_name": "toy",
        "image_ids": ("a", "b"),
        "image_shapes": ((4, 4), (4, 4)),
        "num_classes": 2,
        "class_names": ("x", "y"),
        "ignore_index": 255,
        "sigmas": (0.25,),
        "variants": ("v", "w"),
        "variant_segmenters": {v: {sigma_key(0.25): "s"} for v in ("v", "w")},
        "groups": {"none": ("v", "w")},
        "n0": 2,
        "n": 10,
        "samples_per_chunk": 5,
    }
    template = StoreTemplate(
        **base, looks=(5, 10), look_alphas=(0.025, 0.075), alpha=0.1, fraction_tolerance=0.0
    )
    stops = [s for s in template.array_specs() if s.path.startswith("stop/")]
    assert [(s.path, s.shape, s.chunks, s.dtype, s.fill_value) for s in stops] == [
        (f"stop/{sigma_key(0.25)}/{v}", (2,), (1,), "int16", -1) for v in ("v", "w")
    ]
    assert template.root_attrs()["sequential"] == {
        "looks": [5, 10],
        "alphas": [0.025, 0.075],
        "alpha": 0.1,
        "fraction_tolerance": 0.0,
    }
    with pytest.raises(ValueError, match=r"sequential\.looks \[4, 10\].*blocks of 5 samples"):
        StoreTemplate(**base, looks=(4, 10), look_alphas=(0.05, 0.05), alpha=0.1)
    with pytest.raises(ValueError, match="must end at n = 10"):
        StoreTemplate(**base, looks=(5,), look_alphas=(0.1,), alpha=0.1)
