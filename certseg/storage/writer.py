"""A bounded background writer: store writes (compression included) overlap the next forwards.

The sampling loop hands each finished sample block to `BlockWriter.submit` as one job (write the
block's chunks, then flag it done) and goes on drawing the next block while a single writer
thread runs the jobs in submission order. Guarantees:

- A job runs entirely in the writer thread, in order, so a block's flag is set only after its
  own writes returned (the job writes, then flags), exactly as in a synchronous loop; the stored
  bytes are those of the synchronous loop.
- Bounded: at most `depth` submitted jobs are unfinished (queued or being written); `submit`
  blocks until one finishes. With the default depth 1 the block just drawn waits for the
  previous block's write to land, so a kill loses at most one finished block (the one being
  written) besides the one being drawn, and memory holds at most one finished block.
- Errors surface in the caller: the first exception a job raises is re-raised, as the same
  exception object (its type decides the flows' retries), by the next `submit` or by `close`;
  no later job runs after it (their blocks stay unflagged). `depth=0` runs each job inline in
  `submit` (the synchronous loop, for comparisons).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final

Job = Callable[[], None]

_STOP: Final = object()


class BlockWriter:
    """Run write jobs in order on one background thread with a queue of at most `depth` jobs.

    Use as a context manager: leaving the block waits until every submitted job has run (or was
    skipped after an error) and re-raises the writer's error, unless the block itself raised, in
    which case the block's exception propagates (the writes submitted before it still land).
    """

    def __init__(self, depth: int = 1, *, name: str = "certseg-block-writer") -> None:
        if isinstance(depth, bool) or int(depth) != depth or depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
        self.depth = int(depth)
        self._error: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue[object] = queue.Queue()
        self._slots = threading.Semaphore(max(1, self.depth))  # unfinished jobs allowed
        self._thread: threading.Thread | None = None
        if self.depth > 0:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                if self._error is None:
                    job()  # type: ignore[operator]
            except BaseException as error:  # surfaced in the caller's thread
                self._error = error
            finally:
                self._slots.release()

    def check(self) -> None:
        """Re-raise the first error a job raised (in the caller's thread)."""
        if self._error is not None:
            raise self._error

    def submit(self, job: Job) -> None:
        """Queue `job`, after waiting until fewer than `depth` jobs are unfinished; re-raises an
        earlier job's error first (also one that ended while waiting)."""
        if self._closed:
            raise RuntimeError("BlockWriter.submit after close")
        self.check()
        if self._thread is None:
            job()
            return
        self._slots.acquire()
        if self._error is not None:
            self._slots.release()
            self.check()
        self._queue.put(job)

    def close(self) -> None:
        """Wait for every submitted job, stop the thread, and re-raise a job's error."""
        if not self._closed:
            self._closed = True
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join()
        self.check()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self.close()
            return
        # the block failed: let the submitted writes land, and report the block's error
        with contextlib.suppress(Exception):
            self.close()
