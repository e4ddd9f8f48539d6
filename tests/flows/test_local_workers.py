"""Concurrent local shards (sampling.workers) through the real certify-dataset flow: as many
shards in flight as asked, the same store and results as one shard at a time, and the resolved
threads in the run's MLflow params."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from certseg.run.resources import available_cores
from certseg.storage import SampleStore
from certseg.tracking import read_run
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config


@pytest.mark.usefixtures("prefect_harness")
def test_concurrent_local_shards_match_one_at_a_time(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import certseg.run.sample as run_sample
    from certseg.flows.certify_dataset import certify_dataset

    root = tmp_path_factory.mktemp("workers")
    models = make_models_dir(tmp_path_factory.getbasetemp() / "standins")
    uri = f"sqlite:///{root / 'mlruns.db'}"

    # Count the shards sampling at the same moment (the real sample_shard underneath).
    lock, active, peak = threading.Lock(), [0], [0]
    real = run_sample.sample_shard

    def watched(*args: Any, **kwargs: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            threading.Event().wait(0.3)  # hold the slot long enough for a sibling to start
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr("certseg.tasks.certify.sample_shard", watched)
    outcomes = {}
    before = torch.get_num_threads()
    try:
        for name, shards, workers in (("serial", 1, 1), ("parallel", 2, 2)):
            data = tiny_config_dict(models, root / f"{name}.zarr", tracking_uri=uri, shards=shards)
            data["sampling"] = {"workers": workers, "threads": None}
            data["health"] = {"num_images": 0}
            peak[0] = 0
            outcomes[name] = certify_dataset(str(write_config(root / f"{name}.yaml", data)))
            outcomes[name + "_peak"] = peak[0]
    finally:
        torch.set_num_threads(before)
    assert outcomes["serial_peak"] == 1 and outcomes["parallel_peak"] == 2
    serial, parallel = (SampleStore.open(str(root / f"{n}.zarr")) for n in ("serial", "parallel"))
    for sigma in (0.25, 0.5):
        for variant in ("clean", "matched", "denoised"):
            for phase in ("selection", "estimation"):
                for image in range(4):
                    assert np.array_equal(
                        serial.read_samples(sigma, variant, phase, image),
                        parallel.read_samples(sigma, variant, phase, image),
                    )

    def strip(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "samples_per_second"}

    assert [strip(r) for r in outcomes["serial"]["rows"]] == [
        strip(r) for r in outcomes["parallel"]["rows"]
    ]
    params = read_run(outcomes["parallel"]["run_id"], tracking_uri=uri).params
    cores = available_cores()
    assert params["sampling.workers"] == "2"
    assert params["resolved.sampling.workers"] == "2"
    assert params["resolved.sampling.threads"] == str(max(1, cores // 2))
