"""certseg.storage.writer.BlockWriter: order, bounded queue, errors surfaced in the caller."""

from __future__ import annotations

import threading

import pytest

from certseg.storage.writer import BlockWriter


def test_jobs_run_in_order_on_another_thread() -> None:
    ran: list[tuple[int, str]] = []
    with BlockWriter(depth=2) as writer:
        for i in range(20):
            writer.submit(lambda i=i: ran.append((i, threading.current_thread().name)))
    assert [i for i, _ in ran] == list(range(20))
    assert {name for _, name in ran} == {"certseg-block-writer"}


def test_depth_zero_runs_inline() -> None:
    ran: list[str] = []
    writer = BlockWriter(depth=0)
    writer.submit(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]
    writer.close()


@pytest.mark.parametrize("depth", [1, 2])
def test_the_queue_is_bounded(depth: int) -> None:
    """At most `depth` jobs unfinished: with depth 1 the next submit waits for the running job
    (one finished block at risk); with depth 2 one more may wait."""
    release = threading.Event()
    started = threading.Event()
    submitted: list[int] = []
    writer = BlockWriter(depth=depth)

    def slow() -> None:
        started.set()
        release.wait(10)

    def producer() -> None:
        for i in range(3):
            writer.submit(slow if i == 0 else (lambda: None))
            submitted.append(i)

    thread = threading.Thread(target=producer)
    thread.start()
    assert started.wait(10)
    thread.join(0.3)
    assert submitted == list(range(depth))  # job 0 runs; submit waits at `depth` unfinished
    release.set()
    thread.join(10)
    assert submitted == [0, 1, 2]
    writer.close()


def test_an_error_surfaces_in_the_caller_and_stops_later_jobs() -> None:
    ran: list[int] = []
    failure = OSError("disk full")

    def fail() -> None:
        raise failure

    writer = BlockWriter(depth=1)
    writer.submit(lambda: ran.append(0))
    writer.submit(fail)
    with pytest.raises(OSError) as caught:
        for i in range(1, 100):  # a later submit re-raises it
            writer.submit(lambda i=i: ran.append(i))
            writer._thread.join(0.01)  # type: ignore[union-attr]
    assert caught.value is failure  # the same object: its type decides retries
    with pytest.raises(OSError):
        writer.close()
    assert ran == [0]  # no job after the failed one ran (their blocks stay unflagged)


def test_close_raises_the_error_and_a_failing_body_keeps_its_own() -> None:
    def fail() -> None:
        raise ValueError("bad block")

    with pytest.raises(ValueError, match="bad block"), BlockWriter(depth=1) as writer:
        writer.submit(fail)
    landed: list[int] = []
    with pytest.raises(KeyError), BlockWriter(depth=1) as writer:
        writer.submit(lambda: landed.append(1))
        raise KeyError("sampler failed")
    assert landed == [1]  # the write submitted before the failure still landed
    with pytest.raises(ValueError, match="depth"):
        BlockWriter(depth=-1)
