"""The commands that read finished work: log (to MLflow), report (a table), inspect (a store)."""

from __future__ import annotations

from pathlib import Path

import typer

from certseg.cli.app import app, console, fail, print_table, set_env_defaults
from certseg.redact import redact_url


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
    set_env_defaults()
    from certseg.tracking import relog_results

    try:
        record = relog_results(results, tracking_uri=tracking_uri)
    except ValueError as error:
        fail(str(error))
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
    set_env_defaults()
    from certseg.report import markdown_table, read_results, write_plots

    local = Path(run)
    if local.is_dir():
        local = local / "results.parquet"
    if local.suffix == ".parquet":
        if not local.is_file():
            fail(f"no results file {local}")
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
            fail(str(error))
        if not data.rows:
            fail(f"MLflow run {run_id} has no results.parquet artifact")
        rows = data.rows
        title = f"MLflow run {run_id}"
    print_table(rows, title)
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
        fail(str(error))
    attrs = sample_store.attrs
    out = console()
    out.print(f"[bold]store[/] {escape(redact_url(store))}", highlight=False)
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
        out.print(f"  {key}: {value}", highlight=False)
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
    out.print(table)
