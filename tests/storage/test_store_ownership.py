"""Store ownership and the creation lock (issue 13, items 1 and 3).

certseg writes only where it can prove the URL is its own (nothing there, an empty folder, a
certseg store of the same config_id) and refuses anything else with nothing touched; creators
racing for one store end with one complete store, created once; a lock left by a killed creator
is recovered.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from certseg.storage import SampleStore, StoreError, StoreMismatchError
from tests.storage.store_race import (
    digest_folder,
    race_creator,
    race_targets,
    race_template,
    stalled_creator,
)

LOCK = "certseg-lock.{}.json"


def _project(root: Path) -> Path:
    """A user's project folder: a config, a dataset with nested files, a binary file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text("name: mine\n")
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "images" / "0001.png").write_bytes(bytes(range(256)) * 3)
    (root / "data" / "labels.csv").write_text("id,label\n1,cat\n")
    (root / "notes").mkdir()
    return root


def _assert_complete(url: str) -> SampleStore:
    """The store opens, holds every array of the template and the exact targets."""
    template = race_template()
    store = SampleStore.open(url)
    arrays: set[str] = set()

    def walk(group: Any, prefix: str = "") -> None:
        for name, member in group.members():
            if hasattr(member, "shape"):
                arrays.add(f"{prefix}{name}")
            else:
                walk(member, f"{prefix}{name}/")

    walk(store.group)
    assert arrays == {spec.path for spec in template.array_specs()}
    for index, target in enumerate(race_targets(template)):
        np.testing.assert_array_equal(store.read_target(index), target)
    return store


def _locks(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("certseg-lock."))


# --------------------------------------------------------------------------- ownership


def test_non_certseg_folder_is_refused_and_left_intact(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    before = digest_folder(project)
    template = race_template()
    with pytest.raises(StoreError, match="not a certseg store") as info:
        SampleStore.create(str(project), template, race_targets(template))
    message = str(info.value)
    assert str(project) in message and "'run.yaml'" in message and "nothing was changed" in message
    assert digest_folder(project) == before


def test_relative_dot_folder_is_refused_with_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "project")
    before = digest_folder(project)
    monkeypatch.chdir(project)
    template = race_template()
    with pytest.raises(StoreError) as info:
        SampleStore.create(".", template, race_targets(template))
    assert str(project) in str(info.value)
    assert digest_folder(project) == before


def test_a_file_is_refused_and_left_intact(tmp_path: Path) -> None:
    path = tmp_path / "store.zarr"
    path.write_bytes(b"not a store \x00\x01")
    template = race_template()
    with pytest.raises(StoreError, match="is a file") as info:
        SampleStore.create(str(path), template, race_targets(template))
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"not a store \x00\x01"
    with pytest.raises(StoreError, match="lies under a file"):
        SampleStore.create(str(path / "inner.zarr"), template, race_targets(template))
    assert path.read_bytes() == b"not a store \x00\x01"


