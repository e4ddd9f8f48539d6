"""Results rows, files and plots from an aggregated toy store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
from certseg.stats import ABSTAIN, ConfusionAccumulator, certify_pixels
from tests.pipeline_fixtures import fill_toy_store


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
    metrics = result.get(0.5, "v2").certified.metrics()
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


# --- plots checked by content: the data drawn, and the decoded PNG ------------------------------

TOY_PALETTE = np.array(  # default_palette(5), the VOC bit-interleaving scheme, written out
    [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)], dtype=np.uint8
)
WHITE, GREY = (255, 255, 255), (128, 128, 128)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[Any, ...]]]:
    """Records what the plot functions hand matplotlib: imshow arrays, step series, bar heights
    (each with its Axes), then draws them as usual."""
    from matplotlib.axes import Axes

    calls: dict[str, list[tuple[Any, ...]]] = {"imshow": [], "step": [], "bar": []}
    imshow, step, bar = Axes.imshow, Axes.step, Axes.bar

    def spy_imshow(self: Axes, data: Any, *args: Any, **kwargs: Any) -> Any:
        calls["imshow"].append((self, np.array(data)))
        return imshow(self, data, *args, **kwargs)

    def spy_step(self: Axes, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        lines = step(self, x, y, *args, **kwargs)
        calls["step"].append((self, np.array(x), np.array(y), kwargs.get("label"), lines[0]))
        return lines

    def spy_bar(self: Axes, x: Any, height: Any, *args: Any, **kwargs: Any) -> Any:
        bars = bar(self, x, height, *args, **kwargs)
        calls["bar"].append((self, np.array(height, dtype=float), kwargs.get("label"), bars))
        return bars

    monkeypatch.setattr(Axes, "imshow", spy_imshow)
    monkeypatch.setattr(Axes, "step", spy_step)
    monkeypatch.setattr(Axes, "bar", spy_bar)
    return calls


def recount(store: Any, sigma: float, variant: str, image: int) -> tuple[np.ndarray, np.ndarray]:
    """Selected labels ĉ and agreement counts k from the raw stored samples, by a plain loop."""
    c = store.num_classes
    selection = store.read_samples(sigma, variant, "selection", image, 0, store.n0)
    estimation = store.read_samples(sigma, variant, "estimation", image, 0, store.n)
    votes = np.stack([(selection == cls).sum(axis=0) for cls in range(c)])
    labels = votes.argmax(axis=0)  # ties → the lowest class
    return labels, (estimation == labels[None]).sum(axis=0)


def png_cells(png: np.ndarray, ax: Any, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 colours at the centres of the H × W cells of an image drawn in `ax`."""
    box = ax.get_window_extent()  # display pixels, origin bottom left (savefig dpi = figure dpi)
    rows, cols = shape
    out = np.empty((rows, cols, 3), dtype=np.uint8)
    for i in range(rows):
        for j in range(cols):
            x = box.x0 + (j + 0.5) * box.width / cols
            y = box.y1 - (i + 0.5) * box.height / rows
            out[i, j] = np.round(png[int(png.shape[0] - y), int(x), :3] * 255)
    return out


