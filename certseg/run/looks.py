"""Sequential certification while a shard samples: the stopping look of each (σ, denoiser
group, image), decided from the stored samples' counts only (docs/method.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from certseg.redact import redact_url
from certseg.stats import select_labels
from certseg.stats.sequential import LookSchedule, certify_at_look, stop_reason
from certseg.storage import SampleStore, StoreError, sigma_key

if TYPE_CHECKING:
    from certseg.config import RunConfig


class GroupLooks:
    """Sequential decisions of one (σ, denoiser group, image) while its blocks are drawn.

    Selection blocks give each variant's selected labels (`select_labels`); estimation blocks
    add to each variant's agreement counts k; at a block that ends at a look n_l, each variant
    not yet stopped is certified on its prefix counts (`certify_at_look`, level α_l) and stops
    when `stop_reason` says so. Decisions depend on the stored samples only, so a resumed run
    recomputes the same stopping looks (and refuses a store whose recorded look differs).
    """

    def __init__(
        self,
        store: SampleStore,
        config: RunConfig,
        sigma: float,
        variants: tuple[str, ...],
        image: int,
    ) -> None:
        self.store = store
        self.sigma = sigma
        self.variants = variants
        self.image = image
        self.schedule = LookSchedule(store.looks, store.look_alphas, store.sequential_alpha)
        self.tau = config.tau
        self.correction = config.correction
        self.tolerance = store.fraction_tolerance
        self.look_at = {n: look for look, n in enumerate(self.schedule.sample_counts)}
        self.selection: dict[str, list[np.ndarray]] = {v: [] for v in variants}
        self.labels: dict[str, np.ndarray] = {}
        self.k: dict[str, np.ndarray] = {}
        self.previous: dict[str, float | None] = dict.fromkeys(variants)
        self.stops: dict[str, int] = {}

    def recorded_end(self) -> int | None:
        """The group's last stopping look when every variant's is recorded, else None."""
        recorded = [self.store.read_stop(self.sigma, v, self.image) for v in self.variants]
        return max(recorded) if min(recorded) >= 0 else None

    def read(self, phase: str, start: int, stop: int) -> dict[str, np.ndarray]:
        """The stored maps of a finished block, for the variants that still need them."""
        wanted = self.variants if phase == "selection" else self._active()
        return {
            v: self.store.read_samples(self.sigma, v, phase, self.image, start, stop)
            for v in wanted
        }

    def _active(self) -> tuple[str, ...]:
        return tuple(v for v in self.variants if v not in self.stops)

    def add(self, phase: str, maps: Mapping[str, np.ndarray], stop: int) -> bool:
        """Count one block ((count, H, W) maps per variant) ending at sample `stop`; True when
        every variant has stopped (always at the last look)."""
        if phase == "selection":
            for v in self.variants:
                self.selection[v].append(np.asarray(maps[v]))
            return False
        for v in self._active():
            if v not in self.labels:
                self.labels[v] = select_labels(
                    np.concatenate(self.selection.pop(v)), self.store.num_classes
                )
                self.k[v] = np.zeros(self.labels[v].shape, dtype=np.int32)
            self.k[v] += (np.asarray(maps[v]) == self.labels[v]).sum(axis=0, dtype=np.int32)
        look = self.look_at.get(stop)
        if look is None:
            return False
        for v in self._active():
            certificate = certify_at_look(
                self.labels[v],
                self.k[v],
                self.schedule.sample_counts[look],
                self.schedule.alphas[look],
                tau=self.tau,
                sigma=self.sigma,
                correction=self.correction,
            )
            reason = stop_reason(
                look, certificate, self.k[v], self.schedule, self.previous[v], self.tolerance
            )
            self.previous[v] = certificate.num_certified / certificate.num_pixels
            if reason is not None:
                self.stops[v] = look
        return not self._active()

    def record(self, group: str) -> None:
        """Write every variant's stopping look, then flag the group's blocks after the last of
        them "not needed" (a writer job: after the blocks submitted before it landed)."""
        for v, look in self.stops.items():
            found = self.store.read_stop(self.sigma, v, self.image)
            if found not in (-1, look):
                raise StoreError(
                    f"store {redact_url(self.store.url)!r}: image "
                    f"{self.store.image_ids[self.image]!r}, {sigma_key(self.sigma)}, variant "
                    f"{v!r} recorded stopping look {found}, but its stored samples stop at look "
                    f"{look}: the store's samples changed; use a new store URL"
                )
            self.store.write_stop(self.sigma, v, self.image, look)
        self.mark_not_needed(group, max(self.stops.values()))

    def mark_not_needed(self, group: str, last_look: int) -> None:
        """Flag the group's unsampled estimation blocks after look `last_look` "not needed"."""
        end = self.schedule.sample_counts[last_look]
        flags = self.store.block_flags(self.sigma, group, "estimation", self.image)
        for block, (start, _) in enumerate(self.store.blocks("estimation")):
            if start >= end and flags[block] == 0:
                self.store.mark_not_needed(self.sigma, group, self.image, block)
