"""Recognise a run that is already finished, so re-running it reads its results instead of
starting Prefect, Dask and a re-aggregation.

A run is finished when all of these hold (any doubt → not finished, and the normal path runs):
- the store at the context's URL opens under the config's config_id and is completely sampled
  (every block flag, every clean prediction);
- the results folder holds `tracking.json`, `config.yaml` and `results.parquet` written by that
  same run: the same public config (every setting, report options included), store URL, n, α,
  τ and correction, by the same certseg code version, from the same model files (sha256);
- tracking is on and the MLflow run of that run key is logged and FINISHED (an untracked run
  writes no tracking.json, so its code version cannot be checked: it always re-aggregates).

The rows returned are read from `results.parquet`: the numbers the earlier run computed from the
same stored samples with the same code, so they are the numbers a re-aggregation would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certseg.redact import redact_url
from certseg.run.context import RunContext
from certseg.run.lineage import code_version, model_file_sha256s
from certseg.storage import PHASES_STORED, SampleStore


@dataclass(frozen=True)
class FinishedRun:
    """An earlier identical run's results: rows (results.parquet), its folder, its MLflow run id,
    the config_id, and the blocks the store holds (all done)."""

    rows: list[dict[str, Any]]
    out_dir: str
    run_id: str
    config_id: str
    blocks: int


def store_complete(store: SampleStore) -> int | None:
    """The number of sample blocks when the store is completely sampled
    (`SampleStore.first_missing`), else None."""
    if store.first_missing(store.sigmas, store.variants) is not None:
        return None
    per_image = sum(len(store.blocks(phase)) for phase in PHASES_STORED)
    return len(store.sigmas) * len(store.groups) * store.num_images * per_image


def finished_run(ctx: RunContext) -> FinishedRun | None:
    """The earlier identical run of `ctx` when it is finished (module docstring), else None.

    Never raises for a missing or different store or results folder, or an unreadable MLflow
    store: None, and the normal path runs (and reports what is wrong).
    """
    import yaml

    folder = Path(ctx.out_dir)
    record_file, config_file = folder / "tracking.json", folder / "config.yaml"
    parquet = folder / "results.parquet"
    if not ctx.track or not all(p.is_file() for p in (record_file, config_file, parquet)):
        return None
    try:
        store = SampleStore.open(
            ctx.store_url,
            storage_options=ctx.storage_options,
            config_id=ctx.config_id,
            read_only=True,
        )
    except (ValueError, OSError, KeyError):
        return None
    blocks = store_complete(store)
    if blocks is None:
        return None
    try:
        written = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if written != json.loads(json.dumps(ctx.config.public_dict())):
        return None
    from certseg.report import read_results

    try:
        rows = read_results(parquet)
    except (OSError, ValueError):
        return None
    if not rows or any(not _same_params(row, ctx) for row in rows):
        return None
    return _tracked(ctx, record_file, rows, blocks)


def _same_params(row: dict[str, Any], ctx: RunContext) -> bool:
    params = ctx.params
    return (
        row.get("n") == params.n
        and row.get("alpha") == params.alpha
        and row.get("tau") == params.tau
        and row.get("correction") == params.correction
    )


def _tracked(
    ctx: RunContext, record_file: Path, rows: list[dict[str, Any]], blocks: int
) -> FinishedRun | None:
    """The FinishedRun when tracking.json records this run (code, store, models) and its MLflow
    run is logged and finished."""
    from certseg.tracking import finished_run_id

    try:
        record = json.loads(record_file.read_text())
        tags = record["tags"]
        key, experiment = str(record["key"]), str(record["experiment"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    expected = {
        "config_id": ctx.config_id,
        "code_version": code_version(),
        "store_url": redact_url(ctx.store_url),
        **{f"model_sha256/{label}": sha for label, sha in model_file_sha256s(ctx).items()},
    }
    if any(tags.get(name) != value for name, value in expected.items()):
        return None
    if experiment != ctx.config.tracking.experiment:
        return None
    run_id = finished_run_id(tracking_uri=ctx.tracking_uri, experiment=experiment, key=key)
    if run_id is None:
        return None
    return FinishedRun(rows, str(Path(ctx.out_dir)), run_id, ctx.config_id, blocks)
