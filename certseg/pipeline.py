"""The orchestration-free run layer: plan shards, prepare the store, sample a shard, health check.

Each function does one step of `certify-dataset` and can be called from a Prefect task, a Dask
worker or a test. Everything a step needs travels as plain values (the config, the store URL and
its storage_options), so a step can run in another process. Models are loaded once per process
(`load_models`, cached by config_id and device). torch is imported inside the functions.

Sampling streams image by image: for each image, σ and denoiser group, `sample_class_maps` is
called once per sample block (one denoiser pass feeds every segmenter of the group), each
variant's class maps are written to its chunk, then the block's completion flag. Blocks already
flagged are skipped, so a re-run resumes where a killed run stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from certseg.config import RunConfig
from certseg.redact import check_unredacted, redact_config_dict, redact_url
from certseg.storage import PHASES_STORED, SampleStore, StoreTemplate, sigma_key

if TYPE_CHECKING:
    from certseg.data.base import SegmentationDataset

Sampler = Callable[..., Mapping[str, np.ndarray]]
Progress = Callable[[int], None]


def code_version() -> str:
    """`git describe --always --dirty` of the certseg checkout, else the package version."""
    import certseg

    root = Path(certseg.__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        described = out.stdout.strip()
        if described:
            return f"{certseg.__version__}+{described}"
    except (OSError, subprocess.SubprocessError):
        pass
    return certseg.__version__


@dataclass(frozen=True)
class Shard:
    """A contiguous range of images [start, stop) sampled by one task."""

    index: int
    start: int
    stop: int


def plan_shards(num_images: int, shards: int) -> tuple[Shard, ...]:
    """Split N images into at most `shards` contiguous, near-equal ranges (none empty)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    count = min(shards, num_images)
    bounds = [round(i * num_images / count) for i in range(count + 1)]
    return tuple(Shard(i, bounds[i], bounds[i + 1]) for i in range(count))


# --- models ---------------------------------------------------------------------------------


@dataclass
class Models:
    """Loaded models of a run: segmenters and denoisers by config key, and the autocast dtype."""

    segmenters: dict[str, Any]
    denoisers: dict[str, Any]
    autocast_dtype: Any = None
    device: str = "cpu"

    @property
    def num_classes(self) -> int:
        """The segmenters' class count (they must agree)."""
        counts = {int(s.num_classes) for s in self.segmenters.values()}
        if len(counts) != 1:
            raise ValueError(f"segmenters disagree on num_classes: {sorted(counts)}")
        return counts.pop()


_MODELS: dict[tuple[str, str], Models] = {}


def resolve_autocast(config: RunConfig) -> Any:
    """torch.bfloat16 when sampling.bf16 is true, or "auto" and the device supports it."""
    import torch

    setting = config.sampling.bf16
    if setting is False:
        return None
    if setting is True:
        return torch.bfloat16
    try:
        from certseg.sampling import bf16_supported
    except ImportError:
        return None
    return torch.bfloat16 if bf16_supported(config.sampling.device) else None


def load_models(config: RunConfig, *, device: str | None = None) -> Models:
    """Build every segmenter and denoiser the variants use (cached per process and config_id).

    Sets torch's thread count when sampling.threads is given.
    """
    import torch

    device = device or config.sampling.device
    if config.sampling.threads is not None:
        torch.set_num_threads(config.sampling.threads)
    key = (config.config_id, device)
    if key in _MODELS:
        return _MODELS[key]
    from certseg.models import SegmenterSpec, build_segmenter

    autocast = resolve_autocast(config)
    segmenters: dict[str, Any] = {}
    for name in config.used_segmenters():
        spec = config.segmenters[name]
        path = str(config.resolve_path(spec.path)) if spec.path is not None else None
        segmenter = build_segmenter(
            SegmenterSpec(
                family=spec.family,  # type: ignore[arg-type]
                path=path,
                num_classes=spec.num_classes,
                mean=spec.mean,
                std=spec.std,
                options=dict(spec.options),
                name=name,
            )
        )
        segmenters[name] = segmenter.to(device).eval()
    denoisers: dict[str, Any] = {}
    used = sorted({v.denoiser for v in config.variants if v.denoiser})
    if used:
        from certseg.denoise import load_denoiser

        for name in used:
            spec_d = config.denoisers[name]
            denoisers[name] = load_denoiser(
                config.resolve_path(spec_d.path),
                device=device,
                resolution=spec_d.resolution,
                timestep_rule=spec_d.timestep_rule,
                num_steps=spec_d.num_steps,
                autocast_dtype=autocast,
            )
    models = Models(segmenters, denoisers, autocast, device)
    _MODELS[key] = models
    return models


