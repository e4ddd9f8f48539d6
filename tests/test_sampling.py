"""Tests for certseg.sampling: keyed per-sample noise, batch/split invariance, one denoise pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from certseg.denoise import DiffusionDenoiser
from certseg.errors import NonFiniteOutputError
from certseg.models.segmenter import Segmenter
from certseg.noise import sample_noise
from certseg.sampling import argmax_classes, bf16_supported, check_finite, sample_class_maps
from certseg.storage.layout import class_map_dtype

SIGMA = 0.5


class BinNet(nn.Module):
    """Logits that make the argmax the bin of channel 0 (of `bins` equal bins over [−1, 2]):
    the class map reads the noise directly, so shared noise would show."""

    def __init__(self, bins: int = 8) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(-1, 2, bins).view(1, bins, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres: torch.Tensor = self.centres  # type: ignore[assignment]
        return -((x[:, :1] - centres) ** 2)


def bin_segmenter(bins: int = 8, name: str = "bins") -> Segmenter:
    return Segmenter(BinNet(bins), num_classes=bins, mean=(0, 0, 0), std=(1, 1, 1), name=name)


def conv_segmenter(seed: int = 0) -> Segmenter:
    torch.manual_seed(seed)
    net = nn.Conv2d(3, 5, 3, padding=1)
    return Segmenter(net, num_classes=5, mean=(0.5, 0.5, 0.5), std=(0.3, 0.3, 0.3), name="conv")


def tiny_denoiser() -> DiffusionDenoiser:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return DiffusionDenoiser(unet, DDPMScheduler(num_train_timesteps=1000))


def image(size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((3, size, size), dtype=np.float32)


def run(**overrides: object) -> dict[str, np.ndarray]:
    args: dict[str, object] = {
        "image_key": "img-3",
        "phase": "estimation",
        "start": 0,
        "count": 12,
        "sigma": SIGMA,
        "seed": 42,
        "denoiser": None,
        "segmenters": {"bins": bin_segmenter(), "conv": conv_segmenter()},
        "batch_size": 5,
    }
    args.update(overrides)
    return sample_class_maps(image(), **args)  # type: ignore[arg-type]


def test_shapes_and_dtypes() -> None:
    out = run()
    assert set(out) == {"bins", "conv"}
    for maps in out.values():
        assert maps.shape == (12, 16, 16) and maps.dtype == np.uint8
    assert out["bins"].max() < 8 and out["conv"].max() < 5


@pytest.mark.parametrize("with_denoiser", [False, True])
def test_identical_for_any_batch_size_and_split(with_denoiser: bool) -> None:
    denoiser = tiny_denoiser() if with_denoiser else None
    reference = run(batch_size=12, denoiser=denoiser)
    for batch_size in (1, 5, 32):
        got = run(batch_size=batch_size, denoiser=denoiser)
        for name in reference:
            np.testing.assert_array_equal(got[name], reference[name])
    first = run(start=0, count=7, batch_size=3, denoiser=denoiser)
    second = run(start=7, count=5, batch_size=4, denoiser=denoiser)
    for name in reference:
        np.testing.assert_array_equal(np.concatenate([first[name], second[name]]), reference[name])


@pytest.mark.parametrize("with_denoiser", [False, True])
def test_equals_per_sample_recomputation(with_denoiser: bool) -> None:
    # Independent path: each sample alone, its noise drawn from its own key.
    denoiser = tiny_denoiser() if with_denoiser else None
    segmenters = {"bins": bin_segmenter(), "conv": conv_segmenter()}
    out = run(start=3, count=6, batch_size=4, denoiser=denoiser, segmenters=segmenters)
    clean = torch.from_numpy(image())
    for row, j in enumerate(range(3, 9)):
        eps = sample_noise((3, 16, 16), seed=42, image_key="img-3", phase="estimation", index=j)
        noisy = (clean + SIGMA * eps).unsqueeze(0)
        with torch.no_grad():
            inputs = noisy if denoiser is None else denoiser.denoise(noisy, SIGMA)
            for name, segmenter in segmenters.items():
                expected = segmenter(inputs).argmax(dim=1)[0].numpy()
                np.testing.assert_array_equal(out[name][row], expected)


def test_noise_is_drawn_on_the_sampling_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop draws each batch's noise with sample_noise_batch on the sampling device (here
    device="cpu", the same code path a CUDA run takes), and the CPU results equal the per-sample
    recomputation from sample_noise on the CPU stream."""
    import certseg.sampling as sampling

    calls: list[tuple[torch.device, torch.device, list[int]]] = []
    original = sampling.sample_noise_batch

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        noise = original(*args, **kwargs)  # type: ignore[arg-type]
        calls.append((kwargs["device"], noise.device, list(kwargs["indices"])))  # type: ignore[call-overload, arg-type]
        return noise

    monkeypatch.setattr(sampling, "sample_noise_batch", spy)
    segmenter = conv_segmenter()
    out = run(segmenters={"conv": segmenter}, start=2, count=5, batch_size=3, device="cpu")
    assert [c[2] for c in calls] == [[2, 3, 4], [5, 6]]
    assert all(asked == torch.device("cpu") and got.type == "cpu" for asked, got, _ in calls)
    clean = torch.from_numpy(image())
    for row, j in enumerate(range(2, 7)):
        eps = sample_noise((3, 16, 16), seed=42, image_key="img-3", phase="estimation", index=j)
        with torch.no_grad():
            expected = segmenter((clean + SIGMA * eps)[None]).argmax(dim=1)[0].numpy()
        np.testing.assert_array_equal(out["conv"][row], expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_is_invariant_to_batch_size_and_split() -> None:
    """device="cuda": the noise is drawn on the GPU per sample, so the class maps are the same
    for any batch size and split of the index range (on this GPU), and each sample's map is the
    segmenter's argmax on clean + σ·sample_noise(device="cuda")."""
    segmenters = {"bins": bin_segmenter()}
    reference = run(segmenters=segmenters, batch_size=12, device="cuda")
    for batch_size in (1, 5):
        got = run(segmenters=segmenters, batch_size=batch_size, device="cuda")
        np.testing.assert_array_equal(got["bins"], reference["bins"])
    first = run(segmenters=segmenters, start=0, count=7, batch_size=3, device="cuda")
    second = run(segmenters=segmenters, start=7, count=5, batch_size=4, device="cuda")
    np.testing.assert_array_equal(
        np.concatenate([first["bins"], second["bins"]]), reference["bins"]
    )
    clean = torch.from_numpy(image()).cuda()
    segmenter = bin_segmenter().cuda()
    for j in range(12):
        eps = sample_noise(
            (3, 16, 16), seed=42, image_key="img-3", phase="estimation", index=j, device="cuda"
        )
        with torch.no_grad():
            expected = segmenter((clean + SIGMA * eps)[None]).argmax(dim=1)[0].cpu().numpy()
        np.testing.assert_array_equal(reference["bins"][j], expected)


def test_samples_within_a_batch_have_their_own_noise() -> None:
    out = run(count=8, batch_size=8)["bins"]
    for j in range(1, 8):
        assert not np.array_equal(out[0], out[j])
    # Bin of x + σε spreads over several classes per pixel across samples.
    assert len(np.unique(out[:, 0, 0])) > 1


def test_phase_seed_and_key_change_the_noise() -> None:
    base = run()["bins"]
    for overrides in ({"phase": "selection"}, {"seed": 43}, {"image_key": "img-4"}):
        assert not np.array_equal(run(**overrides)["bins"], base)


class CountingDenoiser(DiffusionDenoiser):
    calls = 0

    def denoise(self, noisy: torch.Tensor, sigma: float) -> torch.Tensor:
        type(self).calls += 1
        return super().denoise(noisy, sigma)


def test_one_denoise_pass_per_batch_feeds_every_segmenter() -> None:
    base = tiny_denoiser()
    counting = CountingDenoiser(base.unet, base.scheduler)
    CountingDenoiser.calls = 0
    run(denoiser=counting, count=12, batch_size=5)
    assert CountingDenoiser.calls == 3  # ceil(12 / 5), not 3 × 2 segmenters


@pytest.mark.parametrize(
    ("num_classes", "dtype"), [(256, np.uint8), (257, np.uint16), (300, np.uint16)]
)
def test_class_maps_take_the_store_dtype_at_the_cut_off(num_classes: int, dtype: type) -> None:
    """The sampler's class maps have the store's dtype: uint8 up to 256 classes (indices
    0..255), uint16 beyond; the highest class index survives."""

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], num_classes, *x.shape[-2:])
            logits[:, num_classes - 1] = 1.0
            return logits

    big = Segmenter(Constant(), num_classes=num_classes, mean=(0, 0, 0), std=(1, 1, 1), name="big")
    out = run(segmenters={"big": big}, count=2)["big"]
    assert out.dtype == dtype and (out == num_classes - 1).all()
    assert out.dtype == np.dtype(class_map_dtype(num_classes))


