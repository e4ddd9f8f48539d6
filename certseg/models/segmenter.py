"""The Segmenter wrapper: [0, 1] images in, (B, C, H, W) logits at the input size out.

Every adapter family (certseg.models.registry) returns one of these around its network, so the
rest of the code sees one contract: normalization inside, eval mode, a known number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn


def extract_logits(output: Any, *, output_key: str = "out") -> torch.Tensor:
    """The logits tensor of a segmentation network's output.

    Accepts a tensor, a mapping holding `output_key` (torchvision's {"out": ..., "aux": ...}), or
    an object with a `.logits` tensor (HuggingFace). ValueError for anything else.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) or hasattr(output, "keys"):
        if output_key in output:
            value = output[output_key]
            if isinstance(value, torch.Tensor):
                return value
        raise ValueError(
            f"segmenter returned a mapping without a tensor under {output_key!r} "
            f"(keys: {sorted(output.keys())})"
        )
    raise ValueError(f"cannot find logits in segmenter output of type {type(output).__name__}")


def _triple(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    triple = tuple(float(v) for v in values)
    if len(triple) != 3:
        raise ValueError(f"{name} must have 3 entries (one per RGB channel), got {values!r}")
    return triple[0], triple[1], triple[2]


class ExportedModule(nn.Module):
    """Holds a torch.export program's module, whose train()/eval() raise. Its behaviour was
    fixed when it was exported (export in eval mode!), so the flags are set to False once and
    train(mode) here only records the flag without recursing."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        for submodule in module.modules():
            submodule.training = False

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> Any:
        return self.module(images)


class Segmenter(nn.Module):
    """A segmentation network behind a fixed contract.

    forward: (B, 3, H, W) float images in [0, 1] units → (B, num_classes, H, W) float32 logits.
    The images are normalized inside, (x − mean) / std per channel; the network's output (a
    tensor, a mapping with `output_key`, or an object with `.logits`) is upsampled bilinearly to
    (H, W) when the network predicts at a lower resolution (e.g. SegFormer at H/4). The network is
    put in eval mode. name: a label for tables and storage.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        name: str,
        output_key: str = "out",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        mean3 = _triple("mean", mean)
        std3 = _triple("std", std)
        if min(std3) <= 0:
            raise ValueError(f"std entries must be > 0, got {std3!r}")
        self.model = model
        self.num_classes = int(num_classes)
        self.name = name
        self.output_key = output_key
        self.mean_values = mean3
        self.std_values = std3
        self.register_buffer("mean", torch.tensor(mean3).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std3).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std per channel, for (B, 3, H, W) [0, 1] images."""
        mean = cast(torch.Tensor, self.mean)
        std = cast(torch.Tensor, self.std)
        return (images - mean.to(images.dtype)) / std.to(images.dtype)

    def forward(self, images: torch.Tensor, *, native_dtype: bool = False) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] images → (B, num_classes, H, W) float32 logits.

        native_dtype: return the network's logits in its own dtype (e.g. bf16 under autocast)
        when no upsampling is needed, instead of a float32 copy (the sampling loop's argmax
        compares them exactly as their float32 values; a 160 MiB copy saved per 19-class
        1024×2048 sample). Upsampled logits are float32 either way.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        logits = extract_logits(self.model(self.normalize(images)), output_key=self.output_key)
        if logits.ndim != 4 or logits.shape[0] != images.shape[0]:
            raise ValueError(
                f"segmenter {self.name!r} returned logits of shape {tuple(logits.shape)} for "
                f"input {tuple(images.shape)}; expected (B, C, h, w)"
            )
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"segmenter {self.name!r} returned {logits.shape[1]} classes, "
                f"num_classes is {self.num_classes}"
            )
        if native_dtype and logits.shape[-2:] == images.shape[-2:]:
            return logits
        logits = logits.float()
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(
                logits, size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        return logits
