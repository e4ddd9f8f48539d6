"""`certseg check CONFIG` and the same preflight at the start of `certseg certify`: one `error:`
line naming the model, the file and what was expected, before Prefect starts, nothing written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certseg.cli import app
from tests.cli.helpers import error_lines, tiny_config, write_traced_fixed_size
from tests.pipeline_fixtures import write_config

runner = CliRunner()


def test_check_passes_on_a_good_config_and_writes_nothing(tmp_path: Path) -> None:
    config, _ = tiny_config(tmp_path)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.output
    assert "segmenters 'clean', 'noisy': ran on image" in result.output
    assert "dataset 'synthetic': 4 images valid" in result.output
    assert "denoisers 'ddpm': ran at σ=0.25" in result.output
    assert "(new: certify will create it)" in result.output
    assert result.output.rstrip().endswith("is ready to certify")
    assert "runs code" not in result.output  # no python-family segmenter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_traced_fixed_size_model_is_one_error_line_within_seconds(tmp_path: Path) -> None:
    """The issue's case: a model that only takes 256×256, a 32×32 dataset. In a fresh
    interpreter (imports included), as a user would run it."""
    config, data = tiny_config(tmp_path)
    model = write_traced_fixed_size(tmp_path / "fixed256.pt")
    data["segmenters"]["clean"]["path"] = str(model)
    write_config(config, data)
    code = "import sys; from certseg.cli import main; sys.argv[0] = 'certseg'; main()"
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, "check", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 1, out.stdout + out.stderr
    (line,) = error_lines(out.stderr)
    assert "segmenter 'clean'" in line and str(model) in line
    assert "is invalid for input of size" in line  # the cause, not TorchScript's preamble
    assert "32×32" in line and "expected (1, 7, 32, 32) logits" in line
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed256.pt", "run.yaml"]
    assert elapsed < 60, f"preflight took {elapsed:.1f} s"  # ~5 s on an idle 2-core box


def test_wrong_class_count_names_the_model(tmp_path: Path) -> None:
    config, data = tiny_config(tmp_path)
    data["segmenters"]["clean"]["num_classes"] = 5
    data["segmenters"]["noisy"]["num_classes"] = 5
    write_config(config, data)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert "segmenter 'clean'" in line and "clean.pt" in line and "expected" in line


def test_mean_in_0_255_units_is_refused(tmp_path: Path) -> None:
    config, data = tiny_config(tmp_path)
    data["segmenters"]["clean"]["mean"] = [123.7, 116.3, 103.5]
    data["segmenters"]["clean"]["std"] = [58.4, 57.1, 57.4]
    write_config(config, data)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert "segmenter 'clean': mean" in line and "expected [0, 1] units" in line


def test_missing_model_file_names_it(tmp_path: Path) -> None:
    config, data = tiny_config(tmp_path)
    data["segmenters"]["noisy"]["path"] = str(tmp_path / "nope" / "noisy.pt")
    write_config(config, data)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert "segmenter 'noisy'" in line and str(tmp_path / "nope" / "noisy.pt") in line


def test_store_of_another_config_names_the_differing_settings(tmp_path: Path) -> None:
    from certseg.run.context import certify_context
    from certseg.run.models import load_models
    from certseg.run.prepare import prepare_store

    config, data = tiny_config(tmp_path)
    ctx = certify_context(str(config))
    prepare_store(ctx, load_models(ctx, denoisers=False))  # the store of config n=8
    data["n"] = 9
    write_config(config, data)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert "the settings that differ: n: 8 → 9" in line
    data["n"] = 8
    write_config(config, data)
    again = runner.invoke(app, ["check", str(config)])
    assert again.exit_code == 0 and "certify resumes it" in again.output


def test_certify_runs_the_preflight_before_the_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certseg.flows.certify_dataset as flow_module

    def flow_started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the flow started before the preflight failed")

    monkeypatch.setattr(flow_module, "certify_dataset", flow_started)
    config, data = tiny_config(tmp_path)
    data["segmenters"]["clean"]["path"] = str(write_traced_fixed_size(tmp_path / "f.pt"))
    write_config(config, data)
    result = runner.invoke(app, ["certify", str(config), "--quiet", "--no-track"])
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    assert "segmenter 'clean'" in line and "f.pt" in line
    assert not (tmp_path / "store.zarr").exists()
