"""The "segformer" family: a tiny SegformerConfig saved with save_pretrained (logits at H/4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from certseg.models import SegmenterSpec
from tests.models.contract import MEAN, STD, SegmenterContract, normalize

transformers = pytest.importorskip("transformers")


def tiny_config(num_labels: int) -> object:
    return transformers.SegformerConfig(
        num_channels=3,
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=num_labels,
    )


class TestSegformerFamily(SegmenterContract):
    folder: Path
    atol = 1e-4

    def build_spec(self, folder: Path) -> SegmenterSpec:
        model = transformers.SegformerForSemanticSegmentation(tiny_config(self.num_classes))
        model.save_pretrained(folder)
        # Normalization comes from the folder's preprocessor config (no mean/std in the spec).
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"image_mean": list(MEAN), "image_std": list(STD)})
        )
        type(self).folder = folder
        return SegmenterSpec(family="segformer", path=str(folder))

    def reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        model = transformers.SegformerForSemanticSegmentation.from_pretrained(type(self).folder)
        model.eval()
        logits = model(pixel_values=normalize(images, MEAN, STD)).logits
        assert logits.shape[-2:] == (self.height // 4, self.width // 4)
        return torch.nn.functional.interpolate(
            logits, size=images.shape[-2:], mode="bilinear", align_corners=False
        )
