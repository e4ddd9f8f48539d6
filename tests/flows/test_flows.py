"""Flow smoke tests under one prefect_test_harness: certify-dataset (fresh, resumed) and
recertify, on stand-in models and 4 tiny synthetic images."""

from __future__ import annotations

from typing import Any

import pytest

from certseg.tracking import read_run
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config


@pytest.mark.usefixtures("prefect_harness")
def test_certify_resume_and_recertify(tmp_path_factory: pytest.TempPathFactory) -> None:
    from certseg.flows.certify_dataset import certify_dataset
    from certseg.flows.recertify import recertify

    root = tmp_path_factory.mktemp("flow")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    data = tiny_config_dict(models, root / "store.zarr", tracking_uri=uri, broken=True)
    config_file = write_config(root / "tiny.yaml", data)

    first = certify_dataset(str(config_file))
    assert first["sampled_blocks"] == 4 * 2 * 2 * 4 and first["skipped_blocks"] == 0
    rows = {(r["sigma"], r["variant"]): r for r in first["rows"]}
    assert len(rows) == 2 * 4
    assert rows[(0.5, "broken")]["health_flagged"]
    assert 0.0 <= rows[(0.25, "clean")]["certified_accuracy"] <= 1.0
    run = read_run(first["run_id"], tracking_uri=uri)
    assert run.tags["config_id"] == first["config_id"]
    assert "results.parquet" in run.artifacts and "config.original.yaml" in run.artifacts

    second = certify_dataset(str(config_file))  # resumes: no sampling at all
    assert second["sampled_blocks"] == 0 and second["skipped_blocks"] == 4 * 2 * 2 * 4

    def strip(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ("samples_per_second", "health_accuracy")}

    assert [strip(r) for r in second["rows"]] == [strip(r) for r in first["rows"]]
    assert [r["health_accuracy"] for r in second["rows"]] == [
        r["health_accuracy"] for r in first["rows"]
    ]

    again = recertify(str(root / "store.zarr"), alpha=0.2, tau=0.55, correction="bonferroni")
    assert again["config_id"] == first["config_id"]
    assert all(r["alpha"] == 0.2 and r["tau"] == 0.55 for r in again["rows"])
    recert_run = read_run(again["run_id"], tracking_uri=uri)
    assert recert_run.tags["recertify"] == "true"
    assert recert_run.params["tau"] == "0.55"


@pytest.mark.usefixtures("prefect_harness")
def test_the_dask_flow_needs_a_scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> None:
    """certify-dataset-on-dask has no fallback: without an address nothing runs or is written
    (an empty address would silently start a temporary local cluster instead)."""
    from prefect.exceptions import ParameterBindError

    from certseg.flows.certify_on_dask import certify_dataset_on_dask

    root = tmp_path_factory.mktemp("nodask")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    config_file = write_config(root / "tiny.yaml", tiny_config_dict(models, root / "s.zarr"))
    flow: Any = certify_dataset_on_dask
    with pytest.raises(ParameterBindError, match="dask_address"):
        flow(str(config_file), track=False)
    with pytest.raises(ValueError, match="dask_address: needs a Dask scheduler address"):
        flow(str(config_file), dask_address="", track=False)
    assert not (root / "s.zarr").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_certify_a_sequential_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    """sequential.enabled through the certify flow: groups stop early, the rows report the mean
    samples per image, a re-run resumes without sampling, recertify is refused."""
    from certseg.flows.certify_dataset import certify_dataset
    from certseg.flows.recertify import recertify

    root = tmp_path_factory.mktemp("seqflow")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    data = tiny_config_dict(models, root / "store.zarr", broken=True)
    data.update(n=30, alpha=0.5, tau=0.55)
    data["sampling"]["samples_per_chunk"] = 5
    data["sequential"] = {
        "enabled": True,
        "looks": [10, 20, 30],
        "alpha_weights": [1.0, 1.0, 1.0],
        "fraction_tolerance": 0.1,
    }
    config_file = write_config(root / "seq.yaml", data)
    first = certify_dataset(str(config_file), track=False)
    fixed_blocks = 4 * 2 * 2 * (1 + 6)  # images × σ × groups × (selection + estimation blocks)
    assert first["sampled_blocks"] < fixed_blocks
    per_image = [r["samples_per_image"] for r in first["rows"]]
    assert all(3 + 10 <= s <= 3 + 30 for s in per_image) and min(per_image) < 3 + 30
    second = certify_dataset(str(config_file), track=False)
    assert second["sampled_blocks"] == 0
    assert [r["samples_per_image"] for r in second["rows"]] == per_image
    with pytest.raises(ValueError, match="sampled sequentially"):
        recertify(str(root / "store.zarr"), alpha=0.2, track=False)
