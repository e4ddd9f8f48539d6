"""The compact segmenter shipped with the embedded benchmark: a small U-shaped encoder–decoder.

Input (B, 3, H, W) *normalized* images ((x − mean) / std, x in [0, 1] units; the adapter registry
normalizes), output logits (B, C, H, W) at the input size; H and W must be multiples of 8.
Stored as `folder/config.json` ({"family": "compact", "num_classes", "mean", "std", "arch": {...}})
plus `folder/model.safetensors`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

FAMILY = "compact"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class CompactArch:
    """Architecture of the compact segmenter: channel widths of the 4 encoder stages (full,
    1/2, 1/4, 1/8 resolution); the decoder mirrors them with skip connections."""

    widths: tuple[int, int, int, int] = (24, 48, 64, 96)

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must be 4 positive ints, got {self.widths!r}")


@dataclass(frozen=True)
class CompactConfig:
    """Everything needed to rebuild a compact segmenter: classes, normalization, architecture.

    mean / std: per-channel normalization applied to [0, 1] images before the network.
    """

    num_classes: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    arch: CompactArch = CompactArch()

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must have 3 entries each")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std entries must be > 0, got {self.std!r}")

    def to_json(self) -> str:
        """The config.json text (family tag included)."""
        payload: dict[str, Any] = {"family": FAMILY, **asdict(self)}
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, payload: dict[str, Any], source: str = "config") -> CompactConfig:
        """Parse a config.json payload; ValueError naming `source` on a wrong family or field."""
        if payload.get("family") != FAMILY:
            raise ValueError(f"{source}: family must be {FAMILY!r}, got {payload.get('family')!r}")
        try:
            arch = CompactArch(widths=tuple(int(w) for w in payload["arch"]["widths"]))  # type: ignore[arg-type]
            return cls(
                num_classes=int(payload["num_classes"]),
                mean=tuple(float(v) for v in payload["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in payload["std"]),  # type: ignore[arg-type]
                arch=arch,
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"{source}: missing or malformed field: {error}") from error


def build_compact_segmenter(config: CompactConfig) -> nn.Module:
    """A freshly initialized compact segmenter (torch imported here, lazily)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class CompactSegmenter(nn.Module):
        """U-shaped encoder (4 stages, stride-2 downsampling) and decoder with skips."""

        def __init__(self, cfg: CompactConfig) -> None:
            super().__init__()
            w1, w2, w3, w4 = cfg.arch.widths
            self.num_classes = cfg.num_classes
            self.enc1 = nn.Sequential(conv_bn(3, w1), conv_bn(w1, w1))
            self.enc2 = nn.Sequential(conv_bn(w1, w2, 2), conv_bn(w2, w2))
            self.enc3 = nn.Sequential(conv_bn(w2, w3, 2), conv_bn(w3, w3))
            self.enc4 = nn.Sequential(conv_bn(w3, w4, 2), conv_bn(w4, w4), conv_bn(w4, w4))
            self.dec3 = conv_bn(w4 + w3, w3)
            self.dec2 = conv_bn(w3 + w2, w2)
            self.dec1 = conv_bn(w2 + w1, w1)
            self.head = nn.Conv2d(w1, cfg.num_classes, 1)

        @staticmethod
        def _up(x: Tensor, skip: Tensor) -> Tensor:
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            return torch.cat([up, skip], dim=1)

        def forward(self, x: Tensor) -> Tensor:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"input must be (B, 3, H, W), got {tuple(x.shape)}")
            if x.shape[-1] % 8 or x.shape[-2] % 8:
                raise ValueError(f"H and W must be multiples of 8, got {tuple(x.shape[-2:])}")
            e1 = self.enc1(x)
            e2 = self.enc2(e1)
            e3 = self.enc3(e2)
            e4 = self.enc4(e3)
            d3 = self.dec3(self._up(e4, e3))
            d2 = self.dec2(self._up(d3, e2))
            d1 = self.dec1(self._up(d2, e1))
            logits: Tensor = self.head(d1)
            return logits

    return CompactSegmenter(config)


def read_compact_config(folder: str | Path) -> CompactConfig:
    """Parse `folder/config.json`; ValueError naming the file when absent or malformed."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"compact segmenter config not found: {path}")
    return CompactConfig.from_dict(json.loads(path.read_text()), source=str(path))


def save_compact_segmenter(model: nn.Module, config: CompactConfig, folder: str | Path) -> None:
    """Write `folder/config.json` and `folder/model.safetensors` (fp32 state dict)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(config.to_json())


def load_compact_segmenter(folder: str | Path) -> nn.Module:
    """Rebuild the segmenter from `folder/config.json` + `folder/model.safetensors`, in eval mode.

    The module takes normalized input (B, 3, H, W) and returns logits (B, C, H, W).
    """
    from safetensors.torch import load_file

    config = read_compact_config(folder)
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"compact segmenter weights not found: {weights}")
    model = build_compact_segmenter(config)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{weights}: missing keys {missing}, unexpected keys {unexpected}")
    return model.eval()
