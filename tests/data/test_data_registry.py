"""Registry: specs, subset selection, dispatch, the validation pass and manifest stability."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from certseg.data.base import ClassInfo, DatasetError, Example, Manifest, SegmentationDataset
from certseg.data.registry import open_dataset, validate_dataset
from certseg.data.spec import DatasetSpec, SubsetSpec
from tests.data.layouts import (
    CITYSCAPES_STEMS,
    snapshot,
    truncate,
    write_cityscapes,
    write_folder,
    write_pascal_context,
    write_png,
)

IDS = [f"img{i:02d}" for i in range(10)]


def names_field(error: ValidationError, field: str) -> bool:
    """Whether a pydantic error names `field`: as an entry's location, or as the field a check
    across fields names first in its message ("root: required for kind 'folder'")."""
    return any(
        item["loc"][-1:] == (field,)
        or item["msg"].removeprefix("Value error, ").startswith(f"{field}: ")
        for item in error.errors()
    )


# --- SubsetSpec ------------------------------------------------------------------------------


def test_subset_first_every_and_both() -> None:
    assert SubsetSpec(first=3).select(IDS) == [0, 1, 2]
    assert SubsetSpec(every=4).select(IDS) == [0, 4, 8]
    assert SubsetSpec(every=3, first=2).select(IDS) == [0, 3]
    assert SubsetSpec(first=100).select(IDS) == list(range(10))


def test_subset_ids_keep_dataset_order_and_reject_unknown() -> None:
    assert SubsetSpec(ids=("img07", "img02")).select(IDS) == [2, 7]
    with pytest.raises(DatasetError, match=r"'nope'.*expected ids like 'img00'"):
        SubsetSpec(ids=("img01", "nope")).select(IDS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "first"),
        ({"first": 0}, "first"),
        ({"every": 0}, "every"),
        ({"first": True}, "first"),
        ({"every": 2.0}, "every"),
        ({"ids": ()}, "ids"),
        ({"ids": ("a", "a")}, "ids"),
        ({"ids": ("a", "")}, "ids"),
        ({"ids": ("a",), "first": 2}, "ids"),
        ({"ids": ("a",), "last": 2}, "last"),
    ],
)
def test_subset_spec_rejects(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match="SubsetSpec") as info:
        SubsetSpec(**kwargs)  # type: ignore[arg-type]
    assert names_field(info.value, field), info.value


def test_subset_ids_are_kept_as_a_tuple() -> None:
    """A list of ids (as YAML gives) is validated and stored as a tuple: the spec stays hashable."""
    subset = SubsetSpec(ids=["img03", "img01"])  # type: ignore[arg-type]
    assert subset.ids == ("img03", "img01") and hash(subset) == hash(SubsetSpec(ids=subset.ids))


# --- DatasetSpec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "imagenet"}, "kind"),
        ({"kind": "folder"}, "root"),
        ({"kind": "synthetic", "root": "/x"}, "root"),
        ({"kind": "synthetic", "resize": (8, 8)}, "resize"),
        ({"kind": "cityscapes", "root": "/x", "resize": (8, 0)}, 1),
        ({"kind": "cityscapes", "root": "/x", "resize": (8, 8, 8)}, "resize"),
        ({"kind": "cityscapes", "root": "/x", "resize": (8.0, 8)}, 0),
        ({"kind": "cityscapes", "root": "/x", "ignore_index": -1}, "ignore_index"),
        ({"kind": "cityscapes", "root": "/x", "ignore_index": True}, "ignore_index"),
        ({"kind": "cityscapes", "root": "/x", "classes_file": "c.txt"}, "classes_file"),
        ({"kind": "cityscapes", "root": "/x", "split": "../val"}, "split"),
        ({"kind": "cityscapes", "root": "/x", "split": ""}, "split"),
        ({"kind": "synthetic", "num_images": 0}, "num_images"),
        ({"kind": "synthetic", "size": 0}, "size"),
        ({"kind": "synthetic", "seed": -1}, "seed"),
        ({"kind": "synthetic", "sizes": 8}, "sizes"),
    ],
)
def test_dataset_spec_names_the_bad_field(kwargs: dict[str, object], field: str | int) -> None:
    """field: the offending field (an int: that entry of resize)."""
    with pytest.raises(ValidationError, match="DatasetSpec") as info:
        DatasetSpec(**kwargs)  # type: ignore[arg-type]
    if isinstance(field, int):
        assert any(item["loc"] == ("resize", field) for item in info.value.errors()), info.value
    else:
        assert names_field(info.value, field), info.value


def test_dataset_spec_resolves_paths_and_revalidates_a_new_split(tmp_path: Path) -> None:
    spec = DatasetSpec(kind="folder", root="data/x", classes_file="c.txt", resize=[8, 9])  # type: ignore[arg-type]
    assert spec.resize == (8, 9)
    resolved = spec.resolved(tmp_path, split="train")
    assert resolved.root == str(tmp_path / "data/x")
    assert resolved.classes_file == str(tmp_path / "c.txt")
    assert resolved.split == "train" and resolved.resize == (8, 9)
    assert spec.resolved(None) == spec
    url = DatasetSpec(kind="cityscapes", root="s3://bucket/cs")
    assert url.resolved(tmp_path).root == "s3://bucket/cs"
    with pytest.raises(ValidationError, match="plain name"):
        spec.resolved(tmp_path, split="a/b")


def test_replaced_copies_stay_validated() -> None:
    """The run layer copies the dataset section with dataclasses.replace (e.g. skip_invalid):
    the copy is validated like the original."""
    spec = DatasetSpec(kind="folder", root="data/x")
    assert dataclasses.replace(spec, skip_invalid=True).skip_invalid
    with pytest.raises(ValidationError, match="root"):
        dataclasses.replace(spec, root=None)


# --- dispatch --------------------------------------------------------------------------------


def test_open_each_kind(tmp_path: Path) -> None:
    roots = {
        "cityscapes": write_cityscapes(tmp_path / "cs"),
        "pascal_context": write_pascal_context(tmp_path / "pc"),
        "folder": write_folder(tmp_path / "f"),
    }
    expected_classes = {"cityscapes": 19, "pascal_context": 59, "folder": 3}
    for kind, root in roots.items():
        dataset = open_dataset(DatasetSpec(kind=kind, root=str(root)))  # type: ignore[arg-type]
        assert isinstance(dataset, SegmentationDataset)
        report = validate_dataset(dataset, num_classes=expected_classes[kind])
        assert report.checked == len(dataset) and report.skipped == ()


def test_synthetic_with_subset() -> None:
    spec = DatasetSpec(kind="synthetic", num_images=6, size=32, subset=SubsetSpec(every=2))
    dataset = open_dataset(spec)
    assert dataset.image_ids() == [
        "synthetic-val-00000",
        "synthetic-val-00002",
        "synthetic-val-00004",
    ]
    full = open_dataset(DatasetSpec(kind="synthetic", num_images=6, size=32))
    np.testing.assert_array_equal(dataset.load(1).image, full.load(2).image)
    assert [e.image_id for e in dataset.manifest().entries] == dataset.image_ids()
    report = validate_dataset(dataset, num_classes=len(full.classes))
    assert report.checked == 3


def test_subset_is_applied_before_the_manifest(cityscapes_root: Path) -> None:
    ids = ("lindau_000000_000019", "frankfurt_000000_000294")
    spec = DatasetSpec(kind="cityscapes", root=str(cityscapes_root), subset=SubsetSpec(ids=ids))
    dataset = open_dataset(spec)
    assert dataset.image_ids() == sorted(ids)
    assert [e.image_id for e in dataset.manifest().entries] == sorted(ids)
    with pytest.raises(DatasetError, match="frankfurt_000000_999999"):
        open_dataset(
            DatasetSpec(
                kind="cityscapes",
                root=str(cityscapes_root),
                subset=SubsetSpec(ids=("frankfurt_000000_999999",)),
            )
        )


# --- validation ------------------------------------------------------------------------------


class _Empty:
    name = "empty"
    classes = (ClassInfo("a", (0, 0, 0)),)
    ignore_index = 255

    def __len__(self) -> int:
        return 0

    def image_ids(self) -> list[str]:
        return []

    def load(self, index: int) -> Example:
        raise IndexError(index)

    def manifest(self) -> Manifest:
        return Manifest("empty", 1, 255, ())


def test_empty_dataset_is_an_error() -> None:
    with pytest.raises(DatasetError, match="'empty' is empty"):
        validate_dataset(_Empty())


def test_class_count_mismatch_raises_even_when_skipping(folder_root: Path) -> None:
    spec = DatasetSpec(kind="folder", root=str(folder_root), skip_invalid=True)
    message = r"classes from .*classes\.txt\) has 3 classes, the segmenter predicts 19"
    with pytest.raises(DatasetError, match=message):
        validate_dataset(open_dataset(spec), num_classes=19)


def test_truncated_png_raises_or_is_skipped(cityscapes_root: Path) -> None:
    image = cityscapes_root / "leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png"
    truncate(image, keep=0.6)
    spec = DatasetSpec(kind="cityscapes", root=str(cityscapes_root))
    with pytest.raises(DatasetError, match=rf"{image}: unreadable or truncated image file"):
        validate_dataset(open_dataset(spec))
    skipping = DatasetSpec(kind="cityscapes", root=str(cityscapes_root), skip_invalid=True)
    report = validate_dataset(open_dataset(skipping))
    assert report.checked == 4 and len(report.dataset) == 3
    assert "frankfurt_000000_000576" not in report.dataset.image_ids()
    ((file, reason),) = report.skipped
    assert file == "leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png"
    assert reason.startswith("unreadable or truncated image file")


def test_on_valid_sees_each_valid_item_once_in_order(cityscapes_root: Path) -> None:
    """The validation pass hands each valid item to on_valid (so a caller keeps its target
    instead of decoding it again), skipped ones never, in the validated dataset's order."""
    image = cityscapes_root / "leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png"
    truncate(image, keep=0.6)
    skipping = DatasetSpec(kind="cityscapes", root=str(cityscapes_root), skip_invalid=True)
    seen: list[Example] = []
    report = validate_dataset(open_dataset(skipping), on_valid=seen.append)
    assert [e.image_id for e in seen] == report.dataset.image_ids()
    for index, example in enumerate(seen):
        again = report.dataset.load(index)
        assert np.array_equal(example.image, again.image)
        assert np.array_equal(example.target, again.target)
    synthetic = open_dataset(DatasetSpec(kind="synthetic", num_images=3, size=32))
    seen.clear()
    validate_dataset(synthetic, on_valid=seen.append)
    assert [e.image_id for e in seen] == synthetic.image_ids()


