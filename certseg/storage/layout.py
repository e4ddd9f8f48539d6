"""The sample store's layout: every array's name, dims, dtype, chunks and fill (docs/storage.md).

Layout version 2. N images, padded to the largest (H_max, W_max); `image_shape` holds each image's
true (H, W) and readers crop to it. Every per-image array has one image per chunk, so a shard (a
contiguous image range) owns whole chunks and concurrent writers never share one.

    image_shape                                (image, axis)          int32   chunks (N, 2)
    targets                                    (image, y, x)          int32   chunks (1, H, W)
    samples/<sigma>/<variant>/selection        (image, sample, y, x)  u8|u16  chunks (1, b0, r, W)
    samples/<sigma>/<variant>/estimation       (image, sample, y, x)  u8|u16  chunks (1, b, r, W)
    done/<sigma>/<group>/selection|estimation  (image, block)         uint8   chunks (1, 1)
    clean/<segmenter>                          (image, y, x)          u8|u16  chunks (1, H, W)
    done/clean/<segmenter>                     (image,)               uint8   chunks (1,)
    counts/<sigma>/<variant>/labels_selected   (image, y, x)          int32   chunks (1, H, W)
    counts/<sigma>/<variant>/k                 (image, y, x)          int32   chunks (1, H, W)
    counts/<sigma>/<variant>/labels_smoothed   (image, y, x)          int32   chunks (1, H, W)
    counts/<sigma>/<variant>/n                 (image,)               int32   chunks (1,)
    health/<sigma>/<variant>                   (health_image, field)  int64   chunks (1, 2)
    stop/<sigma>/<variant>                     (image,)               int16   chunks (1,)

stop/... exists only in a sequential store (template.looks set; docs/sequential.md): the 0-based
look at which sampling of the image stopped for the variant (-1: not decided yet). In a
sequential store a block flag of 2 means "not needed": every variant of the group stopped at an
earlier look, so the block was never sampled (its samples read as zeros and are never used); a
flag of 1 or 2 both count as complete for resume and completeness checks. Non-sequential stores
have no stop arrays, no `sequential` attribute and only flags 0 and 1, as before.

Each completion flag is its own chunk, so two runs sampling the same image at once (identical
writes of identical samples) never erase each other's flags; stores made with one flags chunk
per image (chunks (1, blocks)) read and resume the same.

<sigma> is `sigma_key(σ)` ("sigma_0.25"); <group> is a denoiser key or "none". b0 = min(n0,
samples_per_chunk), b = min(n, samples_per_chunk), r = chunk_rows: by default chosen from the
frame size and a target chunk size (`sample_chunking`: as many whole class maps as fit
chunk_bytes, 8 MiB unless configured; a map larger than that is split into bands of rows, one
map per chunk); an explicit samples_per_chunk keeps whole maps (r = H). A sample block (the unit
of sampling, writing and flagging) is one chunk along the sample axis and spans all its row
bands, so one writer writes whole chunks. Layout 2 differs from 1 by this chunking (1:
samples_per_chunk = 100 whole maps by default) and the chunk_bytes and chunk_rows attributes;
stores of another layout_version are refused. targets hold the dataset's ignore_index outside
each image and where ignored. counts/.../n is the number of estimation samples the stored counts
used (0: not computed); health fields are [correct, valid] pixel counts of one noisy draw
(-1: not run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

LAYOUT_VERSION = 2
"""The on-disk contract's version (docs/storage.md); a store of another version is refused."""

DEFAULT_CHUNK_BYTES: Final[int] = 8 * 2**20
"""Target (uncompressed) bytes of one sample chunk when samples_per_chunk is not given: 4 class
maps of 1024×2048 uint8 (about 0.6 MiB stored with zstd at the measured 150 KB per map)."""
PHASES_STORED: tuple[str, ...] = ("selection", "estimation")
"""Sampling phases whose class maps are stored (the health phase stores only pixel counts)."""

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "image_shape": ("image", "axis"),
    "targets": ("image", "y", "x"),
    "samples": ("image", "sample", "y", "x"),
    "done": ("image", "block"),
    "clean": ("image", "y", "x"),
    "clean_done": ("image",),
    "counts": ("image", "y", "x"),
    "counts_n": ("image",),
    "health": ("health_image", "field"),
    "stop": ("image",),
}
"""Dimension names of each array kind (stored as zarr v3 dimension_names)."""


