"""Import OpenAI guided-diffusion (ADM) UNet checkpoints into a diffusers UNet2DModel.

The paper's denoiser is guided-diffusion's 256×256 unconditional model
(`256x256_diffusion_uncond.pt`, flags in `ADM_256_UNCOND`). `convert_adm_state_dict` maps its
state dict (original key names) onto the diffusers layout that `adm_unet_config` describes;
every original key must be consumed and every diffusers key filled, or a ValueError lists the
difference. Layout facts used (from guided-diffusion's unet.py / script_util.py):

- `time_embed.{0,2}`: Linear(model_channels → 4·model_channels → 4·model_channels) over the
  sinusoidal embedding [cos, sin] with frequencies exp(−ln(10⁴)·i/half) (diffusers:
  flip_sin_to_cos=True, freq_shift=0).
- `input_blocks.0.0`: the input conv; then per level `num_res_blocks` × [ResBlock, AttentionBlock
  if the level's downsample rate is in attention_resolutions], then (not on the last level) one
  downsampler (a ResBlock with down=True when resblock_updown, else Downsample `op`).
- `middle_block.{0,1,2}`: ResBlock, AttentionBlock, ResBlock.
- `output_blocks`: per level from the deepest, `num_res_blocks + 1` × [ResBlock, attention if any,
  and on the last one of every level but level 0 an upsampler (ResBlock up=True or Upsample conv)].
- `out.{0,2}`: GroupNorm(32) and the output conv (6 channels when learn_sigma: ε and the variance
  interpolation v).
- ResBlock: in_layers (GroupNorm, SiLU, conv), emb_layers (SiLU, Linear → 2C with scale-shift),
  out_layers (GroupNorm, SiLU, Dropout, conv), skip_connection (1×1 conv when C changes).
- AttentionBlock: norm, qkv (Conv1d C → 3C), proj_out (Conv1d C → C). In the default ("legacy")
  order the 3C rows are grouped per head as [q, k, v] of that head; with
  use_new_attention_order they are [all q, all k, all v]. Both are split into diffusers'
  to_q / to_k / to_v here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certseg.errors import ModelFileError

if TYPE_CHECKING:
    from torch import Tensor

_DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
"""guided-diffusion's script_util.create_model defaults for channel_mult="" by image_size."""


