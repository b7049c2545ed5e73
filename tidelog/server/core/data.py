"""The data path of the request core: Produce, Fetch, ListOffsets and InitProducerId.

Produce appends synchronously, before the handler's first ``await`` (the one exception, waiting
for topics to be auto-created, keeps the order too: see ``CoreState.auto_create``): requests
are started in arrival order, so pipelined produces to one partition land in order. Produce and
fetch each have a ``*_now`` form for ``RequestCore.handle_now``: the reply at once when nothing
needs waiting for (acks 0 or 1; a first read that answers the fetch), else the coroutine that
finishes. Produce's wait for durability is bounded by the request's ``timeout_ms``; fetch's
long poll by ``max_wait_ms``. Both deadlines run on the injected
:class:`~tidelog.server.core.types.DeadlineClock`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from tidelog.schemas.types import ValidationMode
from tidelog.wire import messages as m
from tidelog.wire.api import split_data
from tidelog.wire.errors import (
    BrokerError,
    BrokerShuttingDownError,
    CorruptBatchError,
    CorruptMessageError,
    InvalidRequestError,
    RequestTimedOutError,
    UnreadableRangeError,
)
from tidelog.wire.records import Buffer, batch_size_at

from ..config import BrokerConfig
from ..log import PartitionLog, TopicPartition
from ..metrics import BrokerMetrics
from .idempotence import MAX_EPOCH
from .schema_guard import SchemaGuard
from .state import CoreState, check_client_writable
from .types import Outcome, Reply, finish

log = logging.getLogger("tidelog.server.core")
_ACKS: Final = frozenset((m.Acks.NONE, m.Acks.LEADER, m.Acks.ALL))


def fetch_reservation(request: m.FetchRequest, config: BrokerConfig) -> int:
    """The data bytes a fetch may return, which the connection holds for it up front: a
    fetch's answer is far bigger than the request."""
    return config.fetch_budget(request.max_bytes)


