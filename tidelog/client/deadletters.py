"""Dead-letter topics as an operator sees them: list, show, redrive, purge (docs/QUEUES.md,
"Redrive and purge"). The logic lives here so the CLI and the HTTP gateway share it.

Two marks per dead-letter partition, kept as the committed offsets of two reserved consumer
groups (durable, and never a member: an administrator commits them):

* ``tidelog.dlq.purged``: records below it are purged, hidden from every operation here (a
  log keeps whole segments: the bytes go with the topic's retention);
* ``tidelog.dlq.redriven``: a full redrive (no filter) has sent everything below it back; an
  interrupted one resumes there, so redrive is safe to interrupt and run again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Final

from tidelog.wire import messages as m
from tidelog.wire.share_messages import DLQ_HEADER_PREFIX, REDRIVE_COUNT_HEADER

from .accumulator import RecordFuture
from .admin import AdminClient
from .consumer import Consumer
from .errors import ClientUsageError
from .offsets import OffsetAndMetadata
from .producer import Producer
from .types import AnyRecord, Headers, TopicPartition

PURGE_GROUP: Final = "tidelog.dlq.purged"
REDRIVE_GROUP: Final = "tidelog.dlq.redriven"
DEFAULT_REDRIVE_RATE: Final = 100.0
"""Records per second (Amazon SQS's redrive is rate-limited too: it must not swamp workers)."""
MAX_REDRIVE_RATE: Final = 100_000.0
REDRIVE_CHUNK: Final = 500
"""Records sent between two confirmed checkpoints of a redrive."""
SCAN_WAIT: Final = 1.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic, its dead-letter headers parsed."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    """The record's own headers (the dead-letter ones removed)."""
    context: dict[str, str] = field(default_factory=dict)
    """The ``tidelog.dlq.*`` headers without the prefix: source_topic, source_partition,
    source_offset, group, delivery_count, reason, error, first/last_delivery_ms."""

    @classmethod
    def from_record(cls, r: AnyRecord) -> DeadLetter:
        own = tuple((k, v) for k, v in r.headers if not k.startswith(DLQ_HEADER_PREFIX))
        context = {
            k.removeprefix(DLQ_HEADER_PREFIX): (v or b"").decode("utf-8", "replace")
            for k, v in r.headers
            if k.startswith(DLQ_HEADER_PREFIX)
        }
        return cls(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, own, context)

    @property
    def reason(self) -> str:
        return self.context.get("reason", "")

    @property
    def source(self) -> TopicPartition | None:
        """Where the record was dead-lettered from (``None``: not a dead letter)."""
        topic, partition = self.context.get("source_topic"), self.context.get("source_partition")
        if not topic or partition is None or not partition.isdigit():
            return None
        return TopicPartition(topic, int(partition))

    @property
    def redrive_count(self) -> int:
        for k, v in self.headers:
            if k == REDRIVE_COUNT_HEADER and v is not None and v.isdigit():
                return int(v)
        return 0

    def redriven_headers(self) -> Headers:
        """The headers a redriven copy carries: its own, the redrive count one more."""
        own = tuple((k, v) for k, v in self.headers if k != REDRIVE_COUNT_HEADER)
        return (*own, (REDRIVE_COUNT_HEADER, str(self.redrive_count + 1).encode()))


@dataclass(frozen=True, slots=True)
class DeadLetterPartition:
    """Where one dead-letter partition stands: records from ``first`` to ``end`` are listed."""

    partition: int
    log_start: int
    purged_to: int
    redriven_to: int
    end: int

    @property
    def first(self) -> int:
        return max(self.log_start, self.purged_to)

    @property
    def size(self) -> int:
        return max(self.end - self.first, 0)


@dataclass(frozen=True, slots=True)
class RedriveResult:
    redriven: int
    skipped: int
    """Records left where they are: filtered out, or not a dead letter and no ``to``."""
    next_offsets: dict[int, int]
    """Per dead-letter partition, the offset after the last record looked at: an
    interrupted filtered redrive resumes with ``start=`` this."""


class Pacer:
    """At most ``rate`` records per second on average: the n-th waits until n / rate seconds
    after the first. ``clock`` and ``sleep`` are injectable (tests drive time)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < rate <= MAX_REDRIVE_RATE:
            raise ClientUsageError(f"a rate is more than 0 and at most {MAX_REDRIVE_RATE:g}/s")
        self._interval = 1 / rate
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None

    async def wait(self) -> None:
        now = self._clock()
        if self._next is None or self._next < now - self._interval:
            self._next = now  # the first one, or after a pause: no burst to catch up
        if self._next > now:
            await self._sleep(self._next - now)
        self._next += self._interval


class QueueAdmin:
    """Share groups and their dead-letter topics, for operators (``tidelog queue``, the
    gateway). Every call opens its own clients; errors are the broker's typed ones."""

    def __init__(
        self, bootstrap_servers: str | Sequence[str], *, request_timeout: float = 30.0
    ) -> None:
        self.bootstrap = bootstrap_servers
        self.request_timeout = request_timeout

    def _admin(self) -> AdminClient:
        return AdminClient(self.bootstrap, request_timeout=self.request_timeout)

    async def partitions(self, dlq_topic: str) -> list[DeadLetterPartition]:
        """Each partition of ``dlq_topic``: its log start, the two marks and its end.
        Raises ``UnknownTopicOrPartitionError`` for a topic that does not exist."""
        async with self._admin() as admin:
            [info] = await admin.describe_topics([dlq_topic])
            tps = [TopicPartition(dlq_topic, p.partition) for p in info.partitions]
            starts = await admin.list_offsets({tp: m.OffsetSpec.EARLIEST for tp in tps})
            ends = await admin.list_offsets({tp: m.OffsetSpec.LATEST for tp in tps})
            purged = await admin.list_committed(PURGE_GROUP)
            redriven = await admin.list_committed(REDRIVE_GROUP)
        return [
            DeadLetterPartition(
                tp.partition,
                starts[tp].offset,
                purged[tp].offset if tp in purged else 0,
                redriven[tp].offset if tp in redriven else 0,
                ends[tp].offset,
            )
            for tp in tps
        ]

    async def list(
        self,
        dlq_topic: str,
        *,
        limit: int = 100,
        reasons: Collection[str] | None = None,
        start: int | None = None,
        partitions: Iterable[int] | None = None,
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (not purged), oldest first per partition; only
        ``reasons`` if given, from ``start`` if given."""
        out: list[DeadLetter] = []
        async with aclosing(self._scan(dlq_topic, start=start, partitions=partitions)) as scan:
            async for letter in scan:
                if reasons is None or letter.reason in reasons:
                    out.append(letter)
                    if len(out) >= limit:
                        break
        return out

    async def show(self, dlq_topic: str, offset: int, partition: int = 0) -> DeadLetter | None:
        """The dead letter at ``offset`` (``None``: no such record, or purged)."""
        async with aclosing(self._scan(dlq_topic, start=offset, partitions=[partition])) as scan:
            async for letter in scan:
                return letter if letter.offset == offset else None
        return None

    async def purge(
        self, dlq_topic: str, *, before: int | None = None, partitions: Iterable[int] | None = None
    ) -> dict[int, int]:
        """Purge every dead letter below ``before`` (``None``: all there are now) of each
        partition (all if ``partitions`` is None); returns the new marks. A mark never moves
        back."""
        wanted = None if partitions is None else set(partitions)
        marks: dict[int, int] = {}
        for p in await self.partitions(dlq_topic):
            if wanted is None or p.partition in wanted:
                target = p.end if before is None else min(before, p.end)
                marks[p.partition] = max(target, p.purged_to)
        if marks:
            await self._commit(PURGE_GROUP, dlq_topic, marks)
        return marks

    async def redrive(
        self,
        dlq_topic: str,
        *,
        rate: float = DEFAULT_REDRIVE_RATE,
        to: str | None = None,
        reasons: Collection[str] | None = None,
        offsets: Collection[tuple[int, int]] | None = None,
        start: int | None = None,
        end: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[int], None] | None = None,
        chunk: int = REDRIVE_CHUNK,
    ) -> RedriveResult:
        """Send dead letters back to their source topic and partition (or to topic ``to``),
        at most ``rate`` a second, their own headers kept and the redrive count one more;
        idempotent producer, acks=all. What is sent is what exists when the call starts.

        Filters: ``reasons`` (the reason header), ``offsets`` (``(partition, offset)`` pairs),
        ``start``/``end`` (an offset range). Without any, the redrive resumes at the
        ``tidelog.dlq.redriven`` mark and moves it after each confirmed chunk: interrupted,
        it sends at most a chunk twice, never skips. ``on_progress`` gets the count so far."""
        if chunk < 1:
            raise ClientUsageError("a redrive chunk is at least 1 record")
        full = reasons is None and offsets is None and start is None and end is None
        picked = None if offsets is None else set(offsets)
        if picked:  # read only the span that holds them
            start = max(start or 0, min(o for _, o in picked))
            end = max(o for _, o in picked) + 1 if end is None else end
        pacer = Pacer(rate, clock=clock)
        bounds = {p.partition: p for p in await self.partitions(dlq_topic)}
        sent = skipped = 0
        next_offsets: dict[int, int] = {}
        pending: list[RecordFuture] = []
        async with Producer(self.bootstrap, acks="all", enable_idempotence=True) as producer:

            async def checkpoint() -> None:
                await producer.flush()
                for f in pending:
                    await f  # raises the first failure: the mark stays where it was
                pending.clear()
                if full and next_offsets:
                    await self._commit(REDRIVE_GROUP, dlq_topic, next_offsets)

            scan = self._scan(dlq_topic, start=start, resume=full, end=end)
            async with aclosing(scan):
                async for letter in scan:
                    next_offsets[letter.partition] = letter.offset + 1
                    topic, partition = await self._target(producer, letter, to)
                    if (
                        topic is None
                        or (reasons is not None and letter.reason not in reasons)
                        or (picked is not None and (letter.partition, letter.offset) not in picked)
                    ):
                        skipped += 1
                        continue
                    await pacer.wait()
                    pending.append(
                        await producer.send(
                            topic,
                            letter.value,
                            letter.key,
                            partition=partition,
                            headers=letter.redriven_headers(),
                        )
                    )
                    sent += 1
                    if on_progress is not None:
                        on_progress(sent)
                    if len(pending) >= chunk:
                        await checkpoint()
            await checkpoint()
        for p, b in bounds.items():
            next_offsets.setdefault(p, max(b.first, start or 0))
        return RedriveResult(sent, skipped, next_offsets)

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    async def _target(
        producer: Producer, letter: DeadLetter, to: str | None
    ) -> tuple[str | None, int | None]:
        """Topic and partition of a redriven copy: ``to`` (partitioned by key), else the
        source partition if its topic still has it (``None``: not a dead letter)."""
        if to is not None:
            return to, None
        source = letter.source
        if source is None:
            return None, None
        count = len(await producer.partitions_for(source.topic))
        return source.topic, source.partition if source.partition < count else None

    async def _commit(self, group: str, topic: str, marks: dict[int, int]) -> None:
        offsets = {TopicPartition(topic, p): OffsetAndMetadata(o) for p, o in marks.items()}
        async with self._admin() as admin:
            await admin.commit_offsets(group, offsets)

    async def _scan(
        self,
        dlq_topic: str,
        *,
        start: int | None = None,
        end: int | None = None,
        partitions: Iterable[int] | None = None,
        resume: bool = False,
    ) -> AsyncGenerator[DeadLetter, None]:
        """The dead letters that exist now (not purged), partition by partition, oldest
        first. Use under ``contextlib.aclosing`` (its consumer closes on a break)."""
        wanted = None if partitions is None else set(partitions)
        ranges = []
        for b in await self.partitions(dlq_topic):
            if wanted is not None and b.partition not in wanted:
                continue
            first = max(b.first, start or 0, b.redriven_to if resume else 0)
            last = b.end if end is None else min(end, b.end)
            if first < last:
                ranges.append((TopicPartition(dlq_topic, b.partition), first, last))
        if not ranges:
            return
        async with Consumer(self.bootstrap, auto_offset_reset="earliest") as consumer:
            for tp, first, last in ranges:
                consumer.assign([tp])
                consumer.seek(tp, first)
                while await consumer.position(tp) < last:
                    batch = await consumer.getmany(tp, timeout=SCAN_WAIT)
                    for record in batch.get(tp, ()):
                        if record.offset >= last:
                            break
                        yield DeadLetter.from_record(record)