@dataclass(frozen=True)
class ADMFlags:
    """guided-diffusion's model and diffusion flags (script_util names and defaults).

    attention_resolutions: image resolutions (e.g. (32, 16, 8)) at which attention is used, as on
    guided-diffusion's command line. channel_mult: None takes guided-diffusion's default for
    image_size. num_head_channels: fixed channels per head (−1: use num_heads heads).
    """

    image_size: int
    num_channels: int = 128
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    channel_mult: tuple[float, ...] | None = None
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    learn_sigma: bool = False
    resblock_updown: bool = False
    use_scale_shift_norm: bool = True
    use_new_attention_order: bool = False
    dropout: float = 0.0
    class_cond: bool = False
    use_fp16: bool = False
    in_channels: int = 3
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.num_channels < 1 or self.num_res_blocks < 1:
            raise ValueError("ADMFlags image_size, num_channels, num_res_blocks must be >= 1")
        if self.noise_schedule not in ("linear", "cosine"):
            raise ValueError(
                f"ADMFlags.noise_schedule must be 'linear' or 'cosine', got {self.noise_schedule!r}"
            )
        if self.class_cond:
            raise ValueError(
                "ADMFlags.class_cond=True is not supported: the denoiser has no class labels to "
                "give a class-conditional model"
            )
        if self.channel_mult is None and self.image_size not in _DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"ADMFlags.channel_mult must be given for image_size={self.image_size} "
                f"(guided-diffusion has defaults only for {sorted(_DEFAULT_CHANNEL_MULT)})"
            )

    @property
    def multipliers(self) -> tuple[float, ...]:
        """The channel multiplier of every level."""
        if self.channel_mult is not None:
            return tuple(self.channel_mult)
        return _DEFAULT_CHANNEL_MULT[self.image_size]

    @property
    def attention_rates(self) -> frozenset[int]:
        """Downsample rates ds = image_size // resolution that carry attention."""
        return frozenset(self.image_size // int(res) for res in self.attention_resolutions)

    @property
    def out_channels(self) -> int:
        """Output channels: 2·in_channels with a learned variance, else in_channels."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def level_channels(self) -> list[int]:
        """Channels of each level: int(mult · num_channels)."""
        return [int(mult * self.num_channels) for mult in self.multipliers]

    def level_has_attention(self) -> list[bool]:
        """Whether level L (downsample rate 2^L) has attention blocks."""
        return [2**level in self.attention_rates for level in range(len(self.multipliers))]


ADM_256_UNCOND = ADMFlags(
    image_size=256,
    num_channels=256,
    num_res_blocks=2,
    attention_resolutions=(32, 16, 8),
    num_head_channels=64,
    learn_sigma=True,
    resblock_updown=True,
    use_scale_shift_norm=True,
    use_fp16=True,
    class_cond=False,
    diffusion_steps=1000,
    noise_schedule="linear",
)
"""The paper's denoiser: guided-diffusion 256x256_diffusion_uncond.pt (its README's flags)."""


def _attention_head_dim(flags: ADMFlags) -> int | None:
    """diffusers' single attention_head_dim reproducing ADM's heads in every attention block."""
    if flags.num_head_channels != -1:
        return flags.num_head_channels
    channels = flags.level_channels()
    heads_up = flags.num_heads if flags.num_heads_upsample == -1 else flags.num_heads_upsample
    dims = {channels[-1] // flags.num_heads}  # middle block
    for level, has_attention in enumerate(flags.level_has_attention()):
        if has_attention:
            dims.add(channels[level] // flags.num_heads)
            dims.add(channels[level] // heads_up)
    if len(dims) != 1:
        raise ValueError(
            f"ADMFlags with num_heads={flags.num_heads} give head widths {sorted(dims)}; a "
            "diffusers UNet2DModel has one attention_head_dim (use num_head_channels)"
        )
    return dims.pop()


def adm_unet_config(flags: ADMFlags) -> dict[str, Any]:
    """The diffusers UNet2DModel config equivalent to the ADM UNet `flags` describe."""
    multipliers = flags.multipliers
    if multipliers[0] != 1:
        raise ValueError(
            f"ADMFlags.channel_mult[0] must be 1 (got {multipliers[0]}): ADM embeds timesteps with "
            "num_channels features, diffusers with the first level's channels"
        )
    shift = "scale_shift" if flags.use_scale_shift_norm else "default"
    attention = flags.level_has_attention()
    resample = "resnet" if flags.resblock_updown else "conv"
    if flags.resblock_updown:
        down = ["AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention]
        up = ["AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attention)]
    else:
        down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention]
        up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    return {
        "sample_size": flags.image_size,
        "in_channels": flags.in_channels,
        "out_channels": flags.out_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": flags.level_channels(),
        "layers_per_block": flags.num_res_blocks,
        "mid_block_scale_factor": 1.0,
        "downsample_padding": 1,
        "downsample_type": resample,
        "upsample_type": resample,
        "dropout": flags.dropout,
        "act_fn": "silu",
        "attention_head_dim": _attention_head_dim(flags),
        "norm_num_groups": 32,
        "attn_norm_num_groups": 32,
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": shift,
        "add_attention": True,
        "num_class_embeds": None,
    }


def adm_scheduler_config(flags: ADMFlags) -> dict[str, Any]:
    """A diffusers DDPMScheduler config with ADM's noise schedule (ε prediction).

    linear: betas linspace(1e-4·s, 0.02·s) with s = 1000 / diffusion_steps; cosine: diffusers'
    "squaredcos_cap_v2" (ADM's betas_for_alpha_bar with max_beta 0.999).
    """
    config: dict[str, Any] = {
        "num_train_timesteps": flags.diffusion_steps,
        "prediction_type": "epsilon",
        "variance_type": "learned_range" if flags.learn_sigma else "fixed_small",
        "clip_sample": True,
    }
    if flags.noise_schedule == "linear":
        scale = 1000 / flags.diffusion_steps
        config.update(beta_schedule="linear", beta_start=1e-4 * scale, beta_end=0.02 * scale)
    else:
        config.update(beta_schedule="squaredcos_cap_v2")
    return config


class _Converter:
    """Moves tensors from the ADM state dict (by original key) to diffusers keys, once each."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self.source = dict(state)
        self.target: dict[str, Tensor] = {}

    def take(self, key: str) -> Tensor:
        if key not in self.source:
            raise ValueError(
                f"ADM state dict has no key {key!r} (flags do not match the checkpoint?)"
            )
        return self.source.pop(key)

    def move(self, old: str, new: str) -> None:
        for suffix in ("weight", "bias"):
            self.target[f"{new}.{suffix}"] = self.take(f"{old}.{suffix}")

    def resnet(self, old: str, new: str) -> None:
        self.move(f"{old}.in_layers.0", f"{new}.norm1")
        self.move(f"{old}.in_layers.2", f"{new}.conv1")
        self.move(f"{old}.emb_layers.1", f"{new}.time_emb_proj")
        self.move(f"{old}.out_layers.0", f"{new}.norm2")
        self.move(f"{old}.out_layers.3", f"{new}.conv2")
        if f"{old}.skip_connection.weight" in self.source:
            self.move(f"{old}.skip_connection", f"{new}.conv_shortcut")

    def attention(self, old: str, new: str, heads: int, new_order: bool) -> None:
        self.move(f"{old}.norm", f"{new}.group_norm")
        weight = self.take(f"{old}.qkv.weight")  # (3C, C, 1)
        bias = self.take(f"{old}.qkv.bias")  # (3C,)
        channels = weight.shape[1]
        if weight.shape[0] != 3 * channels or channels % heads:
            raise ValueError(f"{old}.qkv.weight has shape {tuple(weight.shape)}; heads={heads}")
        head_dim = channels // heads
        w = weight.reshape(3 * channels, channels)
        if new_order:  # [q (heads × d), k, v]
            parts_w = w.reshape(3, channels, channels)
            parts_b = bias.reshape(3, channels)
        else:  # legacy: per head [q (d), k (d), v (d)]
            parts_w = w.reshape(heads, 3, head_dim, channels).transpose(0, 1)
            parts_w = parts_w.reshape(3, channels, channels)
            parts_b = bias.reshape(heads, 3, head_dim).transpose(0, 1).reshape(3, channels)
        for index, name in enumerate(("to_q", "to_k", "to_v")):
            self.target[f"{new}.{name}.weight"] = parts_w[index].contiguous()
            self.target[f"{new}.{name}.bias"] = parts_b[index].contiguous()
        proj = self.take(f"{old}.proj_out.weight")
        self.target[f"{new}.to_out.0.weight"] = proj.reshape(proj.shape[0], proj.shape[1])
        self.target[f"{new}.to_out.0.bias"] = self.take(f"{old}.proj_out.bias")

    def resample(self, old: str, new: str, resnet: bool) -> None:
        if resnet:
            self.resnet(old, new)
        elif f"{old}.op.weight" in self.source:  # Downsample with conv
            self.move(f"{old}.op", f"{new}.conv")
        else:  # Upsample with conv
            self.move(f"{old}.conv", f"{new}.conv")


def _heads(flags: ADMFlags, channels: int, upsample: bool) -> int:
    if flags.num_head_channels != -1:
        return channels // flags.num_head_channels
    if upsample and flags.num_heads_upsample != -1:
        return flags.num_heads_upsample
    return flags.num_heads


def convert_adm_state_dict(state: Mapping[str, Tensor], flags: ADMFlags) -> dict[str, Tensor]:
    """Map an ADM UNet state dict (original keys) to diffusers UNet2DModel keys (float32).

    Every original key is consumed exactly once; ValueError names missing or left-over keys.
    The result loads with strict=True into UNet2DModel(**adm_unet_config(flags)).
    """
    import torch

    source = {
        key.removeprefix("module."): value.detach().to(torch.float32)
        for key, value in state.items()
    }
    conv = _Converter(source)
    new_order = flags.use_new_attention_order
    conv.move("time_embed.0", "time_embedding.linear_1")
    conv.move("time_embed.2", "time_embedding.linear_2")
    conv.move("input_blocks.0.0", "conv_in")
    channels = flags.level_channels()
    attention = flags.level_has_attention()
    levels = len(channels)
    block = 1
    for level in range(levels):
        for r in range(flags.num_res_blocks):
            conv.resnet(f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{r}")
            if attention[level]:
                heads = _heads(flags, channels[level], upsample=False)
                conv.attention(
                    f"input_blocks.{block}.1",
                    f"down_blocks.{level}.attentions.{r}",
                    heads,
                    new_order,
                )
            block += 1
        if level != levels - 1:
            conv.resample(
                f"input_blocks.{block}.0",
                f"down_blocks.{level}.downsamplers.0",
                resnet=flags.resblock_updown,
            )
            block += 1
    conv.resnet("middle_block.0", "mid_block.resnets.0")
    heads = _heads(flags, channels[-1], upsample=False)
    conv.attention("middle_block.1", "mid_block.attentions.0", heads, new_order)
    conv.resnet("middle_block.2", "mid_block.resnets.1")
    block = 0
    for i, level in enumerate(reversed(range(levels))):
        for r in range(flags.num_res_blocks + 1):
            conv.resnet(f"output_blocks.{block}.0", f"up_blocks.{i}.resnets.{r}")
            position = 1
            if attention[level]:
                heads = _heads(flags, channels[level], upsample=True)
                conv.attention(
                    f"output_blocks.{block}.1", f"up_blocks.{i}.attentions.{r}", heads, new_order
                )
                position = 2
            if level and r == flags.num_res_blocks:
                conv.resample(
                    f"output_blocks.{block}.{position}",
                    f"up_blocks.{i}.upsamplers.0",
                    resnet=flags.resblock_updown,
                )
            block += 1
    conv.move("out.0", "conv_norm_out")
    conv.move("out.2", "conv_out")
    if conv.source:
        raise ValueError(
            f"ADM state dict has {len(conv.source)} keys the flags do not account for, e.g. "
            f"{sorted(conv.source)[:5]}"
        )
    return conv.target


def build_adm_unet(flags: ADMFlags) -> Any:
    """An (uninitialized-weights) diffusers UNet2DModel with the ADM architecture of `flags`."""
    from diffusers import UNet2DModel

    return UNet2DModel(**adm_unet_config(flags))  # type: ignore[no-untyped-call]


def build_adm_scheduler(flags: ADMFlags) -> Any:
    """A diffusers DDPMScheduler with ADM's schedule for `flags`."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**adm_scheduler_config(flags))  # type: ignore[no-untyped-call]


def read_adm_state_dict(path: str | Path) -> dict[str, Tensor]:
    """An ADM checkpoint's state dict: a torch `.pt` read with weights_only=True (tensors only,
    never a pickled object), or safetensors. ModelFileError naming the file otherwise."""
    import torch

    from certseg.models.registry import read_tensor_file

    state = read_tensor_file(path, "ADM checkpoint")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"ADM checkpoint {path} does not hold a state dict of tensors")
    return state


def load_adm_checkpoint(path: str | Path, flags: ADMFlags = ADM_256_UNCOND) -> tuple[Any, Any]:
    """(UNet2DModel in eval mode, DDPMScheduler) from a guided-diffusion checkpoint file.

    flags: the architecture/diffusion flags the checkpoint was trained with (default: the
    256×256 unconditional model). Raises ValueError when the checkpoint and flags disagree.
    """
    converted = convert_adm_state_dict(read_adm_state_dict(path), flags)  # the file first:
    unet = build_adm_unet(flags)  # a refused file costs no UNet allocation
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(
        key for key in set(expected) & set(converted) if expected[key].shape != converted[key].shape
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: converted ADM weights do not fit the diffusers UNet: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    unet.load_state_dict(converted, strict=True)
    return unet.eval(), build_adm_scheduler(flags)


def adm_flags_from_args(args: Sequence[str]) -> ADMFlags:
    """ADMFlags from guided-diffusion command-line flags, e.g. the README's MODEL_FLAGS split on
    whitespace: ["--attention_resolutions", "32,16,8", "--image_size", "256", ...]."""
    if len(args) % 2:
        raise ValueError("ADM flags must come as --name value pairs")
    raw: dict[str, str] = {}
    for name, value in zip(args[::2], args[1::2], strict=True):
        if not name.startswith("--"):
            raise ValueError(f"ADM flag names start with '--', got {name!r}")
        raw[name[2:]] = value
    known = set(ADMFlags.__dataclass_fields__)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ValueError(f"unknown ADM flag --{name}")
        if name in ("attention_resolutions", "channel_mult"):
            parts = [p for p in value.split(",") if p]
            values[name] = (
                tuple((int if name == "attention_resolutions" else float)(p) for p in parts) or None
            )
        elif value in ("True", "False", "true", "false"):
            values[name] = value.lower() == "true"
        elif name in ("dropout",):
            values[name] = float(value)
        elif name == "noise_schedule":
            values[name] = value
        else:
            values[name] = int(value)
    return ADMFlags(**values)