def test_zero_count_and_bad_arguments() -> None:
    assert run(count=0)["bins"].shape == (0, 16, 16)
    for overrides in (
        {"sigma": 0.0},
        {"phase": "train"},
        {"start": -1},
        {"batch_size": 0},
        {"segmenters": {}},
    ):
        with pytest.raises(ValueError):
            run(**overrides)
    with pytest.raises(ValueError, match="image"):
        sample_class_maps(
            np.zeros((1, 4, 4), np.float32),
            image_key="a",
            phase="selection",
            start=0,
            count=1,
            sigma=0.25,
            seed=0,
            denoiser=None,
            segmenters={"bins": bin_segmenter()},
        )


def test_bf16_autocast_path() -> None:
    assert isinstance(bf16_supported("cpu"), bool)
    assert bf16_supported("meta") is False
    out = run(autocast_dtype=torch.bfloat16, denoiser=tiny_denoiser(), count=4)
    assert out["conv"].shape == (4, 16, 16)


# bf16 against fp32 under the shipped models (weights/), measured on this repository's CPU path
# (AVX512, torch autocast bf16) over the 20 demo test images × 32 estimation samples × σ ∈ {0.25,
# 0.5}, with and without the shipped denoiser: the worst fraction of class-map pixels that differ
# for one image, one segmenter and one σ was 0.0040; the denoiser's worst max |bf16 − fp32| over
# a 32-sample batch was 0.0147 ([0, 1] units), its worst mean |bf16 − fp32| 0.0016. The bounds
# leave ~2.5× / 2× margin; a bf16 path that computed something else would exceed them by far.
BF16_MAX_DIFFERING_PIXELS = 0.01
BF16_DENOISER_MAX_ABS = 0.03
BF16_DENOISER_MEAN_ABS = 0.004


