"""Fixed-n vs sequential certification on the embedded benchmark and a held-out synthetic set:
certified accuracy, mIoU, abstain and forward passes per image (the table in docs/sequential.md).

Every variant of scripts/eval_embedded.py at σ = 0.25 and 0.5. Per image: n0 selection samples pick
the labels; n_max estimation samples are drawn once, with the keyed noise of certseg.noise, and
their agreement counts are kept at every candidate look (the looks are prefixes, so one draw
serves every schedule and the fixed-n baseline — the same noise for all). Then every schedule is
evaluated offline from the counts with certseg.stats.sequential.run_sequential. Forward passes
per image = n0 + the estimation samples used (one pass = noise → [denoiser →] segmenter).

    python scripts/eval_sequential.py --images 12 --threads 1 \
        --cache /tmp/eval_sequential.npz --plot docs/sequential.png

With --cache, the counts are written there, and read back instead of sampling when it exists.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIANTS = (  # (label, segmenter folder, through the denoiser?)
    ("clean segmenter on noisy input", "clean", False),
    ("noise-trained σ=0.25", "noise-0.25", False),
    ("noise-trained σ=0.50", "noise-0.50", False),
    ("denoiser → clean segmenter", "clean", True),
    ("denoiser → fine-tuned segmenter", "finetuned-denoised", True),
)
SIGMAS = (0.25, 0.5)
SETS = (("embedded", 0), ("held-out", 1))  # (name, SyntheticDataset seed); test split


@dataclass(frozen=True)
class Candidate:
    """One certification procedure evaluated from the cached counts."""

    name: str
    sample_counts: tuple[int, ...]
    weights: tuple[float, ...]
    fraction_tolerance: float


def candidates(n_max: int) -> list[Candidate]:
    """The fixed-n baselines and the sequential schedules compared; the first is the baseline.

    n_max = 100: the demo's budget, looks inside it. n_max = 400: a 4× larger budget, where the
    looks at 100 and 200 can stop the images that more samples do not help.
    """
    if n_max == 400:
        big = [
            Candidate("fixed n=400", (400,), (1.0,), 0.0),
            Candidate("fixed n=100", (100,), (1.0,), 0.0),
            Candidate("fixed n=200", (200,), (1.0,), 0.0),
        ]
        for looks, weights in (
            ((100, 200, 400), (1.0, 1.0, 1.0)),
            ((100, 200, 400), (1.0, 1.0, 2.0)),
            ((100, 200, 300, 400), (1.0, 1.0, 1.0, 1.0)),
        ):
            for tol in (0.0, 0.005, 0.01, 0.02):
                w = "/".join(f"{x:g}" for x in weights)
                big.append(Candidate(f"seq {looks} α-split {w} tol {tol:g}", looks, weights, tol))
        return big
    if n_max != 100:
        raise ValueError(f"--n-max must be 100 or 400 (the candidate schedules), got {n_max}")
    out = [
        Candidate("fixed n=100", (100,), (1.0,), 0.0),
        Candidate("fixed n=60", (60,), (1.0,), 0.0),
    ]
    for looks, weights in (
        ((25, 50, 100), (1.0, 1.0, 1.0)),
        ((50, 100), (1.0, 1.0)),
        ((60, 100), (1.0, 1.0)),
        ((60, 100), (1.0, 3.0)),
        ((60, 80, 100), (1.0, 1.0, 2.0)),
    ):
        for tol in (0.0, 0.01, 0.05):
            if tol and len(looks) < 3:
                continue  # the fraction rule needs a previous look before a non-final one
            w = "/".join(f"{x:g}" for x in weights)
            out.append(Candidate(f"seq {looks} α-split {w} tol {tol:g}", looks, weights, tol))
    return out


def sample_counts(args: argparse.Namespace, looks: list[int]) -> dict[str, np.ndarray]:
    """Draw the samples and return counts[f"{set}/{sigma}/{variant}"] of shape (I, L, H, W) and
    labels[...] (I, H, W), targets[set] (I, H, W)."""
    import torch

    from certseg.data.synthetic import SyntheticDataset
    from certseg.denoise import load_denoiser
    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.sampling import sample_class_maps
    from certseg.stats import count_votes, labels_from_votes
    from certseg.stats.sequential import counts_at_looks

    torch.set_num_threads(args.threads)
    segmenters = {
        folder: build_segmenter(
            SegmenterSpec(family="compact", path=str(args.weights / f"segmenter-{folder}"))
        )
        for _, folder, through in VARIANTS
        if through or not args.denoised_only
    }
    denoiser = load_denoiser(args.weights / "denoiser")
    num_classes = next(iter(segmenters.values())).num_classes
    out: dict[str, np.ndarray] = {}
    variants = [v for v in VARIANTS if args.denoised_only is False or v[2]]
    for set_name, seed in SETS:
        ds = SyntheticDataset(seed=seed, num_images=args.images, split="test")
        examples = [ds.load(i) for i in range(len(ds))]
        out[f"targets/{set_name}"] = np.stack([e.target for e in examples]).astype(np.int64)
        for sigma in SIGMAS:
            per: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
            for i, example in enumerate(examples):
                started = time.perf_counter()
                for through in sorted({d for _, _, d in variants}):
                    group = {f: segmenters[f] for _, f, d in variants if d == through}
                    draw = {
                        phase: sample_class_maps(
                            example.image,
                            image_key=f"{set_name}-{i}",
                            phase=phase,
                            start=0,
                            count=count,
                            sigma=sigma,
                            seed=args.noise_seed,
                            denoiser=denoiser if through else None,
                            segmenters=group,
                            batch_size=args.batch_size,
                        )
                        for phase, count in (("selection", args.n0), ("estimation", args.n_max))
                    }
                    for folder in group:
                        labels = labels_from_votes(
                            count_votes(draw["selection"][folder], num_classes)
                        )
                        counts = counts_at_looks(draw["estimation"][folder], labels, looks)
                        entry = per.setdefault(f"{through}/{folder}", ([], []))
                        entry[0].append(labels)
                        entry[1].append(np.stack(counts))
                print(
                    f"{set_name} σ={sigma} image {i}: {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
            for key, (labels_list, counts_list) in per.items():
                out[f"labels/{set_name}/{sigma}/{key}"] = np.stack(labels_list)
                out[f"counts/{set_name}/{sigma}/{key}"] = np.stack(counts_list).astype(
                    np.uint8 if args.n_max <= 255 else np.uint16
                )
    return out


def evaluate(
    data: dict[str, np.ndarray], looks: list[int], args: argparse.Namespace
) -> list[dict[str, object]]:
    """One row per (set, σ, variant, candidate): certified accuracy, mIoU, abstain, passes."""
    from certseg.data.synthetic import CLASSES
    from certseg.stats import ConfusionAccumulator
    from certseg.stats.sequential import LookSchedule, run_sequential

    rows: list[dict[str, object]] = []
    for set_name, _ in SETS:
        targets = data[f"targets/{set_name}"]
        for sigma in SIGMAS:
            for label, folder, through in VARIANTS:
                if args.denoised_only and not through:
                    continue
                key = f"{set_name}/{sigma}/{through}/{folder}"
                labels_all, counts_all = data[f"labels/{key}"], data[f"counts/{key}"]
                for cand in candidates(args.n_max):
                    schedule = LookSchedule.weighted(cand.sample_counts, args.alpha, cand.weights)
                    acc = ConfusionAccumulator(len(CLASSES))
                    used: list[int] = []
                    for labels, counts, target in zip(labels_all, counts_all, targets, strict=True):
                        prefix = [counts[looks.index(n)] for n in cand.sample_counts]
                        result = run_sequential(
                            labels,
                            prefix,
                            schedule,
                            tau=args.tau,
                            sigma=sigma,
                            fraction_tolerance=cand.fraction_tolerance,
                        )
                        acc.update(result.certificate.labels, target)
                        used.append(result.samples_used)
                    metrics = acc.metrics()
                    rows.append(
                        {
                            "set": set_name,
                            "sigma": sigma,
                            "variant": label,
                            "candidate": cand.name,
                            "accuracy": metrics.accuracy,
                            "miou": metrics.miou,
                            "abstain": metrics.abstain_rate,
                            "passes": args.n0 + float(np.mean(used)),
                        }
                    )
    return rows


def print_tables(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    """Markdown: a summary of every candidate against the first (the fixed-n baseline: mean and
    worst change of certified accuracy over the cells, mean passes), then the per-cell table of
    one candidate against the baseline."""
    names = list(dict.fromkeys(str(r["candidate"]) for r in rows))
    base = {(r["set"], r["sigma"], r["variant"]): r for r in rows if r["candidate"] == names[0]}
    print("\n| candidate | mean Δ cert. acc (points) | worst Δ | mean passes | passes ratio |")
    print("|---|---|---|---|---|")
    for name in names:
        cells = [r for r in rows if r["candidate"] == name]
        delta = [
            100
            * (float(r["accuracy"]) - float(base[(r["set"], r["sigma"], r["variant"])]["accuracy"]))  # type: ignore[arg-type]
            for r in cells
        ]
        passes = float(np.mean([float(r["passes"]) for r in cells]))  # type: ignore[arg-type]
        print(
            f"| {name} | {np.mean(delta):+.2f} | {min(delta):+.2f} | {passes:.1f} | "
            f"{float(np.mean([float(b['passes']) for b in base.values()])) / passes:.2f}× |"  # type: ignore[arg-type]
        )
    chosen = args.show or names[2]
    print(f"\nPer cell: {names[0]} vs `{chosen}`")
    print(
        "\n| set | σ | variant | baseline: cert. acc / mIoU / abstain / passes "
        "| sequential: cert. acc / mIoU / abstain / passes |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        if r["candidate"] != chosen:
            continue
        b = base[(r["set"], r["sigma"], r["variant"])]
        cells = [
            f"{float(x['accuracy']):.4f} / {float(x['miou']):.4f} / {float(x['abstain']):.4f} / "  # type: ignore[arg-type]
            f"{float(x['passes']):.1f}"  # type: ignore[arg-type]
            for x in (b, r)
        ]
        print(f"| {r['set']} | {r['sigma']} | {r['variant']} | {cells[0]} | {cells[1]} |")


def plot(rows: list[dict[str, object]], path: Path) -> None:
    """Certified accuracy vs forward passes per image, one panel per (set, σ), one line per
    variant through its candidates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for ax, (set_name, sigma) in zip(
        axes.ravel(), [(s, g) for s, _ in SETS for g in SIGMAS], strict=True
    ):
        for label, _, _ in VARIANTS:
            if not any(r["variant"] == label for r in rows):
                continue
            cells = [
                r
                for r in rows
                if r["set"] == set_name and r["sigma"] == sigma and r["variant"] == label
            ]
            xs = [float(r["passes"]) for r in cells]  # type: ignore[arg-type]
            ys = [float(r["accuracy"]) for r in cells]  # type: ignore[arg-type]
            (line,) = ax.plot(xs[1:], ys[1:], "o", alpha=0.5, ms=4)
            ax.plot(xs[:1], ys[:1], "*", ms=12, color=line.get_color(), label=label)
        ax.set_title(f"{set_name}, σ = {sigma}")
        ax.set_xlabel("forward passes per image (n0 + samples used)")
        ax.set_ylabel("certified accuracy")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, title="★ fixed n_max, ● sequential / smaller fixed n")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    """Sample (or read the cache), evaluate every candidate, print markdown tables, plot."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", type=Path, default=Path("weights"))
    p.add_argument("--images", type=int, default=12, help="test images per set")
    p.add_argument("--n0", type=int, default=10)
    p.add_argument("--n-max", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--tau", type=float, default=0.75)
    p.add_argument("--noise-seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=55)
    p.add_argument("--denoised-only", action="store_true", help="only the denoiser variants")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--show", default=None, help="candidate of the per-cell table (default: 2nd)")
    args = p.parse_args(argv)

    # counts at every 5th sample (and every candidate look): new schedules evaluate from the cache
    grid = set(range(5, args.n_max + 1, 5))
    looks = sorted(grid | {n for c in candidates(args.n_max) for n in c.sample_counts})
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache) as f:
            data = {k: f[k] for k in f.files}
    else:
        started = time.perf_counter()
        data = sample_counts(args, looks)
        print(f"sampling took {time.perf_counter() - started:.0f} s")
        if args.cache is not None:
            np.savez_compressed(args.cache, **data)  # type: ignore[arg-type]
    rows = evaluate(data, looks, args)
    print(
        f"\n{args.images} test images per set (64×64, m = 4096 pixels), n0 = {args.n0}, "
        f"alpha = {args.alpha}, tau = {args.tau}, Holm, noise seed {args.noise_seed}"
    )
    print_tables(rows, args)
    if args.plot is not None:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
