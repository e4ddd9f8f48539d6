"""The abstain label: the one value a certified label map holds where the certificate abstains."""

from __future__ import annotations

from typing import Final

#: Certified label of a pixel whose certificate abstains. It is negative, so it is never a class
#: index (classes are 0 .. C-1) and never the ground-truth ignore label (255 for Cityscapes).
ABSTAIN: Final[int] = -1
