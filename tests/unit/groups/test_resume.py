"""Group state in ``__consumer_offsets``: a new coordinator over the same data resumes every
group with its epochs and assignments; loading; the migration of the old offsets store."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.data.make_legacy_offsets import EXPECTED
from tidelog.server.groups import OFFSETS_TOPIC, GroupCoordinator, GroupSettings
from tidelog.server.groups.legacy import LEGACY_DIR, MIGRATED_PREFIX
from tidelog.server.groups.records import partition_for
from tidelog.server.log import LogManager
from tidelog.server.log import TopicPartition as TP
from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode

from .test_coordinator import SESSION_MS, Clock, run

LEGACY = Path(__file__).parents[2] / "data" / "legacy-offsets"


@asynccontextmanager
async def opened(path: Path, clock: Clock, **kwargs: Any) -> AsyncIterator[GroupCoordinator]:
    logs = LogManager(path).open()
    if logs.partition_count("t") is None:
        logs.create_topic("t", 4)
    coord = GroupCoordinator(
        logs, str(path), settings=GroupSettings(heartbeat_interval_ms=10), clock=clock, **kwargs
    )
    await coord.open()
    try:
        yield coord
    finally:
        await coord.stop()
        logs.close()


async def call(coord: GroupCoordinator, request: Any) -> Any:
    return await coord.handle(request)


def join(**kwargs: Any) -> m.JoinGroupRequest:
    return m.JoinGroupRequest("g", ("t",), session_timeout_ms=SESSION_MS, **kwargs)


def parts(response: Any) -> set[int]:
    return {p for g in response.assignment for p in g.partitions}


def test_a_new_coordinator_resumes_groups_with_their_epochs_and_assignments(
    tmp_path: Path,
) -> None:
    clock = Clock()

    async def main() -> None:
        async with opened(tmp_path, clock) as coord:
            a = await call(coord, join())
            b = await call(coord, join())
            told = await call(coord, m.HeartbeatRequest("g", a.member_id, a.member_epoch))
            # a gives up two partitions (still holding them), b waits for them.
            kept = told.assignment
            commit = m.OffsetCommitRequest(
                "g", (m.OffsetCommitPartition("t", 0, 11, "x"),), a.member_id, told.member_epoch
            )
            assert (await call(coord, commit)).partitions[0].error_code == 0
            before = coord.group("g")
            assert before is not None
            state = {
                mid: (mb.epoch, mb.previous_epoch, mb.held, mb.revoking, mb.sent)
                for mid, mb in before.members.items()
            }
            epoch = before.group_epoch
        async with opened(tmp_path, clock) as coord:
            group = coord.group("g")
            assert group is not None and group.group_epoch == epoch
            resumed = {
                mid: (mb.epoch, mb.previous_epoch, mb.held, mb.revoking, mb.sent)
                for mid, mb in group.members.items()
            }
            assert resumed == state
            assert group.target == before.target
            assert coord.offsets.committed("g")[TP("t", 0)].offset == 11
            # a continues at its epoch: it releases what it was told to give up, b gets it.
            again = await call(
                coord, m.HeartbeatRequest("g", a.member_id, told.member_epoch, owned=kept)
            )
            assert again.error_code == 0
            got = await call(coord, m.HeartbeatRequest("g", b.member_id, b.member_epoch))
            assert got.error_code == 0 and len(parts(got)) == 2

    run(main())


def test_a_member_told_nothing_new_before_the_crash_gets_the_stored_assignment(
    tmp_path: Path,
) -> None:
    """The group's record is appended before the answer is sent: if the answer is lost in a
    crash, the member comes back with the previous epoch and is sent the stored assignment,
    never another one under the same epoch."""
    clock = Clock()

    async def main() -> None:
        async with opened(tmp_path, clock) as coord:
            a = await call(coord, join())
            await call(coord, join())  # b: a's next answer takes two partitions away
            lost = await call(coord, m.HeartbeatRequest("g", a.member_id, a.member_epoch))
            assert lost.member_epoch == a.member_epoch + 1
        async with opened(tmp_path, clock) as coord:
            resent = await call(coord, m.HeartbeatRequest("g", a.member_id, a.member_epoch))
            assert resent.member_epoch == lost.member_epoch
            assert resent.assignment == lost.assignment

    run(main())


def test_resumed_members_that_do_not_heartbeat_are_removed_and_the_group_moves_on(
    tmp_path: Path,
) -> None:
    clock = Clock()

    async def main() -> None:
        async with opened(tmp_path, clock) as coord:
            a = await call(coord, join())
            b = await call(coord, join())
            told = await call(coord, m.HeartbeatRequest("g", a.member_id, a.member_epoch))
        async with opened(tmp_path, clock) as coord:
            group = coord.group("g")
            assert group is not None
            epoch = group.group_epoch
            clock.now += SESSION_MS // 2
            alive = await call(coord, m.HeartbeatRequest("g", b.member_id, b.member_epoch))
            assert alive.error_code == 0
            clock.now += SESSION_MS // 2 + 1
            removed = coord.tick()
            assert [r.member_id for _, r in removed] == [a.member_id]
            assert group.group_epoch > epoch
            got = await call(coord, m.HeartbeatRequest("g", b.member_id, alive.member_epoch))
            assert parts(got) == {0, 1, 2, 3}
            gone = await call(coord, m.HeartbeatRequest("g", a.member_id, told.member_epoch))
            assert gone.error_code == ErrorCode.UNKNOWN_MEMBER_ID

    run(main())


def test_a_group_that_empties_is_not_resumed(tmp_path: Path) -> None:
    clock = Clock()

    async def main() -> None:
        async with opened(tmp_path, clock) as coord:
            a = await call(coord, join())
            await call(coord, m.LeaveGroupRequest("g", a.member_id, a.member_epoch))
        async with opened(tmp_path, clock) as coord:
            assert coord.group("g") is None

    run(main())


def test_group_requests_wait_while_their_partition_loads(tmp_path: Path) -> None:
    clock = Clock()

    async def main() -> None:
        async with opened(tmp_path, clock, partitions=4) as coord:
            a = await call(coord, join())
            p = partition_for("g", 4)
            coord.unload_partition(p)
            assert coord.group("g") is None
            beat = m.HeartbeatRequest("g", a.member_id, a.member_epoch)
            assert (await call(coord, beat)).error_code == ErrorCode.NOT_COORDINATOR
            task = coord.load_partition(p)
            assert (await call(coord, beat)).error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            fetch = await call(coord, m.OffsetFetchRequest("g"))
            assert fetch.error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            await task
            assert (await call(coord, beat)).error_code == 0

    run(main())


def test_the_topic_is_created_compacted_with_the_partitions_asked(tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(tmp_path, Clock(), partitions=3, segment_bytes=1 << 20) as coord:
            info = coord._logs.topic(OFFSETS_TOPIC)
            assert info.partitions == 3
            assert info.config.cleanup_policy.compacts
            assert info.config.segment_bytes == 1 << 20
        async with opened(tmp_path, Clock(), partitions=5) as coord:
            assert coord.offsets.partitions == 3  # fixed once created

    run(main())


# --- migration ----------------------------------------------------------------------------


def committed(coord: GroupCoordinator) -> dict[str, dict[tuple[str, int], tuple[int, str]]]:
    return {
        g: {
            (tp.topic, tp.partition): (v.offset, v.metadata)
            for tp, v in coord.offsets.committed(g).items()
        }
        for g in coord.offsets.groups()
    }


def test_the_old_offsets_store_is_migrated_once_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(LEGACY, data)

    async def main() -> None:
        async with opened(data, Clock()) as coord:
            assert committed(coord) == EXPECTED
        assert not (data / LEGACY_DIR).exists()
        (kept,) = [p for p in data.iterdir() if p.name.startswith(MIGRATED_PREFIX)]
        assert (kept / "snapshot").exists()
        async with opened(data, Clock()) as coord:  # nothing left to migrate
            assert committed(coord) == EXPECTED
        assert kept.exists()  # never taken for a partition nor removed

    run(main())


def test_a_migration_cut_before_its_rename_runs_again_without_writing_twice(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(LEGACY, data)

    def records() -> int:
        with LogManager(data) as logs:
            return sum(
                log.log_end_offset for tp, log in logs.logs().items() if tp.topic == OFFSETS_TOPIC
            )

    async def main() -> None:
        async with opened(data, Clock()) as coord:
            assert committed(coord) == EXPECTED
        written = records()
        assert written == sum(len(t) for t in EXPECTED.values())
        # As if the broker died after the writes, before the rename: the old store is back.
        shutil.copytree(LEGACY / LEGACY_DIR, data / LEGACY_DIR)
        async with opened(data, Clock()) as coord:
            assert committed(coord) == EXPECTED
        assert records() == written
        assert not (data / LEGACY_DIR).exists()

    run(main())
