"""The one frozen, typed run configuration, loaded from YAML, and its `config_id`.

A run is fully described by a `RunConfig`: which dataset, which segmenters and denoisers, which
variants (base classifiers) to certify, at which σ ([0, 1] units), with n0 selection samples and
n estimation samples per image, at family-wise level α with threshold τ. Validation errors are
`ValueError`s whose message names the field, e.g. ``config.tau: must be in (0.5, 1), got 0.4``.

`config_id` is the sha256 of the canonical JSON of exactly the parts that determine the stored
samples (dataset, models used, variants' wiring, σ values, n0, n, seed, denoiser options, bf16,
samples_per_chunk — or chunk_mib when samples_per_chunk is not given —, health set, the
sequential block when enabled). It excludes α, τ and the correction (recertify may change them),
labels, batch size, device, threads, shards, store, tracking and Dask settings. Paths are hashed
as written (no file is read). The model files' content is not part of config_id but is part of
the store's identity: the store records one sha256 over the used model files (models_sha256) and
refuses a run whose files differ; tracking logs each file's sha256 as a lineage tag.

One schema per concept: the `dataset` section is a `certseg.data.spec.DatasetSpec`, each
`segmenters` entry a `certseg.models.spec.SegmenterSpec` (named by its key), and n, α, τ and the
correction are validated by the types `CertifyParams` uses (`certify_params()` returns them). The
correction Literal comes from certseg.stats, the timestep rule from certseg.noise. config sits
beside the dataset loaders and the segmenter registry, not above them: it imports only the spec
modules they also import.

What certseg persists or logs of a config is `public_dict()` / `to_public_json()` /
`flat_params()`: storage_options values and URL credentials redacted (certseg.redact). Redaction
leaves config_id alone: it is computed on the true values, and the store, tracking and Dask
sections are not part of it anyway.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.dataclasses import dataclass

from certseg.data.spec import SPEC_CONFIG, DatasetSpec, SplitName, resolve_path
from certseg.models.spec import SegmenterSpec
from certseg.noise import DenoiseMode, TimestepRule
from certseg.redact import redact_config_dict
from certseg.stats.correction import Correction
from certseg.stats.sequential import LookSchedule

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"


def check_alpha(alpha: float) -> float:
    """α if it is in (0, 1), else ValueError."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"must be in (0, 1), got {alpha}")
    return alpha


def check_tau(tau: float) -> float:
    """τ if it is in (0.5, 1), else ValueError."""
    if not 0.5 < tau < 1.0:
        raise ValueError(f"must be in (0.5, 1), got {tau}")
    return tau


Alpha = Annotated[float, AfterValidator(check_alpha)]
Tau = Annotated[float, AfterValidator(check_tau)]
SampleCount = Annotated[StrictInt, Field(ge=1)]


