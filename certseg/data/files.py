"""The file-backed dataset shared by the Cityscapes, Pascal-Context and folder loaders.

A loader lists (image id, image file, label file) items under a root and supplies a label map
(raw stored label values → class indices); this module reads, checks, maps, resizes, hashes and
validates them. All paths it records are relative POSIX paths under the root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from certseg.data.base import ClassInfo, DatasetError, Example, Manifest, ManifestEntry
from certseg.data.io import (
    decode_image,
    decode_label,
    file_error,
    read_bytes,
    read_size,
    resize_image,
    resize_label,
)
from certseg.data.manifest import make_entry, sha256_hex
from certseg.data.spec import SubsetSpec

INVALID_LABEL = -1
"""What a label map returns for a raw value that is not in the dataset's label set."""

LabelMap = Callable[[np.ndarray], np.ndarray]
"""Raw (H, W) int32 stored values → (H, W) int32 class indices, ignore_index, or INVALID_LABEL."""


@dataclass(frozen=True)
class FileItem:
    """One image and the label file expected for it (both relative POSIX paths under the root)."""

    image_id: str
    image: str
    label: str


@dataclass(frozen=True)
class LabelRules:
    """How a dataset's stored label values become class indices.

    label_map: raw → class index / ignore / INVALID_LABEL. expected: the allowed stored values in
    words, for error messages (e.g. "label ids 0..33 (cityscapesscripts) or 255").
    """

    label_map: LabelMap
    expected: str


def target_dtype(num_classes: int, ignore_index: int) -> type[np.integer]:
    """uint8 when every class index and the ignore index fit in a byte, else int32."""
    return np.uint8 if max(num_classes - 1, ignore_index) <= 255 else np.int32


def apply_subset(items: Sequence[FileItem], subset: SubsetSpec | None) -> list[FileItem]:
    """The items a subset selects (in dataset order); all items when subset is None."""
    if subset is None:
        return list(items)
    positions = subset.select([item.image_id for item in items])
    return [items[p] for p in positions]


def check_unique_ids(items: Iterable[FileItem], root: Path) -> None:
    """DatasetError naming both files when two items share an image id."""
    seen: dict[str, str] = {}
    for item in items:
        if item.image_id in seen:
            raise DatasetError(
                f"{root}: image id {item.image_id!r} is given by both {seen[item.image_id]} and "
                f"{item.image}; expected one image per id"
            )
        seen[item.image_id] = item.image


