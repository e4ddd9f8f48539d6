"""Open or create the Zarr sample store and read/write it in chunk-aligned regions.

One process creates the store (`SampleStore.create`) from a `StoreTemplate`, with every array at
full size and the targets written, before any shard runs; the root attribute `template_complete`
is set last. Afterwards writers only fill regions: one image × one sample block per write, which
is exactly one chunk, so concurrent shards never share a chunk. A completion flag is written after
the data by the same owner, so a crash leaves the block unflagged and it is redone on resume.

Creation writes only where certseg owns the URL and holds the creation lock
(certseg.storage.ownership): concurrent creators end with one store, created once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from certseg.redact import redact_url
from certseg.storage.layout import (
    LAYOUT_VERSION,
    PHASES_STORED,
    StoreTemplate,
    sigma_key,
)
from certseg.storage.location import LocalLocation, StoreLocation, store_location
from certseg.storage.lock import CreationLock, LockPolicy, LockWaitError, LockWatcher
from certseg.storage.ownership import (
    StoreState,
    describe_entries,
    is_lock_name,
    read_store_state,
)


class StoreError(ValueError):
    """The store is missing, incomplete or not a certseg store; the message names its URL."""


class StoreMismatchError(StoreError):
    """The store was written under another config_id; nothing is overwritten."""


class StoreLayoutError(StoreError):
    """The store was written in another layout version than this code reads and writes."""


def check_layout_version(url: str, attrs: Mapping[str, Any]) -> None:
    """StoreLayoutError unless the store's layout_version is LAYOUT_VERSION; the message names
    the store, the version found and the one expected, and what to do."""
    found = attrs.get("layout_version")
    if found != LAYOUT_VERSION:
        raise StoreLayoutError(
            f"store {redact_url(url)!r} has layout_version {found!r}, but this certseg reads "
            f"and writes layout_version {LAYOUT_VERSION} (docs/storage.md): sample into a new "
            "store URL (the samples are the same: the noise is keyed per sample), or read this "
            "store with the certseg version that wrote it (its code_version attribute); "
            "nothing was changed"
        )


class StoreLockedError(StoreError):
    """Another creator holds the store's creation lock and waiting for it ended without a store."""


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _process_lock(location: StoreLocation) -> Iterator[None]:
    """Serialize creators of one location inside this process (threads; memory:// stores, whose
    exclusive create is not atomic across threads). Processes use the creation lock."""
    key = os.path.abspath(location.path) if isinstance(location, LocalLocation) else location.url
    with _PROCESS_LOCKS_GUARD:
        lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
    with lock:
        yield


def _check_ownership(url: str, location: StoreLocation, state: StoreState, config_id: str) -> None:
    """Raise unless certseg may write at the location for config_id (see SampleStore.create)."""
    where = location.where
    if state.kind == "file":
        raise StoreError(
            f"store {where} {state.reason}; certseg creates a store only in a new or "
            "empty folder and never deletes or overwrites anything else; use another store URL "
            "(nothing was changed)"
        )
    if state.kind == "foreign":
        raise StoreError(
            f"store {where} is {state.reason} (it holds {describe_entries(state.entries)}); "
            "certseg creates a store only in a new or empty folder and never deletes or "
            "overwrites anything else; use another store URL (nothing was changed)"
        )
    if state.kind == "certseg" and state.attrs is not None:
        check_layout_version(url, state.attrs)
    # config_id None: only half-written lock objects (a creator killed within microseconds)
    if state.kind == "certseg" and state.config_id not in (None, config_id):
        raise StoreMismatchError(
            f"store {redact_url(url)!r} was written under config_id {state.config_id}, but this "
            f"run's config_id is {config_id}; use another store URL (nothing was overwritten)"
        )


def open_zarr_store(
    url: str, storage_options: Mapping[str, Any] | None = None, *, read_only: bool = False
) -> Any:
    """A zarr v3 store for a local path (or file://) or any fsspec URL (s3://, memory://...)."""
    import zarr.storage

    if "://" not in url or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=dict(storage_options or {}), read_only=read_only
    )


