"""Tiled full-resolution denoising (certseg.denoise mode "tiled", issue 17 part 2).

The tile plan is checked against its definition (coverage, overlap, weights summing to one);
the denoiser against stand-in UNets whose answer is known exactly (an oracle that predicts the
noise of a constant image, a per-pixel function whose per-sample output cannot depend on the
batch) and against an independent blend written here; the shipped denoiser for a constant image
and for bit-identity with mode "resize" at its own 64×64 size (what the demo runs).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from certseg.denoise import (
    WINDOW_FLOOR,
    DiffusionDenoiser,
    blend_window,
    ddim_timesteps,
    load_denoiser,
    mirror_indices,
    plan_tiles,
    tile_starts,
)
from certseg.noise import sample_noise, timestep_for_sigma
from tests.test_denoise import ddpm, noisy_batch, tiny_unet

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "denoiser"
shipped = pytest.mark.skipif(
    not (WEIGHTS / "unet").is_dir(), reason="shipped denoiser weights/denoiser/ absent"
)

PLAN_CASES = [
    ((128, 128), (64, 64), 0.25),
    ((64, 64), (64, 64), 0.25),
    ((100, 37), (64, 16), 0.5),
    ((20, 100), (64, 64), 0.25),  # shorter than the tile along one axis: padded
    ((5, 3), (8, 8), 0.0),
    ((300, 130), (64, 48), 0.9),
    ((65, 64), (64, 64), 0.0),
]


class Recorder(torch.nn.Module):
    """Stand-in UNet: ε̂ = tanh(x_t)·0.5 per pixel (each output pixel depends on its own input
    pixel only, so no batch size or tiling can change a sample's output), recording each call's
    input shape and timestep."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert bool((t == t[0]).all())
        self.calls.append((tuple(x.shape), int(t[0])))
        return torch.tanh(x) * 0.5


class ConstantOracle(torch.nn.Module):
    """Stand-in UNet that knows the clean image is the constant c ([−1, 1] units) everywhere and
    returns the exact noise ε = (x_t − sqrt(ᾱ_t)·c)/sqrt(1 − ᾱ_t): its x̂₀ is c at every step."""

    def __init__(self, c: float, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.c = c
        self.alphas = alphas_cumprod.double()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = float(self.alphas[int(t[0])])
        return (x - math.sqrt(a) * self.c) / math.sqrt(1.0 - a)


# --- the tile plan ------------------------------------------------------------------------------


def test_tile_starts_known_values_and_errors() -> None:
    assert tile_starts(128, 64, 0.25) == (0, 32, 64)  # 3 tiles: overlap 32 ≥ 16
    assert tile_starts(64, 64, 0.25) == (0,)
    assert tile_starts(20, 64, 0.25) == (0,)
    assert tile_starts(100, 64, 0.25) == (0, 36)
    assert tile_starts(128, 64, 0.0) == (0, 64)  # no overlap: abutting tiles
    assert tile_starts(256, 64, 0.25) == (0, 48, 96, 144, 192)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overlap"):
            tile_starts(128, 64, bad)
    with pytest.raises(ValueError, match="length and tile"):
        tile_starts(0, 64, 0.25)


@pytest.mark.parametrize(("image_hw", "tile_hw", "overlap"), PLAN_CASES)
def test_tiles_cover_every_pixel_and_overlap_as_asked(
    image_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float
) -> None:
    plan = plan_tiles(image_hw, tile_hw, overlap)
    (ph, pw), (th, tw) = plan.padded_hw, plan.tile_hw
    assert plan.padded_hw == (max(image_hw[0], th), max(image_hw[1], tw))
    coverage = np.zeros(plan.padded_hw, dtype=int)
    for top, left in plan.origins:
        assert 0 <= top <= ph - th and 0 <= left <= pw - tw  # inside the padded image
        coverage[top : top + th, left : left + tw] += 1
    assert coverage.min() >= 1  # every pixel is covered
    for axis, (length, tile) in enumerate(zip(plan.padded_hw, plan.tile_hw, strict=True)):
        starts = sorted({origin[axis] for origin in plan.origins})
        assert starts[0] == 0 and starts[-1] + tile == length
        least = min(round(overlap * tile), tile - 1)
        assert all(b - a <= tile - least for a, b in itertools.pairwise(starts))
    assert len(plan.origins) == len(set(plan.origins))


@pytest.mark.parametrize(("image_hw", "tile_hw", "overlap"), PLAN_CASES)
def test_blend_weights_are_positive_and_sum_to_one(
    image_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float
) -> None:
    plan = plan_tiles(image_hw, tile_hw, overlap)
    th, tw = plan.tile_hw
    total = np.zeros(plan.padded_hw)
    count = np.zeros(plan.padded_hw, dtype=int)
    for (top, left), weight in zip(plan.origins, plan.weights, strict=True):
        assert weight.shape == (th, tw) and weight.min() > 0
        total[top : top + th, left : left + tw] += weight
        count[top : top + th, left : left + tw] += 1
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)
    assert np.all(total[count == 1] == 1.0)  # exactly one where a single tile covers a pixel
    ones = np.ones((len(plan.origins), 2, th, tw))
    np.testing.assert_allclose(plan.blend(ones), 1.0, rtol=0, atol=1e-12)


def test_blend_window_is_a_floored_hann() -> None:
    window = blend_window(64)
    np.testing.assert_allclose(window, window[::-1])
    assert window.min() == WINDOW_FLOOR and window.max() > 0.99
    assert window[0] == WINDOW_FLOOR and window[32] > window[16] > window[0]


def test_mirror_indices() -> None:
    assert mirror_indices(3, 7).tolist() == [0, 1, 2, 1, 0, 1, 2]
    assert mirror_indices(1, 4).tolist() == [0, 0, 0, 0]
    assert mirror_indices(4, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        mirror_indices(5, 4)


# --- the tiled denoiser -------------------------------------------------------------------------


def test_timestep_matches_the_unresized_noise_and_every_call_is_one_tile() -> None:
    unet = Recorder()
    tiled = DiffusionDenoiser(unet, ddpm(), resolution=16, mode="tiled", num_steps=3)
    resized = DiffusionDenoiser(Recorder(), ddpm(), resolution=16, num_steps=3)
    alphas = ddpm().alphas_cumprod
    for sigma in (0.25, 0.5):
        t_star = tiled.timestep_for_input(sigma, (40, 40))
        assert tiled.attenuation((40, 40)) == 1.0
        assert t_star == timestep_for_sigma(alphas, sigma) == {0.25: 145, 0.5: 259}[sigma]
        assert resized.timestep_for_input(sigma, (40, 40)) < t_star  # the resize attenuates
    noisy = noisy_batch(0.5, size=40, batch=3)
    out = tiled.denoise(noisy, 0.5)
    assert out.shape == noisy.shape
    tiles = len(plan_tiles((40, 40), (16, 16), 0.25).origins)
    assert tiles == 9  # starts 0, 12, 24 on each axis
    steps = ddim_timesteps(259, 3)
    assert len(unet.calls) == tiles * len(steps) == tiled.unet_passes((40, 40), 0.5)
    assert [t for _, t in unet.calls] == [t for t in steps for _ in range(tiles)]
    assert {shape for shape, _ in unet.calls} == {(3, 3, 16, 16)}  # tiles batched over samples


def test_one_shot_equals_an_independent_blend() -> None:
    """x̂₀ of every tile by the hand formula, blended by window / Σ windows written here."""
    unet = tiny_unet()
    sigma, size, tile = 0.25, 40, 16
    denoiser = DiffusionDenoiser(unet, ddpm(), resolution=tile, mode="tiled", tile_overlap=0.3)
    noisy = noisy_batch(sigma, size=size, batch=2)
    t = timestep_for_sigma(ddpm().alphas_cumprod, sigma)
    a = float(ddpm().alphas_cumprod[t])
    x_t = math.sqrt(a) * (2 * noisy.double() - 1)
    hann = np.maximum(np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2, 0.05)
    window = torch.from_numpy(np.outer(hann, hann))
    num = torch.zeros_like(x_t)
    den = torch.zeros(size, size, dtype=torch.float64)
    starts = [0, 8, 16, 24]  # overlap ≥ round(0.3·16) = 5: step ≤ 11 → ceil(24/11) + 1 = 4
    for top in starts:
        for left in starts:
            patch = x_t[:, :, top : top + tile, left : left + tile]
            with torch.no_grad():
                eps = unet(patch.float(), t).sample.double()
            x0 = ((patch - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
            num[:, :, top : top + tile, left : left + tile] += window * x0
            den[top : top + tile, left : left + tile] += window
    expected = ((num / den + 1) / 2).clamp(0, 1).float()
    torch.testing.assert_close(denoiser.denoise(noisy, sigma), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_a_constant_image_denoises_to_itself_with_an_exact_oracle(num_steps: int) -> None:
    """Every tile's x̂₀ is the constant, at every step: the blend (weights summing to one) and the
    DDIM updates between steps must give the constant back everywhere, seams included."""
    c = 0.3  # [0, 1] units
    scheduler = ddpm()
    oracle = ConstantOracle(2 * c - 1, scheduler.alphas_cumprod)
    denoiser = DiffusionDenoiser(
        oracle, scheduler, resolution=(16, 12), mode="tiled", num_steps=num_steps
    )
    noisy = c + 0.5 * torch.randn(2, 3, 45, 38, generator=torch.Generator().manual_seed(0))
    out = denoiser.denoise(noisy, 0.5)
    torch.testing.assert_close(out, torch.full_like(out, c), atol=1e-5, rtol=0)


@shipped
@pytest.mark.parametrize("num_steps", [1, 2])
def test_the_shipped_denoiser_returns_a_constant_image_without_seams(num_steps: int) -> None:
    """A flat grey 128×128 image under σ = 0.25 noise, denoised in 9 tiles of 64×64."""
    denoiser = load_denoiser(WEIGHTS, resolution=64, mode="tiled", num_steps=num_steps)
    noise = torch.stack(
        [
            sample_noise((3, 128, 128), seed=0, image_key="flat", phase="health", index=j)
            for j in (0, 1)
        ]
    )
    noisy = 0.5 + 0.25 * noise
    with torch.inference_mode():
        out = denoiser.denoise(noisy, 0.25)
    error = (out - 0.5).abs()
    # Measured: mean |error| 0.018 (k = 1) / 0.018 (k = 2) vs 0.200 for the noise; on the rows
    # either side of the tile seams (31/32, 63/64, 95/96) 0.018 as well.
    assert float(error.mean()) < 0.03
    seams = error[..., [31, 32, 63, 64, 95, 96], :].mean()
    assert float(seams) < 1.5 * float(error.mean())


def test_output_identical_for_any_batch_size_and_split() -> None:
    """A sample's tiled output does not depend on which other samples share its batch."""
    from certseg.sampling import sample_class_maps
    from tests.test_sampling import bin_segmenter

    denoiser = DiffusionDenoiser(Recorder(), ddpm(), resolution=16, mode="tiled", num_steps=2)
    noisy = noisy_batch(0.5, size=37, batch=5)
    whole = denoiser.denoise(noisy, 0.5)
    parts = torch.cat([denoiser.denoise(noisy[:2], 0.5), denoiser.denoise(noisy[2:], 0.5)])
    singles = torch.cat([denoiser.denoise(noisy[i : i + 1], 0.5) for i in range(5)])
    assert torch.equal(whole, parts) and torch.equal(whole, singles)
    # and through the sampler, end to end: batch size 1, 3 and 7 give the same class maps
    image = np.random.default_rng(0).random((3, 37, 29)).astype(np.float32)
    segmenter = bin_segmenter()
    maps = [
        sample_class_maps(
            image,
            image_key="img",
            phase="estimation",
            start=0,
            count=7,
            sigma=0.5,
            seed=0,
            denoiser=denoiser,
            segmenters={"s": segmenter},
            batch_size=batch,
        )["s"]
        for batch in (1, 3, 7)
    ]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


def test_an_image_smaller_than_the_tile_is_mirror_padded_to_one_tile() -> None:
    unet = Recorder()
    denoiser = DiffusionDenoiser(unet, ddpm(), resolution=16, mode="tiled")
    noisy = noisy_batch(0.25, size=10, batch=2)[..., :7]  # (2, 3, 10, 7)
    out = denoiser.denoise(noisy, 0.25)
    assert out.shape == noisy.shape and unet.calls == [((2, 3, 16, 16), 145)]
    rows, cols = torch.as_tensor(mirror_indices(10, 16)), torch.as_tensor(mirror_indices(7, 16))
    padded = noisy.index_select(-2, rows).index_select(-1, cols)
    expected = DiffusionDenoiser(Recorder(), ddpm()).denoise(padded, 0.25)[..., :10, :7]
    assert torch.equal(out, expected)


def test_at_the_tile_size_tiled_is_bit_identical_to_resize() -> None:
    for steps in (1, 3):
        noisy = noisy_batch(0.5, size=16, batch=3)
        unet = tiny_unet()
        tiled = DiffusionDenoiser(unet, ddpm(), resolution=16, mode="tiled", num_steps=steps)
        resized = DiffusionDenoiser(unet, ddpm(), resolution=16, num_steps=steps)
        assert torch.equal(tiled.denoise(noisy, 0.5), resized.denoise(noisy, 0.5))


@shipped
def test_shipped_denoiser_tiled_equals_resize_at_its_native_64() -> None:
    """The demo's 64×64 images: one tile of weight exactly 1, so mode "tiled" would not change
    a single sample of the demo (one-shot and k-step)."""
    from certseg.data.synthetic import SyntheticDataset

    data = SyntheticDataset(seed=0, num_images=2, size=64, split="test")
    clean = torch.stack([torch.from_numpy(data.load(i).image) for i in range(2)])
    noise = torch.stack(
        [
            sample_noise((3, 64, 64), seed=0, image_key=str(i), phase="selection", index=0)
            for i in range(2)
        ]
    )
    for steps in (1, 2):
        outputs = [
            load_denoiser(WEIGHTS, resolution=64, mode=mode, num_steps=steps).denoise(
                clean + 0.5 * noise, 0.5
            )
            for mode in ("resize", "tiled")
        ]
        assert torch.equal(outputs[0], outputs[1])


def test_tiled_needs_a_tile_size_and_valid_options() -> None:
    with pytest.raises(ValueError, match="needs resolution"):
        DiffusionDenoiser(tiny_unet(), ddpm(), mode="tiled")
    with pytest.raises(ValueError, match="mode must be one of"):
        DiffusionDenoiser(tiny_unet(), ddpm(), resolution=16, mode="tiles")
    with pytest.raises(ValueError, match="tile_overlap"):
        DiffusionDenoiser(tiny_unet(), ddpm(), resolution=16, mode="tiled", tile_overlap=1.0)
