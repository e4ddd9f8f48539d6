"""The dataset contract every loader implements: examples, class metadata, a manifest, its error."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_IGNORE_INDEX = 255


class DatasetError(ValueError):
    """A dataset is not what certseg expects; the message names the file and the expectation.

    `file` (the path relative to the dataset root, when one file is at fault) and `reason` (the
    message without the file) are what a skip_invalid validation records in the manifest.
    """

    def __init__(self, message: str, *, file: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.file = file
        self.reason = reason if reason is not None else message


@dataclass(frozen=True)
class ClassInfo:
    """One class of a dataset: its name and an RGB display colour (0-255 each)."""

    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Example:
    """One dataset item.

    image: (3, H, W) float32 in [0, 1] units. target: (H, W) integer class indices, with the
    dataset's ignore_index where a pixel is not evaluated.
    """

    image_id: str
    image: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class ManifestEntry:
    """One file-backed item: its id, source files, size (H, W) and content hash (sha256)."""

    image_id: str
    files: tuple[str, ...]
    height: int
    width: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a dataset run read: enough to tell two datasets apart and to reproduce the selection.

    `skipped` lists (file, reason) for items left out by a `skip_invalid` validation pass.
    """

    dataset: str
    num_classes: int
    ignore_index: int
    entries: tuple[ManifestEntry, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace variance)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON: the dataset identity recorded as lineage."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


@runtime_checkable
class SegmentationDataset(Protocol):
    """A finite, indexable segmentation dataset with deterministic image ids."""

    name: str
    classes: tuple[ClassInfo, ...]
    ignore_index: int

    def __len__(self) -> int: ...

    def image_ids(self) -> list[str]: ...

    def load(self, index: int) -> Example: ...

    def manifest(self) -> Manifest: ...


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """A deterministic, distinguishable RGB palette (the Pascal VOC bit-interleaving scheme)."""
    colors = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def classes_from_names(names: Sequence[str]) -> tuple[ClassInfo, ...]:
    """ClassInfo for each name with the default palette."""
    palette = default_palette(len(names))
    return tuple(ClassInfo(name, color) for name, color in zip(names, palette, strict=True))
