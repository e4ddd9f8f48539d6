"""The `certseg` command line: demo, certify, recertify, log, report, inspect.

Every heavy import (torch, prefect, mlflow, zarr, dask) happens inside the command that needs it,
so `certseg --help` is instant. As the entry point, the CLI (not the library) sets environment
defaults for Prefect and MLflow when they are unset: an ephemeral Prefect server with a 120 s
start-up allowance, no analytics or telemetry, and quiet Prefect logs.

The CLI is the face above the flows: certify and recertify call the Prefect flows
(certseg.flows), which call the tasks (certseg.tasks), which call the library. It never reads the
run's config itself: the flow parses it once and returns what the CLI prints.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

import typer

from certseg.redact import redact_text, redact_url

app = typer.Typer(
    name="certseg",
    help="Certified semantic segmentation by randomized smoothing with a diffusion denoiser.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ENV_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "DIFFUSERS_VERBOSITY": "error",
    "DASK_LOGGING__DISTRIBUTED": "warning",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def _set_env_defaults() -> None:
    import logging

    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Dask's scheduler and nanny log every worker start/stop at INFO; keep the console readable.
    for name in ("distributed", "distributed.core", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _console(stderr: bool = False) -> Any:
    """A rich console; 160 columns when the output is not a terminal (logs, CI, pipes)."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=160)
    return console


def repo_root() -> Path:
    """The checkout holding configs/ and weights/ (the package's parent folder)."""
    import certseg

    return Path(certseg.__file__).resolve().parents[1]


def _fail(message: str) -> None:
    from rich.markup import escape

    text = escape(redact_text(message))  # an error may quote a URL with credentials
    _console(stderr=True).print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


class _NoFailureTracebacks(logging.Filter):
    """Drops Prefect's ERROR records (the failed task/flow state and its traceback): the CLI
    prints the cause once as an `error:` line instead. --verbose keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def _quiet_prefect_failures(verbose: bool) -> None:
    for name in _PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        for existing in [f for f in logger.filters if isinstance(f, _NoFailureTracebacks)]:
            logger.removeFilter(existing)
        if not verbose:
            logger.addFilter(_NoFailureTracebacks())


def _run_flow(call: Any, verbose: bool) -> Any:
    """Run a flow; a failure becomes one `error:` line (the traceback too with --verbose).

    Permanent errors (ValueError: bad config or input, a refused store; an OSError such as a
    missing file) print their message; anything else prints its type and message.
    """
    from certseg.tasks.certify import PERMANENT_OS_ERRORS

    _quiet_prefect_failures(verbose)
    try:
        return call()
    except ValueError as error:
        if verbose:
            traceback.print_exc()
        _fail(str(error))
    except PERMANENT_OS_ERRORS as error:
        if verbose:
            traceback.print_exc()
        _fail(str(error))
    except Exception as error:
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (run with --verbose for the traceback)"
        _fail(f"{type(error).__name__}: {error}{hint}")
    finally:
        _quiet_prefect_failures(True)


def _print_tracking(outcome: dict[str, Any]) -> None:
    if outcome.get("run_id"):
        note = " — already logged, not logged again" if outcome.get("already_logged") else ""
        typer.echo(f"MLflow run: {outcome['run_id']} ({redact_url(outcome['tracking_uri'])}){note}")


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    from certseg.report import legend, table_lines

    lines = table_lines(rows)
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(lines[0]):
        table.add_column(header, justify="left" if i in (1,) else "right")
    previous = None
    for row, cells in zip(rows, lines[1:], strict=True):
        if previous is not None and row["sigma"] != previous:
            table.add_section()
        previous = row["sigma"]
        styled = list(cells)
        if row.get("health_flagged"):
            styled[2] = f"[red]{styled[2]}[/]"
        table.add_row(*styled)
    console = _console()
    console.print(table)
    console.print(legend(rows), highlight=False)


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
) -> None:
    _set_env_defaults()
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
        outcome = _run_flow(
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
            ),
            verbose,
        )
    _print_table(outcome["rows"], title)
    for file, reason in outcome.get("skipped_files", []):  # shown even with --quiet
        typer.echo(f"skipped (--skip-invalid): {file}: {reason}", err=True)
    if not quiet:
        typer.echo(
            f"store: {redact_url(outcome['store_url'])} (config_id {outcome['config_id'][:12]}; "
            f"{outcome['sampled_blocks']} blocks sampled, {outcome['skipped_blocks']} resumed)"
        )
        typer.echo(f"results: {outcome['out_dir']}")
        _print_tracking(outcome)
    if outcome.get("tracking_error"):
        _fail(outcome["tracking_error"])


QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar or trailing notes.")
VerboseOption = typer.Option(
    False, "--verbose", "-v", help="On failure, print the tracebacks too (Prefect's and ours)."
)
TrackOption = typer.Option(True, "--track/--no-track", help="Log the run to MLflow.")


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
        _fail(f"the demo config {config_path} is missing")
    if not (root / "weights").is_dir():
        _fail(f"the demo needs the shipped weights, missing: weights/ (under {root})")
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
    """Certify a dataset as CONFIG describes; re-running the same config resumes."""
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
        _fail(f"--correction must be holm or bonferroni, got {correction!r}")
    _set_env_defaults()
    from certseg.flows.recertify import recertify as recertify_flow_typed

    recertify_flow: Any = recertify_flow_typed
    outcome = _run_flow(
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
    _print_table(outcome["rows"], f"certseg recertify {redact_url(store)}")
    if not quiet:
        typer.echo(f"results: {outcome['out_dir']}")
        _print_tracking(outcome)
    if outcome.get("tracking_error"):
        _fail(outcome["tracking_error"])


@app.command(name="log")
def log_results(
    results: Path = typer.Argument(..., help="A results folder written by certify/recertify."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: the one the run was meant for)."
    ),
) -> None:
    """Log a results folder to MLflow (after tracking failed, or to another tracking store).

    Logging the same results twice finds the first run instead of adding a duplicate.
    """
    _set_env_defaults()
    from certseg.tracking import relog_results

    try:
        record = relog_results(results, tracking_uri=tracking_uri)
    except ValueError as error:
        _fail(str(error))
    note = " — already logged, not logged again" if record.already_logged else ""
    typer.echo(f"MLflow run: {record.run_id} ({redact_url(record.tracking_uri)}){note}")


@app.command()
def report(
    run: str = typer.Argument(
        ..., help="MLflow run id, 'latest', or a results folder / results.parquet."
    ),
    tracking_uri: str = typer.Option("sqlite:///mlruns.db", help="MLflow tracking URI."),
    experiment: str | None = typer.Option(
        None, help="Experiment of 'latest' (default: the newest run of any experiment)."
    ),
    out: Path | None = typer.Option(None, help="Write the table (Markdown) and plots here."),
) -> None:
    """Print a finished run's results table (and write its plots with --out)."""
    _set_env_defaults()
    from certseg.report import markdown_table, read_results, write_plots

    local = Path(run)
    if local.is_dir():
        local = local / "results.parquet"
    if local.suffix == ".parquet":
        if not local.is_file():
            _fail(f"no results file {local}")
        rows = read_results(local)
        title = str(local)
    else:
        from certseg.tracking import latest_run_id, read_run

        try:
            run_id = (
                latest_run_id(tracking_uri=tracking_uri, experiment=experiment)
                if run == "latest"
                else run
            )
            data = read_run(run_id, tracking_uri=tracking_uri)
        except ValueError as error:
            _fail(str(error))
        if not data.rows:
            _fail(f"MLflow run {run_id} has no results.parquet artifact")
        rows = data.rows
        title = f"MLflow run {run_id}"
    _print_table(rows, title)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(markdown_table(rows) + "\n")
        write_plots(rows, out)
        typer.echo(f"wrote {out / 'results.md'} and plots to {out}")


