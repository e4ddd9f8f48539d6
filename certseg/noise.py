"""Noise units, keyed Gaussian noise, resize attenuation and the σ → diffusion-timestep rule.

Conventions (docs/method.md §1–2, §4): images live in [0, 1] units and σ is in those units. A
diffusion model works in [−1, 1] units, where the same noise has std s = 2σ. Resizing to the
denoiser's resolution scales the per-pixel noise std by a factor `a` (see `resize_attenuation`),
so the denoiser sees s_eff = 2σ·a. The timestep math is numpy only; torch is imported inside the
functions that draw noise or apply a resize.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

PHASES: dict[str, int] = {"selection": 0, "estimation": 1, "health": 2}
"""Sampling phases; each keys its own independent noise stream."""

TimestepRule = Literal["matched", "laousy2023"]
TIMESTEP_RULES: tuple[str, ...] = get_args(TimestepRule)

DenoiseMode = Literal["resize", "tiled"]
DENOISE_MODES: tuple[str, ...] = get_args(DenoiseMode)
"""How an image meets the denoiser's input size: "resize" (the paper: the whole image resized to
the UNet's resolution and back, noise attenuated by the resize) or "tiled" (no resize: the image
at its own resolution in overlapping tiles of that size, attenuation 1; certseg.denoise)."""


def to_model_range(images: Any) -> Any:
    """Map [0, 1] units to the diffusion model's [−1, 1] units: y = 2x − 1 (any array/tensor)."""
    return images * 2.0 - 1.0


def from_model_range(images: Any) -> Any:
    """Map [−1, 1] units back to [0, 1] units: x = (y + 1) / 2 (any array/tensor)."""
    return (images + 1.0) / 2.0


def _as_numpy(alphas_cumprod: Any) -> np.ndarray:
    if hasattr(alphas_cumprod, "detach"):  # a torch tensor, without importing torch
        alphas_cumprod = alphas_cumprod.detach().cpu().double().numpy()
    values = np.asarray(alphas_cumprod, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"alphas_cumprod must be a non-empty 1-D array, got shape {values.shape}")
    if not np.all((values > 0) & (values <= 1)):
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    if np.any(np.diff(values) > 0):
        raise ValueError("alphas_cumprod must be non-increasing in t")
    return values


