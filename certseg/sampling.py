"""The hot loop: one image → per-sample class maps of the base classifier f under noise.

f = segmenter ∘ denoiser (or the segmenter alone, the SegCertify baseline). Sample j of an image
sees x̃_j = x + σ·ε_j with ε_j = certseg.noise.sample_noise(..., index=j, device=device), drawn on
the sampling device straight into the batch: every sample has its own noise, and the output is a
pure function of (image, seed, image_key, phase, index range, noise stream), whatever the batch
size or the split of the index range. The noise stream is the device's (`certseg.noise.
noise_stream`): the CPU's, or a CUDA device's, which differs from the CPU's. One denoiser pass
per noisy batch feeds every segmenter.

Floating point: the noise is bit-identical for any batching. The networks' float32 arithmetic
can differ in the last bits with the batch size on some backends (measured on this CPU for the
compact segmenter: |Δlogit| ≤ 7.5e-8 between batch 32 and batch 1, same argmax); a class map
could then differ only at an exact near-tie. The certificate stays valid either way: eval-mode
networks compute each sample from its own input only (the kernel path may depend on the batch
layout, which the indices and batch_size fix), so samples stay independent.

Non-finite outputs: a batch whose denoiser output or logits hold a NaN or ±inf fails with
NonFiniteOutputError (naming the model, σ, image, phase and samples) before anything of it is
returned, so it is never stored or certified (the argmax of NaN logits would be a class).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from certseg.errors import NonFiniteOutputError
from certseg.noise import PHASES, sample_noise_batch
from certseg.storage.layout import class_map_dtype

if TYPE_CHECKING:
    import torch

    from certseg.denoise import DiffusionDenoiser
    from certseg.models.segmenter import Segmenter


def bf16_supported(device: str | torch.device) -> bool:
    """Whether bfloat16 autocast is worth using on `device`, checked at run time.

    CUDA: torch.cuda.is_bf16_supported(). CPU: the dispatch capability reports AVX512 or AMX and
    a small bf16 autocast matmul runs. Anything else: False.
    """
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AVX512" not in capability and "AMX" not in capability:
        return False
    try:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = torch.ones(4, 4) @ torch.ones(4, 4)
        return bool(out.dtype == torch.bfloat16 and float(out[0, 0]) == 4.0)
    except RuntimeError:
        return False


def check_finite(
    values: torch.Tensor, *, model: str, where: str, indices: Sequence[int] | None = None
) -> None:
    """NonFiniteOutputError unless every value of the (B, ...) batch is finite.

    One reduction to a scalar (the float32 sum) on the success path, about 15× cheaper than
    isfinite over every element at 19 × 1024 × 2048 (docs/benchmarks.md); the per-element check
    runs only when the sum is not finite, and locates the failing batch items.
    model: who produced the values (e.g. "segmenter 'clean'"); where: the batch's context (σ,
    image, phase); indices: the sample index of each batch item, named in the message.
    """
    import torch

    # A sum over the values is finite only when every value is (NaN and ±inf propagate), so one
    # reduction to a scalar decides the common case; a finite batch whose float32 sum overflows
    # falls through to the full per-element check, which then decides.
    if bool(torch.isfinite(values.sum(dtype=torch.float32))):
        return
    if bool(torch.isfinite(values).all()):
        return
    bad = (~torch.isfinite(values)).flatten(1).any(dim=1).nonzero().flatten().tolist()
    items = tuple(int(i) for i in bad)
    samples = "" if indices is None else f", samples {[int(indices[i]) for i in items]}"
    raise NonFiniteOutputError(
        f"{model} returned non-finite values (NaN or inf) at {where}{samples}: the batch is "
        "refused, nothing of it is stored or certified",
        items=items,
    )


def argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) logits → (B, H, W) class indices, identical to `logits.float().argmax(1)`.

    A running maximum over the C class planes: a plane replaces the best so far only where it
    is strictly greater, so ties go to the lowest class index, as torch.argmax's do. Logits of
    any floating dtype are compared as they are (bf16 → float32 is exact and monotone, so the
    order and the ties are those of the float32 values), without a float32 copy of the logits.
    The logits must be finite (`check_finite` first: torch.argmax ranks NaN highest, this does
    not). Returns uint8 for C ≤ 256, else int32; on the logits' device. About 2× faster than
    torch.argmax over the strided class axis on the CPU (docs/benchmarks.md).
    """
    import torch

    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got {tuple(logits.shape)}")
    classes = int(logits.shape[1])
    dtype = torch.uint8 if classes <= 256 else torch.int32
    best = logits[:, 0].clone()
    index = torch.zeros(best.shape, dtype=dtype, device=logits.device)
    for c in range(1, classes):
        plane = logits[:, c]
        greater = plane > best
        index.masked_fill_(greater, c)
        torch.maximum(best, plane, out=best)
    return index


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    import torch

    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def sample_class_maps(
    image: np.ndarray | torch.Tensor,
    *,
    image_key: str,
    phase: str,
    start: int,
    count: int,
    sigma: float,
    seed: int,
    denoiser: DiffusionDenoiser | None,
    segmenters: Mapping[str, Segmenter],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Class maps of samples start … start + count − 1 of one image, for every segmenter.

    image: (3, H, W) float in [0, 1] units. sigma: noise std (> 0) in [0, 1] units. denoiser:
    None for the segmenter alone. segmenters: name → Segmenter (moved to `device`). Each noisy
    batch is denoised once and the same denoised batch goes to every segmenter; the class map is
    the per-pixel argmax of the logits (ties → lowest class index; `argmax_classes`).
    autocast_dtype: e.g. torch.bfloat16 (see `bf16_supported`) for the denoiser and segmenters;
    the noise and x̃ are float32. torch's thread count is the process's (certseg.run.models
    sets sampling.threads).
    The noise is drawn on `device` (certseg.noise.sample_noise_batch): on the CPU, the CPU
    stream; on a CUDA device, that device's stream (certseg.noise.noise_stream names it).
    Returns name → (count, H, W) class maps on the CPU, dtype
    `certseg.storage.layout.class_map_dtype` (uint8 up to 256 classes, else uint16).
    NonFiniteOutputError when the denoiser's output or a segmenter's logits are not all finite
    (the message names the model, σ, image, phase and sample indices).
    """
    return _sample_class_maps(
        image,
        image_key=image_key,
        phase=phase,
        start=start,
        count=count,
        sigma=sigma,
        seed=seed,
        denoiser=denoiser,
        segmenters=segmenters,
        batch_size=batch_size,
        device=device,
        autocast_dtype=autocast_dtype,
    )


def _sample_class_maps(
    image: np.ndarray | torch.Tensor,
    *,
    image_key: str,
    phase: str,
    start: int,
    count: int,
    sigma: float,
    seed: int,
    denoiser: DiffusionDenoiser | None,
    segmenters: Mapping[str, Segmenter],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, np.ndarray]:
    """`sample_class_maps`'s body (called directly by `measure_sample_bytes`, so a probe is
    not a sampler call to anything that wraps the public name)."""
    import torch

    if phase not in PHASES:
        raise ValueError(f"phase must be one of {tuple(PHASES)}, got {phase!r}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    if isinstance(start, bool) or int(start) != start or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not segmenters:
        raise ValueError("segmenters must name at least one segmenter")
    target = torch.device(device)
    clean = torch.as_tensor(image, dtype=torch.float32)
    if clean.ndim != 3 or clean.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(clean.shape)}")
    clean = clean.to(target)
    height, width = int(clean.shape[1]), int(clean.shape[2])
    outputs = {
        name: np.empty((count, height, width), dtype=np.dtype(class_map_dtype(seg.num_classes)))
        for name, seg in segmenters.items()
    }
    for segmenter in segmenters.values():
        segmenter.to(target)
    if denoiser is not None:
        denoiser.to(target)
    with torch.inference_mode():
        for offset in range(0, count, batch_size):
            indices = range(start + offset, start + min(offset + batch_size, count))
            noise = sample_noise_batch(
                clean.shape,
                seed=seed,
                image_key=image_key,
                phase=phase,
                indices=indices,
                device=target,
            )
            noisy = clean.unsqueeze(0) + sigma * noise
            where = f"sigma={sigma}, image {image_key!r}, phase {phase!r}"
            with _autocast(target, autocast_dtype):
                if denoiser is None:
                    inputs = noisy
                else:
                    inputs = _denoise(denoiser, noisy, sigma, where=where, indices=indices)
                for name, segmenter in segmenters.items():
                    logits = segmenter(inputs.float(), native_dtype=True)
                    check_finite(logits, model=f"segmenter {name!r}", where=where, indices=indices)
                    labels = argmax_classes(logits)
                    block = outputs[name][offset : offset + len(indices)]
                    block[...] = labels.cpu().numpy().astype(block.dtype, copy=False)
    return outputs


def _denoise(
    denoiser: DiffusionDenoiser,
    noisy: torch.Tensor,
    sigma: float,
    *,
    where: str,
    indices: Sequence[int],
) -> torch.Tensor:
    """The denoised batch; a non-finite UNet output (caught inside the denoiser, before its
    clamp would hide an inf) or output fails with the batch's sample indices."""
    label = "denoiser" if denoiser.path is None else f"denoiser {str(denoiser.path)!r}"
    try:
        denoised = denoiser.denoise(noisy, sigma)
    except NonFiniteOutputError as error:
        samples = [int(indices[i]) for i in error.items] if error.items else list(indices)
        raise NonFiniteOutputError(
            f"{label} returned non-finite values (NaN or inf) at {where}, samples {samples}: "
            f"the batch is refused, nothing of it is stored or certified ({error})",
            items=error.items,
        ) from error
    check_finite(denoised, model=label, where=where, indices=indices)
    return denoised


