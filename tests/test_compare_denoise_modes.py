"""scripts/compare_denoise_modes.py runs end to end on a tiny setting and reports what it ran."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_denoise_modes.py"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@functools.cache
def load_script() -> ModuleType:
    """The script as a module (registered in sys.modules, as its dataclass needs)."""
    name = "certseg_script_compare_denoise_modes"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_mosaic_images_are_the_64_pixel_scenes() -> None:
    from certseg.data.synthetic import SyntheticDataset

    images = load_script().load_images("mosaic", 128, 1, seed=0)
    ((image_id, image, target),) = images
    assert image_id == "mosaic-128-0"
    scenes = SyntheticDataset(seed=0, num_images=4, size=64, split="test")
    assert image.shape == (3, 128, 128) and target.shape == (128, 128)
    assert np.array_equal(image[:, 64:, :64], scenes.load(2).image)
    assert np.array_equal(target[:64, 64:], scenes.load(1).target)
    with pytest.raises(ValueError, match="multiple of 64"):
        load_script().load_images("mosaic", 100, 1, seed=0)


@pytest.mark.skipif(not (WEIGHTS / "denoiser" / "unet").is_dir(), reason="shipped weights absent")
def test_runs_end_to_end_and_tiled_equals_resize_at_the_tile_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["x", "--layout", "mosaic", "--size", "64", "--num-images", "1", "--n0", "1"]
    argv += ["--n", "2", "--sigmas", "0.25", "--out", str(tmp_path), "--alpha", "0.5"]
    monkeypatch.setattr(sys, "argv", argv)
    import torch

    threads = torch.get_num_threads()
    try:
        load_script().main()  # sets torch's thread count (--threads)
    finally:
        torch.set_num_threads(threads)
    rows = json.loads((tmp_path / "mosaic-64.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["none", "resize-1", "tiled-1", "resize-2", "tiled-2"]
    passes = {r["mode"]: (r["unet_passes"], r["segmenter_passes"]) for r in rows}
    assert passes == {
        "none": (0, 3),
        "resize-1": (3, 3),
        "tiled-1": (3, 3),  # one 64×64 tile
        "resize-2": (6, 3),
        "tiled-2": (6, 3),
    }
    metrics = {r["mode"]: (r["certified_accuracy"], r["abstain"]) for r in rows}
    assert metrics["tiled-1"] == metrics["resize-1"] and metrics["tiled-2"] == metrics["resize-2"]
    assert (tmp_path / "mosaic-64.png").stat().st_size > 0
    assert "| 0.25 | tiled-1" in (tmp_path / "mosaic-64.md").read_text()
