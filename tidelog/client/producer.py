"""The producer: ``send()`` records, get their offsets back.

A :class:`Producer` is a thin facade over three parts: the :class:`~.cluster.Cluster`
(metadata and connections), the :class:`~.accumulator.Accumulator` (records batched per
partition; its wait for memory is the back-pressure) and the :class:`~.sender.Sender` (one
loop that ships ready batches and retries the retriable failures)::

    async with Producer("127.0.0.1:7070", value_serializer="json") as producer:
        future = await producer.send("events", {"id": 1}, key=b"user-1")
        metadata = await future          # RecordMetadata(topic, partition, offset, timestamp)
        await producer.send_and_wait("events", {"id": 2})
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from itertools import chain
from operator import sub
from typing import Any, Final, Literal, NoReturn, TypeAlias

from crc32c import crc32c

from tidelog.wire import messages as m
from tidelog.wire.compression import Compression
from tidelog.wire.errors import BrokerError, ErrorCode, MessageTooLargeError
from tidelog.wire.records import BYTES_LIKE, Buffer, HeadersInput

from .accumulator import RECORD_OVERHEAD, UNBOUNDED, Accumulator, RecordFuture, record_size
from .backoff import Backoff
from .bulk import BulkFuture, Groups, column, cut, largest, partitions_of, sizes, split
from .cluster import Cluster, TopicInfo
from .errors import (
    ClientClosedError,
    ClientUsageError,
    ProducerBufferFullError,
    ProducerFencedError,
)
from .idempotence import MAX_IN_FLIGHT_PER_PARTITION, Idempotence
from .lifecycle import AsyncClient
from .partitioner import Partitioner, StickyPartitioner, choose_partition
from .sender import Sender
from .serializers import Serializer, SerializerName, get_serializer, serialize_bytes
from .types import RecordMetadata, TopicPartition
from .wakeup import Wakeup

AcksSpec: TypeAlias = Literal["none", "leader", "all", 0, 1, -1] | m.Acks
CompressionSpec: TypeAlias = Literal["none", "lz4", "zstd"] | Compression | None

_ACKS: Final[dict[object, m.Acks]] = {
    "none": m.Acks.NONE,
    "leader": m.Acks.LEADER,
    "all": m.Acks.ALL,
    0: m.Acks.NONE,
    1: m.Acks.LEADER,
    -1: m.Acks.ALL,
}


def parse_acks(acks: AcksSpec) -> m.Acks:
    try:
        return _ACKS[acks if isinstance(acks, str) else int(acks)]
    except (KeyError, TypeError, ValueError):
        raise ClientUsageError(f"acks must be 'none', 'leader' or 'all', not {acks!r}") from None


def delivery_settings(
    acks: AcksSpec | None,
    enable_idempotence: bool | None,
    max_in_flight_per_partition: int | None,
) -> tuple[m.Acks, bool, int]:
    """The ack level, whether the producer is idempotent and its batches in flight per
    partition, from what the user passed (``None``: not passed), as Kafka 3.x decides them.

    Idempotence needs ``acks="all"`` and at most 5 batches in flight per partition. Asked for
    explicitly with anything else, it is an error naming both settings; left at its default,
    it is on unless ``acks`` or ``max_in_flight_per_partition`` rule it out (then off).
    """
    level = m.Acks.ALL if acks is None else parse_acks(acks)
    if max_in_flight_per_partition is not None and max_in_flight_per_partition < 1:
        raise ClientUsageError("max_in_flight_per_partition must be at least 1")
    limit = MAX_IN_FLIGHT_PER_PARTITION
    too_many = max_in_flight_per_partition is not None and max_in_flight_per_partition > limit
    if enable_idempotence is None:
        enable_idempotence = level == m.Acks.ALL and not too_many
    elif enable_idempotence and level != m.Acks.ALL:
        raise ClientUsageError(
            f"enable_idempotence=True needs acks='all', not acks={acks!r}: pass acks='all', "
            "or enable_idempotence=False to produce without idempotence"
        )
    elif enable_idempotence and too_many:
        raise ClientUsageError(
            f"enable_idempotence=True allows at most {limit} batches in flight per partition, "
            f"not max_in_flight_per_partition={max_in_flight_per_partition}: lower it, or pass "
            "enable_idempotence=False"
        )
    if max_in_flight_per_partition is None:
        max_in_flight_per_partition = limit if enable_idempotence else UNBOUNDED
    return level, enable_idempotence, max_in_flight_per_partition


class Producer(AsyncClient):
    """Sends records to tidelog topics. Use as ``async with Producer(...)`` or call
    :meth:`start` and :meth:`close`.

    Sizes are bytes and times seconds:

    * ``batch_size``: a partition's batch is sent when it reaches this size (uncompressed),
      or ``linger`` seconds after its first record, whichever comes first. With idempotence,
      a batch that could not leave anyway (its partition has 5 batches in flight, or closed
      ones waiting) grows past it, up to four times ``batch_size``, the topic's
      ``max_message_bytes`` and ``max_request_size``, and leaves as soon as the partition has
      room: fewer, larger batches when the brokers are the slower side (see
      :mod:`tidelog.client.growth`).
    * ``compression``: ``"none"``, ``"lz4"`` or ``"zstd"``, applied per batch.
    * ``acks``: ``"none"`` (no answer; offsets are -1), ``"leader"`` or ``"all"`` (the
      default: on one broker, an fsync before the answer).
    * ``enable_idempotence`` (default on): the producer gets a producer id from the broker
      and stamps every batch with it and a per-partition sequence, so a retried batch is never
      written twice and each partition keeps the order of ``send()`` calls: exactly once per
      partition for the life of this producer (a new producer gets a new id). It needs
      ``acks="all"``: passing ``enable_idempotence=True`` with another ``acks`` (or with
      ``max_in_flight_per_partition`` above 5) raises :class:`ClientUsageError`; passing only
      ``acks="leader"`` or ``"none"`` (or more than 5 in flight) turns it off, as in Kafka.
      A batch that fails for good makes the producer bump its epoch (its partition's records
      fail with the error; the next ones start a new sequence); a producer fenced by a newer
      epoch of its id fails every pending record and ``send()`` with
      :class:`~tidelog.client.errors.ProducerFencedError`. See docs/DELIVERY.md.
    * ``max_in_flight``: requests outstanding per broker connection. Without idempotence a
      partition has at most one request in flight, so retries never reorder its records; with
      it, a partition's batches go in several pipelined requests (one batch each), their
      sequences keeping the order across retries (see :mod:`tidelog.client.inflight`).
    * ``max_in_flight_per_partition``: with idempotence, batches of one partition in flight
      at once, over all its requests (default 5, at most 5: what the broker remembers per
      producer); without, batches of one partition in its one request (default: no limit but
      ``max_request_size``).
    * ``buffer_memory``: bytes of records waiting or in flight; ``send()`` waits for room
      (back-pressure), at most ``max_block`` seconds, then raises
      :class:`ProducerBufferFullError`.
    * ``retries``, ``retry_backoff``, ``retry_backoff_max``: retriable failures are retried
      with exponential backoff and jitter while ``delivery_timeout`` (counted from the batch's
      first record) allows; then the record's future fails with
      :class:`~tidelog.client.errors.DeliveryTimeoutError`.
    * ``partitioner``: ``None`` for the default (key hash for keyed records, sticky round
      robin for keyless ones; see :mod:`tidelog.client.partitioner`) or a callable.
    * ``clock``: monotonic seconds, for linger, backoff and deadlines (tests inject one).
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:7070",
        *,
        client_id: str = "tidelog-producer",
        acks: AcksSpec | None = None,
        enable_idempotence: bool | None = None,
        compression: CompressionSpec = None,
        batch_size: int = 64 * 1024,
        linger: float = 0.005,
        max_in_flight: int = 5,
        max_in_flight_per_partition: int | None = None,
        buffer_memory: int = 32 * 1024 * 1024,
        max_request_size: int = 1024 * 1024,
        max_block: float = 60.0,
        retries: int = 2**31 - 1,
        retry_backoff: float = 0.1,
        retry_backoff_max: float = 1.0,
        delivery_timeout: float = 120.0,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        metadata_max_age: float = 300.0,
        allow_auto_create_topics: bool = False,
        key_serializer: SerializerName | Serializer | None = None,
        value_serializer: SerializerName | Serializer | None = None,
        partitioner: Partitioner | None = None,
        clock: Callable[[], float] = time.monotonic,
        cluster: Cluster | None = None,
    ) -> None:
        if max_request_size < batch_size:
            raise ClientUsageError("max_request_size must be at least batch_size")
        if buffer_memory < max_request_size:
            raise ClientUsageError("buffer_memory must be at least max_request_size")
        self.acks, self.enable_idempotence, per_partition = delivery_settings(
            acks, enable_idempotence, max_in_flight_per_partition
        )
        self.max_request_size = max_request_size
        self.max_block = max_block
        self._key_serializer = get_serializer(key_serializer)
        self._value_serializer = get_serializer(value_serializer)
        self._raw_keys = self._key_serializer is serialize_bytes
        self._raw_values = self._value_serializer is serialize_bytes
        self._partitioner = partitioner
        self._sticky = StickyPartitioner()
        self._clock = clock
        self._cluster = cluster or Cluster(
            bootstrap_servers,
            client_id=client_id,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            metadata_max_age=metadata_max_age,
            allow_auto_create=allow_auto_create_topics,
            clock=clock,
        )
        # The sender sleeps on this wake-up; a batch that becomes ready sets it.
        wakeup = Wakeup()
        self._accumulator = Accumulator(
            batch_size=batch_size,
            linger=linger,
            compression=Compression.parse(compression),
            buffer_memory=buffer_memory,
            delivery_timeout=delivery_timeout,
            on_ready=wakeup.set,
            clock=clock,
        )
        self._sender = Sender(
            self._accumulator,
            self._cluster,
            wakeup=wakeup,
            acks=self.acks,
            max_in_flight=max_in_flight,
            request_timeout=request_timeout,
            retries=retries,
            retry_backoff=Backoff(retry_backoff, max(retry_backoff, retry_backoff_max)),
            max_request_size=max_request_size,
            max_batches_per_partition=per_partition,
            idempotence=Idempotence() if self.enable_idempotence else None,
            on_fatal=self._fatal,
            clock=clock,
        )
        self._cluster.add_update_listener(self._metadata_changed)
        self._memory = self._accumulator.memory
        self._sticky_current = self._sticky.current
        # Per topic: its metadata and TopicPartition objects, until the metadata changes.
        self._hot: dict[str, tuple[TopicInfo, list[TopicPartition]]] = {}
        self._started = False
        self._closed = False
        self._running = False
        self._fatal_error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the cluster and start the sender. Raises
        :class:`~tidelog.client.errors.BrokerUnavailableError` if no broker answers."""
        if self._closed:
            raise ClientClosedError("this producer is closed; create a new one")
        if self._started:
            return
        await self._cluster.start()
        self._sender.start()
        self._started = True
        self._running = True

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send what is queued, wait for its acknowledgements (at most ``timeout`` seconds,
        then fail the rest with :class:`ClientClosedError`), and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._running = False
        self._accumulator.memory.fail_waiters(
            lambda: ClientClosedError("the producer closed while send() waited for memory")
        )
        try:
            await self._sender.stop(timeout)
        finally:
            await self._cluster.close()

    # --- sending -----------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: HeadersInput | None = None,
    ) -> RecordFuture:
        """Queue a record; the returned future resolves to its :class:`RecordMetadata`.

        Waits only when ``buffer_memory`` is full (back-pressure) or the topic's metadata is
        not known yet. ``timestamp`` is milliseconds since the epoch (default: now).
        Raises :class:`ClientClosedError` after :meth:`close`, the broker's
        ``UnknownTopicOrPartitionError`` for a topic that does not exist,
        :class:`MessageTooLargeError` for a record above ``max_request_size``,
        :class:`ProducerBufferFullError` after ``max_block`` seconds without room, and
        ``ValueError`` for a partition the topic does not have.
        """
        if not self._running:
            self._raise_not_running()
        # bytes pass through the default serializer untouched: skip the call.
        if key is None or (type(key) is bytes and self._raw_keys):
            key_bytes = key
        else:
            key_bytes = _serialized(self._key_serializer(key), "key")
        if value is None or (type(value) is bytes and self._raw_values):
            value_bytes = value
        else:
            value_bytes = _serialized(self._value_serializer(value), "value")
        hot = self._hot.get(topic)
        if hot is None:
            hot = await self._prepare(topic)
            if not self._running:
                raise ClientClosedError("the producer closed while send() waited for metadata")
        info, tps = hot
        parts = info.partitions
        sticky = False
        if key_bytes is None and partition is None and self._partitioner is None:
            # The common keyless case: the topic's sticky partition, one dict lookup.
            current = self._sticky_current.get(topic)
            p = self._sticky.partition(topic, parts, info.available) if current is None else current
            sticky = True
        elif partition is None and self._partitioner is None:
            # A keyed record: the key hash, inline (see partitioner.py); one partition: 0.
            n = len(parts)
            p = (crc32c(key_bytes) & 0x7FFFFFFF) % n if n > 1 else 0  # type: ignore[arg-type]
        else:
            p, sticky = choose_partition(
                topic, key_bytes, partition, parts, info.available, self._partitioner, self._sticky
            )
        if headers:
            size = record_size(key_bytes, value_bytes, headers)
        else:
            size = RECORD_OVERHEAD
            if key_bytes is not None:
                size += len(key_bytes)
            if value_bytes is not None:
                size += len(value_bytes)
        if size > self.max_request_size:
            raise MessageTooLargeError(
                f"a record of {size} bytes is larger than max_request_size "
                f"({self.max_request_size}): send smaller records or raise max_request_size"
            )
        memory = self._memory
        if not memory.try_reserve(size):
            await self._wait_for_room(size)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        future, full = self._accumulator.append(
            tps[p], value_bytes, key_bytes, headers, timestamp, size
        )
        if full:
            if sticky:
                self._sticky.next(topic, parts, info.available)
            # A batch is ready: let the sender ship it before we build the next one, so a
            # loop that never awaits anything else keeps the broker busy in parallel instead
            # of filling buffer_memory first (one yield per batch, not per record).
            await asyncio.sleep(0)
        return future

    async def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> BulkFuture:
        """Queue many records at once: ``values[i]`` with ``keys[i]`` (no keys: keyless
        records). The bulk form of :meth:`send`, for producers that have records in lists: the
        records are checked, measured and split by partition in whole-list passes and appended
        a batch at a time, and the call returns one :class:`~.bulk.BulkFuture` instead of a
        future per record. Await it for the :class:`~.bulk.OffsetRange` of each run of
        records, or for the first batch's error.

        Records go where :meth:`send` would put them one by one (``partition``, the
        ``partitioner``, the key hash, or the sticky partition for keyless records), keep
        their order within a partition, and share one ``timestamp`` (milliseconds since the
        epoch; default: now). No headers: use :meth:`send` for records with headers.
        Back-pressure as in :meth:`send`: the call waits for ``buffer_memory`` a batch at a
        time. Raises what :meth:`send` raises, before any record is queued:
        ``TypeError`` for ``values`` or ``keys`` that are not sequences or hold an item that
        is not bytes-like (or that the serializer turns into something else),
        :class:`ClientUsageError` for as many keys as values, :class:`MessageTooLargeError`
        for a record above ``max_request_size`` (naming its index).
        """
        if not self._running:
            self._raise_not_running()
        vals = column(values, self._value_serializer, self._raw_values, "value")
        ks = None if keys is None else column(keys, self._key_serializer, self._raw_keys, "key")
        n = len(vals)
        if ks is not None and len(ks) != n:
            raise ClientUsageError(
                f"send_many() got {len(ks)} keys for {n} values: pass one key per value, "
                "or keys=None"
            )
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        result = BulkFuture(n, timestamp)
        if not n:
            return result
        hot = self._hot.get(topic)
        if hot is None:
            hot = await self._prepare(topic)
            if not self._running:
                raise ClientClosedError("the producer closed while send() waited for metadata")
        info = hot[0]
        chosen = partitions_of(
            topic,
            ks,
            n,
            partition,
            info.partitions,
            info.available,
            self._partitioner,
            lambda: self._sticky.partition(topic, info.partitions, info.available),
        )
        groups: Groups
        if isinstance(chosen, int):
            groups = {chosen: (range(n), vals, ks)}
        else:
            groups = split(chosen, vals, ks)
        runs = []
        for p, (positions, group_values, group_keys) in groups.items():
            ends = sizes(group_values, group_keys)
            limit = self.max_request_size
            # All of them fit in a request together: each one does (the common case, free).
            if ends[-1] > limit and max(map(sub, ends, chain((0,), ends))) > limit:
                at, size = largest(ends)
                raise MessageTooLargeError(
                    f"record {positions[at]} of send_many() is {size} bytes, larger than "
                    f"max_request_size ({limit}): send smaller records or "
                    "raise max_request_size"
                )
            runs.append((p, positions, group_values, group_keys, ends))
        for p, positions, group_values, group_keys, ends in runs:
            await self._extend(
                topic, p, positions, group_values, group_keys, ends, timestamp, result
            )
        return result

    async def _extend(
        self,
        topic: str,
        p: int,
        positions: Sequence[int],
        values: Sequence[Buffer | None],
        keys: Sequence[Buffer | None] | None,
        ends: list[int],
        timestamp: int,
        result: BulkFuture,
    ) -> None:
        """Append the records of one partition (``p``; -1: the topic's sticky partition, moved
        on as batches fill) a batch at a time, each run's memory reserved first."""
        acc = self._accumulator
        memory = self._memory
        sticky = p < 0
        start, n = 0, len(values)
        while start < n:
            hot = self._hot.get(topic)
            if hot is None:
                hot = await self._prepare(topic)
            info, tps = hot
            if sticky:
                current = self._sticky_current.get(topic)
                if current is None:
                    current = self._sticky.partition(topic, info.partitions, info.available)
                tp = tps[current]
            else:
                tp = tps[p]
            before = ends[start - 1] if start else 0
            room = acc.room(tp)
            if ends[start] - before > room:
                room = acc.batch_room  # not even one fits: a new batch takes them
            stop = cut(ends, start, room)
            size = ends[stop - 1] - before
            if not memory.try_reserve(size):
                await self._wait_for_room(size)
            batch, index, full = acc.extend(
                tp, values[start:stop], None if keys is None else keys[start:stop], timestamp, size
            )
            result.add(batch, index, positions[start:stop])
            start = stop
            if full:
                if sticky:
                    self._sticky.next(topic, info.partitions, info.available)
                await asyncio.sleep(0)  # let the sender ship it, as send() does

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: HeadersInput | None = None,
    ) -> RecordMetadata:
        """:meth:`send` a record and wait for its acknowledgement."""
        future = await self.send(
            topic, value, key, partition=partition, timestamp=timestamp, headers=headers
        )
        return await future

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send every queued record now and wait until each is acknowledged or failed (their
        futures carry the errors). Raises ``TimeoutError`` after ``timeout`` seconds."""
        acc = self._accumulator
        with acc.flushing():  # wakes the sender through on_ready
            futures = [b.future for b in acc.incomplete_batches()]
            if futures:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*futures, return_exceptions=True)

    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        """The partition ids of ``topic``."""
        return (await self._topic(topic)).partitions

    # --- internals ---------------------------------------------------------------------------

    async def _topic(self, topic: str) -> TopicInfo:
        """The topic's metadata, fetched if needed. A topic that exists but has no leader yet
        (just created, or failing over) is waited for, at most ``max_block`` seconds; an
        unknown topic raises at once unless the broker may create it."""
        cluster = self._cluster
        attempt = 0
        deadline = self._clock() + self.max_block
        while True:
            try:
                await cluster.partitions_for(topic)
            except BrokerError as exc:
                unknown = exc.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                if not exc.retriable or (unknown and not cluster.allow_auto_create):
                    raise
                if self._clock() >= deadline:
                    raise
                await asyncio.sleep(self._sender.backoff.delay(attempt))
                attempt += 1
                continue
            return cluster.metadata.topics[topic]  # partitions_for() returned: it is there

    async def _prepare(self, topic: str) -> tuple[TopicInfo, list[TopicPartition]]:
        info = self._cluster.metadata.topics.get(topic)
        if info is None or not info.partitions:
            info = await self._topic(topic)
        hot = (info, [TopicPartition(topic, i) for i in range(len(info.partitions))])
        self._hot[topic] = hot
        return hot

    async def _wait_for_room(self, size: int) -> None:
        self._sender.wake()  # the accumulator sends without lingering while someone waits
        try:
            async with asyncio.timeout(self.max_block):
                await self._accumulator.memory.reserve(size)
        except TimeoutError:
            raise ProducerBufferFullError(
                f"send() waited {self.max_block:g}s for {size} bytes of buffer_memory "
                f"({self._accumulator.memory.limit} bytes, all in use): the brokers accept "
                "records slower than they are produced; slow down, or raise buffer_memory or "
                "max_block"
            ) from None
        except ValueError as exc:
            raise ClientUsageError(f"{exc}: raise buffer_memory") from None
        if self._closed:
            self._accumulator.memory.release(size)
            raise ClientClosedError("the producer closed while send() waited for memory")

    def _raise_not_running(self) -> NoReturn:
        fatal = self._fatal_error
        if isinstance(fatal, ProducerFencedError):
            raise ProducerFencedError(str(fatal)) from fatal
        if fatal is not None:
            raise ClientClosedError(f"the producer can send nothing more: {fatal}") from fatal
        raise ClientClosedError(
            "the producer is not running: use 'async with Producer(...)' or await start()"
        )

    def _fatal(self, error: BaseException) -> None:
        """The sender can send nothing more (fenced): ``send()`` raises from now on."""
        self._fatal_error = error
        self._running = False

    def _metadata_changed(self) -> None:
        self._sticky.forget()
        self._hot.clear()


def _serialized(data: object, what: str) -> bytes | None:
    """A serializer's output, checked once here: the batch builder trusts what send() hands
    it."""
    if data is None or isinstance(data, BYTES_LIKE):
        return data  # type: ignore[return-value]  # bytes-like: joined as bytes by build()
    raise TypeError(
        f"the {what} serializer returned {type(data).__name__}: serializers return bytes or None"
    )
