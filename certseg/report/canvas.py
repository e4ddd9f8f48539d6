"""matplotlib's pyplot with the non-interactive Agg backend, imported on first use."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot, the Agg backend selected (figures are only ever saved to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
