"""Lineage of a run: the code version, the model files it used and their combined sha256.

The store records `models_sha256` in its identity (a model retrained into the same folder is a
different run); tracking tags every file's sha256 (`model_files`). Files are hashed through
`certseg.tracking.file_sha256`, cached per (path, size, mtime), so a run hashes each file once.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from certseg.run.context import RunContext

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".pt2", ".json")
"""Files of a model folder that count as the model (weights and their configs)."""


def code_version() -> str:
    """`git describe --always --dirty` of the certseg checkout, else the package version."""
    import certseg

    root = Path(certseg.__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        described = out.stdout.strip()
        if described:
            return f"{certseg.__version__}+{described}"
    except (OSError, subprocess.SubprocessError):
        pass
    return certseg.__version__


def model_files(ctx: RunContext) -> dict[str, Path]:
    """Every weight file of the used models, keyed "segmenter/<name>/<file>" or
    "denoiser/<name>/<file>" (a folder model: its WEIGHT_SUFFIXES files, recursively)."""
    config = ctx.config
    entries: list[tuple[str, str | None]] = [
        (f"segmenter/{name}", config.segmenters[name].path) for name in config.used_segmenters()
    ]
    entries += [
        (f"denoiser/{name}", config.denoisers[name].path)
        for name in sorted({v.denoiser for v in config.variants if v.denoiser})
    ]
    out: dict[str, Path] = {}
    for prefix, raw in entries:
        if raw is None:
            continue
        path = ctx.resolve_path(raw)
        if path.is_file():
            out[f"{prefix}/{path.name}"] = path
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix in WEIGHT_SUFFIXES:
                    out[f"{prefix}/{file.relative_to(path)}"] = file
    return out


def model_file_sha256s(ctx: RunContext) -> dict[str, str]:
    """label → sha256 (hex) of every file of `model_files`, sorted by label."""
    from certseg.tracking import file_sha256

    return {label: file_sha256(path) for label, path in sorted(model_files(ctx).items())}


def models_sha256(ctx: RunContext) -> str:
    """One sha256 over every used model file's label and content sha256 (the store's model
    identity: a model retrained into the same folder changes it)."""
    digest = hashlib.sha256()
    for label, sha in model_file_sha256s(ctx).items():
        digest.update(f"{label}\0{sha}\n".encode())
    return digest.hexdigest()
