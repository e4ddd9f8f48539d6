"""Segmentation metrics of certified (or plain) predictions, with a mergeable confusion accumulator.

Definitions (METHOD §4), over the valid (non-ignored) pixels of the target:
- certified pixel accuracy = #(pred == target) / #valid; an ABSTAIN prediction counts as wrong;
- abstain rate = #(pred == ABSTAIN) / #valid;
- IoU_c = TP_c / (TP_c + FP_c + FN_c), where a pixel of true class c predicted ABSTAIN is a FN of c
  and a FP of no class; NaN where the union TP + FP + FN is empty (class absent from target and
  prediction);
- mIoU = mean of IoU_c over the classes with a non-empty union (NaN if there is none).
With no valid pixel at all (an all-ignore target), accuracy, abstain rate and mIoU are NaN and
num_valid = 0.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from certseg.stats._checks import check_integer_array
from certseg.stats.constants import ABSTAIN


@dataclass(frozen=True, eq=False)
class SegmentationMetrics:
    """Metrics of one set of pixels. iou: (C,) float64, NaN where a class's union is empty.

    accuracy + wrong_rate + abstain_rate = 1 (over valid pixels): wrong_rate is the fraction
    given a label other than the truth (for a certificate: certified wrong).
    """

    accuracy: float
    abstain_rate: float
    iou: np.ndarray
    miou: float
    num_valid: int
    wrong_rate: float = float("nan")


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


class ConfusionAccumulator:
    """Running (C, C) confusion matrix [true, predicted] plus per-true-class abstain counts, int64.

    Pixels can be added in any split and order: ``update`` on shards then ``merge`` (or ``+``) gives
    exactly the matrix of one ``update`` on all pixels. ``to_dict`` / ``from_dict`` give a plain
    dict of lists (JSON- and pickle-friendly) for shipping between workers.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.abstain = np.zeros(self.num_classes, dtype=np.int64)

    def update(
        self, predicted: np.ndarray, target: np.ndarray, ignore_index: int = 255
    ) -> ConfusionAccumulator:
        """Add the pixels of one prediction; returns self.

        predicted: integer array, class indices in [0, C) or ABSTAIN. target: integer array of the
        same shape, class indices in [0, C) or ``ignore_index`` (those pixels are skipped).
        """
        pred = check_integer_array(predicted, "predicted")
        true = check_integer_array(target, "target")
        if pred.shape != true.shape:
            raise ValueError(
                f"predicted and target must have the same shape, got {pred.shape} and {true.shape}"
            )
        c = self.num_classes
        valid = true != ignore_index
        true_valid = true[valid].astype(np.int64)
        pred_valid = pred[valid].astype(np.int64)
        if true_valid.size and (true_valid.min() < 0 or true_valid.max() >= c):
            raise ValueError(
                f"target must hold class indices in [0, {c}) or ignore_index = {ignore_index}, "
                f"got values in [{true_valid.min()}, {true_valid.max()}]"
            )
        abstained = pred_valid == ABSTAIN
        if np.any((pred_valid < 0) & ~abstained) or (pred_valid.size and pred_valid.max() >= c):
            raise ValueError(
                f"predicted must hold class indices in [0, {c}) or ABSTAIN = {ABSTAIN}, "
                f"got values in [{pred_valid.min()}, {pred_valid.max()}]"
            )
        kept = ~abstained
        self.confusion += np.bincount(
            true_valid[kept] * c + pred_valid[kept], minlength=c * c
        ).reshape(c, c)
        self.abstain += np.bincount(true_valid[abstained], minlength=c)
        return self

    def merge(self, other: ConfusionAccumulator) -> ConfusionAccumulator:
        """A new accumulator holding the pixels of both (neither operand changes)."""
        if not isinstance(other, ConfusionAccumulator):
            raise ValueError(f"other must be a ConfusionAccumulator, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"other has num_classes = {other.num_classes}, expected {self.num_classes}"
            )
        merged = ConfusionAccumulator(self.num_classes)
        merged.confusion = self.confusion + other.confusion
        merged.abstain = self.abstain + other.abstain
        return merged

    def __add__(self, other: ConfusionAccumulator) -> ConfusionAccumulator:
        return self.merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionAccumulator):
            return NotImplemented
        return (
            self.num_classes == other.num_classes
            and bool(np.array_equal(self.confusion, other.confusion))
            and bool(np.array_equal(self.abstain, other.abstain))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"ConfusionAccumulator(num_classes={self.num_classes}, "
            f"pixels={int(self.confusion.sum() + self.abstain.sum())})"
        )

    def to_dict(self) -> dict[str, object]:
        """Plain-Python form: {"num_classes": C, "confusion": C×C list of ints, "abstain": list}."""
        return {
            "num_classes": self.num_classes,
            "confusion": self.confusion.tolist(),
            "abstain": self.abstain.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ConfusionAccumulator:
        """Inverse of ``to_dict`` (also accepts numpy arrays as values)."""
        for key in ("num_classes", "confusion", "abstain"):
            if key not in data:
                raise ValueError(f"data is missing the key {key!r}")
        out = cls(data["num_classes"])  # type: ignore[arg-type]
        confusion = np.asarray(data["confusion"], dtype=np.int64)
        abstain = np.asarray(data["abstain"], dtype=np.int64)
        c = out.num_classes
        if confusion.shape != (c, c) or abstain.shape != (c,):
            raise ValueError(
                f"data['confusion'] must be ({c}, {c}) and data['abstain'] ({c},), "
                f"got {confusion.shape} and {abstain.shape}"
            )
        if (confusion < 0).any() or (abstain < 0).any():
            raise ValueError("data['confusion'] and data['abstain'] must be non-negative")
        out.confusion = confusion
        out.abstain = abstain
        return out

    def metrics(self) -> SegmentationMetrics:
        """Accuracy, abstain rate, per-class IoU and mIoU of all pixels added so far."""
        num_valid = int(self.confusion.sum() + self.abstain.sum())
        tp = np.diag(self.confusion).astype(np.float64)
        fp = self.confusion.sum(axis=0) - tp
        fn = self.confusion.sum(axis=1) - tp + self.abstain
        union = tp + fp + fn
        iou = np.full(self.num_classes, np.nan)
        np.divide(tp, union, out=iou, where=union > 0)
        present = union > 0
        miou = float(iou[present].mean()) if present.any() else float("nan")
        if num_valid == 0:
            accuracy = abstain_rate = wrong_rate = float("nan")
        else:
            accuracy = float(tp.sum() / num_valid)
            abstain_rate = float(self.abstain.sum() / num_valid)
            wrong_rate = float((self.confusion.sum() - tp.sum()) / num_valid)
        iou.setflags(write=False)
        return SegmentationMetrics(
            accuracy=accuracy,
            abstain_rate=abstain_rate,
            iou=iou,
            miou=miou,
            num_valid=num_valid,
            wrong_rate=wrong_rate,
        )


def segmentation_metrics(
    predicted: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255
) -> SegmentationMetrics:
    """Metrics of one prediction against its target (see the module docstring for definitions).

    predicted: (H, W) (or any shape) integers in [0, num_classes) or ABSTAIN; target: same shape,
    integers in [0, num_classes) or ignore_index.
    """
    return ConfusionAccumulator(num_classes).update(predicted, target, ignore_index).metrics()
