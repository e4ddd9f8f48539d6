"""MLflow tracking into a temporary sqlite store: params, tags, metrics, artifacts, read back."""

from __future__ import annotations

import hashlib
from pathlib import Path

from certseg.aggregate import CertifyParams, aggregate_store
from certseg.outcomes import HealthResult
from certseg.run.context import run_context
from certseg.run.finalize import finalize_run
from certseg.storage import sigma_key
from certseg.tracking import latest_run_id, metric_key, read_run
from tests.pipeline_fixtures import fill_toy_store
from tests.test_report import toy_config


def test_finalize_logs_params_tags_metrics_artifacts(tmp_path: Path) -> None:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    config = toy_config(store.url)
    weights = tmp_path / "x"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"weights")
    config = config.model_copy(update={"base_dir": str(tmp_path)})
    params = CertifyParams(n=20, alpha=0.05, tau=0.6)
    result = aggregate_store(store.url, params, keep_maps=range(config.report.overlay_images))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    health = [HealthResult(0.25, "v1", 0.1, 1, 10, 1, 0.5)]
    outcome = finalize_run(
        run_context(config, out_dir=tmp_path / "out", tracking_uri=uri),
        result,
        health=health,
        rates={"sigma_0.5": 40.0},
    )
    assert outcome.run_id is not None
    assert latest_run_id(tracking_uri=uri, experiment="certseg") == outcome.run_id
    run = read_run(outcome.run_id, tracking_uri=uri)
    assert run.params["tau"] == "0.6" and run.params["variants.1.name"] == "v2"
    assert run.params["dataset.kind"] == "synthetic"
    assert run.tags["config_id"] == store.config_id  # the samples' identity (the store's)
    assert run.tags["dataset_manifest_sha256"] == "m"
    assert (
        run.tags["model_sha256/segmenter/s/model.safetensors"]
        == hashlib.sha256(b"weights").hexdigest()
    )
    assert run.tags["health_flagged"] == "sigma_0.25/v1"
    for row in outcome.rows:
        for metric in (
            "certified_accuracy",
            "certified_miou",
            "abstain_rate",
            "smoothed_accuracy",
            "clean_accuracy",
            "clean_miou",
        ):
            key = metric_key(metric, row["sigma"], row["variant"])
            assert run.metrics[key] == row[metric], key
    assert run.metrics["health_accuracy/sigma_0.25/v1"] == 0.1
    assert run.metrics["samples_per_second/sigma_0.5/v2"] == 40.0
    assert "samples_per_second/sigma_0.25/v2" not in run.metrics
    assert {
        "results.parquet",
        "results.csv",
        "config.yaml",
        "plots/accuracy_vs_radius.png",
        "plots/class_iou.png",
        "plots/overlays.png",
    } <= set(run.artifacts)
    assert [r["certified_accuracy"] for r in run.rows] == [
        r["certified_accuracy"] for r in outcome.rows
    ]
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the sqlite database


def test_metric_names_use_the_store_sigma_key() -> None:
    """One σ name everywhere: MLflow metrics use the store's sigma_key, so two σ values never
    share a metric (under the former :g format 0.1234567 and 0.1234568 both gave 0.123457)."""
    for sigma in (0.25, 0.5, 1.0, 1 / 3, 0.1234567):
        name = metric_key("certified_accuracy", sigma, "clean")
        assert name == f"certified_accuracy/{sigma_key(sigma)}/clean"
    assert metric_key("m", 0.25, "v") == "m/sigma_0.25/v"  # the demo's σ names are unchanged
    assert metric_key("m", 0.1234567, "v") != metric_key("m", 0.1234568, "v")
