"""The one frozen, typed run configuration, loaded from YAML, and its `config_id`.

A run is fully described by a `RunConfig`: which dataset, which segmenters and denoisers, which
variants (base classifiers) to certify, at which σ ([0, 1] units), with n0 selection samples and
n estimation samples per image, at family-wise level α with threshold τ. Validation errors are
`ValueError`s whose message names the field, e.g. ``config.tau: must be in (0.5, 1), got 0.4``.

`config_id` is the sha256 of the canonical JSON of exactly the parts that determine the stored
samples (dataset, models used, variants' wiring, σ values, n0, n, seed, denoiser options, bf16,
samples_per_chunk, health set). It excludes α, τ and the correction (recertify may change them),
labels, batch size, device, threads, shards, store, tracking and Dask settings. Paths are hashed
as written (no file is read); the model files' sha256s are lineage tags, recorded by tracking.

What certseg persists or logs of a config is `public_dict()` / `to_public_json()` /
`flat_params()`: storage_options values and URL credentials redacted (certseg.redact). Redaction
leaves config_id alone: it is computed on the true values, and the store, tracking and Dask
sections are not part of it anyway.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from certseg.redact import redact_config_dict

Correction = Literal["holm", "bonferroni"]
DatasetKind = Literal["synthetic", "cityscapes", "pascal_context", "folder"]
TimestepRule = Literal["matched", "laousy2023"]

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class SubsetConfig(_Frozen):
    """Which items of a dataset to use (see certseg.data.registry.SubsetSpec)."""

    first: int | None = Field(default=None, ge=1)
    every: int | None = Field(default=None, ge=1)
    ids: tuple[str, ...] | None = None


class DatasetConfig(_Frozen):
    """The dataset section: the fields of certseg.data.registry.DatasetSpec."""

    kind: DatasetKind
    root: str | None = None
    split: str = "val"
    subset: SubsetConfig | None = None
    resize: tuple[int, int] | None = None
    ignore_index: int = Field(default=255, ge=0)
    classes_file: str | None = None
    skip_invalid: bool = False
    seed: int = Field(default=0, ge=0)
    num_images: int = Field(default=32, ge=1)
    size: int = Field(default=64, ge=1)

    def to_spec(self, *, split: str | None = None, base_dir: Path | None = None) -> Any:
        """The certseg.data.registry.DatasetSpec (optionally for another split), root resolved."""
        from certseg.data.registry import DatasetSpec, SubsetSpec

        subset = None
        if self.subset is not None:
            sub = self.subset
            subset = SubsetSpec(first=sub.first, every=sub.every, ids=sub.ids)
        root = self.root
        if root is not None and base_dir is not None and "://" not in root:
            root = str(_resolve(root, base_dir))
        classes_file = self.classes_file
        if classes_file is not None and base_dir is not None:
            classes_file = str(_resolve(classes_file, base_dir))
        return DatasetSpec(
            kind=self.kind,
            root=root,
            split=split or self.split,
            subset=subset,
            resize=self.resize,
            ignore_index=self.ignore_index,
            classes_file=classes_file,
            skip_invalid=self.skip_invalid,
            seed=self.seed,
            num_images=self.num_images,
            size=self.size,
        )


class SegmenterConfig(_Frozen):
    """One segmenter: the fields of certseg.models.SegmenterSpec (None fields are left out)."""

    family: str
    path: str | None = None
    num_classes: int | None = Field(default=None, ge=1)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class DenoiserConfig(_Frozen):
    """One diffusion denoiser: a diffusers folder (or ADM .pt) and how it is applied."""

    path: str
    timestep_rule: TimestepRule = "matched"
    num_steps: int = Field(default=1, ge=1)
    resolution: int | None = Field(default=None, ge=1)


class VariantConfig(_Frozen):
    """One base classifier f to certify: a segmenter (fixed or per σ), optionally behind a denoiser.

    name: a short key (letters, digits, '-', '_'). label: the table's description.
    needs_training: the variant needs a model trained for the method (shown in every table).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    segmenter: str | None = None
    segmenter_by_sigma: dict[float, str] | None = None
    denoiser: str | None = None
    needs_training: bool = False
    label: str = ""

    @model_validator(mode="after")
    def _one_segmenter(self) -> VariantConfig:
        if (self.segmenter is None) == (self.segmenter_by_sigma is None):
            raise ValueError("segmenter: give exactly one of segmenter and segmenter_by_sigma")
        return self

    def segmenter_for(self, sigma: float) -> str:
        """The segmenter name this variant uses at σ."""
        if self.segmenter is not None:
            return self.segmenter
        assert self.segmenter_by_sigma is not None
        for key, name in self.segmenter_by_sigma.items():
            if abs(key - sigma) < 1e-12:
                return name
        raise ValueError(f"variant {self.name!r} has no segmenter for sigma={sigma}")


