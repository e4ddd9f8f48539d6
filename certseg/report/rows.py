"""Results rows of an aggregation: one JSON-ready dict per (σ, variant), in config order.

Rows are plain dicts so they travel through Prefect, MLflow and Parquet unchanged. Accuracies are
fractions of valid (non-ignored) pixels: certified accuracy counts an abstained pixel as wrong;
the abstain rate is never a health signal (the health check's base accuracy is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from certseg.aggregate import AggregateResult
    from certseg.config import RunConfig
    from certseg.outcomes import HealthResult


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
    (absent on a resumed run that sampled nothing: NaN). samples_per_image: the mean forward
    passes per image the variant's certificates used, n0 + estimation samples (n0 + n at fixed
    n; n0 + n_l of each image's stopping look when sequential, docs/sequential.md).
    """
    from certseg.storage import sigma_key

    health_by = {(h.sigma, h.variant): h for h in health}
    rates = dict(samples_per_second or {})
    params = result.params
    rows = []
    for sigma in config.sigmas:
        for variant in config.variants:
            summary = result.get(sigma, variant.name)
            certified = summary.certified.metrics()
            smoothed = summary.smoothed.metrics()
            clean = summary.clean.metrics()
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
                "samples_per_image": config.n0
                + summary.estimation_samples / max(1, summary.num_images),
            }
            for name, value in zip(class_names, certified.iou, strict=True):
                row[f"iou_{name}"] = float(value)
            hist = np.asarray(summary.radius_hist, dtype=np.int64)
            row["radius_hist"] = hist.tolist()
            rows.append(row)
    return rows
