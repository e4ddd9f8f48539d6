"""The report: results rows, files, the printed table and the figures of a run.

rows.py builds one JSON-ready row per (σ, variant) from an aggregation; files.py writes and reads
results.parquet / results.csv; table.py prints the table and its legend; charts.py and
overlays.py draw the figures from the data they are handed, figures.py writes them all.
matplotlib (Agg) and pyarrow are imported inside the functions that need them.
"""

from __future__ import annotations

from certseg.report.charts import plot_accuracy_vs_radius, plot_class_iou
from certseg.report.figures import write_plots
from certseg.report.files import read_results, write_results
from certseg.report.overlays import OverlayFigure, OverlayRow, plot_overlays
from certseg.report.rows import build_rows, radius_for
from certseg.report.table import TABLE_COLUMNS, legend, markdown_table, table_lines

__all__ = [
    "TABLE_COLUMNS",
    "OverlayFigure",
    "OverlayRow",
    "build_rows",
    "legend",
    "markdown_table",
    "plot_accuracy_vs_radius",
    "plot_class_iou",
    "plot_overlays",
    "radius_for",
    "read_results",
    "table_lines",
    "write_plots",
    "write_results",
]