@app.command()
def inspect(store: str = typer.Argument(..., help="A sample store (path or URL).")) -> None:
    """Describe a sample store: config, dataset, layout and how much is sampled."""
    from rich.markup import escape
    from rich.table import Table

    from certseg.storage import SampleStore, StoreError

    try:
        sample_store = SampleStore.open(store, read_only=True)
    except StoreError as error:
        _fail(str(error))
    attrs = sample_store.attrs
    console = _console()
    console.print(f"[bold]store[/] {escape(redact_url(store))}", highlight=False)
    h, w = (int(v) for v in sample_store.image_shapes.max(axis=0))
    for key, value in (
        ("config_id", attrs["config_id"]),
        ("layout_version", attrs["layout_version"]),
        ("code_version", attrs["code_version"]),
        ("dataset", f"{attrs['dataset_name']} ({sample_store.num_images} images, max {h}×{w})"),
        ("dataset_manifest_sha256", attrs["dataset_manifest_sha256"]),
        ("classes", f"{sample_store.num_classes}: {', '.join(attrs['class_names'])}"),
        ("sigmas", ", ".join(f"{s:g}" for s in sample_store.sigmas)),
        ("n0, n", f"{sample_store.n0}, {sample_store.n} (chunk {sample_store.samples_per_chunk})"),
        ("health images", len(sample_store.health_ids)),
    ):
        console.print(f"  {key}: {value}", highlight=False)
    table = Table(title="sampling progress", title_justify="left")
    for header in ("σ", "group", "variants", "selection", "estimation", "counts (n)"):
        table.add_column(header)
    for sigma in sample_store.sigmas:
        for group, variants in sample_store.groups.items():
            cells = []
            for phase in ("selection", "estimation"):
                done = sum(
                    int(sample_store.done_blocks(sigma, group, phase, i).sum())
                    for i in range(sample_store.num_images)
                )
                total = len(sample_store.blocks(phase)) * sample_store.num_images
                cells.append(f"{done}/{total} blocks")
            counted = [
                sum(sample_store.counts_n(sigma, v, i) > 0 for i in range(sample_store.num_images))
                for v in variants
            ]
            table.add_row(
                f"{sigma:g}",
                group,
                ", ".join(variants),
                *cells,
                f"{min(counted)}/{sample_store.num_images} images",
            )
    console.print(table)


def main() -> None:
    """Entry point of the `certseg` script."""
    app()
