"""The offset store: durable commits, replay after a restart, snapshots that bound the replay."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tidelog.server.groups import OFFSETS_DIR, OffsetStore, OffsetValue
from tidelog.server.groups.offsets import PREVIOUS_FILE, SNAPSHOT_FILE
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
        # The segments the previous snapshot covers are gone (the newest one's are kept, so
        # that a damaged newest snapshot falls back to the previous one and this log).
        assert log.log_start_offset == 10
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


def _three_generations(tmp_path: Path) -> dict[TP, int]:
    """Commits across three snapshots (the last at a clean close); what is committed."""

    async def main() -> None:
        store = opened(tmp_path, snapshot_records=1)
        for i in range(3):
            await store.commit("g", {TP("t", i): OffsetValue(10 + i)})
            await store.commit("g", {TP("t", 0): OffsetValue(100 + i)})
            if i < 2:
                await store.snapshot()
        await store.close()

    run(main())
    return {TP("t", 0): 102, TP("t", 1): 11, TP("t", 2): 12}


def _offsets(store: OffsetStore) -> dict[TP, int]:
    return {tp: v.offset for tp, v in store.committed("g").items()}


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_snapshot_falls_back_to_the_previous_one_and_the_log(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected = _three_generations(tmp_path)
    path = tmp_path / OFFSETS_DIR / SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:5]))
    else:
        path.unlink()

    store = opened(tmp_path)

    assert _offsets(store) == expected
    assert store.replayed > 0  # the log from the previous snapshot on
    if damage != "delete":
        assert (tmp_path / OFFSETS_DIR / (SNAPSHOT_FILE + ".damaged")).exists()
        assert any("is damaged" in r.getMessage() for r in caplog.records)
    run(store.close())
    assert _offsets(opened(tmp_path)) == expected  # and the next start is whole again


def test_a_damaged_only_snapshot_replays_the_whole_log(tmp_path: Path) -> None:
    async def main() -> None:
        store = opened(tmp_path)
        await store.commit("g", {TP("t", 0): OffsetValue(1)})
        await store.commit("g", {TP("t", 1): OffsetValue(2)})
        await store.close()

    run(main())
    path = tmp_path / OFFSETS_DIR / SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    store = opened(tmp_path)
    assert _offsets(store) == {TP("t", 0): 1, TP("t", 1): 2}
    assert store.replayed == 2
    run(store.close())


def test_without_a_usable_snapshot_a_pruned_log_is_refused_naming_the_files_and_the_fix(
    tmp_path: Path,
) -> None:
    _three_generations(tmp_path)
    for name in (SNAPSHOT_FILE, PREVIOUS_FILE):
        (tmp_path / OFFSETS_DIR / name).unlink()
    with pytest.raises(StorageError) as caught:
        opened(tmp_path)
    message = caught.value.message
    assert SNAPSHOT_FILE in message and PREVIOUS_FILE in message
    assert "Restore" in message and "remove" in message


def test_stray_temporary_files_are_removed(tmp_path: Path) -> None:
    store = opened(tmp_path)
    run(store.close())
    stray = tmp_path / OFFSETS_DIR / "snapshot.abc.tmp"
    stray.write_bytes(b"half")
    store = opened(tmp_path)
    assert not stray.exists()
    run(store.close())
