"""The config's sections and field types: denoiser, variant, sampling, sequential, health, store,
tracking, Dask and report schemas, the α/τ/n types and `CertifyParams`.

Each section is a frozen pydantic model that forbids unknown keys; a bad value is a `ValueError`
naming the field (certseg.config.files formats the path). The α, τ and sample-count types are the
ones `RunConfig` (certseg.config.core) and `CertifyParams` share, so each is validated in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.dataclasses import dataclass

from certseg.data.spec import SPEC_CONFIG, SplitName
from certseg.noise import DenoiseMode, TimestepRule
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
