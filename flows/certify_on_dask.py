"""certify-dataset-on-dask: certify-dataset with its sampling shards on a Dask cluster.

Prefect entrypoint `flows/certify_on_dask.py:certify_dataset_on_dask` (the certseg-cluster
deployment). The task runner is chosen here, by this flow, for the certify-dataset run it starts
(`certify_dataset.with_options(task_runner=DaskTaskRunner(address))`): certify-dataset itself
never changes runners. The Dask workers must import certseg and reach this run's Prefect API (a
standing server) and the store.
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner

from certseg.flows.certify_dataset import certify_dataset


@flow(name="certify-dataset-on-dask", log_prints=True)
def certify_dataset_on_dask(
    config: str | dict[str, Any],
    dask_address: str,
    store_url: str | None = None,
    storage_options: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    shards: int | None = None,
    out_dir: str | None = None,
    base_dir: str | None = None,
    skip_invalid: bool = False,
    track: bool = True,
) -> dict[str, Any]:
    """certify-dataset (same parameters and result) with its shards submitted as Dask tasks to
    the scheduler at dask_address, which also runs the aggregation."""
    from prefect_dask.task_runners import DaskTaskRunner

    if not dask_address:
        raise ValueError(
            "dask_address: needs a Dask scheduler address (tcp://host:8786); without one, "
            "run certify-dataset"
        )
    runner = cast("TaskRunner[PrefectFuture[Any]]", DaskTaskRunner(address=dask_address))
    on_cluster: Any = certify_dataset.with_options(task_runner=runner)
    result: dict[str, Any] = on_cluster(
        config,
        store_url=store_url,
        storage_options=storage_options,
        dask_address=dask_address,
        tracking_uri=tracking_uri,
        shards=shards,
        out_dir=out_dir,
        base_dir=base_dir,
        skip_invalid=skip_invalid,
        track=track,
    )
    return result
