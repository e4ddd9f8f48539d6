"""Generic image/mask folder: classes file, pairing by stem, image/mask modes, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from certseg.data.base import default_palette
from certseg.data.folder import read_classes_file
from certseg.data.registry import DatasetError, DatasetSpec, open_dataset, validate_dataset
from tests.data.layouts import FOLDER_STEMS, write_folder, write_png


def _open(root: Path, **kwargs: object) -> object:
    return open_dataset(DatasetSpec(kind="folder", root=str(root), **kwargs))  # type: ignore[arg-type]


def test_classes_file_names_colours_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# comment\n\nsky 70,130,180\nroad\ntraffic light  250, 170, 30\n")
    classes = read_classes_file(path)
    assert [c.name for c in classes] == ["sky", "road", "traffic light"]
    assert classes[0].color == (70, 130, 180)
    assert classes[1].color == default_palette(3)[1]
    assert classes[2].color == (250, 170, 30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sky 300,0,0\n", r"colour \(300, 0, 0\)"),
        ("sky\nsky\n", "listed twice"),
        ("# nothing\n", "no classes"),
    ],
)
def test_bad_classes_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_classes_file(path)


def test_missing_classes_file_is_named(folder_root: Path) -> None:
    (folder_root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=r"classes\.txt: classes file not found"):
        _open(folder_root)


def test_explicit_classes_file(folder_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "names.txt"
    other.write_text("a\nb\nc\nd\n")
    dataset = open_dataset(
        DatasetSpec(kind="folder", root=str(folder_root), classes_file=str(other))
    )
    assert [c.name for c in dataset.classes] == ["a", "b", "c", "d"]


def test_pairs_by_stem_and_reads_masks_as_indices(folder_root: Path) -> None:
    dataset = open_dataset(DatasetSpec(kind="folder", root=str(folder_root)))
    assert dataset.image_ids() == list(FOLDER_STEMS)
    example = dataset.load(1)
    mask = np.asarray(Image.open(folder_root / "masks/b02.png"))
    np.testing.assert_array_equal(example.target, mask)
    assert example.target[0, 0] == 255
    rgb = np.asarray(Image.open(folder_root / "images/b02.png"))
    np.testing.assert_allclose(example.image, rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_palette_mask_indices_are_class_indices(folder_root: Path) -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 759)
    mask.save(folder_root / "masks/a01.png")
    write_png(folder_root / "images/a01.png", np.zeros((2, 3, 3), np.uint8))
    np.testing.assert_array_equal(open_dataset(_spec(folder_root)).load(0).target, indices)


def test_sixteen_bit_mask_for_many_classes(tmp_path: Path) -> None:
    names = "".join(f"c{i}\n" for i in range(300))
    root = write_folder(tmp_path / "f", stems=("x",), classes_text=names)
    mask = np.array([[0, 299], [1000, 256]], dtype=np.uint16)
    write_png(root / "masks/x.png", mask)
    write_png(root / "images/x.png", np.zeros((2, 2, 3), np.uint8))
    dataset = open_dataset(DatasetSpec(kind="folder", root=str(root), ignore_index=1000))
    target = validate_dataset(dataset, num_classes=300).dataset.load(0).target
    assert target.dtype == np.int32
    np.testing.assert_array_equal(target, mask)


def test_grayscale_and_rgba_images_become_rgb(folder_root: Path) -> None:
    gray = np.arange(99, dtype=np.uint8).reshape(9, 11)
    write_png(folder_root / "images/a01.png", gray)
    rgba = np.zeros((9, 11, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7  # alpha is dropped, not composited
    Image.fromarray(rgba, mode="RGBA").save(folder_root / "images/b02.png")
    dataset = open_dataset(_spec(folder_root))
    np.testing.assert_allclose(dataset.load(0).image, np.stack([gray] * 3) / 255.0, atol=1e-7)
    np.testing.assert_allclose(dataset.load(1).image[0], 200 / 255.0, atol=1e-7)
    np.testing.assert_allclose(dataset.load(1).image[1:], 0.0)


def test_sixteen_bit_image_and_rgb_mask_are_rejected(folder_root: Path) -> None:
    write_png(folder_root / "images/a01.png", np.zeros((9, 11), np.uint16))
    dataset = open_dataset(_spec(folder_root))
    with pytest.raises(DatasetError, match=r"a01\.png: image mode 'I;16' not supported"):
        dataset.load(0)
    write_png(folder_root / "masks/b02.png", np.zeros((9, 11, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"masks/b02\.png: label mode 'RGB'"):
        dataset.load(1)


def test_mask_without_image_raises_or_is_recorded(folder_root: Path) -> None:
    write_png(folder_root / "masks/zz.png", np.zeros((9, 11), np.uint8))
    with pytest.raises(DatasetError, match=r"masks/zz\.png: mask without an image"):
        validate_dataset(open_dataset(_spec(folder_root)))
    report = validate_dataset(open_dataset(_spec(folder_root, skip_invalid=True)))
    assert len(report.dataset) == 3
    assert report.skipped == (("masks/zz.png", "mask without an image; expected images/zz.<ext>"),)
    assert report.dataset.manifest().skipped == report.skipped


def test_image_without_mask_is_named(folder_root: Path) -> None:
    (folder_root / "masks/c03.png").unlink()
    with pytest.raises(DatasetError, match=r"images/c03\.png: missing label.*masks/c03\.png"):
        validate_dataset(open_dataset(_spec(folder_root)))


def test_non_image_file_and_hidden_files(folder_root: Path) -> None:
    (folder_root / "images/.DS_Store").write_bytes(b"x")
    (folder_root / "images/notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"images/notes\.txt: not an image file"):
        validate_dataset(open_dataset(_spec(folder_root)))


def test_duplicate_stems_are_ambiguous(folder_root: Path) -> None:
    Image.open(folder_root / "images/a01.png").save(folder_root / "images/a01.jpg")
    with pytest.raises(DatasetError, match="a01"):
        open_dataset(_spec(folder_root))


def test_empty_images_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", stems=())
    with pytest.raises(DatasetError, match="empty folder"):
        open_dataset(_spec(root))


def test_configurable_ignore_index(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", ignore_index=9)
    target = open_dataset(_spec(root, ignore_index=9)).load(0).target
    assert target[0, 0] == 9
    with pytest.raises(DatasetError, match=r"\[255\]"):
        open_dataset(_spec(write_folder(tmp_path / "g"), ignore_index=9)).load(0)
    with pytest.raises(DatasetError, match="ignore_index 2 is a class index"):
        open_dataset(_spec(root, ignore_index=2))


def test_value_outside_classes_and_size_mismatch(folder_root: Path) -> None:
    mask = np.asarray(Image.open(folder_root / "masks/a01.png")).copy()
    mask[4, 4] = 3
    write_png(folder_root / "masks/a01.png", mask)
    with pytest.raises(DatasetError, match=r"masks/a01\.png: label values \[3\].*0\.\.2"):
        validate_dataset(open_dataset(_spec(folder_root)))
    write_png(folder_root / "masks/a01.png", np.zeros((9, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"a01\.png: label size.*\(9, 10\).*\(9, 11\)"):
        validate_dataset(open_dataset(_spec(folder_root)))


def _spec(root: Path, **kwargs: object) -> DatasetSpec:
    return DatasetSpec(kind="folder", root=str(root), **kwargs)  # type: ignore[arg-type]


def test_synthetic_dataset_round_trips_through_the_folder_layout(tmp_path: Path) -> None:
    from tests.data.layouts import write_folder_from_dataset

    synthetic = open_dataset(DatasetSpec(kind="synthetic", num_images=3, size=32))
    root = write_folder_from_dataset(tmp_path / "exported", synthetic)
    folder = open_dataset(_spec(root))
    report = validate_dataset(folder, num_classes=len(synthetic.classes))
    assert report.dataset.image_ids() == synthetic.image_ids()
    assert folder.classes == synthetic.classes
    for index in range(3):
        original, loaded = synthetic.load(index), folder.load(index)
        np.testing.assert_array_equal(loaded.target, original.target)
        np.testing.assert_allclose(loaded.image, original.image, atol=0.5 / 255 + 1e-6)


def test_empty_file_is_unreadable(folder_root: Path) -> None:
    (folder_root / "images/b02.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"images/b02\.png: unreadable or truncated"):
        validate_dataset(open_dataset(_spec(folder_root)))


def test_palette_image_and_bilevel_mask(folder_root: Path) -> None:
    indices = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    image.save(folder_root / "images/c03.png")
    Image.fromarray(indices.astype(bool)).save(folder_root / "masks/c03.png")  # mode "1"
    example = open_dataset(_spec(folder_root)).load(2)
    np.testing.assert_allclose(example.image[:, 0, 1], np.array([200, 150, 100]) / 255.0)
    np.testing.assert_allclose(example.image[:, 0, 0], np.array([10, 20, 30]) / 255.0)
    np.testing.assert_array_equal(example.target, indices)
