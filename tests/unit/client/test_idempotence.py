"""The idempotent producer: sequences stamped per batch when drained, at most five batches of a
partition in flight, retries resent whole with the same sequences, the epoch bumped after a
batch fails for good, fencing fatal, and the settings that turn it on or off.

The accumulator is driven by hand (time is a number); the sender runs against the in-memory
broker of :mod:`.fakebroker`, which keeps the broker's own producer-state table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from tidelog.client import Producer, RecordFuture
from tidelog.client.accumulator import UNBOUNDED, Accumulator, ProducerBatch, record_size
from tidelog.client.errors import (
    ClientUsageError,
    ConnectionClosedError,
    ProducerFencedError,
)
from tidelog.client.idempotence import Idempotence
from tidelog.client.producer import delivery_settings
from tidelog.client.types import TopicPartition
from tidelog.wire import RecordBatch
from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode, InvalidRequestError, OutOfOrderSequenceError

from .fakebroker import LOST, REFUSED, TOPIC, FakeBroker, FakeCluster

T = TypeVar("T")
TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def identity(pid: int = 7, epoch: int = 0) -> Idempotence:
    idem = Idempotence()
    idem.update(m.InitProducerIdResponse(producer_id=pid, producer_epoch=epoch))
    return idem


def accumulator(**kwargs: Any) -> Accumulator:
    kwargs.setdefault("batch_size", 65 + 16 + 1)  # one one-byte record per batch
    kwargs.setdefault("linger", 0)
    return Accumulator(clock=lambda: 100.0, **kwargs)


def add(acc: Accumulator, tp: TopicPartition, value: bytes) -> RecordFuture:
    size = record_size(None, value, None)
    assert acc.memory.try_reserve(size)
    return acc.append(tp, value, None, None, 1, size)[0]


def header(batch: ProducerBatch) -> tuple[int, int, int, int]:
    parsed = RecordBatch.parse(batch.buffer or b"")
    return parsed.producer_id, parsed.producer_epoch, parsed.base_sequence, parsed.record_count


def taken(acc: Accumulator, idem: Idempotence | None, **kwargs: Any) -> list[ProducerBatch]:
    out, _, _ = acc.drain(100.0, lambda tp: 1, stamp=None if idem is None else idem.stamp, **kwargs)
    return out.get(1, [])


# --- sequences: per batch, per partition, at drain time ----------------------------------------


def test_sequences_are_stamped_per_partition_and_batch_when_drained() -> None:
    acc = accumulator(batch_size=65 + 3 * 17)  # three one-byte records per batch
    idem = identity(pid=7, epoch=2)
    for value in b"abcdefg":
        add(acc, TP0, bytes([value]))
    add(acc, TP1, b"x")
    assert all(b.sequence == -1 for b in acc.queued(TP0))  # appending stamps nothing
    batches = taken(acc, idem)
    assert [(b.tp, header(b)) for b in batches] == [
        (TP0, (7, 2, 0, 3)),
        (TP0, (7, 2, 3, 3)),
        (TP0, (7, 2, 6, 1)),
        (TP1, (7, 2, 0, 1)),
    ]
    assert (idem.next_sequence(TP0), idem.next_sequence(TP1)) == (7, 1)


def test_without_idempotence_batches_carry_no_producer() -> None:
    acc = accumulator()
    add(acc, TP0, b"a")
    (batch,) = taken(acc, None)
    assert header(batch) == (-1, -1, -1, 1)


def test_nothing_new_is_taken_until_the_producer_has_an_id() -> None:
    acc = accumulator()
    idem = Idempotence()
    add(acc, TP0, b"a")
    assert taken(acc, idem) == []
    assert [b.sequence for b in acc.queued(TP0)] == [-1]
    idem.update(m.InitProducerIdResponse(producer_id=3, producer_epoch=0))
    assert [header(b) for b in taken(acc, idem)] == [(3, 0, 0, 1)]


def test_at_most_max_batches_of_a_partition_are_taken() -> None:
    acc = accumulator()
    idem = identity()
    for i in range(12):
        add(acc, TP0, b"%d" % (i % 10))
    sent = [len(taken(acc, idem, max_batches=5)) for _ in range(3)]
    assert sent == [5, 5, 2]
    assert UNBOUNDED > 2**30


def test_a_retried_group_goes_again_alone_and_whole_with_its_sequences() -> None:
    acc = accumulator()
    idem = identity()
    for value in b"ab":
        add(acc, TP0, bytes([value]))
    group = taken(acc, idem)
    acc.reenqueue(group, retry_at=0)
    for value in b"cd":
        add(acc, TP0, bytes([value]))
    again = taken(acc, idem)
    assert again == group  # the same batches, and nothing new beside them
    assert [header(b)[2] for b in again] == [0, 1]
    assert [header(b)[2] for b in taken(acc, idem)] == [2, 3]


def test_a_retried_group_that_does_not_fit_beside_others_waits_whole() -> None:
    acc = accumulator()
    idem = identity()
    for value in b"ab":
        add(acc, TP1, bytes([value]))
    group = taken(acc, idem)
    acc.reenqueue(group, retry_at=0)
    add(acc, TP0, b"c")
    limit = group[0].size + 1  # room for TP0's batch and one more, not for the group
    first = taken(acc, idem, max_request_size=limit)
    assert [b.tp for b in first] in ([TP0], [TP1, TP1])
    rest = taken(acc, idem, max_request_size=limit)
    assert sorted(b.tp.partition for b in first + rest) == [0, 1, 1]


def test_abort_unstamped_keeps_the_stamped_retries() -> None:
    acc = accumulator()
    idem = identity()
    add(acc, TP0, b"a")
    group = taken(acc, idem)
    acc.reenqueue(group, retry_at=0)
    late = add(acc, TP0, b"b")
    acc.abort_queued(lambda: RuntimeError("no id"), unstamped=True)
    assert acc.queued(TP0) == group
    assert isinstance(late.exception(), RuntimeError)


# --- the sender against a broker -------------------------------------------------------------


def producer(broker: FakeBroker, **kwargs: Any) -> Producer:
    kwargs.setdefault("linger", 0)
    kwargs.setdefault("batch_size", 65 + 16 + 2)  # one two-byte record per batch
    kwargs.setdefault("retry_backoff", 0)
    kwargs.setdefault("retry_backoff_max", 0)
    return Producer("127.0.0.1:1", cluster=FakeCluster(broker).as_cluster(), **kwargs)


async def send_all(p: Producer, values: list[bytes], partition: int = 0) -> list[Any]:
    futures = [await p.send(TOPIC, v, partition=partition) for v in values]
    return await asyncio.gather(*(_wait(f) for f in futures), return_exceptions=True)


async def _wait(future: RecordFuture) -> Any:
    return await future


VALUES = [b"%02d" % i for i in range(30)]


def test_the_id_is_asked_for_once_lazily_before_the_first_batch() -> None:
    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker) as p:
            assert p.enable_idempotence and p.acks == m.Acks.ALL
            for _ in range(10):  # turns of the sender's loop: it asks for nothing yet
                await asyncio.sleep(0)
            assert broker.inits == []
            await send_all(p, VALUES[:3])
            await send_all(p, VALUES[3:6], partition=1)
        assert broker.inits == [m.InitProducerIdRequest()]
        assert {(s.producer_id, s.epoch) for r in broker.requests for s in r} == {(100, 0)}

    run(main())


def test_lost_responses_are_retried_with_the_same_sequences_and_written_once() -> None:
    async def main() -> None:
        broker = FakeBroker()
        broker.faults.extend([LOST, None, LOST, REFUSED, LOST])
        async with producer(broker) as p:
            results = await send_all(p, VALUES)
        assert broker.values(TP0) == VALUES
        assert [r.offset for r in results] == list(range(len(VALUES)))
        sequences = [s.sequence for r in broker.requests for s in r]
        assert sorted(set(sequences)) == list(range(len(VALUES)))
        assert len(sequences) > len(VALUES)  # some went twice

    run(main())


def test_five_batches_in_flight_per_partition_keep_their_order_across_retries() -> None:
    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker, max_in_flight=20) as p:  # the partitions' bound binds
            await send_all(p, VALUES[:1], partition=0)  # acknowledged: now they pipeline
            await send_all(p, VALUES[1:2], partition=1)
            broker.gate = asyncio.Event()
            broker.faults.extend([None, LOST, REFUSED, None, LOST, LOST, None, LOST])
            futures = [
                await p.send(TOPIC, v, partition=i % 2) for i, v in enumerate(VALUES) if i > 1
            ]
            await broker.until(lambda: broker.flying[TP0] + broker.flying[TP1] == 10)
            broker.gate.set()
            await asyncio.gather(*(_wait(f) for f in futures))
        for tp in (TP0, TP1):
            assert broker.values(tp) == VALUES[tp.partition :: 2]
        assert broker.peak == {TP0: 5, TP1: 5}  # in several requests, never more

    run(main())


def test_without_idempotence_a_lost_response_duplicates() -> None:
    """The contrast that shows the fake broker deduplicates only idempotent batches."""

    async def main() -> None:
        broker = FakeBroker()
        broker.faults.append(LOST)
        async with producer(broker, enable_idempotence=False) as p:
            await send_all(p, VALUES[:1])
        assert broker.values(TP0) == [VALUES[0], VALUES[0]]

    run(main())


def test_out_of_order_sequence_fails_the_batch_bumps_the_epoch_and_restarts_at_zero() -> None:
    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker) as p:
            await send_all(p, VALUES[:2])
            broker.faults.append(ErrorCode.OUT_OF_ORDER_SEQUENCE)
            (failed,) = await send_all(p, VALUES[2:3])
            assert isinstance(failed, OutOfOrderSequenceError)
            assert "did not write these records" in str(failed)
            later = await send_all(p, VALUES[3:5])
        assert broker.inits == [
            m.InitProducerIdRequest(),
            m.InitProducerIdRequest(producer_id=100, producer_epoch=0),
        ]
        sent = [(s.epoch, s.sequence) for r in broker.requests for s in r]
        assert sent[-2:] == [(1, 0), (1, 1)]
        assert [r.offset for r in later] == [2, 3]
        assert broker.values(TP0) == VALUES[:2] + VALUES[3:5]

    run(main())


def test_a_sent_batch_that_fails_for_good_bumps_the_epoch_before_anything_new() -> None:
    """Its records may be in the log: it is failed, never restamped; the partition's next
    batches start a new epoch at sequence 0 (an old-epoch sequence would be a gap)."""

    async def main() -> None:
        broker = FakeBroker()
        async with producer(broker, retries=0) as p:
            broker.faults.append(LOST)  # written, but the answer never comes
            (failed,) = await send_all(p, VALUES[:1])
            assert isinstance(failed, ConnectionClosedError)
            assert [r.offset for r in await send_all(p, VALUES[1:3])] == [1, 2]
        assert len(broker.inits) == 2
        sent = [(s.epoch, s.sequence) for r in broker.requests for s in r]
        assert sent[-2:] == [(1, 0), (1, 1)]
        assert broker.values(TP0) == VALUES[:3]

    run(main())


def test_a_retriable_error_with_retries_left_keeps_the_epoch() -> None:
    async def main() -> None:
        broker = FakeBroker()
        broker.faults.extend([ErrorCode.NOT_LEADER, ErrorCode.NOT_LEADER])
        async with producer(broker) as p:
            await send_all(p, VALUES[:4])
        assert len(broker.inits) == 1
        assert broker.values(TP0) == VALUES[:4]

    run(main())


def test_a_fenced_producer_fails_every_pending_record_and_every_send() -> None:
    async def main() -> None:
        broker = FakeBroker()
        broker.gate = asyncio.Event()
        # Every request in flight is refused, as a real broker refuses each batch of the old
        # epoch once a newer one holds the id.
        broker.faults.extend([ErrorCode.INVALID_PRODUCER_EPOCH] * 8)
        async with producer(broker) as p:
            futures = [await p.send(TOPIC, v) for v in VALUES[:8]]
            broker.gate.set()
            results = await asyncio.gather(*(_wait(f) for f in futures), return_exceptions=True)
            assert all(isinstance(r, ProducerFencedError) for r in results), results
            assert "fenced" in str(results[0])
            with pytest.raises(ProducerFencedError, match="fenced"):
                await p.send(TOPIC, b"late")
        assert broker.values(TP0) == []
        assert len(broker.inits) == 1  # fenced is fatal: no bump

    run(main())


def test_a_broker_that_refuses_an_id_fails_the_records_naming_the_setting() -> None:
    async def main() -> None:
        broker = FakeBroker()
        broker.init_errors.append(ErrorCode.INVALID_REQUEST)
        async with producer(broker) as p:
            (failed,) = await send_all(p, VALUES[:1])
        assert isinstance(failed, InvalidRequestError)
        assert "enable_idempotence=False" in str(failed)

    run(main())


def test_retriable_errors_of_init_producer_id_are_retried() -> None:
    async def main() -> None:
        broker = FakeBroker()
        broker.init_errors.extend([ErrorCode.NOT_LEADER, ErrorCode.BROKER_SHUTTING_DOWN])
        async with producer(broker) as p:
            assert [r.offset for r in await send_all(p, VALUES[:2])] == [0, 1]
        assert len(broker.inits) == 3

    run(main())


# --- the settings --------------------------------------------------------------------------


def test_idempotence_is_on_by_default_with_acks_all_and_five_in_flight() -> None:
    assert delivery_settings(None, None, None) == (m.Acks.ALL, True, 5)
    assert delivery_settings("all", None, 3) == (m.Acks.ALL, True, 3)
    assert delivery_settings(None, True, None) == (m.Acks.ALL, True, 5)


def test_other_acks_or_more_in_flight_turn_the_default_off() -> None:
    assert delivery_settings("leader", None, None) == (m.Acks.LEADER, False, UNBOUNDED)
    assert delivery_settings(0, None, None) == (m.Acks.NONE, False, UNBOUNDED)
    assert delivery_settings(None, None, 8) == (m.Acks.ALL, False, 8)
    assert delivery_settings(None, False, None) == (m.Acks.ALL, False, UNBOUNDED)


@pytest.mark.parametrize(
    ("acks", "in_flight", "names"),
    [
        ("leader", None, ("enable_idempotence=True", "acks='leader'")),
        ("none", None, ("enable_idempotence=True", "acks='none'")),
        (1, None, ("enable_idempotence=True", "acks=1")),
        (None, 6, ("enable_idempotence=True", "max_in_flight_per_partition=6")),
    ],
)
def test_idempotence_asked_for_with_settings_it_cannot_keep_is_an_error(
    acks: Any, in_flight: int | None, names: tuple[str, ...]
) -> None:
    with pytest.raises(ClientUsageError) as info:
        Producer(
            "127.0.0.1:1", acks=acks, enable_idempotence=True, max_in_flight_per_partition=in_flight
        )
    for name in names:
        assert name in str(info.value)


def test_max_in_flight_per_partition_must_be_positive() -> None:
    with pytest.raises(ClientUsageError, match="at least 1"):
        delivery_settings(None, None, 0)