def test_an_empty_folder_becomes_the_store(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    template = race_template()
    store = SampleStore.create(str(folder), template, race_targets(template))
    assert store.created
    _assert_complete(str(folder))
    assert _locks(folder) == []


def test_a_foreign_zarr_group_is_refused_and_left_intact(tmp_path: Path) -> None:
    import zarr

    url = tmp_path / "theirs.zarr"
    group = zarr.create_group(str(url), attributes={"owner": "someone else"})
    group.create_array("x", shape=(4,), dtype="int32")[...] = np.arange(4)
    before = digest_folder(url)
    template = race_template()
    with pytest.raises(StoreError, match="not a certseg store") as info:
        SampleStore.create(str(url), template, race_targets(template))
    assert str(url) in str(info.value)
    assert digest_folder(url) == before


def test_an_unfinished_store_of_another_config_is_not_recreated(tmp_path: Path) -> None:
    import zarr

    url = tmp_path / "s.zarr"
    other = race_template("f" * 64)
    zarr.create_group(str(url), attributes=other.root_attrs())  # killed before template_complete
    before = digest_folder(url)
    template = race_template()
    with pytest.raises(StoreMismatchError, match="f" * 64):
        SampleStore.create(str(url), template, race_targets(template))
    assert digest_folder(url) == before


def test_user_files_beside_a_stray_lock_are_not_certseg_s(tmp_path: Path) -> None:
    """A lock object proves ownership only of an otherwise empty folder."""
    project = _project(tmp_path / "project")
    (project / LOCK.format(1)).write_text(json.dumps({"config_id": race_template().config_id}))
    before = digest_folder(project)
    template = race_template()
    with pytest.raises(StoreError, match="non-empty folder"):
        SampleStore.create(str(project), template, race_targets(template))
    assert digest_folder(project) == before


def test_memory_prefix_with_foreign_objects_is_refused() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/certseg-own/theirs.zarr/readme.txt", b"keep me")
    fs.pipe_file("/certseg-own/theirs.zarr/sub/data.bin", b"\x00\x01")
    template = race_template()
    with pytest.raises(StoreError, match="not a certseg store") as info:
        SampleStore.create("memory://certseg-own/theirs.zarr", template, race_targets(template))
    assert "memory://certseg-own/theirs.zarr" in str(info.value)
    assert sorted(fs.find("/certseg-own/theirs.zarr")) == [
        "/certseg-own/theirs.zarr/readme.txt",
        "/certseg-own/theirs.zarr/sub/data.bin",
    ]
    assert fs.cat_file("/certseg-own/theirs.zarr/readme.txt") == b"keep me"
    # an object AT the URL itself
    fs.pipe_file("/certseg-own/file.zarr", b"an object")
    with pytest.raises(StoreError, match="is a file"):
        SampleStore.create("memory://certseg-own/file.zarr", template, race_targets(template))
    assert fs.cat_file("/certseg-own/file.zarr") == b"an object"


def test_memory_store_created_once_then_reopened() -> None:
    template = race_template()
    url = "memory://certseg-own/fresh.zarr"
    assert SampleStore.create(url, template, race_targets(template)).created
    assert not SampleStore.create(url, template, iter(())).created
    _assert_complete(url)


def test_memory_store_unfinished_then_recreated() -> None:
    import fsspec

    template = race_template()
    url = "memory://certseg-own/unfinished.zarr"
    with pytest.raises(ValueError, match="targets: 2 given"):
        SampleStore.create(url, template, race_targets(template)[:2])
    fs = fsspec.filesystem("memory")
    assert fs.exists("/certseg-own/unfinished.zarr/targets/zarr.json")
    assert json.loads(fs.cat_file("/certseg-own/unfinished.zarr/" + LOCK.format(1)))["released"]
    assert SampleStore.create(url, template, race_targets(template)).created
    _assert_complete(url)
    assert not [p for p in fs.find("/certseg-own/unfinished.zarr") if "certseg-lock" in p]


def test_threads_racing_on_a_memory_store_create_it_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    template = race_template()
    url = "memory://certseg-own/threads.zarr"
    with ThreadPoolExecutor(4) as pool:
        stores = list(
            pool.map(lambda _: SampleStore.create(url, template, race_targets(template)), range(4))
        )
    assert sorted(s.created for s in stores) == [False, False, False, True]
    _assert_complete(url)


# --------------------------------------------------------------------------- the lock


def _fast() -> Any:
    from certseg.storage import LockPolicy

    return LockPolicy(stale_after_s=0.5, max_wait_s=20.0, poll_s=0.01, max_poll_s=0.05)


def _host_key() -> str:
    from certseg.storage.ownership import host_key

    return host_key()


def _write_lock(folder: Path, gen: int, **fields: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"config_id": race_template().config_id, "token": "t", "beat": 0, **fields}
    (folder / LOCK.format(gen)).write_text(json.dumps(payload))


def test_lock_of_a_dead_local_pid_is_taken_over_at_once(tmp_path: Path) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    folder = tmp_path / "s.zarr"
    _write_lock(folder, 1, host=_host_key(), pid=proc.pid)
    start = time.perf_counter()
    template = race_template()
    store = SampleStore.create(str(folder), template, race_targets(template), lock_policy=_fast())
    assert store.created and time.perf_counter() - start < 0.5
    _assert_complete(str(folder))
    assert _locks(folder) == []


def test_lock_of_another_host_is_taken_over_after_no_progress(tmp_path: Path) -> None:
    folder = tmp_path / "s.zarr"
    _write_lock(folder, 3, host="elsewhere|boot|pid:[1]", pid=1)
    start = time.perf_counter()
    template = race_template()
    store = SampleStore.create(str(folder), template, race_targets(template), lock_policy=_fast())
    assert store.created and time.perf_counter() - start >= 0.5
    _assert_complete(str(folder))
    assert _locks(folder) == []


def test_a_live_local_holder_is_never_taken_over(tmp_path: Path) -> None:
    from certseg.storage import StoreLockedError

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folder = tmp_path / "s.zarr"
        _write_lock(folder, 1, host=_host_key(), pid=holder.pid)
        before = digest_folder(folder)
        template = race_template()
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}.*alive"):
            SampleStore.create(str(folder), template, race_targets(template), lock_policy=_fast())
        assert digest_folder(folder) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_this_process_is_a_leftover(tmp_path: Path) -> None:
    folder = tmp_path / "s.zarr"
    _write_lock(folder, 1, host=_host_key(), pid=os.getpid())
    template = race_template()
    store = SampleStore.create(str(folder), template, race_targets(template), lock_policy=_fast())
    assert store.created
    assert _locks(folder) == []


def test_waiting_is_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "s.zarr"
    _write_lock(folder, 1, host="elsewhere|boot|pid:[1]", pid=1)
    from certseg.storage import LockPolicy, StoreLockedError

    policy = LockPolicy(stale_after_s=60.0, max_wait_s=0.3, poll_s=0.01, max_poll_s=0.05)
    template = race_template()
    with pytest.raises(StoreLockedError, match="gave up after waiting"):
        SampleStore.create(str(folder), template, race_targets(template), lock_policy=policy)


