"""prefect.yaml: every deployment resolves to a Prefect flow whose signature accepts its parameters.

No server needed: the file is validated with Prefect's own prefect.yaml schema, each entrypoint is
loaded the way `prefect deploy` loads it, and the parameters are validated against the flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engines.engine_procs import REPO_ROOT, WORK_POOL

PREFECT_YAML = REPO_ROOT / "prefect.yaml"
FLOW_NAMES = {
    "flows/certify_dataset.py:certify_dataset": "certify-dataset",
    "flows/certify_on_dask.py:certify_dataset_on_dask": "certify-dataset-on-dask",
    "flows/recertify.py:recertify": "recertify",
}


def _spec() -> dict[str, Any]:
    data = yaml.safe_load(PREFECT_YAML.read_text())
    assert isinstance(data, dict), "prefect.yaml must be a mapping"
    return data


def _deployments() -> list[dict[str, Any]]:
    deployments = _spec()["deployments"]
    assert isinstance(deployments, list) and deployments
    return deployments


def test_passes_prefects_own_schema() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with

    model = PrefectYamlModel.model_validate(_spec())
    assert len(model.deployments) == len(_deployments())
    names = [d.name for d in model.deployments]
    assert len(set(names)) == len(names), f"deployment names repeat: {names}"


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: str(d.get("name")))
def test_entrypoint_is_a_flow_and_parameters_validate(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO_ROOT)  # entrypoints are relative to the project root
    entrypoint = deployment["entrypoint"]
    assert entrypoint in FLOW_NAMES, f"unexpected entrypoint {entrypoint!r}"
    flow = load_flow_from_entrypoint(entrypoint)
    assert isinstance(flow, Flow)
    assert flow.name == FLOW_NAMES[entrypoint]
    # Raises ParameterTypeError on unknown, missing or mistyped parameters.
    flow.validate_parameters(dict(deployment.get("parameters") or {}))
    pool = deployment["work_pool"]
    assert pool["name"] == WORK_POOL


def test_validation_rejects_a_wrong_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: an unknown parameter is refused."""
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO_ROOT)
    flow = load_flow_from_entrypoint("flows/certify_dataset.py:certify_dataset")
    params = dict(_deployments()[0]["parameters"], no_such_parameter=1)
    with pytest.raises((ParameterTypeError, SignatureMismatchError)):
        flow.validate_parameters(params)


def test_local_and_cluster_deployments() -> None:
    by_name = {d["name"]: d for d in _deployments()}
    local, cluster = by_name["certseg-local"], by_name["certseg-cluster"]
    assert local["entrypoint"] == "flows/certify_dataset.py:certify_dataset"
    # the cluster deployment chooses the Dask task runner by its entrypoint, not a parameter
    assert cluster["entrypoint"] == "flows/certify_on_dask.py:certify_dataset_on_dask"
    assert local["work_pool"]["name"] == WORK_POOL
    params = cluster["parameters"]
    assert params["dask_address"].startswith("tcp://")
    assert params["store_url"].startswith("s3://")
    assert isinstance(params["storage_options"], dict)
    assert params["tracking_uri"].startswith("http")
    assert any(d["entrypoint"] == "flows/recertify.py:recertify" for d in _deployments())


def test_recertify_local_reads_the_demo_store() -> None:
    """recertify-local's default store is the one `certseg demo` writes."""
    from typer.main import get_command

    from certseg.cli import app

    demo = get_command(app).commands["demo"]  # type: ignore[attr-defined]
    default_store = next(p.default for p in demo.params if p.name == "store")
    by_name = {d["name"]: d for d in _deployments()}
    assert by_name["recertify-local"]["parameters"]["store_url"] == default_store


def test_example_schedule_is_a_valid_cron() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    schedules = [s for d in _deployments() for s in d.get("schedules") or []]
    assert schedules, "prefect.yaml should carry an example schedule"
    for schedule in schedules:
        cron = CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        assert cron.cron == schedule["cron"]


def test_pull_step_changes_into_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pull step resolves CERTSEG_ROOT from the worker's environment at run time."""
    from prefect.utilities.templating import apply_values

    monkeypatch.setenv("CERTSEG_ROOT", str(tmp_path))
    pull = _spec()["pull"]
    assert len(pull) == 1
    ((step_name, step),) = pull[0].items()
    assert step_name == "prefect.deployments.steps.set_working_directory"
    resolved = apply_values(step, {})
    assert resolved == {"directory": str(tmp_path)}


def test_infra_scripts_use_the_same_work_pool() -> None:
    lib = (REPO_ROOT / "infra" / "local" / "lib.sh").read_text()
    assert f"WORK_POOL=${{CERTSEG_WORK_POOL:-{WORK_POOL}}}" in lib
