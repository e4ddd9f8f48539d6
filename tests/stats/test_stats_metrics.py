"""Segmentation metrics: a per-pixel reference loop, hand-computed cases, and shard invariance."""

from __future__ import annotations

import json
import math
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certseg.stats import ABSTAIN, ConfusionAccumulator, segmentation_metrics

IGNORE = 255


def _metrics_loop(
    pred: np.ndarray, target: np.ndarray, num_classes: int
) -> tuple[float, float, list[float], float, int]:
    """Reference from METHOD §4, one pixel at a time."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    valid = correct = abstained = 0
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist(), strict=True):
        if t == IGNORE:
            continue
        valid += 1
        if p == ABSTAIN:
            abstained += 1
            fn[t] += 1
        elif p == t:
            correct += 1
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    iou = [
        tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else math.nan
        for c in range(num_classes)
    ]
    present = [v for v in iou if not math.isnan(v)]
    miou = sum(present) / len(present) if present else math.nan
    if valid == 0:
        return math.nan, math.nan, iou, miou, 0
    return correct / valid, abstained / valid, iou, miou, valid


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 8))
    shape = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
    target = rng.integers(0, num_classes, size=shape)
    target[rng.random(shape) < 0.2] = IGNORE
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, num_classes, size=shape))
    pred[pred == IGNORE] = 0
    pred[rng.random(shape) < 0.25] = ABSTAIN
    got = segmentation_metrics(pred, target, num_classes)
    accuracy, abstain_rate, iou, miou, valid = _metrics_loop(pred, target, num_classes)
    assert got.num_valid == valid
    np.testing.assert_allclose(
        [got.accuracy, got.abstain_rate, got.miou], [accuracy, abstain_rate, miou], rtol=1e-12
    )
    np.testing.assert_allclose(got.iou, iou, rtol=1e-12)


def test_hand_computed_example_with_absent_class() -> None:
    # 3 classes; class 2 absent from target and prediction -> IoU NaN, excluded from mIoU.
    target = np.array([[0, 0, 1, 1], [0, 1, IGNORE, 1]])
    pred = np.array([[0, 1, 1, ABSTAIN], [ABSTAIN, 1, 2 - 2, 0]])
    # valid pixels (7): (0,0) 0->0 TP0; (0,1) 0->1 FN0 FP1; (0,2) 1->1 TP1; (0,3) 1->ABSTAIN FN1;
    # (1,0) 0->ABSTAIN FN0; (1,1) 1->1 TP1; (1,3) 1->0 FN1 FP0.
    got = segmentation_metrics(pred, target, 3)
    assert got.num_valid == 7
    assert got.accuracy == pytest.approx(3 / 7)
    assert got.abstain_rate == pytest.approx(2 / 7)
    np.testing.assert_allclose(got.iou[:2], [1 / 4, 2 / 5])
    assert math.isnan(got.iou[2])
    assert got.miou == pytest.approx((1 / 4 + 2 / 5) / 2)


def test_all_ignore_target_gives_nan_without_warnings() -> None:
    target = np.full((4, 5), IGNORE)
    pred = np.zeros((4, 5), dtype=np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = segmentation_metrics(pred, target, 3)
    assert got.num_valid == 0
    assert math.isnan(got.accuracy) and math.isnan(got.abstain_rate) and math.isnan(got.miou)
    assert np.isnan(got.iou).all()


def test_custom_ignore_index_and_all_abstain() -> None:
    target = np.array([[0, 1, 9]])
    pred = np.full((1, 3), ABSTAIN)
    got = segmentation_metrics(pred, target, 2, ignore_index=9)
    assert (got.num_valid, got.accuracy, got.abstain_rate, got.miou) == (2, 0.0, 1.0, 0.0)


def test_validation_names_the_argument() -> None:
    target = np.zeros((2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=r"^predicted "):
        segmentation_metrics(np.full((2, 2), 3), target, 3)
    with pytest.raises(ValueError, match=r"^predicted "):
        segmentation_metrics(np.full((2, 2), 255), target, 3)
    with pytest.raises(ValueError, match=r"^predicted "):
        segmentation_metrics(np.full((2, 2), -2), target, 3)
    with pytest.raises(ValueError, match=r"^predicted "):
        segmentation_metrics(np.zeros((2, 2), dtype=np.float32), target, 3)
    with pytest.raises(ValueError, match=r"^target "):
        segmentation_metrics(np.zeros((2, 2), int), np.full((2, 2), 5), 3)
    with pytest.raises(ValueError, match=r"^predicted and target"):
        segmentation_metrics(np.zeros((2, 3), int), target, 3)
    with pytest.raises(ValueError, match=r"^num_classes "):
        ConfusionAccumulator(0)
    with pytest.raises(ValueError, match=r"^other "):
        ConfusionAccumulator(3).merge(ConfusionAccumulator(4))
    with pytest.raises(ValueError, match="confusion"):
        ConfusionAccumulator.from_dict({"num_classes": 2, "confusion": [[1]], "abstain": [0, 0]})


def test_serialization_round_trip() -> None:
    rng = np.random.default_rng(8)
    acc = ConfusionAccumulator(4).update(
        rng.integers(-1, 4, size=(9, 9)), rng.integers(0, 4, size=(9, 9))
    )
    data = json.loads(json.dumps(acc.to_dict()))
    assert ConfusionAccumulator.from_dict(data) == acc
    assert pickle.loads(pickle.dumps(acc)) == acc
    restored = ConfusionAccumulator.from_dict(data).metrics()
    np.testing.assert_array_equal(restored.iou, acc.metrics().iou)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_classes=st.integers(1, 6),
    num_pixels=st.integers(0, 200),
    num_shards=st.integers(1, 6),
)
def test_metrics_invariant_to_sharding_and_merge_order(
    seed: int, num_classes: int, num_pixels: int, num_shards: int
) -> None:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes + 1, size=num_pixels)
    target[target == num_classes] = IGNORE
    pred = rng.integers(-1, num_classes, size=num_pixels)  # -1 = ABSTAIN
    whole = ConfusionAccumulator(num_classes).update(pred, target)

    assignment = rng.integers(0, num_shards, size=num_pixels)
    shards = [
        ConfusionAccumulator(num_classes).update(pred[assignment == s], target[assignment == s])
        for s in range(num_shards)
    ]
    order = rng.permutation(num_shards)
    left = ConfusionAccumulator(num_classes)
    for s in order:
        left = left + shards[s]
    # a different tree: pairwise merges in reverse order
    tree = [shards[s] for s in order[::-1]]
    while len(tree) > 1:
        tree = [
            tree[i].merge(tree[i + 1]) if i + 1 < len(tree) else tree[i]
            for i in range(0, len(tree), 2)
        ]
    for merged in (left, tree[0]):
        assert merged == whole
        a, b = merged.metrics(), whole.metrics()
        assert a.num_valid == b.num_valid
        np.testing.assert_array_equal(
            [a.accuracy, a.abstain_rate, a.miou], [b.accuracy, b.abstain_rate, b.miou]
        )
        np.testing.assert_array_equal(a.iou, b.iou)
    # merging leaves its operands unchanged
    assert shards[0] == ConfusionAccumulator(num_classes).update(
        pred[assignment == 0], target[assignment == 0]
    )
