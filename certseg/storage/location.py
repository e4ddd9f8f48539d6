"""Store URLs as folders of objects: list, read, exclusive create, replace, delete — locally
(a path or file://) or through fsspec (s3://, memory://, ...). Used by the ownership check and
the creation lock (docs/storage.md, "Ownership and the creation lock")."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from certseg.redact import redact_url

LocationKind = Literal["absent", "file", "under_file", "dir"]
"""What is at a store URL: nothing, a file (or object), a path under a file, or a folder."""


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
