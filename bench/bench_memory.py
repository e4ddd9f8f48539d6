"""Memory benchmark: peak RSS of sampling one Cityscapes-size image with the shipped denoiser.

One 1024×2048 frame (bench/frames.py), n0 selection + n estimation samples at σ = 0.25 through
the denoised variant (the shipped denoiser at 256×256 via resize, then the shipped compact
segmenter at full resolution), at the default settings: sampling.batch_size = 32,
sampling.memory_mib = 2048, the default chunking (8 MiB chunks) and the background writer, bf16
autocast where supported. The loop is `certseg.run.sample.sample_shard`'s, without a dataset or
a flow: `plan_micro_batch`'s measurement (`measure_sample_bytes` + `micro_batch_size`), then per
sample block `sample_class_maps` → `BlockWriter` → `write_block` into a local zarr store.

Printed: the process's peak RSS (ru_maxrss) after loading the models (the baseline), after the
memory probe, and at the end; the forward batch chosen; and what the old default (one forward
batch of sampling.batch_size = 32 samples) would have needed by the same measurement.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_memory`` (``--n0 10 --n 100`` are the
defaults; the peak does not grow with n: blocks are streamed to the store).
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.frames import load_models, mosaic_frame


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32, help="sampling.batch_size")
    parser.add_argument("--memory-mib", type=int, default=2048, help="sampling.memory_mib")
    parser.add_argument("--chunk-mib", type=float, default=8.0, help="sampling.chunk_mib")
    parser.add_argument("--denoiser-resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from certseg.run.sample import write_block
    from certseg.sampling import (
        MEMORY_SLACK,
        bf16_supported,
        measure_sample_bytes,
        micro_batch_size,
        sample_class_maps,
    )
    from certseg.storage import SampleStore, StoreTemplate, sigma_key
    from certseg.storage.writer import BlockWriter

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if bf16_supported("cpu") else None
    frame = mosaic_frame(args.height, args.width, args.tile)
    segmenter, denoiser = load_models(args.denoiser_resolution)
    began = time.perf_counter()
    baseline = peak_rss_mib()
    common = {
        "sigma": args.sigma,
        "denoiser": denoiser,
        "segmenters": {"clean": segmenter},
        "device": "cpu",
        "autocast_dtype": dtype,
    }
    measured = measure_sample_bytes(frame.image, image_key="bench-frame", seed=0, **common)
    batch = micro_batch_size(
        args.batch_size, measured, args.memory_mib * 2**20, what="the bench frame"
    )
    after_probe = peak_rss_mib()
    template = StoreTemplate(
        config_id="b" * 64,
        config_json="{}",
        code_version="bench",
        manifest_sha256="m",
        dataset_name="bench",
        image_ids=("bench-frame",),
        image_shapes=((args.height, args.width),),
        num_classes=segmenter.num_classes,
        class_names=tuple(str(c) for c in range(segmenter.num_classes)),
        ignore_index=255,
        sigmas=(args.sigma,),
        variants=("denoised",),
        variant_segmenters={"denoised": {sigma_key(args.sigma): "clean"}},
        groups={"ddpm": ("denoised",)},
        n0=args.n0,
        n=args.n,
        samples_per_chunk=None,
        chunk_bytes=round(args.chunk_mib * 2**20),
    )
    targets = [np.zeros((args.height, args.width), dtype=np.int32)]
    with tempfile.TemporaryDirectory() as folder:
        store = SampleStore.create(str(Path(folder) / "memory.zarr"), template, targets)
        with BlockWriter(1) as writer:
            for phase in ("selection", "estimation"):
                for block, (start, stop) in enumerate(store.blocks(phase)):
                    maps = sample_class_maps(
                        frame.image,
                        image_key="bench-frame",
                        phase=phase,
                        start=start,
                        count=stop - start,
                        seed=0,
                        batch_size=batch,
                        **common,  # type: ignore[arg-type]
                    )
                    writer.submit(
                        functools.partial(
                            write_block,
                            store,
                            {"denoised": maps["clean"]},
                            sigma=args.sigma,
                            group="ddpm",
                            phase=phase,
                            image=0,
                            block=block,
                            start=start,
                        )
                    )
        flagged = int(store.done_blocks(args.sigma, "ddpm", "estimation", 0).sum())
        blocks = len(store.blocks("estimation"))
        chunks = store.group[f"samples/{sigma_key(args.sigma)}/denoised/estimation"].chunks
    end = peak_rss_mib()
    seconds = time.perf_counter() - began
    per_sample = measured * MEMORY_SLACK / 2**20
    print(
        f"frame {args.height}x{args.width}, n0 = {args.n0}, n = {args.n}, sigma = {args.sigma}; "
        f"denoiser at {args.denoiser_resolution}x{args.denoiser_resolution} via resize + compact "
        f"segmenter ({segmenter.num_classes} classes), {'bf16 autocast' if dtype else 'fp32'}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}; sampling.batch_size "
        f"{args.batch_size}, sampling.memory_mib {args.memory_mib}, chunk_mib {args.chunk_mib}\n"
    )
    print("| measure | value |\n|---|---|")
    rows = (
        ("peak RSS after loading the models (baseline)", f"{baseline:.0f} MiB"),
        ("one sample's tensors (measure_sample_bytes)", f"{measured / 2**20:.0f} MiB"),
        ("× MEMORY_SLACK = estimate per sample", f"{per_sample:.0f} MiB"),
        ("forward batch chosen (micro_batch_size)", f"{batch} (of batch_size {args.batch_size})"),
        ("peak RSS after the probe", f"{after_probe:.0f} MiB"),
        ("sample chunk / estimation blocks flagged", f"{chunks} / {flagged} of {blocks}"),
        ("**peak RSS of the whole run**", f"**{end:.0f} MiB = {end / 1024:.2f} GiB**"),
        (
            f"old default, one batch of {args.batch_size} (estimate, not run)",
            f"{baseline + args.batch_size * per_sample:.0f} MiB",
        ),
        ("wall time", f"{seconds:.0f} s for {args.n0 + args.n} samples + the probe"),
    )
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
