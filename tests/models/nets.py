"""Tiny segmentation networks for the adapter tests (random weights: plumbing only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """(B, 3, H, W) → (B, C, H, W) logits; BatchNorm and Dropout so eval mode matters."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(8, num_classes, 1)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(F.relu(self.norm(self.conv1(x)))))


class DictNet(nn.Module):
    """torchvision-style: returns {"out": logits at H/2 upsampled to H, "aux": ...}."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.body = TinyNet(num_classes)
        self.aux = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        small = F.avg_pool2d(x, 2)
        out = F.interpolate(
            self.body(small), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return {"out": out, "aux": self.aux(x)}
