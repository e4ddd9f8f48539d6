"""What is at a store URL, whether certseg may write there, and the exclusive creation lock.

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
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from certseg.redact import redact_url

LOCK_PREFIX = "certseg-lock."
_LOCK_NAME = re.compile(r"^certseg-lock\.(\d+)\.json(\.tmp)?$")

StoreKind = Literal["absent", "empty", "file", "foreign", "certseg"]
LocationKind = Literal["absent", "file", "under_file", "dir"]
"""What is at a store URL: nothing, a file (or object), a path under a file, or a folder."""


def lock_name(gen: int) -> str:
    """The root object name of lock generation `gen` (>= 1)."""
    return f"{LOCK_PREFIX}{gen}.json"


def is_lock_name(name: str) -> bool:
    """Whether a root entry is one of certseg's creation-lock objects (or a lock's temp file)."""
    return _LOCK_NAME.match(name) is not None


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


def _pid_start(pid: int) -> str | None:
    """The start time of a process (Linux /proc, clock ticks since boot), None where unknown."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = line[line.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool | None:
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


# --------------------------------------------------------------------------- backends


class StoreLocation:
    """The store URL as a folder of objects: list, read, exclusive create, replace, delete."""

    url: str

    @property
    def where(self) -> str:
        """The location as messages name it: the URL quoted, credentials redacted (a local path
        also made absolute)."""
        return repr(redact_url(self.url))

    def kind(self) -> LocationKind:
        """absent, dir, file (a file or object at the URL), under_file (a parent is a file)."""
        raise NotImplementedError

    def entries(self) -> list[str]:
        """Names directly under the root (files and folders / objects and prefixes)."""
        raise NotImplementedError

    def read(self, name: str) -> bytes | None:
        """The bytes of root object `name`, None when it does not exist."""
        raise NotImplementedError

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create root object `name` holding `data` unless it exists; False when it did."""
        raise NotImplementedError

    def replace(self, name: str, data: bytes) -> None:
        """Overwrite root object `name` (readers see the old or the new bytes)."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove root object `name`; a missing one is fine."""
        raise NotImplementedError

    def clear(self, keep: Callable[[str], bool]) -> None:
        """Remove everything under the root except the root entries `keep` accepts; the root
        zarr.json (what identifies a certseg store) goes last."""
        for name in sorted(self.entries(), key=lambda n: (n == "zarr.json", n)):
            if not keep(name):
                self._remove(name)

    def _remove(self, name: str) -> None:
        """Remove root entry `name` and everything under it; a missing one is fine."""
        raise NotImplementedError


class LocalLocation(StoreLocation):
    """A local folder; exclusive create is O_CREAT|O_EXCL (atomic on local POSIX file systems
    and on NFSv3+)."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = Path(path)

    @property
    def where(self) -> str:
        absolute = str(self.path.absolute())
        return repr(self.url) if absolute == self.url else f"{self.url!r} ({absolute})"

    def kind(self) -> LocationKind:
        # one stat call each: another creator may make the folder meanwhile
        try:
            mode = os.stat(self.path).st_mode
        except NotADirectoryError:
            return "under_file"
        except FileNotFoundError:
            try:
                mode = os.lstat(self.path).st_mode  # a dangling symlink is not ours either
            except FileNotFoundError:
                return "absent"
        return "dir" if stat.S_ISDIR(mode) else "file"

    def entries(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def create_exclusive(self, name: str, data: bytes) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def replace(self, name: str, data: bytes) -> None:
        temp = self.path / f"{name}.tmp"
        temp.write_bytes(data)
        os.replace(temp, self.path / name)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    def _remove(self, name: str) -> None:
        entry = self.path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


class FsspecLocation(StoreLocation):
    """An fsspec URL (s3://, memory://, ...); exclusive create is `pipe_file(mode="create")`:
    a conditional PUT (If-None-Match: *) on s3fs; an exists-check-then-write elsewhere."""

    def __init__(self, url: str, storage_options: Mapping[str, Any]) -> None:
        from fsspec.core import url_to_fs

        self.url = url
        self.fs, self.root = url_to_fs(url, **dict(storage_options))
        self.root = self.root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _refresh(self) -> None:
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache()

    def kind(self) -> LocationKind:
        self._refresh()
        if self.fs.isfile(self.root):
            return "file"
        try:
            self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return "absent"
        return "dir"

    def entries(self) -> list[str]:
        self._refresh()
        try:
            listed = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        # a folder-marker object ("prefix/") may be listed as the root itself
        paths = {str(p).rstrip("/") for p in listed} - {self.root, ""}
        return sorted(p.rsplit("/", 1)[-1] for p in paths)

    def read(self, name: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(self._path(name))
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data

    def create_exclusive(self, name: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(name), data, mode="create")
        except FileExistsError:
            return False
        self._refresh()
        return True

    def replace(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(name), data)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(name), recursive=True)
        self._refresh()


def store_location(url: str, storage_options: Mapping[str, Any] | None = None) -> StoreLocation:
    """The location behind a store URL: a local path (or file://) or any fsspec URL."""
    if "://" not in url or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        return LocalLocation(url, path)
    return FsspecLocation(url, storage_options or {})


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
    if locks and not entries:
        # a creation under way, or killed before it wrote zarr.json (the first object a creator
        # writes, and the last one `clear` removes): the lock names the config
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


# --------------------------------------------------------------------------- the lock


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
            alive = _pid_alive(lock.pid, lock.pid_start)
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
                "pid_start": _pid_start(pid),
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
                match = _LOCK_NAME.match(name)
                if match is not None and int(match.group(1)) < self.gen:
                    self.location.delete(name)

    def finish(self) -> None:
        """Remove every lock object once the store is complete (a complete store needs none)."""
        for name in self.location.entries():
            if is_lock_name(name):
                self.location.delete(name)
