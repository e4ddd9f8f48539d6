"""What is at a store URL and whether certseg may write there (the proof; the lock is lock.py).

certseg writes (and, when re-creating an unfinished store, deletes) only at a URL it can prove is
its own: nothing there, an empty folder or prefix, or a certseg store of the same config_id. The
proof is read here (`read_store_state`); the decision is the caller's (certseg.storage.store).

The creation lock is a set of small JSON objects `certseg-lock.<gen>.json` at the store's root,
created with an exclusive create (local: O_CREAT|O_EXCL; fsspec: `pipe_file(mode="create")`,
which s3fs sends as a conditional PUT `If-None-Match: *`). The lock with the highest generation is
the current one; taking over a stale lock of generation g means creating generation g + 1, which
only one process can do. docs/storage.md ("Ownership and the creation lock") states the protocol
and what each backend guarantees.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from certseg.storage.location import StoreLocation

LOCK_PREFIX = "certseg-lock."
_LOCK_NAME = re.compile(r"^certseg-lock\.(\d+)\.json(\.tmp)?$")

_ZARR_TEMP = re.compile(r"^[^/]*\.[0-9a-f]{32}\.partial$")
"""zarr's atomic-write temp file (LocalStore: `path.with_suffix(".<uuid hex>.partial")`)."""

StoreKind = Literal["absent", "empty", "file", "foreign", "certseg"]


def lock_name(gen: int) -> str:
    """The root object name of lock generation `gen` (>= 1)."""
    return f"{LOCK_PREFIX}{gen}.json"


def is_lock_name(name: str) -> bool:
    """Whether a root entry is one of certseg's creation-lock objects (or a lock's temp file)."""
    return _LOCK_NAME.match(name) is not None


def lock_generation(name: str) -> int | None:
    """The generation of a creation-lock object (or of a lock's temp file), else None."""
    match = _LOCK_NAME.match(name)
    return int(match.group(1)) if match is not None else None


# --------------------------------------------------------------------------- this process


@functools.lru_cache(maxsize=1)
def host_key() -> str:
    """Identifies the pid namespace this process lives in: hostname, kernel boot id and pid
    namespace (Linux), so that two processes with the same key can check each other's pids."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "|".join(parts)


def pid_start(pid: int) -> str | None:
    """The start time of a process (Linux /proc, clock ticks since boot), None where unknown."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = line[line.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, start: str | None) -> bool | None:
    """Whether process `pid` (started at `start`, when known) still runs on this host; None
    where this cannot be told (no /proc and not POSIX).

    Linux: /proc/<pid>/stat; a zombie (killed, not yet reaped) counts as dead, and a pid reused
    by a newer process is told apart by its start time. Other POSIX systems: kill(pid, 0).
    """
    if Path("/proc/self/stat").exists():
        try:
            line = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return None
        fields = line[line.rfind(")") + 2 :].split()
        if fields and fields[0] in ("Z", "X"):
            return False
        return start is None or len(fields) <= 19 or fields[19] == start
    if os.name != "posix":
        return None  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- lock objects


@dataclass(frozen=True)
class LockInfo:
    """One lock object as read: its generation and, when its JSON parses, who holds it.

    raw: the object's bytes (a changed `raw` of the same generation is progress). config_id,
    host, pid...: None when the object is empty or half-written.
    """

    gen: int
    raw: bytes
    config_id: str | None = None
    token: str | None = None
    host: str | None = None
    pid: int | None = None
    pid_start: str | None = None
    released: bool = False

    @classmethod
    def parse(cls, gen: int, raw: bytes) -> LockInfo:
        try:
            data = json.loads(raw)
        except ValueError:
            return cls(gen, raw)
        if not isinstance(data, dict):
            return cls(gen, raw)
        pid = data.get("pid")
        return cls(
            gen,
            raw,
            config_id=data.get("config_id"),
            token=data.get("token"),
            host=data.get("host"),
            pid=pid if isinstance(pid, int) else None,
            pid_start=data.get("pid_start"),
            released=bool(data.get("released", False)),
        )

    def describe(self) -> str:
        """'pid 123 on host-a' or 'an unknown process'."""
        if self.pid is None:
            return "an unknown process"
        host = (self.host or "?").split("|")[0]
        return f"pid {self.pid} on {host}"


