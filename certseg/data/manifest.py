"""Manifest building (relative file names, sizes, content hashes) and subset selection helpers.

A manifest entry's sha256 is the sha256 of the entry's per-file sha256 hex digests (in `files`
order) joined by newlines: it changes when any byte of the image or its label changes, and it
does not depend on where the dataset lies on disk (file names are stored relative to the root).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from certseg.data.base import ClassInfo, Example, Manifest, ManifestEntry, SegmentationDataset


def sha256_hex(data: bytes) -> str:
    """sha256 hex digest of some bytes."""
    return hashlib.sha256(data).hexdigest()


def combine_digests(file_digests: Sequence[str]) -> str:
    """An entry's sha256: the sha256 of its files' hex digests joined by newlines, in order."""
    return sha256_hex("\n".join(file_digests).encode())


def make_entry(
    image_id: str,
    files: Sequence[str],
    file_digests: Sequence[str],
    size: tuple[int, int],
) -> ManifestEntry:
    """A ManifestEntry: `files` relative POSIX paths, `size` the (H, W) the dataset delivers."""
    if len(files) != len(file_digests):
        raise ValueError(f"files ({len(files)}) and file_digests ({len(file_digests)}) differ")
    return ManifestEntry(
        image_id=image_id,
        files=tuple(files),
        height=size[0],
        width=size[1],
        sha256=combine_digests(file_digests),
    )


def select_positions(image_ids: Sequence[str], positions: Sequence[int]) -> list[str]:
    """The ids at `positions` (each in range), in the given order."""
    for position in positions:
        if not 0 <= position < len(image_ids):
            raise ValueError(f"position {position} out of range [0, {len(image_ids)})")
    return [image_ids[p] for p in positions]


class SubsetDataset:
    """A view of an in-memory dataset restricted to some positions (e.g. a synthetic subset).

    The manifest is the base manifest's entries for the selected ids, in the selected order.
    """

    def __init__(self, base: SegmentationDataset, positions: Sequence[int]) -> None:
        ids = base.image_ids()
        self._selected_ids = select_positions(ids, positions)
        self._positions = tuple(positions)
        self._base = base
        self.name: str = base.name
        self.classes: tuple[ClassInfo, ...] = base.classes
        self.ignore_index: int = base.ignore_index

    def __len__(self) -> int:
        return len(self._positions)

    def image_ids(self) -> list[str]:
        """Selected ids, in dataset order."""
        return list(self._selected_ids)

    def load(self, index: int) -> Example:
        """Item `index` of the subset (position `positions[index]` of the base)."""
        if not 0 <= index < len(self._positions):
            raise ValueError(f"index must be in [0, {len(self._positions)}), got {index}")
        return self._base.load(self._positions[index])

    def manifest(self) -> Manifest:
        """The base manifest restricted to the selected ids."""
        base = self._base.manifest()
        by_id = {entry.image_id: entry for entry in base.entries}
        return Manifest(
            dataset=base.dataset,
            num_classes=base.num_classes,
            ignore_index=base.ignore_index,
            entries=tuple(by_id[i] for i in self._selected_ids),
            skipped=base.skipped,
        )
