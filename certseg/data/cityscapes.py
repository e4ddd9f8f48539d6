"""Cityscapes in its official layout, label ids mapped to the 19 train ids by cityscapesscripts.

Layout under `root` (the folder that holds leftImg8bit/ and gtFine/):
    leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    gtFine/<split>/<city>/<stem>_gtFine_labelIds.png
The image id is <stem>, e.g. "frankfurt_000000_000294"; items are sorted by id.

Labels: the *_labelIds.png files store Cityscapes label ids (0..33). Each id maps to its train id
by the official table `cityscapesscripts.helpers.labels.labels` (not a copy): the 19 evaluated
classes become 0..18; ids whose train id is 255 or -1 become the ignore index. The stored value
255 (label id -1, "license plate", as an unsigned byte) also becomes ignore. Any other value is
invalid (DatasetError).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from certseg.data.base import ClassInfo, DatasetError
from certseg.data.files import (
    INVALID_LABEL,
    FileDataset,
    FileItem,
    LabelRules,
    apply_subset,
    relative,
)
from certseg.data.spec import DatasetSpec

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
NUM_CLASSES = 19


def _official_labels() -> list[tuple[str, int, int, tuple[int, int, int]]]:
    """(name, id, trainId, color) of every label in cityscapesscripts' official table."""
    from cityscapesscripts.helpers.labels import labels

    return [
        (str(label.name), int(label.id), int(label.trainId), tuple(label.color)) for label in labels
    ]


def cityscapes_classes() -> tuple[ClassInfo, ...]:
    """The 19 evaluated classes in train-id order, with official names and colours."""
    by_train_id: dict[int, ClassInfo] = {}
    for name, _, train_id, color in _official_labels():
        if 0 <= train_id < NUM_CLASSES:
            by_train_id.setdefault(train_id, ClassInfo(name, color))
    if sorted(by_train_id) != list(range(NUM_CLASSES)):
        raise RuntimeError("cityscapesscripts does not define train ids 0..18")
    return tuple(by_train_id[t] for t in range(NUM_CLASSES))


def label_id_to_train_id(label_id: int, *, ignore_index: int = 255) -> int:
    """One Cityscapes label id (-1..33) → train id 0..18, or ignore_index; ValueError if unknown."""
    for _, id_, train_id, _ in _official_labels():
        if id_ == label_id:
            return train_id if 0 <= train_id < NUM_CLASSES else ignore_index
    raise ValueError(f"label_id {label_id} is not a Cityscapes label id")


def label_id_lookup(*, ignore_index: int = 255) -> np.ndarray:
    """(256,) int32 table: stored label-id byte → train id, ignore_index, or INVALID_LABEL."""
    table = np.full(256, INVALID_LABEL, dtype=np.int32)
    for _, id_, train_id, _ in _official_labels():
        stored = id_ % 256  # id -1 (license plate) is stored as 255 in an unsigned byte
        table[stored] = train_id if 0 <= train_id < NUM_CLASSES else ignore_index
    return table


def map_label_ids(raw: np.ndarray, *, ignore_index: int = 255) -> np.ndarray:
    """(H, W) stored label ids → (H, W) int32 train ids / ignore_index / INVALID_LABEL."""
    table = label_id_lookup(ignore_index=ignore_index)
    raw = np.asarray(raw)
    inside = (raw >= 0) & (raw < table.size)
    return np.where(inside, table[np.clip(raw, 0, table.size - 1)], INVALID_LABEL).astype(np.int32)


def open_cityscapes(spec: DatasetSpec) -> FileDataset:
    """List a Cityscapes split (no pixels read) and apply the spec's subset."""
    if spec.root is None:
        raise ValueError("DatasetSpec.root is required for kind 'cityscapes'")
    root = Path(spec.root)
    image_dir = root / "leftImg8bit" / spec.split
    pattern = f"leftImg8bit/{spec.split}/<city>/<stem>{IMAGE_SUFFIX}"
    if not image_dir.is_dir():
        raise DatasetError(
            f"{image_dir}: not a folder; expected the Cityscapes layout {root}/{pattern} "
            f"with labels in gtFine/{spec.split}/<city>/<stem>{LABEL_SUFFIX}"
        )
    items = []
    for path in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        if not path.is_file():
            continue
        stem = path.name[: -len(IMAGE_SUFFIX)]
        city = path.parent.name
        label = root / "gtFine" / spec.split / city / f"{stem}{LABEL_SUFFIX}"
        items.append(FileItem(stem, relative(path, root), relative(label, root)))
    items.sort(key=lambda item: item.image_id)
    if not items:
        raise DatasetError(f"{image_dir}: empty split; expected images {root}/{pattern}")
    ignore_index = spec.ignore_index
    rules = LabelRules(
        label_map=partial(map_label_ids, ignore_index=ignore_index),
        expected="Cityscapes label ids 0..33 (cityscapesscripts) or 255",
    )
    suffix = f"@{spec.resize[0]}x{spec.resize[1]}" if spec.resize else ""
    return FileDataset(
        name=f"cityscapes/{spec.split}{suffix}",
        classes=cityscapes_classes(),
        ignore_index=ignore_index,
        root=root,
        items=apply_subset(items, spec.subset),
        rules=rules,
        resize=spec.resize,
        skip_invalid=spec.skip_invalid,
        classes_source="cityscapesscripts.helpers.labels (19 train ids)",
    )
