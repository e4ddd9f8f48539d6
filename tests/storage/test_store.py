"""The sample store: frozen layout, region writes, idempotence, config mismatch, resume flags."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from certseg.storage import (
    LAYOUT_VERSION,
    SampleStore,
    StoreError,
    StoreMismatchError,
    StoreTemplate,
    sigma_key,
)
from certseg.storage.layout import (
    DEFAULT_CHUNK_BYTES,
    UINT8_CLASSES,
    class_map_dtype,
    sample_chunking,
)
from certseg.storage.store import StoreLayoutError


def _template(config_id: str = "a" * 64, **overrides: object) -> StoreTemplate:
    fields: dict[str, object] = {
        "config_id": config_id,
        "config_json": "{}",
        "code_version": "test",
        "manifest_sha256": "m" * 64,
        "dataset_name": "toy",
        "image_ids": ("img-a", "img-b", "img-c"),
        "image_shapes": ((6, 8), (8, 5), (7, 7)),
        "num_classes": 4,
        "class_names": ("a", "b", "c", "d"),
        "ignore_index": 255,
        "sigmas": (0.25, 0.5),
        "variants": ("plain", "den"),
        "variant_segmenters": {
            "plain": {sigma_key(0.25): "s1", sigma_key(0.5): "s1"},
            "den": {sigma_key(0.25): "s1", sigma_key(0.5): "s2"},
        },
        "groups": {"none": ("plain",), "ddpm": ("den",)},
        "n0": 3,
        "n": 10,
        "samples_per_chunk": 4,
        "health_ids": ("h0", "h1"),
    }
    fields.update(overrides)
    return StoreTemplate(**fields)  # type: ignore[arg-type]


def _targets(template: StoreTemplate) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for h, w in template.image_shapes:
        target = rng.integers(0, template.num_classes, size=(h, w)).astype(np.int32)
        target[0, 0] = template.ignore_index
        out.append(target)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> SampleStore:
    template = _template()
    return SampleStore.create(str(tmp_path / "s.zarr"), template, _targets(template))


def test_layout_is_frozen(store: SampleStore) -> None:
    group = store.group
    arrays: dict[str, object] = {}

    def walk(g: object, prefix: str = "") -> None:
        for name, member in g.members():  # type: ignore[attr-defined]
            path = f"{prefix}{name}"
            if hasattr(member, "shape"):
                arrays[path] = member
            else:
                walk(member, path + "/")

    walk(group)
    expected = {
        "image_shape": ((3, 2), (3, 2), "int32", ("image", "axis")),
        "targets": ((3, 8, 8), (1, 8, 8), "int32", ("image", "y", "x")),
        "samples/sigma_0.25/plain/selection": (
            (3, 3, 8, 8),
            (1, 3, 8, 8),
            "uint8",
            ("image", "sample", "y", "x"),
        ),
        "samples/sigma_0.25/plain/estimation": (
            (3, 10, 8, 8),
            (1, 4, 8, 8),
            "uint8",
            ("image", "sample", "y", "x"),
        ),
        "done/sigma_0.25/none/estimation": ((3, 3), (1, 1), "uint8", ("image", "block")),
        "done/sigma_0.5/ddpm/selection": ((3, 1), (1, 1), "uint8", ("image", "block")),
        "clean/s2": ((3, 8, 8), (1, 8, 8), "uint8", ("image", "y", "x")),
        "done/clean/s1": ((3,), (1,), "uint8", ("image",)),
        "counts/sigma_0.5/den/k": ((3, 8, 8), (1, 8, 8), "int32", ("image", "y", "x")),
        "counts/sigma_0.5/den/labels_selected": (
            (3, 8, 8),
            (1, 8, 8),
            "int32",
            ("image", "y", "x"),
        ),
        "counts/sigma_0.5/den/labels_smoothed": (
            (3, 8, 8),
            (1, 8, 8),
            "int32",
            ("image", "y", "x"),
        ),
        "counts/sigma_0.5/den/n": ((3,), (1,), "int32", ("image",)),
        "health/sigma_0.25/plain": ((2, 2), (1, 2), "int64", ("health_image", "field")),
    }
    for path, (shape, chunks, dtype, dims) in expected.items():
        array: Any = arrays[path]
        assert array.shape == shape, path
        assert array.chunks == chunks, path
        assert str(array.dtype) == dtype, path
        assert tuple(array.metadata.dimension_names) == dims, path
    # 2 sigmas × 2 variants × (2 phases + 4 counts + 1 health) + 2 × 2 groups × 2 phases
    # + 2 clean segmenters × 2 + image_shape + targets
    assert len(arrays) == 2 * 2 * 7 + 2 * 2 * 2 + 2 * 2 + 2
    attrs = dict(group.attrs)
    for key in (
        "layout_version",
        "config_id",
        "config",
        "code_version",
        "dataset_manifest_sha256",
        "image_ids",
        "num_classes",
        "sigmas",
        "variants",
        "groups",
        "n0",
        "n",
        "samples_per_chunk",
        "chunk_rows",
        "chunk_bytes",
        "template_complete",
    ):
        assert key in attrs, key
    assert attrs["layout_version"] == LAYOUT_VERSION == 2
    assert (attrs["samples_per_chunk"], attrs["chunk_rows"], attrs["chunk_bytes"]) == (4, 8, None)
    assert attrs["image_ids"] == ["img-a", "img-b", "img-c"]


def test_targets_padded_with_ignore_and_cropped_on_read(store: SampleStore) -> None:
    template = _template()
    targets = _targets(template)
    for i, target in enumerate(targets):
        np.testing.assert_array_equal(store.read_target(i), target)
    raw = np.asarray(store.group["targets"][1])
    assert (raw[:, 5:] == 255).all()
    assert store.image_shapes.tolist() == [[6, 8], [8, 5], [7, 7]]


def test_region_write_idempotent_bytes_and_roundtrip(store: SampleStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    maps = rng.integers(0, 4, size=(4, 8, 5)).astype(np.uint8)
    store.write_samples(0.25, "plain", "estimation", 1, 4, maps)
    chunk = tmp_path / "s.zarr" / "samples" / "sigma_0.25" / "plain" / "estimation" / "c"
    chunk = chunk / "1" / "1" / "0" / "0"
    first = chunk.read_bytes()
    store.write_samples(0.25, "plain", "estimation", 1, 4, maps)
    assert chunk.read_bytes() == first
    np.testing.assert_array_equal(store.read_samples(0.25, "plain", "estimation", 1, 4, 8), maps)
    # the last block is short (10 = 4 + 4 + 2)
    tail = rng.integers(0, 4, size=(2, 8, 5)).astype(np.uint8)
    store.write_samples(0.25, "plain", "estimation", 1, 8, tail)
    np.testing.assert_array_equal(store.read_samples(0.25, "plain", "estimation", 1, 8), tail)
    # neighbours untouched
    assert not store.read_samples(0.25, "plain", "estimation", 0).any()
    assert not store.read_samples(0.25, "plain", "estimation", 1, 0, 4).any()


@pytest.mark.parametrize(("start", "count"), [(2, 4), (0, 3), (4, 6), (8, 4), (12, 2)])
def test_misaligned_region_raises(store: SampleStore, start: int, count: int) -> None:
    maps = np.zeros((count, 6, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="misaligned region"):
        store.write_samples(0.25, "plain", "estimation", 0, start, maps)


def test_write_validates_shape_and_classes(store: SampleStore) -> None:
    with pytest.raises(ValueError, match=r"\(H, W\) = \(6, 8\)"):
        store.write_samples(0.25, "plain", "selection", 0, 0, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="class indices"):
        store.write_samples(0.25, "plain", "selection", 0, 0, np.full((3, 6, 8), 4, np.uint8))
    with pytest.raises(ValueError, match="variant"):
        store.write_samples(0.25, "nope", "selection", 0, 0, np.zeros((3, 6, 8), np.uint8))


def test_flags_clean_counts_health(store: SampleStore) -> None:
    assert not store.done_blocks(0.5, "ddpm", "estimation", 2).any()
    store.mark_done(0.5, "ddpm", "estimation", 2, 1)
    assert store.done_blocks(0.5, "ddpm", "estimation", 2).tolist() == [False, True, False]
    assert not store.done_blocks(0.5, "ddpm", "estimation", 1).any()
    assert not store.clean_done("s1", 0)
    store.write_clean("s1", 0, np.full((6, 8), 3))
    assert store.clean_done("s1", 0)
    assert (store.read_clean("s1", 0) == 3).all()
    k = np.arange(49).reshape(7, 7) % 11
    store.write_counts(0.25, "den", 2, labels_selected=k % 4, k=k, labels_smoothed=k % 3, n=10)
    assert store.counts_n(0.25, "den", 2) == 10
    assert store.counts_n(0.25, "den", 1) == 0
    np.testing.assert_array_equal(store.read_counts(0.25, "den", 2)["k"], k)
    assert (store.read_health(0.5, "den") == -1).all()
    store.write_health(0.5, "den", 1, correct=5, valid=9)
    assert store.read_health(0.5, "den").tolist() == [[-1, -1], [5, 9]]


def test_config_mismatch_refused_and_store_untouched(store: SampleStore, tmp_path: Path) -> None:
    store.write_samples(0.25, "plain", "selection", 0, 0, np.ones((3, 6, 8), np.uint8))
    root = tmp_path / "s.zarr"
    before = _digest(root)
    other = _template("b" * 64)
    with pytest.raises(StoreMismatchError) as info:
        SampleStore.create(str(root), other, _targets(other))
    message = str(info.value)
    assert "a" * 64 in message and "b" * 64 in message and str(root) in message
    with pytest.raises(StoreMismatchError):
        SampleStore.open(str(root), config_id="b" * 64)
    assert _digest(root) == before


def test_same_config_reopens_without_rewriting(store: SampleStore, tmp_path: Path) -> None:
    store.write_samples(0.25, "plain", "selection", 0, 0, np.ones((3, 6, 8), np.uint8))
    store.mark_done(0.25, "none", "selection", 0, 0)
    root = tmp_path / "s.zarr"
    before = _digest(root)
    template = _template()
    again = SampleStore.create(str(root), template, iter(()))  # targets not read on resume
    assert again.done_blocks(0.25, "none", "selection", 0).tolist() == [True]
    assert _digest(root) == before


def test_not_a_certseg_store_and_missing(tmp_path: Path) -> None:
    import zarr

    zarr.create_group(str(tmp_path / "foreign.zarr"), attributes={"x": 1})
    template = _template()
    with pytest.raises(StoreError, match="not a certseg store"):
        SampleStore.create(str(tmp_path / "foreign.zarr"), template, _targets(template))
    with pytest.raises(StoreError, match="no sample store"):
        SampleStore.open(str(tmp_path / "missing.zarr"))


def test_incomplete_creation_is_redone(tmp_path: Path) -> None:
    import zarr

    template = _template()
    url = str(tmp_path / "s.zarr")
    zarr.create_group(url, attributes=template.root_attrs())  # crashed before template_complete
    with pytest.raises(StoreError, match="not completely created"):
        SampleStore.open(url)
    store = SampleStore.create(url, template, _targets(template))
    assert store.read_target(0).shape == (6, 8)


def test_fsspec_memory_url() -> None:
    template = _template()
    store = SampleStore.create("memory://certseg-test/s.zarr", template, _targets(template))
    maps = np.full((3, 6, 8), 2, np.uint8)
    store.write_samples(0.5, "den", "selection", 0, 0, maps)
    reopened = SampleStore.open("memory://certseg-test/s.zarr", read_only=True)
    np.testing.assert_array_equal(reopened.read_samples(0.5, "den", "selection", 0), maps)


def test_concurrent_writers_of_different_chunks_lose_nothing(store: SampleStore) -> None:
    """Shards write whole chunks of their own images; threads writing at once keep every byte."""
    from concurrent.futures import ThreadPoolExecutor

    shapes = [(6, 8), (8, 5), (7, 7)]

    def write(image: int) -> None:
        h, w = shapes[image]
        for start, stop in store.blocks("estimation"):
            maps = np.full((stop - start, h, w), (image + start) % 4, dtype=np.uint8)
            store.write_samples(0.5, "den", "estimation", image, start, maps)
            store.mark_done(0.5, "ddpm", "estimation", image, start // 4)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(write, range(3)))
    reopened = SampleStore.open(store.url, read_only=True)
    for image, (h, w) in enumerate(shapes):
        assert reopened.done_blocks(0.5, "ddpm", "estimation", image).all()
        for start, stop in reopened.blocks("estimation"):
            maps = reopened.read_samples(0.5, "den", "estimation", image, start, stop)
            assert (maps == (image + start) % 4).all() and maps.shape == (stop - start, h, w)


def test_concurrent_flags_of_one_image_are_all_kept(store: SampleStore) -> None:
    """Two runs of one config sampling the same image at once (the same samples, written twice)
    flag different blocks at the same moment: every flag must survive (one chunk per flag).
    With one flags chunk per image, read-modify-write lost flags here."""
    import threading

    blocks = len(store.blocks("estimation"))
    flags: Any = store.group["done/sigma_0.25/none/estimation"]
    lost = 0
    for _ in range(30):
        flags[...] = 0
        barrier = threading.Barrier(blocks * store.num_images)

        def flag(image: int, block: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            store.mark_done(0.25, "none", "estimation", image, block)

        threads = [
            threading.Thread(target=flag, args=(image, block))
            for image in range(store.num_images)
            for block in range(blocks)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lost += int((np.asarray(flags[...]) == 0).sum())
    assert lost == 0
    with pytest.raises(ValueError, match="block must be in"):
        store.mark_done(0.25, "none", "estimation", 0, blocks)


@pytest.mark.parametrize(
    ("num_classes", "dtype"),
    [(1, "uint8"), (UINT8_CLASSES, "uint8"), (UINT8_CLASSES + 1, "uint16"), (65536, "uint16")],
)
def test_class_map_dtype_cut_off(num_classes: int, dtype: str) -> None:
    """uint8 holds class indices 0..255, so 256 classes are uint8 and 257 are uint16."""
    assert UINT8_CLASSES == 256
    assert class_map_dtype(num_classes) == dtype
    assert _template(num_classes=num_classes).class_dtype == dtype
    with pytest.raises(ValueError, match="uint16"):
        class_map_dtype(65537)
    with pytest.raises(ValueError, match=">= 1"):
        class_map_dtype(0)


@pytest.mark.parametrize("num_classes", [256, 257])
def test_the_highest_class_index_round_trips_at_the_cut_off(
    tmp_path: Path, num_classes: int
) -> None:
    template = _template(num_classes=num_classes)
    store = SampleStore.create(str(tmp_path / "s.zarr"), template, _targets(template))
    array = store.group[store.samples_path(0.25, "plain", "selection")]
    assert array.dtype == np.dtype(class_map_dtype(num_classes))
    maps = np.full((3, 6, 8), num_classes - 1, dtype=np.dtype(class_map_dtype(num_classes)))
    maps[0, 0, 0] = 0
    store.write_samples(0.25, "plain", "selection", 0, 0, maps)
    np.testing.assert_array_equal(store.read_samples(0.25, "plain", "selection", 0), maps)


def test_a_store_refuses_samples_of_another_precision(tmp_path: Path) -> None:
    """sampling.bf16: auto resolves per machine: a store sampled in bf16 must not be resumed in
    fp32 (nor the reverse); a store that recorded no precision accepts either."""
    from certseg.storage.store import check_sampling_precision

    url = str(tmp_path / "s.zarr")
    bf16 = _template(sampling_precision="bf16")
    store = SampleStore.create(url, bf16, _targets(bf16))
    assert store.attrs["sampling_precision"] == "bf16"
    SampleStore.create(url, bf16, _targets(bf16))  # the same precision resumes
    fp32 = _template(sampling_precision="fp32")
    with pytest.raises(StoreMismatchError, match="sampled in bf16, but this run samples in fp32"):
        SampleStore.create(url, fp32, _targets(fp32))
    assert SampleStore.open(url).attrs["sampling_precision"] == "bf16"  # untouched
    with pytest.raises(StoreMismatchError, match=r"set sampling\.bf16 to true"):
        check_sampling_precision(url, store.attrs, "fp32")
    check_sampling_precision(url, {}, "fp32")  # older stores did not record it
    check_sampling_precision(url, store.attrs, "bf16")


def test_a_store_refuses_samples_of_another_noise_stream(tmp_path: Path) -> None:
    """The same noise key draws other noise on the CPU and on a GPU kind: a store holds one."""
    from certseg.storage.store import check_noise_stream

    url = str(tmp_path / "s.zarr")
    cpu = _template(noise_stream="torch-cpu")
    store = SampleStore.create(url, cpu, _targets(cpu))
    gpu = _template(noise_stream="torch-cuda-philox/sm132x2048")
    with pytest.raises(StoreMismatchError, match="drawn on the torch-cpu stream"):
        SampleStore.create(url, gpu, _targets(gpu))
    check_noise_stream(url, store.attrs, "torch-cpu")
    check_noise_stream(url, {}, "torch-cpu")  # older stores: drawn on the CPU
    with pytest.raises(StoreMismatchError):
        check_noise_stream(url, {}, "torch-cuda-philox/sm132x2048")


def _spec(template: StoreTemplate, path: str) -> Any:
    return next(spec for spec in template.array_specs() if spec.path == path)


def test_chunks_from_the_frame_size_and_the_target() -> None:
    """Default (samples_per_chunk None): as many whole maps as fit 8 MiB; at 1024×2048 uint8
    (2 MiB a map) that is 4, at 64×64 the whole phase; a uint16 map above the target is split
    into row bands (one map per chunk); an explicit samples_per_chunk keeps whole maps."""
    city = _template(
        image_ids=("a",),
        image_shapes=((1024, 2048),),
        samples_per_chunk=None,
        n0=10,
        n=100,
        health_ids=(),
    )
    assert city.chunk_bytes == DEFAULT_CHUNK_BYTES == 8 * 2**20
    assert city.chunking == (4, 1024)
    assert _spec(city, "samples/sigma_0.25/plain/estimation").chunks == (1, 4, 1024, 2048)
    assert _spec(city, "samples/sigma_0.25/plain/selection").chunks == (1, 4, 1024, 2048)
    assert (city.num_blocks("selection"), city.num_blocks("estimation")) == (3, 25)
    assert _spec(city, "done/sigma_0.25/none/estimation").shape == (1, 25)
    attrs = city.root_attrs()
    assert (attrs["samples_per_chunk"], attrs["chunk_rows"]) == (4, 1024)
    assert attrs["chunk_bytes"] == DEFAULT_CHUNK_BYTES
    small = _template(samples_per_chunk=None, n=100)
    assert small.block_size("estimation") == 100  # 8x8 maps: the whole phase in one chunk
    wide = _template(
        image_ids=("a",),
        image_shapes=((3000, 4000),),
        samples_per_chunk=None,
        num_classes=300,
        class_names=tuple(str(i) for i in range(300)),
        health_ids=(),
    )
    chunks = _spec(wide, "samples/sigma_0.25/plain/estimation").chunks
    assert chunks == (1, 1, DEFAULT_CHUNK_BYTES // (4000 * 2), 4000)
    assert chunks[2] * chunks[3] * 2 <= DEFAULT_CHUNK_BYTES
    explicit = _template(image_ids=("a",), image_shapes=((1024, 2048),), health_ids=())
    assert _spec(explicit, "samples/sigma_0.25/plain/estimation").chunks == (1, 4, 1024, 2048)
    assert explicit.root_attrs()["chunk_bytes"] is None
    assert sample_chunking((4, 4), 1, 10) == (1, 2)
    assert sample_chunking((4, 4), 1, 1) == (1, 1)
    with pytest.raises(ValueError, match="chunk_bytes"):
        sample_chunking((4, 4), 1, 0)


def test_row_banded_chunks_round_trip(tmp_path: Path) -> None:
    """Maps split into row bands: a block write covers whole chunks of every band and reads
    back; an unpadded image is written without the padded copy."""
    template = _template(samples_per_chunk=None, chunk_bytes=3 * 8, n0=2, n=5, health_ids=())
    assert template.chunking == (1, 3)
    store = SampleStore.create(str(tmp_path / "b.zarr"), template, _targets(template))
    assert store.group["samples/sigma_0.5/den/estimation"].chunks == (1, 1, 3, 8)
    rng = np.random.default_rng(1)
    for image, (h, w) in enumerate(template.image_shapes):
        for start in range(5):
            maps = rng.integers(0, 4, size=(1, h, w)).astype(np.uint8)
            store.write_samples(0.5, "den", "estimation", image, start, maps)
            back = store.read_samples(0.5, "den", "estimation", image, start, start + 1)
            np.testing.assert_array_equal(back, maps)
    with pytest.raises(ValueError, match="misaligned"):
        store.write_samples(0.5, "den", "estimation", 0, 0, np.zeros((2, 6, 8), np.uint8))


@pytest.mark.parametrize("found", [1, None])
def test_a_store_of_another_layout_version_is_refused(tmp_path: Path, found: object) -> None:
    """A layout-1 store (or one without a version) is refused by open and by create (before the
    config check: the version is what to act on), naming the store, both versions and what to
    do; nothing is changed."""
    import zarr

    template = _template()
    url = str(tmp_path / "old.zarr")
    SampleStore.create(url, template, _targets(template))
    group = zarr.open_group(url, mode="r+")
    if found is None:
        # a group without layout_version is not a certseg store at all for create
        attrs = dict(group.attrs)
        del attrs["layout_version"]
        group.attrs.clear()
        group.attrs.update(attrs)
    else:
        group.attrs["layout_version"] = found
    before = _digest(tmp_path / "old.zarr")
    with pytest.raises(StoreLayoutError) as info:
        SampleStore.open(url)
    message = str(info.value)
    assert url in message and f"layout_version {found!r}" in message
    assert f"layout_version {LAYOUT_VERSION}" in message and "new store URL" in message
    if found is not None:
        for config_id in ("a" * 64, "b" * 64):
            other = _template(config_id)
            with pytest.raises(StoreLayoutError, match="layout_version 1"):
                SampleStore.create(url, other, _targets(other))
    assert _digest(tmp_path / "old.zarr") == before
