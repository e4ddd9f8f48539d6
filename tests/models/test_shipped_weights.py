"""The shipped embedded models load and reach what their model cards state.

Each MODEL_CARD.md carries YAML front matter written by the training script. The segmenters are
re-measured on the first `subset_images` synthetic test images (fp32) and must match the card's
`clean_subset` numbers within TOL_ACC / TOL_MIOU (bf16-vs-fp32 and BLAS differences move a handful
of pixels, not more); the denoiser's one-shot MSE factor on a 16-image subset must reach
FACTOR_SHARE of the card's 128-image factor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from certseg.data.synthetic import CLASSES, SyntheticDataset
from certseg.models import SegmenterSpec, build_segmenter
from certseg.models.compact import load_compact_segmenter, read_compact_config

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SEGMENTERS = (
    "segmenter-clean",
    "segmenter-noise-0.25",
    "segmenter-noise-0.50",
    "segmenter-finetuned-denoised",
)
TOL_ACC = 0.005
TOL_MIOU = 0.01
FACTOR_SHARE = 0.8


def read_card(folder: Path) -> dict[str, Any]:
    """The YAML front matter of folder/MODEL_CARD.md."""
    text = (folder / "MODEL_CARD.md").read_text()
    assert text.startswith("---\n"), f"{folder}/MODEL_CARD.md has no front matter"
    front: dict[str, Any] = yaml.safe_load(text.split("---\n")[1])
    return front


def scores(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Pixel accuracy and mIoU written out per class (independent of the training script)."""
    acc = float((pred == target).mean())
    ious = []
    for c in range(num_classes):
        union = np.logical_or(pred == c, target == c).sum()
        if union:
            ious.append(np.logical_and(pred == c, target == c).sum() / union)
    return acc, float(np.mean(ious))


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, np.ndarray]:
    """The first 48 test images ([0, 1], (48, 3, 64, 64)) and targets ((48, 64, 64))."""
    ds = SyntheticDataset(seed=0, num_images=48, split="test")
    examples = [ds.load(i) for i in range(len(ds))]
    images = torch.from_numpy(np.stack([e.image for e in examples]))
    return images, np.stack([e.target for e in examples]).astype(np.int64)


def segment(folder: Path, images: torch.Tensor) -> np.ndarray:
    """(N, H, W) argmax through the registry adapter (which normalizes [0, 1] input itself)."""
    segmenter = build_segmenter(SegmenterSpec(family="compact", path=str(folder)))
    with torch.inference_mode():
        return segmenter(images).argmax(1).numpy()


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_reaches_card_accuracy(
    name: str, test_split: tuple[torch.Tensor, np.ndarray]
) -> None:
    folder = WEIGHTS / name
    card = read_card(folder)
    assert card["eval"]["subset_images"] == 48 and card["eval"]["seed"] == 0
    images, targets = test_split
    pred = segment(folder, images)
    acc, miou = scores(pred, targets, len(CLASSES))
    expected = card["metrics"]["clean_subset"]
    assert acc == pytest.approx(expected["pixel_accuracy"], abs=TOL_ACC)
    assert miou == pytest.approx(expected["miou"], abs=TOL_MIOU)
    # the adapter path and the raw module with normalization written here agree
    config = read_compact_config(folder)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        raw = load_compact_segmenter(folder)((images[:8] - mean) / std).argmax(1).numpy()
    np.testing.assert_array_equal(raw, pred[:8])


def test_segmenter_configs_and_files() -> None:
    total = 0
    for name in (*SEGMENTERS, "denoiser"):
        folder = WEIGHTS / name
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        total += sum(p.stat().st_size for p in files)
    for name in SEGMENTERS:
        config = read_compact_config(WEIGHTS / name)
        assert config.num_classes == len(CLASSES)
    assert total < 50 * 2**20


def test_noise_trained_beats_clean_on_noisy_input(
    test_split: tuple[torch.Tensor, np.ndarray],
) -> None:
    """At its own σ, each noise-trained segmenter is more accurate on noisy images than the
    clean one (one seeded draw over 48 images): what noise training is for."""
    images, targets = test_split
    gen = torch.Generator().manual_seed(99)
    for sigma, name in ((0.25, "segmenter-noise-0.25"), (0.5, "segmenter-noise-0.50")):
        noisy = images + sigma * torch.randn(images.shape, generator=gen)
        acc_noise, _ = scores(segment(WEIGHTS / name, noisy), targets, len(CLASSES))
        acc_clean, _ = scores(segment(WEIGHTS / "segmenter-clean", noisy), targets, len(CLASSES))
        assert acc_noise > acc_clean + 0.05, (sigma, acc_noise, acc_clean)


def test_denoiser_reaches_card_mse_factor(test_split: tuple[torch.Tensor, np.ndarray]) -> None:
    from certseg.denoise import load_denoiser

    folder = WEIGHTS / "denoiser"
    card = read_card(folder)
    denoiser = load_denoiser(folder)
    images = test_split[0][:16]
    gen = torch.Generator().manual_seed(5)
    for sigma in (0.25, 0.5):
        noisy = images + sigma * torch.randn(images.shape, generator=gen)
        with torch.inference_mode():
            out = denoiser.denoise(noisy, sigma)
        factor = float(((noisy - images) ** 2).mean() / ((out - images) ** 2).mean())
        expected = card["one_shot_denoising"][f"sigma_{sigma:.2f}"]["factor"]
        assert factor >= FACTOR_SHARE * expected, (sigma, factor, expected)
        assert factor > 2.0
