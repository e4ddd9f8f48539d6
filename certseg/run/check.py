"""Preflight a run without writing anything: config, paths, dataset, each model on a real image,
the store's identity.

`check_run(ctx)` is what `certseg check CONFIG` runs and what `certseg certify` runs before Prefect
starts. It fails fast, in the order a user's mistakes are cheapest to find: paths and
normalization units (no model loaded), then the segmenters on the first dataset image at its
real size (`certseg.run.prepare.probe_segmenters`, before any denoiser or diffusers import), then
the whole dataset (every file read and checked), then each denoiser once at its resolution, then
the store (a store at the URL written under another config is refused naming the settings that
differ). Each failure is one ValueError (PreflightError, ModelProbeError, DatasetError,
StoreError, ModelFileError) whose message names the model or file and what was expected.
Nothing is written: the store is only read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from certseg.run.context import RunContext
from certseg.run.models import Models, load_models
from certseg.run.prepare import (
    changed_settings,
    error_cause,
    probe_segmenters,
    segmenter_files,
)
from certseg.run.sample import open_run_dataset


class PreflightError(ValueError):
    """A run would fail: the message names the setting, model or file and what was expected."""


@dataclass(frozen=True)
class CheckReport:
    """What a passing preflight found, one line per check, and the code the config runs.

    lines: human-readable findings, in check order. runs_code: "package.module:function" of each
    `python`-family segmenter factory (the only code a config can run). store_exists: a store
    for this config is already at the URL (certify resumes it).
    """

    lines: tuple[str, ...]
    runs_code: tuple[str, ...]
    store_exists: bool


def runs_code(ctx: RunContext) -> tuple[str, ...]:
    """The factories ("package.module:function") the config's used segmenters call."""
    config = ctx.config
    return tuple(
        str(config.segmenters[name].options.get("factory"))
        for name in config.used_segmenters()
        if config.segmenters[name].family == "python"
    )


def check_paths(ctx: RunContext) -> list[str]:
    """Each used model's path resolved and present; mean/std in [0, 1] units."""
    config = ctx.config
    found: list[str] = []
    for name in config.used_segmenters():
        spec = config.segmenters[name]
        if spec.path is not None:
            path = ctx.resolve_path(spec.path)
            if not path.exists():
                raise PreflightError(
                    f"segmenter {name!r}: path {path} does not exist (config: {spec.path!r}; "
                    f"relative paths resolve against {ctx.base_dir})"
                )
            found.append(f"segmenter {name!r}: {spec.family} {path}")
        for field, values in (("mean", spec.mean), ("std", spec.std)):
            if values is not None and max(values) > 1.0:
                raise PreflightError(
                    f"segmenter {name!r}: {field} {list(values)} is in 0–255 units; expected "
                    f"[0, 1] units (divide by 255: {[round(v / 255, 4) for v in values]})"
                )
    for name in sorted({v.denoiser for v in config.variants if v.denoiser}):
        spec_path = config.denoisers[name].path
        path = ctx.resolve_path(spec_path)
        if not path.exists():
            raise PreflightError(
                f"denoiser {name!r}: path {path} does not exist (config: {spec_path!r}; "
                f"relative paths resolve against {ctx.base_dir})"
            )
        found.append(f"denoiser {name!r}: {path}")
    return found


def check_image_range(image: np.ndarray, image_id: str, dataset: str) -> None:
    """A dataset image must be (3, H, W) float in [0, 1] units (what every model is fed)."""
    low, high = float(np.min(image)), float(np.max(image))
    if image.ndim != 3 or image.shape[0] != 3 or low < 0.0 or high > 1.0 or not np.isfinite(high):
        raise PreflightError(
            f"dataset {dataset!r} image {image_id!r}: shape {tuple(image.shape)}, values in "
            f"[{low:g}, {high:g}]; expected (3, H, W) in [0, 1] units"
        )


