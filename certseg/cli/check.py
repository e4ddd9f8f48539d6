"""The preflight command, `certseg check CONFIG`, and the same preflight run by certify.

Prints what certseg.run.check.check_run finds, one line each (including "runs code: pkg.mod:fn"
for every `python`-family factory: the only code a config runs); a problem is one `error:` line
and exit code 1. Nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from certseg.cli.app import VerboseOption, app, fail


def preflight(
    config: Path,
    *,
    echo: bool,
    verbose: bool,
    base_dir: Path | None = None,
    skip_invalid: bool = False,
    store: str | None = None,
    track: bool = True,
) -> Any:
    """Resolve CONFIG as certify would and check it (certseg.run.check); print each finding when
    `echo` (else only the "runs code" lines). A failure is one `error:` line, exit code 1."""
    import traceback

    from certseg.run.check import check_run
    from certseg.run.context import certify_context

    def show(line: str) -> None:
        if echo or line.startswith("runs code:"):
            typer.echo(line)

    try:
        ctx = certify_context(
            str(config),
            base_dir=str(base_dir) if base_dir else None,
            skip_invalid=skip_invalid,
            store_url=store,
            track=track,
        )
        return check_run(ctx, on_line=show)
    except (ValueError, OSError) as error:
        if verbose:
            traceback.print_exc()
        fail(str(error))


@app.command()
def check(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Drop invalid dataset files (as certify would)."
    ),
    store: str | None = typer.Option(None, help="Store URL (overrides store.url)."),
    verbose: bool = VerboseOption,
) -> None:
    """Preflight CONFIG without writing anything: paths, dataset, each model on a real image,
    the store's identity."""
    preflight(config, echo=True, verbose=verbose, skip_invalid=skip_invalid, store=store)
    typer.echo(f"ok: {config} is ready to certify")
