"""Aggregation: Dask results against a direct per-image loop over certseg.stats; recertify."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from certseg.aggregate import (
    CertifyParams,
    aggregate_store,
    dask_client,
    radius_edges,
)
from certseg.certificates import count_stored_image
from certseg.config import CertifyParams as ConfigCertifyParams
from certseg.config import config_from_dict
from certseg.stats import (
    ABSTAIN,
    certify_pixels,
    count_agreement,
    count_votes,
    labels_from_votes,
    pixel_radii,
    select_labels,
)
from certseg.storage import SampleStore
from tests.pipeline_fixtures import fill_toy_store as _fill

REPO = Path(__file__).resolve().parents[1]
C = 5


def _direct(store: SampleStore, params: CertifyParams) -> dict[tuple[float, str], dict]:
    """A slow loop over images with certseg.stats' per-image functions and hand-made metrics."""
    out = {}
    for sigma in store.sigmas:
        for variant in store.variants:
            correct = valid = abstained = smoothed_correct = 0
            tp = np.zeros(C)
            fp = np.zeros(C)
            fn = np.zeros(C)
            radius_correct = []
            for image in range(store.num_images):
                target = store.read_target(image)
                selection = store.read_samples(sigma, variant, "selection", image)
                estimation = store.read_samples(sigma, variant, "estimation", image, 0, params.n)
                labels = select_labels(selection, C)
                k = count_agreement(estimation, labels)
                result = certify_pixels(
                    labels,
                    k,
                    params.n,
                    alpha=params.alpha,
                    tau=params.tau,
                    sigma=sigma,
                    correction=params.correction,
                )
                mask = target != 255
                pred = result.labels[mask]
                true = target[mask]
                correct += int((pred == true).sum())
                abstained += int((pred == ABSTAIN).sum())
                valid += int(mask.sum())
                for c in range(C):
                    tp[c] += ((pred == c) & (true == c)).sum()
                    fp[c] += ((pred == c) & (true != c)).sum()
                    fn[c] += ((pred != c) & (true == c)).sum()
                majority = np.array(
                    [
                        [
                            np.bincount(estimation[:, i, j], minlength=C).argmax()
                            for j in range(target.shape[1])
                        ]
                        for i in range(target.shape[0])
                    ]
                )
                smoothed_correct += int((majority[mask] == true).sum())
                radii = pixel_radii(k, params.n, alpha=params.alpha, sigma=sigma)
                radius_correct.extend(radii[mask & (labels == target) & (radii > 0)].tolist())
            union = tp + fp + fn
            out[(sigma, variant)] = {
                "accuracy": correct / valid,
                "abstain": abstained / valid,
                "miou": float(np.mean(tp[union > 0] / union[union > 0])),
                "smoothed": smoothed_correct / valid,
                "radii": np.asarray(radius_correct),
            }
    return out


@pytest.fixture
def store(tmp_path: Path) -> SampleStore:
    return _fill(str(tmp_path / "s.zarr"))


@pytest.mark.parametrize("correction", ["holm", "bonferroni"])
def test_aggregate_matches_direct_loop(store: SampleStore, correction: str) -> None:
    params = CertifyParams(n=20, alpha=0.05, tau=0.6, correction=correction)  # type: ignore[arg-type]
    result = aggregate_store(store.url, params, persist_counts=False)
    expected = _direct(store, params)
    some_certified = False
    for key, want in expected.items():
        summary = result.get(*key)
        certified = summary.certified.metrics()
        assert certified.accuracy == pytest.approx(want["accuracy"], abs=1e-12)
        assert certified.abstain_rate == pytest.approx(want["abstain"], abs=1e-12)
        assert certified.miou == pytest.approx(want["miou"], abs=1e-12)
        smoothed = summary.smoothed.metrics()
        assert smoothed.accuracy == pytest.approx(want["smoothed"], abs=1e-12)
        hist = np.asarray(summary.radius_hist)
        edges = radius_edges(key[0])
        expected_hist, _ = np.histogram(want["radii"], bins=edges)
        assert hist.tolist() == expected_hist.tolist()
        assert summary.num_images == 3
        some_certified |= certified.accuracy > 0.3
    assert some_certified  # the test data can be certified: the comparison is not all zeros


