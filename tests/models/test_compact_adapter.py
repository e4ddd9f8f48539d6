"""The "compact" family: the shipped segmenter's folder (config.json + model.safetensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from certseg.models import SegmenterSpec, build_segmenter
from certseg.models.compact import (
    CompactArch,
    CompactConfig,
    build_compact_segmenter,
    load_compact_segmenter,
    save_compact_segmenter,
)
from tests.models.contract import MEAN, STD, SegmenterContract, normalize


class TestCompactFamily(SegmenterContract):
    folder: Path

    def build_spec(self, folder: Path) -> SegmenterSpec:
        config = CompactConfig(
            num_classes=self.num_classes, mean=MEAN, std=STD, arch=CompactArch((4, 8, 8, 8))
        )
        model = build_compact_segmenter(config)
        with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        save_compact_segmenter(model, config, folder)
        type(self).folder = folder
        return SegmenterSpec(family="compact", path=str(folder), name="compact-test")

    def reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        return load_compact_segmenter(type(self).folder)(normalize(images, MEAN, STD))


def test_compact_spec_normalization_overrides_config(tmp_path: Path) -> None:
    config = CompactConfig(num_classes=3, mean=MEAN, std=STD, arch=CompactArch((4, 4, 4, 4)))
    save_compact_segmenter(build_compact_segmenter(config), config, tmp_path)
    default = build_segmenter(SegmenterSpec(family="compact", path=str(tmp_path)))
    assert default.mean_values == pytest.approx(MEAN) and default.std_values == pytest.approx(STD)
    custom = build_segmenter(
        SegmenterSpec(family="compact", path=str(tmp_path), mean=(0.5, 0.5, 0.5), std=(1, 1, 1))
    )
    assert custom.mean_values == (0.5, 0.5, 0.5)


def test_compact_missing_folder() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        build_segmenter(SegmenterSpec(family="compact", path="/nonexistent/compact"))
