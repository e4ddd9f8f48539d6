"""The store-size benchmark runs end to end on a tiny frame (seconds, not minutes)."""

from __future__ import annotations

from tests.test_bench_scale import TINY, run_bench


def test_bench_store_checks_every_codec_round_trip_and_sizes_cityscapes() -> None:
    out = run_bench(
        "bench.bench_store", *TINY, "--samples", "2", "--sigmas", "0.5", "--variants", "segcertify"
    )
    for codec in ("zstd 0 (zarr default = zstd 3)", "blosc zstd 3 + bitshuffle", "pack5 + zstd 3"):
        assert f"| {codec} |" in out
    assert "| mode XOR + zstd 3 |" in out
    assert "ZstdCodec(level=0" in out  # zarr's default codec of the store's sample arrays
    assert "### Cityscapes val: 500 images x 3 sigma x 2 variants" in out
