"""Tests for certseg.adm: guided-diffusion (ADM) state dicts → diffusers UNet2DModel.

guided-diffusion cannot be imported here, so this file re-derives its UNetModel from the source
(guided_diffusion/unet.py, UNetModel.__init__ / forward, ResBlock, AttentionBlock with
QKVAttentionLegacy / QKVAttention, nn.timestep_embedding): `adm_plan` lists its modules with the
original key prefixes and shapes, `adm_state_dict` fills them with random values, and `adm_forward`
evaluates the original equations on that state dict. The converted diffusers model must reproduce
`adm_forward` numerically. Nothing here uses certseg.adm's own layout walk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from certseg.adm import (
    ADM_256_UNCOND,
    ADMFlags,
    adm_flags_from_args,
    adm_scheduler_config,
    adm_unet_config,
    convert_adm_state_dict,
    load_adm_checkpoint,
)
from certseg.denoise import load_denoiser

# --- guided-diffusion's UNetModel, re-derived from its source --------------------------------


@dataclass(frozen=True)
class Res:
    prefix: str
    cin: int
    cout: int
    up: bool = False
    down: bool = False


@dataclass(frozen=True)
class Attn:
    prefix: str
    ch: int
    heads: int


@dataclass(frozen=True)
class Resample:  # Downsample(op, stride 2) or Upsample(nearest ×2, then conv)
    prefix: str
    ch: int
    up: bool


Layer = Res | Attn | Resample


def adm_plan(f: ADMFlags) -> tuple[list[list[Layer]], list[Layer], list[list[Layer]], int]:
    """(input_blocks[1:], middle_block, output_blocks, final ch) as in UNetModel.__init__."""
    mc = f.num_channels
    mults = f.channel_mult or {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}[f.image_size]
    attention_ds = [f.image_size // r for r in f.attention_resolutions]
    heads_up = f.num_heads if f.num_heads_upsample == -1 else f.num_heads_upsample

    def heads(ch: int, n: int) -> int:
        return n if f.num_head_channels == -1 else ch // f.num_head_channels

    ch = int(mults[0] * mc)
    inputs: list[list[Layer]] = []
    chans = [ch]
    ds = 1
    k = 1
    for level, mult in enumerate(mults):
        for _ in range(f.num_res_blocks):
            layers: list[Layer] = [Res(f"input_blocks.{k}.0", ch, int(mult * mc))]
            ch = int(mult * mc)
            if ds in attention_ds:
                layers.append(Attn(f"input_blocks.{k}.1", ch, heads(ch, f.num_heads)))
            inputs.append(layers)
            chans.append(ch)
            k += 1
        if level != len(mults) - 1:
            if f.resblock_updown:
                inputs.append([Res(f"input_blocks.{k}.0", ch, ch, down=True)])
            else:
                inputs.append([Resample(f"input_blocks.{k}.0", ch, up=False)])
            chans.append(ch)
            ds *= 2
            k += 1
    middle: list[Layer] = [
        Res("middle_block.0", ch, ch),
        Attn("middle_block.1", ch, heads(ch, f.num_heads)),
        Res("middle_block.2", ch, ch),
    ]
    outputs: list[list[Layer]] = []
    k = 0
    for level, mult in list(enumerate(mults))[::-1]:
        for i in range(f.num_res_blocks + 1):
            ich = chans.pop()
            layers = [Res(f"output_blocks.{k}.0", ch + ich, int(mc * mult))]
            ch = int(mc * mult)
            if ds in attention_ds:
                layers.append(Attn(f"output_blocks.{k}.1", ch, heads(ch, heads_up)))
            if level and i == f.num_res_blocks:
                prefix = f"output_blocks.{k}.{len(layers)}"
                if f.resblock_updown:
                    layers.append(Res(prefix, ch, ch, up=True))
                else:
                    layers.append(Resample(prefix, ch, up=True))
                ds //= 2
            outputs.append(layers)
            k += 1
    return inputs, middle, outputs, ch


def layer_shapes(layer: Layer, f: ADMFlags) -> dict[str, tuple[int, ...]]:
    temb = 4 * f.num_channels
    p = layer.prefix
    if isinstance(layer, Res):
        emb_out = 2 * layer.cout if f.use_scale_shift_norm else layer.cout
        shapes = {
            f"{p}.in_layers.0.weight": (layer.cin,),
            f"{p}.in_layers.0.bias": (layer.cin,),
            f"{p}.in_layers.2.weight": (layer.cout, layer.cin, 3, 3),
            f"{p}.in_layers.2.bias": (layer.cout,),
            f"{p}.emb_layers.1.weight": (emb_out, temb),
            f"{p}.emb_layers.1.bias": (emb_out,),
            f"{p}.out_layers.0.weight": (layer.cout,),
            f"{p}.out_layers.0.bias": (layer.cout,),
            f"{p}.out_layers.3.weight": (layer.cout, layer.cout, 3, 3),
            f"{p}.out_layers.3.bias": (layer.cout,),
        }
        if layer.cout != layer.cin:
            shapes[f"{p}.skip_connection.weight"] = (layer.cout, layer.cin, 1, 1)
            shapes[f"{p}.skip_connection.bias"] = (layer.cout,)
        return shapes
    if isinstance(layer, Attn):
        c = layer.ch
        return {
            f"{p}.norm.weight": (c,),
            f"{p}.norm.bias": (c,),
            f"{p}.qkv.weight": (3 * c, c, 1),
            f"{p}.qkv.bias": (3 * c,),
            f"{p}.proj_out.weight": (c, c, 1),
            f"{p}.proj_out.bias": (c,),
        }
    name = "conv" if layer.up else "op"
    return {f"{p}.{name}.weight": (layer.ch, layer.ch, 3, 3), f"{p}.{name}.bias": (layer.ch,)}


def adm_shapes(f: ADMFlags) -> dict[str, tuple[int, ...]]:
    """Every key of guided-diffusion's UNetModel state dict with its shape."""
    mc, temb = f.num_channels, 4 * f.num_channels
    inputs, middle, outputs, ch = adm_plan(f)
    shapes: dict[str, tuple[int, ...]] = {
        "time_embed.0.weight": (temb, mc),
        "time_embed.0.bias": (temb,),
        "time_embed.2.weight": (temb, temb),
        "time_embed.2.bias": (temb,),
        "input_blocks.0.0.weight": (mc, f.in_channels, 3, 3),
        "input_blocks.0.0.bias": (mc,),
    }
    for layer in [x for block in inputs for x in block] + middle:
        shapes.update(layer_shapes(layer, f))
    for layer in [x for block in outputs for x in block]:
        shapes.update(layer_shapes(layer, f))
    out = 2 * f.in_channels if f.learn_sigma else f.in_channels
    shapes.update(
        {
            "out.0.weight": (ch,),
            "out.0.bias": (ch,),
            "out.2.weight": (out, mc, 3, 3),
            "out.2.bias": (out,),
        }
    )
    return shapes


