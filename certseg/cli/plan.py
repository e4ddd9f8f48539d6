"""`certseg plan CONFIG`: what a run will do and cost, before it starts (certseg.run.plan).

Counts are exact; store bytes, peak memory and wall time come from a short calibration on the
configured device (a few samples of the first image through the real models). Nothing is
written, and Prefect, Dask and MLflow are not started.
"""

from __future__ import annotations

from pathlib import Path

import typer

from certseg.cli.app import app, console, fail


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours)} h {int(minutes):02d} min" if hours else f"{int(minutes)} min {secs:.0f} s"


@app.command()
def plan(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    shards: int | None = typer.Option(None, "--shards", min=1, help="Sampling shards."),
) -> None:
    """Print a run's forward passes, samples, store size, peak memory and expected time."""
    from certseg.run.context import certify_context
    from certseg.run.plan import plan_run

    try:
        ctx = certify_context(config, shards=shards, track=False)
        result = plan_run(ctx)
    except (ValueError, OSError) as error:
        fail(f"{config}: {error}")
        return
    out = console()
    height, width = result.frame
    out.print(
        f"{config}: {result.images} images (first {height}×{width}), "
        f"{len(ctx.config.sigmas)} σ, {len(ctx.config.variants)} variants, "
        f"n0 + n = {ctx.config.n0} + {ctx.config.n}"
    )
    out.print(f"noisy samples: {result.samples:,}; stored class maps: {result.stored_maps:,}")
    out.print("forward passes:")
    for model, count in result.forward_passes.items():
        out.print(f"  {model}: {count:,}")
    out.print(
        f"store: {_bytes(result.store_bytes)} compressed (raw {_bytes(result.raw_bytes)}; "
        "ratio measured on the first image)"
    )
    batches = ", ".join(
        f"{'no denoiser' if g == 'none' else g}: {b}" for g, b in result.micro_batches.items()
    )
    out.print(
        f"forward batch: {batches} (sampling.batch_size {result.batch_size}, lowered to fit "
        f"sampling.memory_mib {ctx.config.sampling.memory_mib} MiB)"
    )
    out.print(
        f"peak memory per worker: {_bytes(result.peak_memory_bytes)} {result.memory_kind} "
        f"(extrapolated from batches of 1 and {max(2, result.calibration_batch)})"
    )
    for group, seconds in result.seconds_per_sample.items():
        label = "no denoiser" if group == "none" else f"denoiser {group}"
        out.print(
            f"  {label}: {seconds * 1000:.1f} ms per noisy sample on {result.device} "
            f"(timed at batch {result.calibration_batch})"
        )
    out.print(
        f"expected sampling time: {_duration(result.expected_seconds)} with {result.workers} "
        "concurrent shard(s) (plus ~30 s of Prefect, Dask and MLflow start-up)"
    )
