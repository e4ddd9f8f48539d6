"""Tests for certseg.noise: σ→timestep rules, resize attenuation, keyed noise."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from certseg.noise import (
    PHASES,
    from_model_range,
    noise_seed,
    noise_stream,
    operator_attenuation,
    resize_attenuation,
    resize_images,
    resize_weight_matrix,
    sample_noise,
    sample_noise_batch,
    timestep_for_sigma,
    to_model_range,
)


def linear_alphas_cumprod() -> np.ndarray:
    """DDPM linear 1000-step schedule (1e-4 … 0.02), computed independently of diffusers."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize(("sigma", "expected"), [(0.25, 145), (0.33, 185), (0.5, 259)])
def test_matched_timesteps_linear_schedule(sigma: float, expected: int) -> None:
    assert timestep_for_sigma(linear_alphas_cumprod(), sigma) == expected


@pytest.mark.parametrize(("sigma", "expected"), [(0.25, 73), (0.33, 96), (0.5, 144)])
def test_laousy2023_timesteps_linear_schedule(sigma: float, expected: int) -> None:
    assert timestep_for_sigma(linear_alphas_cumprod(), sigma, rule="laousy2023") == expected


def test_matched_timestep_is_smallest_satisfying_t() -> None:
    alpha_bar = linear_alphas_cumprod()
    for sigma in (0.01, 0.1, 0.25, 0.7, 1.5):
        t = timestep_for_sigma(alpha_bar, sigma)
        ratio = np.sqrt((1 - alpha_bar) / alpha_bar)
        assert ratio[t] >= 2 * sigma
        assert t == 0 or ratio[t - 1] < 2 * sigma


def test_diffusers_schedule_agrees() -> None:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    assert timestep_for_sigma(scheduler.alphas_cumprod, 0.5) == 259


def test_attenuation_halves_the_noise_std_fed_to_the_rule() -> None:
    # a = 1/2 at σ: same t* as σ/2 without resize (Cityscapes 1024×2048 → 512×1024 by area).
    alpha_bar = linear_alphas_cumprod()
    assert timestep_for_sigma(alpha_bar, 0.5, attenuation=0.5) == timestep_for_sigma(
        alpha_bar, 0.25
    )
    # The laousy2023 rule ignores the attenuation by design.
    assert timestep_for_sigma(alpha_bar, 0.5, attenuation=0.5, rule="laousy2023") == 144


