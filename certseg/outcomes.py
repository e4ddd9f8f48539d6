"""Typed outcomes the run steps hand to the report: health-check base accuracy per (σ, variant).

Kept low in the import graph (it imports nothing of certseg), so `certseg.report` can take these
values without importing the run layer that measures them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HealthResult:
    """Base accuracy of one variant at one σ: one noisy draw per held-out image, no certificate.

    accuracy = correct / valid over the valid (non-ignored) pixels of the num_images measured
    (NaN when none was measured); floor: the configured health.floor.
    """

    sigma: float
    variant: str
    accuracy: float
    correct: int
    valid: int
    num_images: int
    floor: float

    @property
    def flagged(self) -> bool:
        """Measured and below the configured floor (a check that did not run — NaN accuracy,
        e.g. health.num_images: 0 — is not flagged)."""
        return not math.isnan(self.accuracy) and self.accuracy < self.floor
