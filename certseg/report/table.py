"""The printed results table: its columns, marks ("*", "!", "‼") and legend, as text or Markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sigma", "σ"),
    ("variant", "variant"),
    ("health_accuracy", "base acc"),
    ("certified_accuracy", "certified acc"),
    ("certified_miou", "certified mIoU"),
    ("abstain_rate", "abstain"),
    ("certified_wrong", "certified wrong"),
    ("smoothed_accuracy", "smoothed acc"),
    ("clean_accuracy", "clean acc"),
)
"""(row key, header) of the printed results table."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _cannot_certify(row: Mapping[str, Any]) -> bool:
    """n is below the smallest count the first correction step can certify (level α/m), so no
    pixel can be certified (first_count > n)."""
    first, n = row.get("first_count"), row.get("n")
    return isinstance(first, int) and isinstance(n, int) and first > n


def table_lines(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The printed table as header + rows of strings: flagged health marked "!", variants
    needing training marked "*"."""
    lines = [[header for _, header in TABLE_COLUMNS]]
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            text = _fmt(row.get(key, math.nan))
            if key == "sigma":
                text = f"{row['sigma']:g}"
            if key == "variant" and row.get("needs_training"):
                text += " *"
            if key == "health_accuracy" and row.get("health_flagged"):
                text += " !"
            if key == "certified_accuracy" and _cannot_certify(row):
                text += " ‼"
            cells.append(text)
        lines.append(cells)
    return lines


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results table as Markdown (README), with the legend."""
    lines = table_lines(rows)
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
    out.append("")
    out.append(legend(rows))
    return "\n".join(out)


def legend(rows: Sequence[Mapping[str, Any]]) -> str:
    """One paragraph explaining the table's marks and its parameters."""
    if not rows:
        return ""
    first = rows[0]
    parts = [
        f"n0={first['n0']}, n={first['n']}, α={first['alpha']:g}, τ={first['tau']:g}, "
        f"{first['correction']}; certified radius R=σΦ⁻¹(τ)."
    ]
    if any(r.get("needs_training") for r in rows):
        parts.append("* needs a model trained for the method.")
    parts.append(
        "base acc: one noisy draw through the base classifier on held-out images (health check)."
    )
    if any(r.get("health_flagged") for r in rows):
        parts.append("! base accuracy below the health floor.")
    parts.append(
        "certified wrong: certified with a label other than the truth (fraction of valid "
        "pixels; certified acc + certified wrong + abstain = 1)."
    )
    blocked = [r for r in rows if _cannot_certify(r)]
    if blocked:
        need = max(int(r["first_count"]) for r in blocked)
        parts.append(
            f"‼ n={blocked[0]['n']} is below the minimum count {need} that can certify any "
            f"pixel at α={first['alpha']:g}, τ={first['tau']:g} over these images' pixel counts: "
            f"nothing can be certified; use n ≥ {need} (or a larger α, a smaller τ)."
        )
    labels = {r["variant"]: r.get("label", "") for r in rows}
    parts.append("; ".join(f"{k}: {v}" for k, v in labels.items() if v) + ".")
    return " ".join(parts)
