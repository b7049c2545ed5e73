"""The idempotent producer's pipeline: several requests of a partition in flight (at most five
batches in all), and the rules that keep order and exactly-once when they fail (see
:mod:`tidelog.client.inflight`).

The rules are checked on :class:`PartitionFlights` and the accumulator alone (no loop, no
clock), then on the sender against the in-memory broker of :mod:`.fakebroker`, whose gate
holds produce requests so that several are in flight at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from tidelog.client.accumulator import Accumulator, ProducerBatch, record_size
from tidelog.client.errors import ClientError
from tidelog.client.idempotence import Idempotence
from tidelog.client.inflight import UNLIMITED, PartitionFlights
from tidelog.client.types import TopicPartition
from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode, MessageTooLargeError, OutOfOrderSequenceError

from .fakebroker import REFUSED, TOPIC, FakeBroker
from .test_idempotence import VALUES, producer, send_all

T = TypeVar("T")
TP0 = TopicPartition(TOPIC, 0)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def identity(epoch: int = 0) -> Idempotence:
    idem = Idempotence()
    idem.update(m.InitProducerIdResponse(producer_id=7, producer_epoch=epoch))
    return idem


def accumulator() -> Accumulator:
    return Accumulator(batch_size=65 + 16 + 1, linger=0, clock=lambda: 100.0)  # a record a batch


def add(acc: Accumulator, count: int = 1) -> None:
    for _ in range(count):
        size = record_size(None, b"x", None)
        assert acc.memory.try_reserve(size)
        acc.append(TP0, b"x", None, None, 1, size)


def take(acc: Accumulator, idem: Idempotence, flights: PartitionFlights) -> list[ProducerBatch]:
    """One drain, as the sender does it: the batches taken are then in flight."""
    out, _, _ = acc.drain(100.0, lambda tp: 1, stamp=idem.stamp, gate=flights)
    group = out.get(1, [])
    if group:
        flights.sent(TP0, group)
    return group


def pipeline(idem: Idempotence, per_request: int = 1) -> PartitionFlights:
    return PartitionFlights(idem, max_batches=5, per_request=per_request)


def acked(flights: PartitionFlights, acc: Accumulator, idem: Idempotence) -> None:
    """Send and acknowledge one batch: the partition may pipeline from now on."""
    add(acc)
    group = take(acc, idem, flights)
    flights.acknowledged(TP0, group[0])
    flights.landed(TP0, group)


# --- the rules, on PartitionFlights and the accumulator ----------------------------------------


def test_without_idempotence_a_partition_has_one_request_in_flight() -> None:
    flights = PartitionFlights(None, max_batches=9, per_request=1)
    acc = accumulator()
    add(acc, 3)
    (first, *_) = acc.queued(TP0)
    assert flights.limit(TP0, first) == 9
    flights.sent(TP0, [first])
    assert flights.limit(TP0, first) == 0


def test_with_idempotence_requests_pipeline_up_to_five_batches_in_all() -> None:
    acc, idem = accumulator(), identity()
    flights = pipeline(idem, per_request=2)
    acked(flights, acc, idem)
    add(acc, 8)
    groups = [take(acc, idem, flights) for _ in range(4)]
    assert [len(g) for g in groups] == [2, 2, 1, 0]  # several requests, five batches
    assert flights.in_flight(TP0) == 5
    flights.landed(TP0, groups[0])
    assert len(take(acc, idem, flights)) == 2


def test_slots_free_from_the_oldest_unanswered_batch_on() -> None:
    """The broker remembers a producer's last five batches and may answer a connection's
    requests out of order: were the later answers to free slots, more than five batches could
    be appended after one still unanswered, and its retry would be refused."""
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    acked(flights, acc, idem)
    add(acc, 7)
    groups = [take(acc, idem, flights) for _ in range(5)]
    assert all(len(g) == 1 for g in groups)
    for group in groups[1:]:  # answered before the first
        flights.acknowledged(TP0, group[0])
        flights.landed(TP0, group)
    assert flights.in_flight(TP0) == 5
    assert take(acc, idem, flights) == []
    flights.landed(TP0, groups[0])
    assert flights.in_flight(TP0) == 0
    assert len(take(acc, idem, flights)) == 1


def test_a_partition_pipelines_only_after_an_acknowledgement_of_its_epoch() -> None:
    """A broker takes a producer's first batch at any sequence: nothing may overtake it."""
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    add(acc, 3)
    (first,) = take(acc, idem, flights)
    assert take(acc, idem, flights) == []
    flights.acknowledged(TP0, first)
    second = take(acc, idem, flights)
    assert len(second) == 1  # behind the first, still in flight
    idem.update(m.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    flights.landed(TP0, [first])
    flights.landed(TP0, second)
    add(acc)
    (bumped, *_) = take(acc, idem, flights)
    assert bumped.producer_epoch == 1
    assert take(acc, idem, flights) == []  # a new epoch: an acknowledgement first, again


def test_groups_failing_in_any_order_are_queued_again_in_send_order() -> None:
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    acked(flights, acc, idem)
    add(acc, 4)
    groups = [take(acc, idem, flights) for _ in range(3)]
    for group in (groups[2], groups[0], groups[1]):
        acc.reenqueue(group, retry_at=0)
        flights.landed(TP0, group)
    assert acc.queued(TP0)[:3] == [b for g in groups for b in g]
    assert acc.queued(TP0)[3].sequence == -1  # the batch never sent stays behind them


def test_a_retried_group_goes_alone_when_its_partition_is_quiet_and_nothing_beside_it() -> None:
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    acked(flights, acc, idem)
    add(acc, 3)
    first, second = take(acc, idem, flights), take(acc, idem, flights)
    acc.reenqueue(first, retry_at=0)
    flights.landed(TP0, first)
    assert flights.limit(TP0, first[0]) == 0  # the second is still in flight
    acc.reenqueue(second, retry_at=0)
    flights.landed(TP0, second)
    assert flights.limit(TP0, first[0]) == UNLIMITED
    assert take(acc, idem, flights) == first
    assert take(acc, idem, flights) == []  # not the second group, nor the new batch
    flights.acknowledged(TP0, first[0])
    flights.landed(TP0, first)
    assert take(acc, idem, flights) == second
    assert take(acc, idem, flights) == []
    flights.landed(TP0, second)
    assert len(take(acc, idem, flights)) == 1  # retries done: the new batch, pipelining again


def test_no_batch_of_a_new_epoch_goes_while_the_old_epoch_is_in_flight() -> None:
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    acked(flights, acc, idem)
    add(acc, 2)
    old = take(acc, idem, flights)
    idem.update(m.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    assert take(acc, idem, flights) == []
    flights.landed(TP0, old)
    (new,) = take(acc, idem, flights)
    assert (new.producer_epoch, new.sequence) == (1, 0)


def test_only_a_group_sent_behind_another_of_its_partition_raced_it() -> None:
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    acked(flights, acc, idem)
    add(acc, 2)
    alone, behind = take(acc, idem, flights), take(acc, idem, flights)
    assert not flights.raced(alone)
    assert flights.raced(behind)


def test_a_batch_failed_for_good_dooms_the_later_batches_of_its_epoch_only() -> None:
    acc, idem = accumulator(), identity()
    flights = pipeline(idem)
    acked(flights, acc, idem)
    add(acc, 3)
    a, b, c = (take(acc, idem, flights)[0] for _ in range(3))
    assert flights.broke(b)
    assert not flights.broke(c)  # already doomed by b
    assert (flights.doomed(a), flights.doomed(b), flights.doomed(c)) == (False, True, True)
    idem.update(m.InitProducerIdResponse(producer_id=7, producer_epoch=1))
    flights.landed(TP0, [a])
    flights.landed(TP0, [c])
    flights.landed(TP0, [b])
    add(acc)
    (fresh,) = take(acc, idem, flights)
    assert not flights.doomed(fresh)


# --- the sender against the in-memory broker ---------------------------------------------------


def test_a_partition_has_several_requests_in_flight() -> None:
    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker) as p:
            await send_all(p, VALUES[:1])
            broker.gate = asyncio.Event()
            futures = [await p.send(TOPIC, v, partition=0) for v in VALUES[1:8]]
            await broker.until(lambda: broker.waiting >= 2)
            assert broker.flying[TP0] == broker.waiting  # a batch each: Kafka's shape
            broker.gate.set()
            results = [await f for f in futures]
        assert [r.offset for r in results] == list(range(1, 8))
        assert broker.values(TP0) == VALUES[:8]
        assert broker.peak[TP0] == 5

    run(main())


def test_out_of_order_behind_a_request_that_failed_is_retried_in_order() -> None:
    """The first request never reaches the broker; those behind it are answered
    OUT_OF_ORDER_SEQUENCE (the gap is ours), retried after it, and nothing fails."""

    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker) as p:
            await send_all(p, VALUES[:1])
            broker.gate = asyncio.Event()
            broker.faults.append(REFUSED)
            futures = [await p.send(TOPIC, v, partition=0) for v in VALUES[1:4]]
            await broker.until(lambda: broker.waiting == 3)
            broker.gate.set()
            results = [await f for f in futures]
        assert [r.offset for r in results] == [1, 2, 3]
        assert broker.values(TP0) == VALUES[:4]
        assert len(broker.inits) == 1  # no epoch bump: nothing failed

    run(main())