def probe_denoisers(models: Models, image: np.ndarray, image_id: str, ctx: RunContext) -> None:
    """Run each denoiser once on the clean image at the run's first σ (resized to its
    resolution inside); its output must be finite, in [0, 1] units, at the image's size."""
    import torch

    sigma = ctx.config.sigmas[0]
    for name, denoiser in models.denoisers.items():
        where = f"denoiser {name!r} ({ctx.resolve_path(ctx.config.denoisers[name].path)})"
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        try:
            with torch.inference_mode():
                out = denoiser.denoise(batch.to(models.device), sigma)
        except Exception as error:
            raise PreflightError(
                f"{where} failed on dataset image {image_id!r} "
                f"({image.shape[1]}×{image.shape[2]}) at σ={sigma:g}: "
                f"{type(error).__name__}: {error_cause(error)}"
            ) from error
        out = out.float().cpu()
        if tuple(out.shape) != tuple(batch.shape):
            raise PreflightError(
                f"{where} returned {tuple(out.shape)} for image {image_id!r}; expected "
                f"{tuple(batch.shape)}"
            )
        low, high = float(out.min()), float(out.max())
        if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
            raise PreflightError(
                f"{where} output on image {image_id!r} is in [{low:g}, {high:g}]; expected "
                "finite values in [0, 1] units"
            )


def check_store(ctx: RunContext) -> tuple[str, bool]:
    """(a line describing the store, whether it exists). Reads only: a store written under
    another config raises StoreMismatchError naming the settings that differ; a URL holding
    something that is not a certseg store raises PreflightError."""
    from certseg.redact import redact_url
    from certseg.storage import SampleStore, StoreError, StoreMismatchError

    url = ctx.store_url
    shown = redact_url(url)
    try:
        SampleStore.open(
            url, storage_options=ctx.storage_options, read_only=True, config_id=ctx.config_id
        )
    except StoreMismatchError as error:
        changed = changed_settings(ctx)
        raise StoreMismatchError(
            f"{error}; the settings that differ: {changed}" if changed else str(error)
        ) from error
    except StoreError as error:
        message = str(error)
        if message.startswith("no sample store"):
            local = Path(url) if "://" not in url else None
            if local is not None and local.is_file():
                raise PreflightError(
                    f"store {shown} is a file, not a certseg store; expected a new or empty "
                    "folder or this config's store (use another store URL; nothing was changed)"
                ) from error
            if local is not None and local.is_dir() and any(local.iterdir()):
                held = sorted(p.name for p in local.iterdir())
                shown_files = ", ".join(held[:5]) + (
                    f" and {len(held) - 5} more" if len(held) > 5 else ""
                )
                raise PreflightError(
                    f"store {shown} is not a certseg store (it holds {shown_files}); certseg "
                    "creates a store only in a new or empty folder and never deletes or "
                    "overwrites anything else; use another store URL (nothing was changed)"
                ) from error
            return f"store: {shown} (new: certify will create it)", False
        if "not completely created" in message:
            return f"store: {shown} (half created: certify will finish creating it)", False
        raise PreflightError(f"{message}; expected a new folder or this config's store") from error
    return f"store: {shown} (this config's: certify resumes it)", True


def check_run(ctx: RunContext, *, on_line: Callable[[str], None] | None = None) -> CheckReport:
    """Preflight the run `ctx` describes (see the module docstring); writes nothing.

    on_line: called with each finding as soon as it is known (the CLI prints them as it goes).
    Raises a ValueError subclass naming the model or file at the first problem.
    """
    from certseg.data.registry import validate_dataset

    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    config = ctx.config
    say(f"config {config.name!r}: valid (config_id {config.config_id[:12]})")
    code = runs_code(ctx)
    for factory in code:
        say(f"runs code: {factory}")
    for line in check_paths(ctx):
        say(line)
    dataset = open_run_dataset(ctx)
    if len(dataset) == 0:
        raise PreflightError(f"dataset {dataset.name!r} is empty: expected at least one image")
    first = dataset.load(0)
    check_image_range(first.image, first.image_id, dataset.name)
    models = load_models(ctx, denoisers=False)
    probe_segmenters(models, first, files=segmenter_files(ctx))
    say(
        f"segmenters {', '.join(repr(n) for n in models.segmenters)}: ran on image "
        f"{first.image_id!r} ({first.target.shape[0]}×{first.target.shape[1]}), "
        f"{models.num_classes} classes"
    )
    report = validate_dataset(dataset, num_classes=models.num_classes)
    skipped = f", {len(report.skipped)} skipped (--skip-invalid)" if report.skipped else ""
    say(f"dataset {report.dataset.name!r}: {len(report.dataset)} images valid{skipped}")
    if any(v.denoiser for v in config.variants):
        models = load_models(ctx, denoisers=True)
        probe_denoisers(models, first.image, first.image_id, ctx)
        names = ", ".join(repr(n) for n in models.denoisers)
        say(f"denoisers {names}: ran at σ={config.sigmas[0]:g}")
    line, exists = check_store(ctx)
    say(line)
    return CheckReport(lines=tuple(lines), runs_code=code, store_exists=exists)
