"""A broker in memory for the producer's sender: one log per partition behind the broker's own
producer-state table (duplicates answered with their offsets, gaps and old epochs refused),
and faults scripted per produce request. It stands in for the cluster through the methods the
producer and the sender call; no socket, no clock."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from tidelog.client.cluster import Cluster, ClusterMetadata
from tidelog.client.errors import ConnectionClosedError
from tidelog.client.types import TopicPartition
from tidelog.server.log.producers import ProducerStateTable, producer_batch
from tidelog.wire import messages as m
from tidelog.wire.errors import BrokerError
from tidelog.wire.records import Buffer, RecordBatch, iter_batches

TOPIC = "t"
LOST: str = "lost"
"""Fault: append, then lose the response (the connection closes)."""
REFUSED: str = "refused"
"""Fault: the connection closes before the request reaches the broker."""


@dataclass(frozen=True, slots=True)
class Sent:
    """One batch of a produce request, as the broker saw it."""

    tp: TopicPartition
    producer_id: int
    epoch: int
    sequence: int
    values: tuple[bytes, ...]


class FakeBroker:
    """Appends and answers like the real write path; ``faults`` are taken one per produce
    request (``LOST``, ``REFUSED``, an error code for every partition, or ``None``)."""

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = partitions
        self.logs: dict[TopicPartition, list[bytes]] = {
            TopicPartition(TOPIC, p): [] for p in range(partitions)
        }
        self.tables = {tp: ProducerStateTable(60_000) for tp in self.logs}
        self.faults: deque[str | int | None] = deque()
        self.requests: list[list[Sent]] = []
        self.inits: list[m.InitProducerIdRequest] = []
        self.init_errors: deque[int] = deque()
        self.gate: asyncio.Event | None = None
        """While set to an unset event, produce requests wait for it."""
        self.next_id = 100
        self.flying: Counter[TopicPartition] = Counter()
        """Batches per partition inside produce() now (arrived, not answered)."""
        self.peak: Counter[TopicPartition] = Counter()
        """The most batches of each partition ever inside produce() at once."""
        self.waiting = 0
        """Produce requests waiting for the gate."""
        self._arrival = asyncio.Event()

    def values(self, tp: TopicPartition) -> list[bytes]:
        return self.logs[tp]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, looking each time a produce request arrives at
        the (unset) gate; fail after 10 s (it never came: a test failure, not a sleep)."""
        async with asyncio.timeout(10):
            while not condition():
                self._arrival.clear()
                await self._arrival.wait()

    async def produce(self, request: m.ProduceRequest, data: Sequence[Buffer]) -> m.ProduceResponse:
        sections = _sections(request, data)
        counts = Counter({tp: len(batches) for tp, batches in sections})
        self.flying.update(counts)
        for tp in counts:
            self.peak[tp] = max(self.peak[tp], self.flying[tp])
        try:
            if self.gate is not None and not self.gate.is_set():
                self.waiting += 1
                self._arrival.set()
                try:
                    await self.gate.wait()
                finally:
                    self.waiting -= 1
            return self._produce(sections)
        finally:
            self.flying.subtract(counts)

    def _produce(
        self, sections: list[tuple[TopicPartition, list[RecordBatch]]]
    ) -> m.ProduceResponse:
        fault = self.faults.popleft() if self.faults else None
        if fault == REFUSED:
            raise ConnectionClosedError("the connection closed (scripted)")
        sent: list[Sent] = []
        results = []
        for tp, batches in sections:
            sent.extend(_sent(tp, b) for b in batches)
            if isinstance(fault, int):
                results.append(m.ProducePartitionResult(tp.topic, tp.partition, fault))
                continue
            results.append(self._append(tp, batches))
        self.requests.append(sent)
        if fault == LOST:
            raise ConnectionClosedError("the response was lost (scripted)")
        return m.ProduceResponse(tuple(results))

    def _append(self, tp: TopicPartition, batches: list[RecordBatch]) -> m.ProducePartitionResult:
        log, table = self.logs[tp], self.tables[tp]
        length = len(log)
        first = -1
        try:
            for batch in batches:
                meta = producer_batch(batch.buffer)
                original = None if meta is None else table.check(meta)
                if original is not None:
                    first = original.base_offset if first < 0 else first
                    continue
                base = len(log)
                log.extend(r.value or b"" for r in batch.records())
                first = base if first < 0 else first
                if meta is not None:
                    table.update(meta, base, len(log) - 1, 0)
        except BrokerError as exc:
            del log[length:]
            table.offset = min(table.offset, length)
            return m.ProducePartitionResult(tp.topic, tp.partition, exc.code, exc.message)
        return m.ProducePartitionResult(tp.topic, tp.partition, base_offset=first)

    def init_producer_id(self, request: m.InitProducerIdRequest) -> m.InitProducerIdResponse:
        self.inits.append(request)
        if self.init_errors:
            return m.InitProducerIdResponse(error_code=self.init_errors.popleft())
        if request.producer_id >= 0:
            return m.InitProducerIdResponse(
                producer_id=request.producer_id, producer_epoch=request.producer_epoch + 1
            )
        self.next_id += 1
        return m.InitProducerIdResponse(producer_id=self.next_id - 1, producer_epoch=0)


def _sections(
    request: m.ProduceRequest, data: Sequence[Buffer]
) -> list[tuple[TopicPartition, list[RecordBatch]]]:
    """Each partition of ``request`` with its batches."""
    section = b"".join(bytes(d) for d in data)
    pos = 0
    out = []
    for part in request.partitions:
        out.append(
            (
                TopicPartition(part.topic, part.partition),
                list(iter_batches(section[pos : pos + part.size])),
            )
        )
        pos += part.size
    return out


def _sent(tp: TopicPartition, batch: RecordBatch) -> Sent:
    values = tuple(r.value or b"" for r in batch.records())
    return Sent(tp, batch.producer_id, batch.producer_epoch, batch.base_sequence, values)


class FakeConnection:
    """What the sender uses of a :class:`~tidelog.client.connection.Connection`."""

    closed = False

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def request(
        self,
        message: m.Request,
        *,
        data: Sequence[Buffer] = (),
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> tuple[m.Response, bytes]:
        if isinstance(message, m.InitProducerIdRequest):
            return self.broker.init_producer_id(message), b""
        assert isinstance(message, m.ProduceRequest)
        return await self.broker.produce(message, data), b""


class FakeCluster:
    """What the producer and the sender use of a :class:`Cluster`: one broker, node 1,
    leading every partition of topic ``t``."""

    allow_auto_create = False
    metadata_stale = False

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.conn = FakeConnection(broker)
        self.metadata = ClusterMetadata.from_response(
            m.MetadataResponse(
                brokers=(m.BrokerInfo(1, "127.0.0.1", 1),),
                controller_id=1,
                cluster_id="fake",
                topics=(
                    m.TopicMetadata(
                        TOPIC,
                        partitions=tuple(
                            m.PartitionMetadata(p, leader=1) for p in range(broker.partitions)
                        ),
                    ),
                ),
            )
        )

    def as_cluster(self) -> Cluster:
        return cast(Cluster, self)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def add_update_listener(self, callback: Any) -> None:
        pass

    def request_refresh(self) -> asyncio.Future[ClusterMetadata]:
        future: asyncio.Future[ClusterMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(self.metadata)
        return future

    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        parts = self.metadata.partitions_for(topic)
        assert parts is not None
        return parts

    def ready_connection(self, node_id: int) -> FakeConnection:
        return self.conn

    async def connection(self, node_id: int) -> FakeConnection:
        return self.conn

    async def any_connection(self) -> FakeConnection:
        return self.conn
