"""No planted secret is persisted or shown (issue 13, item 5).

A config carries S3-style storage_options, a store URL with user:password and a tracking URI with
user:password. `certseg certify` runs it end to end (MLflow on a temporary sqlite store),
`certseg recertify` and the recertify flow (storage_options passed again) re-certify the store,
`certseg inspect` and a failing command print it; then every output is grepped for the planted
values: every byte of the store, every file under the run's folder (results, recertify results,
the MLflow database and artifact folder), the CLI output, the captured stdout/stderr and every
log message in the Prefect API (the run loggers at INFO). The store is `memory://` (fsspec's
memory filesystem takes arbitrary storage_options), and a spy on the store opener checks the
planted options did reach the backend while certseg's placeholder never did.

Not covered, by design (documented in infra/README.md): Prefect records every flow-run parameter
in its own database, so the URL given to `certseg recertify` and the storage_options given to the
recertify flow here are there; certseg's advice is to give credentials through the environment.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config

KEY, SECRET = "AKIAPLANTED123", "PLANTED-SECRET-VALUE"
URL_PASSWORD, TRACKING_PASSWORD = "PLANTED-URL-PASSWORD", "PLANTED-TRACKING-PASSWORD"
PLANTED = (KEY, SECRET, URL_PASSWORD, TRACKING_PASSWORD)


def _leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [secret for secret in PLANTED if secret.encode() in data]


def _prefect_logs() -> list[str]:
    """Every log message the Prefect API holds (sent by the flow and task run loggers)."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while batch := client.read_logs(limit=200, offset=len(messages)):
            messages.extend(log.message for log in batch)
    return messages


@pytest.mark.usefixtures("prefect_harness")
def test_planted_secrets_never_persisted_or_shown(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    import certseg.storage.store as store_module
    from certseg.cli import app
    from certseg.flows.recertify import recertify
    from certseg.redact import REDACTED, contains_redacted
    from certseg.storage import SampleStore
    from certseg.tracking import read_run

    root = tmp_path_factory.mktemp("secrets")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    monkeypatch.chdir(root)
    uri = f"sqlite:///{root / 'mlruns.db'}"
    bucket = f"certseg-secrets-{uuid.uuid4().hex[:8]}"
    store_url = f"memory://planted-user:{URL_PASSWORD}@{bucket}/store.zarr"
    options = {"key": KEY, "secret": SECRET}
    data = tiny_config_dict(models, root / "unused.zarr", tracking_uri=uri, shards=1)
    data["variants"] = data["variants"][:1]  # one variant, one σ: the plumbing, quickly
    data["sigmas"] = [0.25]
    data["health"]["num_images"] = 0
    data["store"] = {"url": store_url, "storage_options": options}
    data["tracking"]["uri"] = f"http://planted-user:{TRACKING_PASSWORD}@mlflow.invalid:5000"
    inputs = root / "inputs"  # the user's own file holds the secrets; it is not an output
    inputs.mkdir()
    config_file = write_config(inputs / "run.yaml", data)

    seen: list[dict[str, Any]] = []  # storage_options every store opening received
    real_open = store_module.open_zarr_store

    def spy(url: str, storage_options: Any = None, *, read_only: bool = False) -> Any:
        seen.append(dict(storage_options or {}))
        return real_open(url, storage_options, read_only=read_only)

    monkeypatch.setattr(store_module, "open_zarr_store", spy)
    # The task run loggers' INFO lines too, to the Prefect API only (set after the imports above,
    # which reconfigure Prefect's logging; the console handler may hold an earlier CliRunner's
    # closed stream); restored afterwards.
    task_logger = logging.getLogger("prefect.task_runs")
    request.addfinalizer(
        functools.partial(setattr, task_logger, "propagate", task_logger.propagate)
    )
    request.addfinalizer(functools.partial(task_logger.setLevel, task_logger.level))
    task_logger.propagate = False
    task_logger.setLevel(logging.INFO)
    runner = CliRunner(env={"COLUMNS": "200"})
    outputs: list[str] = []

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        outputs.append(result.output)
        return result.output

    cli("certify", str(config_file), "--tracking-uri", uri, "--out", str(root / "out"))
    assert options in seen  # the planted options did reach the storage backend
    cli("recertify", store_url, "--tau", "0.55", "--tracking-uri", uri, "--out", str(root / "re"))
    # The store's config holds only a redacted tracking URI: refused, never used as a credential.
    refused = cli("recertify", store_url, "--out", str(root / "refused"), code=1)
    assert "tracking.uri: holds the placeholder" in refused
    again = recertify(
        store_url, storage_options=options, alpha=0.2, tracking_uri=uri, out_dir=str(root / "fl")
    )
    assert again["store_url"] == f"memory://{REDACTED}@{bucket}/store.zarr"
    assert "planted-user" not in cli("inspect", store_url)
    missing = cli("inspect", store_url.replace("store.zarr", "missing.zarr"), code=1)
    assert f"memory://{REDACTED}@{bucket}/missing.zarr" in missing
    assert not any(contains_redacted(options_seen) for options_seen in seen)

    # What was written keeps the keys, and config_id is the true config's.
    store = SampleStore.open(store_url, read_only=True)
    persisted = json.loads(store.attrs["config"])
    assert persisted["store"]["storage_options"] == {"key": REDACTED, "secret": REDACTED}
    from certseg.config import load_config

    assert store.config_id == load_config(config_file).config_id
    original = yaml.safe_load((root / "out" / "config.original.yaml").read_text())
    assert original["store"]["storage_options"] == {"key": REDACTED, "secret": REDACTED}
    run = read_run(again["run_id"], tracking_uri=uri)
    assert run.params["store.storage_options.key"] == REDACTED
    assert run.tags["store_url"] == f"memory://{REDACTED}@{bucket}/store.zarr"
    assert run.tags["config_id"] == store.config_id == again["config_id"]

    # Every output, grepped.
    from fsspec.implementations.memory import MemoryFileSystem

    store_files = {
        path: entry.getvalue()
        for path, entry in MemoryFileSystem.store.items()
        if path.startswith(f"/planted-user:{URL_PASSWORD}@{bucket}/")
    }
    written = {
        str(file): file.read_bytes()
        for file in root.rglob("*")
        if file.is_file() and inputs not in file.parents
    }
    assert any(name.endswith("zarr.json") for name in store_files)
    assert (root / "mlruns.db").is_file() and (root / "out" / "config.yaml").is_file()
    assert any("mlartifacts" in name and name.endswith("config.yaml") for name in written)
    captured = capfd.readouterr()
    logged = _prefect_logs()
    assert f"store memory://{REDACTED}@{bucket}/store.zarr created" in "\n".join(logged)
    blobs: dict[str, bytes | str] = {
        **{f"store:{path}": blob for path, blob in store_files.items()},
        **written,
        **{f"cli output {i}": text for i, text in enumerate(outputs)},
        "stdout": captured.out,
        "stderr": captured.err,
        **{f"Prefect log {i}": text for i, text in enumerate(logged)},
    }
    leaks = {name: found for name, blob in blobs.items() if (found := _leaks(blob))}
    assert not leaks, f"planted secrets found in: {leaks}"
