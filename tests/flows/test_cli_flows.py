"""`certseg certify` and `certseg recertify` end to end on stand-in models (under the harness)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from certseg.cli import app
from certseg.storage import SampleStore
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config


@pytest.mark.usefixtures("prefect_harness")
def test_cli_certify_resume_recertify(tmp_path_factory: pytest.TempPathFactory) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    root = tmp_path_factory.mktemp("cli")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    data = tiny_config_dict(models, root / "store.zarr", tracking_uri=uri, shards=3)
    config = write_config(root / "tiny.yaml", data)
    first = runner.invoke(app, ["certify", str(config), "--out", str(root / "out")])
    assert first.exit_code == 0, first.output
    assert "certified acc" in first.output and "64 blocks sampled, 0 resumed" in first.output
    assert (root / "out" / "results.parquet").is_file()
    second = runner.invoke(app, ["certify", str(config), "--out", str(root / "out2")])
    assert second.exit_code == 0, second.output
    assert "0 blocks sampled, 64 resumed" in second.output
    other = dict(data, seed=1)
    refused = runner.invoke(app, ["certify", str(write_config(root / "other.yaml", other))])
    assert refused.exit_code == 1 and "config_id" in refused.output
    recert = runner.invoke(
        app, ["recertify", str(root / "store.zarr"), "--tau", "0.55", "--n", "5", "--no-track"]
    )
    assert recert.exit_code == 0, recert.output
    assert "n=5" in recert.output and "τ=0.55" in recert.output
    assert SampleStore.open(str(root / "store.zarr")).counts_n(0.25, "clean", 0) == 8
    inspect = runner.invoke(app, ["inspect", str(root / "store.zarr")])
    assert inspect.exit_code == 0 and "4/4 images" in inspect.output


@pytest.mark.usefixtures("prefect_harness")
def test_cli_certify_refuses_a_project_folder_as_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`certseg certify CONFIG --store <project folder>` must not delete the project (issue 13):
    one `error:` line naming the folder, every file byte-identical."""
    import hashlib

    root = tmp_path_factory.mktemp("cli-own")
    project = root / "project"
    models = make_models_dir(project)
    (project / "data" / "images").mkdir(parents=True)
    (project / "data" / "images" / "0001.png").write_bytes(bytes(range(256)) * 4)
    data = tiny_config_dict(models, root / "unused.zarr", tracking_uri=f"sqlite:///{root / 'm.db'}")
    config = write_config(project / "run.yaml", data)

    def digest() -> dict[str, str]:
        return {
            str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project.rglob("*"))
            if p.is_file()
        }

    before = digest()
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(
        app, ["certify", str(config), "--store", str(project), "--out", str(root / "out")]
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert str(project) in errors[0] and "not a certseg store" in errors[0]
    assert digest() == before
    assert not (root / "unused.zarr").exists()
