"""The `certseg` command line: demo, certify, recertify, log, report, inspect, plan.

One module per command group: `app` (the typer app and what the commands share), `run` (demo,
certify, recertify: they call the Prefect flows), `results` (log, report, inspect), `plan` (a
run's cost before it starts). Importing this package imports typer and rich only; torch,
prefect, mlflow, zarr and dask load inside a command. certify never reads the run's config
itself: the flow parses it once and returns what the CLI prints (plan parses it, alone).
"""

from __future__ import annotations

from certseg.cli.app import app

# isort: off
from certseg.cli import run  # registers demo, certify, recertify (help lists them first)
from certseg.cli import results  # registers log, report, inspect
from certseg.cli import plan  # registers plan
# isort: on

__all__ = ["app", "main", "plan", "results", "run"]


def main() -> None:
    """Entry point of the `certseg` script."""
    app()
