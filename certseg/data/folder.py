"""A generic image/mask folder with a classes file.

Layout under `root`:
    images/<stem>.<ext>    ext one of .png .jpg .jpeg .bmp .tif .tiff .webp (case-insensitive)
    masks/<stem>.png       single-channel class-index PNG (mode L, P or I;16): pixel value = class
                           index in [0, C), or the ignore index (DatasetSpec.ignore_index, 255 by
                           default). A palette (P) PNG's indices are the class indices.
    classes.txt            (or DatasetSpec.classes_file) — see `read_classes_file`
Images and masks pair by file stem; the image id is the stem; items are sorted by id. Hidden files
(starting with ".") and sub-folders are not listed. A mask without an image, or a file with
another extension, is reported by validation (or skipped and recorded with skip_invalid). The
split is not used for folders.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from certseg.data.base import ClassInfo, DatasetError, default_palette
from certseg.data.files import INVALID_LABEL, FileDataset, FileItem, LabelRules, apply_subset
from certseg.data.spec import DatasetSpec

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
MASK_EXTENSION = ".png"
CLASSES_FILE = "classes.txt"

_CLASS_LINE = re.compile(r"^(?P<name>.*?)(?:\s+(?P<r>\d+)\s*,\s*(?P<g>\d+)\s*,\s*(?P<b>\d+))?$")


def read_classes_file(path: Path) -> tuple[ClassInfo, ...]:
    """Parse a classes file: one class per line, in class-index order (first line = class 0).

    Each line is `name` or `name R,G,B` (the colour, 0..255 each, after whitespace; names may
    contain spaces). Blank lines and lines starting with "#" are skipped. A class without a colour
    gets the default (Pascal VOC) palette colour of its index. Names must be unique.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: classes file not found; expected one class name per line "
            "(optionally followed by R,G,B)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: unreadable classes file ({error})") from None
    parsed: list[tuple[str, tuple[int, int, int] | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _CLASS_LINE.match(stripped)
        name = match.group("name").strip() if match else ""
        if match is None or not name:
            raise DatasetError(f"{path}: line {number} {line!r}; expected `name` or `name R,G,B`")
        color: tuple[int, int, int] | None = None
        if match.group("r") is not None:
            rgb = (int(match.group("r")), int(match.group("g")), int(match.group("b")))
            if max(rgb) > 255:
                raise DatasetError(
                    f"{path}: line {number} colour {rgb}; expected R,G,B each in 0..255"
                )
            color = rgb
        parsed.append((name, color))
    if not parsed:
        raise DatasetError(f"{path}: no classes; expected one class name per line")
    names = [name for name, _ in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: class names listed twice: {duplicates}; expected unique")
    palette = default_palette(len(parsed))
    return tuple(
        ClassInfo(name, color if color is not None else palette[index])
        for index, (name, color) in enumerate(parsed)
    )


def map_class_indices(raw: np.ndarray, *, num_classes: int, ignore_index: int) -> np.ndarray:
    """(H, W) stored values → int32 unchanged where in [0, C) or == ignore, else INVALID_LABEL."""
    raw = np.asarray(raw, dtype=np.int32)
    valid = ((raw >= 0) & (raw < num_classes)) | (raw == ignore_index)
    return np.where(valid, raw, INVALID_LABEL).astype(np.int32)


def _listed(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def open_folder(spec: DatasetSpec) -> FileDataset:
    """List images/ and masks/ under the root (no pixels read); apply the subset."""
    if spec.root is None:
        raise ValueError("DatasetSpec.root is required for kind 'folder'")
    root = Path(spec.root)
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: not a folder; expected {root}/images/<stem>.<ext> and "
                f"{root}/masks/<stem>.png"
            )
    classes_path = Path(spec.classes_file) if spec.classes_file else root / CLASSES_FILE
    classes = read_classes_file(classes_path)
    stray: list[tuple[str, str]] = []
    images: dict[str, Path] = {}
    for path in _listed(image_dir):
        rel = f"images/{path.name}"
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            stray.append((rel, f"not an image file; expected one of {sorted(IMAGE_EXTENSIONS)}"))
            continue
        if path.stem in images:
            raise DatasetError(
                f"{path}: image id {path.stem!r} also given by {images[path.stem]}; expected "
                "one image per stem"
            )
        images[path.stem] = path
    masks: dict[str, Path] = {}
    for path in _listed(mask_dir):
        rel = f"masks/{path.name}"
        if path.suffix.lower() != MASK_EXTENSION:
            stray.append((rel, "not a PNG mask; expected masks/<stem>.png"))
            continue
        masks[path.stem] = path
        if path.stem not in images:
            stray.append((rel, f"mask without an image; expected images/{path.stem}.<ext>"))
    if not images:
        raise DatasetError(
            f"{image_dir}: empty folder; expected images with extensions {sorted(IMAGE_EXTENSIONS)}"
        )
    items = [
        FileItem(
            stem,
            f"images/{path.name}",
            f"masks/{masks[stem].name}" if stem in masks else f"masks/{stem}{MASK_EXTENSION}",
        )
        for stem, path in sorted(images.items())
    ]
    num_classes, ignore_index = len(classes), spec.ignore_index
    rules = LabelRules(
        label_map=partial(map_class_indices, num_classes=num_classes, ignore_index=ignore_index),
        expected=f"class indices 0..{num_classes - 1} (from {classes_path.name}) or the ignore "
        f"index {ignore_index}",
    )
    suffix = f"@{spec.resize[0]}x{spec.resize[1]}" if spec.resize else ""
    return FileDataset(
        name=f"folder{suffix}",
        classes=classes,
        ignore_index=ignore_index,
        root=root,
        items=apply_subset(items, spec.subset),
        rules=rules,
        resize=spec.resize,
        skip_invalid=spec.skip_invalid,
        stray=stray,
        classes_source=str(classes_path),
    )
