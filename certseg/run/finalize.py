"""Finalize a run: write the results folder (rows, Parquet/CSV, table, plots), then track it.

The plots are drawn from what aggregation handed over: the rows, and the certified maps it kept
for the overlays (`certseg.run.overlays`); nothing is certified again here.

Everything is written to the results folder first, with `tracking.json` holding exactly what would
be logged; then one MLflow run is logged (certseg.tracking). A tracking failure leaves the folder
complete and is returned, not raised (`certseg log <folder>` logs it later). Nothing written or
logged holds a secret: config.yaml is `config.public_dict()`, config.original.yaml is the user's
file as parsed with the same redaction, the store URL tag and the params are redacted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certseg.outcomes import HealthResult
from certseg.redact import redact_url
from certseg.run.context import RunContext
from certseg.run.finished import FinishedRun
from certseg.run.lineage import code_version, model_file_sha256s
from certseg.run.overlays import gather_overlays
from certseg.run.prepare import PreparedStore
from certseg.run.sample import ShardReport
from certseg.storage import SampleStore

if TYPE_CHECKING:
    from certseg.aggregate import AggregateResult, CertifyParams


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


_UNKEYED = frozenset({"samples_per_second"})
"""Row fields that differ between a fresh and a resumed run of the same results (not keyed)."""


def finalize_run(
    ctx: RunContext,
    result: AggregateResult,
    *,
    health: Sequence[HealthResult] = (),
    rates: Mapping[str, float] | None = None,
) -> RunOutcome:
    """Build the results rows of `result`, write them and the plots and config to ctx.out_dir,
    then (when ctx.track) log it all to MLflow at ctx.tracking_uri.

    rates: sigma_key → model evaluations per second while sampling (`sampling_rates`; none on a
    resumed run). The config_id tag is the store's.
    """
    import yaml

    from certseg.report import build_rows, markdown_table, write_plots, write_results

    config, params = ctx.config, result.params
    store = SampleStore.open(ctx.store_url, storage_options=ctx.storage_options, read_only=True)
    rows = build_rows(
        config,
        result,
        class_names=list(store.attrs["class_names"]),
        health=health,
        samples_per_second=rates,
    )
    folder = Path(ctx.out_dir)
    parquet, csv_path = write_results(rows, folder)
    table = folder / "results.md"
    table.write_text(markdown_table(rows) + "\n")
    write_plots(rows, folder / "plots", overlays=gather_overlays(ctx, result, store))
    config_copy = folder / "config.yaml"
    config_copy.write_text(yaml.safe_dump(config.public_dict(), sort_keys=False))
    skipped = [list(item) for item in store.attrs.get("skipped_files", [])]
    skipped_json = folder / "skipped_files.json"
    if skipped:  # skip_invalid dropped these (file, reason) before sampling
        skipped_json.write_text(json.dumps(skipped, indent=1) + "\n")
    if not ctx.track:
        return RunOutcome(rows=rows, out_dir=str(folder), run_id=None, config_id=store.config_id)
    artifacts = [parquet, csv_path, table, config_copy]
    if skipped:
        artifacts.append(skipped_json)
    if ctx.original_config is not None:  # already redacted; comments were never kept
        original = folder / "config.original.yaml"
        original.write_text(
            yaml.safe_dump(ctx.original_config, sort_keys=False, allow_unicode=True)
        )
        artifacts.append(original)
    tags = {
        "config_id": store.config_id,
        "code_version": code_version(),
        "store_code_version": str(store.attrs.get("code_version", "")),
        "dataset_manifest_sha256": str(store.attrs.get("dataset_manifest_sha256", "")),
        "health_manifest_sha256": str(store.attrs.get("health_manifest_sha256", "")),
        "store_url": redact_url(ctx.store_url),
        "certify.alpha": str(params.alpha),
        "certify.tau": str(params.tau),
        "certify.correction": params.correction,
        "certify.n": str(params.n),
        "dataset_skipped_files": str(len(skipped)),
        **{f"model_sha256/{label}": sha for label, sha in model_file_sha256s(ctx).items()},
        **ctx.extra_tags,
    }
    return _track(ctx, params, rows, tags, artifacts, folder)


def _track(
    ctx: RunContext,
    params: CertifyParams,
    rows: list[dict[str, Any]],
    tags: Mapping[str, str],
    artifacts: list[Path],
    folder: Path,
) -> RunOutcome:
    """Write tracking.json (what is logged), then log it; a TrackingError becomes the outcome's
    tracking_error."""
    from certseg.tracking import TRACKING_FILE, TrackingError, log_run, run_key

    config_id = tags["config_id"]
    key = run_key(
        config_id=config_id,
        store_url=redact_url(ctx.store_url),
        alpha=params.alpha,
        tau=params.tau,
        correction=params.correction,
        n=params.n,
        extra=dict(ctx.extra_tags),
        results=[{k: v for k, v in row.items() if k not in _UNKEYED} for row in rows],
    )
    experiment, name = ctx.config.tracking.experiment, ctx.config.name
    flat_params = {**ctx.config.flat_params(), **ctx.parallelism.params()}
    record: dict[str, Any] = {
        "tracking_uri": redact_url(ctx.tracking_uri),
        "experiment": experiment,
        "run_name": name,
        "key": key,
        "params": flat_params,
        "tags": dict(tags),
        "artifacts": [path.name for path in artifacts],
        "artifact_dirs": {"plots": "plots"},
        "start_time_ms": ctx.started_ms,
    }
    (folder / TRACKING_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    try:
        logged = log_run(
            tracking_uri=ctx.tracking_uri,
            experiment=experiment,
            run_name=name,
            params=flat_params,
            tags=dict(tags),
            rows=rows,
            artifacts=artifacts,
            artifact_dirs={"plots": folder / "plots"},
            key=key,
            start_time_ms=ctx.started_ms,
        )
    except TrackingError as error:
        return RunOutcome(
            rows=rows,
            out_dir=str(folder),
            run_id=None,
            config_id=config_id,
            tracking_error=(
                f"{error}. The results are complete in {folder}; log them later with "
                f"`certseg log {folder} --tracking-uri <uri>`"
            ),
        )
    return RunOutcome(
        rows=rows,
        out_dir=str(folder),
        run_id=logged.run_id,
        config_id=config_id,
        already_logged=logged.already_logged,
    )


def run_summary(
    ctx: RunContext,
    outcome: RunOutcome,
    *,
    reports: Sequence[ShardReport] | None = None,
    prepared: PreparedStore | None = None,
) -> dict[str, Any]:
    """What a flow returns: JSON-ready, the store and tracking URIs with credentials redacted.

    Keys: config_id (the store's), store_url, tracking_uri, run_id, already_logged,
    tracking_error, out_dir, rows; with reports, sampled_blocks and skipped_blocks; with
    prepared, skipped_files (what skip_invalid dropped).
    """
    summary: dict[str, Any] = {
        "config_id": outcome.config_id,
        "store_url": redact_url(ctx.store_url),
        "tracking_uri": redact_url(ctx.tracking_uri),
        "run_id": outcome.run_id,
        "already_logged": outcome.already_logged,
        "tracking_error": outcome.tracking_error,
        "out_dir": outcome.out_dir,
        "rows": outcome.rows,
    }
    if reports is not None:
        summary["sampled_blocks"] = sum(r.sampled_blocks for r in reports)
        summary["skipped_blocks"] = sum(r.skipped_blocks for r in reports)
    if prepared is not None:
        summary["skipped_files"] = [list(item) for item in prepared.skipped]
    return summary


def finished_summary(ctx: RunContext, finished: FinishedRun) -> dict[str, Any]:
    """`run_summary` of a run found finished: its stored rows, every block resumed, nothing
    sampled, the MLflow run already logged."""
    outcome = RunOutcome(
        rows=finished.rows,
        out_dir=finished.out_dir,
        run_id=finished.run_id,
        config_id=finished.config_id,
        already_logged=True,
    )
    summary = run_summary(ctx, outcome)
    summary.update(sampled_blocks=0, skipped_blocks=finished.blocks, finished_before=True)
    return summary
