"""Dataset registry: a typed spec of which dataset to read, `open_dataset`, and the validation pass.

The pipeline opens a dataset from a `DatasetSpec`, then runs `validate_dataset` once before any
sampling: it reads every selected file, raises `DatasetError` naming the file and what was expected,
or (with `skip_invalid`) drops the invalid items and records them in the manifest's `skipped`.
Use the dataset returned in the report (`report.dataset`) afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from certseg.data.base import DEFAULT_IGNORE_INDEX, Example, SegmentationDataset

DatasetKind = Literal["synthetic", "cityscapes", "pascal_context", "folder"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)


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
class SubsetSpec:
    """Which items of a dataset (in its sorted id order) to use.

    Either `ids` alone (an explicit list of image ids; an unknown id is a `DatasetError`), or
    `every` and/or `first`: take every k-th item (positions 0, k, 2k, ...), then the first N of
    those. `first=100` gives the first 100 images; `every=5, first=100` gives 100 images spread
    over the split.
    """

    first: int | None = None
    every: int | None = None
    ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.ids is not None:
            if self.first is not None or self.every is not None:
                raise ValueError("SubsetSpec: give either ids alone, or first and/or every")
            if not isinstance(self.ids, tuple):
                raise ValueError(f"SubsetSpec.ids must be a tuple of str, got {type(self.ids)}")
            if len(self.ids) == 0:
                raise ValueError("SubsetSpec.ids must not be empty")
            if not all(isinstance(i, str) and i for i in self.ids):
                raise ValueError("SubsetSpec.ids must be non-empty strings")
            if len(set(self.ids)) != len(self.ids):
                raise ValueError("SubsetSpec.ids contains duplicates")
        elif self.first is None and self.every is None:
            raise ValueError("SubsetSpec: give first, every or ids (or use subset=None for all)")
        if self.first is not None and (
            isinstance(self.first, bool) or not isinstance(self.first, int) or self.first < 1
        ):
            raise ValueError(f"SubsetSpec.first must be an int >= 1, got {self.first!r}")
        if self.every is not None and (
            isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1
        ):
            raise ValueError(f"SubsetSpec.every must be an int >= 1, got {self.every!r}")

    def select(self, image_ids: list[str]) -> list[int]:
        """Positions (into `image_ids`, ascending) of the selected items.

        Raises DatasetError for an id in `ids` that is not in `image_ids`.
        """
        if self.ids is not None:
            position = {image_id: k for k, image_id in enumerate(image_ids)}
            unknown = [i for i in self.ids if i not in position]
            if unknown:
                shown = ", ".join(repr(u) for u in unknown[:5])
                more = " ..." if len(unknown) > 5 else ""
                example = f"expected ids like {image_ids[0]!r}" if image_ids else "it is empty"
                raise DatasetError(
                    f"subset ids not in the dataset: {shown}{more} ({len(unknown)} unknown); "
                    f"{example}"
                )
            return sorted(position[i] for i in self.ids)
        positions = list(range(0, len(image_ids), self.every or 1))
        if self.first is not None:
            positions = positions[: self.first]
        return positions


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset to read and how.

    kind: "synthetic" (embedded, no files), "cityscapes", "pascal_context" or "folder".
    root: the dataset folder (required for the file-backed kinds; see docs/datasets.md for layouts).
    split: "val", "train", ... (Cityscapes and Pascal-Context; ignored by "folder").
    subset: which items to use (applied before validation and the manifest).
    resize: (H, W) in pixels; every image is resized (bilinear, antialiased) and every label
        (nearest) to this size at load time, before noise: it defines the input space the
        certificate is about. None keeps the files' size.
    ignore_index: the target value of pixels that are not evaluated.
    classes_file: the "folder" kind's class list (default: <root>/classes.txt).
    skip_invalid: drop invalid items in validation (recorded in the manifest) instead of raising.
    seed, num_images, size: the "synthetic" kind's parameters.
    """

    kind: DatasetKind
    root: str | None = None
    split: str = "val"
    subset: SubsetSpec | None = None
    resize: tuple[int, int] | None = None
    ignore_index: int = DEFAULT_IGNORE_INDEX
    classes_file: str | None = None
    skip_invalid: bool = False
    seed: int = 0
    num_images: int = 32
    size: int = 64

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"DatasetSpec.kind must be one of {DATASET_KINDS}, got {self.kind!r}")
        if self.kind == "synthetic":
            if self.root is not None:
                raise ValueError("DatasetSpec.root must be None for kind 'synthetic'")
            if self.resize is not None:
                raise ValueError("DatasetSpec.resize is not supported for 'synthetic'; use size")
        elif not self.root:
            raise ValueError(f"DatasetSpec.root is required for kind {self.kind!r}")
        if self.classes_file is not None and self.kind != "folder":
            raise ValueError("DatasetSpec.classes_file is only used by kind 'folder'")
        if not self.split or "/" in self.split or "\\" in self.split:
            raise ValueError(f"DatasetSpec.split must be a plain name ('val'), got {self.split!r}")
        if self.resize is not None and (
            not isinstance(self.resize, tuple)
            or len(self.resize) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.resize)
            or min(self.resize) < 1
        ):
            raise ValueError(f"DatasetSpec.resize must be (H, W) ints >= 1, got {self.resize!r}")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ValueError(f"DatasetSpec.ignore_index must be an int, got {self.ignore_index!r}")
        if self.ignore_index < 0:
            raise ValueError(f"DatasetSpec.ignore_index must be >= 0, got {self.ignore_index}")
        for name in ("num_images", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DatasetSpec.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of `validate_dataset`.

    dataset: the dataset to use from now on (invalid items dropped when skip_invalid; its
        manifest records them in `skipped`). checked: number of items read.
    skipped: (file, reason) for each dropped item (empty unless skip_invalid).
    """

    dataset: SegmentationDataset
    checked: int
    skipped: tuple[tuple[str, str], ...]


def open_dataset(spec: DatasetSpec) -> SegmentationDataset:
    """Open the dataset a spec describes (lists files; reads no pixels), subset applied."""
    if spec.kind == "synthetic":
        from certseg.data.synthetic import SyntheticDataset

        synthetic: SegmentationDataset = SyntheticDataset(
            seed=spec.seed, num_images=spec.num_images, size=spec.size, split=spec.split
        )
        if spec.subset is None:
            return synthetic
        from certseg.data.manifest import SubsetDataset

        return SubsetDataset(synthetic, spec.subset.select(synthetic.image_ids()))
    if spec.kind == "cityscapes":
        from certseg.data.cityscapes import open_cityscapes

        return open_cityscapes(spec)
    if spec.kind == "pascal_context":
        from certseg.data.pascal_context import open_pascal_context

        return open_pascal_context(spec)
    from certseg.data.folder import open_folder

    return open_folder(spec)


def validate_dataset(
    dataset: SegmentationDataset,
    *,
    num_classes: int | None = None,
    on_valid: Callable[[Example], None] | None = None,
) -> ValidationReport:
    """Read every item once and check it; raise DatasetError on the first problem.

    Checks: the dataset is not empty; `num_classes` (the segmenter's) equals the dataset's class
    count; each image is readable and not truncated; each image has a label of the same (H, W);
    label values are class indices in [0, C) or the ignore index. File-backed datasets opened with
    skip_invalid drop invalid items instead of raising (empty and class-count errors still raise).
    on_valid: called with each valid item as it is read, in the order of `report.dataset` (so a
    caller that needs the pixels again does not decode them a second time). Writes nothing.
    """
    if len(dataset) == 0:
        raise DatasetError(f"dataset {dataset.name!r} is empty: expected at least one image")
    num_dataset_classes = len(dataset.classes)
    if num_classes is not None and num_classes != num_dataset_classes:
        source = getattr(dataset, "classes_source", None)
        where = f" (classes from {source})" if source else ""
        raise DatasetError(
            f"class-count mismatch: dataset {dataset.name!r}{where} has {num_dataset_classes} "
            f"classes, the segmenter predicts {num_classes}; expected them to be equal"
        )
    from certseg.data.files import FileDataset

    if isinstance(dataset, FileDataset):
        valid, skipped = dataset.validate(on_valid=on_valid)
        return ValidationReport(dataset=valid, checked=len(dataset), skipped=skipped)
    for index in range(len(dataset)):
        example = dataset.load(index)
        check_example(example, num_dataset_classes, dataset.ignore_index, source=dataset.name)
        if on_valid is not None:
            on_valid(example)
    return ValidationReport(dataset=dataset, checked=len(dataset), skipped=())


def check_example(example: object, num_classes: int, ignore_index: int, *, source: str) -> None:
    """Check an in-memory Example's shapes, dtypes and value ranges; DatasetError if wrong."""
    from certseg.data.base import Example

    if not isinstance(example, Example):
        raise DatasetError(f"{source}: expected an Example, got {type(example).__name__}")
    where = f"{source}: image {example.image_id!r}"
    image, target = example.image, example.target
    if image.ndim != 3 or image.shape[0] != 3:
        raise DatasetError(f"{where}: expected image shape (3, H, W), got {image.shape}")
    if image.dtype != np.float32:
        raise DatasetError(f"{where}: expected float32 image, got {image.dtype}")
    if image.size and (float(image.min()) < 0.0 or float(image.max()) > 1.0):
        raise DatasetError(f"{where}: expected image values in [0, 1]")
    if target.shape != image.shape[1:]:
        raise DatasetError(
            f"{where}: label size {target.shape} does not match image size {image.shape[1:]}"
        )
    if not np.issubdtype(target.dtype, np.integer):
        raise DatasetError(f"{where}: expected an integer label, got {target.dtype}")
    bad = np.unique(target[((target < 0) | (target >= num_classes)) & (target != ignore_index)])
    if bad.size:
        raise DatasetError(
            f"{where}: label values {bad[:10].tolist()} outside [0, {num_classes}) and not the "
            f"ignore index {ignore_index}"
        )
