"""certseg.run.resources: the threads rule (cores split between concurrent shards, never
oversubscribed) and where it runs."""

from __future__ import annotations

import pytest

from certseg.run.resources import available_cores, on_dask_worker, resolve_parallelism


def test_threads_split_the_cores_between_concurrent_shards() -> None:
    one = resolve_parallelism(workers=1, threads=None, shards=4, cores=8)
    assert (one.workers, one.threads, one.rule) == (1, 8, "cores//workers")
    four = resolve_parallelism(workers=4, threads=None, shards=4, cores=8)
    assert (four.workers, four.threads) == (4, 2)
    odd = resolve_parallelism(workers=3, threads=None, shards=3, cores=8)
    assert odd.threads == 2 and odd.workers * odd.threads <= 8  # never oversubscribed
    capped = resolve_parallelism(workers=4, threads=None, shards=2, cores=8)
    assert (capped.workers, capped.threads) == (2, 4)  # no idle worker holds threads back
    chosen = resolve_parallelism(workers=2, threads=3, shards=2, cores=2)
    assert (chosen.threads, chosen.rule) == (3, "config")
    assert one.params() == {
        "resolved.sampling.workers": "1",
        "resolved.sampling.threads": "8",
        "resolved.sampling.cores": "8",
        "resolved.sampling.threads_rule": "cores//workers",
    }


def test_more_workers_than_cores_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"sampling\.workers: 3 concurrent shards on 2 cores"):
        resolve_parallelism(workers=3, threads=None, shards=4, cores=2)
    with pytest.raises(ValueError, match=r"sampling\.workers"):
        resolve_parallelism(workers=0, threads=None, shards=1, cores=2)


def test_cores_and_worker_detection_here() -> None:
    assert available_cores() >= 1
    assert not on_dask_worker()
