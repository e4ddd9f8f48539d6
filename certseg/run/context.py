"""Resolve a run once: the config and every override, into one frozen `RunContext`.

The CLI, a flow parameter or the config can each say where the store, the tracking server, the
Dask scheduler and the results folder are; `run_context` decides once, and every later step reads
the answer from the context instead of deciding again. The config file is parsed once
(`read_config_file`); its redacted mapping travels along for `config.original.yaml`.

A `RunContext` is plain, picklable data (it crosses to Dask workers). Its storage_options may hold
credentials: they are left out of its repr. Nothing here connects to anything.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certseg.aggregate import CertifyParams
from certseg.config import RunConfig, config_from_dict, read_config_mapping
from certseg.redact import check_unredacted, redact_config_dict
from certseg.run.resources import Parallelism, resolve_parallelism


@dataclass(frozen=True)
class DaskSettings:
    """The aggregation cluster: a scheduler address, else a LocalCluster of this shape."""

    address: str | None
    n_workers: int = 2
    threads_per_worker: int = 1
    processes: bool = True


@dataclass(frozen=True)
class RunContext:
    """Everything a run resolved once, read by every step.

    config: the validated run config (skip_invalid applied). store_url / storage_options: where
    the sample store is (checked free of certseg.redact.REDACTED placeholders). tracking_uri: the
    MLflow URI (checked only when track). params: the certificate's n, α, τ, correction.
    base_dir: the absolute folder relative model and dataset paths resolve against (resolved
    when the context is made, so a step in another process resolves them the same way).
    original_config: the user's config file as parsed, secrets redacted (None when the config
    was not read from a file). extra_tags: added to the MLflow run (recertify marks its runs).
    parallelism: concurrent shards in the flow's process and torch threads (certseg.run.resources).
    started_ms: when the run began, Unix milliseconds (the MLflow run's start_time).
    """

    config: RunConfig
    store_url: str
    storage_options: dict[str, Any] = field(repr=False)
    tracking_uri: str
    dask: DaskSettings
    shards: int
    out_dir: str
    base_dir: Path
    params: CertifyParams
    parallelism: Parallelism
    track: bool = True
    original_config: dict[str, Any] | None = field(default=None, repr=False)
    extra_tags: dict[str, str] = field(default_factory=dict)
    started_ms: int | None = None

    @property
    def config_id(self) -> str:
        """The config's sha256 identity (see certseg.config)."""
        return self.config.config_id

    def resolve_path(self, path: str) -> Path:
        """A model or dataset path: absolute as is (after ~ expansion), else under base_dir
        (`..` folded: base_dir/../models/m.pt reads as <parent>/models/m.pt)."""
        candidate = Path(path).expanduser()
        return (
            candidate
            if candidate.is_absolute()
            else Path(os.path.normpath(self.base_dir / candidate))
        )


def file_base_dir(path: str | Path, data: Mapping[str, Any]) -> str:
    """Where a config file's relative paths resolve: its `base_dir` key (relative to the file's
    folder when relative), else the file's own folder; absolute, `..` folded."""
    folder = Path(path).expanduser().absolute().parent
    key = data.get("base_dir")
    return os.path.normpath(folder / Path(key).expanduser() if isinstance(key, str) else folder)


def read_config_file(
    path: str | Path, *, base_dir: str | Path | None = None
) -> tuple[RunConfig, dict[str, Any]]:
    """Parse a YAML config file once: (the validated RunConfig, the file's mapping redacted).

    base_dir: set as the config's base_dir; by default the file's folder (or the file's own
    base_dir key, resolved against that folder), so a config's relative paths mean the same from
    any current directory. ValueError naming the file when it is missing, not YAML or not a
    mapping, and naming each bad field otherwise.
    """
    data = read_config_mapping(path)
    chosen = str(base_dir) if base_dir is not None else file_base_dir(path, data)
    values = {**data, "base_dir": chosen}
    return config_from_dict(values, source=str(path)), redact_config_dict(data)


def with_skip_invalid(config: RunConfig) -> RunConfig:
    """The config with dataset.skip_invalid on (config_id unchanged: it is not part of it)."""
    if config.dataset.skip_invalid:
        return config
    dataset = dataclasses.replace(config.dataset, skip_invalid=True)
    return config.model_copy(update={"dataset": dataset})


def default_out_dir(config: RunConfig, store_url: str) -> str:
    """Results folder beside a local store ("<store>-results"), else ./certseg-results/<name>."""
    if "://" not in store_url:
        return str(Path(store_url).with_suffix("")) + "-results"
    return str(Path("certseg-results") / config.name)


def config_relative_url(url: str, base_dir: Path) -> str:
    """A store path or tracking URI written in a config, made independent of the current
    directory: a relative local path (or `sqlite:///relative.db`) goes under base_dir; URLs
    with a scheme and absolute paths are unchanged."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{os.path.normpath(base_dir / url.removeprefix('sqlite:///'))}"
    if "://" in url or url.startswith("sqlite:") or Path(url).expanduser().is_absolute():
        return url
    return os.path.normpath(base_dir / url)


def run_context(
    config: RunConfig,
    *,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    dask_address: str | None = None,
    shards: int | None = None,
    out_dir: str | Path | None = None,
    track: bool = True,
    params: CertifyParams | None = None,
    original_config: Mapping[str, Any] | None = None,
    extra_tags: Mapping[str, str] | None = None,
    out_suffix: str = "",
    started_ms: int | None = None,
) -> RunContext:
    """Resolve every override against the config, once: each argument wins when given.

    storage_options: None takes the config's (an empty mapping is an explicit "none").
    params: the config's n, α, τ and correction when None. out_suffix: appended to the default
    results folder only. started_ms: when the run began (Unix ms; default now). A store path
    or sqlite tracking file written in the config that is relative resolves against the
    config's base_dir (`config_relative_url`); the overrides (command-line values) are taken
    as given. Raises ValueError when the store URL or
    storage_options (or, with track, the tracking URI) hold certseg.redact.REDACTED: a
    placeholder is never sent to a backend.
    """
    base_dir = Path(config.base_dir).expanduser().absolute() if config.base_dir else Path.cwd()
    written_url = "url" in config.store.model_fields_set  # a default is not the config's path
    url = store_url or (
        config_relative_url(config.store.url, base_dir) if written_url else config.store.url
    )
    url = check_unredacted(url, "store.url")
    chosen = storage_options if storage_options is not None else config.store.storage_options
    options = check_unredacted(dict(chosen), "store.storage_options")
    written_uri = "uri" in config.tracking.model_fields_set
    uri = tracking_uri or (
        config_relative_url(config.tracking.uri, base_dir) if written_uri else config.tracking.uri
    )
    if track:
        check_unredacted(uri, "tracking.uri")
    shard_count = shards or config.shards
    return RunContext(
        config=config,
        store_url=url,
        storage_options=options,
        tracking_uri=uri,
        dask=DaskSettings(
            address=dask_address or config.dask.address,
            n_workers=config.dask.n_workers,
            threads_per_worker=config.dask.threads_per_worker,
            processes=config.dask.processes,
        ),
        shards=shard_count,
        out_dir=str(out_dir) if out_dir else default_out_dir(config, url) + out_suffix,
        base_dir=base_dir,
        params=params
        or CertifyParams(
            n=config.n, alpha=config.alpha, tau=config.tau, correction=config.correction
        ),
        parallelism=resolve_parallelism(
            workers=config.sampling.workers, threads=config.sampling.threads, shards=shard_count
        ),
        track=track,
        original_config=dict(original_config) if original_config is not None else None,
        extra_tags=dict(extra_tags or {}),
        started_ms=started_ms if started_ms is not None else int(time.time() * 1000),
    )


def certify_context(
    config: str | Path | Mapping[str, Any],
    *,
    base_dir: str | None = None,
    skip_invalid: bool = False,
    store_url: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    dask_address: str | None = None,
    shards: int | None = None,
    out_dir: str | None = None,
    track: bool = True,
    started_ms: int | None = None,
) -> RunContext:
    """The context of certify-dataset: `config` (a YAML path, parsed once, or a mapping)
    validated, skip_invalid applied, every override resolved (`run_context`)."""
    original: dict[str, Any] | None = None
    if isinstance(config, str | Path):
        loaded, original = read_config_file(config, base_dir=base_dir)
    else:
        data = dict(config) if base_dir is None else {**config, "base_dir": base_dir}
        loaded = config_from_dict(data)
    if skip_invalid:
        loaded = with_skip_invalid(loaded)
    return run_context(
        loaded,
        store_url=store_url,
        storage_options=storage_options,
        tracking_uri=tracking_uri,
        dask_address=dask_address,
        shards=shards,
        out_dir=out_dir,
        track=track,
        original_config=original,
        started_ms=started_ms,
    )