def test_all_items_invalid_still_raises(folder_root: Path) -> None:
    for mask in (folder_root / "masks").iterdir():
        mask.unlink()
    spec = DatasetSpec(kind="folder", root=str(folder_root), skip_invalid=True)
    with pytest.raises(DatasetError, match="no valid image"):
        validate_dataset(open_dataset(spec))


def test_validation_writes_nothing(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f")
    write_png(root / "masks/orphan.png", np.zeros((9, 11), np.uint8))
    before = snapshot(tmp_path)
    spec = DatasetSpec(kind="folder", root=str(root), skip_invalid=True)
    report = validate_dataset(open_dataset(spec), num_classes=3)
    report.dataset.manifest()
    with pytest.raises(DatasetError):
        validate_dataset(open_dataset(DatasetSpec(kind="folder", root=str(root))))
    assert snapshot(tmp_path) == before


# --- manifest --------------------------------------------------------------------------------


def test_manifest_is_stable_and_independent_of_the_root(tmp_path: Path) -> None:
    first = write_cityscapes(tmp_path / "a" / "cityscapes")
    second = write_cityscapes(tmp_path / "b" / "elsewhere")
    m1 = open_dataset(DatasetSpec(kind="cityscapes", root=str(first))).manifest()
    m1_again = open_dataset(DatasetSpec(kind="cityscapes", root=str(first))).manifest()
    m2 = open_dataset(DatasetSpec(kind="cityscapes", root=str(second))).manifest()
    assert m1.sha256 == m1_again.sha256 == m2.sha256
    assert [e.image_id for e in m1.entries] == sorted(CITYSCAPES_STEMS)
    assert str(tmp_path) not in m1.to_json()


def test_manifest_hashes_file_contents(tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path / "cs")
    spec = DatasetSpec(kind="cityscapes", root=str(root))
    before = open_dataset(spec).manifest()
    label = root / "gtFine/val/munster/munster_000000_000019_gtFine_labelIds.png"
    write_png(label, np.full((8, 16), 7, np.uint8))
    after = open_dataset(spec).manifest()
    assert before.sha256 != after.sha256
    changed = [a.image_id for a, b in zip(before.entries, after.entries, strict=True) if a != b]
    assert changed == ["munster_000000_000019"]
    import hashlib

    entry = after.entries[-1]
    digests = [hashlib.sha256((root / f).read_bytes()).hexdigest() for f in entry.files]
    assert entry.sha256 == hashlib.sha256("\n".join(digests).encode()).hexdigest()


def test_validated_manifest_equals_the_unvalidated_one(pascal_root: Path) -> None:
    dataset = open_dataset(DatasetSpec(kind="pascal_context", root=str(pascal_root)))
    validated = validate_dataset(dataset, num_classes=59).dataset
    assert validated.manifest() == dataset.manifest()


def test_subset_and_resize_change_the_manifest(tmp_path: Path) -> None:
    root = write_pascal_context(tmp_path / "pc")
    base = DatasetSpec(kind="pascal_context", root=str(root))
    shas = {
        open_dataset(spec).manifest().sha256
        for spec in (
            base,
            DatasetSpec(kind="pascal_context", root=str(root), subset=SubsetSpec(first=2)),
            DatasetSpec(kind="pascal_context", root=str(root), resize=(480, 480)),
        )
    }
    assert len(shas) == 3


def test_moved_dataset_keeps_its_manifest(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f")
    sha = open_dataset(DatasetSpec(kind="folder", root=str(root))).manifest().sha256
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    assert open_dataset(DatasetSpec(kind="folder", root=str(moved))).manifest().sha256 == sha


def test_datasets_pickle_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    for kind, root in (
        ("cityscapes", write_cityscapes(tmp_path / "cs")),
        ("pascal_context", write_pascal_context(tmp_path / "pc")),
        ("folder", write_folder(tmp_path / "f")),
    ):
        dataset = open_dataset(DatasetSpec(kind=kind, root=str(root)))  # type: ignore[arg-type]
        validated = validate_dataset(dataset).dataset
        clone = pickle.loads(pickle.dumps(validated))
        np.testing.assert_array_equal(clone.load(0).target, validated.load(0).target)
        assert clone.manifest() == validated.manifest()
