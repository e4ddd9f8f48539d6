"""The certify benchmark runs end to end on a small image (its tabulated and naive paths agree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_certify_small_image() -> None:
    args = ["--height", "16", "--width", "24", "--repeats", "1", "--naive-repeats", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_certify", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "certificates identical: True" in done.stdout
    assert "speed-up tabulated vs naive" in done.stdout