class FileDataset:
    """A SegmentationDataset over image/label files under `root`.

    load(i).image: (3, H, W) float32 in [0, 1] units; load(i).target: (H, W) class indices in
    [0, C) or ignore_index (uint8 when they fit, else int32). With `resize` = (H', W') both are
    resized at load time (image bilinear antialiased, label nearest) and the manifest reports
    (H', W'). `stray` lists (file, reason) for files under the root that belong to no item (e.g.
    a mask without an image); validation reports them like invalid items. classes_source: where
    the class list comes from, for error messages (e.g. the classes file's path).
    """

    def __init__(
        self,
        *,
        name: str,
        classes: tuple[ClassInfo, ...],
        ignore_index: int,
        root: Path,
        items: Sequence[FileItem],
        rules: LabelRules,
        resize: tuple[int, int] | None = None,
        skip_invalid: bool = False,
        stray: Sequence[tuple[str, str]] = (),
        skipped: Sequence[tuple[str, str]] = (),
        entries: Mapping[str, ManifestEntry] | None = None,
        classes_source: str = "",
    ) -> None:
        if 0 <= ignore_index < len(classes):
            raise DatasetError(
                f"ignore_index {ignore_index} is a class index of {name!r} "
                f"({len(classes)} classes); expected a value outside [0, {len(classes)})"
            )
        self.name: str = name
        self.classes: tuple[ClassInfo, ...] = classes
        self.ignore_index: int = ignore_index
        self.root = root
        self.items: tuple[FileItem, ...] = tuple(items)
        self.rules = rules
        self.resize = resize
        self.skip_invalid = skip_invalid
        self.stray: tuple[tuple[str, str], ...] = tuple(stray)
        self.skipped: tuple[tuple[str, str], ...] = tuple(skipped)
        self._entries: dict[str, ManifestEntry] = dict(entries or {})
        self.classes_source = classes_source
        check_unique_ids(self.items, root)

    def __len__(self) -> int:
        return len(self.items)

    def image_ids(self) -> list[str]:
        """Image ids in dataset (sorted) order."""
        return [item.image_id for item in self.items]

    def load(self, index: int) -> Example:
        """Read, check, map and (optionally) resize item `index`; DatasetError if it is invalid."""
        if not 0 <= index < len(self.items):
            raise ValueError(f"index must be in [0, {len(self.items)}), got {index}")
        example, _ = self._read(self.items[index])
        return example

    def _read(self, item: FileItem) -> tuple[Example, ManifestEntry]:
        """Read both files once: the checked Example and its manifest entry."""
        image_path, label_path = self.root / item.image, self.root / item.label
        image_bytes = read_bytes(image_path, rel=item.image)
        if not label_path.is_file():
            raise DatasetError(
                f"{image_path}: missing label; expected the file {label_path}",
                file=item.image,
                reason=f"missing label; expected {item.label}",
            )
        label_bytes = read_bytes(label_path, rel=item.label)
        image = decode_image(image_bytes, image_path, rel=item.image)
        raw = decode_label(label_bytes, label_path, rel=item.label)
        if raw.shape != image.shape[1:]:
            raise file_error(
                label_path,
                item.label,
                f"label size (H, W) = {raw.shape} does not match its image {item.image} of size "
                f"{image.shape[1:]}; expected equal sizes",
            )
        target = self._map_label(raw, label_path, item.label)
        size = image.shape[1:] if self.resize is None else self.resize
        if self.resize is not None:
            image = resize_image(image, self.resize)
            target = resize_label(target, self.resize)
        entry = make_entry(
            item.image_id,
            (item.image, item.label),
            (sha256_hex(image_bytes), sha256_hex(label_bytes)),
            (int(size[0]), int(size[1])),
        )
        return Example(item.image_id, image, target), entry

    def _map_label(self, raw: np.ndarray, path: Path, rel: str) -> np.ndarray:
        """Raw stored values → class indices; DatasetError listing values outside the label set."""
        mapped = self.rules.label_map(raw)
        num_classes = len(self.classes)
        bad = (mapped == INVALID_LABEL) | (
            ((mapped < 0) | (mapped >= num_classes)) & (mapped != self.ignore_index)
        )
        if bad.any():
            values = np.unique(raw[bad])
            shown = values[:10].tolist()
            more = f" (and {values.size - 10} more)" if values.size > 10 else ""
            raise file_error(
                path,
                rel,
                f"label values {shown}{more} outside the class set; expected {self.rules.expected}",
            )
        return mapped.astype(target_dtype(num_classes, self.ignore_index))

    def validate(
        self, on_valid: Callable[[Example], None] | None = None
    ) -> tuple[FileDataset, tuple[tuple[str, str], ...]]:
        """Read every item once; raise DatasetError at the first invalid one, or with
        skip_invalid return (the dataset without the invalid items, the (file, reason) list).

        The returned dataset carries the manifest entries computed here (files are not hashed
        twice) and records the skipped files in its manifest. on_valid: called with each valid
        item's Example as it is read, in the returned dataset's order. Writes nothing.
        """
        entries: dict[str, ManifestEntry] = {}
        valid: list[FileItem] = []
        skipped: list[tuple[str, str]] = list(self.skipped)
        for item in self.items:
            try:
                example, entry = self._read(item)
            except DatasetError as error:
                if not self.skip_invalid:
                    raise
                skipped.append((error.file or item.image, error.reason or str(error)))
                continue
            if on_valid is not None:
                on_valid(example)
            valid.append(item)
            entries[item.image_id] = entry
        for file, reason in self.stray:
            if not self.skip_invalid:
                raise file_error(self.root / file, file, reason)
            skipped.append((file, reason))
        if not valid:
            first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
            raise DatasetError(
                f"{self.root}: no valid image in dataset {self.name!r} ({len(self.items)} "
                f"checked, all invalid){first}; expected at least one valid image"
            )
        new_skipped = tuple(skipped[len(self.skipped) :])
        dataset = FileDataset(
            name=self.name,
            classes=self.classes,
            ignore_index=self.ignore_index,
            root=self.root,
            items=valid,
            rules=self.rules,
            resize=self.resize,
            skip_invalid=self.skip_invalid,
            stray=(),
            skipped=skipped,
            entries=entries,
            classes_source=self.classes_source,
        )
        return dataset, new_skipped

    def manifest(self) -> Manifest:
        """Entries for every item (hashing each file; sizes from headers) and the skipped list.

        DatasetError for a missing or unreadable file; run validation first to check pixels.
        """
        entries = []
        for item in self.items:
            entry = self._entries.get(item.image_id)
            if entry is None:
                entry = self._hash_entry(item)
                self._entries[item.image_id] = entry
            entries.append(entry)
        return Manifest(
            dataset=self.name,
            num_classes=len(self.classes),
            ignore_index=self.ignore_index,
            entries=tuple(entries),
            skipped=self.skipped,
        )

    def _hash_entry(self, item: FileItem) -> ManifestEntry:
        image_path, label_path = self.root / item.image, self.root / item.label
        if not label_path.is_file():
            raise DatasetError(
                f"{image_path}: missing label; expected the file {label_path}",
                file=item.image,
                reason=f"missing label; expected {item.label}",
            )
        digests = (
            sha256_hex(read_bytes(image_path, rel=item.image)),
            sha256_hex(read_bytes(label_path, rel=item.label)),
        )
        size = self.resize if self.resize is not None else read_size(image_path, rel=item.image)
        return make_entry(item.image_id, (item.image, item.label), digests, size)


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` as a POSIX string (the form manifests record)."""
    return path.relative_to(root).as_posix()