def timestep_for_sigma(
    alphas_cumprod: Any,
    sigma: float,
    *,
    attenuation: float = 1.0,
    rule: str = "matched",
) -> int:
    """The diffusion timestep t* whose noise level matches Gaussian noise of std σ ([0, 1] units).

    alphas_cumprod: (T,) ᾱ_t of the scheduler, non-increasing. attenuation: the std factor `a` of
    any resize between the noise and the denoiser (1.0 for none).

    rule "matched" (default, docs/method.md §2.3): the smallest t with sqrt((1 − ᾱ_t)/ᾱ_t) ≥ 2σ·a
    (x_t = sqrt(ᾱ_t)·y then carries noise std sqrt(1 − ᾱ_t)·(2σa)/sqrt(ᾱ_t) ≤ sqrt(1 − ᾱ_t)).
    rule "laousy2023": argmin_t |ᾱ_t − 1/(1 + σ²)| (the published paper code: no factor 2, no
    attenuation), kept to reproduce the paper.

    Raises ValueError for σ ≤ 0, attenuation ≤ 0, an unknown rule, or a σ beyond the schedule.
    """
    if rule not in TIMESTEP_RULES:
        raise ValueError(f"rule must be one of {TIMESTEP_RULES}, got {rule!r}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    if not np.isfinite(attenuation) or attenuation <= 0:
        raise ValueError(f"attenuation must be a finite number > 0, got {attenuation}")
    alpha_bar = _as_numpy(alphas_cumprod)
    if rule == "laousy2023":
        target = 1.0 / (1.0 + sigma**2)
        if target < alpha_bar[-1]:
            raise ValueError(
                f"sigma={sigma} is beyond the schedule: 1/(1+sigma^2)={target:.6g} < "
                f"alpha_bar[T-1]={alpha_bar[-1]:.6g}"
            )
        return int(np.argmin(np.abs(alpha_bar - target)))
    ratio = np.sqrt((1.0 - alpha_bar) / alpha_bar)
    s_eff = 2.0 * sigma * attenuation
    reached = np.flatnonzero(ratio >= s_eff)
    if reached.size == 0:
        raise ValueError(
            f"sigma={sigma} (s_eff=2*sigma*attenuation={s_eff:.6g}) is beyond the schedule, whose "
            f"largest noise-to-signal ratio is {ratio[-1]:.6g}"
        )
    return int(reached[0])


def _check_size(name: str, hw: Sequence[int]) -> tuple[int, int]:
    if len(hw) != 2 or any(int(v) != v or v < 1 for v in hw):
        raise ValueError(f"{name} must be (height, width) with positive integers, got {hw!r}")
    return int(hw[0]), int(hw[1])


def resize_images(images: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, H, W) images to (B, C, *out_hw): bilinear with antialias=True (a proper
    low-pass when shrinking), deterministic; unchanged when the size already matches."""
    import torch.nn.functional as F

    if tuple(images.shape[-2:]) == tuple(out_hw):
        return images
    return F.interpolate(images, size=out_hw, mode="bilinear", align_corners=False, antialias=True)


def resize_weight_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) weight matrix of the 1-D resize that `resize_images` applies per axis.

    Obtained by pushing the n_in unit impulses through the very resize used on images (float64),
    so it is exact for that implementation. The resize is separable: the 2-D operator on an
    (H, W) image is W_h ⊗ W_w.
    """
    import torch

    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in={n_in}, n_out={n_out}")
    # Width 2 (kept at 2), not 1: torch 2.x's antialiased kernels mis-handle a width of 1.
    impulses = torch.eye(n_in, dtype=torch.float64).reshape(1, n_in, n_in, 1).repeat(1, 1, 1, 2)
    out = resize_images(impulses, (n_out, 2))  # (1, n_in, n_out, 2): channel k = impulse k
    return np.ascontiguousarray(out[0, :, :, 0].T.numpy())


def operator_attenuation(*axis_weights: np.ndarray) -> float:
    """The std attenuation `a` of a separable linear operator W_h ⊗ W_w (one (n_out, n_in) weight
    matrix per resized axis) applied to i.i.d. N(0, 1) noise.

    Output pixel (i, j) has noise std ‖W_h[i]‖·‖W_w[j]‖; `a` is the RMS of that std over all
    output pixels, a = sqrt(mean_i ‖W_h[i]‖² · mean_j ‖W_w[j]‖²), i.e. the ratio of the output
    noise power to the input's. Exact for an exact k-pixel average: a = 1/sqrt(k) (a 2×2 box
    gives 0.5). Correlation between output pixels is not represented by `a`.
    """
    power = 1.0
    for weights in axis_weights:
        power *= float(np.mean(np.sum(np.asarray(weights) ** 2, axis=1)))
    return float(np.sqrt(power))


def resize_attenuation(in_hw: Sequence[int], out_hw: Sequence[int]) -> float:
    """The std attenuation `a` (`operator_attenuation`) of `resize_images` from in_hw to out_hw
    applied to i.i.d. N(0, 1) noise; 1.0 when the sizes are equal (no resize)."""
    h_in, w_in = _check_size("in_hw", in_hw)
    h_out, w_out = _check_size("out_hw", out_hw)
    if (h_in, w_in) == (h_out, w_out):
        return 1.0
    return operator_attenuation(
        *(
            resize_weight_matrix(n_in, n_out)
            for n_in, n_out in ((h_in, h_out), (w_in, w_out))
            if n_in != n_out
        )
    )


def noise_seed(*, seed: int, image_key: str, phase: str, index: int) -> int:
    """The 64-bit generator seed of sample `index` of image `image_key` in `phase`.

    A pure function of its arguments: numpy SeedSequence over the entropy
    [seed, sha256(image_key) as 8 × 32-bit words, PHASES[phase], index].
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index!r}")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {tuple(PHASES)}, got {phase!r}")
    if not isinstance(image_key, str) or not image_key:
        raise ValueError(f"image_key must be a non-empty string, got {image_key!r}")
    digest = hashlib.sha256(image_key.encode("utf-8")).digest()
    key_words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    entropy = [int(seed), *key_words, PHASES[phase], int(index)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)


def _keyed_generator(device: torch.device) -> torch.Generator:
    """A torch.Generator on `device` (CPU: Mersenne Twister; CUDA: Philox), seeded per sample."""
    import torch

    return torch.Generator(device=device)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(v) for v in shape)
    if any(v < 1 for v in dims):
        raise ValueError(f"shape must have positive sizes, got {tuple(shape)!r}")
    return dims


def sample_noise(
    shape: Sequence[int],
    *,
    seed: int,
    image_key: str,
    phase: str,
    index: int,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Standard Gaussian noise ε ~ N(0, I) of `shape` (float32) for one sample, drawn on `device`.

    Drawn by a torch.Generator on `device` (None: the CPU) seeded by `noise_seed`, so the result
    is a pure function of (seed, image_key, phase, index, shape) on a given kind of device, and
    never depends on batching. The CPU stream (Mersenne Twister) is the one certseg has always
    drawn. A CUDA device draws its own stream (Philox) directly on the device, with no host
    round-trip: a different but equally valid N(0, I) draw. torch maps a CUDA tensor's elements
    to Philox counters through a launch grid capped by the GPU's SM count, so the CUDA stream of
    a tensor this large is reproducible on one GPU model (see `noise_stream`), not across models.
    """
    import torch

    dims = _check_shape(shape)
    target = torch.device("cpu" if device is None else device)
    generator = _keyed_generator(target)
    generator.manual_seed(noise_seed(seed=seed, image_key=image_key, phase=phase, index=index))
    return torch.randn(dims, generator=generator, dtype=torch.float32, device=target)


def sample_noise_batch(
    shape: Sequence[int],
    *,
    seed: int,
    image_key: str,
    phase: str,
    indices: Sequence[int],
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(len(indices), *shape) float32 noise on `device`: row i is bit for bit
    `sample_noise(shape, ..., index=indices[i], device=device)`.

    Each row is drawn in place into the batch on the device (one generator, re-seeded per
    sample: seeding resets its whole state), so nothing is stacked or copied from the host.
    """
    import torch

    dims = _check_shape(shape)
    target = torch.device("cpu" if device is None else device)
    keys = [int(j) for j in indices]
    seeds = [noise_seed(seed=seed, image_key=image_key, phase=phase, index=j) for j in keys]
    batch = torch.empty((len(keys), *dims), dtype=torch.float32, device=target)
    generator = _keyed_generator(target)
    for row, row_seed in zip(batch, seeds, strict=True):
        generator.manual_seed(row_seed)
        row.normal_(generator=generator)
    return batch


def noise_stream(device: str | torch.device | None = None) -> str:
    """A name of the noise stream `sample_noise` draws on `device`, for a store's identity.

    "torch-cpu" for the CPU. For CUDA, "torch-cuda-philox/sm<SM count>x<max threads per SM>":
    torch's CUDA sampling kernels give a tensor's element the Philox subsequence of the thread
    that computes it, and cap the launch grid at SM count × (max threads per SM / 256) blocks, so
    a tensor larger than one wave (a 3×1024×2048 frame is) gets different values on GPUs with a
    different SM count or threads per SM (another model, a MIG slice); two devices with the same
    name draw the same samples (with the same torch). Initializes CUDA for a CUDA device.
    """
    import torch

    target = torch.device("cpu" if device is None else device)
    if target.type == "cpu":
        return "torch-cpu"
    if target.type == "cuda":
        props = torch.cuda.get_device_properties(target)
        return (
            f"torch-cuda-philox/sm{props.multi_processor_count}"
            f"x{props.max_threads_per_multi_processor}"
        )
    raise ValueError(f"device must be a CPU or CUDA device, got {str(target)!r}")