@dataclass(frozen=True)
class StoreState:
    """What is at a store URL.

    kind: absent (nothing), empty (an empty folder/prefix), file (a file or object at the URL
    itself, or a local path under a file), foreign (anything else that is not certseg's),
    certseg (a certseg store: a root zarr.json carrying config_id and layout_version, or
    nothing but certseg lock objects).
    entries: root names that are not lock objects (for messages). attrs: the root zarr.json's
    attributes, when there is one. locks: lock objects by generation, ascending.
    """

    kind: StoreKind
    config_id: str | None = None
    complete: bool = False
    attrs: dict[str, Any] | None = None
    entries: tuple[str, ...] = ()
    locks: tuple[LockInfo, ...] = ()
    reason: str = ""

    @property
    def top_lock(self) -> LockInfo | None:
        """The current lock: the highest generation, or None."""
        return self.locks[-1] if self.locks else None


# --------------------------------------------------------------------------- reading the state


def read_store_state(location: StoreLocation) -> StoreState:
    """What is at the location now (one listing and a few small reads; not a snapshot)."""
    kind = location.kind()
    if kind == "absent":
        return StoreState("absent")
    if kind == "file":
        return StoreState("file", reason="is a file, not a folder")
    if kind == "under_file":
        return StoreState("file", reason="lies under a file (a parent of the path is a file)")
    names = location.entries()
    lock_names = [n for n in names if is_lock_name(n)]
    entries = tuple(n for n in names if not is_lock_name(n))
    locks = []
    for name in lock_names:
        match = _LOCK_NAME.match(name)
        if match is None or match.group(2):  # a lock's temp file
            continue
        raw = location.read(name)
        if raw is not None:
            locks.append(LockInfo.parse(int(match.group(1)), raw))
    locks.sort(key=lambda lock: lock.gen)
    if not entries and not locks:
        return StoreState("empty", entries=entries)
    if "zarr.json" in entries:
        raw = location.read("zarr.json")
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            return StoreState(
                "foreign",
                entries=entries,
                reason="a folder whose zarr.json is not readable JSON, not a certseg store",
            )
        attrs = meta.get("attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        if meta.get("node_type") != "group":
            return StoreState(
                "foreign", entries=entries, reason="a zarr array, not a certseg store"
            )
        if "config_id" not in attrs or "layout_version" not in attrs:
            return StoreState(
                "foreign",
                attrs=attrs,
                entries=entries,
                reason="a zarr group that is not a certseg store (no config_id attribute)",
            )
        return StoreState(
            "certseg",
            config_id=str(attrs["config_id"]),
            complete=bool(attrs.get("template_complete")),
            attrs=attrs,
            entries=entries,
            locks=tuple(locks),
        )
    if locks and all(_ZARR_TEMP.match(name) for name in entries):
        # a creation under way, or killed before it wrote zarr.json (the first object a creator
        # writes, and the last one `clear` removes): the lock names the config. zarr writes each
        # object through a temp file `<stem>.<32 hex>.partial` renamed into place, so a waiter
        # listing the folder while the lock holder writes zarr.json can see that temp file.
        config_id = next((lock.config_id for lock in reversed(locks) if lock.config_id), None)
        return StoreState("certseg", config_id=config_id, locks=tuple(locks))
    return StoreState(
        "foreign",
        entries=entries,
        reason="a non-empty folder that is not a certseg store",
    )


def describe_entries(entries: tuple[str, ...], limit: int = 5) -> str:
    """'a, b, c' or 'a, b, c, d, e and 7 more'."""
    shown = ", ".join(repr(e) for e in entries[:limit])
    extra = len(entries) - limit
    return f"{shown} and {extra} more" if extra > 0 else shown
