"""Aggregation: every stored image certified, tallied and folded per (σ, variant) with Dask.

`aggregate_store` (fold.py) certifies each stored image through certseg.certificates, tallies it
into an `ImageSummary` (summary.py) and merges the tallies; `AggregateResult` holds the merged
summaries and the certified maps kept for the overlays. Counts are persisted to the store
(counts/<σ>/<variant>/...) when made from the store's full n, so recertify with new α, τ or
correction reads them instead of the samples; a smaller n recounts from the first n samples.
"""

from __future__ import annotations

from certseg.aggregate.fold import AggregateResult, aggregate_store, dask_client
from certseg.aggregate.summary import (
    RADIUS_BINS,
    CertifiedMap,
    ImageSummary,
    radius_edges,
    summarize_certificate,
)
from certseg.config import CertifyParams

__all__ = [
    "RADIUS_BINS",
    "AggregateResult",
    "CertifiedMap",
    "CertifyParams",
    "ImageSummary",
    "aggregate_store",
    "dask_client",
    "radius_edges",
    "summarize_certificate",
]
