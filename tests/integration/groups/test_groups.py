"""Consumer groups end to end: real broker, real consumers, fast heartbeats."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tidelog.client import (
    AdminClient,
    CommitFailedError,
    Consumer,
    ConsumerRecord,
    TopicPartition,
)
from tidelog.wire import messages as m
from tidelog.wire.errors import (
    ErrorCode,
    GroupIdNotFoundError,
    NonEmptyGroupError,
    UnsupportedAssignorError,
)

from ..client.helpers import create_topic, run
from .helpers import (
    History,
    Member,
    group_broker,
    produce,
    raw_connection,
    start_member,
    wait_until,
)

T = "events"


def tps(topic: str, *partitions: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}


def test_three_then_four_members_share_twelve_partitions_one_owner_at_a_time(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 12)
            await produce(b.address, T, 12, 20)
            history = History()
            members = [await start_member(b.address, n, [T], history) for n in "abc"]
            await wait_until(
                lambda: [len(history.owned_by(n)) for n in "abc"] == [4, 4, 4], "4 each"
            )
            before = {n: history.owned_by(n) for n in "abc"}
            mark = len(history.events)
            members.append(await start_member(b.address, "d", [T], history))
            await wait_until(
                lambda: [len(history.owned_by(n)) for n in "abcd"] == [3, 3, 3, 3], "3 each"
            )
            # Sticky: each old member gave up exactly one partition, kept the others.
            assert history.revoked_count(mark) == 3
            for n in "abc":
                assert history.owned_by(n) <= before[n]
            await wait_until(lambda: sum(len(mb.records) for mb in members) >= 240, "records")
            for member in members:
                await member.close()
            seen = sorted(r for mb in members for r in mb.records)
            assert seen == sorted((p, i) for p in range(12) for i in range(20))  # no duplicate

    run(main())


def test_members_leaving_hand_their_partitions_over_with_commits(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 4)
            await produce(b.address, T, 4, 25)
            history = History()
            a = await start_member(b.address, "a", [T], history, assignor="range")
            await wait_until(lambda: len(a.records) == 100, "a consumed everything")
            bb = await start_member(b.address, "b", [T], history, assignor="range")
            await wait_until(lambda: len(history.owned_by("b")) == 2, "b got two")
            await a.close()  # revokes (auto-commit) and leaves
            await wait_until(lambda: len(history.owned_by("b")) == 4, "b got all")
            await produce(b.address, T, 4, 5)
            await wait_until(lambda: len(bb.records) == 20, "b consumed the new records")
            await bb.close()
            # b started where a committed: nothing a had consumed came again.
            assert {o for _, o in bb.records} == set(range(25, 30))

    run(main())


def test_a_silent_member_is_removed_after_its_session_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 4)
            async with raw_connection(b) as conn:
                join = m.JoinGroupRequest("g", (T,), session_timeout_ms=300)
                silent = await conn.call(join, m.JoinGroupResponse)
                assert len(silent.assignment[0].partitions) == 4
                history = History()
                c = await start_member(b.address, "c", [T], history)
                await wait_until(lambda: len(history.owned_by("c")) == 4, "c got all four")
                gone = await conn.call(
                    m.HeartbeatRequest("g", silent.member_id, silent.member_epoch),
                    m.HeartbeatResponse,
                )
                assert gone.error_code == ErrorCode.UNKNOWN_MEMBER_ID
                # A zombie's commit is refused too.
                commit = m.OffsetCommitRequest(
                    "g", (m.OffsetCommitPartition(T, 0, 1),), silent.member_id, 1
                )
                refused = await conn.call(commit, m.OffsetCommitResponse)
                assert refused.error_code == ErrorCode.UNKNOWN_MEMBER_ID
                await c.close()

    run(main())


def test_a_stale_epoch_commit_is_fenced(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 2)
            async with raw_connection(b) as conn:
                join = m.JoinGroupRequest("g", (T,), session_timeout_ms=10_000)
                a = await conn.call(join, m.JoinGroupResponse)
                await conn.call(join, m.JoinGroupResponse)  # a must give one partition up
                hb = await conn.call(
                    m.HeartbeatRequest("g", a.member_id, a.member_epoch), m.HeartbeatResponse
                )
                assert hb.member_epoch == a.member_epoch + 1
                hb = await conn.call(
                    m.HeartbeatRequest("g", a.member_id, hb.member_epoch, owned=hb.assignment),
                    m.HeartbeatResponse,
                )
                kept = hb.assignment or a.assignment
                partition = kept[0].partitions[0] if hb.assignment else 0
                offsets = (m.OffsetCommitPartition(T, partition, 1),)
                ok = await conn.call(
                    m.OffsetCommitRequest("g", offsets, a.member_id, a.member_epoch + 1),
                    m.OffsetCommitResponse,
                )
                assert ok.error_code == 0 and ok.partitions[0].error_code == 0
                stale = await conn.call(
                    m.OffsetCommitRequest("g", offsets, a.member_id, a.member_epoch - 1),
                    m.OffsetCommitResponse,
                )
                assert stale.error_code == ErrorCode.FENCED_MEMBER_EPOCH

    run(main())


def test_describe_reports_lag_as_end_minus_committed(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 2)
            await produce(b.address, T, 2, 10)
            consumer = Consumer(
                b.address,
                group_id="g",
                client_id="lagger",
                auto_commit=False,
                auto_offset_reset="earliest",
            )
            async with consumer:
                consumer.subscribe([T])
                got: list[ConsumerRecord[bytes, bytes]] = []
                while len(got) < 20:
                    for records in (await consumer.getmany(timeout=10)).values():
                        got.extend(records)
                await consumer.commit({TopicPartition(T, 0): 6, TopicPartition(T, 1): 10})
                assert await consumer.committed((T, 0)) == 6
                assert consumer.lag((T, 1)) == 0
                async with AdminClient(b.address) as admin:
                    (group,) = await admin.describe_groups(["g"])
                    assert group.state == "stable" and group.assignor == "sticky"
                    (member,) = group.members
                    assert member.client_id == "lagger" and member.client_host == "127.0.0.1"
                    assert member.assignment == tps(T, 0, 1)
                    rows = [(p.partition, p.committed, p.end_offset, p.lag) for p in group.offsets]
                    assert rows == [(0, 6, 10, 4), (1, 10, 10, 0)]
                    assert group.lag == 4
                    assert all(p.member_id == consumer.member_id for p in group.offsets)
                    listed = await admin.list_groups()
                    assert [(g.group_id, g.state, g.member_count) for g in listed] == [
                        ("g", "stable", 1)
                    ]

    run(main())


def test_reset_offsets_and_delete_need_an_empty_group(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 2)
            await produce(b.address, T, 2, 10)
            async with AdminClient(b.address) as admin:
                member = await start_member(b.address, "a", [T])
                await wait_until(lambda: len(member.records) == 20, "consumed")
                with pytest.raises(NonEmptyGroupError):
                    await admin.reset_offsets("g", T, "earliest")
                with pytest.raises(NonEmptyGroupError):
                    await admin.delete_groups(["g"])
                await member.close()  # commits 10 and 10 on the way out
                committed = await admin.list_committed("g")
                assert {tp.partition: o.offset for tp, o in committed.items()} == {0: 10, 1: 10}
                assert await admin.reset_offsets("g", T, "earliest") == {
                    TopicPartition(T, 0): 0,
                    TopicPartition(T, 1): 0,
                }
                assert await admin.reset_offsets("g", T, 4, partitions=[1]) == {
                    TopicPartition(T, 1): 4
                }
                assert await admin.reset_offsets("g", T, 99, dry_run=True) == {
                    TopicPartition(T, 0): 10,  # clamped to the end
                    TopicPartition(T, 1): 10,
                }
                assert await admin.reset_offsets("g", T, timestamp=2**42) == {
                    TopicPartition(T, 0): 10,  # nothing at or after it: the end
                    TopicPartition(T, 1): 10,
                }
                await admin.reset_offsets("g", T, timestamp=0, partitions=[0])
                committed = await admin.list_committed("g")
                assert {tp.partition: o.offset for tp, o in committed.items()} == {0: 0, 1: 10}
                again = await start_member(b.address, "b", [T])
                await wait_until(lambda: len(again.records) == 10, "re-consumed partition 0")
                await again.close()
                assert sorted(again.records) == [(0, i) for i in range(10)]
                await admin.delete_groups(["g"])
                assert await admin.list_groups() == []
                with pytest.raises(GroupIdNotFoundError):
                    await admin.delete_groups(["g"])
                with pytest.raises(GroupIdNotFoundError):
                    await admin.describe_groups(["g"])

    run(main())


def test_static_member_restarting_gets_its_partitions_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 4)
            history = History()
            a = await start_member(b.address, "a", [T], history, group_instance_id="a")
            bb = await start_member(b.address, "b", [T], history, group_instance_id="b")
            await wait_until(lambda: len(history.owned_by("b")) == 2, "two each")
            mine = history.owned_by("a")
            await a.close()  # a static member leaves only for its session timeout
            mark = len(history.events)
            a2 = await start_member(b.address, "a2", [T], history, group_instance_id="a")
            await wait_until(lambda: history.owned_by("a2") == mine, "a's partitions back")
            assert all(name == "a2" for name, _, _ in history.events[mark:])  # b untouched
            await a2.consumer.unsubscribe()  # for good: b takes everything
            await wait_until(lambda: len(history.owned_by("b")) == 4, "b took over")
            await a2.close()
            await bb.close()

    run(main())


def test_pattern_subscription_follows_new_topics(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, "ev-1", 1)
            await create_topic(b.address, "other", 1)
            consumer = Consumer(b.address, group_id="g", auto_offset_reset="earliest")
            async with consumer:
                consumer.subscribe(pattern=r"ev-\d+")
                member = Member(consumer, "a").start()
                await wait_until(lambda: consumer.assignment() == tps("ev-1", 0), "ev-1")
                await create_topic(b.address, "ev-2", 2)
                await produce(b.address, "ev-2", 2, 1)
                await wait_until(lambda: len(member.records) == 2, "records of ev-2")
                assert consumer.assignment() == tps("ev-1", 0) | tps("ev-2", 0, 1)
            await member.task  # type: ignore[misc]

    run(main())


@pytest.mark.storage_bound
def test_auto_commit_and_committed_offsets_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 1)
            await produce(b.address, T, 1, 10)
            consumer = Consumer(
                b.address, group_id="g", auto_offset_reset="earliest", auto_commit_interval=0.05
            )
            async with consumer:
                consumer.subscribe(T)
                member = Member(consumer, "a").start()
                await wait_until(lambda: len(member.records) == 10, "consumed")
                committed: list[int | None] = []

                async def poll_committed() -> bool:
                    committed.append(await consumer.committed((T, 0)))
                    return committed[-1] == 10

                while not await poll_committed():
                    await asyncio.sleep(0.01)  # poll with the helper's deadline below
                    assert len(committed) < 3000
            await member.task  # type: ignore[misc]
        async with group_broker(tmp_path) as b:
            await produce(b.address, T, 1, 5)
            again = await start_member(b.address, "b", [T])
            await wait_until(lambda: len(again.records) == 5, "the new records")
            await again.close()
            assert [o for _, o in again.records] == [10, 11, 12, 13, 14]

    run(main())


def test_misuse_and_broker_refusals(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 1)
            async with Consumer(b.address) as plain:
                with pytest.raises(ValueError, match="group_id"):
                    plain.subscribe([T])
            async with Consumer(b.address, group_id="g", assignor="fair") as consumer:
                consumer.subscribe([T])
                with pytest.raises(UnsupportedAssignorError):
                    await consumer.getmany(timeout=10)
            async with Consumer(b.address, group_id="g") as consumer:
                with pytest.raises(ValueError, match="at least one"):
                    consumer.subscribe([])
                consumer.subscribe([T])
                with pytest.raises(ValueError, match="unsubscribe"):
                    consumer.assign([TopicPartition(T, 0)])
                with pytest.raises(CommitFailedError):
                    await consumer.commit({TopicPartition(T, 0): 1})  # not joined yet

    run(main())


def test_a_fenced_consumer_drops_its_partitions_and_rejoins(tmp_path: Path) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 2)
            await produce(b.address, T, 2, 5)
            history = History()
            a = await start_member(b.address, "a", [T], history, auto_commit=False)
            await wait_until(lambda: len(a.records) == 10, "consumed")
            old = a.consumer.member_id
            async with raw_connection(b) as conn:
                # Someone rejoins with a's member id: a's membership is replaced (a zombie now).
                join = m.JoinGroupRequest("g", (T,), member_id=old, session_timeout_ms=300)
                await conn.call(join, m.JoinGroupResponse)
                with pytest.raises(CommitFailedError) as failed:
                    await a.consumer.commit({TopicPartition(T, 0): 3})
                assert failed.value.__cause__ is not None
                # a loses its partitions (revoked without a commit), joins again, and gets them
                # back once the impostor's session ends.
                await wait_until(
                    lambda: (
                        a.consumer.member_id not in ("", old) and len(history.owned_by("a")) == 2
                    ),
                    "a rejoined with both partitions",
                )
            kinds = [kind for _, kind, _ in history.events]
            assert kinds[:2] == ["assigned", "revoked"]
            await a.consumer.unsubscribe()
            a.consumer.assign([TopicPartition(T, 0)])  # by hand from now on
            assert a.consumer.assignment() == tps(T, 0)
            await a.close()

    run(main())
