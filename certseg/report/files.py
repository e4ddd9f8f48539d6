"""Results files: the rows as results.parquet and results.csv, and back.

pyarrow is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_results(rows: Sequence[Mapping[str, Any]], folder: Path) -> tuple[Path, Path]:
    """Write rows to folder/results.parquet and folder/results.csv (radius_hist as JSON text
    in the CSV); returns both paths."""
    import csv
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / "results.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), parquet)
    csv_path = folder / "results.csv"
    columns = list(rows[0]) if rows else []
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )
    return parquet, csv_path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows back from a results.parquet file."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows
