"""Dataset registry: `open_dataset` dispatches a `DatasetSpec` to its loader; the validation pass.

The pipeline opens a dataset from a `DatasetSpec`, then runs `validate_dataset` once before any
sampling: it reads every selected file, raises `DatasetError` naming the file and what was expected,
or (with `skip_invalid`) drops the invalid items and records them in the manifest's `skipped`.
Use the dataset returned in the report (`report.dataset`) afterwards.

Imports go one way: the registry imports the loaders, which import certseg.data.spec and
certseg.data.base; nothing in certseg.data imports the registry. The spec names are re-exported
here for callers that import them from the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from certseg.data.base import DatasetError, Example, SegmentationDataset
from certseg.data.cityscapes import open_cityscapes
from certseg.data.files import FileDataset
from certseg.data.folder import open_folder
from certseg.data.manifest import SubsetDataset
from certseg.data.pascal_context import open_pascal_context
from certseg.data.spec import DATASET_KINDS, DatasetKind, DatasetSpec, SubsetSpec
from certseg.data.synthetic import SyntheticDataset

__all__ = [
    "DATASET_KINDS",
    "DatasetError",
    "DatasetKind",
    "DatasetSpec",
    "SubsetSpec",
    "ValidationReport",
    "check_example",
    "open_dataset",
    "validate_dataset",
]


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
        synthetic: SegmentationDataset = SyntheticDataset(
            seed=spec.seed, num_images=spec.num_images, size=spec.size, split=spec.split
        )
        if spec.subset is None:
            return synthetic
        return SubsetDataset(synthetic, spec.subset.select(synthetic.image_ids()))
    if spec.kind == "cityscapes":
        return open_cityscapes(spec)
    if spec.kind == "pascal_context":
        return open_pascal_context(spec)
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