def aggregated(tmp_path: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    store = fill_toy_store(str(tmp_path / "s.zarr"))
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    rows = build_rows(toy_config(store.url), result, class_names=list("abcde"))
    return store, result, rows


def test_overlays_show_the_stored_certificate(
    tmp_path: Path, drawn: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Per image: the target, then each (σ, variant)'s certificate — white exactly where the
    certificate of the stored samples abstains, the class colour where it certifies, grey where
    the target is ignored — in the arrays drawn and in the decoded PNG."""
    import matplotlib.image

    store, _, rows = aggregated(tmp_path)
    paths = write_plots(
        rows, tmp_path / "plots", store=store, alpha=0.05, tau=0.6, correction="holm"
    )
    png = matplotlib.image.imread(paths[2])
    columns = [(None, None)] + [(s, v) for s in store.sigmas for v in store.variants]
    assert len(drawn["imshow"]) == 2 * len(columns)  # images 0 and 1
    white = coloured = 0
    for (ax, shown), (image, (sigma, variant)) in zip(
        drawn["imshow"], [(i, col) for i in (0, 1) for col in columns], strict=True
    ):
        target = store.read_target(image)
        ignored = target == 255
        if sigma is None:
            expected = TOY_PALETTE[np.where(ignored, 0, target)]
        else:
            labels, k = recount(store, sigma, variant, image)
            stored = store.read_counts(sigma, variant, image)  # persisted by aggregation
            np.testing.assert_array_equal(stored["labels_selected"], labels)
            np.testing.assert_array_equal(stored["k"], k)
            certified = certify_pixels(
                labels, k, 20, alpha=0.05, tau=0.6, sigma=sigma, correction="holm"
            ).labels
            abstain = certified == ABSTAIN
            expected = TOY_PALETTE[np.where(abstain, 0, certified)]
            expected[abstain] = WHITE
            white += int((abstain & ~ignored).sum())
            coloured += int((~abstain & ~ignored).sum())
        expected[ignored] = GREY
        np.testing.assert_array_equal(shown, expected, err_msg=f"{image} {sigma} {variant}")
        np.testing.assert_array_equal(png_cells(png, ax, target.shape), expected)
    assert white > 50 and coloured > 50  # both kinds of pixel are on show


def test_accuracy_vs_radius_draws_the_certified_fraction_per_radius(
    tmp_path: Path, drawn: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Each (σ, variant) curve is the fraction of valid pixels certified correct (Cohen, Bonferroni
    over an image's pixels) with radius ≥ r, recomputed here with scipy; the PNG shows each
    curve's colour over a non-blank plot."""
    import matplotlib.image
    from matplotlib.colors import to_rgb
    from scipy.stats import beta, norm

    store, _, rows = aggregated(tmp_path)
    paths = write_plots(rows, tmp_path / "plots")
    assert len(drawn["step"]) == len(rows) == 4
    for (_, x, y, label, _line), row in zip(drawn["step"], rows, strict=True):
        sigma, variant = row["sigma"], row["variant"]
        assert label == f"{variant} σ={sigma:g}"
        edges = sigma * np.linspace(0.0, 5.0, 251)
        np.testing.assert_allclose(x, edges)
        radii, valid = [], 0
        for image in range(store.num_images):
            labels, k = recount(store, sigma, variant, image)
            target = store.read_target(image)
            p_lower = np.where(k > 0, beta.ppf(0.05 / k.size, k, 20 - k + 1), 0.0)
            good = (p_lower > 0.5) & (labels == target) & (target != 255)
            radii.append(np.minimum(sigma * norm.ppf(p_lower[good]), edges[-1]))
            valid += int((target != 255).sum())
        every = np.concatenate(radii)
        expected = np.array([(every >= e).sum() for e in edges[:-1]] + [0]) / valid
        np.testing.assert_allclose(y, expected, atol=1e-12, err_msg=label)
        assert y[0] > 0.2  # a visible curve, not a flat zero
    png = matplotlib.image.imread(paths[0])[..., :3]
    assert (png.min(axis=-1) < 0.9).mean() > 0.01  # not a blank canvas
    for *_, line in drawn["step"]:
        close = np.abs(png - np.array(to_rgb(line.get_color()))).max(axis=-1) < 0.05
        assert close.sum() > 30, line.get_label()


def test_class_iou_draws_the_rows_ious(
    tmp_path: Path, drawn: dict[str, list[tuple[Any, ...]]]
) -> None:
    import matplotlib.image
    from matplotlib.colors import to_rgb

    _, _, rows = aggregated(tmp_path)
    paths = write_plots(rows, tmp_path / "plots")
    png = matplotlib.image.imread(paths[1])[..., :3]
    assert len(drawn["bar"]) == len(rows)
    for (_, heights, label, bars), row in zip(drawn["bar"], rows, strict=True):
        ious = [row[f"iou_{c}"] for c in "abcde"]
        np.testing.assert_array_equal(heights, [0.0 if math.isnan(v) else v for v in ious])
        assert label == f"{row['variant']} σ={row['sigma']:g}"
        assert max(heights) > 0.0
        colour = np.array(to_rgb(bars.patches[0].get_facecolor()))
        assert (np.abs(png - colour).max(axis=-1) < 0.02).sum() > 20, label


def test_certified_wrong_and_the_minimum_count_warning(tmp_path: Path) -> None:
    """certified acc + certified wrong + abstain = 1 per row (counted exactly from the stored
    certificate); an n below the count the first correction step needs is flagged in the table
    and the legend, with that count, and only then."""
    from certseg.stats import min_count_to_certify

    store = fill_toy_store(str(tmp_path / "s.zarr"))
    targets: Any = store.group["targets"]
    shifted = np.asarray(targets[0])
    valid = shifted != store.ignore_index
    shifted[valid] = (shifted[valid] + 1) % store.num_classes  # image 0's truth now disagrees
    targets[0] = shifted
    config = toy_config(store.url)
    result = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6))
    rows = build_rows(config, result, class_names=list("abcde"))
    for row in rows:
        total = row["certified_accuracy"] + row["certified_wrong"] + row["abstain_rate"]
        assert total == pytest.approx(1.0, abs=1e-12)
        wrong = valid = 0
        for image in range(store.num_images):
            labels = certify_pixels(
                *_stored_counts(store, row["sigma"], row["variant"], image),
                20,
                alpha=0.05,
                tau=0.6,
                sigma=row["sigma"],
            ).labels
            target = store.read_target(image)
            mask = target != store.ignore_index
            wrong += int(((labels != ABSTAIN) & (labels != target) & mask).sum())
            valid += int(mask.sum())
        assert row["certified_wrong"] == wrong / valid
    assert all(row["certified_wrong"] > 0 for row in rows)
    assert "certified wrong" in markdown_table(rows)
    assert "‼" not in markdown_table(rows)
    pixels = int(np.prod(store.image_shapes.max(axis=0)))
    small = aggregate_store(store.url, CertifyParams(n=3, alpha=0.05, tau=0.6))
    blocked = build_rows(config, small, class_names=list("abcde"))
    need = min_count_to_certify(3, 0.6, 0.05 / pixels)
    assert need > 3 and all(row["first_count"] >= need for row in blocked)
    table = markdown_table(blocked)
    assert "‼" in table and "nothing can be certified" in table
    assert f"use n ≥ {max(r['first_count'] for r in blocked)}" in table


def _stored_counts(store: Any, sigma: float, variant: str, image: int) -> tuple[Any, Any]:
    counts = store.read_counts(sigma, variant, image)
    return counts["labels_selected"], counts["k"]
