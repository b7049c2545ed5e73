"""The request core without sockets: produce at each ack level, the long poll on a clock moved
by hand, produce deadlines, and the mapping of failures to error codes."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tidelog.server.config import BrokerConfig
from tidelog.server.core import BrokerCore, Reply, Session, finish, served
from tidelog.server.core.internal_topic import COALESCE_MAX_ROWS
from tidelog.server.log import FaultyFileSystem, PartitionLog, TopicPartition
from tidelog.wire import messages as m
from tidelog.wire import share_messages as sm
from tidelog.wire.errors import (
    BrokerShuttingDownError,
    ErrorCode,
    InvalidRequestError,
    StorageError,
    UnknownApiError,
)
from tidelog.wire.records import iter_batches

from .helpers import HeldExecutor, ManualClock, batch, fetch, produce, settle

SESSION = Session("127.0.0.1", 40000)
TP = TopicPartition("events", 0)


class Rig:
    """A core on a temp dir with a manual clock, fsyncs held until released."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        self.clock = ManualClock()
        self.fsyncs = HeldExecutor()
        self.fs = FaultyFileSystem()
        self.core = BrokerCore(
            BrokerConfig(data_dir=tmp, **config),
            self.clock,
            fs=self.fs,
            flush_executor=self.fsyncs,
        )

    def log(self, tp: TopicPartition = TP) -> PartitionLog:
        return self.core.manager.get_log(tp)

    async def produce(self, *values: bytes, **kwargs: Any) -> m.ProduceResponse | None:
        request, data = produce(TP.topic, batch(*values), **kwargs)
        reply = await self.core.handle(request, data, SESSION)
        if reply is None:
            return None
        response = reply[0]
        assert isinstance(response, m.ProduceResponse)
        return response

    async def fetch(self, request: m.FetchRequest) -> tuple[m.FetchResponse, bytes]:
        reply = await self.core.handle(request, bytearray(), SESSION)
        assert reply is not None
        response, chunks = reply
        assert isinstance(response, m.FetchResponse)
        return response, b"".join(chunks)


def with_rig(
    **config: Any,
) -> Callable[[Callable[[Rig], Coroutine[Any, Any, None]]], Callable[[Path], None]]:
    """Run an ``async def test(rig)`` against an opened core, closed afterwards."""

    def wrap(fn: Callable[[Rig], Coroutine[Any, Any, None]]) -> Callable[[Path], None]:
        def run(tmp_path: Path) -> None:
            async def main() -> None:
                rig = Rig(tmp_path, **config)
                await rig.core.open()
                rig.core.manager.create_topic(TP.topic, 1)
                try:
                    await fn(rig)
                finally:
                    rig.fsyncs.release()
                    rig.core.begin_shutdown()
                    stopping = asyncio.ensure_future(rig.core.shutdown())
                    while not stopping.done():  # the shutdown's own fsyncs are held too
                        rig.fsyncs.release()
                        await asyncio.sleep(0)
                    await stopping

            asyncio.run(main())

        run.__name__ = fn.__name__
        return run

    return wrap


