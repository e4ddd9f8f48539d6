"""The "torchscript" family: a scripted model returning {"out": logits}; a torch.export .pt2."""

from __future__ import annotations

from pathlib import Path

import torch

from certseg.models import SegmenterSpec
from tests.models.contract import MEAN, STD, SegmenterContract, normalize
from tests.models.nets import DictNet


class TestTorchScriptFamily(SegmenterContract):
    net: DictNet

    def build_spec(self, folder: Path) -> SegmenterSpec:
        type(self).net = DictNet(self.num_classes).eval()
        path = folder / "model.pt"
        torch.jit.save(torch.jit.script(type(self).net), str(path))
        return SegmenterSpec(
            family="torchscript", path=str(path), num_classes=self.num_classes, mean=MEAN, std=STD
        )

    def reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        return type(self).net(normalize(images, MEAN, STD))["out"]


class TestTorchExportFamily(SegmenterContract):
    net: DictNet

    def build_spec(self, folder: Path) -> SegmenterSpec:
        type(self).net = DictNet(self.num_classes).eval()
        example = torch.rand(2, 3, self.height, self.width)
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(type(self).net, (example,), dynamic_shapes={"x": {0: batch}})
        path = folder / "model.pt2"
        torch.export.save(program, str(path))
        return SegmenterSpec(
            family="torchscript",
            path=str(path),
            num_classes=self.num_classes,
            mean=MEAN,
            std=STD,
            name="exported",
        )

    def reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        return type(self).net(normalize(images, MEAN, STD))["out"]
