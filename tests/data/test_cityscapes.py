"""Cityscapes loader: official label-id → train-id mapping, layout, ids, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from certseg.data.cityscapes import (
    cityscapes_classes,
    label_id_to_train_id,
    map_label_ids,
)
from certseg.data.files import INVALID_LABEL
from certseg.data.registry import DatasetError, DatasetSpec, open_dataset, validate_dataset
from tests.data.layouts import CITYSCAPES_STEMS, write_cityscapes, write_png

# Known ids from the Cityscapes label definition (typed here from the dataset's documentation,
# independent of cityscapesscripts): label id → train id.
KNOWN = {7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13, 33: 18, 0: 255, 1: 255, 6: 255, 9: 255}


@pytest.mark.parametrize(("label_id", "train_id"), sorted(KNOWN.items()))
def test_known_label_ids_map_to_train_ids(label_id: int, train_id: int) -> None:
    assert label_id_to_train_id(label_id) == train_id


def test_license_plate_and_unknown_ids() -> None:
    assert label_id_to_train_id(-1) == 255  # license plate: trainId -1 → ignore
    assert label_id_to_train_id(0, ignore_index=250) == 250
    with pytest.raises(ValueError, match="34"):
        label_id_to_train_id(34)


def test_array_mapping_ignore_and_invalid_values() -> None:
    raw = np.array([[7, 26, 24, 0], [255, 34, 200, 33]], dtype=np.int32)
    mapped = map_label_ids(raw)
    expected = [[0, 13, 11, 255], [255, INVALID_LABEL, INVALID_LABEL, 18]]
    np.testing.assert_array_equal(mapped, expected)


def test_nineteen_classes_with_official_names_and_colours() -> None:
    classes = cityscapes_classes()
    assert len(classes) == 19
    assert classes[0].name == "road" and classes[0].color == (128, 64, 128)
    assert classes[11].name == "person" and classes[11].color == (220, 20, 60)
    assert classes[13].name == "car" and classes[13].color == (0, 0, 142)
    assert classes[18].name == "bicycle"


def test_load_maps_every_pixel_like_a_slow_reference(cityscapes_root: Path) -> None:
    from cityscapesscripts.helpers.labels import id2label

    dataset = open_dataset(DatasetSpec(kind="cityscapes", root=str(cityscapes_root)))
    assert dataset.image_ids() == sorted(CITYSCAPES_STEMS)
    example = dataset.load(2)
    stem = "lindau_000000_000019"
    assert example.image_id == stem
    raw = np.asarray(Image.open(cityscapes_root / f"gtFine/val/lindau/{stem}_gtFine_labelIds.png"))
    expected = np.empty(raw.shape, dtype=np.int64)
    for (row, col), value in np.ndenumerate(raw):  # per-pixel loop through id2label
        train_id = id2label[int(value)].trainId
        expected[row, col] = train_id if 0 <= train_id <= 18 else 255
    np.testing.assert_array_equal(example.target, expected)
    rgb = np.asarray(Image.open(cityscapes_root / f"leftImg8bit/val/lindau/{stem}_leftImg8bit.png"))
    np.testing.assert_allclose(example.image, rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)
    assert example.image.dtype == np.float32 and example.image.shape == (3, 8, 16)
    assert set(np.unique(example.target)) <= set(range(19)) | {255}


def test_manifest_lists_relative_official_paths(cityscapes_root: Path) -> None:
    manifest = open_dataset(DatasetSpec(kind="cityscapes", root=str(cityscapes_root))).manifest()
    first = manifest.entries[0]
    assert first.files == (
        "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
        "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png",
    )
    assert (first.height, first.width) == (8, 16)
    assert manifest.num_classes == 19 and manifest.ignore_index == 255


def test_resize_changes_size_and_name(cityscapes_root: Path) -> None:
    spec = DatasetSpec(kind="cityscapes", root=str(cityscapes_root), resize=(4, 8))
    dataset = open_dataset(spec)
    example = dataset.load(0)
    assert example.image.shape == (3, 4, 8) and example.target.shape == (4, 8)
    assert dataset.manifest().entries[0].height == 4
    assert dataset.name == "cityscapes/val@4x8"


def test_missing_split_folder_names_the_expected_layout(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "cs", split="train")
    with pytest.raises(DatasetError, match=r"leftImg8bit/val.*gtFine/val"):
        open_dataset(DatasetSpec(kind="cityscapes", root=str(tmp_path / "cs")))


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "cs" / "leftImg8bit" / "val" / "frankfurt").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty split"):
        open_dataset(DatasetSpec(kind="cityscapes", root=str(tmp_path / "cs")))


def test_label_value_outside_the_label_ids_names_file_and_value(cityscapes_root: Path) -> None:
    path = cityscapes_root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"
    bad = np.asarray(Image.open(path)).copy()
    bad[3, 5] = 50
    write_png(path, bad)
    dataset = open_dataset(DatasetSpec(kind="cityscapes", root=str(cityscapes_root)))
    with pytest.raises(DatasetError, match=r"lindau_000000_000019_gtFine_labelIds\.png.*\[50\]"):
        validate_dataset(dataset)


def test_missing_label_raises_or_is_skipped(cityscapes_root: Path) -> None:
    (cityscapes_root / "gtFine/val/munster/munster_000000_000019_gtFine_labelIds.png").unlink()
    spec = DatasetSpec(kind="cityscapes", root=str(cityscapes_root))
    with pytest.raises(
        DatasetError, match=r"munster_000000_000019_leftImg8bit\.png.*missing label"
    ):
        validate_dataset(open_dataset(spec))
    skipping = DatasetSpec(kind="cityscapes", root=str(cityscapes_root), skip_invalid=True)
    report = validate_dataset(open_dataset(skipping), num_classes=19)
    assert len(report.dataset) == 3
    assert report.skipped == (
        (
            "leftImg8bit/val/munster/munster_000000_000019_leftImg8bit.png",
            "missing label; expected gtFine/val/munster/munster_000000_000019_gtFine_labelIds.png",
        ),
    )
    assert report.dataset.manifest().skipped == report.skipped


def test_custom_ignore_index(cityscapes_root: Path) -> None:
    spec = DatasetSpec(kind="cityscapes", root=str(cityscapes_root), ignore_index=250)
    target = open_dataset(spec).load(0).target
    assert 250 in target and 255 not in target
