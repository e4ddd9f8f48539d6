"""How to build one segmenter: the one validated spec shared by the run config and the registry.

`SegmenterSpec` is a frozen pydantic dataclass: `SegmenterSpec("compact", "weights/segmenter-a")`
validates on construction (a pydantic ValidationError, a ValueError, naming the field), and each
entry of the run config's `segmenters` section *is* a SegmenterSpec (its `name` is the entry's
key). `certseg.models.registry.build_segmenter(spec)` builds it. This module imports no other
certseg module and no torch.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, StrictInt, field_validator, model_validator
from pydantic.dataclasses import dataclass

from certseg.errors import ModelFileError

FamilyName = Literal["compact", "module", "python", "torchscript", "segformer"]
FAMILY_NAMES: tuple[str, ...] = get_args(FamilyName)

Triple = tuple[float, float, float]

FACTORY_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""A `python`-family factory: "package.module:function" (attributes after the colon)."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SegmenterSpec:
    """How to build one segmenter.

    family: one of FAMILY_NAMES. path: local weights (a folder for "compact"/"segformer", a file
    for "torchscript", an optional state-dict file for "module"/"python"). num_classes: required
    for "module"/"python"/"torchscript"; checked against the folder's config for "compact" and
    "segformer". mean / std: per-channel normalization in [0, 1] units, given together
    (std > 0); None takes the folder's config ("compact", "segformer"), and is an error for the
    other families. options: family extras — "module": {"module": an nn.Module, given in
    Python}; "python": {"factory": "package.module:function", "kwargs": {...}, "output_key":
    "out"} (the function is imported and called with kwargs and must return an nn.Module: the
    only way a config runs code); "torchscript": {"output_key": "out"}. name: label used in
    tables and storage (default: the family; in a run config, the segmenter's key). `name` is
    not part of the spec's serialized form (model_dump leaves it out), so it never enters a
    config's JSON or config_id.
    """

    family: FamilyName
    path: str | None = None
    num_classes: Annotated[StrictInt, Field(ge=2)] | None = None
    mean: Triple | None = None
    std: Triple | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str | None = Field(default=None, exclude=True)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: Triple | None) -> Triple | None:
        if std is not None and min(std) <= 0:
            raise ValueError(f"entries must be > 0, got {list(std)}")
        return std

    @model_validator(mode="after")
    def _mean_with_std(self) -> SegmenterSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean: mean and std must be given together (or both left out)")
        return self

    @model_validator(mode="after")
    def _family_options(self) -> SegmenterSpec:
        if self.family == "python":
            factory = self.options.get("factory")
            if not isinstance(factory, str) or not FACTORY_PATTERN.fullmatch(factory):
                raise ValueError(
                    'options.factory: family "python" needs options.factory: '
                    f'"package.module:function" (an importable function), got {factory!r}'
                )
            unknown = sorted(set(self.options) - {"factory", "kwargs", "output_key"})
            if unknown:
                raise ValueError(
                    f"options: unknown keys {unknown} for family 'python'; expected factory, "
                    "kwargs (the function's keyword arguments), output_key"
                )
            if not isinstance(self.options.get("kwargs", {}), dict):
                raise ValueError("options.kwargs: expected a mapping of keyword arguments")
        if self.family == "module" and isinstance(self.options.get("module"), str | None):
            raise ValueError(
                'options.module: family "module" takes an nn.Module object given from Python '
                '(options={"module": net}); in a YAML config use family "python" with '
                'options.factory: "package.module:function" (a function returning the nn.Module)'
            )
        return self

    @property
    def label(self) -> str:
        """The segmenter's name: `name` if given, else the family."""
        return self.name or self.family

    def require_path(self) -> Path:
        """The path as a Path; ValueError naming the family when missing (ModelFileError when
        absent on disk)."""
        if self.path is None:
            raise ValueError(f"SegmenterSpec.path is required for family {self.family!r}")
        path = Path(self.path)
        if not path.exists():
            raise ModelFileError(
                f"SegmenterSpec.path {path} does not exist (family {self.family!r})"
            )
        return path