def adm_state_dict(f: ADMFlags, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the original layout (zero_module convs included: nothing is zero)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in adm_shapes(f).items():
        if key.endswith("weight") and len(shape) == 1:  # GroupNorm scale
            value = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 16
            value = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        state[key] = value
    return state


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """guided_diffusion.nn.timestep_embedding: [cos, sin] of t · exp(−ln(10⁴) i / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def adm_forward(
    sd: dict[str, torch.Tensor], f: ADMFlags, x: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """UNetModel.forward written from the guided-diffusion equations, on a state dict."""

    def gn(h: torch.Tensor, p: str) -> torch.Tensor:
        return F.group_norm(h.float(), 32, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)

    def res(h: torch.Tensor, emb: torch.Tensor, layer: Res) -> torch.Tensor:
        p = layer.prefix
        x_in = h
        h = F.silu(gn(h, f"{p}.in_layers.0"))
        if layer.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x_in = F.interpolate(x_in, scale_factor=2, mode="nearest")
        elif layer.down:
            h = F.avg_pool2d(h, 2, 2)
            x_in = F.avg_pool2d(x_in, 2, 2)
        h = F.conv2d(h, sd[f"{p}.in_layers.2.weight"], sd[f"{p}.in_layers.2.bias"], padding=1)
        e = F.linear(F.silu(emb), sd[f"{p}.emb_layers.1.weight"], sd[f"{p}.emb_layers.1.bias"])
        e = e[:, :, None, None]
        if f.use_scale_shift_norm:
            scale, shift = torch.chunk(e, 2, dim=1)
            h = gn(h, f"{p}.out_layers.0") * (1 + scale) + shift
            h = F.silu(h)
        else:
            h = F.silu(gn(h + e, f"{p}.out_layers.0"))
        h = F.conv2d(h, sd[f"{p}.out_layers.3.weight"], sd[f"{p}.out_layers.3.bias"], padding=1)
        if f"{p}.skip_connection.weight" in sd:
            x_in = F.conv2d(
                x_in, sd[f"{p}.skip_connection.weight"], sd[f"{p}.skip_connection.bias"]
            )
        return x_in + h

    def attn(h: torch.Tensor, layer: Attn) -> torch.Tensor:
        p = layer.prefix
        b, c, height, width = h.shape
        flat = h.reshape(b, c, -1)
        qkv = F.conv1d(gn(flat, f"{p}.norm"), sd[f"{p}.qkv.weight"], sd[f"{p}.qkv.bias"])
        n, length = layer.heads, flat.shape[-1]
        ch = c // n
        if f.use_new_attention_order:  # QKVAttention
            q, k, v = (z.reshape(b * n, ch, length) for z in qkv.chunk(3, dim=1))
        else:  # QKVAttentionLegacy
            q, k, v = qkv.reshape(b * n, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)
        out = F.conv1d(a, sd[f"{p}.proj_out.weight"], sd[f"{p}.proj_out.bias"])
        return (flat + out).reshape(b, c, height, width)

    def resample(h: torch.Tensor, layer: Resample) -> torch.Tensor:
        p = layer.prefix
        if layer.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            return F.conv2d(h, sd[f"{p}.conv.weight"], sd[f"{p}.conv.bias"], padding=1)
        return F.conv2d(h, sd[f"{p}.op.weight"], sd[f"{p}.op.bias"], stride=2, padding=1)

    def run(h: torch.Tensor, emb: torch.Tensor, layers: list[Layer]) -> torch.Tensor:
        for layer in layers:
            if isinstance(layer, Res):
                h = res(h, emb, layer)
            elif isinstance(layer, Attn):
                h = attn(h, layer)
            else:
                h = resample(h, layer)
        return h

    inputs, middle, outputs, _ = adm_plan(f)
    emb = timestep_embedding(t, f.num_channels)
    emb = F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])
    emb = F.linear(F.silu(emb), sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    h = F.conv2d(x, sd["input_blocks.0.0.weight"], sd["input_blocks.0.0.bias"], padding=1)
    hs = [h]
    for block in inputs:
        h = run(h, emb, block)
        hs.append(h)
    h = run(h, emb, middle)
    for block in outputs:
        h = run(torch.cat([h, hs.pop()], dim=1), emb, block)
    h = F.silu(gn(h, "out.0"))
    return F.conv2d(h, sd["out.2.weight"], sd["out.2.bias"], padding=1)


# --- tests --------------------------------------------------------------------------------------

SMALL_UPDOWN = ADMFlags(  # like the 256 model: scale-shift, resblock up/down, 64-wide heads → 16
    image_size=32,
    num_channels=32,
    num_res_blocks=2,
    attention_resolutions=(16, 8),
    channel_mult=(1, 2, 2),
    num_head_channels=16,
    learn_sigma=True,
    resblock_updown=True,
    use_scale_shift_norm=True,
)
SMALL_CONV = ADMFlags(  # the other branches: conv resampling, num_heads, new order, additive emb
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    attention_resolutions=(16,),
    channel_mult=(1, 2),
    num_heads=2,
    learn_sigma=False,
    resblock_updown=False,
    use_scale_shift_norm=False,
    use_new_attention_order=True,
)


@pytest.mark.parametrize("flags", [SMALL_UPDOWN, SMALL_CONV], ids=["updown", "conv"])
def test_every_key_consumed_and_loads_strict(flags: ADMFlags) -> None:
    state = adm_state_dict(flags)
    converted = convert_adm_state_dict(state, flags)
    unet = UNet2DModel(**adm_unet_config(flags))
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert sum(v.numel() for v in converted.values()) == sum(v.numel() for v in state.values())
    unet.load_state_dict(converted, strict=True)


@pytest.mark.parametrize("flags", [SMALL_UPDOWN, SMALL_CONV], ids=["updown", "conv"])
def test_converted_unet_matches_adm_equations(flags: ADMFlags) -> None:
    state = adm_state_dict(flags, seed=1)
    unet = UNet2DModel(**adm_unet_config(flags))
    unet.load_state_dict(convert_adm_state_dict(state, flags), strict=True)
    unet.eval()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    t = torch.tensor([145, 3])
    with torch.no_grad():
        ours = unet(x, t).sample
        reference = adm_forward(state, flags, x, t)
    assert ours.shape == (2, flags.out_channels, 32, 32)
    assert ours.shape[1] == (6 if flags.learn_sigma else 3)
    scale = float(reference.abs().max())
    assert scale > 1e-2  # a non-degenerate output
    torch.testing.assert_close(ours, reference, atol=1e-4 * max(scale, 1.0), rtol=1e-4)


def test_legacy_head_order_matters() -> None:
    # Guard for the check above: reading legacy qkv as [all q, all k, all v] changes the output.
    state = adm_state_dict(SMALL_UPDOWN, seed=3)
    wrong_flags = ADMFlags(**{**SMALL_UPDOWN.__dict__, "use_new_attention_order": True})
    unet = UNet2DModel(**adm_unet_config(SMALL_UPDOWN))
    unet.load_state_dict(convert_adm_state_dict(state, wrong_flags), strict=True)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([10])
    with torch.no_grad():
        assert not torch.allclose(
            unet.eval()(x, t).sample, adm_forward(state, SMALL_UPDOWN, x, t), atol=1e-3
        )


def test_timestep_embedding_matches_diffusers() -> None:
    unet = UNet2DModel(**adm_unet_config(SMALL_CONV))
    t = torch.tensor([0, 1, 145, 999])
    torch.testing.assert_close(unet.time_proj(t), timestep_embedding(t, 32))


def test_mismatched_checkpoint_is_rejected() -> None:
    state = adm_state_dict(SMALL_UPDOWN)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="do not account for"):
        convert_adm_state_dict(state, SMALL_UPDOWN)
    state = adm_state_dict(SMALL_UPDOWN)
    del state["middle_block.1.qkv.bias"]
    with pytest.raises(ValueError, match=r"middle_block\.1\.qkv\.bias"):
        convert_adm_state_dict(state, SMALL_UPDOWN)


def test_load_checkpoint_file_and_denoiser(tmp_path: Path) -> None:
    state = adm_state_dict(SMALL_UPDOWN, seed=5)
    path = tmp_path / "small_adm.pt"
    torch.save(state, path)
    unet, scheduler = load_adm_checkpoint(path, SMALL_UPDOWN)
    assert not unet.training
    assert scheduler.config.variance_type == "learned_range"
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(
            unet(x, torch.tensor([50])).sample,
            adm_forward(state, SMALL_UPDOWN, x, torch.tensor([50])),
            atol=1e-3,
            rtol=1e-4,
        )
    denoiser = load_denoiser(path, adm_options={"flags": SMALL_UPDOWN})
    assert denoiser.path == path
    out = denoiser.denoise(torch.rand(2, 3, 32, 32), 0.25)  # learned variance: 6 → 3 channels
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="flags"):
        load_adm_checkpoint(path, SMALL_CONV)


def test_preset_256_uncond_layout_without_allocating() -> None:
    # The paper's model: converted key set and shapes equal diffusers' UNet2DModel, checked on
    # the meta device (no 2 GB allocation).
    flags = ADM_256_UNCOND
    state = {k: torch.empty(s, device="meta") for k, s in adm_shapes(flags).items()}
    converted = convert_adm_state_dict(state, flags)
    with torch.device("meta"):
        unet = UNet2DModel(**adm_unet_config(flags))
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    params = sum(math.prod(s) for s in adm_shapes(flags).values())
    assert params == sum(v.numel() for v in unet.parameters())
    config = adm_unet_config(flags)
    assert config["out_channels"] == 6 and config["attention_head_dim"] == 64
    assert config["block_out_channels"] == [256, 256, 512, 512, 1024, 1024]
    assert config["down_block_types"][3:] == ["AttnDownBlock2D"] * 3  # ds 8, 16, 32


def test_preset_scheduler_is_ddpm_linear() -> None:
    from diffusers import DDPMScheduler

    from certseg.noise import timestep_for_sigma

    scheduler = DDPMScheduler(**adm_scheduler_config(ADM_256_UNCOND))
    assert scheduler.config.num_train_timesteps == 1000
    assert float(scheduler.betas[0]) == pytest.approx(1e-4)
    assert float(scheduler.betas[-1]) == pytest.approx(0.02)
    assert timestep_for_sigma(scheduler.alphas_cumprod, 0.5) == 259


def test_flags_from_readme_command_line() -> None:
    readme = (
        "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 "
        "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
        "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
        "--use_scale_shift_norm True"
    )
    assert adm_flags_from_args(readme.split()) == ADM_256_UNCOND
    with pytest.raises(ValueError, match="class_cond"):
        adm_flags_from_args(["--image_size", "256", "--class_cond", "True"])
    with pytest.raises(ValueError, match="unknown"):
        adm_flags_from_args(["--bogus", "1"])