@dataclass(frozen=True, config=SPEC_CONFIG)
class CertifyParams:
    """The certificate's parameters: n estimation samples used, family-wise level α per image,
    threshold τ and the multiple-testing correction. The run config's fields of the same names
    are validated by the same types; `RunConfig.certify_params()` gives them as one value."""

    n: SampleCount
    alpha: Alpha
    tau: Tau
    correction: Correction = "holm"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class DenoiserConfig(_Frozen):
    """One diffusion denoiser: a diffusers folder (or ADM .pt) and how it is applied."""

    path: str
    timestep_rule: TimestepRule = "matched"
    num_steps: int = Field(default=1, ge=1)
    resolution: int | tuple[int, int] | None = None
    """The UNet's input: one int (square) or [height, width], as DiffusionDenoiser takes it;
    None: the noisy image's own size."""

    mode: DenoiseMode = "resize"
    """"resize" (the paper: the image resized to `resolution` and back) or "tiled" (denoised at
    its own resolution in overlapping tiles of size `resolution`; certseg.denoise.plan_tiles)."""
    tile_overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    """mode "tiled" only: the least overlap of neighbouring tiles, a fraction of the tile side."""

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> Any:
        sides = value if isinstance(value, list | tuple) else (() if value is None else (value,))
        if any(isinstance(side, bool) or not isinstance(side, int) or side < 1 for side in sides):
            raise ValueError(f"must be an int or [height, width], each >= 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _tiling(self) -> DenoiserConfig:
        if self.mode == "tiled" and self.resolution is None:
            raise ValueError("resolution: mode 'tiled' needs the tile size (the UNet's input)")
        if self.mode == "resize" and "tile_overlap" in self.model_fields_set:
            raise ValueError("tile_overlap: only applies to mode 'tiled'")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_mode(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Mode "resize" (the default) serializes as before the field existed, so config_id and
        the persisted config of every resize-mode config are unchanged; "tiled" shows both."""
        data: dict[str, Any] = handler(self)
        if self.mode == "resize":
            data.pop("mode", None)
            data.pop("tile_overlap", None)
        return data


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
    """How samples are drawn (not part of config_id except bf16, channels_last when true, and the
    chunking: samples_per_chunk, or chunk_mib when that is not given)."""

    batch_size: int = Field(default=32, ge=1)
    device: str = "cpu"
    bf16: Literal["auto"] | bool = "auto"
    channels_last: bool = False
    """Model weights in channels_last memory format: faster convolutions (oneDNN on CPU, tensor
    cores on GPU: the shipped segmenter 1.7× in bf16 at 1024×2048, docs/benchmarks.md), other
    float rounding, so part of config_id when true (absent from it when false)."""
    threads: int | None = Field(default=None, ge=1)
    """torch threads per process; None: cores // workers (certseg.run.resources)."""
    workers: int = Field(default=1, ge=1)
    """Shards sampled at once in one process (local task runner); capped at `shards`."""
    memory_mib: int = Field(default=2048, ge=1)
    """Working memory one forward batch may take per worker (noise, activations, logits): the
    batch is lowered to fit (one sample measured first), or sampling stops before it starts."""
    samples_per_chunk: int | None = Field(default=None, ge=1)
    """Class maps per store chunk; None: as many as fit chunk_mib (certseg.storage.layout)."""
    chunk_mib: float = Field(default=8.0, gt=0)
    """Target uncompressed MiB of one sample chunk when samples_per_chunk is None."""


class SequentialConfig(_Frozen):
    """Sequential certification (docs/method.md §5, certseg.stats.sequential): off by default.

    looks: estimation sample counts n_1 < ... < n_L at which an image is certified; the last must
    equal the run's n. alpha_weights: the split of α over the looks, α_ℓ = α·w_ℓ/Σw, one weight per
    look (null: equal split); setting `looks` to another length needs `alpha_weights` too.
    fraction_tolerance: stop when the certified fraction moves by less than this between looks
    (0: only the "cannot improve" rule and the last look stop). Part of config_id only when
    enabled (the samples a store holds then depend on it); absent or off, config_id is unchanged.
    Defaults (measured, docs/sequential.md): for the demo's n = 100, looks (60, 100) with α split
    1:3 and no fraction rule lose 0.05 points of certified accuracy on average and save ~1%
    of passes; for n = 400, looks (100, 200, 300, 400), equal split, tolerance 0.01 save 1.31×
    for 0.34 points. Neither beats a smaller fixed n on this benchmark.
    """

    enabled: bool = False
    looks: tuple[SampleCount, ...] = (60, 100)
    alpha_weights: tuple[float, ...] | None = (1.0, 3.0)
    fraction_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)

    def schedule(self, alpha: float) -> LookSchedule:
        """The look schedule at family-wise level alpha (ValueError naming the field if invalid)."""
        if self.alpha_weights is None:
            return LookSchedule.equal(self.looks, alpha)
        return LookSchedule.weighted(self.looks, alpha, self.alpha_weights)


class HealthConfig(_Frozen):
    """The base-accuracy health check: one noisy draw per image on a held-out split."""

    num_images: int = Field(default=8, ge=0)
    split: SplitName = "val"
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


class ReportConfig(_Frozen):
    """The results folder's figures: overlay_images, how many images (the store's first) the
    overlay figure shows."""

    overlay_images: int = Field(default=4, ge=0)


class RunConfig(_Frozen):
    """The whole run. σ in [0, 1] image units; α one-sided family-wise level per image."""

    name: str = "certseg"
    dataset: DatasetSpec
    segmenters: dict[str, SegmenterSpec]
    denoisers: dict[str, DenoiserConfig] = Field(default_factory=dict)
    variants: tuple[VariantConfig, ...]
    sigmas: tuple[float, ...]
    n0: SampleCount
    n: SampleCount
    alpha: Alpha = 0.001
    tau: Tau = 0.75
    correction: Correction = "holm"
    seed: int = Field(default=0, ge=0)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    sequential: SequentialConfig | None = None
    """Sequential certification; None (absent) is off and is left out of the serialized config,
    so configs without the block keep their pinned JSON and config_id."""
    store: StoreConfig = Field(default_factory=StoreConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    shards: int = Field(default=1, ge=1)
    base_dir: str | None = None
    """Directory that relative model and dataset paths resolve against (default: the CWD)."""

    @field_validator("segmenters")
    @classmethod
    def _named_by_key(cls, value: dict[str, SegmenterSpec]) -> dict[str, SegmenterSpec]:
        named = {}
        for key, spec in value.items():
            if spec.name not in (None, key):
                raise ValueError(
                    f"{key}.name: leave it out (the segmenter is named by its key), "
                    f"got {spec.name!r}"
                )
            named[key] = dataclasses.replace(spec, name=key)
        return named

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
        if self.sequential is not None and self.sequential.enabled:
            try:
                schedule = self.sequential.schedule(self.alpha)
            except ValueError as error:
                raise ValueError(f"sequential: {error}") from None
            if schedule.n_max != self.n:
                raise ValueError(
                    f"sequential.looks: the last look must equal n = {self.n}, "
                    f"got {list(schedule.sample_counts)}"
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
        return resolve_path(path, Path(self.base_dir) if self.base_dir else Path.cwd())

    def certify_params(self) -> CertifyParams:
        """n, α, τ and the correction as the certificate's parameters."""
        return CertifyParams(n=self.n, alpha=self.alpha, tau=self.tau, correction=self.correction)

    @model_serializer(mode="wrap")
    def _omit_absent_sequential(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.sequential is None:
            data.pop("sequential", None)
        return data

    def look_schedule(self) -> LookSchedule | None:
        """The sequential look schedule at this run's α, or None when sequential is off."""
        if self.sequential is None or not self.sequential.enabled:
            return None
        return self.sequential.schedule(self.alpha)

    def identity(self) -> dict[str, Any]:
        """The parts that determine the stored samples (the input of config_id), JSON-ready."""
        used = self.used_segmenters()
        used_denoisers = sorted({v.denoiser for v in self.variants if v.denoiser})
        dumped = self.model_dump(mode="json")
        return {
            # skip_invalid only decides which files are used: the image ids and the manifest
            # hash in the store record that.
            "dataset": {k: v for k, v in dumped["dataset"].items() if k != "skip_invalid"},
            "segmenters": {k: dumped["segmenters"][k] for k in used},
            "denoisers": {k: dumped["denoisers"][k] for k in used_denoisers},
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
            **({"channels_last": True} if self.sampling.channels_last else {}),
            "samples_per_chunk": self.sampling.samples_per_chunk,
            # the chunk target decides the layout only when samples_per_chunk is not given
            **(
                {"chunk_mib": self.sampling.chunk_mib}
                if self.sampling.samples_per_chunk is None
                else {}
            ),
            "health": {"num_images": self.health.num_images, "split": self.health.split},
            **({"sequential": dumped["sequential"]} if self.look_schedule() else {}),
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
        return flatten_settings(self.public_dict())


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace variance."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def flatten_settings(value: Any) -> dict[str, str]:
    """A JSON-ready nested mapping as dotted keys → strings (lists of mappings indexed), the form
    of MLflow params and of a refused store's "settings that differ"."""
    out: dict[str, str] = {}
    _flatten(value, "", out)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}.{i}", out)
    else:
        out[prefix] = json.dumps(value) if not isinstance(value, str) else value


_NAMES_ITS_FIELD = re.compile(r"^[\w.-]+: ")
"""A check across fields starts its message with the field's path below its location."""


def _format_error(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join([prefix, *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        if _NAMES_ITS_FIELD.match(message):
            lines.append(f"{where}.{message}")
            continue
        shown = ""
        if (
            "input" in item
            and item["type"] != "missing"
            and not isinstance(item["input"], dict)
            and "got " not in message
        ):
            shown = f", got {item['input']!r}"
        lines.append(f"{where}: {message}{shown}")
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


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a config file (not yet validated as a RunConfig).

    Raises ValueError naming the file when it is missing, not YAML or not a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {str(file)!r} does not exist")
    text = file.read_text()
    key = (str(file.resolve()), hashlib.sha256(text.encode()).hexdigest())
    if key not in _PARSED:  # the CLI's preflight and the flow it starts share one parse
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"config file {str(file)!r} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a mapping at the top level")
        if len(_PARSED) >= 16:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = data
    return copy.deepcopy(_PARSED[key])


_PARSED: dict[tuple[str, str], dict[str, Any]] = {}
"""Parsed config files of this process by (absolute path, sha256 of the text): a file is parsed
once per process while its content is unchanged (callers get deep copies)."""


def load_config(path: str | Path, *, base_dir: str | Path | None = None) -> RunConfig:
    """Read and validate a YAML config file.

    base_dir: directory relative model/dataset paths resolve against (default: keep the file's
    `base_dir` key, else the CWD at use time). Raises ValueError naming the file and the field.
    """
    data = read_config_mapping(path)
    if base_dir is not None:
        data = {**data, "base_dir": str(base_dir)}
    return config_from_dict(data, source=str(path))
