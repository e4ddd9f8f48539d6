"""Prepare the store: validate the dataset, probe the segmenters, then create the store.

Everything that can be checked is checked before anything is written: the dataset (a failing file
is named; `skip_invalid` drops and records it), each segmenter on the first image at its real size
(`probe_segmenters`), the held-out health split. Then the store is created from its template, or
reopened on resume, or refused (another config_id, or a URL holding something else).

One pass over the dataset: validation reads (decodes) each image once and keeps its target,
compressed, for the store's `targets` array, and the first image for the probe.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from certseg.noise import noise_stream
from certseg.run.context import RunContext
from certseg.run.health import open_health_dataset
from certseg.run.lineage import code_version, models_sha256
from certseg.run.models import Models, sampling_precision
from certseg.run.sample import open_run_dataset, predict_clean
from certseg.storage import SampleStore, StoreMismatchError, StoreTemplate, sigma_key

if TYPE_CHECKING:
    from certseg.data.base import Example


@dataclass(frozen=True)
class PreparedStore:
    """The store a run writes to, created (or reopened) and checked.

    created: True only for the run that wrote the template. skipped: (file, reason) of each item
    `skip_invalid` dropped.
    """

    config_id: str
    num_images: int
    num_classes: int
    manifest_sha256: str
    created: bool
    skipped: tuple[tuple[str, str], ...] = ()


class ModelProbeError(ValueError):
    """A model failed on a real dataset image before any sampling (wrong class count, input
    size the model cannot take, ...); the message names the model and the image."""


class KeptTargets:
    """The validated items' targets, kept zlib-compressed from the validation pass until the
    store is written, and the first item whole (for the probe)."""

    def __init__(self) -> None:
        self.first: Example | None = None
        self._packed: list[tuple[tuple[int, int], str, bytes]] = []

    def keep(self, example: Example) -> None:
        """Keep one valid item (call in dataset order)."""
        if self.first is None:
            self.first = example
        target = np.ascontiguousarray(example.target)
        shape = (int(target.shape[0]), int(target.shape[1]))
        self._packed.append((shape, target.dtype.str, zlib.compress(target.tobytes(), 1)))

    def __len__(self) -> int:
        return len(self._packed)

    def shapes(self) -> tuple[tuple[int, int], ...]:
        """(H, W) of each kept target, in order."""
        return tuple(shape for shape, _, _ in self._packed)

    def __iter__(self) -> Iterator[np.ndarray]:
        for shape, dtype, data in self._packed:
            yield np.frombuffer(zlib.decompress(data), dtype=np.dtype(dtype)).reshape(shape)


def error_cause(error: BaseException) -> str:
    """One line of an exception's message: the first, or for an error raised inside TorchScript
    (whose first line only says so) the last, which holds the cause."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return line.removeprefix("RuntimeError: ")[:300]


def segmenter_files(ctx: RunContext) -> dict[str, str]:
    """Used segmenter name → its resolved model path (those with a path), for messages."""
    config = ctx.config
    return {
        name: str(ctx.resolve_path(path))
        for name in config.used_segmenters()
        if (path := config.segmenters[name].path) is not None
    }


def probe_segmenters(
    models: Models, example: Example, *, files: Mapping[str, str] | None = None
) -> None:
    """Run every segmenter once on one (clean) dataset image at its real size.

    Catches, before the store is created, what would otherwise fail in the middle of sampling:
    a class count other than the declared one, an input size the model cannot take, NaN or inf
    logits. Raises ModelProbeError naming the segmenter (and its file, from `files`: name →
    path), the image, the cause and what was expected.
    """
    height, width = example.target.shape
    for name, segmenter in models.segmenters.items():
        where = f"segmenter {name!r}" + (f" ({files[name]})" if files and name in files else "")
        try:
            predict_clean(segmenter, example.image, models.device, image_key=example.image_id)
        except Exception as error:
            raise ModelProbeError(
                f"{where} failed on dataset image {example.image_id!r} "
                f"({height}×{width}, the size it will be sampled at): "
                f"{type(error).__name__}: {error_cause(error)}; expected "
                f"(1, {segmenter.num_classes}, {height}, {width}) logits for a (1, 3, {height}, "
                f"{width}) image in [0, 1] units (a torch.jit.trace'd model keeps the input "
                "size it was traced at: see docs/segmenters.md)"
            ) from error