def test_bf16_agrees_with_fp32_under_the_shipped_models() -> None:
    """Class maps and denoiser outputs under bf16 autocast match fp32 to the measured bounds."""
    if not bf16_supported("cpu"):
        pytest.skip("bf16 autocast is not supported on this CPU (certseg.sampling.bf16_supported)")
    from certseg.data.synthetic import SyntheticDataset
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter

    weights = Path(__file__).resolve().parents[1] / "weights"
    names = ("segmenter-clean", "segmenter-noise-0.25", "segmenter-noise-0.50")
    segmenters = {
        n: build_segmenter(SegmenterSpec(family="compact", path=str(weights / n))) for n in names
    }
    fp32 = load_denoiser(weights / "denoiser")
    bf16 = load_denoiser(weights / "denoiser", autocast_dtype=torch.bfloat16)
    dataset = SyntheticDataset(seed=0, num_images=2, split="test")
    changed_pixels = 0  # by the segmenters' own bf16 autocast (no denoiser in front)
    for index, sigma in ((0, 0.25), (1, 0.5)):
        clean = dataset.load(index).image
        for denoised in (False, True):
            maps = {
                dtype: sample_class_maps(
                    clean,
                    image_key=f"img-{index}",
                    phase="estimation",
                    start=0,
                    count=16,
                    sigma=sigma,
                    seed=0,
                    denoiser=(bf16 if dtype else fp32) if denoised else None,
                    segmenters=segmenters,
                    batch_size=16,
                    autocast_dtype=dtype,
                )
                for dtype in (None, torch.bfloat16)
            }
            for name in names:
                differs = maps[None][name] != maps[torch.bfloat16][name]
                changed_pixels += 0 if denoised else int(differs.sum())
                differing = float(differs.mean())
                assert differing <= BF16_MAX_DIFFERING_PIXELS, (name, sigma, denoised, differing)
        eps = torch.stack(
            [
                sample_noise(
                    (3, 64, 64), seed=0, image_key=f"img-{index}", phase="estimation", index=j
                )
                for j in range(8)
            ]
        )
        noisy = torch.from_numpy(clean).unsqueeze(0) + sigma * eps
        with torch.inference_mode():
            gap = (bf16.denoise(noisy, sigma) - fp32.denoise(noisy, sigma)).abs()
        # > 0: the bf16 path really ran in bf16 (a silently ignored autocast would give 0).
        assert 0.0 < float(gap.max()) <= BF16_DENOISER_MAX_ABS, (sigma, float(gap.max()))
        assert float(gap.mean()) <= BF16_DENOISER_MEAN_ABS, (sigma, float(gap.mean()))
    assert changed_pixels > 0  # the segmenters really ran under bf16 autocast (0 if ignored)


