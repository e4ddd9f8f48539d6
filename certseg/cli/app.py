"""The CLI's shared parts: the typer app, environment defaults, `error:` lines, flow runs, tables.

Every heavy import (torch, prefect, mlflow, zarr, dask) happens inside the command that needs it,
so `certseg --help` is instant. As the entry point, the CLI (not the library) sets environment
defaults for Prefect and MLflow when they are unset: an ephemeral Prefect server with a 120 s
start-up allowance, no analytics or telemetry, and quiet Prefect logs.
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


def set_env_defaults() -> None:
    import logging

    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Dask's scheduler and nanny log every worker start/stop at INFO; keep the console readable.
    for name in ("distributed", "distributed.core", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.WARNING)


def console(stderr: bool = False) -> Any:
    """A rich console; 160 columns when the output is not a terminal (logs, CI, pipes)."""
    from rich.console import Console

    terminal = Console(stderr=stderr)
    if not terminal.is_terminal:
        terminal = Console(stderr=stderr, width=160)
    return terminal


def repo_root() -> Path:
    """The checkout holding configs/ and weights/ (the package's parent folder)."""
    import certseg

    return Path(certseg.__file__).resolve().parents[1]


def fail(message: str) -> None:
    from rich.markup import escape

    text = escape(redact_text(message))  # an error may quote a URL with credentials
    console(stderr=True).print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
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


def run_flow(call: Any, verbose: bool) -> Any:
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
        fail(str(error))
    except PERMANENT_OS_ERRORS as error:
        if verbose:
            traceback.print_exc()
        fail(str(error))
    except Exception as error:
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (run with --verbose for the traceback)"
        fail(f"{type(error).__name__}: {error}{hint}")
    finally:
        _quiet_prefect_failures(True)


def print_tracking(outcome: dict[str, Any]) -> None:
    if outcome.get("run_id"):
        note = " — already logged, not logged again" if outcome.get("already_logged") else ""
        typer.echo(f"MLflow run: {outcome['run_id']} ({redact_url(outcome['tracking_uri'])}){note}")


def print_table(rows: list[dict[str, Any]], title: str) -> None:
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
    out = console()
    out.print(table)
    out.print(legend(rows), highlight=False)


QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar or trailing notes.")
VerboseOption = typer.Option(
    False, "--verbose", "-v", help="On failure, print the tracebacks too (Prefect's and ours)."
)
TrackOption = typer.Option(True, "--track/--no-track", help="Log the run to MLflow.")
