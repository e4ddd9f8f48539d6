"""Stand-in models and configs for the CLI tests (tiny, fast, written into tmp folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.pipeline_fixtures import NUM_CLASSES, make_models_dir, tiny_config_dict, write_config


def error_lines(output: str) -> list[str]:
    """The `error:` lines of a CLI output."""
    return [line for line in output.splitlines() if line.startswith("error:")]


def write_traced_fixed_size(path: Path, size: int = 256) -> Path:
    """A torch.jit.trace'd segmenter whose reshape bakes in the traced size×size input: it
    only accepts size×size images (the trap a traced model sets)."""
    import torch
    from torch import nn

    class FixedSize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, NUM_CLASSES, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = self.conv(x).reshape(1, NUM_CLASSES, size * size)
            return flat.reshape(1, NUM_CLASSES, size, size)

    torch.manual_seed(0)
    example = torch.rand(1, 3, size, size)
    traced = torch.jit.trace(FixedSize().eval(), example)  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(path))
    return path


def write_traced_any_size(path: Path) -> Path:
    """A torch.jit.trace'd 1×1-conv segmenter (no shape-dependent code: any size works)."""
    import torch
    from torch import nn

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1)).eval()
    traced = torch.jit.trace(model, torch.rand(1, 3, 16, 16))  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(path))
    return path


def tiny_config(tmp_path: Path, **changes: Any) -> tuple[Path, dict[str, Any]]:
    """tiny_config_dict over the shared stand-in models, store in tmp_path; written as run.yaml."""
    models = make_models_dir(tmp_path.parent / "standins")
    data = tiny_config_dict(models, tmp_path / "store.zarr", shards=1)
    data.update(changes)
    return write_config(tmp_path / "run.yaml", data), data


def build_colour_net(seed: int, hidden: int = 8) -> Any:
    """A `python`-family factory for the tests: a seeded two-layer 1×1-conv net (3 → 7 logits).
    Named in a config as "tests.cli.helpers:build_colour_net" with kwargs {seed, hidden}."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, NUM_CLASSES, 1))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return net.eval()


def not_a_module() -> str:
    """A `python`-family factory that returns no nn.Module (for the error test)."""
    return "not a module"


def own_model_project(root: Path) -> Path:
    """A user's project as the docs describe it, every path in its config relative:
    root/configs/run.yaml, root/models/traced.pt (a torch.jit.trace'd segmenter), root/data (a
    folder dataset: images/, masks/, classes.txt), store and MLflow under root/runs. Returns the
    config file."""
    from certseg.data.registry import open_dataset
    from certseg.data.spec import DatasetSpec
    from tests.data.layouts import write_folder_from_dataset

    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "configs").mkdir(exist_ok=True)
    write_traced_any_size(root / "models" / "traced.pt")
    synthetic = open_dataset(
        DatasetSpec(kind="synthetic", split="test", seed=3, num_images=2, size=32)
    )
    write_folder_from_dataset(root / "data", synthetic)
    data = {
        "name": "own-model",
        "dataset": {"kind": "folder", "root": "../data"},
        "segmenters": {
            "traced": {
                "family": "torchscript",
                "path": "../models/traced.pt",
                "num_classes": NUM_CLASSES,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.25, 0.25, 0.25],
            }
        },
        "variants": [{"name": "traced", "segmenter": "traced", "label": "traced model"}],
        "sigmas": [0.25],
        "n0": 3,
        "n": 8,
        "alpha": 0.1,
        "tau": 0.6,
        "sampling": {"batch_size": 4, "samples_per_chunk": 4, "bf16": False, "threads": 1},
        "health": {"num_images": 0},
        "store": {"url": "../runs/store.zarr"},
        "tracking": {"uri": "sqlite:///../runs/mlruns.db", "experiment": "own-model"},
        "dask": {"n_workers": 1, "threads_per_worker": 1, "processes": False},
        "shards": 1,
    }
    return write_config(root / "configs" / "run.yaml", data)
