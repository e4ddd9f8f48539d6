"""A user's own model end to end through `certseg certify`: a torch.jit.trace'd segmenter, a
folder dataset, every config path relative, run from another folder; the MLflow run spans the
actual run (its start_time is when the command began, not when results were logged)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certseg.cli import app
from tests.cli.helpers import own_model_project

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_traced_model_certifies_from_another_folder_and_mlflow_spans_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    config = own_model_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    began = time.time()
    result = CliRunner().invoke(app, ["certify", str(config), "--quiet"])
    ended = time.time()
    assert result.exit_code == 0, result.output
    assert "traced" in result.output  # the variant's row in the table
    runs = tmp_path / "project" / "runs"
    assert (runs / "store.zarr").is_dir() and (runs / "store-results" / "results.csv").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing relative to the current directory

    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("own-model")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    start, end = run.info.start_time, run.info.end_time
    assert run.info.status == "FINISHED"
    assert began * 1000 - 50 <= start <= began * 1000 + 2000  # when the command began
    assert end <= ended * 1000 + 50
    # the run covers preflight, Prefect and sampling (seconds), not just the logging (~0.1 s)
    assert end - start >= 0.5 * (ended - began) * 1000
