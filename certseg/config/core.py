"""The whole run's config, `RunConfig`: its cross-field checks, derived views and `config_id`.

`config_id` is the sha256 of the canonical JSON of `RunConfig.identity()`: exactly the parts that
determine the stored samples (see certseg.config). `to_json` / `public_dict` / `flat_params` are
the serialized forms (public ones redacted by certseg.redact).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from certseg.config.sections import (
    Alpha,
    CertifyParams,
    DaskConfig,
    DenoiserConfig,
    HealthConfig,
    ReportConfig,
    SampleCount,
    SamplingConfig,
    SequentialConfig,
    StoreConfig,
    Tau,
    TrackingConfig,
    VariantConfig,
    _Frozen,
)
from certseg.data.spec import DatasetSpec, resolve_path
from certseg.models.spec import SegmenterSpec
from certseg.redact import redact_config_dict
from certseg.stats.correction import Correction
from certseg.stats.sequential import LookSchedule


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