def test_clean_accuracy_is_the_clean_prediction(store: SampleStore) -> None:
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    correct = valid = 0
    for image in range(3):
        target = store.read_target(image)
        mask = target != 255
        correct += int((store.read_clean("s", image)[mask] == target[mask]).sum())
        valid += int(mask.sum())
    clean = result.get(0.5, "v2").clean.metrics()
    assert clean.accuracy == pytest.approx(correct / valid)


def test_counts_persisted_and_recertify_equals_fresh(store: SampleStore, tmp_path: Path) -> None:
    full = CertifyParams(n=20, alpha=0.05, tau=0.6)
    first = aggregate_store(store.url, full)
    assert sum(s.recounted for s in first.summaries.values()) == 12
    assert store.counts_n(0.25, "v1", 2) == 20
    stored = store.read_counts(0.25, "v1", 2)
    direct = count_stored_image(store, 0.25, "v1", 2, 20)
    assert np.array_equal(stored["k"], direct.k)
    new = CertifyParams(n=20, alpha=0.01, tau=0.75, correction="bonferroni")
    recertified = aggregate_store(store.url, new)
    assert sum(s.recounted for s in recertified.summaries.values()) == 0  # counts reused
    fresh_store = _fill(str(tmp_path / "fresh.zarr"))
    fresh = aggregate_store(fresh_store.url, new, persist_counts=False)
    for key in fresh.summaries:
        a, b = recertified.summaries[key], fresh.summaries[key]
        assert (a.certified, a.smoothed, a.radius_hist) == (b.certified, b.smoothed, b.radius_hist)
    assert recertified.summaries != first.summaries
    # a smaller n recounts from the first n samples and leaves the stored full-n counts alone
    small = CertifyParams(n=7, alpha=0.05, tau=0.6)
    smaller = aggregate_store(store.url, small)
    assert sum(s.recounted for s in smaller.summaries.values()) == 12
    assert store.counts_n(0.25, "v1", 2) == 20
    expected = _direct(store, small)
    for key, want in expected.items():
        got = smaller.get(*key).certified.metrics()
        assert got.accuracy == pytest.approx(want["accuracy"], abs=1e-12)
    with pytest.raises(ValueError, match="exceeds"):
        aggregate_store(store.url, CertifyParams(n=21, alpha=0.05, tau=0.6))


