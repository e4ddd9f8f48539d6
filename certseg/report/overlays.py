"""The overlay figure: per image the photo, the truth and each variant's certified map.

Drawn in the dataset's colours, with a legend of class names. The figure draws what it is handed
(`OverlayFigure`: certified maps aggregation made, targets, photos, the dataset's classes); it
computes nothing. Pixels where the certificate abstains and pixels the evaluation ignores get two
reserved colours that no class of the dataset uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from certseg.data.base import ClassInfo
from certseg.report.canvas import pyplot
from certseg.stats.constants import ABSTAIN

ABSTAIN_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (0, 0, 0), (255, 0, 255))
IGNORE_COLOURS: tuple[tuple[int, int, int], ...] = ((128, 128, 128), (96, 96, 96), (0, 255, 255))
"""Candidates, in order, for the abstain and the not-evaluated colour: the first one no class
uses (white and grey unless the dataset's palette has them)."""


@dataclass(frozen=True, eq=False)
class OverlayRow:
    """One image of the figure.

    photo: (3, H, W) float in [0, 1] units (a dataset `Example.image`), or None when the dataset
    could not be read (the panel says so). target: (H, W) integer class indices, the figure's
    ignore_index where not evaluated. certified: one (H, W) integer map per column of the figure,
    class indices or ABSTAIN (-1).
    """

    image_id: str
    photo: np.ndarray | None
    target: np.ndarray
    certified: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class OverlayFigure:
    """What the overlay figure shows: classes (name and RGB colour, by class index), the
    ignore_index of the targets, the (σ, variant) of each certified column, and the rows."""

    classes: tuple[ClassInfo, ...]
    ignore_index: int
    columns: tuple[tuple[float, str], ...]
    rows: tuple[OverlayRow, ...]


@dataclass(frozen=True)
class OverlayColours:
    """(C, 3) uint8 class palette and the reserved abstain and not-evaluated RGB colours."""

    palette: np.ndarray
    abstain: tuple[int, int, int]
    ignore: tuple[int, int, int]


def overlay_colours(classes: Sequence[ClassInfo]) -> OverlayColours:
    """The classes' colours and the first abstain / not-evaluated candidates no class uses."""
    used = {tuple(int(v) for v in c.color) for c in classes}
    abstain = next((c for c in ABSTAIN_COLOURS if c not in used), ABSTAIN_COLOURS[0])
    ignore = next((c for c in IGNORE_COLOURS if c not in used and c != abstain), IGNORE_COLOURS[0])
    palette = np.array([c.color for c in classes], dtype=np.uint8).reshape(len(classes), 3)
    return OverlayColours(palette, abstain, ignore)


def colour_map(
    labels: np.ndarray, target: np.ndarray, colours: OverlayColours, ignore_index: int
) -> np.ndarray:
    """(H, W, 3) uint8: each label's class colour, the abstain colour where labels == ABSTAIN,
    the not-evaluated colour where the target is ignore_index (over anything else)."""
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    inside = (labels >= 0) & (labels < len(colours.palette))
    rgb[inside] = colours.palette[labels[inside]]
    rgb[labels == ABSTAIN] = colours.abstain
    rgb[target == ignore_index] = colours.ignore
    return rgb


def photo_rgb(photo: np.ndarray) -> np.ndarray:
    """(3, H, W) [0, 1] float image → (H, W, 3) uint8 RGB (rounded, clipped to [0, 255])."""
    scaled = np.clip(np.asarray(photo, dtype=np.float64), 0.0, 1.0) * 255.0
    return np.round(scaled).astype(np.uint8).transpose(1, 2, 0)


def _short(image_id: str, limit: int = 24) -> str:
    """The id, or its last characters after "…" (ids often differ only at the end)."""
    return image_id if len(image_id) <= limit else "…" + image_id[-(limit - 1) :]


def _fraction(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """0-255 RGB → matplotlib's [0, 1] RGB."""
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def plot_overlays(figure: OverlayFigure, path: Path) -> Path:
    """Draw `figure` to path: one row per image (photo, ground truth, one certified map per
    column), a legend of the class names plus "abstain" and "not evaluated" below."""
    from matplotlib.patches import Patch

    plt = pyplot()
    colours = overlay_colours(figure.classes)
    headers = ["photo", "ground truth"] + [f"{v}\nσ={s:g}" for s, v in figure.columns]
    width = len(headers)
    height = max(1, len(figure.rows))
    swatches = [(c.color, c.name) for c in figure.classes]
    swatches += [(colours.abstain, "abstain"), (colours.ignore, "not evaluated")]
    handles = [
        Patch(facecolor=_fraction(rgb), edgecolor="black", linewidth=0.3, label=name)
        for rgb, name in swatches
    ]
    ncol = min(len(handles), 2 * width)
    legend_rows = -(-len(handles) // ncol)
    legend_inches = 0.22 * legend_rows + 0.15
    fig, axes = plt.subplots(
        height,
        width,
        figsize=(1.6 * width, 2.0 * height + legend_inches),
        squeeze=False,
    )
    for r, row in enumerate(figure.rows):
        if len(row.certified) != len(figure.columns):
            raise ValueError(
                f"overlay row {row.image_id!r} has {len(row.certified)} certified maps, "
                f"expected one per column ({len(figure.columns)})"
            )
        panels: list[np.ndarray | None] = [
            None if row.photo is None else photo_rgb(row.photo),
            colour_map(row.target, row.target, colours, figure.ignore_index),
            *(colour_map(m, row.target, colours, figure.ignore_index) for m in row.certified),
        ]
        for c, (panel, header) in enumerate(zip(panels, headers, strict=True)):
            ax = axes[r][c]
            if panel is None:
                ax.text(0.5, 0.5, "photo\nnot available", ha="center", va="center", fontsize=6)
            else:
                ax.imshow(panel, interpolation="nearest")
            title = f"{_short(row.image_id)}\n{header}" if c == 0 else header
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])  # no ticks, but the frame stays: an all-abstain map is a
            ax.set_yticks([])  # framed white panel, not a gap
            for spine in ax.spines.values():
                spine.set_linewidth(0.4)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0.0, legend_inches / fig.get_figheight(), 1.0, 1.0))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
