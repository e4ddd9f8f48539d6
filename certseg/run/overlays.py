"""Gather the overlay figure's data: aggregation's kept maps, targets, photos and classes.

The certified maps come from aggregation, the targets from the store, the photos and classes (names
and colours) from the run's dataset. Nothing is certified here: the maps are those
`aggregate_store` made (`AggregateResult.maps`). The dataset is opened once and only the shown
images are decoded. When it cannot be read (e.g. recertify on a machine without the data), the
figure still shows truth and certificates, with the store's class names in the default palette and
no photo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from certseg.data.base import ClassInfo, SegmentationDataset, classes_from_names
from certseg.report.overlays import OverlayFigure, OverlayRow
from certseg.run.context import RunContext
from certseg.run.sample import open_run_dataset
from certseg.storage import SampleStore

if TYPE_CHECKING:
    from certseg.aggregate import AggregateResult


def gather_overlays(
    ctx: RunContext, result: AggregateResult, store: SampleStore
) -> OverlayFigure | None:
    """The overlay figure of the images whose maps `result` kept (None when it kept none), with
    the photos and classes of the run's dataset when it can be opened here."""
    if not result.maps:
        return None
    return overlay_figure(result, store, _dataset_or_none(ctx))


def overlay_figure(
    result: AggregateResult, store: SampleStore, dataset: SegmentationDataset | None
) -> OverlayFigure:
    """The overlay figure of `result`'s kept maps: one row per image (store order), one column
    per (σ, variant) (aggregation's order); targets from the store; photos and classes from
    `dataset` (None: no photos, the store's class names in the default palette)."""
    columns = tuple(dict.fromkeys((m.sigma, m.variant) for m in result.maps))
    images = sorted({m.image for m in result.maps})
    maps = {(m.image, m.sigma, m.variant): m.labels for m in result.maps}
    classes = _classes(dataset, store)
    positions = _positions(dataset)
    rows = []
    for image in images:
        image_id = store.image_ids[image]
        target = store.read_target(image)
        photo = None
        if dataset is not None and image_id in positions:
            photo = _photo(dataset, positions[image_id], target.shape)
        certified = tuple(maps[(image, sigma, variant)] for sigma, variant in columns)
        rows.append(OverlayRow(image_id, photo, target, certified))
    return OverlayFigure(classes, store.ignore_index, columns, tuple(rows))


def _dataset_or_none(ctx: RunContext) -> SegmentationDataset | None:
    """The run's dataset, or None when it cannot be opened here (missing or changed files)."""
    try:
        return open_run_dataset(ctx)
    except (OSError, ValueError):  # DatasetError is a ValueError
        return None


def _classes(dataset: SegmentationDataset | None, store: SampleStore) -> tuple[ClassInfo, ...]:
    """The dataset's classes (its palette: classes.txt, Cityscapes' colours, ...) when they are
    the store's; else the store's class names in the default palette."""
    names = tuple(store.attrs["class_names"])
    if dataset is not None and tuple(c.name for c in dataset.classes) == names:
        return tuple(dataset.classes)
    return classes_from_names(names)


def _photo(dataset: SegmentationDataset, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """(3, H, W) [0, 1] image `index` of the dataset, or None when it cannot be read or is no
    longer the size the store holds."""
    try:
        image = dataset.load(index).image
    except (OSError, ValueError):
        return None
    return image if image.shape[1:] == shape else None


def _positions(dataset: SegmentationDataset | None) -> dict[str, int]:
    """Image id → the dataset's index (the store keeps ids; skip_invalid may shift indices)."""
    if dataset is None:
        return {}
    try:
        return {image_id: i for i, image_id in enumerate(dataset.image_ids())}
    except (OSError, ValueError):
        return {}