MEMORY_SLACK: float = 1.25
"""Factor from the tensor bytes `measure_sample_bytes` sees to the process memory they cost
(allocator rounding, oneDNN workspaces, freed-but-kept pages): measured at 1024×2048 with the
shipped denoiser and segmenter, 830 MiB of tensors raised the peak RSS by ~1000 MiB per sample
(docs/benchmarks.md, memory section)."""


class MemoryBudgetError(ValueError):
    """One sample of the frame needs more memory than the configured budget."""


def measure_sample_bytes(
    image: np.ndarray | torch.Tensor,
    *,
    image_key: str,
    seed: int,
    sigma: float,
    denoiser: DiffusionDenoiser | None,
    segmenters: Mapping[str, Segmenter],
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """Peak bytes of the tensors one sample of `image` allocates through the sampling path
    (noise, x̃, denoiser, every segmenter, argmax), on any device: selection sample 0 of the
    image drawn as a batch of 1 (nothing is returned or stored; a non-finite output fails here
    exactly as that sample would fail in sampling) while a torch dispatch mode counts
    the bytes of every live tensor storage created. Model weights and the clean image, which
    exist before the call, are not counted. Times MEMORY_SLACK ≈ what a sample adds to the
    process's peak memory; a batch of B samples costs about B times that (measured: 830 / 1636
    MiB of tensors for B = 1 / 2 at 1024×2048).
    """
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
        """Sum of the storages of the tensors ops create, while they live; its maximum."""

        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.live = 0
            self.peak = 0
            self.storages: dict[int, int] = {}

        def release(self, key: int) -> None:
            self.live -= self.storages.pop(key, 0)

        def __torch_dispatch__(
            self,
            func: Any,
            types: Any,
            args: Any = (),
            kwargs: Any = None,
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            for value in tree_flatten(out)[0]:
                if not isinstance(value, torch.Tensor):
                    continue
                storage = value.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size == 0 or key in self.storages:
                    continue
                self.storages[key] = size
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(value, self.release, key)
            return out

    tracker = LiveBytes()
    with tracker:
        _sample_class_maps(
            image,
            image_key=image_key,
            phase="selection",
            start=0,
            count=1,
            sigma=sigma,
            seed=seed,
            denoiser=denoiser,
            segmenters=segmenters,
            batch_size=1,
            device=device,
            autocast_dtype=autocast_dtype,
        )
    return int(tracker.peak)


def micro_batch_size(batch_size: int, sample_bytes: int, budget_bytes: int, *, what: str) -> int:
    """The samples per forward batch: batch_size, lowered so that batch × sample_bytes ×
    MEMORY_SLACK ≤ budget_bytes. MemoryBudgetError (naming `what`, the frame and model set,
    the need and the budget) when not even one sample fits: raised before anything is drawn.
    The class maps do not depend on the batch size (keyed noise), so the split is invisible in
    the results."""
    if batch_size < 1 or budget_bytes < 1:
        raise ValueError(
            f"batch_size and budget_bytes must be >= 1, got {batch_size}, {budget_bytes}"
        )
    need = max(1, int(sample_bytes * MEMORY_SLACK))
    fit = budget_bytes // need
    if fit < 1:
        raise MemoryBudgetError(
            f"one sample of {what} needs about {need / 2**20:.0f} MiB of working memory, more "
            f"than sampling.memory_mib = {budget_bytes / 2**20:.0f} MiB: raise "
            "sampling.memory_mib (if the machine has the memory), lower the denoiser's "
            "resolution or the frame size (dataset.resize); nothing was sampled"
        )
    return int(min(batch_size, fit))
