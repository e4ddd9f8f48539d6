"""The commands that run the flows: demo, certify, recertify (with the sampling progress bar).

The CLI is the face above the flows: certify and recertify call the Prefect flows
(certseg.flows), which call the tasks (certseg.tasks), which call the library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from certseg.cli.app import (
    QuietOption,
    TrackOption,
    VerboseOption,
    app,
    fail,
    print_table,
    print_tracking,
    repo_root,
    run_flow,
    set_env_defaults,
)
from certseg.cli.check import preflight
from certseg.redact import redact_url


class _ProgressBar:
    """The sampling progress bar: a certseg.tasks.progress.ProgressSink. The total arrives
    once the store is prepared; samples found done (resumed) are counted apart."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.task = progress.add_task("sampling", total=None)
        self.resumed = 0

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def advance(self, samples: int, resumed: bool) -> None:
        if resumed:
            self.resumed += samples
            self.progress.update(self.task, description=f"sampling ({self.resumed} resumed)")
        self.progress.update(self.task, advance=samples)


def _run_certify(
    config_path: Path,
    *,
    base_dir: Path | None,
    store: str | None,
    dask_address: str | None,
    tracking_uri: str | None,
    shards: int | None,
    out: Path | None,
    skip_invalid: bool,
    quiet: bool,
    track: bool,
    title: str,
    verbose: bool = False,
    started_ms: int | None = None,
    before_flow: Callable[[], None] | None = None,
) -> None:
    """Run the certify-dataset flow with a progress bar and print its table; a run that finished
    before is read and printed instead (`_finished_before`), with nothing else run. before_flow:
    called before Prefect starts (certify's preflight). started_ms: when the command began (Unix
    ms), the MLflow run's start_time (default: now)."""
    started_ms = started_ms if started_ms is not None else int(time.time() * 1000)
    set_env_defaults()
    found = _finished_before(
        config_path,
        base_dir=base_dir,
        store=store,
        tracking_uri=tracking_uri,
        shards=shards,
        out=out,
        skip_invalid=skip_invalid,
        track=track,
    )
    if found is not None:
        _print_outcome(found, title, quiet)
        return
    if before_flow is not None:
        before_flow()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from certseg.flows.certify_dataset import certify_dataset as certify_flow
    from certseg.tasks.progress import reporting_progress

    certify_dataset: Any = certify_flow
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("samples"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=quiet,
    )
    with progress, reporting_progress(_ProgressBar(progress)):
        outcome = run_flow(
            lambda: certify_dataset(
                str(config_path),
                store_url=store,
                dask_address=dask_address,
                tracking_uri=tracking_uri,
                shards=shards,
                out_dir=str(out) if out else None,
                base_dir=str(base_dir) if base_dir else None,
                skip_invalid=skip_invalid,
                track=track,
                started_ms=started_ms,
            ),
            verbose,
        )
    _print_outcome(outcome, title, quiet)


def _print_outcome(outcome: dict[str, Any], title: str, quiet: bool) -> None:
    """The results table, then (unless quiet) where the store, results and MLflow run are."""
    print_table(outcome["rows"], title)
    for file, reason in outcome.get("skipped_files", []):  # shown even with --quiet
        typer.echo(f"skipped (--skip-invalid): {file}: {reason}", err=True)
    if not quiet:
        typer.echo(
            f"store: {redact_url(outcome['store_url'])} (config_id {outcome['config_id'][:12]}; "
            f"{outcome['sampled_blocks']} blocks sampled, {outcome['skipped_blocks']} resumed)"
        )
        read = " (this run had finished: results read, nothing recomputed)"
        typer.echo(f"results: {outcome['out_dir']}{read if outcome.get('finished_before') else ''}")
        print_tracking(outcome)
    if outcome.get("tracking_error"):
        fail(outcome["tracking_error"])


def _finished_before(
    config_path: Path,
    *,
    base_dir: Path | None,
    store: str | None,
    tracking_uri: str | None,
    shards: int | None,
    out: Path | None,
    skip_invalid: bool,
    track: bool,
) -> dict[str, Any] | None:
    """The outcome of the same run when it finished before (certseg.run.finished): read in a
    second or two, without the preflight, Prefect, Dask or MLflow logging. None otherwise
    (also when the config cannot be read: the normal path reports why)."""
    if not track:  # an untracked run records no code version: never taken as finished
        return None
    from certseg.run.context import certify_context
    from certseg.run.finalize import finished_summary
    from certseg.run.finished import finished_run

    try:
        ctx = certify_context(
            config_path,
            base_dir=str(base_dir) if base_dir else None,
            skip_invalid=skip_invalid,
            store_url=store,
            tracking_uri=tracking_uri,
            shards=shards,
            out_dir=str(out) if out else None,
            track=track,
        )
    except (ValueError, OSError):
        return None
    finished = finished_run(ctx)
    return finished_summary(ctx, finished) if finished is not None else None


