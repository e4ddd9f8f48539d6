"""certseg.certificates: the store path (stored counts, else a recount) and the streamed path give
the same certificate for the same maps; recounts are persisted only at the store's full n."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from certseg.certificates import (
    certify_class_maps,
    certify_counts,
    certify_stored_image,
    read_or_count,
)
from certseg.config import CertifyParams
from certseg.stats import ABSTAIN, certify_pixels, count_agreement, select_labels
from tests.pipeline_fixtures import fill_toy_store


def test_stored_and_streamed_paths_agree_with_a_plain_count(tmp_path: Path) -> None:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    params = CertifyParams(n=20, alpha=0.05, tau=0.6)
    some_certified = some_abstained = False
    for sigma in store.sigmas:
        for variant in store.variants:
            for image in range(store.num_images):
                selection = store.read_samples(sigma, variant, "selection", image)
                estimation = store.read_samples(sigma, variant, "estimation", image, 0, 20)
                labels = select_labels(selection, store.num_classes)
                k = count_agreement(estimation, labels)
                expected = certify_pixels(labels, k, 20, alpha=0.05, tau=0.6, sigma=sigma).labels
                streamed = certify_class_maps(
                    iter([selection[:1], selection[1:]]),
                    iter(np.split(estimation, [3, 10])),
                    sigma=sigma,
                    params=params,
                    num_classes=store.num_classes,
                )
                first = certify_stored_image(store, sigma, variant, image, params)
                again = certify_stored_image(store, sigma, variant, image, params)
                assert (first.recounted, again.recounted) == (True, False)
                for got in (streamed, first, again):
                    np.testing.assert_array_equal(got.labels, expected)
                    assert got.sigma == sigma
                some_certified |= bool((expected != ABSTAIN).any())
                some_abstained |= bool((expected == ABSTAIN).any())
    assert some_certified and some_abstained


def test_read_or_count_persists_only_the_full_n(tmp_path: Path) -> None:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    counts, recounted = read_or_count(store, 0.25, "v1", 0, 7)
    assert recounted and counts.n == 7 and store.counts_n(0.25, "v1", 0) == 0
    counts, recounted = read_or_count(store, 0.25, "v1", 0, 20, persist=False)
    assert recounted and store.counts_n(0.25, "v1", 0) == 0
    full, recounted = read_or_count(store, 0.25, "v1", 0, 20)
    assert recounted and store.counts_n(0.25, "v1", 0) == 20
    stored, recounted = read_or_count(store, 0.25, "v1", 0, 20)
    assert not recounted
    for name in ("labels_selected", "k", "labels_smoothed"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(full, name))
    with pytest.raises(ValueError, match=r"params\.n = 8"):
        certify_counts(full, sigma=0.25, params=CertifyParams(n=8, alpha=0.05, tau=0.6))
    with pytest.raises(ValueError, match=r"n must be in \[1, 20\]"):
        read_or_count(store, 0.25, "v1", 0, 21)
