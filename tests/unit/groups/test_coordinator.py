"""The coordinator's asyncio edge over a real LogManager, with the time injected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tidelog.server.groups import GroupCoordinator, GroupSettings
from tidelog.server.log import LogManager
from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode

T = TypeVar("T")
SESSION_MS = 6_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


@asynccontextmanager
async def coordinator(
    tmp_path: Path, clock: Clock, **settings: int
) -> AsyncIterator[tuple[GroupCoordinator, LogManager]]:
    logs = LogManager(tmp_path).open()
    logs.create_topic("t", 4)
    coord = GroupCoordinator(logs, str(tmp_path), settings=GroupSettings(**settings), clock=clock)
    await coord.open()  # no background loop: the test calls tick()
    try:
        yield coord, logs
    finally:
        await coord.stop()
        logs.close()


def join_request(**kwargs: Any) -> m.JoinGroupRequest:
    kwargs.setdefault("session_timeout_ms", SESSION_MS)
    return m.JoinGroupRequest("g", ("t",), **kwargs)


def owned(response: m.HeartbeatResponse | m.JoinGroupResponse) -> tuple[m.TopicPartitions, ...]:
    assert response.assignment is not None
    return response.assignment


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (it must, within a few turns)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)  # one loop turn, not a timed wait
    raise AssertionError("condition never held")


def test_held_heartbeats_are_answered_when_the_assignment_changes(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock()) as (coord, _):
            a = coord.join(join_request())
            b = coord.join(join_request())
            held = asyncio.ensure_future(coord.heartbeat(m.HeartbeatRequest("g", b.member_id, 1)))
            await until(lambda: "g" in coord._events)
            assert not held.done()  # b waits: a still holds everything
            told = await coord.heartbeat(m.HeartbeatRequest("g", a.member_id, 1))
            assert not held.done()  # a was asked to give up two, has not confirmed yet
            kept = owned(told)
            release = asyncio.ensure_future(
                coord.heartbeat(m.HeartbeatRequest("g", a.member_id, told.member_epoch, kept))
            )
            response = await held
            assert response.member_epoch == 2
            assert len(owned(response)[0].partitions) == 2
            # Nothing changes for a: its heartbeat is held in turn, until shutdown answers it.
            assert not release.done()
            coord.begin_shutdown()
            assert (await release).assignment is None

    run(main())


def test_a_stable_members_held_heartbeat_brings_a_rebalance_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock()) as (coord, _):
            a = coord.join(join_request())
            held = asyncio.ensure_future(coord.heartbeat(m.HeartbeatRequest("g", a.member_id, 1)))
            await until(lambda: "g" in coord._events)
            assert not held.done()
            coord.join(join_request())
            response = await held  # not at a's next heartbeat: now
            assert len(owned(response)[0].partitions) == 2
            # With partitions to give up, a's next heartbeat is answered at once.
            again = await coord.heartbeat(m.HeartbeatRequest("g", a.member_id, 2))
            assert again.assignment is None

    run(main())


def test_session_timeout_is_enforced_by_tick_as_the_clock_moves(tmp_path: Path) -> None:
    async def main() -> None:
        clock = Clock()
        async with coordinator(tmp_path, clock) as (coord, _):
            a = coord.join(join_request())
            b = coord.join(join_request(client_id="b"))
            clock.now += SESSION_MS - 1000
            await coord.heartbeat(m.HeartbeatRequest("g", a.member_id, 1))
            assert coord.tick() == []
            clock.now += 1001
            removed = coord.tick()
            assert [(gid, r.member_id) for gid, r in removed] == [("g", b.member_id)]
            response = await coord.heartbeat(m.HeartbeatRequest("g", a.member_id, 1))
            assert response.error_code == 0
            group = coord.group("g")
            assert group is not None and len(group.members) == 1
            clock.now += SESSION_MS + 1
            coord.tick()
            assert coord.group("g") is None  # no members and no offsets: forgotten
            gone = await coord.handle(m.HeartbeatRequest("g", a.member_id, 1))
            assert isinstance(gone, m.HeartbeatResponse)
            assert gone.error_code == ErrorCode.GROUP_ID_NOT_FOUND

    run(main())


def test_a_new_topic_matching_a_pattern_is_assigned_after_a_tick(tmp_path: Path) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock()) as (coord, logs):
            a = coord.join(m.JoinGroupRequest("g", subscribed_pattern=r"t|new-.*"))
            assert [tp.topic for tp in a.assignment] == ["t"]
            logs.create_topic("new-1", 2)
            coord.tick()
            response = await coord.heartbeat(m.HeartbeatRequest("g", a.member_id, 1))
            assert {tp.topic for tp in owned(response)} == {"t", "new-1"}

    run(main())


def commit(
    group: str = "g", member: str = "", epoch: int = -1, **offsets: int
) -> m.OffsetCommitRequest:
    parts = tuple(m.OffsetCommitPartition("t", int(k[1:]), v) for k, v in offsets.items())
    return m.OffsetCommitRequest(group, parts, member, epoch)


def codes(response: m.Response) -> list[int]:
    assert isinstance(response, m.OffsetCommitResponse)
    return [p.error_code for p in response.partitions]


def test_commit_validation(tmp_path: Path) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock(), max_session_timeout_ms=60_000) as (coord, _):
            # An administrative commit to an empty (here: new) group.
            assert codes(await coord.handle(commit(p0=5))) == [0]
            a = coord.join(join_request())
            refused = await coord.handle(commit(p0=6))
            assert isinstance(refused, m.OffsetCommitResponse)
            assert refused.error_code == ErrorCode.NON_EMPTY_GROUP
            member = a.member_id
            assert codes(await coord.handle(commit("g", member, 1, p0=7, p1=-3))) == [
                0,
                ErrorCode.INVALID_COMMIT_OFFSET,
            ]
            big = m.OffsetCommitRequest(
                "g",
                (
                    m.OffsetCommitPartition("t", 0, 1, "x" * 5000),
                    m.OffsetCommitPartition("t", 9, 1),
                    m.OffsetCommitPartition("nope", 0, 1),
                ),
                member,
                1,
            )
            assert codes(await coord.handle(big)) == [
                ErrorCode.OFFSET_METADATA_TOO_LARGE,
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ]
            stale = await coord.handle(commit("g", member, 0, p0=8))
            assert isinstance(stale, m.OffsetCommitResponse)
            assert stale.error_code == ErrorCode.FENCED_MEMBER_EPOCH
            ghost = await coord.handle(commit("g", "ghost", 1, p0=8))
            assert isinstance(ghost, m.OffsetCommitResponse)
            assert ghost.error_code == ErrorCode.UNKNOWN_MEMBER_ID
            b = coord.join(join_request())
            assert codes(await coord.handle(commit("g", b.member_id, 1, p0=9))) == [
                ErrorCode.FENCED_MEMBER_EPOCH  # b does not hold t-0
            ]
            fetched = coord.offset_fetch(m.OffsetFetchRequest("g"))
            assert [(p.partition, p.offset) for p in fetched.partitions] == [(0, 7)]
            some = coord.offset_fetch(
                m.OffsetFetchRequest(
                    "g", (m.TopicPartitions("t", (0, 1)), m.TopicPartitions("x", (0,)))
                )
            )
            assert [(p.topic, p.partition, p.offset, p.error_code) for p in some.partitions] == [
                ("t", 0, 7, 0),
                ("t", 1, -1, 0),
                ("x", 0, -1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            ]
            unknown = coord.offset_fetch(m.OffsetFetchRequest("other"))
            assert unknown.error_code == 0 and unknown.partitions == ()

    run(main())


def test_list_describe_delete(tmp_path: Path) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock()) as (coord, _):
            await coord.handle(commit("empty", p0=3))
            a = coord.join(join_request(client_id="app"))
            listed = coord.list_groups(m.ListGroupsRequest())
            assert [(g.group_id, g.state, g.member_count) for g in listed.groups] == [
                ("empty", "empty", 0),
                ("g", "stable", 1),
            ]
            only = coord.list_groups(m.ListGroupsRequest(("stable",)))
            assert [g.group_id for g in only.groups] == ["g"]
            described = coord.describe_groups(m.DescribeGroupsRequest(("g", "empty", "nope", "")))
            g, empty, nope, bad = described.groups
            assert g.state == "stable" and g.members[0].member_id == a.member_id
            assert g.members[0].client_id == "app" and g.assignor == "sticky"
            assert empty.state == "empty" and empty.error_code == 0
            assert nope.error_code == ErrorCode.GROUP_ID_NOT_FOUND
            assert bad.error_code == ErrorCode.INVALID_GROUP_ID
            deleted = await coord.delete_groups(m.DeleteGroupsRequest(("empty", "g", "nope")))
            assert [r.error_code for r in deleted.results] == [
                0,
                ErrorCode.NON_EMPTY_GROUP,
                ErrorCode.GROUP_ID_NOT_FOUND,
            ]
            assert coord.offset_fetch(m.OffsetFetchRequest("empty")).partitions == ()
            coord.leave(m.LeaveGroupRequest("g", a.member_id))
            assert coord.list_groups(m.ListGroupsRequest()).groups == ()

    run(main())


def test_bad_requests_get_error_codes(tmp_path: Path) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock()) as (coord, _):
            response = await coord.handle(m.JoinGroupRequest("", ("t",)))
            assert isinstance(response, m.JoinGroupResponse)
            assert response.error_code == ErrorCode.INVALID_GROUP_ID
            response = await coord.handle(join_request(assignor="nope"))
            assert isinstance(response, m.JoinGroupResponse)
            assert response.error_code == ErrorCode.UNSUPPORTED_ASSIGNOR
            left = await coord.handle(m.LeaveGroupRequest("g", "ghost"))
            assert isinstance(left, m.LeaveGroupResponse)
            assert left.error_code == ErrorCode.GROUP_ID_NOT_FOUND

    run(main())


def test_shutdown_answers_held_heartbeats(tmp_path: Path) -> None:
    async def main() -> None:
        async with coordinator(tmp_path, Clock()) as (coord, _):
            coord.join(join_request())
            b = coord.join(join_request())
            held = asyncio.ensure_future(coord.heartbeat(m.HeartbeatRequest("g", b.member_id, 1)))
            await until(lambda: "g" in coord._events)
            coord.begin_shutdown()
            response = await held
            assert response.error_code == 0 and response.assignment is None
            with pytest.raises(Exception, match="shutting down"):
                await coord.handle(m.ListGroupsRequest())

    run(main())
