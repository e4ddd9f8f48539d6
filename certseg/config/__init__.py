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

The package, one job per module: `sections` (the section schemas, the α/τ/n types and
`CertifyParams`), `core` (`RunConfig`, its identity and serialized forms), `files` (YAML file →
mapping → `RunConfig`, errors naming each field). Every name is importable from certseg.config.
"""

from __future__ import annotations

from certseg.config.core import RunConfig, canonical_json, flatten_settings
from certseg.config.files import config_from_dict, load_config, read_config_mapping
from certseg.config.sections import (
    DEFAULT_TRACKING_URI,
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
    check_alpha,
    check_tau,
)
from certseg.noise import TimestepRule
from certseg.stats.correction import Correction

__all__ = [
    "DEFAULT_TRACKING_URI",
    "Alpha",
    "CertifyParams",
    "Correction",
    "DaskConfig",
    "DenoiserConfig",
    "HealthConfig",
    "ReportConfig",
    "RunConfig",
    "SampleCount",
    "SamplingConfig",
    "SequentialConfig",
    "StoreConfig",
    "Tau",
    "TimestepRule",
    "TrackingConfig",
    "VariantConfig",
    "canonical_json",
    "check_alpha",
    "check_tau",
    "config_from_dict",
    "flatten_settings",
    "load_config",
    "read_config_mapping",
]
