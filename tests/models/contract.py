"""The contract every segmenter adapter passes; each family's test subclasses SegmenterContract.

A subclass provides `build_spec(folder)` (writes whatever files its family needs under `folder`
and returns the SegmenterSpec) and `reference_logits(images)` (the raw network applied to images
normalized *in the test*, upsampled to the input size: an independent path to the expected
output). The normalization used is deliberately far from identity, so a missing or wrong
normalization fails `test_matches_reference`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from certseg.models import Segmenter, SegmenterSpec, build_segmenter

MEAN = (0.3, 0.45, 0.6)
STD = (0.2, 0.25, 0.3)


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Per-channel (x − mean) / std, written out per channel (independent of the adapter)."""
    channels = [(images[:, c] - mean[c]) / std[c] for c in range(3)]
    return torch.stack(channels, dim=1)


class SegmenterContract:
    """Shared checks: shapes, dtype, determinism, normalization, num_classes, eval mode."""

    num_classes: ClassVar[int] = 4
    height: ClassVar[int] = 32
    width: ClassVar[int] = 32
    atol: ClassVar[float] = 1e-5

    def build_spec(self, folder: Path) -> SegmenterSpec:
        raise NotImplementedError

    def reference_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] → (B, C, H, W) logits, computed without the adapter."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def built(self, tmp_path_factory: pytest.TempPathFactory) -> tuple[Segmenter, SegmenterSpec]:
        folder = tmp_path_factory.mktemp(type(self).__name__)
        torch.manual_seed(0)
        spec = self.build_spec(folder)
        return build_segmenter(spec), spec

    def images(self, batch: int = 3, seed: int = 7) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch, 3, self.height, self.width, generator=generator)

    def test_shape_and_dtype(self, built: tuple[Segmenter, SegmenterSpec]) -> None:
        segmenter, _ = built
        with torch.inference_mode():
            logits = segmenter(self.images())
        assert logits.shape == (3, self.num_classes, self.height, self.width)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()

    def test_matches_reference(self, built: tuple[Segmenter, SegmenterSpec]) -> None:
        segmenter, _ = built
        images = self.images()
        with torch.no_grad():
            got = segmenter(images)
            expected = self.reference_logits(images)
        torch.testing.assert_close(got, expected.float(), atol=self.atol, rtol=1e-4)

    def test_normalization_matters(self, built: tuple[Segmenter, SegmenterSpec]) -> None:
        # Guard that the reference would catch a missing normalization: the network on raw
        # [0, 1] input gives different logits.
        segmenter, _ = built
        images = self.images()
        with torch.no_grad():
            raw = segmenter.model(images)
            from certseg.models.segmenter import extract_logits

            raw_logits = extract_logits(raw, output_key=segmenter.output_key)
            raw_logits = torch.nn.functional.interpolate(
                raw_logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False
            )
            assert not torch.allclose(raw_logits, segmenter(images), atol=1e-3)

    def test_deterministic_and_batch_independent(
        self, built: tuple[Segmenter, SegmenterSpec]
    ) -> None:
        segmenter, _ = built
        images = self.images()
        with torch.inference_mode():
            first = segmenter(images)
            second = segmenter(images)
            single = torch.cat([segmenter(images[i : i + 1]) for i in range(images.shape[0])])
        assert torch.equal(first, second)
        torch.testing.assert_close(first, single, atol=self.atol, rtol=1e-4)

    def test_eval_mode_and_metadata(self, built: tuple[Segmenter, SegmenterSpec]) -> None:
        segmenter, spec = built
        assert isinstance(segmenter, Segmenter)
        assert not segmenter.training
        assert all(not module.training for module in segmenter.modules())
        assert segmenter.num_classes == self.num_classes
        assert segmenter.name == spec.label

    def test_wrong_num_classes_is_rejected(
        self, built: tuple[Segmenter, SegmenterSpec], tmp_path: Path
    ) -> None:
        _, spec = built
        wrong = SegmenterSpec(
            family=spec.family,
            path=spec.path,
            num_classes=self.num_classes + 1,
            mean=spec.mean,
            std=spec.std,
            options=spec.options,
            name=spec.name,
        )
        with pytest.raises(ValueError, match="classes"):
            segmenter = build_segmenter(wrong)
            with torch.no_grad():
                segmenter(self.images(batch=1))

    def test_rejects_bad_input(self, built: tuple[Segmenter, SegmenterSpec]) -> None:
        segmenter, _ = built
        with pytest.raises(ValueError, match="images"):
            segmenter(torch.zeros(1, 1, self.height, self.width))
