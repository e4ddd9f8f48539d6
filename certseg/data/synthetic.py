"""The embedded synthetic segmentation benchmark: seeded 64×64 scenes, generated on the fly.

Design (see docs/embedded-benchmark.md): a class is carried the way real scenes carry it — by
shape, colour family, object-scale structure and context — never by pixel-scale grain. Fine grain
and shading are nuisances drawn independently of the class, so a segmenter that keys on them is
wrong on clean data too. Pure numpy; no torch import.

Classes (index: name — cue):
  0 background — smooth, low-saturation colour field of any hue (fills the upper scene)
  1 ground     — a brownish-grey band at the bottom with a wavy horizon (context: always below)
  2 disc       — a filled circle, warm colour (red/orange)
  3 ring       — an annulus, warm colour (same family as disc: the hole is the cue)
  4 box        — a rotated rectangle, cool colour (blue), placed on the ground when there is one
  5 triangle   — a triangle, cool colour (same family as box: the shape is the cue)
  6 striped    — an ellipse filled with object-scale stripes (period 6–10 px at 64×64), yellow-green
"""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np

from certseg.data.base import (
    DEFAULT_IGNORE_INDEX,
    ClassInfo,
    Example,
    Manifest,
    ManifestEntry,
)

DESIGN = """\
## Data design (certseg.data.synthetic)

Classes are carried the way real scenes carry them: shape, colour family, object-scale structure
and context, never pixel-scale grain. 0 background (smooth low-saturation field of any hue),
1 ground (brownish band under a wavy horizon: context), 2 disc and 3 ring (same warm colour
family: the hole is the cue), 4 box (upright, on the ground when there is one) and 5 triangle
(same cool family: the shape is the cue), 6 striped (ellipse with 6-10 px stripes: object-scale
structure). Fine grain (std 0-0.06 per image, whole scene) and low-frequency shading are
nuisances drawn independently of the class. Objects span ~6-15 px radius at 64x64. The design was
fixed from these principles before any certification run and is not tuned against certification
results (issue 10; docs/embedded-benchmark.md).
"""
"""Markdown section quoted in every shipped model card."""

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Split name → the integer mixed into each image's seed (so splits never share an image)."""

CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("background", (0, 0, 0)),
    ClassInfo("ground", (128, 96, 64)),
    ClassInfo("disc", (220, 50, 40)),
    ClassInfo("ring", (250, 150, 30)),
    ClassInfo("box", (40, 80, 220)),
    ClassInfo("triangle", (40, 190, 220)),
    ClassInfo("striped", (170, 210, 40)),
)
BACKGROUND, GROUND, DISC, RING, BOX, TRIANGLE, STRIPED = range(7)
_OBJECT_CLASSES = (DISC, RING, BOX, TRIANGLE, STRIPED)

# Colour families (hue range in [0, 1), saturation range, value range) per object class.
_WARM = ((-0.03, 0.09), (0.6, 0.95), (0.55, 0.95))
_COOL = ((0.55, 0.68), (0.5, 0.9), (0.45, 0.9))
_FAMILY = {
    DISC: _WARM,
    RING: _WARM,
    BOX: _COOL,
    TRIANGLE: _COOL,
    STRIPED: ((0.16, 0.33), (0.55, 0.9), (0.6, 0.95)),
}


def _hsv(rng: np.random.Generator, family: tuple[tuple[float, float], ...]) -> np.ndarray:
    """One RGB colour (3,) float32 in [0, 1] drawn from an (h, s, v) range family."""
    (h0, h1), (s0, s1), (v0, v1) = family
    h = rng.uniform(h0, h1) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return np.asarray(rgb, dtype=np.float32)


def _interp_matrix(size: int, knots: int) -> np.ndarray:
    """(size, knots) linear interpolation weights: a smooth field is A @ K @ A.T."""
    pos = np.linspace(0.0, knots - 1.0, size)
    lo = np.clip(np.floor(pos).astype(int), 0, knots - 2)
    frac = pos - lo
    mat = np.zeros((size, knots), dtype=np.float32)
    mat[np.arange(size), lo] = 1.0 - frac
    mat[np.arange(size), lo + 1] = frac
    return mat


