"""The Zarr sample store on S3 through fsspec, against a real moto S3 server on 127.0.0.1.

Checks, with the objects read independently through s3fs: the store is created from a template on
S3; region writes read back exactly; rewriting a region leaves every object byte-identical; a
different config_id is refused and nothing on S3 changes; a prefix holding objects that are not
certseg's is refused untouched; the creation lock's exclusive create is enforced by the server;
and shards written concurrently by two separate `dask worker` processes (one writer per chunk)
all land.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from certseg.storage import SampleStore, StoreMismatchError
from tests.engines.engine_jobs import (
    clean_prediction,
    sample_block,
    toy_targets,
    toy_template,
    write_image,
)

if TYPE_CHECKING:
    from tests.engines.engine_procs import DaskCluster, S3Server


def _s3fs(server: S3Server) -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)


def _snapshot(fs: Any, root: str) -> dict[str, str]:
    """sha256 of every object under s3://root, read straight from S3."""
    fs.invalidate_cache()
    return {key: hashlib.sha256(fs.cat_file(key)).hexdigest() for key in sorted(fs.find(root))}


def _assert_fully_written(store: SampleStore, targets: list[np.ndarray]) -> None:
    for image, target in enumerate(targets):
        np.testing.assert_array_equal(store.read_target(image), target)
        for sigma in store.sigmas:
            for phase in ("selection", "estimation"):
                expected = np.concatenate(
                    [
                        sample_block(target, image, sigma, phase, start, stop - start)
                        for start, stop in store.blocks(phase)
                    ]
                )
                got = store.read_samples(sigma, "plain", phase, image)
                np.testing.assert_array_equal(got, expected)
                assert store.done_blocks(sigma, "none", phase, image).all()
        clean = clean_prediction(target, image)
        np.testing.assert_array_equal(store.read_clean("seg", image), clean)


def test_store_created_written_and_refused_on_s3(s3_server: S3Server) -> None:
    fs = _s3fs(s3_server)
    root = f"{s3_server.bucket}/stores/{uuid.uuid4().hex}.zarr"
    url = f"s3://{root}"
    options = s3_server.storage_options
    template = toy_template()
    targets = toy_targets(template)

    store = SampleStore.create(url, template, targets, storage_options=options)
    keys = fs.find(root)
    assert f"{root}/zarr.json" in keys, keys[:5]
    assert any(k.startswith(f"{root}/targets/") for k in keys)

    # Region writes, read back through a freshly opened store.
    for image in range(len(targets)):
        write_image(url, options, image)
    reopened = SampleStore.open(url, storage_options=options, config_id=template.config_id)
    _assert_fully_written(reopened, targets)

    # Rewriting a region (a retried shard) gives byte-identical objects on S3.
    before = _snapshot(fs, root)
    maps = sample_block(targets[2], 2, 0.25, "estimation", 2, 2)
    store.write_samples(0.25, "plain", "estimation", 2, 2, maps)
    assert _snapshot(fs, root) == before
    # A misaligned region is refused before anything is written.
    with pytest.raises(ValueError, match="misaligned"):
        store.write_samples(0.25, "plain", "estimation", 2, 1, maps)

    # Another config_id: refused with both ids and the URL named; nothing on S3 changes.
    other = toy_template(config_id="d" * 64)
    with pytest.raises(StoreMismatchError) as excinfo:
        SampleStore.create(url, other, toy_targets(other), storage_options=options)
    message = str(excinfo.value)
    assert template.config_id in message and other.config_id in message and url in message
    with pytest.raises(StoreMismatchError):
        SampleStore.open(url, storage_options=options, config_id=other.config_id)
    assert _snapshot(fs, root) == before

    # The snapshot does detect a changed chunk (so the equalities above can fail).
    store.write_samples(0.25, "plain", "estimation", 2, 2, (maps + 1) % 3)
    assert _snapshot(fs, root) != before


def test_shards_written_by_separate_dask_worker_processes(
    s3_server: S3Server, dask_cluster: DaskCluster
) -> None:
    from distributed import Client

    root = f"{s3_server.bucket}/stores/{uuid.uuid4().hex}.zarr"
    url = f"s3://{root}"
    options = s3_server.storage_options
    template = toy_template()
    targets = toy_targets(template)
    SampleStore.create(url, template, targets, storage_options=options)

    # write_image lives in tests/engines/engine_jobs.py, which the Dask processes import
    # (the repository root is on their PYTHONPATH).
    with Client(dask_cluster.address, timeout=60) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == dask_cluster.n_workers
        futures = [
            client.submit(
                write_image,
                url,
                options,
                image,
                workers=[workers[image % len(workers)]],
                allow_other_workers=False,
                pure=False,
            )
            for image in range(len(targets))
        ]
        results = client.gather(futures)
    assert sorted(image for image, _ in results) == list(range(len(targets)))
    writer_pids = {pid for _, pid in results}
    assert len(writer_pids) == 2 and os.getpid() not in writer_pids

    store = SampleStore.open(url, storage_options=options, read_only=True)
    _assert_fully_written(store, targets)


def test_foreign_prefix_refused_and_lock_exclusive_on_s3(s3_server: S3Server) -> None:
    """A prefix holding objects that are not certseg's is refused with nothing changed; the
    creation lock's exclusive create is a conditional PUT the server enforces (one winner)."""
    from concurrent.futures import ThreadPoolExecutor

    from certseg.storage import LockPolicy, StoreError
    from certseg.storage.location import store_location
    from certseg.storage.lock import CreationLock

    fs = _s3fs(s3_server)
    options = s3_server.storage_options
    template = toy_template()
    root = f"{s3_server.bucket}/projects/{uuid.uuid4().hex}"
    fs.pipe_file(f"{root}/run.yaml", b"name: mine\n")
    fs.pipe_file(f"{root}/data/0001.png", bytes(range(256)))
    before = _snapshot(fs, root)
    with pytest.raises(StoreError, match="not a certseg store") as excinfo:
        SampleStore.create(f"s3://{root}", template, toy_targets(template), storage_options=options)
    assert f"s3://{root}" in str(excinfo.value) and "'run.yaml'" in str(excinfo.value)
    assert _snapshot(fs, root) == before
    # an object at the URL itself
    fs.pipe_file(f"{root}/one-object", b"x")
    with pytest.raises(StoreError, match="is a file"):
        SampleStore.create(
            f"s3://{root}/one-object", template, toy_targets(template), storage_options=options
        )
    assert fs.cat_file(f"{root}/one-object") == b"x"

    # eight threads try to create lock generation 1 of a fresh store at once: one wins
    location = store_location(f"s3://{s3_server.bucket}/{uuid.uuid4().hex}.zarr", options)
    with ThreadPoolExecutor(8) as pool:
        held = list(
            pool.map(
                lambda _: CreationLock.try_acquire(location, 1, template.config_id, LockPolicy()),
                range(8),
            )
        )
    assert sum(lock is not None for lock in held) == 1
    # and a second exclusive create of one object fails, its bytes untouched (If-None-Match: *)
    assert location.create_exclusive("probe", b"first")
    assert not location.create_exclusive("probe", b"second")
    assert location.read("probe") == b"first"