# --- non-finite outputs are refused, never certified (issue 13 item 4) --------------------------


class PoisonNet(nn.Module):
    """Finite conv logits, except: "nan" everywhere, "inf" everywhere, or "partial": NaN at the
    pixels whose input channel 0 exceeds 2 (only noise pushes a [0, 1] image there)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv(x)
        if self.kind == "nan":
            return torch.full_like(logits, float("nan"))
        if self.kind == "inf":
            return logits.masked_fill(x[:, :1] > -10, float("inf"))
        return logits.masked_fill(x[:, :1] > 2.0, float("nan"))


def poison_segmenter(kind: str) -> Segmenter:
    return Segmenter(PoisonNet(kind), num_classes=7, mean=(0, 0, 0), std=(1, 1, 1), name=kind)


@pytest.mark.parametrize("kind", ["nan", "inf", "partial"])
def test_non_finite_logits_fail_the_batch(kind: str) -> None:
    """Before the fix the argmax made NaN logits class 0 (and partly-NaN ones some class): the
    batch must fail instead, naming the segmenter, σ, the image, the phase and the samples."""
    from certseg.errors import NonFiniteOutputError

    segmenters = {"fine": conv_segmenter(), kind: poison_segmenter(kind)}
    with pytest.raises(NonFiniteOutputError) as caught:
        run(segmenters=segmenters, start=4, count=6, batch_size=6)
    message = str(caught.value)
    assert f"segmenter {kind!r}" in message
    assert f"sigma={SIGMA}" in message and "image 'img-3'" in message
    assert "phase 'estimation'" in message
    clean = torch.from_numpy(image())
    if kind == "partial":  # exactly the samples whose noisy channel 0 exceeds 2 somewhere
        expected = []
        for j in range(4, 10):
            eps = sample_noise((3, 16, 16), seed=42, image_key="img-3", phase="estimation", index=j)
            if bool((clean[0] + SIGMA * eps[0] > 2.0).any()):
                expected.append(j)
        assert 0 < len(expected) < 6, expected  # some samples, not all: the indices matter
    else:
        expected = list(range(4, 10))
    assert f"samples {expected}" in message
    assert isinstance(caught.value, ValueError)  # permanent: the flows never retry it


def test_finite_check_keeps_finite_results_identical() -> None:
    """The check adds no arithmetic: a finite model's class maps are the per-sample argmax."""
    out = run(segmenters={"conv": conv_segmenter()}, count=5, batch_size=2)["conv"]
    clean = torch.from_numpy(image())
    segmenter = conv_segmenter()
    for j in range(5):
        eps = sample_noise((3, 16, 16), seed=42, image_key="img-3", phase="estimation", index=j)
        with torch.no_grad():
            expected = segmenter((clean + SIGMA * eps)[None]).argmax(dim=1)[0].numpy()
        np.testing.assert_array_equal(out[j], expected)