class SyntheticDataset:
    """Seeded synthetic scenes; item `index` is a pure function of (seed, split, index, size).

    load(i).image: (3, size, size) float32 in [0, 1] units; load(i).target: (size, size) uint8
    class indices in 0..6 (this generator never emits ignore_index, which is 255).
    Image ids: f"synthetic-{split}-{index:05d}".
    """

    name = "synthetic"
    classes = CLASSES
    ignore_index = DEFAULT_IGNORE_INDEX

    def __init__(self, seed: int, num_images: int, size: int = 64, split: str = "test") -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {size}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.seed = seed
        self.num_images = num_images
        self.size = size
        self.split = split
        coords = np.arange(size, dtype=np.float32)
        self._yy, self._xx = np.meshgrid(coords, coords, indexing="ij")
        self._interp = _interp_matrix(size, 5)

    def __len__(self) -> int:
        return self.num_images

    def image_ids(self) -> list[str]:
        """All ids in index order."""
        return [self._image_id(i) for i in range(self.num_images)]

    def _image_id(self, index: int) -> str:
        return f"synthetic-{self.split}-{index:05d}"

    def load(self, index: int) -> Example:
        """Generate item `index` (deterministic; ~0.3 ms at 64×64)."""
        if not 0 <= index < self.num_images:
            raise ValueError(f"index must be in [0, {self.num_images}), got {index}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS[self.split], index]))
        image, target = self._generate(rng)
        return Example(self._image_id(index), image, target)

    def manifest(self) -> Manifest:
        """One entry per item: files=(), sha256 of the image's float32 bytes then the target's."""
        entries = []
        for index in range(self.num_images):
            example = self.load(index)
            digest = hashlib.sha256(example.image.tobytes())
            digest.update(example.target.tobytes())
            entries.append(
                ManifestEntry(example.image_id, (), self.size, self.size, digest.hexdigest())
            )
        return Manifest(self.name, len(self.classes), self.ignore_index, tuple(entries))

    # --- generation -------------------------------------------------------------------------

    def _smooth_field(self, rng: np.random.Generator, channels: int) -> np.ndarray:
        """(channels, S, S) smooth field in about [-1, 1]: 5×5 knots, bilinear."""
        knots = rng.uniform(-1.0, 1.0, size=(channels, 5, 5)).astype(np.float32)
        field: np.ndarray = np.einsum("hk,ckl,wl->chw", self._interp, knots, self._interp)
        return field

    def _generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = float(self.size)
        yy, xx = self._yy, self._xx
        # Background: low-saturation colour of any hue with a smooth tint field.
        base = np.asarray(
            colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.9)),
            dtype=np.float32,
        )
        image = base[:, None, None] + 0.12 * self._smooth_field(rng, 3)
        target = np.zeros((self.size, self.size), dtype=np.uint8)

        # Ground: a band below a wavy horizon (present in 3 of 4 scenes).
        horizon = None
        if rng.uniform() < 0.75:
            level = s * rng.uniform(0.55, 0.8)
            amp = s * rng.uniform(0.0, 0.06)
            phase = rng.uniform(0, 2 * np.pi)
            freq = rng.uniform(1.0, 3.0) * 2 * np.pi / s
            horizon = level + amp * np.sin(freq * xx[0] + phase)  # (S,)
            mask = yy >= horizon[None, :]
            colour = _hsv(rng, ((0.05, 0.12), (0.15, 0.4), (0.25, 0.5)))
            shade = 0.08 * self._smooth_field(rng, 1)[0]
            image = np.where(mask[None], colour[:, None, None] + shade[None], image)
            target[mask] = GROUND

        for _ in range(int(rng.integers(2, 6))):
            cls = int(rng.choice(_OBJECT_CLASSES))
            mask, pattern = self._object_mask(rng, cls, horizon)
            colour = _hsv(rng, _FAMILY[cls])
            fill = np.broadcast_to(colour[:, None, None], image.shape).copy()
            if pattern is not None:  # stripes: the dark tone is 40-55 % of the light one
                fill = np.where(pattern[None], fill, fill * rng.uniform(0.4, 0.55))
            # Nuisance shading, independent of the class.
            fill = fill + rng.uniform(0.0, 0.1) * self._smooth_field(rng, 1)
            image = np.where(mask[None], fill, image)
            target[mask] = cls

        # Nuisance grain over the whole scene, amplitude drawn per image (never a class cue).
        grain = rng.uniform(0.0, 0.06)
        image = image + grain * rng.standard_normal(image.shape, dtype=np.float32)
        return np.clip(image, 0.0, 1.0).astype(np.float32), target

    def _object_mask(
        self, rng: np.random.Generator, cls: int, horizon: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(S, S) bool mask of one object of class `cls` and, for stripes, the light-tone mask."""
        s = float(self.size)
        yy, xx = self._yy, self._xx
        cx = rng.uniform(0.15, 0.85) * s
        cy = rng.uniform(0.15, 0.85) * s
        if cls == BOX and horizon is not None:  # context: boxes stand on the ground
            cx = rng.uniform(0.15, 0.85) * s
            cy = float(horizon[min(int(cx), self.size - 1)]) + rng.uniform(-0.02, 0.12) * s
        dy, dx = yy - cy, xx - cx
        if cls == DISC:
            r = rng.uniform(0.09, 0.16) * s
            return dx * dx + dy * dy <= r * r, None
        if cls == RING:
            r_out = rng.uniform(0.14, 0.22) * s
            r_in = r_out * rng.uniform(0.45, 0.6)
            d2 = dx * dx + dy * dy
            return (d2 <= r_out * r_out) & (d2 >= r_in * r_in), None
        theta = rng.uniform(0, np.pi)
        c, sn = np.cos(theta), np.sin(theta)
        u, v = c * dx + sn * dy, -sn * dx + c * dy
        if cls == BOX:
            half_w = rng.uniform(0.1, 0.18) * s
            half_h = half_w * rng.uniform(0.6, 1.0)
            tilt = rng.uniform(-0.25, 0.25)  # boxes stay roughly upright
            c, sn = np.cos(tilt), np.sin(tilt)
            u, v = c * dx + sn * dy, -sn * dx + c * dy
            return (np.abs(u) <= half_w) & (np.abs(v) <= half_h), None
        if cls == TRIANGLE:
            r = rng.uniform(0.15, 0.24) * s
            inside = np.ones_like(u, dtype=bool)
            for k in range(3):  # equilateral: three half-planes at distance r/2 from the centre
                a = theta + 2 * np.pi * k / 3
                inside &= np.cos(a) * dx + np.sin(a) * dy <= 0.5 * r
            return inside, None
        # STRIPED: an ellipse with stripes of period 6-10 px (at 64×64) at a random angle.
        a_ax = rng.uniform(0.14, 0.24) * s
        b_ax = a_ax * rng.uniform(0.6, 1.0)
        mask = (u / a_ax) ** 2 + (v / b_ax) ** 2 <= 1.0
        period = rng.uniform(0.095, 0.155) * s
        phi = rng.uniform(0, np.pi)
        stripes = np.sin(2 * np.pi * (np.cos(phi) * xx + np.sin(phi) * yy) / period) >= 0
        return mask, stripes
