"""Pascal-Context (59 classes, mmsegmentation layout): label reduction, 480×480 resize, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from certseg.data.files import INVALID_LABEL
from certseg.data.io import resize_image, resize_label
from certseg.data.pascal_context import (
    CLASS_NAMES_59,
    PAPER_RESIZE,
    map_context_labels,
)
from certseg.data.registry import DatasetError, DatasetSpec, open_dataset, validate_dataset
from tests.data.layouts import PASCAL_IDS, truncate

VOC = "VOCdevkit/VOC2010"


def test_reduce_zero_label_mapping() -> None:
    raw = np.array([[0, 1, 2, 59], [255, 60, 100, 30]], dtype=np.int32)
    expected = [[255, 0, 1, 58], [255, INVALID_LABEL, INVALID_LABEL, 29]]
    np.testing.assert_array_equal(map_context_labels(raw), expected)


def test_fifty_nine_unique_class_names() -> None:
    assert len(CLASS_NAMES_59) == 59 == len(set(CLASS_NAMES_59))
    assert CLASS_NAMES_59[0] == "aeroplane" and CLASS_NAMES_59[-1] == "wood"
    assert CLASS_NAMES_59[36] == "person" and "background" not in CLASS_NAMES_59


def test_load_at_native_size(pascal_root: Path) -> None:
    dataset = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root)))
    assert dataset.image_ids() == sorted(PASCAL_IDS)
    assert len(dataset.classes) == 59 and dataset.name == "pascal_context59/val"
    example = dataset.load(1)
    raw = np.asarray(Image.open(pascal_root / VOC / "SegmentationClassContext/2008_000005.png"))
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    np.testing.assert_array_equal(example.target, expected)
    jpeg = np.asarray(Image.open(pascal_root / VOC / "JPEGImages/2008_000005.jpg"))
    np.testing.assert_allclose(example.image, jpeg.transpose(2, 0, 1) / 255.0, atol=1e-7)
    entry = dataset.manifest().entries[1]
    assert entry.files == ("JPEGImages/2008_000005.jpg", "SegmentationClassContext/2008_000005.png")


def test_root_may_be_the_voc2010_folder(pascal_root: Path) -> None:
    outer = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root)))
    inner = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root / VOC)))
    assert outer.manifest().sha256 == inner.manifest().sha256


def test_paper_resize_to_480(pascal_root: Path) -> None:
    spec = DatasetSpec(kind="pascal_context", root=str(pascal_root), resize=PAPER_RESIZE)
    dataset = open_dataset(spec)
    native = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root))).load(0)
    example = dataset.load(0)
    assert example.image.shape == (3, 480, 480) and example.target.shape == (480, 480)
    assert example.image.dtype == np.float32
    assert example.image.min() >= 0.0 and example.image.max() <= 1.0
    assert set(np.unique(example.target)) <= set(np.unique(native.target))
    entry = dataset.manifest().entries[0]
    assert (entry.height, entry.width) == (480, 480)
    assert dataset.name == "pascal_context59/val@480x480"


def test_image_resize_is_antialiased_and_label_resize_is_nearest() -> None:
    # One bright column in every 4: an antialiased 4× shrink keeps the mean (0.25) everywhere;
    # point-sampled bilinear would give 0 or 0.5 depending on the phase.
    # (Away from the borders, where the filter is cut and renormalized.)
    image = np.zeros((3, 8, 64), dtype=np.float32)
    image[:, :, ::4] = 1.0
    small = resize_image(image, (2, 16))
    np.testing.assert_allclose(small[:, :, 1:-1], 0.25, atol=1e-6)
    constant = resize_image(np.full((3, 5, 7), 0.7, dtype=np.float32), (11, 3))
    np.testing.assert_allclose(constant, 0.7, atol=1e-6)
    label = np.kron(np.array([[1, 2], [3, 255]], dtype=np.uint8), np.ones((3, 3), np.uint8))
    np.testing.assert_array_equal(resize_label(label, (2, 2)), [[1, 2], [3, 255]])
    assert resize_label(label, (12, 12)).dtype == np.uint8


def test_missing_split_file(pascal_root: Path) -> None:
    spec = DatasetSpec(kind="pascal_context", root=str(pascal_root), split="train")
    with pytest.raises(DatasetError, match=r"SegmentationContext/train\.txt: split file not found"):
        open_dataset(spec)


def test_not_a_pascal_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="JPEGImages"):
        open_dataset(DatasetSpec(kind="pascal_context", root=str(tmp_path)))


def test_empty_and_duplicated_split_files(pascal_root: Path) -> None:
    split_file = pascal_root / VOC / "ImageSets/SegmentationContext/val.txt"
    split_file.write_text("\n\n")
    spec = DatasetSpec(kind="pascal_context", root=str(pascal_root))
    with pytest.raises(DatasetError, match="empty split"):
        open_dataset(spec)
    split_file.write_text("2008_000002\n2008_000002\n")
    with pytest.raises(DatasetError, match="listed twice"):
        open_dataset(spec)


def test_listed_id_without_image_names_the_jpeg(pascal_root: Path) -> None:
    (pascal_root / VOC / "JPEGImages/2008_000007.jpg").unlink()
    dataset = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root)))
    with pytest.raises(DatasetError, match=r"2008_000007\.jpg: file not found"):
        validate_dataset(dataset, num_classes=59)


def test_truncated_jpeg_is_an_error(pascal_root: Path) -> None:
    truncate(pascal_root / VOC / "JPEGImages/2010_000001.jpg")
    dataset = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root)))
    with pytest.raises(DatasetError, match=r"2010_000001\.jpg: unreadable or truncated"):
        validate_dataset(dataset)


def test_label_value_60_is_outside_the_class_set(pascal_root: Path) -> None:
    path = pascal_root / VOC / "SegmentationClassContext/2008_000002.png"
    bad = np.asarray(Image.open(path)).copy()
    bad[0, :2] = (60, 77)
    Image.fromarray(bad).save(path)
    dataset = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root)))
    with pytest.raises(DatasetError, match=r"2008_000002\.png: label values \[60, 77\].*0\.\.59"):
        validate_dataset(dataset)


def test_class_count_mismatch_with_the_segmenter(pascal_root: Path) -> None:
    spec = DatasetSpec(kind="pascal_context", root=str(pascal_root), skip_invalid=True)
    with pytest.raises(DatasetError, match="59 classes, the segmenter predicts 60"):
        validate_dataset(open_dataset(spec), num_classes=60)
