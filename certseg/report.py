"""Results tables and plots: one row per (σ, variant), Parquet/CSV files, and the figures.

Rows are plain dicts (JSON-ready) so they travel through Prefect, MLflow and Parquet unchanged.
Accuracies are fractions of valid (non-ignored) pixels: certified accuracy counts an abstained
pixel as wrong; the abstain rate is never a health signal (the health check's base accuracy is).
matplotlib (Agg) and pyarrow are imported inside the functions that need them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from certseg.aggregate import AggregateResult
    from certseg.config import RunConfig
    from certseg.outcomes import HealthResult
    from certseg.storage import SampleStore

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sigma", "σ"),
    ("variant", "variant"),
    ("health_accuracy", "base acc"),
    ("certified_accuracy", "certified acc"),
    ("certified_miou", "certified mIoU"),
    ("abstain_rate", "abstain"),
    ("certified_wrong", "certified wrong"),
    ("smoothed_accuracy", "smoothed acc"),
    ("clean_accuracy", "clean acc"),
)
"""(row key, header) of the printed results table."""


def radius_for(sigma: float, tau: float) -> float:
    """R = σ·Φ⁻¹(τ), the radius every certified pixel gets ([0, 1] image units)."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(tau))


def build_rows(
    config: RunConfig,
    result: AggregateResult,
    *,
    class_names: Sequence[str],
    health: Sequence[HealthResult] = (),
    samples_per_second: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per (σ, variant), in config order, with certified/smoothed/clean metrics.

    samples_per_second: sigma_key → model evaluations per second measured while sampling
    (absent on a resumed run that sampled nothing: NaN).
    """
    from certseg.stats import ConfusionAccumulator
    from certseg.storage import sigma_key

    health_by = {(h.sigma, h.variant): h for h in health}
    rates = dict(samples_per_second or {})
    params = result.params
    rows = []
    for sigma in config.sigmas:
        for variant in config.variants:
            summary = result.get(sigma, variant.name)
            certified = ConfusionAccumulator.from_dict(summary.certified).metrics()
            smoothed = ConfusionAccumulator.from_dict(summary.smoothed).metrics()
            clean = ConfusionAccumulator.from_dict(summary.clean).metrics()
            check = health_by.get((sigma, variant.name))
            row: dict[str, Any] = {
                "sigma": float(sigma),
                "variant": variant.name,
                "label": variant.label,
                "needs_training": bool(variant.needs_training),
                "segmenter": variant.segmenter_for(sigma),
                "denoiser": variant.denoiser or "none",
                "health_accuracy": check.accuracy if check else math.nan,
                "health_flagged": bool(check.flagged) if check else False,
                "certified_accuracy": certified.accuracy,
                "certified_miou": certified.miou,
                "abstain_rate": certified.abstain_rate,
                "certified_wrong": certified.wrong_rate,
                "smoothed_accuracy": smoothed.accuracy,
                "smoothed_miou": smoothed.miou,
                "clean_accuracy": clean.accuracy,
                "clean_miou": clean.miou,
                "radius": radius_for(sigma, params.tau),
                "min_count": summary.min_count,
                "first_count": summary.first_count,
                "num_images": summary.num_images,
                "num_valid": certified.num_valid,
                "n0": config.n0,
                "n": params.n,
                "alpha": params.alpha,
                "tau": params.tau,
                "correction": params.correction,
                "samples_per_second": float(rates.get(sigma_key(sigma), math.nan)),
            }
            for name, value in zip(class_names, certified.iou, strict=True):
                row[f"iou_{name}"] = float(value)
            hist = np.asarray(summary.radius_hist, dtype=np.int64)
            row["radius_hist"] = hist.tolist()
            rows.append(row)
    return rows


def write_results(rows: Sequence[Mapping[str, Any]], folder: Path) -> tuple[Path, Path]:
    """Write rows to folder/results.parquet and folder/results.csv (radius_hist as JSON text
    in the CSV); returns both paths."""
    import csv
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / "results.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), parquet)
    csv_path = folder / "results.csv"
    columns = list(rows[0]) if rows else []
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )
    return parquet, csv_path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows back from a results.parquet file."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _cannot_certify(row: Mapping[str, Any]) -> bool:
    """n is below the smallest count the first correction step can certify (level α/m), so no
    pixel can be certified (first_count > n)."""
    first, n = row.get("first_count"), row.get("n")
    return isinstance(first, int) and isinstance(n, int) and first > n


def table_lines(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The printed table as header + rows of strings: flagged health marked "!", variants
    needing training marked "*"."""
    lines = [[header for _, header in TABLE_COLUMNS]]
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            text = _fmt(row.get(key, math.nan))
            if key == "sigma":
                text = f"{row['sigma']:g}"
            if key == "variant" and row.get("needs_training"):
                text += " *"
            if key == "health_accuracy" and row.get("health_flagged"):
                text += " !"
            if key == "certified_accuracy" and _cannot_certify(row):
                text += " ‼"
            cells.append(text)
        lines.append(cells)
    return lines


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results table as Markdown (README), with the legend."""
    lines = table_lines(rows)
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
    out.append("")
    out.append(legend(rows))
    return "\n".join(out)


def legend(rows: Sequence[Mapping[str, Any]]) -> str:
    """One paragraph explaining the table's marks and its parameters."""
    if not rows:
        return ""
    first = rows[0]
    parts = [
        f"n0={first['n0']}, n={first['n']}, α={first['alpha']:g}, τ={first['tau']:g}, "
        f"{first['correction']}; certified radius R=σΦ⁻¹(τ)."
    ]
    if any(r.get("needs_training") for r in rows):
        parts.append("* needs a model trained for the method.")
    parts.append(
        "base acc: one noisy draw through the base classifier on held-out images (health check)."
    )
    if any(r.get("health_flagged") for r in rows):
        parts.append("! base accuracy below the health floor.")
    parts.append(
        "certified wrong: certified with a label other than the truth (fraction of valid "
        "pixels; certified acc + certified wrong + abstain = 1)."
    )
    blocked = [r for r in rows if _cannot_certify(r)]
    if blocked:
        need = max(int(r["first_count"]) for r in blocked)
        parts.append(
            f"‼ n={blocked[0]['n']} is below the minimum count {need} that can certify any "
            f"pixel at α={first['alpha']:g}, τ={first['tau']:g} over these images' pixel counts: "
            f"nothing can be certified; use n ≥ {need} (or a larger α, a smaller τ)."
        )
    labels = {r["variant"]: r.get("label", "") for r in rows}
    parts.append("; ".join(f"{k}: {v}" for k, v in labels.items() if v) + ".")
    return " ".join(parts)


# --- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_radius(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Certified accuracy vs radius per (σ, variant): fraction of valid pixels certified correct
    with a per-pixel radius ≥ r (Cohen's bound, Bonferroni over pixels)."""
    from certseg.aggregate import radius_edges

    plt = _pyplot()
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
    plt = _pyplot()
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


def certified_labels(
    store: SampleStore,
    sigma: float,
    variant: str,
    image: int,
    *,
    alpha: float,
    tau: float,
    correction: str,
    n: int | None = None,
) -> np.ndarray:
    """(H, W) certified labels of one stored image (ABSTAIN where the certificate abstains)."""
    from certseg.aggregate import count_image
    from certseg.stats import certify_pixels

    n = n or store.n
    if store.counts_n(sigma, variant, image) == n:
        stored = store.read_counts(sigma, variant, image)
        labels, k = stored["labels_selected"], stored["k"]
    else:
        counts = count_image(store, sigma, variant, image, n)
        labels, k = counts.labels_selected, counts.k
    result = certify_pixels(
        labels,
        k,
        n,
        alpha=alpha,
        tau=tau,
        sigma=sigma,
        correction=correction,  # type: ignore[arg-type]
    )
    out: np.ndarray = result.labels
    return out


def plot_overlays(
    store: SampleStore,
    path: Path,
    *,
    alpha: float,
    tau: float,
    correction: str,
    images: Sequence[int] = (0, 1),
    n: int | None = None,
) -> Path:
    """Example overlays: per image, the target and each (σ, variant)'s certified labels, with
    abstained pixels in white and ignored pixels in grey."""
    from certseg.data.base import default_palette

    plt = _pyplot()
    palette = np.asarray(default_palette(store.num_classes), dtype=np.uint8)
    images = [i for i in images if 0 <= i < store.num_images]
    columns = [(None, None)] + [(s, v) for s in store.sigmas for v in store.variants]
    fig, axes = plt.subplots(
        len(images), len(columns), figsize=(1.6 * len(columns), 1.8 * len(images)), squeeze=False
    )

    def colour(labels: np.ndarray, target: np.ndarray) -> np.ndarray:
        rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
        inside = (labels >= 0) & (labels < store.num_classes)
        rgb[inside] = palette[labels[inside]]
        rgb[labels < 0] = 255
        rgb[target == store.ignore_index] = 128
        return rgb

    for r, image in enumerate(images):
        target = store.read_target(image)
        for c, (sigma, variant) in enumerate(columns):
            ax = axes[r][c]
            if sigma is None or variant is None:
                shown = np.where(target == store.ignore_index, -2, target)
                ax.imshow(colour(shown, target))
                ax.set_title(store.image_ids[image][:14], fontsize=6)
            else:
                labels = certified_labels(
                    store,
                    sigma,
                    variant,
                    image,
                    alpha=alpha,
                    tau=tau,
                    correction=correction,
                    n=n,
                )
                ax.imshow(colour(labels, target))
                ax.set_title(f"{variant}\nσ={sigma:g}", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(
    rows: Sequence[Mapping[str, Any]],
    folder: Path,
    *,
    store: SampleStore | None = None,
    alpha: float | None = None,
    tau: float | None = None,
    correction: str | None = None,
    n: int | None = None,
) -> list[Path]:
    """All figures into folder: accuracy_vs_radius.png, class_iou.png, overlays.png (needs
    the store)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_accuracy_vs_radius(rows, folder / "accuracy_vs_radius.png"),
        plot_class_iou(rows, folder / "class_iou.png"),
    ]
    if store is not None and alpha is not None and tau is not None and correction is not None:
        paths.append(
            plot_overlays(
                store, folder / "overlays.png", alpha=alpha, tau=tau, correction=correction, n=n
            )
        )
    return paths
