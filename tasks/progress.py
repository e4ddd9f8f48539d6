"""Where sampling progress goes: a sink set around a flow call in this process, never a global.

The CLI draws a progress bar: it wraps the flow call in `reporting_progress(sink)`. The sink lives
in a context variable, which Prefect copies into the flow and into every task it runs in this
process (the thread pool task runner), so concurrent flow runs in other contexts never see it and
nothing outlives the `with` block. Tasks that run elsewhere (Dask workers) report to no sink.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class ProgressSink(Protocol):
    """Receives a run's sampling progress, in samples (one sample: one noisy draw of an image)."""

    def start(self, total: int) -> None:
        """The number of samples the whole run draws (known once the store is prepared)."""

    def advance(self, samples: int, resumed: bool) -> None:
        """A block of `samples` finished: drawn now (resumed False) or found done (True)."""


_SINK: ContextVar[ProgressSink | None] = ContextVar("certseg_progress_sink", default=None)


@contextmanager
def reporting_progress(sink: ProgressSink) -> Iterator[None]:
    """Send the progress of the flows called inside this block (in this process) to `sink`."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def progress_sink() -> ProgressSink | None:
    """The sink of the current context, if any."""
    return _SINK.get()
