"""The `python` segmenter family from a YAML config: the factory is imported and called (the
only code a config runs, printed by `certseg check`); `family: module` in YAML points to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from certseg.cli import app
from tests.cli.helpers import error_lines, tiny_config
from tests.pipeline_fixtures import write_config

runner = CliRunner()

FACTORY = "tests.cli.helpers:build_colour_net"


def _python_segmenter(factory: str = FACTORY, **kwargs: Any) -> dict[str, Any]:
    return {
        "family": "python",
        "num_classes": 7,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "options": {"factory": factory, "kwargs": kwargs},
    }


def test_check_runs_the_factory_and_says_so(tmp_path: Path) -> None:
    config, data = tiny_config(tmp_path)
    data["segmenters"]["clean"] = _python_segmenter(seed=4, hidden=6)
    write_config(config, data)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.output
    assert f"runs code: {FACTORY}" in result.output.splitlines()
    assert "ready to certify" in result.output


def test_factory_kwargs_enter_the_config_id(tmp_path: Path) -> None:
    from certseg.run.context import certify_context

    config, data = tiny_config(tmp_path)
    data["segmenters"]["clean"] = _python_segmenter(seed=4)
    write_config(config, data)
    first = certify_context(str(config)).config_id
    data["segmenters"]["clean"] = _python_segmenter(seed=5)
    write_config(config, data)
    assert certify_context(str(config)).config_id != first


def test_bad_factories_are_one_error_line(tmp_path: Path) -> None:
    config, data = tiny_config(tmp_path)
    cases = {
        "tests.cli.nope:build": "does not import",
        "tests.cli.helpers:nope": "has no 'nope'",
        "tests.cli.helpers:not_a_module": "returned a str; expected a torch nn.Module",
        "no colon": 'needs options.factory: "package.module:function"',
    }
    for factory, expected in cases.items():
        data["segmenters"]["clean"] = _python_segmenter(factory)
        write_config(config, data)
        result = runner.invoke(app, ["check", str(config)])
        assert result.exit_code == 1, (factory, result.output)
        (line,) = error_lines(result.output)
        assert expected in line, (factory, line)


def test_module_family_in_yaml_points_to_python(tmp_path: Path) -> None:
    config, data = tiny_config(tmp_path)
    data["segmenters"]["clean"] = {**_python_segmenter(), "family": "module", "options": {}}
    write_config(config, data)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert 'family "module" takes an nn.Module' in line and 'use family "python"' in line
    assert "run.yaml" in line  # the config file is named
