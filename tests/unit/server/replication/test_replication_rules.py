"""The pure rules of replication: the leader epoch cache (KIP-101/279 answers, crash-safe
file), the leader's high watermark and ISR upkeep, and the controller's elections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from tidelog.server.cluster.decisions import _elect
from tidelog.server.cluster.records import NO_LEADER, PartitionState
from tidelog.server.log import Files, LogManager, PartitionLog, TopicPartition
from tidelog.server.log.epochs import UNDEFINED, EpochEnd, LeaderEpochCache
from tidelog.server.replication.leader import PartitionLeader
from tidelog.server.replication.manager import ReplicaManager
from tidelog.wire.batch_builder import RecordBatchBuilder
from tidelog.wire.errors import NotEnoughReplicasAfterAppendError, NotEnoughReplicasError


def test_epoch_cache_answers_where_an_epoch_ends_and_survives_a_reopen(tmp_path: Path) -> None:
    files = Files()
    cache = LeaderEpochCache.open(files, str(tmp_path), 0)
    cache.assign(0, 0)
    cache.assign(2, 10)
    cache.assign(5, 30)
    assert cache.end_offset_for(0, 40) == EpochEnd(0, 10)
    assert cache.end_offset_for(1, 40) == EpochEnd(0, 10)  # the largest epoch at or below
    assert cache.end_offset_for(3, 40) == EpochEnd(2, 30)
    assert cache.end_offset_for(5, 40) == EpochEnd(5, 40)  # the latest ends at the log end
    assert cache.end_offset_for(-1, 40) == EpochEnd(UNDEFINED, UNDEFINED)
    cache.truncate_from_end(30)
    again = LeaderEpochCache.open(files, str(tmp_path), 40)
    assert [tuple(e) for e in again.entries] == [(0, 0), (2, 10)]
    # Epochs that start past the log end (a crash cut the tail) are dropped on open.
    assert [tuple(e) for e in LeaderEpochCache.open(files, str(tmp_path), 5).entries] == [(0, 0)]


def test_a_damaged_epoch_checkpoint_reads_as_empty(tmp_path: Path) -> None:
    files = Files()
    LeaderEpochCache.open(files, str(tmp_path), 0).assign(3, 0)
    path = tmp_path / "leader-epoch-checkpoint"
    path.write_bytes(path.read_bytes().replace(b"3 0", b"4 0"))
    assert LeaderEpochCache.open(files, str(tmp_path), 0).entries == ()


def _leader(tmp_path: Path, isr: tuple[int, ...], min_isr: int = 2) -> PartitionLeader:
    plog = PartitionLog.open(str(tmp_path / "t-0"))
    for _ in range(3):
        builder = RecordBatchBuilder()
        builder.append(b"v")
        plog.append(builder.build(), leader_epoch=1)
    plog.update_high_watermark(0)
    return PartitionLeader(
        plog, me=1, epoch=1, replicas=(1, 2, 3), isr=isr, isr_revision=5,
        min_isr=min_isr, now_ms=0, on_visible=lambda: None,
    )  # fmt: skip


def test_the_high_watermark_is_the_smallest_isr_position_once_all_have_fetched(
    tmp_path: Path,
) -> None:
    leader = _leader(tmp_path, (1, 2, 3))
    leader.advance_local(3)
    assert leader.plog.high_watermark == 0  # followers have not fetched in this epoch
    leader.follower_fetched(2, 3, now_ms=1)
    assert leader.plog.high_watermark == 0
    leader.follower_fetched(3, 2, now_ms=1)
    assert leader.plog.high_watermark == 2
    # Out of the ISR (committed), broker 3 no longer holds it back.
    leader.set_isr((1, 2), revision=6)
    assert leader.plog.high_watermark == 3
    # An older view of the partition never brings back an ISR committed since.
    leader.set_isr((1, 2, 3), revision=5)
    assert leader.isr == (1, 2)


def test_acks_all_waits_for_the_high_watermark_and_fails_when_the_isr_shrinks(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        leader = _leader(tmp_path, (1, 2, 3))
        leader.check_min_isr()
        done = leader.wait_for(3)
        stuck = leader.wait_for(3)
        leader.advance_local(3)
        leader.follower_fetched(2, 3, now_ms=1)
        assert not done.done()
        leader.follower_fetched(3, 3, now_ms=1)
        assert done.done() and done.exception() is None
        later = leader.wait_for(4)
        leader.set_isr((1,), revision=7)
        with pytest.raises(NotEnoughReplicasAfterAppendError):
            await later
        with pytest.raises(NotEnoughReplicasError):
            leader.check_min_isr()
        assert stuck.done()

    asyncio.run(main())


def test_a_follower_lagging_past_the_limit_is_named_and_one_caught_up_may_join(
    tmp_path: Path,
) -> None:
    leader = _leader(tmp_path, (1, 2, 3))
    leader.advance_local(3)
    leader.follower_fetched(2, 3, now_ms=5_000)  # caught up
    leader.follower_fetched(3, 1, now_ms=5_000)  # behind
    assert leader.lagging(now_ms=12_000, lag_ms=10_000) == [3]
    leader.set_isr((1, 2), revision=6)
    assert leader.follower_fetched(3, 3, now_ms=12_500)  # caught up: it may come back


def test_a_leader_is_abandoned_once_every_in_sync_follower_has_been_silent(
    tmp_path: Path,
) -> None:
    """What a broker whose lease is lost takes as the sign that it was replaced."""
    leader = _leader(tmp_path, (1, 2, 3))
    assert not leader.abandoned(now_ms=1_000, silence_ms=2_000)  # silent since it began only
    assert leader.abandoned(now_ms=2_001, silence_ms=2_000)
    leader.follower_fetched(2, 3, now_ms=2_500)
    assert not leader.abandoned(now_ms=4_000, silence_ms=2_000)  # one follower still fetches
    assert leader.abandoned(now_ms=4_501, silence_ms=2_000)
    # No in-sync follower: nobody could have been elected in its place (nor is it a sign).
    alone = _leader(tmp_path / "alone", (1,))
    assert not alone.abandoned(now_ms=60_000, silence_ms=2_000)


@pytest.mark.parametrize("committed", [True, False])
def test_a_follower_proposed_for_the_isr_holds_the_high_watermark_until_etcd_answers(
    tmp_path: Path, committed: bool
) -> None:
    """Kafka's maximal ISR: between the fetch that shows a follower caught up and etcd's
    answer, the high watermark (and so every acks=all answer) waits for that follower too.
    Otherwise it joins the ISR lacking records acknowledged meanwhile, and an election of it
    right then (a failover, or its preferred leadership given back) loses them."""

    async def main() -> None:
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def propose_isr(tp: TopicPartition, leader: PartitionLeader, isr: object) -> int:
            return await answer

        manager = ReplicaManager(
            1, cast(Callable[[], LogManager], lambda: None), lambda: None, lambda tp: None,
            propose_isr, min_insync_replicas=2, replica_lag_time_max_ms=10_000,
            max_frame_size=1 << 20, monotonic=time.monotonic,
        )  # fmt: skip
        leader = _leader(tmp_path, (1, 2))
        for _ in range(2):  # offsets 3 and 4, written in this epoch
            builder = RecordBatchBuilder()
            builder.append(b"w")
            leader.plog.append(builder.build(), leader_epoch=1)
        leader.advance_local(5)
        leader.follower_fetched(2, 3, now_ms=1)
        assert leader.plog.high_watermark == 3
        assert leader.follower_fetched(3, 3, now_ms=1)  # at the high watermark: may join
        manager.propose(TopicPartition("t", 0), leader, (1, 2, 3))
        leader.follower_fetched(2, 5, now_ms=2)
        assert leader.plog.high_watermark == 3  # broker 3 is joining: nothing passes it
        answer.set_result(9 if committed else 0)
        others = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*others)
        assert leader.joining == ()
        if committed:
            assert leader.isr == (1, 2, 3) and leader.plog.high_watermark == 3
            leader.follower_fetched(3, 5, now_ms=3)
        else:
            assert leader.isr == (1, 2)  # refused: 3 holds nothing back any more
        assert leader.plog.high_watermark == 5

    asyncio.run(main())


def _state(leader: int, isr: tuple[int, ...], epoch: int = 4) -> PartitionState:
    return PartitionState("id", (1, 2, 3), leader, epoch, isr)


def test_elections_come_from_the_isr_and_dead_followers_leave_it() -> None:
    # A dead follower leaves the ISR; the live leader keeps its epoch.
    new, _ = _elect(_state(1, (1, 2, 3)), alive={1, 2}) or (None, "")
    assert new == _state(1, (1, 2))
    # A dead leader: the next live in-sync replica leads, one epoch up.
    new, _ = _elect(_state(1, (1, 2)), alive={2, 3}) or (None, "")
    assert new == _state(2, (2,), 5)
    # No in-sync replica alive: nobody leads (3 is alive but out of sync), the last stays.
    new, _ = _elect(_state(2, (2,)), alive={3}) or (None, "")
    assert new == _state(NO_LEADER, (2,), 5)
    # ... unless the topic allows an unclean election.
    new, _ = _elect(_state(2, (2,)), alive={3}, unclean=True) or (None, "")
    assert new == _state(3, (3,), 5)