class DataApis:
    """Serves Produce, Fetch and ListOffsets from the partition logs."""

    def __init__(self, state: CoreState) -> None:
        self._state = state
        self.schemas = SchemaGuard()
        """Validation on produce for topics with ``schema_validation`` set."""
        self.metrics: BrokerMetrics | None = None
        """Counts records and bytes in and out per topic, when set (per partition, never per
        record: a partition's records are the change of its log end offset)."""

    # --- produce ------------------------------------------------------------------------

    async def produce(self, request: m.ProduceRequest, data: bytearray) -> Reply:
        return await finish(self.produce_now(request, data))

    def produce_now(self, request: m.ProduceRequest, data: bytearray) -> Outcome:
        """Append at once and return the reply, unless a topic must be auto-created first
        (then nothing is appended yet) or the acks wait for a flush (then the batches are
        appended and the coroutine waits): see :meth:`RequestCore.handle_now`."""
        state = self._state
        if state.shutting_down:
            raise BrokerShuttingDownError()
        acks = request.acks
        if acks not in _ACKS:
            raise InvalidRequestError(f"acks must be 0, 1 or -1, not {acks}")
        sections = split_data([p.size for p in request.partitions], data)
        if state.creating(p.topic for p in request.partitions):
            return self._produce_created(request, sections)
        return self._append(request, sections, {})

    async def _produce_created(
        self, request: m.ProduceRequest, sections: list[memoryview]
    ) -> Reply:
        failed = await self._state.auto_create(p.topic for p in request.partitions)
        return await finish(self._append(request, sections, failed))

    def _append(
        self,
        request: m.ProduceRequest,
        sections: list[memoryview],
        failed: dict[str, BrokerError],
    ) -> Outcome:
        """Append each partition's batches (nothing else runs meanwhile: batches land in
        request order); the reply, or the coroutine that waits for their durability."""
        state = self._state
        acks = request.acks
        writes = state.write_path
        metrics = self.metrics
        results: list[m.ProducePartitionResult] = []
        waits: list[tuple[int, asyncio.Future[None]]] = []
        for index, (target, section) in enumerate(zip(request.partitions, sections, strict=True)):
            topic, partition = target.topic, target.partition
            try:
                if topic in failed:
                    raise failed[topic]
                state.serving(topic, partition)
                check_client_writable(topic, "produce to")
                if state.produce_guard is not None:  # a queue's backlog limit
                    state.produce_guard(topic)
                tp = TopicPartition(topic, partition)
                plog = state.manager.get_log(tp)
                batches = _split_batches(section)
                validation = plog.config.schema_validation
                if validation is not ValidationMode.NONE:  # nothing invalid reaches the log
                    self.schemas.check(state.manager, topic, validation, batches)
                if metrics is not None:  # before: the log end, to count what is appended
                    end = plog.log_end_offset
                appended = writes.append(tp, batches, acks)
                if metrics is not None:
                    counts = metrics.topic(topic)
                    counts.records_in += plog.log_end_offset - end
                    counts.bytes_in += len(section)
            except BrokerError as exc:
                log.debug("produce to %s-%d failed: %s", topic, partition, exc)
                results.append(m.ProducePartitionResult(topic, partition, exc.code, exc.message))
                continue
            results.append(
                m.ProducePartitionResult(
                    topic,
                    partition,
                    base_offset=appended.base_offset,
                    log_start_offset=appended.log_start_offset,
                )
            )
            if appended.durable is not None:
                waits.append((index, appended.durable))
        if waits:
            return self._await_durable(request, results, waits)
        return _produce_reply(acks, results)

    async def _await_durable(
        self,
        request: m.ProduceRequest,
        results: list[m.ProducePartitionResult],
        waits: list[tuple[int, asyncio.Future[None]]],
    ) -> Reply:
        """Wait, within the request's ``timeout_ms``, until each partition's batches are as
        durable as the acks promise, then reply; a partition that fails or runs out of time
        gets its error in place of its offsets (its batches stay in the log, as in Kafka)."""
        clock = self._state.clock
        timeout_ms = max(request.timeout_ms, 0)
        deadline = clock.monotonic() + timeout_ms / 1000
        for index, durable in waits:
            error: BrokerError
            if not await clock.wait(durable, deadline - clock.monotonic()):
                error = RequestTimedOutError(f"not flushed within the request's {timeout_ms} ms")
            elif durable.cancelled():
                error = BrokerShuttingDownError("the flush was cancelled by the broker stopping")
            else:
                exc = durable.exception()
                if exc is None:
                    continue
                if not isinstance(exc, BrokerError):
                    raise exc
                error = exc
            r = results[index]
            results[index] = m.ProducePartitionResult(
                r.topic, r.partition, error.code, error.message
            )
        return _produce_reply(request.acks, results)

    # --- fetch --------------------------------------------------------------------------

    async def fetch(self, request: m.FetchRequest) -> Reply:
        return await finish(self.fetch_now(request))

    def fetch_now(self, request: m.FetchRequest) -> Outcome:
        """The reply at once when a first read answers the fetch (enough data, no wait
        asked, an error), else the coroutine that long-polls: see
        :meth:`RequestCore.handle_now`."""
        state = self._state
        if request.replica_id >= 0:
            if state.replication is None:
                raise InvalidRequestError("replica fetches go to brokers in a cluster")
            return state.replication.fetch(request, fetch_reservation(request, state.config))
        clock = state.clock
        max_wait = min(max(request.max_wait_ms, 0), state.config.max_fetch_wait_ms) / 1000
        deadline = clock.monotonic() + max_wait
        min_bytes = max(request.min_bytes, 0)
        max_bytes = fetch_reservation(request, state.config)
        if any(p.verify for p in request.partitions):
            return self._verified_fetch(request, deadline, min_bytes, max_bytes)
        metrics = self.metrics
        sent: list[tuple[str, int, int]] | None = None if metrics is None else []
        results, chunks, total = self._read(request.partitions, max_bytes, sent)
        if not self._answered(results, total, min_bytes, deadline):
            # A coroutine runs later: if an append was notified in between, it reads again
            # before it waits, so none is missed.
            version = state.notifier.version
            return self._long_poll(request, deadline, min_bytes, max_bytes, version)
        if metrics is not None and sent is not None:
            _count_fetch(metrics, sent, 0.0, -1.0)
        return m.FetchResponse(tuple(results)), chunks

    def _answered(
        self, results: list[m.FetchPartitionResult], total: int, min_bytes: int, deadline: float
    ) -> bool:
        """Whether a read answers the fetch now: enough bytes, no time left, an error."""
        state = self._state
        return (
            total >= min_bytes
            or deadline - state.clock.monotonic() <= 0
            or state.shutting_down
            or any(r.error_code for r in results)
        )

    async def _verified_fetch(
        self, request: m.FetchRequest, deadline: float, min_bytes: int, max_bytes: int
    ) -> Reply:
        await self._verify(request.partitions, max_bytes)
        return await self._long_poll(request, deadline, min_bytes, max_bytes)

    async def _long_poll(
        self,
        request: m.FetchRequest,
        deadline: float,
        min_bytes: int,
        max_bytes: int,
        read_at: int = -1,
    ) -> Reply:
        """Read, and wait for appends until the read answers the fetch or time is up.
        ``read_at``: the notifier's version when the caller read too little; while it is
        still the version, that read stands and the poll starts by waiting."""
        state = self._state
        clock = state.clock
        metrics = self.metrics
        sent: list[tuple[str, int, int]] | None = None if metrics is None else []
        waited_from = -1.0
        stale = read_at != state.notifier.version
        while True:
            if stale:
                results, chunks, total = self._read(request.partitions, max_bytes, sent)
                if self._answered(results, total, min_bytes, deadline):
                    if metrics is not None and sent is not None:
                        waited = clock.monotonic() - waited_from
                        _count_fetch(metrics, sent, waited, waited_from)
                    return m.FetchResponse(tuple(results)), chunks
            stale = True
            remaining = deadline - clock.monotonic()
            if sent is not None:
                sent.clear()  # read again after the wait: only the last read is sent
                if waited_from < 0:
                    waited_from = clock.monotonic()
            # No await since the read (or the notifier's version check): no append can have
            # slipped in between.
            with state.notifier.watch((p.topic, p.partition) for p in request.partitions) as woken:
                await clock.wait(woken, remaining)

    async def _verify(self, partitions: Sequence[m.FetchPartition], max_bytes: int) -> None:
        """A client found a batch that failed its CRC: check those bytes on disk first, so
        damage there is isolated (and the read below answers DAMAGED_RANGE)."""
        for p in partitions:
            if p.verify:
                tp = TopicPartition(p.topic, p.partition)
                budget = min(max(p.max_bytes, 0), max_bytes)
                try:
                    await self._state.manager.verify(tp, p.offset, budget)
                except BrokerError as exc:  # the read below reports what matters
                    log.debug("verifying %s at %d: %s", tp, p.offset, exc)

    def _read(
        self,
        partitions: Sequence[m.FetchPartition],
        max_bytes: int,
        sent: list[tuple[str, int, int]] | None = None,
    ) -> tuple[list[m.FetchPartitionResult], list[Buffer], int]:
        """Read each partition; ``sent`` (when given) gets ``(topic, records, bytes)`` for each
        partition with data (records: the offsets its batches span)."""
        state = self._state
        results: list[m.FetchPartitionResult] = []
        chunks: list[Buffer] = []
        total = 0
        for p in partitions:
            try:
                plog = state.log(p.topic, p.partition)
                # The first partition with data always gets at least one whole batch (so a
                # consumer never stalls on a large batch); the rest share what is left.
                budget = min(max(p.max_bytes, 0), max_bytes - total)
                payload = b""
                if total == 0 or budget > 0:
                    read = plog.read(
                        p.offset, budget, max_offset=plog.high_watermark, min_one_batch=total == 0
                    )
                    payload = read.records
                    if sent is not None and payload:
                        sent.append((p.topic, read.next_offset - read.first_offset, len(payload)))
            except UnreadableRangeError as exc:  # damaged or missing: say where data resumes
                results.append(fetch_result(p, plog, 0, exc, exc.next_offset))
                continue
            except BrokerError as exc:
                results.append(m.FetchPartitionResult(p.topic, p.partition, exc.code, exc.message))
                continue
            chunks.append(payload)
            total += len(payload)
            results.append(fetch_result(p, plog, len(payload)))
        return results, chunks, total

    # --- idempotent producers -----------------------------------------------------------

    async def init_producer_id(self, request: m.InitProducerIdRequest) -> m.InitProducerIdResponse:
        """A new producer id at epoch 0, or (KIP-360) the caller's id at its next epoch, which
        fences any older instance still writing with it."""
        state = self._state
        ids = state.producer_ids
        if ids is None or state.writes is None:
            raise BrokerShuttingDownError("the broker is not running")
        if request.transactional_id is not None:
            raise InvalidRequestError(
                "transactions are not supported yet: send no transactional_id"
            )
        state.writes.producers.expire()
        if request.producer_id >= 0 and 0 <= request.producer_epoch < MAX_EPOCH:
            return m.InitProducerIdResponse(
                producer_id=request.producer_id, producer_epoch=request.producer_epoch + 1
            )
        shared = None if state.cluster is None else state.cluster.reserve_producer_ids
        return m.InitProducerIdResponse(producer_id=await ids.allocate(shared), producer_epoch=0)

    # --- offsets ------------------------------------------------------------------------

    def list_offsets(self, request: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
        results = []
        for p in request.partitions:
            try:
                plog = self._state.log(p.topic, p.partition)
                if p.timestamp == m.OffsetSpec.LATEST:
                    offset, ts = plog.high_watermark, -1
                elif p.timestamp == m.OffsetSpec.EARLIEST:
                    offset, ts = plog.log_start_offset, -1
                elif p.timestamp < 0:
                    raise InvalidRequestError(f"bad ListOffsets timestamp {p.timestamp}")
                else:
                    found = plog.offset_for_timestamp(p.timestamp)
                    offset, ts = (-1, -1) if found is None else (found.offset, found.timestamp)
            except BrokerError as exc:
                results.append(
                    m.ListOffsetsPartitionResult(p.topic, p.partition, exc.code, exc.message)
                )
            else:
                results.append(
                    m.ListOffsetsPartitionResult(p.topic, p.partition, offset=offset, timestamp=ts)
                )
        return m.ListOffsetsResponse(tuple(results))


def fetch_result(
    p: m.FetchPartition,
    plog: PartitionLog,
    size: int,
    error: BrokerError | None = None,
    next_offset: int = m.NO_OFFSET,
) -> m.FetchPartitionResult:
    """A partition's fetch answer: ``size`` bytes of data, or ``error`` (with the offsets
    that tell the reader where to go on)."""
    hw = plog.high_watermark
    if error is None:
        return m.FetchPartitionResult(
            p.topic, p.partition, 0, None, hw, hw, plog.log_start_offset, size
        )
    return m.FetchPartitionResult(
        p.topic,
        p.partition,
        error.code,
        error.message,
        high_watermark=hw,
        last_stable_offset=hw,
        log_start_offset=plog.log_start_offset,
        next_offset=next_offset,
    )


def _count_fetch(
    metrics: BrokerMetrics, sent: list[tuple[str, int, int]], waited: float, waited_from: float
) -> None:
    """Count a fetch's records and bytes per topic, and its long-poll wait if it waited."""
    for topic, records, nbytes in sent:
        counts = metrics.topic(topic)
        counts.records_out += records
        counts.bytes_out += nbytes
    if waited_from >= 0:
        metrics.fetch_wait.observe(waited)


def _produce_reply(acks: int, results: list[m.ProducePartitionResult]) -> Reply:
    if acks == m.Acks.NONE:
        return None
    return m.ProduceResponse(tuple(results)), ()


def _split_batches(section: memoryview) -> list[memoryview]:
    """The batches of one partition's section; the log validates each one fully."""
    out = []
    pos = 0
    end = len(section)
    if end == 0:
        raise InvalidRequestError("no record batch for this partition")
    try:
        while pos < end:
            size = batch_size_at(section, pos)
            if size is None or pos + size > end:
                raise CorruptBatchError(f"data ends inside a batch at byte {pos}")
            out.append(section[pos : pos + size])
            pos += size
    except CorruptBatchError as exc:
        raise CorruptMessageError(str(exc)) from None
    return out
