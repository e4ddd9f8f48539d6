"""One `certseg certify`, counted: the config is parsed once, each model loaded once (the
denoiser only when something is sampled through it), each image decoded once per stage that needs
it (prepare, then sampling, then the overlay figure for the images it shows) — fresh and resumed.
Counting wrappers around the real functions. Also: what `certify` hands the overlay figure."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import certseg.config.files as config_files
import certseg.run.models as run_models
from certseg.cli import app
from tests.pipeline_fixtures import make_models_dir, tiny_config_dict, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


CLASSES_TXT = "c0 250,250,250\nc1\nc2 12,34,56\nc3\nc4\nc5 0,0,0\nc6\n"
"""Seven classes, three with colours of their own (one white, one black), the rest defaulted."""


def _folder_dataset(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(CLASSES_TXT)
    rng = np.random.default_rng(0)
    for stem in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        Image.fromarray(rng.integers(0, 7, (20, 24), dtype=np.uint8)).save(
            root / "masks" / f"{stem}.png"
        )
    return root


def test_parse_once_load_once_decode_once_per_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers
    import torch
    import yaml

    import certseg.data.files as files

    models = make_models_dir(tmp_path.parent / "standins")
    data = tiny_config_dict(models, tmp_path / "store.zarr", shards=2)
    data["dataset"] = {"kind": "folder", "root": str(_folder_dataset(tmp_path / "folder"))}
    data["health"] = {"num_images": 0}
    data["report"] = {"overlay_images": 2}
    config = write_config(tmp_path / "run.yaml", data)
    text = config.read_text()

    counts: Counter[str] = Counter()
    safe_load, decode = yaml.safe_load, files.decode_image
    jit_load = torch.jit.load
    unet_load = diffusers.UNet2DModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def counting_yaml(stream: Any) -> Any:
        body = stream.read() if hasattr(stream, "read") else stream
        counts["config parsed"] += body == text
        return safe_load(body)

    def counting_decode(data: bytes, path: Path, *, rel: str) -> Any:
        counts[rel] += 1
        return decode(data, path, rel=rel)

    def counting_jit(*args: Any, **kwargs: Any) -> Any:
        counts["segmenter loads"] += 1
        return jit_load(*args, **kwargs)

    def counting_unet(cls: Any, *args: Any, **kwargs: Any) -> Any:
        counts["denoiser loads"] += 1
        return unet_load(cls, *args, **kwargs)

    monkeypatch.setattr(yaml, "safe_load", counting_yaml)
    monkeypatch.setattr(files, "decode_image", counting_decode)
    monkeypatch.setattr(torch.jit, "load", counting_jit)
    monkeypatch.setattr(diffusers.UNet2DModel, "from_pretrained", classmethod(counting_unet))
    images = ["images/a.png", "images/b.png", "images/c.png"]

    monkeypatch.setattr(run_models, "_CACHE", {})  # as in a new process
    monkeypatch.setattr(config_files, "_PARSED", {})
    fresh = CliRunner().invoke(app, ["certify", str(config), "--quiet", "--no-track"])
    assert fresh.exit_code == 0, fresh.output
    assert counts["config parsed"] == 1
    assert counts["segmenter loads"] == 2  # clean and noisy, each once
    assert counts["denoiser loads"] == 1
    # certify's preflight (its validation pass, and the first image again for the probe), then
    # the flow's prepare and sample, and the two images the overlay figure shows
    assert {rel: counts[rel] for rel in images} == {images[0]: 5, images[1]: 4, images[2]: 3}

    counts.clear()
    monkeypatch.setattr(run_models, "_CACHE", {})
    monkeypatch.setattr(config_files, "_PARSED", {})
    resumed = CliRunner().invoke(app, ["certify", str(config), "--quiet", "--no-track"])
    assert resumed.exit_code == 0, resumed.output
    assert counts["config parsed"] == 1
    assert counts["segmenter loads"] == 2  # the probe, before the store is reopened
    assert counts["denoiser loads"] == 1  # the preflight's check; the flow samples nothing
    # the preflight (validation, probe), prepare, and the overlay figure's two images
    assert {rel: counts[rel] for rel in images} == {images[0]: 4, images[1]: 3, images[2]: 2}


def test_certify_hands_the_overlays_photos_classes_and_the_stored_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`certseg certify` on a folder dataset draws report.overlay_images rows: each the image's
    photo as decoded, its stored truth, and per (σ, variant) the certificate of the store's
    counts; in the classes.txt colours and names; written to plots/overlays.png."""
    import numpy as np
    from PIL import Image

    import certseg.report.figures as figures
    from certseg.data.folder import read_classes_file
    from certseg.report.overlays import OverlayFigure, photo_rgb
    from certseg.stats import certify_pixels
    from certseg.storage import SampleStore

    models = make_models_dir(tmp_path.parent / "standins")
    data = tiny_config_dict(models, tmp_path / "store.zarr", shards=1)
    data["n"] = 24  # the tiny n = 8 cannot certify a pixel of 480 at α = 0.1, τ = 0.6
    root = _folder_dataset(tmp_path / "folder")
    data["dataset"] = {"kind": "folder", "root": str(root)}
    data["health"] = {"num_images": 0}
    data["report"] = {"overlay_images": 2}
    config = write_config(tmp_path / "run.yaml", data)
    handed: list[OverlayFigure] = []
    draw = figures.plot_overlays

    def spy(figure: OverlayFigure, path: Path) -> Path:
        handed.append(figure)
        return draw(figure, path)

    monkeypatch.setattr(figures, "plot_overlays", spy)
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app, ["certify", str(config), "--quiet", "--no-track", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    [figure] = handed
    assert (out / "plots" / "overlays.png").stat().st_size > 2000
    assert figure.classes == read_classes_file(root / "classes.txt")
    assert figure.classes[0].color == (250, 250, 250) and figure.classes[5].color == (0, 0, 0)
    store = SampleStore.open(str(tmp_path / "store.zarr"), read_only=True)
    assert [row.image_id for row in figure.rows] == list(store.image_ids[:2]) == ["a", "b"]
    assert figure.columns == tuple((s, v) for s in (0.25, 0.5) for v in store.variants)
    some_certified = False
    for image, row in enumerate(figure.rows):
        assert row.photo is not None
        decoded = np.asarray(Image.open(root / "images" / f"{row.image_id}.png"))
        np.testing.assert_array_equal(photo_rgb(row.photo), decoded)
        np.testing.assert_array_equal(row.target, store.read_target(image))
        for (sigma, variant), shown in zip(figure.columns, row.certified, strict=True):
            counts = store.read_counts(sigma, variant, image)
            expected = certify_pixels(
                counts["labels_selected"], counts["k"], 24, alpha=0.1, tau=0.6, sigma=sigma
            ).labels
            np.testing.assert_array_equal(shown, expected, err_msg=f"{image} {sigma} {variant}")
            some_certified |= bool((shown >= 0).any())
    assert some_certified