@app.command()
def demo(
    store: str = typer.Option(
        "certseg-runs/demo.zarr", help="Sample store (resumes when it exists)."
    ),
    tracking_uri: str = typer.Option("sqlite:///mlruns.db", help="MLflow tracking URI."),
    out: Path = typer.Option(Path("certseg-runs/demo-results"), help="Results folder."),
    quiet: bool = QuietOption,
    track: bool = TrackOption,
    verbose: bool = VerboseOption,
) -> None:
    """Run the embedded benchmark: shipped models, σ ∈ {0.25, 0.5}, n0=10, n=100, τ=0.75."""
    root = repo_root()
    config_path = root / "configs" / "demo.yaml"
    if not config_path.is_file():
        fail(f"the demo config {config_path} is missing")
    if not (root / "weights").is_dir():
        fail(f"the demo needs the shipped weights, missing: weights/ (under {root})")
    _run_certify(
        config_path,
        base_dir=root,
        store=store,
        dask_address=None,
        tracking_uri=tracking_uri,
        shards=None,
        out=out,
        skip_invalid=False,
        quiet=quiet,
        track=track,
        title="certseg demo: certified segmentation on the embedded synthetic benchmark",
        verbose=verbose,
    )


@app.command()
def certify(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Drop invalid dataset files (listed in the manifest)."
    ),
    store: str | None = typer.Option(None, help="Store URL (overrides store.url)."),
    dask_address: str | None = typer.Option(None, help="Dask scheduler address."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI."),
    shards: int | None = typer.Option(None, min=1, help="Sampling shards."),
    out: Path | None = typer.Option(None, help="Results folder."),
    quiet: bool = QuietOption,
    track: bool = TrackOption,
    verbose: bool = VerboseOption,
) -> None:
    """Certify a dataset as CONFIG describes; re-running the same config resumes.

    First the preflight of `certseg check` (before Prefect starts): a mistake is one `error:`
    line within seconds, with nothing written. A run that finished before is read, not redone
    (certseg.run.finished): its table in seconds."""
    started_ms = int(time.time() * 1000)  # the MLflow run spans the whole command
    _run_certify(
        config,
        base_dir=None,
        store=store,
        dask_address=dask_address,
        tracking_uri=tracking_uri,
        shards=shards,
        out=out,
        skip_invalid=skip_invalid,
        quiet=quiet,
        track=track,
        title=f"certseg certify {config}",
        verbose=verbose,
        started_ms=started_ms,
        before_flow=lambda: preflight(
            config, echo=False, verbose=verbose, skip_invalid=skip_invalid, store=store, track=track
        ),
    )


@app.command()
def recertify(
    store: str = typer.Argument(..., help="An existing sample store (path or URL)."),
    alpha: float | None = typer.Option(None, help="Family-wise error level α."),
    tau: float | None = typer.Option(None, help="Threshold τ in (0.5, 1)."),
    correction: str | None = typer.Option(None, help="holm or bonferroni."),
    n: int | None = typer.Option(None, min=1, help="Use the first n estimation samples."),
    dask_address: str | None = typer.Option(None, help="Dask scheduler address."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI."),
    out: Path | None = typer.Option(None, help="Results folder."),
    quiet: bool = QuietOption,
    track: bool = TrackOption,
    verbose: bool = VerboseOption,
) -> None:
    """Certify the stored samples again with new α, τ, correction or a smaller n (no sampling).

    The guarantee holds only for α, τ, correction and n chosen before looking at results:
    trying several and reporting the best voids it (a new choice is a new experiment).
    """
    from certseg.stats.correction import CORRECTIONS

    if correction is not None and correction not in CORRECTIONS:
        fail(f"--correction must be holm or bonferroni, got {correction!r}")
    set_env_defaults()
    from certseg.flows.recertify import recertify as recertify_flow_typed

    recertify_flow: Any = recertify_flow_typed
    outcome = run_flow(
        lambda: recertify_flow(
            store,
            alpha=alpha,
            tau=tau,
            correction=correction,
            n=n,
            dask_address=dask_address,
            tracking_uri=tracking_uri,
            out_dir=str(out) if out else None,
            track=track,
        ),
        verbose,
    )
    print_table(outcome["rows"], f"certseg recertify {redact_url(store)}")
    if not quiet:
        typer.echo(f"results: {outcome['out_dir']}")
        print_tracking(outcome)
    if outcome.get("tracking_error"):
        fail(outcome["tracking_error"])