def prepare_store(ctx: RunContext, models: Models) -> PreparedStore:
    """Validate the dataset, probe `models`' segmenters, then create (or reopen, on resume) the
    store from its template.

    The dataset must have the segmenters' class count. A store written under another config_id
    raises StoreMismatchError; a URL holding anything that is not a certseg store (a project
    folder, a file) raises StoreError and is left untouched. Runs preparing one store at once
    create it once (the others wait and reopen it).
    """
    from certseg.data.registry import validate_dataset

    config = ctx.config
    num_classes = models.num_classes
    kept = KeptTargets()
    report = validate_dataset(open_run_dataset(ctx), num_classes=num_classes, on_valid=kept.keep)
    dataset = report.dataset
    if kept.first is None or len(kept) != len(dataset):
        raise RuntimeError(f"validation of {dataset.name!r} did not report each valid item once")
    probe_segmenters(models, kept.first, files=segmenter_files(ctx))
    health = open_health_dataset(ctx)
    health_ids: tuple[str, ...] = ()
    health_sha = ""
    if health is not None:
        health = validate_dataset(health, num_classes=num_classes).dataset
        health_ids = tuple(health.image_ids())
        health_sha = health.manifest().sha256
    manifest = dataset.manifest()
    ids = tuple(dataset.image_ids())
    schedule = config.look_schedule()
    sequential = config.sequential
    template = StoreTemplate(
        config_id=config.config_id,
        config_json=config.to_public_json(),  # secrets redacted; config_id is unaffected
        code_version=code_version(),
        manifest_sha256=manifest.sha256,
        dataset_name=dataset.name,
        image_ids=ids,
        image_shapes=kept.shapes(),
        num_classes=num_classes,
        class_names=tuple(c.name for c in dataset.classes),
        ignore_index=dataset.ignore_index,
        sigmas=config.sigmas,
        variants=tuple(v.name for v in config.variants),
        variant_segmenters={
            v.name: {sigma_key(s): v.segmenter_for(s) for s in config.sigmas}
            for v in config.variants
        },
        groups=config.denoiser_groups(),
        n0=config.n0,
        n=config.n,
        samples_per_chunk=config.sampling.samples_per_chunk,
        chunk_bytes=max(1, round(config.sampling.chunk_mib * 2**20)),
        health_ids=health_ids,
        health_manifest_sha256=health_sha,
        models_sha256=models_sha256(ctx),
        skipped_files=tuple(report.skipped),
        sampling_precision=sampling_precision(models),
        noise_stream=noise_stream(models.device),
        looks=schedule.sample_counts if schedule else (),
        look_alphas=schedule.alphas if schedule else (),
        alpha=schedule.alpha if schedule else 0.0,
        fraction_tolerance=(
            sequential.fraction_tolerance if schedule and sequential is not None else 0.0
        ),
    )
    try:
        store = SampleStore.create(
            ctx.store_url, template, kept, storage_options=ctx.storage_options
        )
    except StoreMismatchError as error:
        changed = changed_settings(ctx)
        if not changed:
            raise
        raise StoreMismatchError(f"{error}; the settings that differ: {changed}") from error
    return PreparedStore(
        config_id=config.config_id,
        num_images=len(ids),
        num_classes=num_classes,
        manifest_sha256=manifest.sha256,
        created=store.created,
        skipped=tuple(report.skipped),
    )


def changed_settings(ctx: RunContext, limit: int = 8) -> str:
    """The identity settings in which this run's config differs from the one a store at
    ctx.store_url was written under, as "key: stored → now" ("" when it cannot tell)."""
    import json

    from certseg.config import config_from_dict, flatten_settings

    try:
        stored = SampleStore.open(ctx.store_url, storage_options=ctx.storage_options)
        then = flatten_settings(config_from_dict(json.loads(stored.attrs["config"])).identity())
    except (ValueError, KeyError, TypeError):
        return ""
    now = flatten_settings(ctx.config.identity())
    keys = sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))
    shown = [f"{k}: {then.get(k, '(unset)')} → {now.get(k, '(unset)')}" for k in keys[:limit]]
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(shown) + more
