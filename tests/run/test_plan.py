"""certseg.run.plan: exact counts of forward passes, samples and stored maps, and a calibration
that measures real samples and writes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from certseg.run.plan import count_forward_passes, plan_run
from tests.pipeline_fixtures import make_models_dir, tiny_context


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


def test_forward_passes_counted_by_hand(models_dir: Path, tmp_path: Path) -> None:
    # 4 images, σ ∈ {0.25, 0.5}, n0 + n = 3 + 8, health 2 images. Groups: "none" → clean
    # (segmenter clean) and matched (noisy at 0.25, clean at 0.5); "ddpm" → denoised (clean).
    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    draws = 4 * 11 + 2
    samples, passes = count_forward_passes(ctx, 4)
    assert samples == 2 * 2 * 4 * 11  # σ × groups × images × (n0 + n): the progress total
    assert passes == {
        "denoiser ddpm": 2 * draws,
        # σ=0.25: group none (clean), group ddpm; σ=0.5: none, ddpm; + 4 clean predictions
        "segmenter clean": 4 * draws + 4,
        "segmenter noisy": 1 * draws + 4,
    }


def test_k_step_denoising_multiplies_the_denoiser_passes(models_dir: Path, tmp_path: Path) -> None:
    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    denoisers = {
        name: spec.model_copy(update={"num_steps": 4})
        for name, spec in ctx.config.denoisers.items()
    }
    config = ctx.config.model_copy(update={"denoisers": denoisers})
    _, passes = count_forward_passes(replace(ctx, config=config), 4)
    assert passes["denoiser ddpm"] == 4 * 2 * (4 * 11 + 2)


def test_plan_calibrates_and_writes_nothing(models_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    ctx = tiny_context(models_dir, store)
    plan = plan_run(ctx)
    assert not store.exists() and list(tmp_path.iterdir()) == []
    assert plan.images == 4 and plan.frame == (32, 32)
    assert plan.stored_maps == 2 * 3 * 4 * 11  # σ × variants × images × (n0 + n)
    assert plan.raw_bytes == plan.stored_maps * 32 * 32  # uint8 maps
    assert 0 < plan.store_bytes < plan.raw_bytes
    assert set(plan.seconds_per_sample) == {"none", "ddpm"}
    assert all(s > 0 for s in plan.seconds_per_sample.values())
    assert plan.expected_seconds == pytest.approx(
        sum(s * 4 * 11 * 2 for s in plan.seconds_per_sample.values())
    )
    assert plan.peak_memory_bytes > 10 * 2**20 and plan.memory_kind == "RSS"
    assert plan.micro_batches == {
        "none": ctx.config.sampling.batch_size,
        "ddpm": ctx.config.sampling.batch_size,
    }
    assert (plan.device, plan.workers) == ("cpu", 1)


def test_cli_plan_prints_the_plan_and_names_a_bad_config(models_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from certseg.cli import app
    from tests.pipeline_fixtures import tiny_config_dict, write_config

    store = tmp_path / "store.zarr"
    config = write_config(tmp_path / "run.yaml", tiny_config_dict(models_dir, store))
    result = CliRunner().invoke(app, ["plan", str(config)])
    assert result.exit_code == 0, result.output
    assert "noisy samples: 176; stored class maps: 264" in result.output
    assert f"segmenter clean: {4 * 46 + 4}" in result.output
    assert "ms per noisy sample on cpu" in result.output
    assert not store.exists()  # nothing written
    data = tiny_config_dict(models_dir, store)
    data["n"] = 0
    bad = write_config(tmp_path / "bad.yaml", data)
    result = CliRunner().invoke(app, ["plan", str(bad)])
    assert result.exit_code == 1
    assert "error:" in result.output and "bad.yaml" in result.output and "n" in result.output


def test_plan_reports_the_batch_the_memory_budget_allows(models_dir: Path, tmp_path: Path) -> None:
    ctx = tiny_context(models_dir, tmp_path / "s.zarr")
    sampling = ctx.config.sampling.model_copy(update={"memory_mib": 1, "batch_size": 100_000})
    tight = replace(ctx, config=ctx.config.model_copy(update={"sampling": sampling}))
    plan = plan_run(tight)
    assert all(1 <= b < 100_000 for b in plan.micro_batches.values()), plan.micro_batches