def sigma_key(sigma: float) -> str:
    """The name of a σ wherever certseg keys by σ: "sigma_" + the shortest repr that round-trips
    ("sigma_0.25", "sigma_1.0"), so two σ values never share a name.

    The store's group names, the per-σ sampling rates and the MLflow metric and tag names
    (certseg.tracking) all use it.
    """
    return f"sigma_{float(sigma)!r}"


UINT8_CLASSES: Final[int] = 256
"""Class maps of at most this many classes (indices 0..255) are uint8, larger ones uint16."""

UINT16_CLASSES: Final[int] = 65536
"""The most classes a class map holds (indices 0..65535 in uint16)."""


def class_map_dtype(num_classes: int) -> str:
    """The dtype name of a class map (sampled or stored) of `num_classes` classes: "uint8" up to
    UINT8_CLASSES, "uint16" up to UINT16_CLASSES; ValueError beyond."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes > UINT16_CLASSES:
        raise ValueError(
            f"num_classes={num_classes} does not fit a uint16 class map (at most {UINT16_CLASSES})"
        )
    return "uint8" if num_classes <= UINT8_CLASSES else "uint16"


def sample_chunking(frame: tuple[int, int], itemsize: int, chunk_bytes: int) -> tuple[int, int]:
    """(samples per chunk, rows per chunk) of a sample array whose class maps are `frame` =
    (H, W) of `itemsize` bytes per pixel, for a target of `chunk_bytes` (uncompressed) per chunk.

    As many whole maps as fit the target (at least one); a single map larger than the target is
    split into bands of as many rows as fit (at least one row; one map per chunk). The result
    depends only on its arguments, so the chunking of a store is a function of its template.
    """
    height, width = frame
    if height < 1 or width < 1 or itemsize < 1:
        raise ValueError(f"frame {frame} and itemsize {itemsize} must be >= 1")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    frame_bytes = height * width * itemsize
    if frame_bytes <= chunk_bytes:
        return chunk_bytes // frame_bytes, height
    return 1, max(1, chunk_bytes // (width * itemsize))


def check_looks_on_blocks(looks: tuple[int, ...], n: int, block: int) -> None:
    """ValueError naming sequential.looks and the block size unless every look falls on an
    estimation block boundary (a multiple of `block`) and the last one is n: a look decides after
    whole sample blocks, the unit of sampling, writing and flagging."""
    if not looks or looks[-1] != n:
        raise ValueError(f"sequential.looks must end at n = {n}, got {list(looks)}")
    off = [look for look in looks if look != n and look % block]
    if off:
        raise ValueError(
            f"sequential.looks {list(looks)}: looks {off} do not fall on an estimation block "
            f"boundary (blocks of {block} samples, sampling.samples_per_chunk or the chunking "
            "from the frame size): choose looks that are multiples of the block size, or set "
            "sampling.samples_per_chunk to a divisor of every look"
        )


@dataclass(frozen=True)
class ArraySpec:
    """One array of the layout: path, shape, chunks, dtype name, fill value, dimension names."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    fill_value: int
    dims: tuple[str, ...]