async def started(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task until it blocks."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    return task


# --- produce at each ack level ----------------------------------------------------------------


@with_rig()
async def test_acks_none_appends_and_answers_nothing(rig: Rig) -> None:
    assert await rig.produce(b"a", b"b", acks=m.Acks.NONE) is None
    assert rig.log().log_end_offset == rig.log().high_watermark == 2


@with_rig()
async def test_acks_leader_is_visible_at_once_without_an_fsync(rig: Rig) -> None:
    response = await rig.produce(b"a", acks=m.Acks.LEADER)
    assert response is not None
    assert response.partitions[0].base_offset == 0
    assert rig.log().high_watermark == 1
    assert rig.log().recovery_point == 0
    assert rig.fsyncs.jobs == []


@with_rig()
async def test_acks_all_answers_only_after_the_fsync_and_is_invisible_before(rig: Rig) -> None:
    task = await started(rig.produce(b"a", b"b", acks=m.Acks.ALL))
    await settle(lambda: bool(rig.fsyncs.jobs))
    assert not task.done()
    assert rig.log().high_watermark == 0  # durable first, visible after
    _, data = await rig.fetch(fetch(TP.topic))
    assert data == b""
    assert rig.fsyncs.release() == 1
    response_all = await task
    assert response_all.partitions[0].error_code == 0
    assert response_all.partitions[0].base_offset == 0
    assert rig.log().recovery_point == rig.log().high_watermark == 2


@with_rig()
async def test_ack_flush_policy_makes_acks_leader_wait_for_the_fsync(rig: Rig) -> None:
    rig.core.manager.create_topic("synced", 1, {"flush_policy": "ack"})
    request, data = produce("synced", batch(b"a"), acks=m.Acks.LEADER)
    task = await started(rig.core.handle(request, data, SESSION))
    await settle(lambda: bool(rig.fsyncs.jobs))
    assert not task.done()
    rig.fsyncs.release()
    await task
    assert rig.log(TopicPartition("synced", 0)).high_watermark == 1


@with_rig()
async def test_a_produce_whose_fsync_misses_its_timeout_gets_request_timed_out(rig: Rig) -> None:
    task = await started(rig.produce(b"a", acks=m.Acks.ALL, timeout_ms=2000))
    await settle(lambda: bool(rig.fsyncs.jobs) and rig.clock.waiting == 1)
    rig.clock.advance(1.999)
    await asyncio.sleep(0)
    assert not task.done()
    rig.clock.advance(0.001)
    response = await task
    assert response is not None
    assert response.partitions[0].error_code == ErrorCode.REQUEST_TIMED_OUT
    assert rig.log().high_watermark == 0
    # The fsync goes on without the request, and the batch becomes visible when it ends.
    rig.fsyncs.release()
    await settle(lambda: rig.log().high_watermark == 1)


@with_rig()
async def test_a_failed_fsync_is_the_partitions_error(rig: Rig) -> None:
    rig.fs.inject("fsync", errno.EIO, path_contains="events-0", times=None)
    task = await started(rig.produce(b"a", acks=m.Acks.ALL))
    await settle(lambda: bool(rig.fsyncs.jobs))
    rig.fsyncs.release()
    response = await task
    assert response is not None
    assert response.partitions[0].error_code == ErrorCode.STORAGE_ERROR
    assert rig.log().high_watermark == 0


@with_rig()
async def test_a_partial_produce_is_all_or_none(rig: Rig) -> None:
    request, data = produce(TP.topic, batch(b"a"), batch(b"b")[:-1] + b"!")
    reply = await rig.core.handle(request, data, SESSION)
    assert reply is not None
    response = reply[0]
    assert isinstance(response, m.ProduceResponse)
    assert response.partitions[0].error_code == ErrorCode.CORRUPT_MESSAGE
    assert rig.log().log_end_offset == 0


# --- fetch long poll on the manual clock ------------------------------------------------------


@with_rig()
async def test_long_poll_returns_when_data_arrives(rig: Rig) -> None:
    task = await started(rig.fetch(fetch(TP.topic, max_wait_ms=5000)))
    await settle(lambda: rig.clock.waiting == 1)
    rig.clock.advance(4.9)
    await asyncio.sleep(0)
    assert not task.done()
    await rig.produce(b"hello")
    response, data = await task
    assert response.partitions[0].high_watermark == 1
    assert b"hello" in data


@with_rig()
async def test_long_poll_returns_empty_at_its_deadline(rig: Rig) -> None:
    task = await started(rig.fetch(fetch(TP.topic, max_wait_ms=5000)))
    await settle(lambda: rig.clock.waiting == 1)
    rig.clock.advance(5)
    response, data = await task
    assert data == b""
    assert response.partitions[0].error_code == 0
    assert rig.core.notifier.waiting == 0


@with_rig(max_fetch_wait_ms=1000)
async def test_long_poll_is_capped_by_the_broker(rig: Rig) -> None:
    task = await started(rig.fetch(fetch(TP.topic, max_wait_ms=60_000)))
    await settle(lambda: rig.clock.waiting == 1)
    rig.clock.advance(1)
    _, data = await task
    assert data == b""


@with_rig()
async def test_long_poll_ends_at_shutdown(rig: Rig) -> None:
    task = await started(rig.fetch(fetch(TP.topic, max_wait_ms=5000)))
    await settle(lambda: rig.clock.waiting == 1)
    rig.core.begin_shutdown()
    _, data = await task
    assert data == b""


# --- served at once (handle_now) or by a coroutine -------------------------------------------


@with_rig()
async def test_a_produce_at_acks_leader_and_a_fetch_with_data_are_served_at_once(rig: Rig) -> None:
    request, data = produce(TP.topic, batch(b"hello"))
    reply = rig.core.handle_now(request, data, SESSION)
    assert served(reply) and reply is not None
    assert isinstance(reply[0], m.ProduceResponse) and reply[0].partitions[0].base_offset == 0
    reply = rig.core.handle_now(fetch(TP.topic, max_wait_ms=5000), bytearray(), SESSION)
    assert served(reply) and reply is not None
    assert b"hello" in b"".join(reply[1])


@with_rig()
async def test_a_fetch_that_parks_sees_an_append_made_before_its_poll_started(rig: Rig) -> None:
    # The first read finds nothing; an append lands before the long poll runs (its task has
    # not started): the poll answers with it at once, without waiting for the deadline.
    outcome = rig.core.handle_now(fetch(TP.topic, max_wait_ms=5000), bytearray(), SESSION)
    assert not served(outcome)
    await rig.produce(b"hello")
    task = await started(finish(outcome))
    await settle(task.done)  # the clock never moves: it must not wait
    response, chunks = task.result()
    assert response.partitions[0].high_watermark == 1
    assert b"hello" in b"".join(chunks)
    assert rig.core.notifier.waiting == 0


@with_rig()
async def test_a_fetch_that_parks_with_nothing_new_waits_for_the_next_append(rig: Rig) -> None:
    outcome = rig.core.handle_now(fetch(TP.topic, max_wait_ms=5000), bytearray(), SESSION)
    assert not served(outcome)
    task = await started(finish(outcome))
    await settle(lambda: rig.clock.waiting == 1)
    assert not task.done()
    await rig.produce(b"later")
    _, chunks = await task
    assert b"later" in b"".join(chunks)


# --- errors -----------------------------------------------------------------------------------


@with_rig()
async def test_partition_errors_come_back_in_the_response(rig: Rig) -> None:
    response, _ = await rig.fetch(fetch("nope"))
    assert response.partitions[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    request, data = produce("bad name!", batch(b"a"))
    reply = await rig.core.handle(request, data, SESSION)
    assert reply is not None
    produced = reply[0]
    assert isinstance(produced, m.ProduceResponse)
    assert produced.partitions[0].error_code == ErrorCode.INVALID_TOPIC_NAME


@with_rig()
async def test_request_errors_are_raised_for_the_transport(rig: Rig) -> None:
    request, data = produce(TP.topic, batch(b"a"), acks=2)
    with pytest.raises(InvalidRequestError, match="acks"):
        await rig.core.handle(request, data, SESSION)
    with pytest.raises(UnknownApiError):
        await rig.core.handle(m.HandshakeRequest(), bytearray(), SESSION)
    rig.core.begin_shutdown()
    with pytest.raises(BrokerShuttingDownError):
        await rig.produce(b"a")


@with_rig(max_fetch_bytes=1000)
async def test_a_fetch_reserves_its_budget_and_nothing_else_does(rig: Rig) -> None:
    assert rig.core.reserve(fetch(TP.topic)) == 1000
    assert rig.core.reserve(m.MetadataRequest()) == 0


@with_rig()
async def test_group_requests_see_the_peer_host(rig: Rig) -> None:
    async def handled(request: m.Request) -> Reply:
        # A group change is answered once it is fsynced: release the rig's held fsyncs.
        task = asyncio.ensure_future(rig.core.handle(request, bytearray(), SESSION))
        while not task.done():
            rig.fsyncs.release()
            await asyncio.sleep(0)
        return task.result()

    join = m.JoinGroupRequest("g", subscribed_topics=(TP.topic,))
    reply = await handled(join)
    assert reply is not None
    described = await handled(m.DescribeGroupsRequest(("g",)))
    assert described is not None
    assert SESSION.peer_host in repr(described[0])


# --- auto-creation ----------------------------------------------------------------------------


@with_rig()
async def test_pipelined_produces_to_a_new_topic_land_in_order(rig: Rig) -> None:
    requests = [produce("fresh", batch(b"%d" % i)) for i in range(20)]
    replies = await asyncio.gather(*(rig.core.handle(r, d, SESSION) for r, d in requests))
    offsets = []
    for reply in replies:
        assert reply is not None
        response = reply[0]
        assert isinstance(response, m.ProduceResponse)
        offsets.append(response.partitions[0].base_offset)
    assert offsets == list(range(20))


@with_rig(max_auto_create_per_request=2)
async def test_a_produce_auto_creates_at_most_the_cap(rig: Rig) -> None:
    data = bytearray()
    parts = []
    for i in range(4):
        one = batch(b"x")
        parts.append(m.ProducePartition(f"new-{i}", 0, len(one)))
        data += one
    reply = await rig.core.handle(m.ProduceRequest(tuple(parts)), data, SESSION)
    assert reply is not None
    response = reply[0]
    assert isinstance(response, m.ProduceResponse)
    codes = [p.error_code for p in response.partitions]
    assert codes == [0, 0, ErrorCode.POLICY_VIOLATION, ErrorCode.POLICY_VIOLATION]
    assert "max_auto_create_per_request" in (response.partitions[2].error_message or "")
    user_topics = [t for t in rig.core.manager.topics() if not t.startswith("__")]
    assert sorted(user_topics) == ["events", "new-0", "new-1"]


# --- share-group members and their connection ------------------------------------------------


async def _driven(rig: Rig, coro: Coroutine[Any, Any, Any], turns: int = 10_000) -> Any:
    """Run ``coro`` to its end, letting every fsync it waits for through (bounded in turns)."""
    task = asyncio.ensure_future(coro)
    for _ in range(turns):
        if task.done():
            return task.result()
        rig.fsyncs.release()
        await asyncio.sleep(0)
    task.cancel()
    raise AssertionError("the request never finished")


@with_rig()
async def test_a_member_fetching_on_one_connection_holds_one_close_callback(rig: Rig) -> None:
    await _driven(rig, rig.produce(*(b"%d" % i for i in range(50))))
    session = Session("127.0.0.1", 40001)
    fetch = sm.ShareFetchRequest("g", "worker", (TP.topic,), max_records=1, max_wait_ms=0)
    taken = []
    for _ in range(50):  # was: one callback kept per fetch, for the connection's life
        reply = await _driven(rig, rig.core.handle(fetch, bytearray(), session))
        response = reply[0]
        assert isinstance(response, sm.ShareFetchResponse) and response.error_code == 0
        taken += [r.offset for r in response.records]
    assert taken == list(range(50))
    assert len(session.closed_callbacks) == 1
    session.close()  # the connection ends: what the member held is released, once
    assert rig.core.shares is not None
    group = rig.core.shares.groups["g"]
    assert group.partitions[TP].counts(0)[0] == 0  # nothing in flight
    assert session.closed_callbacks == {}


@with_rig()
async def test_the_acks_of_one_turn_share_one_batch_of_share_state(rig: Rig) -> None:
    await _driven(rig, rig.produce(*(b"%d" % i for i in range(16))))
    shares = rig.core.shares
    assert shares is not None
    members = [f"worker-{i}" for i in range(16)]
    sessions = [Session("127.0.0.1", 41000 + i) for i in range(16)]
    for member, session in zip(members, sessions, strict=True):
        fetch = sm.ShareFetchRequest("g", member, (TP.topic,), max_records=1, max_wait_ms=0)
        reply = await _driven(rig, rig.core.handle(fetch, bytearray(), session))
        assert isinstance(reply[0], sm.ShareFetchResponse) and len(reply[0].records) == 1
    state = rig.core.manager.get_log(shares.store.tp(shares.store.partition_for("g")))

    def batches() -> int:
        return sum(1 for _ in iter_batches(state.read(0, 1 << 24).records))

    before = batches()
    acks = [
        sm.ShareAcknowledgeRequest("g", member, (sm.ShareAck(TP.topic, 0, offset),))
        for offset, member in enumerate(members)
    ]
    replies = await _driven(
        rig,
        asyncio.gather(
            *(rig.core.handle(a, bytearray(), s) for a, s in zip(acks, sessions, strict=True))
        ),
    )
    for reply in replies:
        response = reply[0]
        assert isinstance(response, sm.ShareAcknowledgeResponse)
        assert (response.error_code, response.failed) == (0, ())
    assert batches() == before + 1  # was: a batch (a build, a check, a write) per request
    assert shares.groups["g"].partitions[TP].acked == 16


@with_rig()
async def test_internal_topic_writes_share_a_batch_up_to_the_bound_and_share_its_failure(
    rig: Rig,
) -> None:
    assert rig.core.shares is not None
    store = rig.core.shares.store
    state = rig.core.manager.get_log(store.tp(0))
    half = COALESCE_MAX_ROWS // 2
    writes = [[(b"w%d-%d" % (w, i), b"v") for i in range(half)] for w in range(3)]
    await _driven(rig, asyncio.gather(*(store.write(0, rows) for rows in writes)))
    found = [b for b in iter_batches(state.read(0, 1 << 26).records)]
    assert [b.record_count for b in found] == [2 * half, half]  # the bound, then the turn's end
    keys = [r.key for b in found for r in b.records()]
    assert keys == [key for rows in writes for key, _ in rows]  # in the order of the calls

    rig.fs.inject("write", errno.EIO, path_contains=f"{store.name}-1")
    outcomes = await _driven(
        rig,
        asyncio.gather(*(store.write(1, [(b"k", b"v")]) for _ in range(2)), return_exceptions=True),
    )
    assert all(isinstance(o, StorageError) for o in outcomes), outcomes  # each waiter told
