"""`certseg certify` end to end on each on-disk layout (slow: a Prefect harness and Dask).

Stand-in models with random weights: this checks the plumbing from folder to store, never a result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.data.layouts import write_cityscapes, write_folder, write_pascal_context, write_png

pytestmark = pytest.mark.slow


def _scripted_segmenter(path: Path, num_classes: int) -> Path:
    """A seeded 3×3-conv stand-in segmenter with `num_classes` outputs, saved as TorchScript."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Conv2d(3, num_classes, 3, padding=1).eval()
    torch.jit.save(torch.jit.script(net), str(path))
    return path


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _config(
    root: Path, name: str, num_classes: int, dataset: dict[str, Any], *, health: int = 1
) -> Path:
    from tests.pipeline_fixtures import tiny_config_dict, write_config, write_tiny_denoiser

    if not (root / "denoiser").exists():
        write_tiny_denoiser(root / "denoiser")
    segmenter = {
        "family": "torchscript",
        "num_classes": num_classes,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "path": str(_scripted_segmenter(root / f"{name}.pt", num_classes)),
    }
    data = tiny_config_dict(root, root / f"{name}.zarr", shards=2)
    data["segmenters"] = {"clean": segmenter, "noisy": segmenter, "broken": segmenter}
    data["denoisers"] = {"ddpm": {"path": str(root / "denoiser")}}
    data["dataset"] = dataset
    data["health"] = {"num_images": health, "split": "train", "floor": 0.0}
    return write_config(root / f"{name}.yaml", data)


def _certify(config: Path, *extra: str) -> Any:
    from typer.testing import CliRunner

    from certseg.cli import app

    return CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["certify", str(config), "--no-track", "--quiet", *extra]
    )


@pytest.mark.usefixtures("harness")
def test_certify_each_layout(tmp_path: Path) -> None:
    from certseg.storage import SampleStore

    cityscapes = write_cityscapes(tmp_path / "cs", size=(16, 32))
    write_cityscapes(cityscapes, split="train", size=(16, 32), seed=1)
    pascal = write_pascal_context(tmp_path / "pc", size=(20, 24))
    write_pascal_context(pascal, split="train", ids=("2009_000001",), seed=1)
    cases = {
        "cityscapes": (19, {"kind": "cityscapes", "root": str(cityscapes)}, "cityscapes/val", 4),
        "pascal": (
            59,
            {
                "kind": "pascal_context",
                "root": str(pascal),
                "resize": [32, 32],
                "subset": {"every": 2},
            },
            "pascal_context59/val@32x32",
            2,
        ),
    }
    for name, (num_classes, dataset, dataset_name, num_images) in cases.items():
        result = _certify(_config(tmp_path, name, num_classes, dataset))
        assert result.exit_code == 0, result.output
        store = SampleStore.open(str(tmp_path / f"{name}.zarr"), read_only=True)
        assert store.attrs["dataset_name"] == dataset_name
        assert len(store.image_ids) == num_images and store.num_classes == num_classes


@pytest.mark.usefixtures("harness")
def test_folder_bad_input_stops_before_the_store_and_skip_invalid_records(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "f", size=(12, 20))
    write_png(folder / "masks/orphan.png", np.zeros((12, 20), np.uint8))
    dataset = {"kind": "folder", "root": str(folder)}
    config = _config(tmp_path, "folder", 3, dataset, health=0)  # a folder has no other split
    stopped = _certify(config)
    assert stopped.exit_code == 1
    assert "masks/orphan.png: mask without an image" in stopped.output
    assert not (tmp_path / "folder.zarr").exists()
    wrong = _config(tmp_path, "wrong", 19, dataset, health=0)
    mismatch = _certify(wrong, "--skip-invalid")
    assert mismatch.exit_code == 1 and "3 classes, the segmenter predicts 19" in mismatch.output
    assert not (tmp_path / "wrong.zarr").exists()
    skipped = _certify(config, "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped (--skip-invalid): masks/orphan.png" in skipped.output
    assert (tmp_path / "folder.zarr").exists()
