"""CLI smoke tests that need no Prefect server: --help (no heavy imports), inspect, report,
option errors. certify/recertify through the CLI (config errors included: the flow reads the
config) run in tests/flows/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.cli import app
from certseg.run.context import run_context
from certseg.run.finalize import finalize_run
from tests.pipeline_fixtures import fill_toy_store
from tests.test_report import toy_config

runner = CliRunner(env={"COLUMNS": "200"})


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from certseg.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "for name in ('demo', 'certify', 'recertify', 'check', 'report', 'inspect'):\n"
        "    assert name in result.output, name\n"
        "heavy = ('torch', 'prefect', 'mlflow', 'zarr', 'dask', 'diffusers', 'matplotlib')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    for command in ("certify", "recertify", "check", "report", "inspect", "demo"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output


def test_inspect_shows_layout_and_progress(tmp_path: Path) -> None:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    result = runner.invoke(app, ["inspect", store.url])
    assert result.exit_code == 0, result.output
    assert "c" * 64 in result.output
    assert "toy (3 images, max 12×12)" in result.output
    # the toy store flags every block of group "none": 1 selection and 4 estimation blocks each
    assert "3/3 blocks" in result.output and "12/12 blocks" in result.output
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nope.zarr")])
    assert missing.exit_code == 1 and "no sample store" in missing.output


def test_report_from_folder_and_mlflow(tmp_path: Path) -> None:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    config = toy_config(store.url)
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    outcome = finalize_run(run_context(config, out_dir=tmp_path / "out", tracking_uri=uri), result)
    from_folder = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert from_folder.exit_code == 0, from_folder.output
    assert "certified acc" in from_folder.output and "v2 *" in from_folder.output
    expected = f"{outcome.rows[0]['certified_accuracy']:.3f}"
    assert expected in from_folder.output
    from_run = runner.invoke(
        app,
        [
            "report",
            "latest",
            "--tracking-uri",
            uri,
            "--experiment",
            "certseg",
            "--out",
            str(tmp_path / "rep"),
        ],
    )
    assert from_run.exit_code == 0, from_run.output
    assert expected in from_run.output
    assert (tmp_path / "rep" / "results.md").read_text().startswith("| σ | variant |")
    assert (tmp_path / "rep" / "accuracy_vs_radius.png").is_file()
    bad = runner.invoke(app, ["report", "0123abcd", "--tracking-uri", uri])
    assert bad.exit_code == 1


def test_recertify_refuses_an_unknown_correction(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["recertify", str(tmp_path / "x.zarr"), "--correction", "sidak"])
    assert bad.exit_code == 1 and "holm or bonferroni" in bad.output


@pytest.mark.slow
def test_demo_end_to_end_meets_the_issue_10_goals(tmp_path: Path) -> None:
    """`certseg demo` in a fresh directory (ephemeral Prefect, local Dask, sqlite MLflow), then
    again (resumes). Needs the shipped weights; minutes on 2 cores."""
    import os

    from certseg.report import read_results

    env = {**os.environ, "COLUMNS": "200"}
    command = [str(Path(sys.executable).parent / "certseg"), "demo"]
    first = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "160 blocks sampled, 0 resumed" in first.stdout
    rows = {
        (r["sigma"], r["variant"]): r
        for r in read_results(tmp_path / "certseg-runs" / "demo-results" / "results.parquet")
    }
    gap = (
        rows[(0.5, "denoised")]["certified_accuracy"]
        - rows[(0.5, "segcertify")]["certified_accuracy"]
    )
    assert gap >= 0.20
    for sigma in (0.25, 0.5):
        assert (
            rows[(sigma, "denoised-finetuned")]["certified_accuracy"]
            >= rows[(sigma, "noise-matched")]["certified_accuracy"]
        )
    second = subprocess.run(
        [*command, "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "mlruns.db").is_file()


def test_report_latest_finds_the_newest_run_of_any_experiment(tmp_path: Path) -> None:
    from certseg.tracking import log_run

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    older = log_run(tracking_uri=uri, experiment="other", run_name="r", params={}, tags={}, rows=[])
    ctx = run_context(toy_config(store.url), out_dir=tmp_path / "o", tracking_uri=uri)
    outcome = finalize_run(ctx, result)
    assert outcome.run_id != older.run_id
    latest = runner.invoke(app, ["report", "latest", "--tracking-uri", uri])
    assert latest.exit_code == 0, latest.output
    assert f"MLflow run {outcome.run_id}" in latest.output.replace("\n", "")
    empty = runner.invoke(app, ["report", "latest", "--tracking-uri", f"sqlite:///{tmp_path}/e.db"])
    assert empty.exit_code == 1 and "no MLflow runs in any experiment" in empty.output