def test_a_batch_failed_for_good_fails_the_later_batches_of_its_epoch_without_resending() -> None:
    """The first of three requests fails for good (after one retriable error); the two behind
    it were answered OUT_OF_ORDER_SEQUENCE and wait for a retry: they fail at once, never sent
    again under the old epoch, and the next records start the new epoch at sequence 0."""

    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker) as p:
            await send_all(p, VALUES[:1])
            broker.gate = asyncio.Event()
            broker.faults.extend(
                [
                    ErrorCode.NOT_LEADER,
                    None,
                    None,
                    ErrorCode.MESSAGE_TOO_LARGE,
                ]  # the 4th: a's retry
            )
            futures = [await p.send(TOPIC, v, partition=0) for v in VALUES[1:4]]
            await broker.until(lambda: broker.waiting == 3)
            broker.gate.set()
            results = await asyncio.gather(*(_wait(f) for f in futures), return_exceptions=True)
            later = await send_all(p, VALUES[4:6])
        a, b, c = results
        assert isinstance(a, MessageTooLargeError)
        for doomed in (b, c):
            assert type(doomed) is ClientError, doomed
            assert "were not retried" in str(doomed)
            assert isinstance(doomed.__cause__, MessageTooLargeError)
        old = [s.sequence for r in broker.requests for s in r if s.epoch == 0]
        assert old == [0, 1, 2, 3, 1]  # 2 and 3 went once (answered OUT_OF_ORDER_SEQUENCE)
        assert [r.offset for r in later] == [1, 2]
        assert broker.values(TP0) == [VALUES[0], *VALUES[4:6]]

    run(main())


def test_an_out_of_order_answer_to_a_request_sent_alone_fails_it() -> None:
    """No earlier request of ours can explain the gap: it is real, retrying cannot fill it."""

    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker) as p:
            await send_all(p, VALUES[:1])
            broker.faults.append(ErrorCode.OUT_OF_ORDER_SEQUENCE)
            (failed,) = await send_all(p, VALUES[1:2])
        assert isinstance(failed, OutOfOrderSequenceError)
        assert len([s for r in broker.requests for s in r if s.sequence == 1]) == 1

    run(main())


async def _wait(future: Any) -> Any:
    return await future