@dataclass(frozen=True)
class StoreTemplate:
    """Everything the store is created from, before any shard runs.

    image_shapes: true (H, W) of each image, in image_ids order. variant_segmenters: variant →
    (sigma_key → segmenter name). groups: denoiser group ("none" or a denoiser key) → variants.
    health_ids: image ids of the held-out health set (may be empty). skipped_files: (file, reason)
    of items a skip_invalid validation dropped (also part of the manifest hash).
    """

    config_id: str
    config_json: str
    code_version: str
    manifest_sha256: str
    dataset_name: str
    image_ids: tuple[str, ...]
    image_shapes: tuple[tuple[int, int], ...]
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int
    sigmas: tuple[float, ...]
    variants: tuple[str, ...]
    variant_segmenters: dict[str, dict[str, str]]
    groups: dict[str, tuple[str, ...]]
    n0: int
    n: int
    samples_per_chunk: int | None
    """Class maps per sample chunk; None: from the frame size and chunk_bytes (`chunking`)."""
    health_ids: tuple[str, ...] = ()
    health_manifest_sha256: str = ""
    models_sha256: str = ""
    skipped_files: tuple[tuple[str, str], ...] = ()
    sampling_precision: str = ""
    """How the base classifier ran ("bf16" autocast or "fp32"), resolved on the sampling machine:
    `sampling.bf16: auto` resolves by device capability, so one config can mean two base
    classifiers; a store refuses samples of the other ("": not recorded, older stores)."""
    noise_stream: str = ""
    """Which generator drew the noise (certseg.noise.noise_stream: "torch-cpu", or the CUDA stream
    of one GPU kind): the same key gives other noise on another stream ("": not recorded, older
    stores, which were all drawn on the CPU)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """Target uncompressed bytes per sample chunk, used when samples_per_chunk is None."""
    looks: tuple[int, ...] = ()
    """Sequential certification's looks n_1 < ... < n_L = n (estimation samples); () when off."""
    look_alphas: tuple[float, ...] = ()
    """α_ℓ of each look (same length as looks); () when off."""
    alpha: float = 0.0
    """The family-wise α the looks' levels sum to at most (sequential stores only)."""
    fraction_tolerance: float = 0.0
    """The stopping rule's certified-fraction tolerance (sequential stores only)."""

    def __post_init__(self) -> None:
        if len(self.image_ids) != len(self.image_shapes):
            raise ValueError(
                f"StoreTemplate.image_shapes: {len(self.image_shapes)} shapes for "
                f"{len(self.image_ids)} image_ids"
            )
        if not self.image_ids:
            raise ValueError("StoreTemplate.image_ids: at least one image is required")
        if self.num_classes < 1:
            raise ValueError(f"StoreTemplate.num_classes must be >= 1, got {self.num_classes}")
        for name in ("n0", "n", "chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"StoreTemplate.{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_chunk is not None and self.samples_per_chunk < 1:
            raise ValueError(
                "StoreTemplate.samples_per_chunk must be >= 1 or None, got "
                f"{self.samples_per_chunk}"
            )
        grouped = sorted(v for names in self.groups.values() for v in names)
        if grouped != sorted(self.variants):
            raise ValueError("StoreTemplate.groups must partition the variants")
        if self.looks:
            check_looks_on_blocks(self.looks, self.n, self.block_size("estimation"))
            if len(self.look_alphas) != len(self.looks):
                raise ValueError(
                    f"StoreTemplate.look_alphas must have one level per look {self.looks}, "
                    f"got {self.look_alphas}"
                )

    @property
    def class_dtype(self) -> str:
        """The class maps' dtype name: `class_map_dtype(num_classes)`."""
        return class_map_dtype(self.num_classes)

    @property
    def max_shape(self) -> tuple[int, int]:
        """(H_max, W_max) over all images."""
        return (
            max(h for h, _ in self.image_shapes),
            max(w for _, w in self.image_shapes),
        )

    @property
    def chunking(self) -> tuple[int, int]:
        """(samples per chunk, rows per chunk) of the sample arrays: the explicit
        samples_per_chunk with whole maps, or `sample_chunking(max_shape, itemsize,
        chunk_bytes)`."""
        if self.samples_per_chunk is not None:
            return self.samples_per_chunk, self.max_shape[0]
        itemsize = 1 if self.class_dtype == "uint8" else 2
        return sample_chunking(self.max_shape, itemsize, self.chunk_bytes)

    def block_size(self, phase: str) -> int:
        """Samples per chunk (a sample block) in a phase."""
        total = self.phase_total(phase)
        return min(total, self.chunking[0])

    def phase_total(self, phase: str) -> int:
        """n0 for selection, n for estimation."""
        if phase == "selection":
            return self.n0
        if phase == "estimation":
            return self.n
        raise ValueError(f"phase must be one of {PHASES_STORED}, got {phase!r}")

    def num_blocks(self, phase: str) -> int:
        """Number of sample blocks in a phase."""
        return math.ceil(self.phase_total(phase) / self.block_size(phase))

    def segmenters(self) -> tuple[str, ...]:
        """Every segmenter some variant uses, sorted."""
        return tuple(sorted({s for m in self.variant_segmenters.values() for s in m.values()}))

    def array_specs(self) -> list[ArraySpec]:
        """Every array of the layout (the frozen contract; see the module docstring)."""
        num = len(self.image_ids)
        h, w = self.max_shape
        rows = self.chunking[1]
        cls = self.class_dtype
        specs = [
            ArraySpec("image_shape", (num, 2), (num, 2), "int32", 0, DIMENSIONS["image_shape"]),
            ArraySpec(
                "targets", (num, h, w), (1, h, w), "int32", self.ignore_index, DIMENSIONS["targets"]
            ),
        ]
        for sigma in self.sigmas:
            key = sigma_key(sigma)
            for variant in self.variants:
                for phase in PHASES_STORED:
                    total, block = self.phase_total(phase), self.block_size(phase)
                    specs.append(
                        ArraySpec(
                            f"samples/{key}/{variant}/{phase}",
                            (num, total, h, w),
                            (1, block, rows, w),
                            cls,
                            0,
                            DIMENSIONS["samples"],
                        )
                    )
                for name in ("labels_selected", "k", "labels_smoothed"):
                    specs.append(
                        ArraySpec(
                            f"counts/{key}/{variant}/{name}",
                            (num, h, w),
                            (1, h, w),
                            "int32",
                            0,
                            DIMENSIONS["counts"],
                        )
                    )
                specs.append(
                    ArraySpec(
                        f"counts/{key}/{variant}/n",
                        (num,),
                        (1,),
                        "int32",
                        0,
                        DIMENSIONS["counts_n"],
                    )
                )
                if self.looks:
                    specs.append(
                        ArraySpec(
                            f"stop/{key}/{variant}", (num,), (1,), "int16", -1, DIMENSIONS["stop"]
                        )
                    )
                if self.health_ids:
                    specs.append(
                        ArraySpec(
                            f"health/{key}/{variant}",
                            (len(self.health_ids), 2),
                            (1, 2),
                            "int64",
                            -1,
                            DIMENSIONS["health"],
                        )
                    )
            for group in self.groups:
                for phase in PHASES_STORED:
                    blocks = self.num_blocks(phase)
                    specs.append(
                        ArraySpec(
                            f"done/{key}/{group}/{phase}",
                            (num, blocks),
                            (1, 1),
                            "uint8",
                            0,
                            DIMENSIONS["done"],
                        )
                    )
        for segmenter in self.segmenters():
            specs.append(
                ArraySpec(f"clean/{segmenter}", (num, h, w), (1, h, w), cls, 0, DIMENSIONS["clean"])
            )
            specs.append(
                ArraySpec(
                    f"done/clean/{segmenter}", (num,), (1,), "uint8", 0, DIMENSIONS["clean_done"]
                )
            )
        return specs

    def root_attrs(self) -> dict[str, Any]:
        """The root group's attributes (JSON-ready); `template_complete` is added last."""
        return {
            "layout_version": LAYOUT_VERSION,
            "config_id": self.config_id,
            "config": self.config_json,
            "code_version": self.code_version,
            "dataset_manifest_sha256": self.manifest_sha256,
            "dataset_name": self.dataset_name,
            "image_ids": list(self.image_ids),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "sigmas": list(self.sigmas),
            "variants": list(self.variants),
            "variant_segmenters": self.variant_segmenters,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "n0": self.n0,
            "n": self.n,
            "samples_per_chunk": self.chunking[0],
            "chunk_rows": self.chunking[1],
            "chunk_bytes": self.chunk_bytes if self.samples_per_chunk is None else None,
            "health_ids": list(self.health_ids),
            "health_manifest_sha256": self.health_manifest_sha256,
            "models_sha256": self.models_sha256,
            "skipped_files": [list(item) for item in self.skipped_files],
            "sampling_precision": self.sampling_precision,
            "noise_stream": self.noise_stream,
            **(
                {
                    "sequential": {
                        "looks": list(self.looks),
                        "alphas": list(self.look_alphas),
                        "alpha": self.alpha,
                        "fraction_tolerance": self.fraction_tolerance,
                    }
                }
                if self.looks
                else {}
            ),
        }
