"""The certify-dataset flow on real engines on 127.0.0.1.

1. In-process flow run reporting to a standing `prefect server`, with the Zarr store on the moto
   S3 server (through s3fs, credentials only in storage_options), the sampling shards submitted
   to the real `dask scheduler` through prefect-dask's DaskTaskRunner (they run in the two
   `dask worker` processes, which report to the same server) and aggregation on that scheduler.
2. `prefect deploy` of prefect.yaml's `certseg-local` deployment on that server, a run of it with
   configs/tiny.yaml (shipped weights) picked up by `prefect worker start` on a process work pool
   (a subprocess of the worker), waited for until COMPLETED.

Test 1 uses the pipeline tests' stand-in models (tests/pipeline_fixtures.py: seeded tiny torch
modules and a tiny random diffusers UNet). Both check plumbing across engines, not accuracy.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.run.context import certify_context
from certseg.run.models import load_models
from certseg.run.prepare import prepare_store
from certseg.run.sample import Shard, sample_shard
from certseg.stats import ConfusionAccumulator
from certseg.storage import SampleStore
from tests.engines.engine_jobs import executed_count, task_prefixes
from tests.engines.engine_procs import (
    BIN,
    REPO_ROOT,
    flow_run_logs,
    prefect_api,
    prefect_client_of,
    run_cli,
    standin_models,
    tiny_flow_config,
    wait_for_flow_run,
)

if TYPE_CHECKING:
    from tests.engines.engine_procs import DaskCluster, PrefectServer, PrefectWorker, S3Server

RUN_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in models on disk (shared by every test of the module, and by the worker)."""
    return standin_models(tmp_path_factory.mktemp("standin-models"))


