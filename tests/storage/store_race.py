"""Helpers the store-ownership tests run in child processes (spawned: importable by name).

A small template (2 σ × 2 variants, 46 arrays), its targets, and the two child-process jobs: a
creator that races others through a barrier, and a creator that stops mid-creation (to be
killed with SIGKILL).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from certseg.storage import SampleStore, StoreTemplate, sigma_key


def race_template(config_id: str = "e" * 64) -> StoreTemplate:
    """Three images of different sizes, two σ, two variants in two denoiser groups."""
    return StoreTemplate(
        config_id=config_id,
        config_json="{}",
        code_version="test",
        manifest_sha256="m" * 64,
        dataset_name="toy",
        image_ids=("img-a", "img-b", "img-c"),
        image_shapes=((6, 8), (8, 5), (7, 7)),
        num_classes=4,
        class_names=("a", "b", "c", "d"),
        ignore_index=255,
        sigmas=(0.25, 0.5),
        variants=("plain", "den"),
        variant_segmenters={
            "plain": {sigma_key(0.25): "s1", sigma_key(0.5): "s1"},
            "den": {sigma_key(0.25): "s1", sigma_key(0.5): "s2"},
        },
        groups={"none": ("plain",), "ddpm": ("den",)},
        n0=3,
        n=10,
        samples_per_chunk=4,
        health_ids=("h0", "h1"),
    )


def race_targets(template: StoreTemplate) -> list[np.ndarray]:
    """Seeded (H, W) int32 targets, one per image."""
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, template.num_classes, size=shape).astype(np.int32)
        for shape in template.image_shapes
    ]


def digest_folder(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path (folders listed as 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def race_creator(urls: list[str], barrier: Any, results: Any, jitter_s: float = 0.0) -> None:
    """For each url: wait at the barrier with the other racers, then (after a random delay in
    [0, jitter_s) on odd rounds) create the store; put (url, pid, outcome, seconds) on
    `results`; outcome is created | opened | error: ...."""
    template = race_template()
    rng = random.Random(os.getpid())
    for index, url in enumerate(urls):
        barrier.wait(timeout=120)
        if index % 2:
            time.sleep(rng.uniform(0.0, jitter_s))
        start = time.perf_counter()
        try:
            store = SampleStore.create(url, template, race_targets(template))
            outcome = "created" if getattr(store, "created", False) else "opened"
        except Exception as error:  # reported to the test, which fails on it
            outcome = f"error: {type(error).__name__}: {error}"
        results.put((url, os.getpid(), outcome, time.perf_counter() - start))


def stalled_creator(url: str, signal: str) -> None:
    """Create the store but stop after the first target: touch `signal`, then sleep (the test
    kills this process with SIGKILL while it holds the creation lock)."""
    template = race_template()
    targets = race_targets(template)

    def slow() -> Iterator[np.ndarray]:
        yield targets[0]
        Path(signal).write_text(str(os.getpid()))
        time.sleep(300)
        yield from targets[1:]

    SampleStore.create(url, template, slow())
