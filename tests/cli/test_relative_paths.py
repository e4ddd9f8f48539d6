"""Relative paths in a config resolve against the config file's folder, from any current
directory: dataset root, model files, store, tracking database (and so the results folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from certseg.cli import app
from tests.cli.helpers import own_model_project

runner = CliRunner()


def test_check_gives_the_same_answer_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = own_model_project(tmp_path / "project")
    outputs = []
    for cwd in (tmp_path, tmp_path / "project" / "configs", tmp_path / "elsewhere"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        result = runner.invoke(app, ["check", str(config.resolve())])
        assert result.exit_code == 0, (cwd, result.output)
        outputs.append(result.output)
    assert outputs[0] == outputs[1] == outputs[2]
    project = tmp_path / "project"
    assert f"segmenter 'traced': torchscript {project / 'models' / 'traced.pt'}" in outputs[0]
    assert "dataset 'folder': 2 images valid" in outputs[0]
    assert f"store: {project / 'runs' / 'store.zarr'} (new" in outputs[0]


def test_context_resolves_store_and_tracking_against_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certseg.run.context import certify_context

    config = own_model_project(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    ctx = certify_context(str(config.relative_to(tmp_path)))
    runs = tmp_path / "project" / "runs"
    assert ctx.base_dir == tmp_path / "project" / "configs"
    assert ctx.store_url == str(runs / "store.zarr")
    assert ctx.tracking_uri == f"sqlite:///{runs / 'mlruns.db'}"
    assert ctx.out_dir == str(runs / "store-results")
    # command-line overrides stay relative to the current directory
    ctx = certify_context(str(config), store_url="here.zarr", tracking_uri="sqlite:///x.db")
    assert (ctx.store_url, ctx.tracking_uri) == ("here.zarr", "sqlite:///x.db")


def test_a_relative_base_dir_key_resolves_against_the_file(tmp_path: Path) -> None:
    from certseg.run.context import certify_context

    config = own_model_project(tmp_path / "project")
    text = config.read_text().replace("../models/", "models/").replace("../data", "data")
    config.write_text("base_dir: ..\n" + text)
    assert certify_context(str(config)).base_dir == tmp_path / "project"
