"""Reading image and label files (PIL) into arrays, and the load-time resize; errors name the file.

Images: any 8-bit PIL mode that converts to RGB without guessing a scale — "RGB"; "L" (grayscale:
the value is replicated to R, G, B); "P" (palette: looked up to RGB); "1"; "RGBA", "LA", "PA" (alpha
is dropped, not composited); "CMYK" and "YCbCr" (PIL's conversion). 16-bit, 32-bit integer and
float images are rejected: their intensity scale is ambiguous. The result is (3, H, W) float32 in
[0, 1] units (value / 255).

Labels: single-channel class-index images — "L" and "P" (a palette image's indices are the class
indices; its colours are ignored), "1", and 16/32-bit integer modes ("I;16", "I"). Colour-coded
(RGB) masks are rejected. The result is the raw (H, W) integer array; the dataset maps it.

A missing, unreadable or truncated file raises DatasetError naming the file. PIL's global
LOAD_TRUNCATED_IMAGES stays off, so a truncated file is always an error.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from certseg.data.base import DatasetError

IMAGE_MODES: frozenset[str] = frozenset({"RGB", "L", "P", "1", "RGBA", "LA", "PA", "CMYK", "YCbCr"})
LABEL_MODES: frozenset[str] = frozenset({"L", "P", "1", "I", "I;16", "I;16L", "I;16B"})


def file_error(path: Path, rel: str, reason: str) -> DatasetError:
    """A DatasetError for one file: the message names the full path, `file` the relative one."""
    return DatasetError(f"{path}: {reason}", file=rel, reason=reason)


def read_bytes(path: Path, *, rel: str) -> bytes:
    """The whole file; DatasetError naming it when it is missing or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise file_error(path, rel, "file not found") from None
    except OSError as error:
        reason = f"cannot read file ({error.strerror or error})"
        raise file_error(path, rel, reason) from None


def _open_decoded(data: bytes, path: Path, *, rel: str) -> Image.Image:
    """Decode all pixels (so truncation shows now); DatasetError naming the file if it fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        reason = f"unreadable or truncated image file ({type(error).__name__}: {error})"
        raise file_error(path, rel, reason) from None
    return image


def decode_image(data: bytes, path: Path, *, rel: str) -> np.ndarray:
    """Image file bytes → (3, H, W) float32 in [0, 1] units (see the module doc for modes)."""
    image = _open_decoded(data, path, rel=rel)
    if image.mode not in IMAGE_MODES:
        reason = (
            f"image mode {image.mode!r} not supported; expected an 8-bit RGB, grayscale, "
            "palette or RGBA image"
        )
        raise file_error(path, rel, reason)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def decode_label(data: bytes, path: Path, *, rel: str) -> np.ndarray:
    """Label file bytes → raw (H, W) integer array (int32) of the stored values."""
    image = _open_decoded(data, path, rel=rel)
    if image.mode not in LABEL_MODES:
        reason = (
            f"label mode {image.mode!r} is not a single-channel class-index image; expected a "
            "PNG of mode L, P or I;16 whose pixel values are class indices"
        )
        raise file_error(path, rel, reason)
    return np.asarray(image, dtype=np.int32)


def read_size(path: Path, *, rel: str) -> tuple[int, int]:
    """(H, W) of an image file from its header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise file_error(path, rel, "file not found") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = f"unreadable image file ({type(error).__name__}: {error})"
        raise file_error(path, rel, reason) from None
    return int(height), int(width)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float32 [0, 1] → (3, size[0], size[1]) float32 [0, 1].

    Bilinear, antialiased when shrinking (PIL's resampling widens the triangle filter by the scale
    factor), computed in float32 per channel (no 8-bit rounding). The weights are non-negative
    and sum to one, so values stay in [0, 1] up to float rounding, which is clipped.
    """
    height, width = size
    if image.shape[1:] == (height, width):
        return image
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        for channel in image
    ]
    return np.clip(np.stack(channels), 0.0, 1.0).astype(np.float32, copy=False)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) integer labels → (size[0], size[1]) by nearest neighbour (PIL), same dtype."""
    height, width = size
    if label.shape == (height, width):
        return label
    resized = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.asarray(resized, dtype=np.int32).astype(label.dtype, copy=False)
