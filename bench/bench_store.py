"""Store size: bytes per stored class map at Cityscapes size for candidate codecs, and their speed.

Class maps: 1024×2048 frames of distinct 256×256 synthetic scenes (bench/frames.py), predicted
under per-sample keyed noise by the shipped models of the two Cityscapes variants — "segcertify"
(the noise-trained segmenter alone, weights/segmenter-noise-0.25) and "denoised" (the shipped
denoiser run at 256×256 via resize, then the clean segmenter) — with bf16 autocast where the CPU
supports it (the default config's `bf16: auto`), relabelled to 19 classes per tile. For each
(variant, σ): n0 selection maps (their mode, `select_labels`, is the selection label ĉ) and
`--samples` estimation maps, stored as one chunk of shape (1, samples, H, W) like the store's
sample arrays.

Candidates, each encoding the estimation chunk and decoding it back bit for bit (checked):
- zstd levels 0 (zarr 3.1's default ZstdCodec(level=0) = zstd's default level 3), 1, 3, 5;
- blosc + zstd (levels 3, 5) with byte shuffle and with bitshuffle; blosc + lz4 with bitshuffle;
- pack5 + zstd: 5-bit packing of ≤ 32 classes in numpy (stand-in for a packing codec), zstd 3;
- delta to the selection mode: `sample XOR mode` then zstd 3 or blosc-zstd-bitshuffle; and a
  1-bit `sample != mode` mask (np.packbits) + the differing values, each zstd 3.
Timed in interleaved rounds (every codec once per round; medians). Then a local zarr array laid out
like the store's estimation arrays (chunks (1, samples, H, W)) is written and read with zarr's
default codec and with the zarr-expressible candidates, and the disk need of a Cityscapes-val run
is computed from the measured bytes per map.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_store`` (see --help for sizes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.frames import CITYSCAPES_CLASSES, REPO, load_models, model_class_maps, mosaic_frame

PACK_BITS = 5
"""Bits per packed label: ≤ 32 classes (Cityscapes' 19)."""


@dataclass(frozen=True)
class Codec:
    """A candidate: encode a (S, H, W) uint8 chunk (given the (H, W) selection mode) to parts of
    bytes; decode the parts back. zarr: the zarr v3 compressor that does the same, if any."""

    name: str
    encode: Callable[[np.ndarray, np.ndarray], list[bytes]]
    decode: Callable[[list[bytes], np.ndarray, tuple[int, ...]], np.ndarray]
    zarr: Callable[[], Any] | None = None


def _numcodec(codec: Any) -> tuple[Callable[..., list[bytes]], Callable[..., np.ndarray]]:
    def encode(block: np.ndarray, mode: np.ndarray) -> list[bytes]:
        return [bytes(codec.encode(block))]

    def decode(parts: list[bytes], mode: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(codec.decode(parts[0]), dtype=np.uint8).reshape(shape)

    return encode, decode


def pack5(block: np.ndarray) -> np.ndarray:
    """(…) uint8 labels < 32 → uint8 bytes holding 5 bits per label (little-endian bit order)."""
    bits = (block.reshape(-1, 1) >> np.arange(PACK_BITS, dtype=np.uint8)) & 1
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack5(packed: np.ndarray, count: int) -> np.ndarray:
    """The inverse of pack5 for `count` labels."""
    bits = np.unpackbits(packed, count=count * PACK_BITS, bitorder="little")
    weights = (1 << np.arange(PACK_BITS, dtype=np.uint8)).astype(np.uint8)
    return (bits.reshape(-1, PACK_BITS) * weights).sum(axis=1, dtype=np.uint8)


def codecs() -> list[Codec]:
    """The candidates (numcodecs imported here)."""
    import numcodecs
    import zarr.codecs

    z = numcodecs.Zstd
    blosc = numcodecs.Blosc
    found: list[Codec] = []
    for level in (0, 1, 3, 5):
        enc, dec = _numcodec(z(level=level))
        name = "zstd 0 (zarr default = zstd 3)" if level == 0 else f"zstd {level}"
        found.append(Codec(name, enc, dec, lambda lv=level: zarr.codecs.ZstdCodec(level=lv)))
    for cname, level, shuffle, label in (
        ("zstd", 3, blosc.SHUFFLE, "shuffle"),
        ("zstd", 3, blosc.BITSHUFFLE, "bitshuffle"),
        ("zstd", 5, blosc.BITSHUFFLE, "bitshuffle"),
        ("lz4", 5, blosc.BITSHUFFLE, "bitshuffle"),
    ):
        enc, dec = _numcodec(blosc(cname=cname, clevel=level, shuffle=shuffle))
        kind = "bitshuffle" if shuffle == blosc.BITSHUFFLE else "shuffle"

        def make(c: str = cname, lv: int = level, k: str = kind) -> Any:
            return zarr.codecs.BloscCodec(cname=c, clevel=lv, shuffle=k, typesize=1)

        found.append(Codec(f"blosc {cname} {level} + {label}", enc, dec, make))

    zstd3 = z(level=3)

    def pack_encode(block: np.ndarray, mode: np.ndarray) -> list[bytes]:
        return [bytes(zstd3.encode(pack5(block)))]

    def pack_decode(parts: list[bytes], mode: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        packed = np.frombuffer(zstd3.decode(parts[0]), dtype=np.uint8)
        return unpack5(packed, int(np.prod(shape))).reshape(shape)

    found.append(Codec("pack5 + zstd 3", pack_encode, pack_decode))

    def xor_codec(codec: Any, name: str) -> Codec:
        def encode(block: np.ndarray, mode: np.ndarray) -> list[bytes]:
            return [bytes(codec.encode(np.bitwise_xor(block, mode[None])))]

        def decode(parts: list[bytes], mode: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            delta = np.frombuffer(codec.decode(parts[0]), dtype=np.uint8).reshape(shape)
            return np.bitwise_xor(delta, mode[None])

        return Codec(name, encode, decode)

    found.append(xor_codec(zstd3, "mode XOR + zstd 3"))
    found.append(
        xor_codec(
            blosc(cname="zstd", clevel=3, shuffle=blosc.BITSHUFFLE),
            "mode XOR + blosc zstd 3 + bitshuffle",
        )
    )

    def mask_encode(block: np.ndarray, mode: np.ndarray) -> list[bytes]:
        differs = block != mode[None]
        return [bytes(zstd3.encode(np.packbits(differs))), bytes(zstd3.encode(block[differs]))]

    def mask_decode(parts: list[bytes], mode: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        flags = np.frombuffer(zstd3.decode(parts[0]), dtype=np.uint8)
        differs = np.unpackbits(flags, count=int(np.prod(shape))).reshape(shape).astype(bool)
        out = np.broadcast_to(mode[None], shape).copy()
        out[differs] = np.frombuffer(zstd3.decode(parts[1]), dtype=np.uint8)
        return out

    found.append(Codec("mode mask (1 bit) + exceptions, zstd 3", mask_encode, mask_decode))
    return found


def _median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def measure_codecs(
    block: np.ndarray, mode: np.ndarray, candidates: list[Codec], rounds: int
) -> dict[str, dict[str, float]]:
    """name → bytes per map, encode and decode ms per map (medians over interleaved rounds);
    SystemExit if a codec does not give the block back bit for bit."""
    count = block.shape[0]
    enc_times: dict[str, list[float]] = {c.name: [] for c in candidates}
    dec_times: dict[str, list[float]] = {c.name: [] for c in candidates}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for codec in candidates:
            began = time.perf_counter()
            parts = codec.encode(block, mode)
            enc_times[codec.name].append(time.perf_counter() - began)
            began = time.perf_counter()
            back = codec.decode(parts, mode, block.shape)
            dec_times[codec.name].append(time.perf_counter() - began)
            if not np.array_equal(back, block):
                raise SystemExit(f"codec {codec.name!r} does not give the maps back bit for bit")
            sizes[codec.name] = sum(len(p) for p in parts)
    return {
        c.name: {
            "bytes": sizes[c.name] / count,
            "encode_ms": _median_ms(enc_times[c.name]) / count,
            "decode_ms": _median_ms(dec_times[c.name]) / count,
        }
        for c in candidates
    }


def measure_zarr(
    block: np.ndarray, candidates: list[Codec], rounds: int, folder: Path
) -> dict[str, dict[str, float]]:
    """Write and read the (S, H, W) chunk as image 0 of a local zarr v3 array of shape
    (1, S, H, W), chunks (1, S, H, W) (the store's estimation layout), per zarr-expressible codec
    (None: zarr's default); ms per map (medians over interleaved rounds) and bytes on disk."""
    import zarr

    count, height, width = block.shape
    names = ["zarr default (create_array)"] + [c.name for c in candidates if c.zarr is not None]
    arrays: dict[str, Any] = {}
    group = zarr.open_group(zarr.storage.LocalStore(folder / "codecs.zarr"), mode="w")
    for index, name in enumerate(names):
        codec = next((c for c in candidates if c.name == name), None)
        extra: dict[str, Any] = (
            {} if codec is None or codec.zarr is None else {"compressors": codec.zarr()}
        )
        arrays[name] = group.create_array(
            name=f"a{index}",
            shape=(1, count, height, width),
            chunks=(1, count, height, width),
            dtype="uint8",
            fill_value=0,
            dimension_names=["image", "sample", "y", "x"],
            **extra,
        )
    writes: dict[str, list[float]] = {n: [] for n in names}
    reads: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            began = time.perf_counter()
            arrays[name][0] = block
            writes[name].append(time.perf_counter() - began)
            began = time.perf_counter()
            back = np.asarray(arrays[name][0])
            reads[name].append(time.perf_counter() - began)
            if not np.array_equal(back, block):
                raise SystemExit(f"zarr array {name!r} does not read back the maps written")
    result = {}
    for index, name in enumerate(names):
        chunk_files = list((folder / "codecs.zarr" / f"a{index}").rglob("*"))
        on_disk = sum(
            p.stat().st_size for p in chunk_files if p.is_file() and p.name != "zarr.json"
        )
        result[name] = {
            "bytes": on_disk / count,
            "write_ms": _median_ms(writes[name]) / count,
            "read_ms": _median_ms(reads[name]) / count,
            "codecs": str(arrays[name].metadata.codecs),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=256, help="synthetic scene size in the mosaic")
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10, help="estimation maps in the chunk")
    parser.add_argument("--sigmas", default="0.25,0.5")
    parser.add_argument("--variants", default="segcertify,denoised")
    parser.add_argument("--denoiser-resolution", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast for the models")
    args = parser.parse_args(argv)

    import numcodecs
    import torch
    import zarr

    from certseg.models import SegmenterSpec, build_segmenter
    from certseg.sampling import bf16_supported
    from certseg.stats import select_labels

    torch.set_num_threads(args.threads)
    dtype = None if args.fp32 or not bf16_supported("cpu") else torch.bfloat16
    clean, denoiser = load_models(args.denoiser_resolution)
    noisy_trained = build_segmenter(
        SegmenterSpec("compact", str(REPO / "weights/segmenter-noise-0.25"))
    )
    models = {"segcertify": (noisy_trained, None), "denoised": (clean, denoiser)}
    frame = mosaic_frame(args.height, args.width, args.tile)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    variants = args.variants.split(",")
    raw = args.height * args.width
    print(
        f"frame {args.height}x{args.width} of {args.tile}x{args.tile} synthetic scenes, "
        f"{CITYSCAPES_CLASSES} labels, n0 = {args.n0}, chunk of {args.samples} estimation maps, "
        f"models in {'bf16 autocast' if dtype else 'fp32'}, torch threads {args.threads}; "
        f"zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, raw {raw} B per map"
    )
    candidates = codecs()
    per_case: dict[tuple[str, float], dict[str, dict[str, float]]] = {}
    zarr_case: dict[tuple[str, float], dict[str, dict[str, float]]] = {}
    for variant in variants:
        segmenter, den = models[variant]
        for sigma in sigmas:
            began = time.perf_counter()
            common = {
                "segmenter": segmenter,
                "denoiser": den,
                "sigma": sigma,
                "autocast_dtype": dtype,
            }
            selection = model_class_maps(frame, phase="selection", count=args.n0, **common)
            block = model_class_maps(frame, phase="estimation", count=args.samples, **common)
            mode = select_labels(selection, CITYSCAPES_CLASSES).astype(np.uint8)
            seconds = time.perf_counter() - began
            differ = float(np.mean(block != mode[None]))
            print(
                f"\n### {variant}, sigma {sigma}: {args.n0 + args.samples} maps in "
                f"{seconds:.0f} s; "
                f"estimation pixels != selection mode: {differ:.4f}"
            )
            result = measure_codecs(block, mode, candidates, args.rounds)
            per_case[(variant, sigma)] = result
            print(
                "\n| codec | bytes per map | ratio to raw | encode ms per map | decode ms per map |"
            )
            print("|---|---|---|---|---|")
            for name, row in result.items():
                print(
                    f"| {name} | {row['bytes']:.0f} | {raw / row['bytes']:.1f} | "
                    f"{row['encode_ms']:.2f} | {row['decode_ms']:.2f} |"
                )
            with tempfile.TemporaryDirectory() as folder:
                zarr_case[(variant, sigma)] = measure_zarr(
                    block, candidates, args.rounds, Path(folder)
                )
            print(
                "\n| local zarr array, chunk (1, S, H, W) | bytes per map on disk "
                "| write ms per map | read ms per map |"
            )
            print("|---|---|---|---|")
            for name, row in zarr_case[(variant, sigma)].items():
                print(
                    f"| {name} | {row['bytes']:.0f} | {row['write_ms']:.2f} | "
                    f"{row['read_ms']:.2f} |"
                )
            default = zarr_case[(variant, sigma)]["zarr default (create_array)"]["codecs"]
            print(f"\nzarr default codecs of a uint8 array: {default}")

    images, n_sigmas, n_variants, per_image = 500, 3, 2, 10 + 100
    maps = images * n_sigmas * n_variants * per_image
    print(
        f"\n### Cityscapes val: {images} images x {n_sigmas} sigma x {n_variants} variants x "
        f"(n0 + n = {per_image}) = {maps} maps of {args.height}x{args.width} "
        f"(raw {maps * raw / 1e9:.0f} GB); mean bytes per map over the cases above\n"
    )
    print("| codec | mean bytes per map | GB on disk | ratio to raw |\n|---|---|---|---|")
    for codec in candidates:
        mean = statistics.mean(per_case[case][codec.name]["bytes"] for case in per_case)
        print(f"| {codec.name} | {mean:.0f} | {maps * mean / 1e9:.1f} | {raw / mean:.1f} |")


if __name__ == "__main__":
    main()