class PoisonUNet(nn.Module):
    """A UNet stand-in returning NaN or +inf for batch items 1 and 3 (the rest: zeros)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.config = type("Config", (), {"in_channels": 3})()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[1::2] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_denoiser_output_fails_the_batch(value: float) -> None:
    """An inf ε̂ would be clamped to a plain image by the denoiser's clip: it must fail too."""
    from certseg.errors import NonFiniteOutputError

    denoiser = DiffusionDenoiser(PoisonUNet(value), DDPMScheduler(num_train_timesteps=1000))
    with pytest.raises(NonFiniteOutputError) as caught:
        run(denoiser=denoiser, start=10, count=4, batch_size=4, segmenters={"c": conv_segmenter()})
    message = str(caught.value)
    assert message.startswith("denoiser returned non-finite values")
    assert f"sigma={SIGMA}, image 'img-3', phase 'estimation', samples [11, 13]" in message
    assert "timestep" in message


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("classes", [2, 7, 19, 300])
def test_argmax_classes_equals_torch_argmax_with_ties(dtype: torch.dtype, classes: int) -> None:
    """The running maximum gives torch.argmax's labels bit for bit, ties to the lowest index:
    logits drawn from a few values (ties everywhere), ±0.0 mixed, exact ties of all classes."""
    generator = torch.Generator().manual_seed(classes)
    values = torch.tensor([-1.5, -0.0, 0.0, 0.25, 3.0])
    picks = torch.randint(0, len(values), (3, classes, 9, 11), generator=generator)
    logits = values[picks].to(dtype)
    logits[0, :, 0, 0] = 1.0  # every class tied: class 0
    logits[1, :, 0, 0] = -1.0
    logits[1, classes - 1, 0, 0] = 2.0  # the last class alone on top
    wide = torch.randn((2, classes, 5, 7), generator=generator).to(dtype)  # few ties
    for case in (logits, wide):
        expected = case.float().argmax(dim=1)
        labels = argmax_classes(case)
        assert labels.dtype == (torch.uint8 if classes <= 256 else torch.int32)
        assert torch.equal(labels.long(), expected)
    assert int(argmax_classes(logits)[0, 0, 0]) == 0
    assert int(argmax_classes(logits)[1, 0, 0]) == classes - 1


def test_finite_check_falls_back_when_the_sum_overflows() -> None:
    """Finite values whose float32 sum overflows pass (the per-element check decides); one
    non-finite value among them fails, naming its batch item."""
    big = torch.full((2, 3, 4, 4), 3.0e38)
    check_finite(big, model="m", where="w")
    big[1, 2, 3, 3] = float("nan")
    with pytest.raises(NonFiniteOutputError) as caught:
        check_finite(big, model="m", where="w", indices=[7, 8])
    assert caught.value.items == (1,)
    assert "samples [8]" in str(caught.value)
    ninf = torch.zeros((2, 3, 4, 4), dtype=torch.bfloat16)
    ninf[0, 0, 0, 0] = float("-inf")
    with pytest.raises(NonFiniteOutputError):
        check_finite(ninf, model="m", where="w")


def test_measure_sample_bytes_scales_with_the_frame_and_counts_the_logits() -> None:
    """The probe sees at least one sample's logits (C·H·W float32) and x̃ (3·H·W float32), and
    grows about linearly with the pixels for a fully convolutional segmenter."""
    from certseg.sampling import measure_sample_bytes

    def measure(size: int) -> int:
        return measure_sample_bytes(
            image(size),
            image_key="k",
            seed=0,
            sigma=SIGMA,
            denoiser=None,
            segmenters={"conv": conv_segmenter()},
        )

    small, large = measure(32), measure(64)
    assert small >= (5 + 3) * 32 * 32 * 4
    assert 3.0 < large / small < 5.0


def test_micro_batch_size_fits_the_budget_or_refuses() -> None:
    from certseg.sampling import MEMORY_SLACK, MemoryBudgetError, micro_batch_size

    mib = 2**20
    assert micro_batch_size(32, 10 * mib, 2048 * mib, what="f") == 32
    assert micro_batch_size(32, 800 * mib, 2048 * mib, what="f") == 2  # 800 × 1.25 = 1000
    assert micro_batch_size(32, int(2048 * mib / MEMORY_SLACK), 2048 * mib, what="f") == 1
    message = r"frame 1024x2048.*1250 MiB.*memory_mib = 1000 MiB"
    with pytest.raises(MemoryBudgetError, match=message):
        micro_batch_size(32, 1000 * mib, 1000 * mib, what="frame 1024x2048")
