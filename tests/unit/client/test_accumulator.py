"""The accumulator: batching by size and linger, back-pressure, order under retries.

Time is driven by hand: the accumulator's clock is a variable and ``drain``/``expire`` take
``now``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from tidelog.client.accumulator import (
    RECORD_OVERHEAD,
    Accumulator,
    MemoryBudget,
    ProducerBatch,
    record_size,
)
from tidelog.client.types import RecordMetadata, TopicPartition
from tidelog.wire import RecordBatch
from tidelog.wire.errors import NotLeaderError

T = TypeVar("T")
TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)
TP2 = TopicPartition("u", 0)
LEADERS = {TP0: 1, TP1: 2, TP2: 1}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **kwargs: Any) -> Accumulator:
    kwargs.setdefault("batch_size", 1000)
    kwargs.setdefault("linger", 0.01)
    kwargs.setdefault("buffer_memory", 1 << 20)
    return Accumulator(clock=clock or Clock(), **kwargs)


def add(acc: Accumulator, tp: TopicPartition, value: bytes, ts: int = 1) -> Any:
    size = record_size(None, value, None)
    assert acc.memory.try_reserve(size)
    return acc.append(tp, value, None, None, ts, size)


def drain(
    acc: Accumulator,
    now: float,
    leader_of: Callable[[TopicPartition], int | None] = LEADERS.get,
    **kwargs: Any,
) -> tuple[dict[int, list[ProducerBatch]], float | None, bool]:
    return acc.drain(now, leader_of, **kwargs)


def values(batch: ProducerBatch) -> list[bytes]:
    return [r.value or b"" for r in RecordBatch.parse(batch.close()).records()]


# --- batching by size and linger -----------------------------------------------------------


def test_records_of_a_partition_share_a_batch_until_it_is_full() -> None:
    acc = make(batch_size=65 + 3 * (RECORD_OVERHEAD + 100))  # header + three records
    fulls = [add(acc, TP0, b"x" * 100)[1] for _ in range(4)]
    assert fulls == [False, False, True, False]
    batches = acc.queued(TP0)
    assert [b.record_count for b in batches] == [3, 1]
    assert batches[0].closed
    assert not batches[1].closed


def test_a_full_batch_is_ready_at_once_and_an_open_one_after_linger() -> None:
    clock = Clock()
    acc = make(clock, batch_size=65 + 2 * 116, linger=0.5)
    add(acc, TP0, b"x" * 100)
    add(acc, TP0, b"x" * 100)  # fills the batch
    add(acc, TP1, b"y")
    out, wake, no_leader = drain(acc, clock.now)
    assert [b.tp for b in out[1]] == [TP0]
    assert 2 not in out
    assert wake == pytest.approx(0.5)
    assert not no_leader
    # Nothing ready before linger passes; then the open batch goes.
    out, wake, _ = drain(acc, clock.now + 0.3)
    assert out == {}
    assert wake == pytest.approx(0.2)
    out, wake, _ = drain(acc, clock.now + 0.5)
    assert [b.tp for b in out[2]] == [TP1]
    assert wake is None
    assert not acc.has_queued


def test_zero_linger_makes_every_batch_ready() -> None:
    acc = make(linger=0.0)
    add(acc, TP0, b"a")
    out, _, _ = drain(acc, 100.0)
    assert values(out[1][0]) == [b"a"]


def test_a_record_larger_than_batch_size_gets_a_batch_of_its_own() -> None:
    acc = make(batch_size=200)
    add(acc, TP0, b"a")
    _, full = add(acc, TP0, b"x" * 500)
    assert full
    assert [b.record_count for b in acc.queued(TP0)] == [1, 1]


def test_drain_groups_batches_by_leader_and_keeps_partition_order() -> None:
    acc = make(batch_size=65 + 116)
    for i in range(3):
        add(acc, TP0, b"%d" % i + b"x" * 99)
    add(acc, TP1, b"y" * 100)
    add(acc, TP2, b"z" * 100)
    out, _, _ = drain(acc, 200.0)
    assert sorted(out) == [1, 2]
    assert [b.tp for b in out[1]] == [TP0, TP0, TP0, TP2]
    assert [values(b)[0][:1] for b in out[1][:3]] == [b"0", b"1", b"2"]
    assert all(b.in_flight and b.attempts == 1 for b in out[1])


def test_drain_skips_muted_partitions_and_busy_leaders() -> None:
    acc = make(linger=0)
    add(acc, TP0, b"a")
    add(acc, TP1, b"b")
    add(acc, TP2, b"c")
    out, _, _ = drain(acc, 100.0, muted={TP0}, node_ready=lambda node: node != 2)
    assert {n: [b.tp for b in bs] for n, bs in out.items()} == {1: [TP2]}
    assert [b.tp for b in acc.queued(TP0)] == [TP0]
    assert len(acc.queued(TP1)) == 1


def test_drain_reports_partitions_without_a_leader() -> None:
    acc = make(linger=0)
    add(acc, TP0, b"a")
    out, _, no_leader = drain(acc, 100.0, leader_of=lambda tp: None)
    assert out == {}
    assert no_leader
    assert len(acc.queued(TP0)) == 1


def test_drain_bounds_a_request_but_always_sends_one_batch() -> None:
    acc = make(batch_size=65 + 116)
    for _ in range(4):
        add(acc, TP0, b"x" * 100)
    out, _, _ = drain(acc, 200.0, max_request_size=10)
    assert len(out[1]) == 1
    out, _, _ = drain(acc, 200.0, max_request_size=2 * (65 + 116))
    assert len(out[1]) == 2


def test_flush_and_blocked_senders_skip_the_linger() -> None:
    acc = make(linger=60)
    add(acc, TP0, b"a")
    assert drain(acc, 100.0)[0] == {}
    with acc.flushing():
        assert [b.tp for b in drain(acc, 100.0)[0][1]] == [TP0]
    add(acc, TP1, b"b")
    acc.close()
    assert [b.tp for b in drain(acc, 100.0)[0][2]] == [TP1]


def test_flush_and_close_wake_the_sender_and_overlapping_flushes_each_hold() -> None:
    woken: list[None] = []
    acc = make(linger=60, on_ready=lambda: woken.append(None))
    add(acc, TP0, b"a")  # a new batch: one wake-up
    with acc.flushing():
        assert len(woken) == 2
        with acc.flushing():
            pass
        # The outer flush still holds after the inner one ended.
        assert [b.tp for b in drain(acc, 100.0)[0][1]] == [TP0]
    add(acc, TP1, b"b")
    assert drain(acc, 100.0)[0] == {}  # no flush any more: it lingers
    count = len(woken)
    assert not acc.closing
    acc.close()
    assert acc.closing
    assert len(woken) == count + 1


# --- retries keep order ----------------------------------------------------------------------


def test_retriable_failure_goes_back_to_the_front_and_keeps_order() -> None:
    acc = make(batch_size=65 + 116, linger=0)
    for i in range(4):
        add(acc, TP0, b"%d" % i + b"x" * 99)
    sent, _, _ = drain(acc, 100.0, max_request_size=2 * (65 + 116))
    first_two = sent[1]
    assert len(first_two) == 2
    acc.reenqueue(first_two, retry_at=101.0)
    queued = acc.queued(TP0)
    assert [values(b)[0][:1] for b in queued] == [b"0", b"1", b"2", b"3"]
    assert not any(b.in_flight for b in queued)
    # The backoff holds the whole partition, so nothing overtakes the retried batches.
    out, wake, _ = drain(acc, 100.5)
    assert out == {}
    assert wake == pytest.approx(0.5)
    out, _, _ = drain(acc, 101.0)
    assert [values(b)[0][:1] for b in out[1]] == [b"0", b"1", b"2", b"3"]
    assert [b.attempts for b in out[1]] == [2, 2, 1, 1]


def test_a_retried_batch_is_sent_as_the_same_bytes() -> None:
    acc = make(linger=0)
    add(acc, TP0, b"a")
    (batch,) = drain(acc, 100.0)[0][1]
    first = batch.buffer
    acc.reenqueue([batch], retry_at=0)
    (again,) = drain(acc, 100.0)[0][1]
    assert again is batch
    assert again.buffer is first


def test_expire_removes_batches_past_their_delivery_deadline() -> None:
    clock = Clock()
    acc = make(clock, delivery_timeout=5.0, linger=60)
    add(acc, TP0, b"a")
    clock.now += 2
    add(acc, TP1, b"b")
    assert acc.next_deadline() == pytest.approx(105.0)
    assert acc.expire(104.9) == []
    expired = acc.expire(105.0)
    assert [b.tp for b in expired] == [TP0]
    assert acc.next_deadline() == pytest.approx(107.0)


# --- futures ----------------------------------------------------------------------------------


def test_record_futures_resolve_from_the_batch_offset() -> None:
    async def main() -> None:
        acc = make(linger=0)
        f1, _ = add(acc, TP0, b"a", ts=1000)
        f2, _ = add(acc, TP0, b"b", ts=1001)
        assert not f1.done()
        (batch,) = drain(acc, 100.0)[0][1]
        batch.succeed(base_offset=40)
        acc.complete(batch)
        assert f2.done()
        assert await f1 == RecordMetadata("t", 0, 40, 1000)
        assert f2.result() == RecordMetadata("t", 0, 41, 1001)

    run(main())


def test_log_append_time_replaces_the_record_timestamp() -> None:
    acc = make(linger=0)
    f, _ = add(acc, TP0, b"a", ts=5)
    (batch,) = drain(acc, 100.0)[0][1]
    batch.succeed(7, log_append_time=999)
    assert f.result() == RecordMetadata("t", 0, 7, 999)


def test_acks_none_resolves_with_offset_minus_one() -> None:
    acc = make(linger=0)
    f, _ = add(acc, TP0, b"a", ts=5)
    (batch,) = drain(acc, 100.0)[0][1]
    batch.succeed(-1)
    assert f.result() == RecordMetadata("t", 0, -1, 5)


def test_failed_batch_fails_every_record_future() -> None:
    async def main() -> None:
        acc = make(linger=0)
        futures = [add(acc, TP0, b"a")[0], add(acc, TP0, b"b")[0]]
        waiting = asyncio.ensure_future(_await(futures[0]))
        await asyncio.sleep(0)
        (batch,) = drain(acc, 100.0)[0][1]
        batch.fail(NotLeaderError("gone"))
        with pytest.raises(NotLeaderError):
            await waiting
        assert isinstance(futures[1].exception(), NotLeaderError)
        with pytest.raises(NotLeaderError):
            futures[1].result()

    run(main())


async def _await(f: Any) -> Any:
    return await f


def test_pending_future_reports_invalid_state() -> None:
    acc = make()
    f, _ = add(acc, TP0, b"a")
    with pytest.raises(asyncio.InvalidStateError):
        f.result()


def test_done_callback_runs_on_completion() -> None:
    async def main() -> None:
        acc = make(linger=0)
        f, _ = add(acc, TP0, b"a")
        seen: list[object] = []
        f.add_done_callback(seen.append)
        (batch,) = drain(acc, 100.0)[0][1]
        batch.succeed(0)
        await asyncio.sleep(0)
        assert seen == [f]

    run(main())


# --- memory and back-pressure -----------------------------------------------------------------


def test_complete_releases_the_batch_memory() -> None:
    acc = make(linger=0)
    add(acc, TP0, b"a" * 100)
    add(acc, TP0, b"b" * 50)
    assert acc.memory.used == 2 * RECORD_OVERHEAD + 150
    (batch,) = drain(acc, 100.0)[0][1]
    batch.succeed(0)
    acc.complete(batch)
    acc.complete(batch)  # idempotent
    assert acc.memory.used == 0
    assert acc.incomplete == 0


def test_reserve_blocks_until_memory_is_released() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        assert budget.try_reserve(80)
        waiter = asyncio.ensure_future(budget.reserve(30))
        await asyncio.sleep(0)
        assert not waiter.done()
        assert budget.waiting
        assert not budget.try_reserve(1)  # no overtaking a waiter
        budget.release(40)
        await waiter
        assert budget.used == 70
        assert not budget.waiting

    run(main())


def test_reserve_waiters_are_served_in_order() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        budget.try_reserve(100)
        order: list[int] = []

        async def want(n: int) -> None:
            await budget.reserve(n)
            order.append(n)

        tasks = [asyncio.ensure_future(want(n)) for n in (60, 10, 30)]
        await asyncio.sleep(0)
        budget.release(50)  # 60 does not fit yet; 10 must not overtake it
        await asyncio.sleep(0)
        assert order == []
        budget.release(50)
        await asyncio.gather(*tasks)
        assert order == [60, 10, 30]
        assert budget.used == 100

    run(main())


def test_a_cancelled_waiter_gives_way() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        budget.try_reserve(100)
        big = asyncio.ensure_future(budget.reserve(90))
        small = asyncio.ensure_future(budget.reserve(10))
        await asyncio.sleep(0)
        budget.release(20)
        big.cancel()
        await asyncio.gather(big, return_exceptions=True)
        await small
        assert budget.used == 90

    run(main())


def test_a_record_larger_than_the_budget_is_refused() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="never fit"):
            await MemoryBudget(10).reserve(11)

    run(main())


def test_waiters_fail_when_the_producer_closes() -> None:
    async def main() -> None:
        budget = MemoryBudget(10)
        budget.try_reserve(10)
        waiter = asyncio.ensure_future(budget.reserve(5))
        await asyncio.sleep(0)
        budget.fail_waiters(lambda: RuntimeError("closed"))
        with pytest.raises(RuntimeError, match="closed"):
            await waiter

    run(main())


def test_abort_queued_fails_and_releases_everything() -> None:
    acc = make()
    f, _ = add(acc, TP0, b"a")
    failed = acc.abort_queued(lambda: RuntimeError("closed"))
    assert len(failed) == 1
    assert isinstance(f.exception(), RuntimeError)
    assert acc.memory.used == 0
    assert not acc.has_queued


def test_record_size_counts_headers() -> None:
    plain = record_size(b"k", b"v", None)
    assert plain == RECORD_OVERHEAD + 2
    assert record_size(b"k", b"v", {"h": b"x"}) > plain
    assert record_size(b"k", b"v", [("h", None)]) > plain


# --- growth while a partition's window is full (client/growth.py) ---------------------------


@pytest.mark.parametrize("bulk", [False, True])
def test_an_open_batch_grows_in_steps_while_the_hook_allows_then_closes(bulk: bool) -> None:
    acc = make(batch_size=65 + 4 * (RECORD_OVERHEAD + 100))  # four records a batch
    allowed = {"room": 10 * (RECORD_OVERHEAD + 100)}  # what the hook grants: ten records
    asked: list[tuple[TopicPartition, int]] = []

    def grow(tp: TopicPartition, queued: int) -> int:
        asked.append((tp, queued))
        return allowed["room"]

    acc.grow = grow
    fulls = []
    for i in range(12):
        if bulk:
            size = RECORD_OVERHEAD + 100
            assert acc.memory.try_reserve(size)
            _, _, full = acc.extend(TP0, [b"%03d" % i + b"x" * 97], None, 1, size)
        else:
            _, full = add(acc, TP0, b"%03d" % i + b"x" * 97)
        fulls.append(full)
    batches = acc.queued(TP0)
    # Ten records in the grown batch (a yield after each step of four), then a new batch.
    assert [len(b.builder) for b in batches] == [10, 2]
    assert batches[0].closed and not batches[1].closed
    assert [i for i, f in enumerate(fulls) if f] == [3, 7, 9]
    assert asked[0] == (TP0, 0)
    # The hook says no more (the window has room): the open batch closes at batch_size.
    allowed["room"] = 0
    for _ in range(2):
        add(acc, TP0, b"y" * 100)
    assert [len(b.builder) for b in acc.queued(TP0)] == [10, 4]
    assert acc.queued(TP0)[1].closed
    assert values(batches[0]) == [b"%03d" % i + b"x" * 97 for i in range(10)]


def test_without_a_hook_batches_close_at_batch_size() -> None:
    acc = make(batch_size=65 + 4 * (RECORD_OVERHEAD + 100))
    for _ in range(6):
        add(acc, TP0, b"x" * 100)
    assert [len(b.builder) for b in acc.queued(TP0)] == [4, 2]


def test_a_grown_batch_is_ready_at_once_whatever_the_linger() -> None:
    clock = Clock()
    acc = make(clock, batch_size=65 + 4 * (RECORD_OVERHEAD + 100), linger=60.0)
    acc.grow = lambda tp, queued: 10 * (RECORD_OVERHEAD + 100)
    for _ in range(3):
        add(acc, TP0, b"x" * 100)
    assert drain(acc, clock.now)[0] == {}  # below batch_size: it lingers
    for _ in range(3):
        add(acc, TP0, b"x" * 100)
    (batch,) = drain(acc, clock.now)[0][1]  # grew past batch_size: it goes now
    assert len(values(batch)) == 6


def test_a_batch_grows_to_four_times_batch_size_at_most() -> None:
    acc = make(batch_size=65 + 4 * (RECORD_OVERHEAD + 100))  # four records a batch
    acc.grow = lambda tp, queued: 1 << 30  # the hook would allow anything
    for _ in range(20):
        add(acc, TP0, b"x" * 100)
    assert [len(b.builder) for b in acc.queued(TP0)] == [16, 4]
    one = make(batch_size=1)  # smaller than a batch header: one record a batch, always
    one.grow = lambda tp, queued: 1 << 30
    for _ in range(3):
        add(one, TP0, b"x")
    assert [len(b.builder) for b in one.queued(TP0)] == [1, 1, 1]
