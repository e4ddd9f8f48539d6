"""The Zarr sample store on S3 through fsspec, against a real moto S3 server on 127.0.0.1.

Checks, with the objects read independently through s3fs: the store is created from a template on
S3; region writes read back exactly; rewriting a region leaves every object byte-identical; a
different config_id is refused and nothing on S3 changes; and shards written concurrently by two
separate `dask worker` processes (one writer per chunk) all land.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from engine_jobs import block_maps, write_image

from certseg.storage import SampleStore, StoreMismatchError, StoreTemplate, sigma_key

if TYPE_CHECKING:
    from conftest import DaskCluster, S3Server

SIGMAS = (0.25,)


def _template(config_id: str = "c" * 64) -> StoreTemplate:
    """Four images of different sizes, one σ, one variant, n0=2, n=4 in blocks of 2."""
    return StoreTemplate(
        config_id=config_id,
        config_json="{}",
        code_version="engine-test",
        manifest_sha256="m" * 64,
        dataset_name="toy",
        image_ids=("a", "b", "c", "d"),
        image_shapes=((5, 7), (6, 4), (5, 5), (3, 8)),
        num_classes=3,
        class_names=("x", "y", "z"),
        ignore_index=255,
        sigmas=SIGMAS,
        variants=("plain",),
        variant_segmenters={"plain": {sigma_key(s): "seg" for s in SIGMAS}},
        groups={"none": ("plain",)},
        n0=2,
        n=4,
        samples_per_chunk=2,
    )


def _targets(template: StoreTemplate) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        rng.integers(0, template.num_classes, size=shape).astype(np.int32)
        for shape in template.image_shapes
    ]


def _s3fs(server: S3Server) -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)


def _snapshot(fs: Any, root: str) -> dict[str, str]:
    """sha256 of every object under s3://root, read straight from S3."""
    fs.invalidate_cache()
    return {key: hashlib.sha256(fs.cat_file(key)).hexdigest() for key in sorted(fs.find(root))}


def test_store_created_written_and_refused_on_s3(s3_server: S3Server) -> None:
    fs = _s3fs(s3_server)
    root = f"{s3_server.bucket}/stores/{uuid.uuid4().hex}.zarr"
    url = f"s3://{root}"
    template = _template()
    targets = _targets(template)

    store = SampleStore.create(url, template, targets, storage_options=s3_server.storage_options)
    keys = fs.find(root)
    assert f"{root}/zarr.json" in keys, keys[:5]
    assert any(k.startswith(f"{root}/targets/") for k in keys)

    # Region writes, read back from a freshly opened store.
    for image in range(4):
        write_image(url, s3_server.storage_options, image)
    reopened = SampleStore.open(
        url, storage_options=s3_server.storage_options, config_id=template.config_id
    )
    for image, shape in enumerate(template.image_shapes):
        np.testing.assert_array_equal(reopened.read_target(image), targets[image])
        for sigma in SIGMAS:
            for phase in ("selection", "estimation"):
                expected = np.concatenate(
                    [block_maps(image, sigma, phase, s, shape) for s, _ in reopened.blocks(phase)]
                )
                got = reopened.read_samples(sigma, "plain", phase, image)
                np.testing.assert_array_equal(got, expected)
                assert reopened.done_blocks(sigma, "none", phase, image).all()

    # Rewriting a region (a retried shard) gives byte-identical objects on S3.
    before = _snapshot(fs, root)
    shape = template.image_shapes[2]
    maps = block_maps(2, 0.25, "estimation", 2, shape)
    store.write_samples(0.25, "plain", "estimation", 2, 2, maps)
    assert _snapshot(fs, root) == before

    # A misaligned region is refused before anything is written.
    with pytest.raises(ValueError, match="misaligned"):
        store.write_samples(0.25, "plain", "estimation", 2, 1, maps)

    # Another config_id: refused with both ids and the URL named; nothing on S3 changes.
    other = _template(config_id="d" * 64)
    with pytest.raises(StoreMismatchError) as excinfo:
        SampleStore.create(url, other, _targets(other), storage_options=s3_server.storage_options)
    message = str(excinfo.value)
    assert template.config_id in message and other.config_id in message and url in message
    with pytest.raises(StoreMismatchError):
        SampleStore.open(url, storage_options=s3_server.storage_options, config_id=other.config_id)
    assert _snapshot(fs, root) == before


def test_shards_written_by_separate_dask_worker_processes(
    s3_server: S3Server, dask_cluster: DaskCluster
) -> None:
    from distributed import Client

    fs = _s3fs(s3_server)
    root = f"{s3_server.bucket}/stores/{uuid.uuid4().hex}.zarr"
    url = f"s3://{root}"
    template = _template()
    SampleStore.create(url, template, _targets(template), storage_options=s3_server.storage_options)

    # write_image lives in engine_jobs.py, which the Dask processes import (PYTHONPATH).
    with Client(dask_cluster.address, timeout=60) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == dask_cluster.n_workers
        futures = [
            client.submit(
                write_image,
                url,
                s3_server.storage_options,
                image,
                workers=[workers[image % len(workers)]],
                allow_other_workers=False,
                pure=False,
            )
            for image in range(4)
        ]
        results = client.gather(futures)
    assert sorted(image for image, _ in results) == [0, 1, 2, 3]
    writer_pids = {pid for _, pid in results}
    assert len(writer_pids) == 2 and os.getpid() not in writer_pids

    store = SampleStore.open(url, storage_options=s3_server.storage_options, read_only=True)
    for image, shape in enumerate(template.image_shapes):
        for sigma in SIGMAS:
            for phase in ("selection", "estimation"):
                expected = np.concatenate(
                    [block_maps(image, sigma, phase, s, shape) for s, _ in store.blocks(phase)]
                )
                np.testing.assert_array_equal(
                    store.read_samples(sigma, "plain", phase, image), expected
                )
                assert store.done_blocks(sigma, "none", phase, image).all()
    assert fs.exists(f"{root}/zarr.json")
