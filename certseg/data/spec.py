"""Which dataset to read: the one validated spec shared by the run config, the registry and loaders.

`DatasetSpec` (and its `SubsetSpec`) is a frozen pydantic dataclass: it validates on construction,
`DatasetSpec(kind="folder", root="data/shapes")`, raising a pydantic ValidationError (a
ValueError) whose entry names the field, and the run config's `dataset` section *is* a
DatasetSpec, validated by the same rules. A check that involves several fields names its field
first (``root: required for kind 'folder'``), so the config reports it as
``config.dataset.root: ...``.

This module is the bottom of certseg.data beside certseg.data.base: the loaders and the registry
import it; it imports neither.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, ConfigDict, Field, StrictInt, field_validator, model_validator
from pydantic.dataclasses import dataclass

from certseg.data.base import DEFAULT_IGNORE_INDEX, DatasetError

DatasetKind = Literal["synthetic", "cityscapes", "pascal_context", "folder"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)

SPEC_CONFIG = ConfigDict(extra="forbid")
"""Pydantic settings of every spec: unknown fields are errors."""

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


def check_split(split: str) -> str:
    """`split` if it is a plain name ("val"): not empty, no path separator; else ValueError."""
    if not split or "/" in split or "\\" in split:
        raise ValueError(f"must be a plain name ('val'), got {split!r}")
    return split


SplitName = Annotated[str, AfterValidator(check_split)]
"""A dataset split's name, checked by `check_split` (the health check's split uses it too)."""


@dataclass(frozen=True, config=SPEC_CONFIG)
class SubsetSpec:
    """Which items of a dataset (in its sorted id order) to use.

    Either `ids` alone (an explicit list of image ids; an unknown id is a `DatasetError`), or
    `every` and/or `first`: take every k-th item (positions 0, k, 2k, ...), then the first N of
    those. `first=100` gives the first 100 images; `every=5, first=100` gives 100 images spread
    over the split.
    """

    first: PositiveInt | None = None
    every: PositiveInt | None = None
    ids: tuple[str, ...] | None = None

    @field_validator("ids")
    @classmethod
    def _ids(cls, ids: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if ids is None:
            return None
        if not ids:
            raise ValueError("must not be empty")
        if not all(ids):
            raise ValueError("must be non-empty strings")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"contains duplicates: {repeated[:5]}")
        return ids

    @model_validator(mode="after")
    def _one_form(self) -> SubsetSpec:
        if self.ids is not None and (self.first is not None or self.every is not None):
            raise ValueError("ids: give either ids alone, or first and/or every")
        if self.ids is None and self.first is None and self.every is None:
            raise ValueError("first: give first, every or ids (or no subset for all items)")
        return self

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


@dataclass(frozen=True, config=SPEC_CONFIG)
class DatasetSpec:
    """Which dataset to read and how (the run config's `dataset` section).

    kind: "synthetic" (embedded, no files), "cityscapes", "pascal_context" or "folder".
    root: the dataset folder (required for the file-backed kinds, left out for "synthetic"; see
        docs/datasets.md for layouts).
    split: "val", "train", ... (Cityscapes and Pascal-Context; ignored by "folder").
    subset: which items to use (applied before validation and the manifest).
    resize: (H, W) in pixels; every image is resized (bilinear, antialiased) and every label
        (nearest) to this size at load time, before noise: it defines the input space the
        certificate is about. None keeps the files' size. Not for "synthetic" (use size).
    ignore_index: the target value of pixels that are not evaluated.
    classes_file: the "folder" kind's class list (default: <root>/classes.txt).
    skip_invalid: drop invalid items in validation (recorded in the manifest) instead of raising.
    seed, num_images, size: the "synthetic" kind's parameters.
    """

    kind: DatasetKind
    root: str | None = None
    split: SplitName = "val"
    subset: SubsetSpec | None = None
    resize: tuple[PositiveInt, PositiveInt] | None = None
    ignore_index: NonNegativeInt = DEFAULT_IGNORE_INDEX
    classes_file: str | None = None
    skip_invalid: bool = False
    seed: NonNegativeInt = 0
    num_images: PositiveInt = 32
    size: PositiveInt = 64

    @model_validator(mode="after")
    def _fields_of_kind(self) -> DatasetSpec:
        if self.kind == "synthetic":
            if self.root is not None:
                raise ValueError("root: must be left out for kind 'synthetic' (no files)")
            if self.resize is not None:
                raise ValueError("resize: not supported for kind 'synthetic'; use size")
        elif not self.root:
            raise ValueError(f"root: required for kind {self.kind!r}")
        if self.classes_file is not None and self.kind != "folder":
            raise ValueError("classes_file: only used by kind 'folder'")
        return self

    def resolved(self, base_dir: Path | None = None, *, split: str | None = None) -> DatasetSpec:
        """This spec with root and classes_file resolved against base_dir (absolute paths and
        URLs kept; None: kept as written), optionally for another split (validated)."""
        root, classes_file = self.root, self.classes_file
        if base_dir is not None:
            if root is not None and "://" not in root:
                root = str(resolve_path(root, base_dir))
            if classes_file is not None:
                classes_file = str(resolve_path(classes_file, base_dir))
        return dataclasses.replace(
            self, root=root, classes_file=classes_file, split=split or self.split
        )


def resolve_path(path: str, base: Path) -> Path:
    """`path` (user folder expanded): as is when absolute, else relative to `base`."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
