"""Aggregation on a real `dask scheduler` (two `dask worker` processes) equals the local path.

The store is a directory both the test and the worker processes open by path (S3 is covered by
test_store_s3 and the flow test). Three runs must give identical tallies for every (σ, variant):
1. local, in-process synchronous scheduler, recounting from the stored samples, persisting nothing;
2. on the real scheduler, recounting on the workers and persisting the counts to the store;
3. local again, now reading the counts the workers persisted (a different code path).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certseg.aggregate import CertifyParams, aggregate_store, dask_client
from certseg.storage import SampleStore
from tests.engines.engine_jobs import toy_targets, toy_template, write_image

if TYPE_CHECKING:
    from tests.engines.engine_procs import DaskCluster

SIGMAS = (0.25, 0.5)


def _tallies(result: Any) -> dict[tuple[float, str], dict[str, Any]]:
    """Every merged summary as plain data, without the recount counter."""
    out = {}
    for key, summary in result.summaries.items():
        data = asdict(summary)
        data.pop("recounted")
        out[key] = data
    return out


def test_aggregation_on_dask_scheduler_matches_local(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    from distributed import get_task_stream

    url = str(tmp_path / "store.zarr")
    options: dict[str, Any] = {}
    template = toy_template(
        shapes=((6, 6), (5, 7), (7, 4), (4, 4), (6, 5), (3, 8)),
        sigmas=SIGMAS,
        n0=4,
        n=40,
        samples_per_chunk=20,
    )
    targets = toy_targets(template)
    SampleStore.create(url, template, targets, storage_options=options)
    for image in range(len(targets)):
        write_image(url, options, image)
    params = CertifyParams(n=40, alpha=0.05, tau=0.6, correction="holm")

    local = aggregate_store(url, params, storage_options=options, persist_counts=False)
    with dask_client(dask_cluster.address) as client:
        assert len(client.scheduler_info()["workers"]) == dask_cluster.n_workers
        with get_task_stream(client) as stream:
            remote = aggregate_store(url, params, storage_options=options, client=client)
        ran_on = {task["worker"] for task in stream.data}
        assert ran_on and ran_on <= set(client.scheduler_info()["workers"])
    reread = aggregate_store(url, params, storage_options=options, persist_counts=False)

    num_images = len(targets)
    for key in [(s, "plain") for s in SIGMAS]:
        assert local.get(*key).recounted == num_images
        assert remote.get(*key).recounted == num_images  # counted on the workers
        assert reread.get(*key).recounted == 0  # read what the workers persisted
    assert _tallies(remote) == _tallies(local)
    assert _tallies(reread) == _tallies(local)

    # Not a degenerate comparison: at each σ some pixels are certified and some abstain.
    for sigma in SIGMAS:
        metrics = local.get(sigma, "plain").certified.metrics()
        assert 0.0 < metrics.abstain_rate < 1.0 and metrics.accuracy > 0.0
    store = SampleStore.open(url, storage_options=options, read_only=True)
    assert all(store.counts_n(s, "plain", i) == params.n for s in SIGMAS for i in range(num_images))
