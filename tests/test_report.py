"""Results rows, files and plots from an aggregated toy store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pipeline_fixtures import fill_toy_store

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.config import RunConfig, config_from_dict
from certseg.outcomes import HealthResult
from certseg.report import (
    build_rows,
    markdown_table,
    radius_for,
    read_results,
    write_plots,
    write_results,
)
from certseg.stats import ConfusionAccumulator


def toy_config(store: str) -> RunConfig:
    """A config whose variants and σ match the toy store."""
    return config_from_dict(
        {
            "dataset": {"kind": "synthetic", "split": "test"},
            "segmenters": {"s": {"family": "compact", "path": "x"}},
            "variants": [
                {"name": "v1", "segmenter": "s", "label": "first"},
                {"name": "v2", "segmenter": "s", "label": "second", "needs_training": True},
            ],
            "sigmas": [0.25, 0.5],
            "n0": 4,
            "n": 20,
            "alpha": 0.05,
            "tau": 0.6,
            "store": {"url": store},
            "health": {"num_images": 0},
        }
    )


def test_rows_files_and_plots(tmp_path: Path) -> None:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    config = toy_config(store.url)
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    health = [
        HealthResult(0.5, "v2", 0.2, 2, 10, 1, 0.5),
        HealthResult(0.5, "v1", 0.9, 9, 10, 1, 0.5),
    ]
    rows = build_rows(
        config,
        result,
        class_names=list("abcde"),
        health=health,
        samples_per_second={"sigma_0.25": 12.5},
    )
    assert [(r["sigma"], r["variant"]) for r in rows] == [
        (0.25, "v1"),
        (0.25, "v2"),
        (0.5, "v1"),
        (0.5, "v2"),
    ]
    row = rows[3]
    metrics = ConfusionAccumulator.from_dict(result.get(0.5, "v2").certified).metrics()
    assert row["certified_accuracy"] == metrics.accuracy
    assert row["abstain_rate"] == metrics.abstain_rate
    assert row["health_accuracy"] == 0.2 and row["health_flagged"]
    assert not rows[2]["health_flagged"]
    assert math.isnan(rows[0]["health_accuracy"])
    assert rows[0]["samples_per_second"] == 12.5 and math.isnan(rows[2]["samples_per_second"])
    assert row["radius"] == pytest.approx(0.5 * 0.2533471031357997)
    assert radius_for(0.25, 0.75) == pytest.approx(0.1686, abs=1e-4)  # METHOD.md §5
    parquet, csv_path = write_results(rows, tmp_path / "out")
    back = read_results(parquet)
    assert [r["certified_accuracy"] for r in back] == [r["certified_accuracy"] for r in rows]
    assert back[1]["radius_hist"] == rows[1]["radius_hist"]
    assert csv_path.read_text().splitlines()[0].startswith("sigma,variant,label")
    table = markdown_table(rows)
    assert "v2 *" in table and "0.200 !" in table and "n0=4, n=20" in table
    paths = write_plots(
        rows, tmp_path / "plots", store=store, alpha=0.05, tau=0.6, correction="holm"
    )
    assert [p.name for p in paths] == ["accuracy_vs_radius.png", "class_iou.png", "overlays.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
