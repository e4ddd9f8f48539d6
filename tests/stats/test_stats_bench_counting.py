"""The counting benchmark runs end to end on a small image (new and old paths agree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_counting_small_image() -> None:
    args = ["--height", "24", "--width", "40", "--repeats", "2", "--certify-repeats", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_counting", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "identical to the old path: new, blocks of 100 True, new, blocks of 10 True" in done.stdout
    )
    assert "identical to the landed body: True" in done.stdout
    assert "| certify_pixels / bincount |" in done.stdout
    assert "| new / plain pass, C = 19 |" in done.stdout
