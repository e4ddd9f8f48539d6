"""The training scripts are seeded and reproducible: two tiny runs give byte-identical weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from safetensors.torch import load_file

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_segmenter_run(out: Path, mode: str, seed: int = 0) -> None:
    argv = [
        "--mode",
        mode,
        "--out",
        str(out),
        "--steps",
        "2",
        "--num-train",
        "8",
        "--eval-images",
        "4",
        "--widths",
        "4,4,4,4",
        "--batch-size",
        "4",
        "--seed",
        str(seed),
        "--bf16",
        "off",
    ]
    if mode == "noise":
        argv += ["--sigma", "0.25"]
    load_script("train_segmenter").main(argv)


@pytest.mark.parametrize("mode", ["clean", "noise"])
def test_segmenter_script_is_reproducible(tmp_path: Path, mode: str) -> None:
    tiny_segmenter_run(tmp_path / "a", mode)
    tiny_segmenter_run(tmp_path / "b", mode)
    tiny_segmenter_run(tmp_path / "c", mode, seed=1)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    c = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(c[k]) for k in a)
    card = yaml.safe_load((tmp_path / "a" / "MODEL_CARD.md").read_text().split("---\n")[1])
    assert card["steps"] == 2 and card["mode"] == mode
    assert "--steps 2" in card["command"]
    assert 0.0 <= card["metrics"]["clean"]["pixel_accuracy"] <= 1.0


def test_segmenter_script_rejects_bad_flags(tmp_path: Path) -> None:
    script = load_script("train_segmenter")
    with pytest.raises(SystemExit):
        script.main(["--mode", "noise", "--out", str(tmp_path), "--steps", "1"])  # no --sigma
    with pytest.raises(SystemExit):
        script.main(["--mode", "clean", "--out", str(tmp_path), "--steps", "1", "--minutes", "1"])


def test_denoiser_script_is_reproducible(tmp_path: Path) -> None:
    script = load_script("train_denoiser")
    for name in ("a", "b"):
        script.main(
            [
                "--out",
                str(tmp_path / name),
                "--steps",
                "2",
                "--num-train",
                "4",
                "--batch-size",
                "2",
                "--widths",
                "16,32",
                "--attn",
                "0,1",
                "--bf16",
                "off",
            ]
        )
    path = Path("unet") / "diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "a" / path)), load_file(str(tmp_path / "b" / path))
    assert all(a[k].equal(b[k]) for k in a)
    assert (tmp_path / "a" / "scheduler" / "scheduler_config.json").is_file()


def test_finetune_on_denoised_runs_through_certseg_denoise(tmp_path: Path) -> None:
    """Denoised mode with the shipped denoiser and clean segmenter: a 2-step run writes a card
    with denoised-input metrics, labelled as needing training."""
    weights = SCRIPTS.parent / "weights"
    out = tmp_path / "ft"
    argv = [
        "--mode",
        "denoised",
        "--init",
        str(weights / "segmenter-clean"),
        "--denoiser",
        str(weights / "denoiser"),
        "--out",
        str(out),
        "--steps",
        "2",
        "--num-train",
        "8",
        "--pool-size",
        "4",
        "--eval-images",
        "4",
        "--batch-size",
        "4",
        "--bf16",
        "off",
    ]
    load_script("train_segmenter").main(argv)
    text = (out / "MODEL_CARD.md").read_text()
    card = yaml.safe_load(text.split("---\n")[1])
    assert {"denoised_0.25", "denoised_0.50"} <= set(card["metrics"])
    assert "NEEDS TRAINING" in text
    assert "--init" in card["command"] and "--denoiser" in card["command"]