def _landed_count_image(
    store: SampleStore, sigma: float, variant: str, image: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The landed count_image: count_votes over every class on every map, then the modes."""
    c = store.num_classes
    selection = sum(
        count_votes(store.read_samples(sigma, variant, "selection", image, a, b), c)
        for a, b in store.blocks("selection")
    )
    labels = labels_from_votes(selection)
    estimation = sum(
        count_votes(store.read_samples(sigma, variant, "estimation", image, a, min(b, n)), c)
        for a, b in store.blocks("estimation")
        if a < n
    )
    k = np.take_along_axis(estimation, labels[None].astype(np.intp), axis=0)[0]
    return labels, k, labels_from_votes(estimation)


def _assert_counts_equal_landed(
    store: SampleStore, sigma: float, variant: str, image: int, n: int
) -> None:
    got = count_stored_image(store, sigma, variant, image, n)
    labels, k, smoothed = _landed_count_image(store, sigma, variant, image, n)
    for array, want in ((got.labels_selected, labels), (got.k, k), (got.labels_smoothed, smoothed)):
        np.testing.assert_array_equal(array, want)
        assert array.dtype == np.int32
    assert got.n == n


def test_count_image_equals_counting_every_class(store: SampleStore) -> None:
    """Bit-identical to the landed count_votes path, for the full n and a partial last block."""
    assert len(store.blocks("estimation")) > 1
    undecided = 0
    for sigma in store.sigmas:
        for variant in store.variants:
            for image in range(store.num_images):
                for n in (20, 7, 1):
                    _assert_counts_equal_landed(store, sigma, variant, image, n)
                undecided += int(
                    (count_stored_image(store, sigma, variant, image, 20).k <= 10).sum()
                )
    assert undecided > 0  # the per-class fallback ran


@dataclass
class _Samples:
    """count_stored_image's view of a store over in-memory maps (blocks of `size` samples)."""

    selection: np.ndarray
    estimation: np.ndarray
    num_classes: int
    size: int

    @property
    def n(self) -> int:
        return int(self.estimation.shape[0])

    def blocks(self, phase: str) -> list[tuple[int, int]]:
        total = self.selection.shape[0] if phase == "selection" else self.n
        return [(a, min(a + self.size, total)) for a in range(0, total, self.size)]

    def read_samples(
        self, sigma: float, variant: str, phase: str, image: int, start: int, stop: int
    ) -> np.ndarray:
        return (self.selection if phase == "selection" else self.estimation)[start:stop]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize(("num_classes", "size"), [(2, 3), (19, 2), (19, 100)])
def test_count_image_any_block_size_ties_and_dtypes(
    dtype: type, num_classes: int, size: int
) -> None:
    """Selection in several blocks, few classes (many ties at k = n/2), uint8 and uint16 maps."""
    rng = np.random.default_rng(num_classes * 10 + size)
    shape = (9, 11)
    base = rng.integers(0, num_classes, size=shape)
    agree = rng.choice([1.0, 0.6, 0.5, 0.2], size=shape)

    def draw(count: int) -> np.ndarray:
        noise = rng.integers(0, num_classes, size=(count, *shape))
        return np.where(rng.random((count, *shape)) < agree, base, noise).astype(dtype)

    source = _Samples(draw(7), draw(10), num_classes, size)
    store = cast(SampleStore, source)
    for n in (10, 9, 4):
        _assert_counts_equal_landed(store, 0.25, "v", 0, n)


def test_incomplete_store_refused(tmp_path: Path) -> None:
    store = _fill(str(tmp_path / "s.zarr"))
    store.group["done/sigma_0.5/none/estimation"][1] = np.array([1, 0, 1, 1], dtype=np.uint8)
    with pytest.raises(ValueError, match="not completely sampled"):
        aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))


def test_distributed_client_gives_the_same_result(store: SampleStore) -> None:
    params = CertifyParams(n=20, alpha=0.05, tau=0.6)
    local = aggregate_store(store.url, params, persist_counts=False, partitions=5)
    with dask_client(n_workers=2, threads_per_worker=1, processes=False) as client:
        distributed = aggregate_store(store.url, params, client=client, persist_counts=False)
    assert local.summaries == distributed.summaries


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"n": 5, "alpha": 0.1, "tau": 0.5}, "tau", "must be in (0.5, 1), got 0.5"),
        ({"n": 5, "alpha": 0.0, "tau": 0.7}, "alpha", "must be in (0, 1), got 0.0"),
        ({"n": 0, "alpha": 0.1, "tau": 0.7}, "n", "greater than or equal to 1"),
        ({"n": True, "alpha": 0.1, "tau": 0.7}, "n", "valid integer"),
        ({"n": 5, "alpha": 0.1, "tau": 0.7, "correction": "sidak"}, "correction", "'holm'"),
    ],
)
def test_params_validation(kwargs: dict, field: str, message: str) -> None:
    with pytest.raises(ValueError, match="CertifyParams") as info:
        CertifyParams(**kwargs)
    assert isinstance(info.value, ValidationError)
    [error] = info.value.errors()
    assert error["loc"] == (field,) and message in error["msg"]


def test_params_are_the_configs() -> None:
    """One schema: the config's certification fields are CertifyParams, validated alike."""
    config = config_from_dict(yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text()))
    assert config.certify_params() == CertifyParams(n=8, alpha=0.05, tau=0.6, correction="holm")
    assert CertifyParams is ConfigCertifyParams
