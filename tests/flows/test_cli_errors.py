"""Permanent errors through `certseg certify`: one `error:` line, no traceback, nothing written
(under the session's Prefect harness, on stand-in models)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from certseg.cli import app
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _five_class_segmenter(path: Path) -> Path:
    """A scripted model that outputs 5 logits per pixel (the config will say 7)."""
    import torch
    from torch import nn

    torch.jit.save(torch.jit.script(nn.Conv2d(3, 5, 1).eval()), str(path))
    return path


def _config(tmp_path: Path, **changes: Any) -> tuple[Path, dict[str, Any]]:
    models = make_models_dir(tmp_path.parent / "standins")
    data = tiny_config_dict(models, tmp_path / "store.zarr", shards=1)
    data.update(changes)
    return write_config(tmp_path / "run.yaml", data), data


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_wrong_class_count_fails_before_the_store(tmp_path: Path) -> None:
    config, data = _config(tmp_path)
    data["segmenters"]["clean"]["path"] = str(_five_class_segmenter(tmp_path / "five.pt"))
    write_config(config, data)
    result = CliRunner().invoke(app, ["certify", str(config), "--quiet", "--no-track"])
    assert result.exit_code == 1, result.output
    (line,) = _error_lines(result.output)
    assert "segmenter 'clean' (" in line and "five.pt) failed on dataset image" in line
    assert "num_classes" in line
    assert "Traceback" not in result.output
    assert not (tmp_path / "store.zarr").exists()


def test_store_path_that_is_a_file_is_one_error_line(tmp_path: Path) -> None:
    config, _ = _config(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a store")
    result = CliRunner().invoke(
        app, ["certify", str(config), "--quiet", "--no-track", "--store", str(blocker)]
    )
    assert result.exit_code == 1
    assert len(_error_lines(result.output)) == 1, result.output
    assert "Traceback" not in result.output and "Finished in state" not in result.output
    assert blocker.read_text() == "not a store"


def test_broken_tracking_store_fails_before_sampling(tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    with sqlite3.connect(broken) as db:
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
    config, _ = _config(tmp_path)
    result = CliRunner().invoke(
        app, ["certify", str(config), "--quiet", "--tracking-uri", f"sqlite:///{broken}"]
    )
    assert result.exit_code == 1
    (line,) = _error_lines(result.output)
    assert "cannot be used" in line and "move it aside" in line
    assert not (tmp_path / "store.zarr").exists()  # nothing sampled


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    config, _ = _config(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = CliRunner().invoke(
        app,
        ["certify", str(config), "-q", "--no-track", "--store", str(blocker), "--verbose"],
    )
    assert result.exit_code == 1
    assert "Traceback" in result.output and _error_lines(result.output)


def test_certify_reports_config_errors_by_field(tmp_path: Path) -> None:
    """The flow reads the config (once); its field errors reach the CLI as one `error:` line."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        (Path(__file__).parents[2] / "configs" / "tiny.yaml")
        .read_text()
        .replace("tau: 0.6", "tau: 0.4")
    )
    result = CliRunner().invoke(app, ["certify", str(config), "--quiet"])
    assert result.exit_code == 1
    (line,) = _error_lines(result.output)
    assert "config.tau: must be in (0.5, 1), got 0.4" in line
    assert "Traceback" not in result.output
