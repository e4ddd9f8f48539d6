"""The sampling benchmark runs end to end on the shipped models (few samples)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_sampling_runs_and_reports_both_ratios() -> None:
    args = ["--samples", "4", "--batch-size", "2", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_sampling", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| 2 segmenters, one shared denoiser pass |" in done.stdout
    assert "| shared / separate speed |" in done.stdout
    assert "| denoiser -> segmenter, fp32 |" in done.stdout
