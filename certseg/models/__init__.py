"""Segmenter adapters: a registry of families, each building a `Segmenter` (normalization inside,
[0, 1] images in, (B, C, H, W) logits out). Importing this package does not import torch;
`Segmenter` is loaded on first access."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from certseg.models.registry import SEGMENTER_FAMILIES, build_segmenter, load_state_dict_file
from certseg.models.spec import FAMILY_NAMES, FamilyName, SegmenterSpec

if TYPE_CHECKING:
    from certseg.models.segmenter import Segmenter

__all__ = [
    "FAMILY_NAMES",
    "SEGMENTER_FAMILIES",
    "FamilyName",
    "Segmenter",
    "SegmenterSpec",
    "build_segmenter",
    "load_state_dict_file",
]


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from certseg.models.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'certseg.models' has no attribute {name!r}")
