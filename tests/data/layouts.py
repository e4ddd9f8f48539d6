"""Writers of tiny datasets in each exact on-disk layout, for tests (reusable: pass a tmp path).

Each writer returns the root to put in DatasetSpec.root and writes deterministic content (a
seeded generator), so two calls with the same arguments write byte-identical files.
From any test: `from tests.data.layouts import write_cityscapes, ...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CITYSCAPES_STEMS: tuple[str, ...] = (
    "frankfurt_000000_000294",
    "frankfurt_000000_000576",
    "lindau_000000_000019",
    "munster_000000_000019",
)
PASCAL_IDS: tuple[str, ...] = ("2008_000002", "2008_000005", "2008_000007", "2010_000001")
FOLDER_STEMS: tuple[str, ...] = ("a01", "b02", "c03")
FOLDER_CLASSES_TEXT = "# three classes\nsky 70,130,180\nroad\ntraffic light 250,170,30\n"


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save an (H, W) uint8 (mode L), (H, W, 3) uint8 (RGB) or (H, W) uint16 array as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def write_jpeg(path: Path, array: np.ndarray) -> Path:
    """Save an (H, W, 3) uint8 array as a JPEG (quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=95)
    return path


def random_rgb(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 random image."""
    return rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)


def cityscapes_label_ids(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 Cityscapes label ids: every id 0..33 can occur (a random field)."""
    return rng.integers(0, 34, size=size, dtype=np.uint8)


def write_cityscapes(
    root: Path,
    *,
    split: str = "val",
    stems: Sequence[str] = CITYSCAPES_STEMS,
    size: tuple[int, int] = (8, 16),
    seed: int = 0,
) -> Path:
    """leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png + gtFine/.../<stem>_gtFine_labelIds.png."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        city = stem.split("_")[0]
        write_png(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", random_rgb(rng, size)
        )
        write_png(
            root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
            cityscapes_label_ids(rng, size),
        )
        # The other gtFine files of the official layout, which the loader must not pick up.
        write_png(
            root / "gtFine" / split / city / f"{stem}_gtFine_color.png", random_rgb(rng, size)
        )
    return root


def write_pascal_context(
    root: Path,
    *,
    split: str = "val",
    ids: Sequence[str] = PASCAL_IDS,
    size: tuple[int, int] = (10, 14),
    seed: int = 0,
) -> Path:
    """VOCdevkit/VOC2010/{JPEGImages/<id>.jpg, SegmentationClassContext/<id>.png,
    ImageSets/SegmentationContext/<split>.txt}; labels uint8 in 0..59. Returns `root`."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2010"
    for image_id in ids:
        write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", random_rgb(rng, size))
        write_png(
            voc / "SegmentationClassContext" / f"{image_id}.png",
            rng.integers(0, 60, size=size, dtype=np.uint8),
        )
    split_file = voc / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{i}\n" for i in sorted(ids)))
    return root


def write_folder(
    root: Path,
    *,
    stems: Sequence[str] = FOLDER_STEMS,
    size: tuple[int, int] = (9, 11),
    num_classes: int = 3,
    ignore_index: int = 255,
    classes_text: str = FOLDER_CLASSES_TEXT,
    seed: int = 0,
) -> Path:
    """images/<stem>.png + masks/<stem>.png (uint8: values in [0, C), pixel (0, 0) = ignore_index
    which must fit a byte) + classes.txt."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        write_png(root / "images" / f"{stem}.png", random_rgb(rng, size))
        mask = rng.integers(0, num_classes, size=size, dtype=np.uint8)
        mask[0, 0] = ignore_index
        write_png(root / "masks" / f"{stem}.png", mask)
    (root / "classes.txt").write_text(classes_text)
    return root


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to `keep` of its bytes (a truncated download)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root → (mtime_ns, content): to assert nothing was written."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    } | {p.relative_to(root).as_posix() + "/": (0, b"") for p in root.rglob("*") if p.is_dir()}


def write_folder_from_dataset(root: Path, dataset: object) -> Path:
    """Export an in-memory SegmentationDataset (e.g. the synthetic one) to the folder layout:
    images/<id>.png (8-bit RGB, round(255 · image)), masks/<id>.png (uint8 targets) and a
    classes.txt with the dataset's names and colours. Lets a CLI test certify a generic folder
    with the shipped synthetic-class segmenters."""
    from certseg.data.base import SegmentationDataset

    assert isinstance(dataset, SegmentationDataset)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(len(dataset)):
        example = dataset.load(index)
        rgb = np.rint(np.clip(example.image, 0.0, 1.0) * 255.0).astype(np.uint8)
        write_png(root / "images" / f"{example.image_id}.png", rgb.transpose(1, 2, 0))
        write_png(root / "masks" / f"{example.image_id}.png", example.target.astype(np.uint8))
    lines = [f"{c.name} {c.color[0]},{c.color[1]},{c.color[2]}\n" for c in dataset.classes]
    (root / "classes.txt").write_text("".join(lines))
    return root
