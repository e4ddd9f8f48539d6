"""Charts of the results rows: certified accuracy vs radius, and per-class certified IoU.

matplotlib (Agg) is imported when a chart is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from certseg.report.canvas import pyplot


def plot_accuracy_vs_radius(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Certified accuracy vs radius per (σ, variant): fraction of valid pixels certified correct
    with a per-pixel radius ≥ r (Cohen's bound, Bonferroni over pixels)."""
    from certseg.aggregate import radius_edges

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        hist = np.asarray(row["radius_hist"], dtype=np.float64)
        if not row["num_valid"]:
            continue
        edges = radius_edges(row["sigma"])
        at_least = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]]) / row["num_valid"]
        ax.step(edges, at_least, where="post", label=f"{row['variant']} σ={row['sigma']:g}")
    ax.set_xlabel("L2 radius r ([0, 1] image units)")
    ax.set_ylabel("certified accuracy at radius ≥ r")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_class_iou(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Per-class certified IoU, one group of bars per class, one bar per (σ, variant)."""
    plt = pyplot()
    classes = [key[len("iou_") :] for key in rows[0] if key.startswith("iou_")] if rows else []
    fig, ax = plt.subplots(figsize=(max(6, len(classes) * 1.2), 4.5))
    width = 0.8 / max(1, len(rows))
    positions = np.arange(len(classes))
    for i, row in enumerate(rows):
        values = [row[f"iou_{c}"] for c in classes]
        values = [0.0 if math.isnan(v) else v for v in values]
        ax.bar(positions + i * width, values, width, label=f"{row['variant']} σ={row['sigma']:g}")
    ax.set_xticks(positions + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("certified IoU")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
