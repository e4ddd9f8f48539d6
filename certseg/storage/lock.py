"""The exclusive creation lock of a store: generations of small JSON objects
`certseg-lock.<gen>.json` at its root, created with an exclusive create, taken over when stale
(docs/storage.md, "Ownership and the creation lock")."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field

from certseg.storage.location import StoreLocation
from certseg.storage.ownership import (
    LockInfo,
    host_key,
    is_lock_name,
    lock_generation,
    lock_name,
    pid_alive,
    pid_start,
    read_store_state,
)


@dataclass(frozen=True)
class LockPolicy:
    """How long a creator waits for another one, and when a lock counts as abandoned.

    A lock whose holder runs on this host (same hostname, boot and pid namespace) is abandoned
    as soon as that pid is gone (kill -9 included); a live local holder is never taken over. A
    lock held from another host (or where liveness cannot be told) is abandoned after
    `stale_after_s` seconds without progress (its object unchanged; the holder rewrites it at
    least every `heartbeat_s` while it creates).
    Waiting gives up after `max_wait_s` in all, or when a live local holder has made no progress
    for `stale_after_s`.
    """

    stale_after_s: float = 300.0
    max_wait_s: float = 3600.0
    poll_s: float = 0.05
    max_poll_s: float = 1.0
    heartbeat_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("stale_after_s", "max_wait_s", "poll_s", "max_poll_s", "heartbeat_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LockPolicy.{name} must be > 0, got {getattr(self, name)}")


class LockWaitError(Exception):
    """Waiting for another creator ended without a store (the message says why)."""


@dataclass
class LockWatcher:
    """Decides, poll after poll, whether the current lock is abandoned (see LockPolicy)."""

    policy: LockPolicy
    started: float = field(default_factory=time.monotonic)
    _seen: tuple[int, bytes] | None = None
    _seen_since: float = 0.0
    _polls: int = 0

    def abandoned(self, lock: LockInfo) -> bool:
        """True when `lock` may be taken over; raises LockWaitError when waiting is pointless."""
        now = time.monotonic()
        if (lock.gen, lock.raw) != self._seen:
            self._seen, self._seen_since = (lock.gen, lock.raw), now
        idle = now - self._seen_since
        if lock.released:
            return True
        alive = None
        if lock.pid is not None and lock.host == host_key():
            if lock.pid == os.getpid():
                # creators of one URL are serialized inside a process (the caller holds that
                # lock), so a lock of this very process is a leftover of a failed release
                return True
            alive = pid_alive(lock.pid, lock.pid_start)
        if alive is False:
            return True
        if alive:
            if idle > self.policy.stale_after_s:
                raise LockWaitError(
                    f"the store is being created by {lock.describe()} (lock "
                    f"{lock_name(lock.gen)}), which is alive but made no progress for "
                    f"{idle:.0f} s; stop that process and run again"
                )
            return False
        return idle > self.policy.stale_after_s

    def wait(self, lock: LockInfo) -> None:
        """Sleep before the next poll (growing from poll_s to max_poll_s); raise LockWaitError
        after max_wait_s."""
        waited = time.monotonic() - self.started
        if waited > self.policy.max_wait_s:
            raise LockWaitError(
                f"gave up after waiting {waited:.0f} s for {lock.describe()} to finish creating "
                f"the store (lock {lock_name(lock.gen)})"
            )
        self._polls += 1
        time.sleep(min(self.policy.poll_s * (1.25 ** min(self._polls, 30)), self.policy.max_poll_s))


class CreationLock:
    """A held creation lock: generation `gen` at `location`, written by this process."""

    def __init__(self, location: StoreLocation, gen: int, config_id: str, policy: LockPolicy):
        self.location = location
        self.gen = gen
        self.config_id = config_id
        self.policy = policy
        self.token = uuid.uuid4().hex
        self._beat = 0
        self._last_beat = time.monotonic()

    def _payload(self, *, released: bool = False) -> bytes:
        pid = os.getpid()
        return json.dumps(
            {
                "certseg": "sample-store creation lock",
                "config_id": self.config_id,
                "token": self.token,
                "host": host_key(),
                "pid": pid,
                "pid_start": pid_start(pid),
                "beat": self._beat,
                "time": time.time(),
                "released": released,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def try_acquire(
        cls, location: StoreLocation, gen: int, config_id: str, policy: LockPolicy
    ) -> CreationLock | None:
        """Create lock generation `gen` exclusively; None when another process has it.

        The object is read back and must carry this process's token: on a backend whose
        exclusive create is only a check-then-write this narrows (does not close) the race.
        """
        lock = cls(location, gen, config_id, policy)
        if not location.create_exclusive(lock_name(gen), lock._payload()):
            return None
        back = location.read(lock_name(gen))
        if back is None or LockInfo.parse(gen, back).token != lock.token:
            return None
        return lock

    def heartbeat(self, *, force: bool = False) -> None:
        """Show progress (rewrite the lock object) when heartbeat_s has passed since the last."""
        now = time.monotonic()
        if force or now - self._last_beat >= self.policy.heartbeat_s:
            self._beat += 1
            self._last_beat = now
            self.location.replace(lock_name(self.gen), self._payload())

    def still_held(self) -> bool:
        """Whether no process has taken the lock over (no higher generation) and ours is intact."""
        state = read_store_state(self.location)
        top = state.top_lock
        return top is not None and top.gen == self.gen and top.token == self.token

    def release(self) -> None:
        """Give the lock up after a failed creation: mark ours released (the next creator takes
        generation gen + 1 at once) and remove the lower, superseded generations."""
        with contextlib.suppress(OSError):
            self.location.replace(lock_name(self.gen), self._payload(released=True))
            for name in self.location.entries():
                gen = lock_generation(name)
                if gen is not None and gen < self.gen:
                    self.location.delete(name)

    def finish(self) -> None:
        """Remove every lock object once the store is complete (a complete store needs none)."""
        for name in self.location.entries():
            if is_lock_name(name):
                self.location.delete(name)