class SamplingConfig(_Frozen):
    """How samples are drawn (not part of config_id except bf16 and samples_per_chunk)."""

    batch_size: int = Field(default=32, ge=1)
    device: str = "cpu"
    bf16: Literal["auto"] | bool = "auto"
    threads: int | None = Field(default=None, ge=1)
    samples_per_chunk: int = Field(default=100, ge=1)


class HealthConfig(_Frozen):
    """The base-accuracy health check: one noisy draw per image on a held-out split."""

    num_images: int = Field(default=8, ge=0)
    split: str = "val"
    floor: float = Field(default=0.5, ge=0.0, le=1.0)


class StoreConfig(_Frozen):
    """Where the Zarr sample store lives: a local path or any fsspec URL (s3://...)."""

    url: str = "certseg-store.zarr"
    storage_options: dict[str, Any] = Field(default_factory=dict)


class TrackingConfig(_Frozen):
    """MLflow tracking URI and experiment name."""

    uri: str = DEFAULT_TRACKING_URI
    experiment: str = "certseg"


class DaskConfig(_Frozen):
    """Aggregation cluster: a scheduler address, or a LocalCluster of n_workers processes."""

    address: str | None = None
    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    processes: bool = True


class RunConfig(_Frozen):
    """The whole run. σ in [0, 1] image units; α one-sided family-wise level per image."""

    name: str = "certseg"
    dataset: DatasetConfig
    segmenters: dict[str, SegmenterConfig]
    denoisers: dict[str, DenoiserConfig] = Field(default_factory=dict)
    variants: tuple[VariantConfig, ...]
    sigmas: tuple[float, ...]
    n0: int = Field(ge=1)
    n: int = Field(ge=1)
    alpha: float = 0.001
    tau: float = 0.75
    correction: Correction = "holm"
    seed: int = Field(default=0, ge=0)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    shards: int = Field(default=1, ge=1)
    base_dir: str | None = None
    """Directory that relative model and dataset paths resolve against (default: the CWD)."""

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"must be in (0, 1), got {value}")
        return value

    @field_validator("tau")
    @classmethod
    def _tau(cls, value: float) -> float:
        if not 0.5 < value < 1.0:
            raise ValueError(f"must be in (0.5, 1), got {value}")
        return value

    @field_validator("sigmas")
    @classmethod
    def _sigmas(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("must list at least one sigma")
        if any(not s > 0 for s in value):
            raise ValueError(f"every sigma must be > 0, got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"sigmas must be distinct, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _references(self) -> RunConfig:
        if not self.variants:
            raise ValueError("variants: must list at least one variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be distinct, got {names}")
        for key in self.denoisers:
            if key in ("", "none"):
                raise ValueError(
                    f"denoisers: {key!r} cannot name a denoiser (it is the store's group for "
                    "variants without one, so its variants would silently run undenoised)"
                )
        for i, variant in enumerate(self.variants):
            where = f"variants.{i}"
            if variant.denoiser is not None and variant.denoiser not in self.denoisers:
                raise ValueError(
                    f"{where}.denoiser: {variant.denoiser!r} is not a key of denoisers "
                    f"{sorted(self.denoisers)}"
                )
            if variant.segmenter is not None and variant.segmenter not in self.segmenters:
                raise ValueError(
                    f"{where}.segmenter: {variant.segmenter!r} is not a key of segmenters "
                    f"{sorted(self.segmenters)}"
                )
            if variant.segmenter_by_sigma is not None:
                keys = sorted(variant.segmenter_by_sigma)
                if sorted(self.sigmas) != keys:
                    raise ValueError(
                        f"{where}.segmenter_by_sigma: keys {keys} must equal sigmas "
                        f"{sorted(self.sigmas)}"
                    )
                for name in variant.segmenter_by_sigma.values():
                    if name not in self.segmenters:
                        raise ValueError(
                            f"{where}.segmenter_by_sigma: {name!r} is not a key of segmenters "
                            f"{sorted(self.segmenters)}"
                        )
        if self.health.num_images and self.dataset.kind == "folder":
            raise ValueError(
                "health.num_images: a folder dataset has no held-out split, so the health check "
                "would read the images it certifies; set health.num_images: 0 (or export "
                "held-out images to a dataset with splits)"
            )
        if self.health.num_images and self.health.split == self.dataset.split:
            raise ValueError(
                f"health.split: must differ from dataset.split ({self.dataset.split!r}): the "
                "health check uses held-out images"
            )
        return self

    # --- derived views -------------------------------------------------------------------

    def denoiser_groups(self) -> dict[str, tuple[str, ...]]:
        """Denoiser group name ("none" or a denoiser key) → names of the variants behind it.

        One denoiser pass per noisy sample feeds every variant of its group.
        """
        groups: dict[str, list[str]] = {}
        for variant in self.variants:
            groups.setdefault(variant.denoiser or "none", []).append(variant.name)
        return {key: tuple(value) for key, value in groups.items()}

    def variant(self, name: str) -> VariantConfig:
        """The variant called `name` (ValueError naming the known ones otherwise)."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = [v.name for v in self.variants]
        raise ValueError(f"variant {name!r} not in config; known: {known}")

    def used_segmenters(self) -> tuple[str, ...]:
        """Names of segmenters some variant uses at some σ, sorted."""
        names = {v.segmenter_for(s) for v in self.variants for s in self.sigmas}
        return tuple(sorted(names))

    def resolve_path(self, path: str) -> Path:
        """A model/dataset path: absolute as is, else relative to base_dir (or the CWD)."""
        return _resolve(path, Path(self.base_dir) if self.base_dir else Path.cwd())

    def identity(self) -> dict[str, Any]:
        """The parts that determine the stored samples (the input of config_id), JSON-ready."""
        used = self.used_segmenters()
        used_denoisers = sorted({v.denoiser for v in self.variants if v.denoiser})
        return {
            # skip_invalid only decides which files are used: the image ids and the manifest
            # hash in the store record that.
            "dataset": self.dataset.model_dump(mode="json", exclude={"skip_invalid"}),
            "segmenters": {k: self.segmenters[k].model_dump(mode="json") for k in used},
            "denoisers": {k: self.denoisers[k].model_dump(mode="json") for k in used_denoisers},
            "variants": [
                {
                    "name": v.name,
                    "denoiser": v.denoiser,
                    "segmenters": {str(s): v.segmenter_for(s) for s in self.sigmas},
                }
                for v in self.variants
            ],
            "sigmas": list(self.sigmas),
            "n0": self.n0,
            "n": self.n,
            "seed": self.seed,
            "bf16": self.sampling.bf16,
            "samples_per_chunk": self.sampling.samples_per_chunk,
            "health": {"num_images": self.health.num_images, "split": self.health.split},
        }

    @property
    def config_id(self) -> str:
        """sha256 (hex) of the canonical JSON of `identity()`."""
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()

    def to_json(self) -> str:
        """The full config as canonical JSON, secrets included (round-trips through
        `config_from_dict`; never persist it: use `to_public_json`)."""
        return canonical_json(self.model_dump(mode="json"))

    def public_dict(self) -> dict[str, Any]:
        """The full config, JSON-ready, with storage_options values and URL credentials replaced
        by certseg.redact.REDACTED: what certseg writes to disk, MLflow and logs."""
        return redact_config_dict(self.model_dump(mode="json"))

    def to_public_json(self) -> str:
        """`public_dict()` as canonical JSON (the store's `config` attribute)."""
        return canonical_json(self.public_dict())

    def flat_params(self) -> dict[str, str]:
        """`public_dict()` flattened to dotted keys → strings (for MLflow params)."""
        out: dict[str, str] = {}
        _flatten(self.public_dict(), "", out)
        return out


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace variance."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}.{i}", out)
    else:
        out[prefix] = json.dumps(value) if not isinstance(value, str) else value


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _format_error(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if not loc:  # a model-level check: its message starts with the field path
            lines.append(f"{prefix}.{message}")
            continue
        field = f"{prefix}.{loc}"
        shown = ""
        if (
            "input" in item
            and item["type"] not in ("missing",)
            and not isinstance(item["input"], dict)
        ):
            shown = f", got {item['input']!r}"
            if f"got {item['input']!r}" in message or "got " in message:
                shown = ""
        lines.append(f"{field}: {message}{shown}")
    return "; ".join(lines)


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> RunConfig:
    """Validate a mapping into a RunConfig; ValueError naming each bad field as `config.<path>`."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ValueError(f"{source}: expected a mapping at the top level, got {kind}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ValueError(f"{source}: {_format_error(error, 'config')}") from None


def load_config(path: str | Path, *, base_dir: str | Path | None = None) -> RunConfig:
    """Read and validate a YAML config file.

    base_dir: directory relative model/dataset paths resolve against (default: keep the file's
    `base_dir` key, else the CWD at use time). Raises ValueError naming the file and the field.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"config file {str(file)!r} is not valid YAML: {error}") from None
    if base_dir is not None:
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a mapping at the top level")
        data = {**data, "base_dir": str(base_dir)}
    return config_from_dict(data, source=str(file))
