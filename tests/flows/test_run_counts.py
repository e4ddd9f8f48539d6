"""One `certseg certify`, counted: the config is parsed once, each model loaded once (the
denoiser only when something is sampled through it), each image decoded once per stage that needs
it (prepare, then sampling) — fresh and resumed. Counting wrappers around the real functions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import certseg.run.models as run_models
from certseg.cli import app
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _folder_dataset(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(7)) + "\n")
    rng = np.random.default_rng(0)
    for stem in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        Image.fromarray(rng.integers(0, 7, (20, 24), dtype=np.uint8)).save(
            root / "masks" / f"{stem}.png"
        )
    return root


def test_parse_once_load_once_decode_once_per_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers
    import torch
    import yaml

    import certseg.data.files as files

    models = make_models_dir(tmp_path.parent / "standins")
    data = tiny_config_dict(models, tmp_path / "store.zarr", shards=2)
    data["dataset"] = {"kind": "folder", "root": str(_folder_dataset(tmp_path / "folder"))}
    data["health"] = {"num_images": 0}
    config = write_config(tmp_path / "run.yaml", data)
    text = config.read_text()

    counts: Counter[str] = Counter()
    safe_load, decode = yaml.safe_load, files.decode_image
    jit_load = torch.jit.load
    unet_load = diffusers.UNet2DModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def counting_yaml(stream: Any) -> Any:
        body = stream.read() if hasattr(stream, "read") else stream
        counts["config parsed"] += body == text
        return safe_load(body)

    def counting_decode(data: bytes, path: Path, *, rel: str) -> Any:
        counts[rel] += 1
        return decode(data, path, rel=rel)

    def counting_jit(*args: Any, **kwargs: Any) -> Any:
        counts["segmenter loads"] += 1
        return jit_load(*args, **kwargs)

    def counting_unet(cls: Any, *args: Any, **kwargs: Any) -> Any:
        counts["denoiser loads"] += 1
        return unet_load(cls, *args, **kwargs)

    monkeypatch.setattr(yaml, "safe_load", counting_yaml)
    monkeypatch.setattr(files, "decode_image", counting_decode)
    monkeypatch.setattr(torch.jit, "load", counting_jit)
    monkeypatch.setattr(diffusers.UNet2DModel, "from_pretrained", classmethod(counting_unet))
    images = ["images/a.png", "images/b.png", "images/c.png"]

    monkeypatch.setattr(run_models, "_CACHE", {})  # as in a new process
    fresh = CliRunner().invoke(app, ["certify", str(config), "--quiet", "--no-track"])
    assert fresh.exit_code == 0, fresh.output
    assert counts["config parsed"] == 1
    assert counts["segmenter loads"] == 2  # clean and noisy, each once
    assert counts["denoiser loads"] == 1
    assert {rel: counts[rel] for rel in images} == dict.fromkeys(images, 2)  # prepare, sample

    counts.clear()
    monkeypatch.setattr(run_models, "_CACHE", {})
    resumed = CliRunner().invoke(app, ["certify", str(config), "--quiet", "--no-track"])
    assert resumed.exit_code == 0, resumed.output
    assert counts["config parsed"] == 1
    assert counts["segmenter loads"] == 2  # the probe, before the store is reopened
    assert counts["denoiser loads"] == 0  # nothing left to sample through it
    assert {rel: counts[rel] for rel in images} == dict.fromkeys(images, 1)  # prepare only