def clear_model_cache() -> None:
    """Forget the models loaded in this process."""
    _MODELS.clear()


def model_files(config: RunConfig) -> dict[str, Path]:
    """Every weight file of the used models, keyed "segmenter/<name>/<file>" (for lineage)."""
    out: dict[str, Path] = {}
    entries: list[tuple[str, str | None]] = [
        (f"segmenter/{name}", config.segmenters[name].path) for name in config.used_segmenters()
    ]
    entries += [
        (f"denoiser/{name}", config.denoisers[name].path)
        for name in sorted({v.denoiser for v in config.variants if v.denoiser})
    ]
    for prefix, raw in entries:
        if raw is None:
            continue
        path = config.resolve_path(raw)
        if path.is_file():
            out[f"{prefix}/{path.name}"] = path
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pt2", ".json"):
                    out[f"{prefix}/{file.relative_to(path)}"] = file
    return out


def models_sha256(config: RunConfig) -> str:
    """One sha256 over every used model file's label and content sha256 (the store's model
    identity: a model retrained into the same folder changes it)."""
    from certseg.tracking import file_sha256

    digest = hashlib.sha256()
    for label, path in sorted(model_files(config).items()):
        digest.update(f"{label}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


# --- datasets and the store -----------------------------------------------------------------


def open_run_dataset(config: RunConfig) -> SegmentationDataset:
    """The dataset the config certifies (subset applied; not yet validated)."""
    from certseg.data.registry import open_dataset

    return open_dataset(config.dataset.resolved(_base_dir(config)))


def open_health_dataset(config: RunConfig) -> SegmentationDataset | None:
    """The held-out health-check dataset: the first health.num_images of health.split."""
    if config.health.num_images == 0:
        return None
    from certseg.data.registry import SubsetSpec, open_dataset

    spec = config.dataset.resolved(_base_dir(config), split=config.health.split)
    if spec.kind == "synthetic":
        spec = dataclasses.replace(spec, num_images=config.health.num_images, subset=None)
    else:
        spec = dataclasses.replace(spec, subset=SubsetSpec(first=config.health.num_images))
    return open_dataset(spec)


def _base_dir(config: RunConfig) -> Path:
    return Path(config.base_dir) if config.base_dir else Path.cwd()


def store_location(
    config: RunConfig,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The store URL and storage_options a step uses: the arguments, else the config's.

    Raises ValueError when either holds certseg.redact.REDACTED (a config certseg saved with its
    secrets removed, run again): the placeholder is never sent to the storage backend.
    """
    url = check_unredacted(store_url or config.store.url, "store.url")
    chosen = storage_options if storage_options is not None else config.store.storage_options
    options = check_unredacted(dict(chosen), "store.storage_options")
    return url, options


@dataclass(frozen=True)
class PreparedStore:
    """The store a run writes to, created and checked; what later steps need to find it."""

    url: str
    storage_options: dict[str, Any] = field(repr=False)  # may hold credentials
    config_id: str
    num_images: int
    num_classes: int
    manifest_sha256: str
    created: bool
    skipped: tuple[tuple[str, str], ...] = ()


def prepare_store(
    config: RunConfig,
    *,
    num_classes: int,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    models: Models | None = None,
) -> PreparedStore:
    """Validate the dataset, then create (or reopen, on resume) the store from its template.

    num_classes: the segmenters' class count; the dataset must match it. The dataset is validated
    before anything is written (a failing file is named; an existing store is left untouched).
    models: when given, each segmenter is run once on the first image (`probe_segmenters`)
    before the store is touched. A store written under another config_id raises
    StoreMismatchError; a URL holding anything that is not a certseg store (a project folder, a
    file) raises StoreError and is left untouched. Runs preparing one store at once create it
    once (the others wait and reopen it); `created` is True only for the run that wrote the
    template.
    """
    from certseg.data.registry import validate_dataset

    url, options = store_location(config, store_url, storage_options)
    dataset = open_run_dataset(config)
    report = validate_dataset(dataset, num_classes=num_classes)
    dataset = report.dataset
    if models is not None:
        probe_segmenters(models, dataset)
    health = open_health_dataset(config)
    health_ids: tuple[str, ...] = ()
    health_sha = ""
    if health is not None:
        health = validate_dataset(health, num_classes=num_classes).dataset
        health_ids = tuple(health.image_ids())
        health_sha = health.manifest().sha256
    manifest = dataset.manifest()
    ids = tuple(dataset.image_ids())
    shapes = _image_shapes(dataset, manifest)
    template = StoreTemplate(
        config_id=config.config_id,
        config_json=config.to_public_json(),  # secrets redacted; config_id is unaffected
        code_version=code_version(),
        manifest_sha256=manifest.sha256,
        dataset_name=dataset.name,
        image_ids=ids,
        image_shapes=shapes,
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
        health_ids=health_ids,
        health_manifest_sha256=health_sha,
        models_sha256=models_sha256(config),
        skipped_files=tuple(report.skipped),
    )
    targets = (np.asarray(dataset.load(i).target) for i in range(len(dataset)))
    store = SampleStore.create(url, template, targets, storage_options=options)
    return PreparedStore(
        url=url,
        storage_options=options,
        config_id=config.config_id,
        num_images=len(ids),
        num_classes=num_classes,
        manifest_sha256=manifest.sha256,
        created=store.created,
        skipped=tuple(report.skipped),
    )


class ModelProbeError(ValueError):
    """A model failed on a real dataset image before any sampling (wrong class count, input
    size the model cannot take, ...); the message names the model and the image."""


def probe_segmenters(models: Models, dataset: SegmentationDataset) -> None:
    """Run every segmenter once on the first (clean) image at its real size.

    Catches, before the store is created, what would otherwise fail in the middle of sampling:
    a class count other than the declared one, an input size the model cannot take. Raises
    ModelProbeError naming the segmenter, the image and the cause.
    """
    example = dataset.load(0)
    height, width = example.target.shape
    for name, segmenter in models.segmenters.items():
        try:
            predict_clean(segmenter, example.image, models.device)
        except Exception as error:
            raise ModelProbeError(
                f"segmenter {name!r} failed on dataset image {example.image_id!r} "
                f"({height}×{width}, the size it will be sampled at): "
                f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            ) from error


def _image_shapes(dataset: SegmentationDataset, manifest: Any) -> tuple[tuple[int, int], ...]:
    """(H, W) per image: from the manifest when it lists every image, else from the targets."""
    ids = dataset.image_ids()
    entries = {entry.image_id: entry for entry in manifest.entries}
    if all(image_id in entries for image_id in ids):
        return tuple((int(entries[i].height), int(entries[i].width)) for i in ids)
    shapes = []
    for index in range(len(dataset)):
        target = dataset.load(index).target
        shapes.append((int(target.shape[0]), int(target.shape[1])))
    return tuple(shapes)


# --- sampling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardReport:
    """What a shard did: blocks sampled and skipped, samples drawn, seconds spent sampling."""

    shard: int
    sampled_blocks: int
    skipped_blocks: int
    samples: int
    seconds: float
    per_sigma: dict[str, dict[str, float]] = field(default_factory=dict)
    """sigma_key → {"samples": model evaluations (samples × segmenters), "seconds": ...}."""


def _default_sampler() -> Sampler:
    from certseg.sampling import sample_class_maps

    return sample_class_maps


def predict_clean(
    segmenter: Any, image: np.ndarray, device: str = "cpu", *, image_key: str = "?"
) -> np.ndarray:
    """(H, W) argmax of a segmenter on the clean (3, H, W) [0, 1] image (no noise).

    NonFiniteOutputError (naming the segmenter and image_key) when the logits hold NaN or inf.
    """
    import torch

    from certseg.sampling import check_finite

    with torch.inference_mode():
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
        logits = segmenter(batch)
        check_finite(
            logits,
            model=f"segmenter {getattr(segmenter, 'name', type(segmenter).__name__)!r}",
            where=f"the clean image {image_key!r} (no noise)",
        )
        prediction: np.ndarray = logits.argmax(dim=1)[0].cpu().numpy()
    return prediction


def sample_shard(
    config: RunConfig,
    shard: Shard,
    *,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    models: Models | None = None,
    sampler: Sampler | None = None,
    progress: Progress | None = None,
) -> ShardReport:
    """Sample every missing block of the images in `shard` and write them to the store.

    sampler: `certseg.sampling.sample_class_maps` by default (tests pass a counting stand-in).
    progress: called with the number of samples of each finished block (skipped blocks too).
    """
    url, options = store_location(config, store_url, storage_options)
    store = SampleStore.open(url, storage_options=options, config_id=config.config_id)
    models = models or load_models(config)
    sampler = sampler or _default_sampler()
    dataset = open_run_dataset(config)
    positions = {image_id: i for i, image_id in enumerate(dataset.image_ids())}
    groups = config.denoiser_groups()
    sampled = skipped = samples = 0
    seconds = 0.0
    per_sigma: dict[str, dict[str, float]] = {}
    for image in range(shard.start, shard.stop):
        image_id = store.image_ids[image]
        if image_id not in positions:
            raise ValueError(
                f"image {image_id!r} of store {redact_url(url)!r} is not in the dataset "
                f"{dataset.name!r} any more"
            )
        example = None
        for name in config.used_segmenters():
            if not store.clean_done(name, image):
                example = example or dataset.load(positions[image_id])
                prediction = predict_clean(
                    models.segmenters[name], example.image, models.device, image_key=image_id
                )
                store.write_clean(name, image, prediction)
        for sigma in config.sigmas:
            stats = per_sigma.setdefault(sigma_key(sigma), {"samples": 0.0, "seconds": 0.0})
            for group, variant_names in groups.items():
                wiring = {v: config.variant(v).segmenter_for(sigma) for v in variant_names}
                needed = sorted(set(wiring.values()))
                denoiser = None if group == "none" else models.denoisers[group]
                for phase in PHASES_STORED:
                    done = store.done_blocks(sigma, group, phase, image)
                    for block, (start, stop) in enumerate(store.blocks(phase)):
                        if done[block]:
                            skipped += 1
                            if progress is not None:
                                progress(stop - start)
                            continue
                        if example is None:
                            example = dataset.load(positions[image_id])
                        began = time.perf_counter()
                        maps = sampler(
                            example.image,
                            image_key=image_id,
                            phase=phase,
                            start=start,
                            count=stop - start,
                            sigma=sigma,
                            seed=config.seed,
                            denoiser=denoiser,
                            segmenters={name: models.segmenters[name] for name in needed},
                            batch_size=config.sampling.batch_size,
                            device=models.device,
                            autocast_dtype=models.autocast_dtype,
                        )
                        elapsed = time.perf_counter() - began
                        for variant, segmenter_name in wiring.items():
                            store.write_samples(
                                sigma, variant, phase, image, start, maps[segmenter_name]
                            )
                        store.mark_done(sigma, group, phase, image, block)
                        sampled += 1
                        samples += stop - start
                        seconds += elapsed
                        stats["samples"] += (stop - start) * len(wiring)
                        stats["seconds"] += elapsed
                        if progress is not None:
                            progress(stop - start)
    return ShardReport(shard.index, sampled, skipped, samples, seconds, per_sigma)


def total_blocks_samples(config: RunConfig, num_images: int) -> int:
    """Samples a full run draws per image and group, summed (the progress bar's total)."""
    groups = len(config.denoiser_groups())
    return num_images * len(config.sigmas) * groups * (config.n0 + config.n)


# --- health check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthResult:
    """Base accuracy of one variant at one σ: one noisy draw per held-out image, no certificate."""

    sigma: float
    variant: str
    accuracy: float
    correct: int
    valid: int
    num_images: int
    floor: float

    @property
    def flagged(self) -> bool:
        """Below the configured floor (or not measurable)."""
        return not (self.accuracy >= self.floor)


def run_health_check(
    config: RunConfig,
    *,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    models: Models | None = None,
    sampler: Sampler | None = None,
) -> list[HealthResult]:
    """Measure each variant's base accuracy per σ on the held-out set (phase "health", sample 0).

    Results are stored per held-out image, so a re-run only measures what is missing.
    """
    url, options = store_location(config, store_url, storage_options)
    store = SampleStore.open(url, storage_options=options, config_id=config.config_id)
    health = open_health_dataset(config)
    if health is None:
        return []
    groups = config.denoiser_groups()
    pending = any(
        (store.read_health(sigma, v.name)[:, 0] < 0).any()
        for sigma in config.sigmas
        for v in config.variants
    )
    if pending:
        models = models or load_models(config)
        sampler = sampler or _default_sampler()
        ignore = health.ignore_index
        # The store's health ids are the validated set (skip_invalid may have dropped items):
        # find each by id, as sample_shard does, never by position in the unvalidated dataset.
        positions = {image_id: i for i, image_id in enumerate(health.image_ids())}
        for index, image_id in enumerate(store.health_ids):
            if image_id not in positions:
                raise ValueError(
                    f"health image {image_id!r} of store {redact_url(url)!r} is not in the dataset "
                    f"{health.name!r} any more"
                )
            example = None
            for sigma in config.sigmas:
                for group, variant_names in groups.items():
                    todo = [v for v in variant_names if store.read_health(sigma, v)[index, 0] < 0]
                    if not todo:
                        continue
                    example = example or health.load(positions[image_id])
                    wiring = {v: config.variant(v).segmenter_for(sigma) for v in todo}
                    needed = sorted(set(wiring.values()))
                    maps = sampler(
                        example.image,
                        image_key=example.image_id,
                        phase="health",
                        start=0,
                        count=1,
                        sigma=sigma,
                        seed=config.seed,
                        denoiser=None if group == "none" else models.denoisers[group],
                        segmenters={name: models.segmenters[name] for name in needed},
                        batch_size=config.sampling.batch_size,
                        device=models.device,
                        autocast_dtype=models.autocast_dtype,
                    )
                    valid_mask = example.target != ignore
                    for variant, segmenter_name in wiring.items():
                        prediction = np.asarray(maps[segmenter_name])[0]
                        correct = int(((prediction == example.target) & valid_mask).sum())
                        store.write_health(
                            sigma, variant, index, correct=correct, valid=int(valid_mask.sum())
                        )
    return read_health_results(store, config)


def read_health_results(store: SampleStore, config: RunConfig) -> list[HealthResult]:
    """The stored health-check results per (σ, variant) (NaN accuracy where not run)."""
    results = []
    for sigma in config.sigmas:
        for variant in config.variants:
            rows = store.read_health(sigma, variant.name)
            ran = rows[rows[:, 0] >= 0] if rows.size else rows
            correct = int(ran[:, 0].sum()) if ran.size else 0
            valid = int(ran[:, 1].sum()) if ran.size else 0
            accuracy = correct / valid if valid else float("nan")
            results.append(
                HealthResult(
                    sigma=sigma,
                    variant=variant.name,
                    accuracy=accuracy,
                    correct=correct,
                    valid=valid,
                    num_images=len(ran),
                    floor=config.health.floor,
                )
            )
    return results


# --- results, report and lineage ------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    """A finished certification: the results rows, the output folder, the MLflow run id and the
    store's config_id.

    already_logged: the same run (config, store, α, τ, correction, n, results) was logged before
    and was not logged again. tracking_error: why tracking failed (the results folder is
    complete and `certseg log <out_dir>` logs it later); None when tracking worked or was off.
    """

    rows: list[dict[str, Any]]
    out_dir: str
    run_id: str | None
    config_id: str = ""
    already_logged: bool = False
    tracking_error: str | None = None


def sampling_rates(reports: Sequence[ShardReport]) -> dict[str, float]:
    """sigma_key → model evaluations per second over the shards that sampled (resumed: none)."""
    totals: dict[str, list[float]] = {}
    for report in reports:
        for key, stats in report.per_sigma.items():
            pair = totals.setdefault(key, [0.0, 0.0])
            pair[0] += stats["samples"]
            pair[1] += stats["seconds"]
    return {key: s / t for key, (s, t) in totals.items() if t > 0}


_UNKEYED = frozenset({"samples_per_second"})
"""Row fields that differ between a fresh and a resumed run of the same results (not keyed)."""


def finalize_run(
    config: RunConfig,
    result: Any,
    *,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    health: Sequence[HealthResult] = (),
    rates: Mapping[str, float] | None = None,
    out_dir: str | Path = "certseg-results",
    tracking_uri: str | None = None,
    run_name: str | None = None,
    config_file: str | Path | None = None,
    track: bool = True,
    extra_tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Build the results rows, write Parquet/CSV/plots/config to out_dir, log it all to MLflow.

    result: a certseg.aggregate.AggregateResult. track=False skips MLflow. Nothing written or
    logged holds a secret: config.yaml is `config.public_dict()`, config.original.yaml is
    `config_file` parsed and re-written with the same redaction (its comments are not kept), the
    store_url tag and the params are redacted (certseg.redact). The config_id tag is the store's.
    """
    import yaml

    from certseg.report import build_rows, markdown_table, write_plots, write_results

    url, options = store_location(config, store_url, storage_options)
    store = SampleStore.open(url, storage_options=options, read_only=True)
    rows = build_rows(
        config,
        result,
        class_names=list(store.attrs["class_names"]),
        health=health,
        samples_per_second=rates,
    )
    folder = Path(out_dir)
    parquet, csv_path = write_results(rows, folder)
    table = folder / "results.md"
    table.write_text(markdown_table(rows) + "\n")
    params = result.params
    plots = write_plots(
        rows,
        folder / "plots",
        store=store,
        alpha=params.alpha,
        tau=params.tau,
        correction=params.correction,
        n=params.n,
    )
    del plots
    config_copy = folder / "config.yaml"
    config_copy.write_text(yaml.safe_dump(config.public_dict(), sort_keys=False))
    skipped = [list(item) for item in store.attrs.get("skipped_files", [])]
    skipped_json = folder / "skipped_files.json"
    if skipped:  # skip_invalid dropped these (file, reason) before sampling
        skipped_json.write_text(json.dumps(skipped, indent=1) + "\n")
    if not track:
        return RunOutcome(rows=rows, out_dir=str(folder), run_id=None, config_id=store.config_id)
    from certseg.tracking import TRACKING_FILE, TrackingError, file_sha256, log_run, run_key

    uri = check_unredacted(tracking_uri or config.tracking.uri, "tracking.uri")
    tags = {
        "config_id": store.config_id,
        "code_version": code_version(),
        "store_code_version": str(store.attrs.get("code_version", "")),
        "dataset_manifest_sha256": str(store.attrs.get("dataset_manifest_sha256", "")),
        "health_manifest_sha256": str(store.attrs.get("health_manifest_sha256", "")),
        "store_url": redact_url(url),
        "certify.alpha": str(params.alpha),
        "certify.tau": str(params.tau),
        "certify.correction": params.correction,
        "certify.n": str(params.n),
        "dataset_skipped_files": str(len(skipped)),
        **{
            f"model_sha256/{label}": file_sha256(path)
            for label, path in sorted(model_files(config).items())
        },
        **dict(extra_tags or {}),
    }
    artifacts = [parquet, csv_path, table, config_copy]
    if skipped:
        artifacts.append(skipped_json)
    if config_file is not None and Path(config_file).is_file():
        original = folder / "config.original.yaml"
        original.write_text(_redacted_yaml(Path(config_file)))
        artifacts.append(original)
    key = run_key(
        config_id=store.config_id,
        store_url=redact_url(url),
        alpha=params.alpha,
        tau=params.tau,
        correction=params.correction,
        n=params.n,
        extra=dict(extra_tags or {}),
        results=[{k: v for k, v in row.items() if k not in _UNKEYED} for row in rows],
    )
    experiment, name = config.tracking.experiment, run_name or config.name
    flat_params = config.flat_params()
    record: dict[str, Any] = {
        "tracking_uri": redact_url(uri),
        "experiment": experiment,
        "run_name": name,
        "key": key,
        "params": flat_params,
        "tags": tags,
        "artifacts": [path.name for path in artifacts],
        "artifact_dirs": {"plots": "plots"},
    }
    (folder / TRACKING_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    try:
        logged = log_run(
            tracking_uri=uri,
            experiment=experiment,
            run_name=name,
            params=flat_params,
            tags=tags,
            rows=rows,
            artifacts=artifacts,
            artifact_dirs={"plots": folder / "plots"},
            key=key,
        )
    except TrackingError as error:
        return RunOutcome(
            rows=rows,
            out_dir=str(folder),
            run_id=None,
            config_id=store.config_id,
            tracking_error=(
                f"{error}. The results are complete in {folder}; log them later with "
                f"`certseg log {folder} --tracking-uri <uri>`"
            ),
        )
    return RunOutcome(
        rows=rows,
        out_dir=str(folder),
        run_id=logged.run_id,
        config_id=store.config_id,
        already_logged=logged.already_logged,
    )


def _redacted_yaml(config_file: Path) -> str:
    """The user's config file as parsed, re-written as YAML with its secrets redacted (key order
    kept, comments dropped: a comment may hold anything, so the bytes are never copied)."""
    import yaml

    data = yaml.safe_load(config_file.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(config_file)!r}: expected a mapping at the top level")
    return yaml.safe_dump(redact_config_dict(data), sort_keys=False, allow_unicode=True)
