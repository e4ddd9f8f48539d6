"""Pascal-Context, 59 classes, in mmsegmentation's converted layout (the one most users have).

Layout (mmsegmentation's tools/dataset_converters/pascal_context.py writes it from the Detail API
annotations trainval_merged.json):
    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    VOCdevkit/VOC2010/SegmentationClassContext/<id>.png      (uint8, values 0..59)
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt   (one id per line)
`root` may be the VOC2010 folder itself, the VOCdevkit folder, or a folder containing
VOCdevkit/VOC2010. Manifest paths are relative to the VOC2010 folder. The image id is the VOC
id (e.g. "2008_000002"), sorted.

Labels: stored 0 is background, which the 59-class protocol ignores; 1..59 are the 59 classes.
As mmsegmentation's PascalContextDataset59 (reduce_zero_label=True) and the SegCertify HRNet
loader do: 0 → ignore, k → k - 1 for k in 1..59, and a stored 255 stays ignore. Other values are
invalid.

Evaluation size: the SegCertify / Laousy et al. pipelines resize Pascal-Context val images to
480×480 (image bilinear, label nearest) before noise. Pass DatasetSpec(resize=(480, 480)) to do
the same; the resize happens at load time, before noise, so it defines the input space the
certificate is about (radii are in [0, 1] units of the 480×480 image).
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from certseg.data.base import DatasetError, classes_from_names
from certseg.data.files import INVALID_LABEL, FileDataset, FileItem, LabelRules, apply_subset
from certseg.data.spec import DatasetSpec

PAPER_RESIZE = (480, 480)
"""(H, W) the SegCertify / Laousy et al. evaluation resizes Pascal-Context images to."""

CLASS_NAMES_59: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip
"""The 59 classes in label order (stored value k + 1 is class k), as in mmsegmentation."""

IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClassContext"
SPLIT_DIR = "ImageSets/SegmentationContext"


def map_context_labels(raw: np.ndarray, *, ignore_index: int = 255) -> np.ndarray:
    """(H, W) stored values → (H, W) int32: 0 → ignore, 1..59 → 0..58, 255 → ignore, else
    INVALID_LABEL."""
    raw = np.asarray(raw, dtype=np.int32)
    out = np.full(raw.shape, INVALID_LABEL, dtype=np.int32)
    classes = (raw >= 1) & (raw <= len(CLASS_NAMES_59))
    out[classes] = raw[classes] - 1
    out[(raw == 0) | (raw == 255)] = ignore_index
    return out


def find_voc2010(root: Path) -> Path:
    """The VOC2010 folder: root, root/VOCdevkit/VOC2010 or root/VOC2010 (the first with images)."""
    for candidate in (root, root / "VOCdevkit" / "VOC2010", root / "VOC2010"):
        if (candidate / IMAGE_DIR).is_dir():
            return candidate
    raise DatasetError(
        f"{root}: no Pascal-Context layout found; expected {root}/{IMAGE_DIR} or "
        f"{root}/VOCdevkit/VOC2010/{IMAGE_DIR} (with {LABEL_DIR}/ and {SPLIT_DIR}/<split>.txt)"
    )


def read_split_ids(split_file: Path) -> list[str]:
    """Ids listed in an ImageSets split file (one per line; blank lines ignored)."""
    try:
        text = split_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"{split_file}: split file not found; expected one image id per line (mmsegmentation's"
            " converter writes it)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{split_file}: unreadable split file ({error})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    for image_id in ids:
        if "/" in image_id or "\\" in image_id or " " in image_id:
            raise DatasetError(
                f"{split_file}: line {image_id!r} is not an image id; expected e.g. 2008_000002"
            )
    return ids


def open_pascal_context(spec: DatasetSpec) -> FileDataset:
    """List a Pascal-Context split from its split file (no pixels read); apply the subset."""
    if spec.root is None:
        raise ValueError("DatasetSpec.root is required for kind 'pascal_context'")
    voc = find_voc2010(Path(spec.root))
    split_file = voc / SPLIT_DIR / f"{spec.split}.txt"
    listed = read_split_ids(split_file)
    ids = sorted(set(listed))
    if len(ids) != len(listed):
        repeated = sorted(i for i, count in Counter(listed).items() if count > 1)[:5]
        raise DatasetError(f"{split_file}: ids listed twice: {repeated}; expected each id once")
    if not ids:
        raise DatasetError(f"{split_file}: empty split; expected at least one image id")
    items = [
        FileItem(image_id, f"{IMAGE_DIR}/{image_id}.jpg", f"{LABEL_DIR}/{image_id}.png")
        for image_id in ids
    ]
    ignore_index = spec.ignore_index
    rules = LabelRules(
        label_map=partial(map_context_labels, ignore_index=ignore_index),
        expected="0..59 (0 = background, ignored) or 255",
    )
    suffix = f"@{spec.resize[0]}x{spec.resize[1]}" if spec.resize else ""
    return FileDataset(
        name=f"pascal_context59/{spec.split}{suffix}",
        classes=classes_from_names(CLASS_NAMES_59),
        ignore_index=ignore_index,
        root=voc,
        items=apply_subset(items, spec.subset),
        rules=rules,
        resize=spec.resize,
        skip_invalid=spec.skip_invalid,
        classes_source="the 59-class Pascal-Context protocol",
    )