@pytest.mark.parametrize(
    ("sigma", "kwargs"),
    [
        (0.0, {}),
        (-0.1, {}),
        (float("nan"), {}),
        (0.25, {"rule": "dds"}),
        (0.25, {"attenuation": 0}),
    ],
)
def test_timestep_rejects_bad_arguments(sigma: float, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        timestep_for_sigma(linear_alphas_cumprod(), sigma, **kwargs)  # type: ignore[arg-type]


def test_timestep_rejects_sigma_beyond_schedule() -> None:
    alpha_bar = linear_alphas_cumprod()
    max_sigma = np.sqrt((1 - alpha_bar[-1]) / alpha_bar[-1]) / 2
    assert timestep_for_sigma(alpha_bar, max_sigma * 0.999) <= 999
    with pytest.raises(ValueError, match="beyond the schedule"):
        timestep_for_sigma(alpha_bar, max_sigma * 1.01)
    with pytest.raises(ValueError, match="beyond the schedule"):
        timestep_for_sigma(alpha_bar[:100], 1.0, rule="laousy2023")


def test_timestep_rejects_increasing_schedule() -> None:
    with pytest.raises(ValueError, match="alphas_cumprod"):
        timestep_for_sigma(linear_alphas_cumprod()[::-1], 0.25)


def test_model_range_roundtrip() -> None:
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(to_model_range(x), 2 * x - 1)
    assert torch.allclose(from_model_range(to_model_range(x)), x)


def test_exact_four_pixel_average_attenuation_is_half() -> None:
    """The formula is exact: an exact 2×2 mean (a box per axis) divides the noise std by 2."""

    def box(n_in: int) -> np.ndarray:
        weights = np.zeros((n_in // 2, n_in))
        for i in range(n_in // 2):
            weights[i, 2 * i : 2 * i + 2] = 0.5
        return weights

    assert operator_attenuation(box(1024), box(2048)) == pytest.approx(0.5, abs=1e-12)
    assert resize_attenuation((64, 64), (64, 64)) == 1.0


@pytest.mark.parametrize(("in_hw", "out_hw"), [((12, 10), (5, 7)), ((6, 5), (9, 13))])
def test_attenuation_matches_full_2d_operator(
    in_hw: tuple[int, int], out_hw: tuple[int, int]
) -> None:
    # Independent: build the full 2-D operator by pushing every 2-D impulse through the resize.
    h, w = in_hw
    impulses = torch.eye(h * w, dtype=torch.float64).reshape(1, h * w, h, w)
    operator = resize_images(impulses, out_hw)[0].reshape(h * w, -1).T.numpy()
    per_pixel_std = np.sqrt((operator**2).sum(axis=1))
    expected = float(np.sqrt(np.mean(per_pixel_std**2)))
    assert resize_attenuation(in_hw, out_hw) == pytest.approx(expected, rel=1e-10)


def test_attenuation_matches_monte_carlo() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(200, 1, 32, 48, generator=generator, dtype=torch.float64)
    resized = resize_images(noise, (16, 20))
    measured = float(resized.pow(2).mean().sqrt())
    assert measured == pytest.approx(resize_attenuation((32, 48), (16, 20)), rel=0.02)


def test_resize_is_antialiased_bilinear() -> None:
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.interpolate(
        images, size=(16, 20), mode="bilinear", align_corners=False, antialias=True
    )
    assert torch.equal(resize_images(images, (16, 20)), expected)
    assert resize_images(images, (32, 48)) is images


def test_weight_matrix_rows_sum_to_one() -> None:
    for n_in, n_out in ((17, 6), (6, 17)):
        weights = resize_weight_matrix(n_in, n_out)
        assert weights.shape == (n_out, n_in)
        assert np.allclose(weights.sum(axis=1), 1.0)


def test_noise_is_pure_function_of_key() -> None:
    a = sample_noise((3, 8, 8), seed=1, image_key="img-0", phase="estimation", index=5)
    b = sample_noise((3, 8, 8), seed=1, image_key="img-0", phase="estimation", index=5)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    variants = [
        sample_noise((3, 8, 8), seed=2, image_key="img-0", phase="estimation", index=5),
        sample_noise((3, 8, 8), seed=1, image_key="img-1", phase="estimation", index=5),
        sample_noise((3, 8, 8), seed=1, image_key="img-0", phase="selection", index=5),
        sample_noise((3, 8, 8), seed=1, image_key="img-0", phase="estimation", index=6),
    ]
    for other in variants:
        assert not torch.allclose(a, other)


# The CPU stream as drawn before noise moved to the sampling device (commit 3163fad: a CPU
# torch.Generator seeded by noise_seed, torch.randn): sha256 of the float32 bytes. (5,) takes
# torch's scalar path (< 16 values), the others its vectorized one; the last is a Cityscapes frame.
PINNED_CPU_STREAM = [
    (
        (3, 32, 48),
        7,
        "pin",
        "estimation",
        3,
        "f9197039c286d8f10a1fa30f04b6a8471abca40e5bbee42749679fc638f1f080",
    ),
    (
        (5,),
        0,
        "a",
        "selection",
        0,
        "bf02aa4f02544711c558694c50d7d9d35f9e90ac194fec182167341f8df168fd",
    ),
    (
        (3, 1024, 2048),
        0,
        "frankfurt_000000_000294",
        "estimation",
        99,
        "fb19f90078047983180f74297d02dca3faf006e0853a318a80a060c7a2c6c288",
    ),
]


def _digest(noise: torch.Tensor) -> str:
    return hashlib.sha256(noise.cpu().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize(
    ("shape", "seed", "image_key", "phase", "index", "expected"), PINNED_CPU_STREAM
)
def test_cpu_stream_is_unchanged(
    shape: tuple[int, ...], seed: int, image_key: str, phase: str, index: int, expected: str
) -> None:
    """The CPU noise (default device and device="cpu", one sample or a batch row) is bit for bit
    the stream stored before noise moved to the sampling device: CPU results do not change."""
    alone = sample_noise(shape, seed=seed, image_key=image_key, phase=phase, index=index)
    on_cpu = sample_noise(
        shape, seed=seed, image_key=image_key, phase=phase, index=index, device="cpu"
    )
    batch = sample_noise_batch(
        shape,
        seed=seed,
        image_key=image_key,
        phase=phase,
        indices=[index + 1, index, index + 2],
        device="cpu",
    )
    assert alone.device.type == on_cpu.device.type == batch.device.type == "cpu"
    assert _digest(alone) == _digest(on_cpu) == _digest(batch[1]) == expected


def _batch(shape: tuple[int, ...], indices: object, device: str) -> torch.Tensor:
    return sample_noise_batch(
        shape,
        seed=5,
        image_key="img-9",
        phase="selection",
        indices=indices,
        device=device,  # type: ignore[arg-type]
    )


def _alone(shape: tuple[int, ...], index: int, device: str) -> torch.Tensor:
    return sample_noise(
        shape, seed=5, image_key="img-9", phase="selection", index=index, device=device
    )


def test_noise_batch_rows_are_the_per_sample_draws() -> None:
    """Row i of a batch is sample_noise(index=indices[i]) bit for bit, for any order, size or
    split of the indices (the invariance to batch size and shard split, by construction)."""
    shape = (3, 24, 40)
    alone = [_alone(shape, j, "cpu") for j in range(7)]
    whole = _batch(shape, range(7), "cpu")
    assert whole.shape == (7, *shape) and whole.dtype == torch.float32
    for j in range(7):
        assert torch.equal(whole[j], alone[j])
    parts = [_batch(shape, chunk, "cpu") for chunk in (range(0, 2), range(2, 3), range(3, 7))]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(_batch(shape, [4, 0, 6], "cpu"), torch.stack([alone[4], alone[0], alone[6]]))
    assert _batch(shape, [], "cpu").shape == (0, *shape)


def test_noise_batch_checks_keys_and_shape() -> None:
    with pytest.raises(ValueError, match="index"):
        _batch((2, 2), [0, -1], "cpu")
    with pytest.raises(ValueError, match="shape"):
        _batch((2, 0), [0], "cpu")


def test_noise_stream_names_the_device_stream() -> None:
    assert noise_stream() == noise_stream("cpu") == noise_stream(torch.device("cpu")) == "torch-cpu"
    with pytest.raises(ValueError, match="CPU or CUDA"):
        noise_stream("meta")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@CUDA
def test_cuda_noise_is_drawn_on_the_device_and_keyed() -> None:
    """On CUDA the noise is drawn on the device (Philox), keyed like the CPU's, batch- and
    split-invariant, and a different stream from the CPU's. 3×256×512 is far beyond one wave of
    the launch grid, where the element → counter mapping depends on the SM count."""
    shape = (3, 256, 512)
    alone = [_alone(shape, j, "cuda") for j in range(5)]
    assert all(noise.device.type == "cuda" for noise in alone)
    assert torch.equal(_alone(shape, 2, "cuda"), alone[2])
    whole = _batch(shape, range(5), "cuda")
    assert whole.device.type == "cuda"
    for j in range(5):
        assert torch.equal(whole[j], alone[j])
    parts = [_batch(shape, chunk, "cuda") for chunk in (range(0, 1), range(1, 5))]
    assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(alone[0].cpu(), _alone(shape, 0, "cpu"))
    assert abs(float(whole.mean())) < 0.01 and abs(float(whole.std()) - 1.0) < 0.01
    assert noise_stream("cuda").startswith("torch-cuda-philox/sm")


def test_noise_seeds_distinct_across_indices_and_phases() -> None:
    seeds = {
        noise_seed(seed=0, image_key="x", phase=phase, index=i)
        for phase in PHASES
        for i in range(500)
    }
    assert len(seeds) == 500 * len(PHASES)


def test_noise_is_standard_normal() -> None:
    draws = torch.stack(
        [sample_noise((64,), seed=3, image_key="k", phase="selection", index=i) for i in range(200)]
    )
    assert abs(float(draws.mean())) < 0.02  # 12,800 draws: std of mean ~0.009
    assert float(draws.std()) == pytest.approx(1.0, abs=0.03)
    # Independent across indices: sample correlation between consecutive draws is small.
    corr = np.corrcoef(draws[:-1].flatten().numpy(), draws[1:].flatten().numpy())[0, 1]
    assert abs(corr) < 0.04


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"index": -1},
        {"phase": "train"},
        {"image_key": ""},
        {"seed": 1.5},
    ],
)
def test_noise_rejects_bad_keys(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"seed": 0, "image_key": "a", "phase": "selection", "index": 0}
    args.update(kwargs)
    with pytest.raises(ValueError):
        sample_noise((2,), **args)  # type: ignore[arg-type]


def test_noise_module_does_not_import_torch() -> None:
    code = (
        "import sys, certseg.noise as n; n.timestep_for_sigma([0.9, 0.5], 0.1); "
        "n.noise_seed(seed=0, image_key='a', phase='selection', index=0); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
