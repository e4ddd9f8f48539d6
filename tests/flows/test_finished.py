"""Re-running a finished run reads its results (certseg.run.finished): nothing is sampled,
aggregated or logged again — and any doubt (a setting, the results folder, a flag, the MLflow
run, the code version) sends it down the normal path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from certseg.run.context import certify_context
from certseg.run.finished import finished_run
from certseg.storage import SampleStore
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from certseg.flows.certify_dataset import certify_dataset

    root = tmp_path_factory.mktemp("finished")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    data = tiny_config_dict(models, root / "store.zarr", tracking_uri=f"sqlite:///{root}/ml.db")
    config = write_config(root / "run.yaml", data)
    return config, certify_dataset(str(config))


def test_a_finished_run_is_read_not_redone(
    first_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from certseg.flows.certify_dataset import certify_dataset

    config, first = first_run

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished run was redone")

    for name in ("prepare_store", "sample_shard", "aggregate_store", "finalize_run"):
        monkeypatch.setattr(f"certseg.tasks.certify.{name}", never)
    again = certify_dataset(str(config))
    assert again["finished_before"] and again["already_logged"]
    assert again["run_id"] == first["run_id"] and again["config_id"] == first["config_id"]
    assert again["sampled_blocks"] == 0 and again["skipped_blocks"] == first["sampled_blocks"]
    assert again["rows"] == first["rows"]


def test_any_doubt_runs_the_normal_path(
    first_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    config, first = first_run
    ctx = certify_context(str(config))
    found = finished_run(ctx)
    assert found is not None and found.run_id == first["run_id"]
    assert finished_run(certify_context(str(config), track=False)) is None  # no lineage check

    # another setting outside config_id (the results would differ): not finished
    assert ctx.config.alpha != 0.2
    for changed in ({"alpha": 0.2}, {"report": {"overlay_images": 1}}):
        other = write_config(tmp_path / "other.yaml", {**_config_dict(config), **changed})
        assert finished_run(certify_context(str(other))) is None, changed

    # another results folder, or a damaged one
    assert finished_run(certify_context(str(config), out_dir=str(tmp_path / "none"))) is None
    results = Path(ctx.out_dir)
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    (copy / "results.parquet").unlink()
    assert finished_run(certify_context(str(config), out_dir=str(copy))) is None

    # a code version other than the one that wrote the results
    record = json.loads((results / "tracking.json").read_text())
    shutil.copytree(results, tmp_path / "older")
    record["tags"]["code_version"] = "0.0.1+older"
    (tmp_path / "older" / "tracking.json").write_text(json.dumps(record))
    assert finished_run(certify_context(str(config), out_dir=str(tmp_path / "older"))) is None

    # another MLflow store (the run is not logged there)
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    assert finished_run(certify_context(str(config), tracking_uri=elsewhere)) is None
    assert not (tmp_path / "other.db").exists()  # looking created nothing

    # a block flag lost: the store is not complete any more
    store = SampleStore.open(ctx.store_url)
    flags = store.done_blocks(0.5, "none", "estimation", 3)
    path = "done/sigma_0.5/none/estimation"
    before = store.group[path][3]
    store.group[path][3] = 0 * before
    try:
        assert flags.size != 0 and finished_run(ctx) is None
    finally:
        store.group[path][3] = before
    assert finished_run(ctx) is not None


def _config_dict(config: Path) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(config.read_text())
    return loaded


def test_cli_certify_prints_a_finished_run_without_prefect(
    first_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import certseg.cli.run as cli_run
    import certseg.flows.certify_dataset as flow_module
    from certseg.cli import app

    config, first = first_run

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the preflight or the flow ran for a finished run")

    monkeypatch.setattr(flow_module, "certify_dataset", never)
    monkeypatch.setattr(cli_run, "preflight", never)
    result = CliRunner().invoke(app, ["certify", str(config)])
    assert result.exit_code == 0, result.output
    assert "this run had finished: results read, nothing recomputed" in result.output
    assert f"MLflow run: {first['run_id']}" in result.output and "already logged" in result.output
    assert f"0 blocks sampled, {first['sampled_blocks']} resumed" in result.output
