"""The scale benchmark runs end to end on a tiny frame (seconds, not minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


TINY = ["--height", "64", "--width", "128", "--tile", "64", "--n0", "3", "--rounds", "1"]


def test_bench_scale_reports_every_stage_and_the_target() -> None:
    out = run_bench(
        "bench.bench_scale", *TINY, "--n", "4", "--samples", "1", "--denoiser-resolution", "32"
    )
    for stage in (
        "noise",
        "denoiser: UNet",
        "segmenter: net",
        "argmax",
        "compress",
        "vote counting",
    ):
        assert f"| {stage} |" in out
    assert "target: everything except the model forwards and the noise (CPU)" in out
    assert "sample_class_maps with the stand-ins" in out