def test_certify_flow_with_s3_store_and_dask_scheduler(
    prefect_server: PrefectServer,
    s3_server: S3Server,
    dask_cluster: DaskCluster,
    models: Path,
    tmp_path: Path,
) -> None:
    import s3fs
    from distributed import Client

    from certseg.flows.certify_on_dask import certify_dataset_on_dask

    config_file = tiny_flow_config(models, tmp_path)
    store_url = s3_server.url(f"flow/{uuid.uuid4().hex}.zarr")
    options = s3_server.storage_options
    with Client(dask_cluster.address, timeout=60) as client:
        before = sum(client.run(executed_count).values())
    with prefect_client_of(prefect_server):
        # certify-dataset-on-dask (the certseg-cluster deployment's flow) runs certify-dataset
        # with prefect-dask's DaskTaskRunner on dask_address.
        outcome = certify_dataset_on_dask(
            str(config_file),
            dask_address=dask_cluster.address,
            store_url=store_url,
            storage_options=options,
            out_dir=str(tmp_path / "results"),
            track=False,  # MLflow is exercised by the deployment test below
        )
    with Client(dask_cluster.address, timeout=60) as client:
        after = sum(client.run(executed_count).values())
        prefixes = client.run_on_scheduler(task_prefixes)
    assert after > before, "no task ran on the Dask cluster"
    assert "sample_shard_task" in prefixes, prefixes  # Prefect's shards ran as Dask tasks
    # The sampling shards ran as Prefect task runs, reported to the standing server.
    query = {"task_runs": {"name": {"like_": "sample-shard"}}}
    shard_runs = prefect_api(prefect_server, "POST", "/task_runs/filter", query)
    assert len(shard_runs) >= 2
    assert all(r["state"]["type"] == "COMPLETED" for r in shard_runs)

    # The store is on the S3 server, complete, under the run's config_id.
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    assert fs.exists(store_url.removeprefix("s3://") + "/zarr.json")
    store = SampleStore.open(store_url, storage_options=options, config_id=outcome["config_id"])
    assert outcome["store_url"] == store_url
    assert outcome["sampled_blocks"] > 0 and outcome["skipped_blocks"] == 0
    for sigma in store.sigmas:
        for group in store.groups:
            for phase in ("selection", "estimation"):
                for image in range(store.num_images):
                    assert store.done_blocks(sigma, group, phase, image).all()

    # The flow's numbers equal an in-process aggregation of the same S3 store.
    rows = outcome["rows"]
    assert len(rows) == len(store.sigmas) * len(store.variants)
    local = aggregate_store(
        store_url,
        CertifyParams(n=store.n, alpha=rows[0]["alpha"], tau=rows[0]["tau"]),
        storage_options=options,
        persist_counts=False,
    )
    for row in rows:
        summary = local.get(row["sigma"], row["variant"])
        assert summary.recounted == 0  # counts persisted to S3 by the Dask workers
        metrics = ConfusionAccumulator.from_dict(summary.certified).metrics()
        assert _same(row["certified_accuracy"], metrics.accuracy)
        assert _same(row["abstain_rate"], metrics.abstain_rate)
        assert row["num_images"] == store.num_images
    assert (tmp_path / "results" / "results.parquet").is_file()

    # Two Dask worker processes sampled exactly what one local process samples alone.
    alone_url = str(tmp_path / "alone.zarr")
    alone_ctx = certify_context(str(config_file), store_url=alone_url, track=False)
    alone_models = load_models(alone_ctx)
    prepare_store(alone_ctx, alone_models)
    sample_shard(alone_ctx, Shard(0, 0, store.num_images), models=alone_models)
    alone = SampleStore.open(alone_url, read_only=True)
    for sigma in store.sigmas:
        for variant in store.variants:
            for phase in ("selection", "estimation"):
                for image in range(store.num_images):
                    assert np.array_equal(
                        store.read_samples(sigma, variant, phase, image),
                        alone.read_samples(sigma, variant, phase, image),
                    ), (sigma, variant, phase, image)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _mlflow_runs(tracking_uri: str) -> list[str]:
    """Run ids of every run in the tracking store (read with MLflow's own client)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    return [run.info.run_id for run in runs]


def test_deployment_run_by_process_worker(prefect_worker: PrefectWorker, tmp_path: Path) -> None:
    server = prefect_worker.server
    run_cli(
        [
            str(BIN / "prefect"),
            "--no-prompt",
            "deploy",
            "--name",
            "certseg-local",
            "--prefect-file",
            str(REPO_ROOT / "prefect.yaml"),
        ],
        server.env,
        timeout=180.0,
        cwd=REPO_ROOT,
    )
    deployment = prefect_api(server, "GET", "/deployments/name/certify-dataset/certseg-local")
    assert deployment["work_pool_name"] == prefect_worker.pool
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $CERTSEG_ROOT }}"}}
    ]

    # configs/tiny.yaml with the shipped weights, both by paths relative to the checkout: they
    # resolve only if the pull step changed into CERTSEG_ROOT. Outputs go to tmp_path.
    parameters = {
        "config": "configs/tiny.yaml",
        "store_url": str(tmp_path / "store.zarr"),
        "tracking_uri": f"sqlite:///{tmp_path}/ml.db",
        "out_dir": str(tmp_path / "results"),
    }
    flow_run = prefect_api(
        server,
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        {"parameters": parameters},
    )
    run = wait_for_flow_run(server, flow_run["id"], RUN_TIMEOUT_S)
    state = (run.get("state") or {}).get("type")
    if state != "COMPLETED":
        logs = flow_run_logs(server, run["id"])
        pytest.fail(f"flow run ended in {state} (or timed out); last logs:\n{logs}")

    # It ran in a subprocess of the worker, in the checkout (pull step), with our parameters.
    assert run["work_queue_name"] == "default"
    assert run["infrastructure_pid"] and run["infrastructure_pid"] != str(os.getpid())
    store = SampleStore.open(parameters["store_url"])
    assert all(
        store.done_blocks(sigma, group, "estimation", image).all()
        for sigma in store.sigmas
        for group in store.groups
        for image in range(store.num_images)
    )
    assert (tmp_path / "results" / "results.csv").is_file()
    # ... and logged its lineage to the MLflow store named by tracking_uri.
    from certseg.tracking import read_run

    runs = _mlflow_runs(parameters["tracking_uri"])
    assert len(runs) == 1
    logged = read_run(runs[0], tracking_uri=parameters["tracking_uri"])
    assert logged.tags["config_id"] == store.config_id
    assert "results.parquet" in logged.artifacts
