"""The "module" family: any nn.Module given in Python, optional state dict file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from certseg.models import SegmenterSpec, build_segmenter
from tests.models.contract import MEAN, STD, SegmenterContract, normalize
from tests.models.nets import TinyNet


class TestModuleFamily(SegmenterContract):
    net: TinyNet

    def build_spec(self, folder: Path) -> SegmenterSpec:
        type(self).net = TinyNet(self.num_classes)
        return SegmenterSpec(
            family="module",
            num_classes=self.num_classes,
            mean=MEAN,
            std=STD,
            options={"module": type(self).net},
            name="tiny",
        )

    def reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        net = type(self).net.eval()
        return net(normalize(images, MEAN, STD))


def test_module_loads_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trained = TinyNet()
    save_file(
        {k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "w.safetensors"
    )
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = trained.eval()(normalize(images, MEAN, STD))
    for name in ("w.safetensors", "w.pt"):
        torch.manual_seed(2)
        spec = SegmenterSpec(
            family="module",
            path=str(tmp_path / name),
            num_classes=4,
            mean=MEAN,
            std=STD,
            options={"module": TinyNet()},
        )
        with torch.no_grad():
            torch.testing.assert_close(build_segmenter(spec)(images), expected)


def test_module_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"net": TinyNet()}, tmp_path / "bad.pt")
    spec = SegmenterSpec(
        family="module",
        path=str(tmp_path / "bad.pt"),
        num_classes=4,
        mean=MEAN,
        std=STD,
        options={"module": TinyNet()},
    )
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|state dict"):
        build_segmenter(spec)


def test_module_needs_normalization_and_module() -> None:
    with pytest.raises(ValueError, match="mean/std"):
        build_segmenter(
            SegmenterSpec(family="module", num_classes=4, options={"module": TinyNet()})
        )
    with pytest.raises(ValueError, match="module"):
        build_segmenter(SegmenterSpec(family="module", num_classes=4, mean=MEAN, std=STD))
    with pytest.raises(ValueError, match="num_classes"):
        build_segmenter(
            SegmenterSpec(family="module", mean=MEAN, std=STD, options={"module": TinyNet()})
        )
