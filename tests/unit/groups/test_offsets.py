"""The offset store: durable commits, replay after a restart, snapshots that bound the replay."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tidelog.server.groups import OFFSETS_DIR, OffsetStore, OffsetValue
from tidelog.server.groups.offsets import SNAPSHOT_FILE
from tidelog.server.log import TopicPartition as TP
from tidelog.wire.errors import StorageError

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def opened(path: Path, **kwargs: int) -> OffsetStore:
    store = OffsetStore(path, **kwargs)
    store.open()
    return store


def test_commits_survive_a_restart_without_a_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path)
        await store.commit("g", {TP("t", 0): OffsetValue(5, "m"), TP("t", 1): OffsetValue(7)})
        await store.commit("g", {TP("t", 0): OffsetValue(9)})
        await store.commit("h", {TP("u", 0): OffsetValue(1)})
        # Not closed: as after a crash (the commits were fsynced before returning).
        store._require()[0].abandon()

    run(main())
    store = opened(tmp_path)
    assert not store._require()[0].load_report.clean  # recovered after the "crash"
    assert store.replayed == 3 + 1  # three batches, four records
    committed = store.committed("g")
    assert {tp: v.offset for tp, v in committed.items()} == {TP("t", 0): 9, TP("t", 1): 7}
    assert committed[TP("t", 1)].metadata == ""
    assert committed[TP("t", 1)].commit_timestamp > 0
    assert sorted(store.groups()) == ["g", "h"]
    run(store.close())


def test_a_clean_close_snapshots_so_the_next_start_replays_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path)
        for i in range(20):
            await store.commit("g", {TP("t", i % 3): OffsetValue(i)})
        await store.close()

    run(main())
    store = opened(tmp_path)
    assert store.replayed == 0
    assert store._require()[0].load_report.clean  # no recovery scan either
    assert {tp.partition: v.offset for tp, v in store.committed("g").items()} == {
        0: 18,
        1: 19,
        2: 17,
    }
    run(store.close())


def test_snapshots_bound_the_replay_and_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path, snapshot_records=10)
        for i in range(25):
            await store.commit("g", {TP("t", 0): OffsetValue(i)})
            if store.snapshot_due():
                await store.snapshot()
        assert store.records_since_snapshot == 5
        log = store._require()[0]
        assert log.log_start_offset == 20  # the segments the snapshot covers are gone
        log.abandon()  # crash

    run(main())
    store = opened(tmp_path, snapshot_records=10)
    assert store.replayed == 5
    assert store.get("g", TP("t", 0)).offset == 24  # type: ignore[union-attr]
    run(store.close())


def test_deleting_a_group_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path, snapshot_records=2)
        await store.commit("g", {TP("t", 0): OffsetValue(1), TP("t", 1): OffsetValue(2)})
        await store.commit("keep", {TP("t", 0): OffsetValue(3)})
        await store.snapshot()
        await store.delete("g")
        assert store.groups() == ["keep"]
        store._require()[0].abandon()

    run(main())
    store = opened(tmp_path)
    assert store.groups() == ["keep"]
    assert store.committed("g") == {}
    run(store.close())


def test_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path)
        await store.commit("g", {TP("t", 0): OffsetValue(1)})
        await store.close()

    run(main())
    path = tmp_path / OFFSETS_DIR / SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged"):
        opened(tmp_path)


def test_a_log_that_starts_after_the_snapshot_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path, snapshot_records=1)
        await store.commit("g", {TP("t", 0): OffsetValue(1)})
        await store.snapshot()
        await store.commit("g", {TP("t", 0): OffsetValue(2)})
        await store.snapshot()
        log = store._require()[0]
        log.abandon()

    run(main())
    # Without the snapshot, what the log dropped (it covered) is missing: refuse to start.
    os.remove(tmp_path / OFFSETS_DIR / SNAPSHOT_FILE)
    with pytest.raises(StorageError, match="lost"):
        opened(tmp_path)


def test_stray_temporary_files_are_removed(tmp_path: Path) -> None:
    store = opened(tmp_path)
    run(store.close())
    stray = tmp_path / OFFSETS_DIR / "snapshot.abc.tmp"
    stray.write_bytes(b"half")
    store = opened(tmp_path)
    assert not stray.exists()
    run(store.close())
