"""One call certifies one image, with and without the shipped denoiser (issue 3's acceptance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from certseg.stats import ABSTAIN, certify_pixels, count_agreement, select_labels

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    import torch

    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.sampling import bf16_supported

    torch.set_num_threads(1)
    return {
        "segmenter": build_segmenter(SegmenterSpec("compact", str(WEIGHTS / "segmenter-clean"))),
        "denoiser": load_denoiser(WEIGHTS / "denoiser"),
        "dtype": torch.bfloat16 if bf16_supported("cpu") else None,
    }


def _certified_correct(result_labels: np.ndarray, target: np.ndarray) -> float:
    valid = target != 255
    return float(((result_labels == target) & valid).sum() / valid.sum())


def test_denoiser_certifies_clearly_more_pixels_correctly_at_sigma_05(
    shipped: dict[str, object],
) -> None:
    from certseg.data.synthetic import SyntheticDataset
    from certseg.smoothing import SmoothedSegmenter

    example = SyntheticDataset(seed=0, num_images=1, size=64, split="test").load(0)
    scores: dict[tuple[float, bool], float] = {}
    for sigma in (0.25, 0.5):
        for with_denoiser in (False, True):
            smoothed = SmoothedSegmenter(
                shipped["segmenter"],  # type: ignore[arg-type]
                shipped["denoiser"] if with_denoiser else None,  # type: ignore[arg-type]
                sigma=sigma,
                autocast_dtype=shipped["dtype"],  # type: ignore[arg-type]
            )
            result = smoothed.certify(
                example.image, image_key=example.image_id, n0=10, n=100, alpha=0.001, tau=0.75
            )
            assert result.radius == pytest.approx(sigma * 0.6744897501960817)
            assert set(np.unique(result.labels)) <= {ABSTAIN, *range(7)}
            scores[(sigma, with_denoiser)] = _certified_correct(result.labels, example.target)
    # Measured with the shipped models on this image (certified-and-correct fraction, without /
    # with the denoiser): 0.020 / 0.969 at σ = 0.25 and 0.000 / 0.913 at σ = 0.5.
    assert scores[(0.5, True)] >= scores[(0.5, False)] + 0.5, scores
    assert scores[(0.25, True)] >= scores[(0.25, False)], scores


def test_one_call_equals_the_pipeline_arithmetic(shipped: dict[str, object]) -> None:
    """Blocked, streamed counting equals counting all maps at once (select, agree, certify)."""
    from certseg.data.synthetic import SyntheticDataset
    from certseg.sampling import sample_class_maps
    from certseg.smoothing import SmoothedSegmenter

    example = SyntheticDataset(seed=0, num_images=2, size=64, split="test").load(1)
    segmenter = shipped["segmenter"]
    smoothed = SmoothedSegmenter(segmenter, None, sigma=0.25, block=7)  # type: ignore[arg-type]
    result = smoothed.certify(
        example.image, image_key="k", n0=10, n=30, alpha=0.01, tau=0.6, correction="bonferroni"
    )

    def maps(phase: str, count: int) -> np.ndarray:
        out = sample_class_maps(
            example.image,
            image_key="k",
            phase=phase,
            start=0,
            count=count,
            sigma=0.25,
            seed=0,
            denoiser=None,
            segmenters={"f": segmenter},  # type: ignore[dict-item]
        )
        return np.asarray(out["f"])

    labels = select_labels(maps("selection", 10), 7)
    counts = count_agreement(maps("estimation", 30), labels)
    expected = certify_pixels(
        labels, counts, 30, alpha=0.01, tau=0.6, sigma=0.25, correction="bonferroni"
    )
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.pvalues, expected.pvalues)
    assert result.certified.any() and not result.certified.all()


def test_bad_sample_counts_raise(shipped: dict[str, object]) -> None:
    from certseg.smoothing import SmoothedSegmenter

    smoothed = SmoothedSegmenter(shipped["segmenter"], None, sigma=0.25)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n0 and n must be >= 1"):
        smoothed.certify(
            np.zeros((3, 8, 8), np.float32), image_key="x", n0=0, n=5, alpha=0.1, tau=0.6
        )


def test_nan_segmenter_is_refused_not_certified() -> None:
    """Issue 13 item 4: an all-NaN segmenter had every pixel certified as class 0."""
    import torch
    from torch import nn

    from certseg.errors import NonFiniteOutputError
    from certseg.models import Segmenter
    from certseg.smoothing import SmoothedSegmenter

    class NaNNet(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 7, *x.shape[-2:]), float("nan"))

    segmenter = Segmenter(NaNNet(), num_classes=7, mean=(0, 0, 0), std=(1, 1, 1), name="nan")
    smoothed = SmoothedSegmenter(segmenter, None, sigma=0.25, batch_size=4)
    image = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    with pytest.raises(NonFiniteOutputError, match=r"segmenter 'nan'.*sigma=0\.25.*image 'x'"):
        smoothed.certify(image, image_key="x", n0=4, n=20, alpha=0.1, tau=0.75)