def test_a_failed_creation_releases_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "s.zarr"
    template = race_template()
    with pytest.raises(ValueError, match="targets: 1 given"):
        SampleStore.create(str(folder), template, race_targets(template)[:1])
    released = json.loads((folder / LOCK.format(1)).read_text())
    assert released["released"] is True
    # the next creator takes generation 2 at once, re-creates, and removes every lock
    store = SampleStore.create(str(folder), template, race_targets(template), lock_policy=_fast())
    assert store.created
    _assert_complete(str(folder))
    assert _locks(folder) == []


def test_creator_killed_mid_creation_is_recovered(tmp_path: Path) -> None:
    """kill -9 of a creator holding the lock: the next run re-creates the store at once (the
    killed process is not even reaped yet: a zombie counts as dead)."""
    folder = tmp_path / "s.zarr"
    signal = tmp_path / "stalled"
    proc = multiprocessing.get_context("spawn").Process(
        target=stalled_creator, args=(str(folder), str(signal))
    )
    proc.start()
    try:
        deadline = time.monotonic() + 120
        while not signal.exists():
            assert proc.is_alive() and time.monotonic() < deadline, "creator never stalled"
            time.sleep(0.05)
        proc.kill()  # SIGKILL while it holds the lock, half-way through the targets
        time.sleep(0.2)
        assert _locks(folder) == [LOCK.format(1)]
        with pytest.raises(StoreError, match="not completely created"):
            SampleStore.open(str(folder))
        template = race_template()
        start = time.perf_counter()
        store = SampleStore.create(
            str(folder), template, race_targets(template), lock_policy=_fast()
        )
        assert store.created and time.perf_counter() - start < 10
    finally:
        proc.join(timeout=30)
    _assert_complete(str(folder))
    assert _locks(folder) == []


def _race(tmp_path: Path, rounds: int, racers: int) -> dict[str, list[str]]:
    """`racers` spawned processes create the same store in each of `rounds` fresh folders,
    released together by a barrier (odd rounds: each then waits a random 0-40 ms, the spread the
    issue saw); every store checked complete. Returns url → outcomes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    results = context.Queue()
    urls = [str(tmp_path / f"round-{r}.zarr") for r in range(rounds)]
    procs = [
        context.Process(target=race_creator, args=(urls, barrier, results, 0.04))
        for _ in range(racers)
    ]
    for proc in procs:
        proc.start()
    outcomes: dict[str, list[str]] = {url: [] for url in urls}
    seconds = []
    try:
        for _ in range(rounds * racers):
            url, _pid, outcome, took = results.get(timeout=180)
            outcomes[url].append(outcome)
            seconds.append(took)
    except queue.Empty:
        pytest.fail(f"racers stopped answering; got {outcomes}")
    finally:
        for proc in procs:
            proc.join(timeout=60)
    first = digest_folder(Path(urls[0]))
    for url, got in outcomes.items():
        assert sorted(got) == ["created"] + ["opened"] * (racers - 1), (url, got)
        _assert_complete(url)
        assert digest_folder(Path(url)) == first  # byte-identical stores, no lock left
    return outcomes


def test_racing_creators_end_with_one_complete_store(tmp_path: Path) -> None:
    """10 rounds × 3 processes released within milliseconds of each other."""
    _race(tmp_path, rounds=10, racers=3)


@pytest.mark.slow
def test_racing_creators_many_rounds(tmp_path: Path) -> None:
    """60 rounds × 4 processes."""
    _race(tmp_path, rounds=60, racers=4)


def test_a_zarr_temp_file_during_creation_is_not_foreign(tmp_path: Path) -> None:
    """A racer listing the folder while the lock holder writes zarr.json sees zarr's atomic-write
    temp file (`zarr.<32 hex>.partial`): with a creation lock present that is a creation under
    way, not a foreign folder (the flake this fixes: 1 race in ~20 under load). Without a lock
    the same file is not certseg's."""
    import json as json_module

    from certseg.storage.location import store_location
    from certseg.storage.ownership import lock_name, read_store_state

    folder = tmp_path / "s.zarr"
    folder.mkdir()
    (folder / f"zarr.{'ab' * 16}.partial").write_bytes(b"{")
    assert read_store_state(store_location(str(folder))).kind == "foreign"
    lock = {"config_id": "c" * 64, "pid": 1, "host": "h", "token": "t"}
    (folder / lock_name(1)).write_text(json_module.dumps(lock))
    state = read_store_state(store_location(str(folder)))
    assert (state.kind, state.config_id) == ("certseg", "c" * 64)
    (folder / "data.bin").write_bytes(b"x")  # anything else still makes it foreign
    assert read_store_state(store_location(str(folder))).kind == "foreign"
