"""The `certseg` command line: demo, certify, recertify, check, plan, log, report, inspect.

One module per command group: `app` (the typer app and what the commands share), `run` (demo,
certify, recertify: they call the Prefect flows), `check` (the preflight), `plan` (a run's cost
before it starts), `results` (log, report, inspect). Importing this package imports typer and
rich only; torch, prefect, mlflow, zarr and dask load inside a command. The CLI prints what the
library and the flows return.
"""

from __future__ import annotations

from certseg.cli.app import app

# isort: off
from certseg.cli import run  # registers demo, certify, recertify (help lists them first)
from certseg.cli import check  # registers check
from certseg.cli import results  # registers log, report, inspect
from certseg.cli import plan  # registers plan
# isort: on

__all__ = ["app", "check", "main", "plan", "results", "run"]


def main() -> None:
    """Entry point of the `certseg` script."""
    app()
