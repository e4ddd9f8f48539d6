"""The model-compute benchmark runs end to end on tiny inputs (seconds, not minutes)."""

from __future__ import annotations

from tests.test_bench_scale import run_bench


def test_bench_flops_reports_fraction_of_matmul() -> None:
    out = run_bench(
        "bench.bench_flops", "--unet-size", "32", "--seg-size", "32x64", "--rounds", "1"
    )
    assert "GFLOP per forward (FlopCounterMode)" in out
    assert "| denoiser UNet | fp32 |" in out and "| segmenter | fp32 channels_last |" in out
