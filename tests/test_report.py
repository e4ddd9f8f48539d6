"""Results rows, files and plots from an aggregated toy store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import certseg.certificates
from certseg.aggregate import CertifyParams, aggregate_store
from certseg.config import RunConfig, config_from_dict
from certseg.data.base import ClassInfo, Example
from certseg.outcomes import HealthResult
from certseg.report import (
    build_rows,
    markdown_table,
    plot_overlays,
    radius_for,
    read_results,
    write_plots,
    write_results,
)
from certseg.report.overlays import overlay_colours
from certseg.run.overlays import overlay_figure
from certseg.stats import ABSTAIN, certify_pixels
from certseg.storage import SampleStore
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
    kept = aggregate_store(store.url, CertifyParams(n=20, alpha=0.05, tau=0.6), keep_maps=(0, 1))
    paths = write_plots(rows, tmp_path / "plots", overlays=overlay_figure(kept, store, None))
    assert [p.name for p in paths] == ["accuracy_vs_radius.png", "class_iou.png", "overlays.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    bare = write_plots(rows, tmp_path / "bare")  # no overlay data handed: no overlay figure
    assert [p.name for p in bare] == ["accuracy_vs_radius.png", "class_iou.png"]


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
    from matplotlib.figure import Figure

    calls: dict[str, list[tuple[Any, ...]]] = {"imshow": [], "step": [], "bar": [], "legend": []}
    imshow, step, bar, legend = Axes.imshow, Axes.step, Axes.bar, Figure.legend

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

    def spy_legend(self: Figure, *args: Any, **kwargs: Any) -> Any:
        handles = kwargs.get("handles", [])
        labels = [h.get_label() for h in handles]
        calls["legend"].append((labels, [tuple(h.get_facecolor()[:3]) for h in handles]))
        return legend(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "legend", spy_legend)
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


class PhotoDataset:
    """The toy store's images as a dataset of its own: known photos, ids listed in another order
    than the store's (matched by id), the store's class names with a palette of its own that
    takes white and grey, so the abstain and not-evaluated colours must move to the next free
    candidates."""

    name = "toy"
    ignore_index = 255
    classes = (
        ClassInfo("a", (255, 255, 255)),
        ClassInfo("b", (10, 200, 30)),
        ClassInfo("c", (128, 128, 128)),
        ClassInfo("d", (200, 20, 220)),
        ClassInfo("e", (30, 60, 90)),
    )

    def __init__(self, store: Any) -> None:
        self.ids = ["c", "a", "b"]
        shapes = dict(zip(store.image_ids, store.image_shapes.tolist(), strict=True))
        rng = np.random.default_rng(7)
        self.photos = {i: rng.random((3, *shapes[i])).astype(np.float32) for i in self.ids}

    def __len__(self) -> int:
        return len(self.ids)

    def image_ids(self) -> list[str]:
        return list(self.ids)

    def load(self, index: int) -> Example:
        image_id = self.ids[index]
        photo = self.photos[image_id]
        return Example(image_id, photo, np.zeros(photo.shape[1:], dtype=np.int64))

    def manifest(self) -> Any:
        raise NotImplementedError


def certified_by_hand(store: Any, sigma: float, variant: str, image: int) -> np.ndarray:
    """The certificate of the raw stored samples (plain loop + certify_pixels)."""
    labels, k = recount(store, sigma, variant, image)
    return certify_pixels(labels, k, 20, alpha=0.05, tau=0.6, sigma=sigma, correction="holm").labels


@pytest.mark.parametrize("with_dataset", [True, False])
def test_overlays_draw_the_maps_aggregation_made_in_the_datasets_colours(
    tmp_path: Path,
    drawn: dict[str, list[tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
    with_dataset: bool,
) -> None:
    """Per kept image: the photo, the truth, then each (σ, variant)'s certified map, coloured
    with the dataset's palette (the default one without a dataset), abstain and not-evaluated in
    reserved colours no class uses — checked in the arrays drawn and in the decoded PNG. The
    maps are aggregation's (equal to a hand recount's certificate); building and drawing the
    figure certifies nothing and reads no sample or count; the legend names every class."""
    import matplotlib.image

    store = fill_toy_store(str(tmp_path / "s.zarr"))
    params = CertifyParams(n=20, alpha=0.05, tau=0.6)
    result = aggregate_store(store.url, params, keep_maps=(0, 2, 7))  # 7: past the images
    columns = [(s, v) for s in store.sigmas for v in store.variants]
    assert [(m.image, m.sigma, m.variant) for m in result.maps] == [
        (i, s, v) for i in (0, 2) for s, v in columns
    ]
    by_hand = {(i, s, v): certified_by_hand(store, s, v, i) for i in (0, 2) for s, v in columns}
    for kept in result.maps:
        np.testing.assert_array_equal(kept.labels, by_hand[(kept.image, kept.sigma, kept.variant)])
        assert kept.labels.dtype == np.int8  # 5 classes: one byte a pixel travels to the report
    dataset = PhotoDataset(store) if with_dataset else None

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the overlays recomputed a certificate")

    for name in ("read_samples", "read_counts"):
        monkeypatch.setattr(SampleStore, name, refuse)
    monkeypatch.setattr(certseg.certificates, "certify_pixels", refuse)
    figure = overlay_figure(result, store, dataset)  # type: ignore[arg-type]
    path = plot_overlays(figure, tmp_path / "overlays.png")

    if with_dataset:
        palette = np.array([c.color for c in PhotoDataset.classes], dtype=np.uint8)
        abstain, ignore = (0, 0, 0), (96, 96, 96)  # white and grey are classes here
        names = [c.name for c in PhotoDataset.classes]
    else:
        palette, abstain, ignore, names = TOY_PALETTE, WHITE, GREY, list("abcde")
    png = matplotlib.image.imread(path)
    panels = iter(drawn["imshow"])
    white_or_abstain = coloured = 0
    for image in (0, 2):
        target = store.read_target(image)
        ignored = target == 255
        if with_dataset:
            ax, shown = next(panels)
            photo = dataset.photos[store.image_ids[image]]  # type: ignore[union-attr]
            expected = np.round(photo * 255).astype(np.uint8).transpose(1, 2, 0)
            np.testing.assert_array_equal(shown, expected)
            np.testing.assert_array_equal(png_cells(png, ax, target.shape), expected)
        ax, shown = next(panels)
        expected = palette[np.where(ignored, 0, target)]
        expected[ignored] = ignore
        np.testing.assert_array_equal(shown, expected, err_msg=f"truth {image}")
        np.testing.assert_array_equal(png_cells(png, ax, target.shape), expected)
        for sigma, variant in columns:
            ax, shown = next(panels)
            certified = by_hand[(image, sigma, variant)]
            abstained = certified == ABSTAIN
            expected = palette[np.where(abstained, 0, certified)]
            expected[abstained] = abstain
            expected[ignored] = ignore
            white_or_abstain += int((abstained & ~ignored).sum())
            coloured += int((~abstained & ~ignored).sum())
            where = f"{image} {sigma} {variant}"
            np.testing.assert_array_equal(shown, expected, err_msg=where)
            np.testing.assert_array_equal(png_cells(png, ax, target.shape), expected)
    assert next(panels, None) is None
    assert white_or_abstain > 50 and coloured > 50  # both kinds of pixel are on show
    [(labels, colours)] = drawn["legend"]
    assert labels == [*names, "abstain", "not evaluated"]
    swatches = [*palette.tolist(), list(abstain), list(ignore)]
    np.testing.assert_allclose(colours, np.array(swatches) / 255)


def test_overlay_colours_skip_the_classes_colours() -> None:
    taken = [ClassInfo("a", (255, 255, 255)), ClassInfo("b", (0, 0, 0))]
    colours = overlay_colours([*taken, ClassInfo("c", (128, 128, 128))])
    assert (colours.abstain, colours.ignore) == ((255, 0, 255), (96, 96, 96))
    assert overlay_colours(taken[1:]).abstain == (255, 255, 255)


def test_plots_need_only_what_they_are_handed(tmp_path: Path) -> None:
    """The figure holds everything: drawn after the store is gone; no kept map, no figure."""
    import shutil

    store = fill_toy_store(str(tmp_path / "s.zarr"))
    params = CertifyParams(n=20, alpha=0.05, tau=0.6)
    result = aggregate_store(store.url, params, keep_maps=(1,))
    rows = build_rows(toy_config(store.url), result, class_names=list("abcde"))
    figure = overlay_figure(result, store, None)
    assert [r.image_id for r in figure.rows] == ["b"] and figure.rows[0].photo is None
    shutil.rmtree(tmp_path / "s.zarr")
    paths = write_plots(rows, tmp_path / "plots", overlays=figure)
    assert paths[-1].name == "overlays.png" and paths[-1].stat().st_size > 2000
    none_kept = aggregate_store(fill_toy_store(str(tmp_path / "t.zarr")).url, params)
    assert none_kept.maps == ()


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
