"""SmoothedSegmenter.certify gives exactly the certificate the pipeline stores (README's claim).

The pipeline (prepare_store → sample_shard over 2 shards → aggregate_store) runs on the tiny
config with the stand-in models of tests/pipeline_fixtures.py; then, for every image, σ and
variant, one `SmoothedSegmenter.certify` call on the same image with the same seed, σ, n0, n,
α, τ and correction must return the certificate of the store's persisted counts, pixel for pixel,
with and without the denoiser, and its labels must add up to the aggregated certified metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.config import config_from_dict
from certseg.run.context import run_context
from certseg.run.models import load_models
from certseg.run.prepare import prepare_store
from certseg.run.sample import open_run_dataset, plan_shards, sample_shard
from certseg.smoothing import SmoothedSegmenter
from certseg.stats import ABSTAIN, ConfusionAccumulator, certify_pixels
from certseg.storage import SampleStore
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict

# n = 24 (not the tiny config's 8): with n = 8 no pixel of a 32×32 image can be certified at
# α = 0.1, τ = 0.6 (the smallest p-value 0.6⁸ ≈ 0.017 exceeds α / 1024), and an all-abstain
# certificate would agree trivially; 0.6²⁴ ≈ 4.7e-6 is below it.
N0, N, ALPHA, TAU = 3, 24, 0.1, 0.6
NUM_IMAGES = 2


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_dir(tmp_path_factory.getbasetemp() / "standins")


def test_smoothed_segmenter_certifies_exactly_what_the_pipeline_stores(
    models_dir: Path, tmp_path: Path
) -> None:
    data = tiny_config_dict(models_dir, tmp_path / "s.zarr")
    data.update(n0=N0, n=N, alpha=ALPHA, tau=TAU, correction="holm")
    data["dataset"]["num_images"] = NUM_IMAGES
    data["sampling"]["samples_per_chunk"] = 10  # blocks of 10; SmoothedSegmenter counts in 50s
    config = config_from_dict(data)
    ctx = run_context(config, track=False)
    models = load_models(ctx)
    prepare_store(ctx, models)
    for shard in plan_shards(NUM_IMAGES, 2):
        sample_shard(ctx, shard, models=models)
    params = CertifyParams(n=N, alpha=ALPHA, tau=TAU, correction="holm")
    result = aggregate_store(config.store.url, params)
    store = SampleStore.open(config.store.url)
    dataset = open_run_dataset(ctx)
    certified_pixels: dict[str, int] = {}
    abstained_pixels = 0
    for sigma in config.sigmas:
        for variant in config.variants:
            denoiser = models.denoisers[variant.denoiser] if variant.denoiser else None
            smoothed = SmoothedSegmenter(
                models.segmenters[variant.segmenter_for(sigma)],
                denoiser,
                sigma=sigma,
                seed=config.seed,
                batch_size=5,
            )
            accumulated = ConfusionAccumulator(store.num_classes)
            for image in range(store.num_images):
                example = dataset.load(image)
                assert example.image_id == store.image_ids[image]
                got = smoothed.certify(
                    example.image,
                    image_key=example.image_id,
                    n0=N0,
                    n=N,
                    alpha=ALPHA,
                    tau=TAU,
                    correction="holm",
                )
                assert store.counts_n(sigma, variant.name, image) == N
                stored = store.read_counts(sigma, variant.name, image)  # aggregation's counts
                expected = certify_pixels(
                    stored["labels_selected"],
                    stored["k"],
                    N,
                    alpha=ALPHA,
                    tau=TAU,
                    sigma=sigma,
                    correction="holm",
                )
                where = (sigma, variant.name, image)
                np.testing.assert_array_equal(got.labels, expected.labels, err_msg=str(where))
                np.testing.assert_array_equal(got.pvalues, expected.pvalues, err_msg=str(where))
                assert got.radius == expected.radius
                accumulated.update(got.labels, store.read_target(image), store.ignore_index)
                certified = int((got.labels != ABSTAIN).sum())
                certified_pixels[variant.name] = certified_pixels.get(variant.name, 0) + certified
                abstained_pixels += int((got.labels == ABSTAIN).sum())
            summary = result.get(sigma, variant.name)
            assert accumulated == summary.certified, (sigma, variant.name)
    # Not trivially equal: each variant (the denoised one included) certifies some pixels, and
    # some pixels abstain.
    assert min(certified_pixels.values()) > 0 and abstained_pixels > 0, certified_pixels