def _root_attrs(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The root group's attributes, or None when there is no zarr group at url."""
    import zarr

    try:
        group = zarr.open_group(open_zarr_store(url, storage_options, read_only=True), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    except Exception as error:  # a path that exists but is not a group, unreadable metadata
        if "not found" in str(error).lower() or "no group" in str(error).lower():
            return None
        raise StoreError(
            f"store {redact_url(url)!r}: cannot read it as a zarr group: {error}"
        ) from error
    return dict(group.attrs)


class SampleStore:
    """A certseg sample store (zarr v3 group) at `url`; layout: certseg.storage.layout."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None, group: Any) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.group = group
        attrs = dict(group.attrs)
        self.attrs = attrs
        self.config_id: str = attrs["config_id"]
        self.image_ids: tuple[str, ...] = tuple(attrs["image_ids"])
        self.num_classes: int = int(attrs["num_classes"])
        self.ignore_index: int = int(attrs["ignore_index"])
        self.sigmas: tuple[float, ...] = tuple(float(s) for s in attrs["sigmas"])
        self.variants: tuple[str, ...] = tuple(attrs["variants"])
        self.groups: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in attrs["groups"].items()}
        self.variant_segmenters: dict[str, dict[str, str]] = attrs["variant_segmenters"]
        self.n0: int = int(attrs["n0"])
        self.n: int = int(attrs["n"])
        self.samples_per_chunk: int = int(attrs["samples_per_chunk"])
        self.health_ids: tuple[str, ...] = tuple(attrs.get("health_ids", []))
        sequential = attrs.get("sequential") or {}
        self.looks: tuple[int, ...] = tuple(int(n) for n in sequential.get("looks", ()))
        """Sequential looks n_1 < ... < n_L = n; () for a fixed-n store."""
        self.look_alphas: tuple[float, ...] = tuple(float(a) for a in sequential.get("alphas", ()))
        self.sequential_alpha: float = float(sequential.get("alpha", 0.0))
        self.fraction_tolerance: float = float(sequential.get("fraction_tolerance", 0.0))
        self._shapes: np.ndarray | None = None
        self._arrays: dict[str, Any] = {}
        self.created = False
        """True when `create` wrote this store's template (a new or re-created store)."""

    # --- creation and opening ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str,
        template: StoreTemplate,
        targets: Iterable[np.ndarray],
        *,
        storage_options: Mapping[str, Any] | None = None,
        lock_policy: LockPolicy | None = None,
    ) -> SampleStore:
        """Create the store from a template, or open it when it already holds this config.

        targets: one (H, W) integer array per image, in template.image_ids order (ignore_index
        where not evaluated). An existing complete store with the same config_id is opened as is
        (resume; targets are not read); `created` tells which happened.

        Writes only where certseg owns the URL: nothing there, an empty folder (or prefix), or a
        certseg store of this config_id whose creation did not finish (created again). A file,
        a non-empty folder or prefix that is not a certseg store, or a zarr group without
        certseg's attributes raises StoreError naming it; a store of another config_id raises
        StoreMismatchError naming both ids. In both cases nothing is written or deleted.

        Concurrent creators (threads or processes, local or object storage) take the creation
        lock (certseg.storage.ownership); one creates, the others wait for `template_complete`
        and open the store. A lock left by a killed creator is taken over (LockPolicy);
        waiting that ends without a store raises StoreLockedError.
        """
        policy = lock_policy or LockPolicy()
        location = store_location(url, storage_options)
        with _process_lock(location):
            watcher = LockWatcher(policy)
            while True:
                state = read_store_state(location)
                _check_ownership(url, location, state, template.config_id)
                if state.complete:
                    return cls._open_existing(url, storage_options, state, template)
                top = state.top_lock
                try:
                    free = top is None or watcher.abandoned(top)
                except LockWaitError as error:
                    raise StoreLockedError(f"store {location.where}: {error}") from None
                if not free:
                    try:
                        watcher.wait(top)  # type: ignore[arg-type]
                    except LockWaitError as error:
                        raise StoreLockedError(f"store {location.where}: {error}") from None
                    continue
                gen = top.gen + 1 if top is not None else 1
                lock = CreationLock.try_acquire(location, gen, template.config_id, policy)
                if lock is None:
                    continue  # another creator took this generation first: look again
                try:
                    state = read_store_state(location)  # under the lock
                    _check_ownership(url, location, state, template.config_id)
                    if state.complete:
                        lock.finish()
                        return cls._open_existing(url, storage_options, state, template)
                    store = cls._write_template(url, storage_options, template, targets, lock)
                except BaseException:
                    lock.release()
                    raise
                return store

    @classmethod
    def _open_existing(
        cls,
        url: str,
        storage_options: Mapping[str, Any] | None,
        state: StoreState,
        template: StoreTemplate,
    ) -> SampleStore:
        _check_same_content(url, state.attrs or {}, template)
        return cls.open(url, storage_options=storage_options)

    @classmethod
    def _write_template(
        cls,
        url: str,
        storage_options: Mapping[str, Any] | None,
        template: StoreTemplate,
        targets: Iterable[np.ndarray],
        lock: CreationLock,
    ) -> SampleStore:
        """Write the store from scratch while holding the creation lock; `template_complete`
        last, after checking no one took the lock over."""
        import zarr

        lock.location.clear(keep=is_lock_name)  # ours: empty, or this config's unfinished store
        store = open_zarr_store(url, storage_options)
        group = zarr.create_group(store, overwrite=False, attributes=template.root_attrs())
        for spec in template.array_specs():
            group.create_array(
                name=spec.path,
                shape=spec.shape,
                chunks=spec.chunks,
                dtype=spec.dtype,
                fill_value=spec.fill_value,
                dimension_names=list(spec.dims),
                overwrite=False,
            )
            lock.heartbeat()
        shapes = np.asarray(template.image_shapes, dtype=np.int32).reshape(-1, 2)
        shape_array: Any = group["image_shape"]
        shape_array[...] = shapes
        height, width = template.max_shape
        target_array: Any = group["targets"]
        count = 0
        for index, target in enumerate(targets):
            if index >= len(template.image_ids):
                raise ValueError(f"targets: more than {len(template.image_ids)} targets given")
            target = np.asarray(target)
            if tuple(target.shape) != tuple(template.image_shapes[index]):
                raise ValueError(
                    f"targets[{index}] (image {template.image_ids[index]!r}) has shape "
                    f"{target.shape}, expected {template.image_shapes[index]}"
                )
            padded = np.full((height, width), template.ignore_index, dtype=np.int32)
            padded[: target.shape[0], : target.shape[1]] = target
            target_array[index] = padded
            count += 1
            lock.heartbeat()
        if count != len(template.image_ids):
            raise ValueError(f"targets: {count} given, expected {len(template.image_ids)}")
        if not lock.still_held():
            raise StoreLockedError(
                f"store {lock.location.where}: another creator took the creation lock over "
                "while this one was writing (it was judged abandoned); not marking the store "
                "complete — run again"
            )
        group.attrs["template_complete"] = True
        lock.finish()
        created = cls(url, storage_options, group)
        created.created = True
        return created

    @classmethod
    def open(
        cls,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        read_only: bool = False,
        config_id: str | None = None,
    ) -> SampleStore:
        """Open an existing, completely created store; check config_id when given."""
        import zarr

        attrs = _root_attrs(url, storage_options)
        if attrs is None:
            raise StoreError(f"no sample store at {redact_url(url)!r}")
        if "config_id" not in attrs:
            raise StoreError(
                f"{redact_url(url)!r} is not a certseg sample store (no config_id attribute)"
            )
        check_layout_version(url, attrs)
        if not attrs.get("template_complete"):
            raise StoreError(
                f"store {redact_url(url)!r} was not completely created (no template_complete)"
            )
        if config_id is not None and attrs["config_id"] != config_id:
            raise StoreMismatchError(
                f"store {redact_url(url)!r} was written under config_id {attrs['config_id']}, but "
                f"this run's config_id is {config_id}"
            )
        store = open_zarr_store(url, storage_options, read_only=read_only)
        group = zarr.open_group(store, mode="r" if read_only else "r+")
        return cls(url, storage_options, group)

    # --- layout views --------------------------------------------------------------------

    def _array(self, path: str) -> Any:
        if path not in self._arrays:
            try:
                self._arrays[path] = self.group[path]
            except KeyError:
                raise StoreError(f"store {redact_url(self.url)!r} has no array {path!r}") from None
        return self._arrays[path]

    @property
    def image_shapes(self) -> np.ndarray:
        """(N, 2) int32 true (H, W) of each image."""
        if self._shapes is None:
            self._shapes = np.asarray(self._array("image_shape")[...])
        return self._shapes

    @property
    def num_images(self) -> int:
        """N."""
        return len(self.image_ids)

    def block_size(self, phase: str) -> int:
        """Samples per chunk in a phase (min(total, samples_per_chunk))."""
        return min(self.phase_total(phase), self.samples_per_chunk)

    def phase_total(self, phase: str) -> int:
        """n0 (selection) or n (estimation)."""
        if phase == "selection":
            return self.n0
        if phase == "estimation":
            return self.n
        raise ValueError(f"phase must be one of {PHASES_STORED}, got {phase!r}")

    def blocks(self, phase: str) -> list[tuple[int, int]]:
        """The sample blocks of a phase as (start, stop) ranges."""
        total, size = self.phase_total(phase), self.block_size(phase)
        return [(start, min(start + size, total)) for start in range(0, total, size)]

    def segmenter_of(self, variant: str, sigma: float) -> str:
        """The segmenter a variant uses at σ."""
        return self.variant_segmenters[variant][sigma_key(sigma)]

    def _check_image(self, image: int) -> int:
        if isinstance(image, bool) or not 0 <= int(image) < self.num_images:
            raise ValueError(f"image must be an index in [0, {self.num_images}), got {image!r}")
        return int(image)

    def _crop(self, image: int) -> tuple[int, int]:
        h, w = self.image_shapes[image]
        return int(h), int(w)

    # --- targets -------------------------------------------------------------------------

    def read_target(self, image: int) -> np.ndarray:
        """(H, W) int32 target of an image (cropped to its true size)."""
        image = self._check_image(image)
        h, w = self._crop(image)
        return np.asarray(self._array("targets")[image, :h, :w])

    # --- samples -------------------------------------------------------------------------

    def samples_path(self, sigma: float, variant: str, phase: str) -> str:
        """Array path of a variant's class maps at σ in a phase."""
        if phase not in PHASES_STORED:
            raise ValueError(f"phase must be one of {PHASES_STORED}, got {phase!r}")
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {self.variants}, got {variant!r}")
        return f"samples/{sigma_key(sigma)}/{variant}/{phase}"

    def write_samples(
        self, sigma: float, variant: str, phase: str, image: int, start: int, maps: np.ndarray
    ) -> None:
        """Write one chunk-aligned region: class maps (count, H, W) of samples [start, start+count).

        The region must be exactly one sample block: start a multiple of the block size and
        count = the block's length; anything else raises ValueError (a misaligned region could
        share a chunk with another writer). Rewriting a region with the same maps gives
        identical bytes.
        """
        image = self._check_image(image)
        array = self._array(self.samples_path(sigma, variant, phase))
        maps = np.asarray(maps)
        if maps.ndim != 3:
            raise ValueError(f"maps must have shape (count, H, W), got {maps.shape}")
        blocks = dict(self.blocks(phase))
        count = maps.shape[0]
        if start not in blocks or blocks[start] != start + count:
            raise ValueError(
                f"misaligned region: samples [{start}, {start + count}) of phase {phase!r} do not "
                f"form one sample block; blocks are {self.blocks(phase)}"
            )
        h, w = self._crop(image)
        if maps.shape[1:] != (h, w):
            raise ValueError(
                f"maps for image {image} must have (H, W) = {(h, w)}, got {maps.shape[1:]}"
            )
        if maps.size and (int(maps.min()) < 0 or int(maps.max()) >= self.num_classes):
            raise ValueError(
                f"maps must hold class indices in [0, {self.num_classes}), got values in "
                f"[{int(maps.min())}, {int(maps.max())}]"
            )
        if (h, w) == tuple(array.shape[2:]):
            full = np.ascontiguousarray(maps, dtype=array.dtype)  # no padding: no copy
        else:
            full = np.zeros((count, *array.shape[2:]), dtype=array.dtype)
            full[:, :h, :w] = maps
        array[image, start : start + count] = full

    def read_samples(
        self,
        sigma: float,
        variant: str,
        phase: str,
        image: int,
        start: int = 0,
        stop: int | None = None,
    ) -> np.ndarray:
        """(stop - start, H, W) stored class maps of an image (cropped)."""
        image = self._check_image(image)
        array = self._array(self.samples_path(sigma, variant, phase))
        stop = self.phase_total(phase) if stop is None else stop
        if not 0 <= start <= stop <= self.phase_total(phase):
            raise ValueError(
                f"samples [{start}, {stop}) outside [0, {self.phase_total(phase)}) of {phase!r}"
            )
        h, w = self._crop(image)
        return np.asarray(array[image, start:stop, :h, :w])

    # --- completion flags ----------------------------------------------------------------

    def _done_path(self, sigma: float, group: str, phase: str) -> str:
        if group not in self.groups:
            raise ValueError(f"group must be one of {tuple(self.groups)}, got {group!r}")
        if phase not in PHASES_STORED:
            raise ValueError(f"phase must be one of {PHASES_STORED}, got {phase!r}")
        return f"done/{sigma_key(sigma)}/{group}/{phase}"

    def done_blocks(self, sigma: float, group: str, phase: str, image: int) -> np.ndarray:
        """(blocks,) bool: which sample blocks of an image are complete for a denoiser group:
        sampled (flag 1) or, in a sequential store, not needed (flag 2, `mark_not_needed`)."""
        done: np.ndarray = self.block_flags(sigma, group, phase, image) >= 1
        return done

    def block_flags(self, sigma: float, group: str, phase: str, image: int) -> np.ndarray:
        """(blocks,) uint8 flags of an image's sample blocks: 0 missing, 1 sampled, 2 not needed
        (sequential stores only: every variant of the group stopped before the block)."""
        image = self._check_image(image)
        flags: np.ndarray = np.asarray(self._array(self._done_path(sigma, group, phase))[image])
        return flags

    def mark_not_needed(self, sigma: float, group: str, image: int, block: int) -> None:
        """Flag an estimation block "not needed" (2) in a sequential store: every variant of the
        group stopped at a look before it (`write_stop` first). A sampled block keeps flag 1."""
        if not self.looks:
            raise ValueError(
                f"store {redact_url(self.url)!r} is not sequential: no block is 'not needed'"
            )
        image = self._check_image(image)
        array = self._array(self._done_path(sigma, group, "estimation"))
        if not 0 <= block < array.shape[1]:
            raise ValueError(f"block must be in [0, {array.shape[1]}), got {block}")
        if int(array[image, block]) != 1:
            array[image, block] = 2

    # --- sequential stopping looks -------------------------------------------------------

    def write_stop(self, sigma: float, variant: str, image: int, look: int) -> None:
        """Record the 0-based look at which sampling of an image stopped for a variant."""
        image = self._check_image(image)
        if not 0 <= look < len(self.looks):
            raise ValueError(f"look must be in [0, {len(self.looks)}), got {look}")
        self._array(self._stop_path(sigma, variant))[image] = look

    def read_stop(self, sigma: float, variant: str, image: int) -> int:
        """The recorded stopping look of an image for a variant (-1: not decided yet)."""
        image = self._check_image(image)
        return int(self._array(self._stop_path(sigma, variant))[image])

    def _stop_path(self, sigma: float, variant: str) -> str:
        if not self.looks:
            raise ValueError(
                f"store {redact_url(self.url)!r} is not sequential: it records no stopping looks"
            )
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {self.variants}, got {variant!r}")
        return f"stop/{sigma_key(sigma)}/{variant}"

    def mark_done(self, sigma: float, group: str, phase: str, image: int, block: int) -> None:
        """Flag one sample block complete (after its data is written, by the same writer).

        Each flag is its own chunk (layout), so flagging never rewrites another block's flag:
        two runs sampling one image at once cannot erase each other's flags.
        """
        image = self._check_image(image)
        array = self._array(self._done_path(sigma, group, phase))
        if not 0 <= block < array.shape[1]:
            raise ValueError(f"block must be in [0, {array.shape[1]}), got {block}")
        array[image, block] = 1

    # --- clean predictions ---------------------------------------------------------------

    def write_clean(self, segmenter: str, image: int, prediction: np.ndarray) -> None:
        """Write a segmenter's (H, W) prediction on the clean image, then flag it done."""
        image = self._check_image(image)
        array = self._array(f"clean/{segmenter}")
        h, w = self._crop(image)
        prediction = np.asarray(prediction)
        if prediction.shape != (h, w):
            raise ValueError(f"prediction must have shape {(h, w)}, got {prediction.shape}")
        full = np.zeros(array.shape[1:], dtype=array.dtype)
        full[:h, :w] = prediction
        array[image] = full
        self._array(f"done/clean/{segmenter}")[image] = 1

    def first_missing(self, sigmas: Sequence[float], variants: Sequence[str]) -> str | None:
        """What the first unfinished piece of sampling for these σ and variants is, in words
        ("store '...' is not completely sampled: image ..., phase ..."), or None when every
        sample block of their denoiser groups is done (or not needed), every stopping look of a
        sequential store is recorded and every clean prediction is stored."""
        url = redact_url(self.url)
        group_of = {v: g for g, names in self.groups.items() for v in names}
        for sigma in sigmas:
            for group in {group_of[v] for v in variants}:
                for phase in PHASES_STORED:
                    for image in range(self.num_images):
                        if not self.done_blocks(sigma, group, phase, image).all():
                            return (
                                f"store {url!r} is not completely sampled: image "
                                f"{self.image_ids[image]!r}, {sigma_key(sigma)}, group "
                                f"{group!r}, phase {phase!r}"
                            )
            for variant in variants if self.looks else ():
                for image in range(self.num_images):
                    if self.read_stop(sigma, variant, image) < 0:
                        return (
                            f"store {url!r} is not completely sampled: image "
                            f"{self.image_ids[image]!r}, {sigma_key(sigma)}, variant "
                            f"{variant!r} has no stopping look yet"
                        )
            for segmenter in {self.segmenter_of(v, sigma) for v in variants}:
                for image in range(self.num_images):
                    if not self.clean_done(segmenter, image):
                        return (
                            f"store {url!r} lacks the clean prediction of {segmenter!r} for "
                            f"image {self.image_ids[image]!r}"
                        )
        return None

    def clean_done(self, segmenter: str, image: int) -> bool:
        """Whether the clean prediction of an image is stored."""
        image = self._check_image(image)
        return bool(self._array(f"done/clean/{segmenter}")[image] == 1)

    def read_clean(self, segmenter: str, image: int) -> np.ndarray:
        """(H, W) clean prediction of a segmenter (cropped)."""
        image = self._check_image(image)
        h, w = self._crop(image)
        return np.asarray(self._array(f"clean/{segmenter}")[image, :h, :w])

    # --- persisted counts ----------------------------------------------------------------

    def write_counts(
        self,
        sigma: float,
        variant: str,
        image: int,
        *,
        labels_selected: np.ndarray,
        k: np.ndarray,
        labels_smoothed: np.ndarray,
        n: int,
    ) -> None:
        """Persist an image's selected labels, agreement counts k (of the first n estimation
        samples) and smoothed (majority) labels; then record n (the completion marker)."""
        image = self._check_image(image)
        key = sigma_key(sigma)
        h, w = self._crop(image)
        for name, values in (
            ("labels_selected", labels_selected),
            ("k", k),
            ("labels_smoothed", labels_smoothed),
        ):
            values = np.asarray(values)
            if values.shape != (h, w):
                raise ValueError(f"{name} must have shape {(h, w)}, got {values.shape}")
            array = self._array(f"counts/{key}/{variant}/{name}")
            full = np.zeros(array.shape[1:], dtype=np.int32)
            full[:h, :w] = values
            array[image] = full
        self._array(f"counts/{key}/{variant}/n")[image] = n

    def counts_n(self, sigma: float, variant: str, image: int) -> int:
        """n of the stored counts of an image (0: none stored)."""
        image = self._check_image(image)
        return int(self._array(f"counts/{sigma_key(sigma)}/{variant}/n")[image])

    def read_counts(self, sigma: float, variant: str, image: int) -> dict[str, np.ndarray]:
        """The stored labels_selected, k, labels_smoothed of an image, (H, W) int32 each."""
        image = self._check_image(image)
        key = sigma_key(sigma)
        h, w = self._crop(image)
        return {
            name: np.asarray(self._array(f"counts/{key}/{variant}/{name}")[image, :h, :w])
            for name in ("labels_selected", "k", "labels_smoothed")
        }

    # --- health check --------------------------------------------------------------------

    def write_health(
        self, sigma: float, variant: str, index: int, *, correct: int, valid: int
    ) -> None:
        """Record the health check of held-out image `index`: correct and valid pixel counts."""
        if not 0 <= index < len(self.health_ids):
            raise ValueError(f"index must be in [0, {len(self.health_ids)}), got {index}")
        array = self._array(f"health/{sigma_key(sigma)}/{variant}")
        array[index] = np.asarray([correct, valid], dtype=np.int64)

    def read_health(self, sigma: float, variant: str) -> np.ndarray:
        """(num_health, 2) int64 [correct, valid] per held-out image; -1 rows not yet run."""
        if not self.health_ids:
            return np.zeros((0, 2), dtype=np.int64)
        values: np.ndarray = np.asarray(self._array(f"health/{sigma_key(sigma)}/{variant}")[...])
        return values


def _check_same_content(url: str, attrs: Mapping[str, Any], template: StoreTemplate) -> None:
    """Refuse to resume when the files behind the same config changed since the store was made.

    config_id covers what the config says (paths included), not what the files hold: a dataset
    edited in place or a model retrained into the same folder would otherwise mix old and new
    samples in one store.
    """
    checks = (
        ("dataset manifest", "dataset_manifest_sha256", template.manifest_sha256),
        ("health-check manifest", "health_manifest_sha256", template.health_manifest_sha256),
        ("model files", "models_sha256", template.models_sha256),
    )
    for what, key, now in checks:
        stored = str(attrs.get(key, ""))
        if stored != now:
            raise StoreMismatchError(
                f"store {redact_url(url)!r} was written with {what} sha256 {stored or '(none)'}, "
                f"but this run's is {now or '(none)'}: the files changed under the same config; "
                "use another store URL (nothing was overwritten)"
            )
    check_sampling_precision(url, attrs, template.sampling_precision)
    check_noise_stream(url, attrs, template.noise_stream)


def check_noise_stream(url: str, attrs: Mapping[str, Any], stream: str) -> None:
    """Refuse to add samples drawn on another noise stream than the store's (CPU vs a GPU kind):
    the noise of a key differs across streams, so a resumed store would mix two noise streams
    (each valid, but the store's samples must be one draw). A store without the attribute was
    drawn on the CPU ("torch-cpu")."""
    stored = str(attrs.get("noise_stream", "")) or "torch-cpu"
    if stream and stored != stream:
        raise StoreMismatchError(
            f"store {redact_url(url)!r} holds noise drawn on the {stored} stream, but this run "
            f"draws on {stream} (sampling.device decides): sample it on the same kind of device, "
            "or use another store URL (nothing was overwritten)"
        )


def check_sampling_precision(url: str, attrs: Mapping[str, Any], precision: str) -> None:
    """Refuse samples of another precision than the store's ("bf16" / "fp32"): with
    `sampling.bf16: auto` one config_id samples in bf16 on a machine that supports it and in fp32
    elsewhere, and a certificate over a mix of the two is not one base classifier's. A store
    without the attribute (made before it was recorded) accepts either."""
    stored = str(attrs.get("sampling_precision", ""))
    if stored and precision and stored != precision:
        raise StoreMismatchError(
            f"store {redact_url(url)!r} was sampled in {stored}, but this run samples in "
            f"{precision} (sampling.bf16: auto follows the device's bf16 support): set "
            f"sampling.bf16 to {str(stored == 'bf16').lower()} to resume it on this machine, or "
            "use another store URL (nothing was overwritten)"
        )
