"""The Zarr sample store: the layout contract (docs/storage.md) and chunk-aligned region writes."""

from __future__ import annotations

from certseg.storage.layout import (
    DIMENSIONS,
    LAYOUT_VERSION,
    PHASES_STORED,
    StoreTemplate,
    sigma_key,
)
from certseg.storage.lock import LockPolicy
from certseg.storage.store import (
    SampleStore,
    StoreError,
    StoreLayoutError,
    StoreLockedError,
    StoreMismatchError,
    open_zarr_store,
)

__all__ = [
    "DIMENSIONS",
    "LAYOUT_VERSION",
    "PHASES_STORED",
    "LockPolicy",
    "SampleStore",
    "StoreError",
    "StoreLayoutError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreTemplate",
    "open_zarr_store",
    "sigma_key",
]
