"""Which partitions the consumer's fetcher asks for, and the prefetch bound."""

from __future__ import annotations

import pytest

from tidelog.client.fetcher import PartitionState, plan_fetches
from tidelog.client.types import TopicPartition
from tidelog.wire import RecordBatch, build_batch

TPS = [TopicPartition("t", p) for p in range(4)]
LEADERS = {TPS[0]: 1, TPS[1]: 1, TPS[2]: 2, TPS[3]: 2}


def state(tp: TopicPartition, position: int | None = 0) -> PartitionState:
    st = PartitionState(tp)
    if position is None:
        st.need_reset(-2)
    else:
        st.seek(position)
    return st


def test_partitions_are_grouped_by_leader() -> None:
    plan = plan_fetches([state(tp) for tp in TPS], 0.0, LEADERS.get, prefetch_bytes=100)
    assert {n: [s.tp for s in sts] for n, sts in plan.by_node.items()} == {
        1: TPS[:2],
        2: TPS[2:],
    }
    assert plan.wake is None
    assert not plan.no_leader


def test_a_partition_at_its_prefetch_bound_is_not_fetched() -> None:
    full = state(TPS[0])
    batch = RecordBatch.parse(build_batch([(None, b"x" * 100)]))
    full.batches.append(batch)
    full.buffered = len(batch.buffer)
    plan = plan_fetches([full], 0.0, LEADERS.get, prefetch_bytes=len(batch.buffer))
    assert plan.by_node == {}
    plan = plan_fetches([full], 0.0, LEADERS.get, prefetch_bytes=len(batch.buffer) + 1)
    assert [s.tp for s in plan.by_node[1]] == [TPS[0]]
    full.take_batch()
    assert full.buffered == 0


def test_paused_errored_and_busy_partitions_wait() -> None:
    paused, errored, busy = state(TPS[0]), state(TPS[1]), state(TPS[2])
    paused.paused = True
    errored.error = RuntimeError("for the user")
    plan = plan_fetches([paused, errored, busy], 0.0, LEADERS.get, busy={2}, prefetch_bytes=10)
    assert plan.by_node == {}


def test_backing_off_partitions_set_the_wake_up() -> None:
    st = state(TPS[0])
    st.retry_at = 5.0
    plan = plan_fetches([st], 4.0, LEADERS.get, prefetch_bytes=10)
    assert plan.by_node == {}
    assert plan.wake == pytest.approx(1.0)
    assert [s.tp for s in plan_fetches([st], 5.0, LEADERS.get, prefetch_bytes=10).by_node[1]]


def test_positionless_partitions_are_reset_or_reported() -> None:
    reset = state(TPS[0], position=None)
    stuck = PartitionState(TPS[1])  # no position and no reset policy
    plan = plan_fetches([reset, stuck], 0.0, LEADERS.get, prefetch_bytes=10)
    assert plan.to_reset == [reset]
    assert plan.no_position == [stuck]
    assert plan.by_node == {}


def test_unknown_leaders_ask_for_metadata() -> None:
    plan = plan_fetches([state(TPS[0])], 0.0, lambda tp: None, prefetch_bytes=10)
    assert plan.no_leader
    assert plan.by_node == {}


def test_seek_drops_prefetched_data_and_bumps_the_epoch() -> None:
    st = state(TPS[0])
    st.batches.append(RecordBatch.parse(build_batch([(None, b"x")])))
    st.buffered = 100
    st.pending.append("record")
    st.error = RuntimeError("old")
    epoch = st.epoch
    st.seek(7)
    assert (st.position, st.fetch_offset, st.buffered, st.epoch) == (7, 7, 0, epoch + 1)
    assert not st.batches
    assert not st.pending
    assert st.error is None


def test_a_failed_reset_waits_for_its_backoff() -> None:
    waiting = state(TPS[0], position=None)
    waiting.retry_at = 5.0
    plan = plan_fetches([waiting], 1.0, LEADERS.get, prefetch_bytes=100)
    assert plan.to_reset == []
    assert plan.wake == pytest.approx(4.0)
    later = plan_fetches([waiting], 5.0, LEADERS.get, prefetch_bytes=100)
    assert later.to_reset == [waiting]
