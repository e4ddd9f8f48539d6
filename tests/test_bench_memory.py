"""The memory benchmark runs end to end on a tiny frame (seconds) and reports its peak RSS."""

from __future__ import annotations

from tests.test_bench_scale import run_bench


def test_bench_memory_reports_the_peak_and_the_batch() -> None:
    out = run_bench(
        "bench.bench_memory",
        *("--height", "64", "--width", "128", "--tile", "64", "--n0", "2", "--n", "5"),
        *("--denoiser-resolution", "32", "--memory-mib", "12"),
    )
    assert "peak RSS of the whole run" in out
    assert "forward batch chosen (micro_batch_size)" in out
    assert "1 of 1" in out  # the estimation block was written and flagged
    batch = out.split("forward batch chosen (micro_batch_size) | ")[1].split(" ")[0]
    assert 1 <= int(batch) < 32  # 12 MiB fits a few 64x128 samples (~3.5 MiB each), not 32
