"""Write every figure of a run into one folder: the rows' charts, and the overlays when handed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from certseg.report.charts import plot_accuracy_vs_radius, plot_class_iou
from certseg.report.overlays import OverlayFigure, plot_overlays


def write_plots(
    rows: Sequence[Mapping[str, Any]],
    folder: Path,
    *,
    overlays: OverlayFigure | None = None,
) -> list[Path]:
    """accuracy_vs_radius.png and class_iou.png from the rows; overlays.png from `overlays`
    (none without it, or when it has no row)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_accuracy_vs_radius(rows, folder / "accuracy_vs_radius.png"),
        plot_class_iou(rows, folder / "class_iou.png"),
    ]
    if overlays is not None and overlays.rows:
        paths.append(plot_overlays(overlays, folder / "overlays.png"))
    return paths
