"""The producer's accumulator: records gathered into per-partition batches.

Shape after aiokafka's ``producer/message_accumulator.py``:

* every partition has a deque of :class:`ProducerBatch`; records append to the last batch
  until it reaches ``batch_size`` bytes, then a new batch opens;
* a partition is *ready* when its first batch is closed (full), another batch waits behind it,
  ``linger`` has passed since it opened, or a flush, a close or a blocked ``send()`` asks for
  everything now; :meth:`Accumulator.drain` takes the ready batches, grouped by leader broker;
* memory is accounted in :class:`MemoryBudget`: ``send()`` waits there for room, which is how
  a fast producer is slowed down to the speed of the brokers (back-pressure);
* a batch that failed with a retriable error goes back to the front of its partition's
  deque, behind only the batches of earlier requests also waiting for a retry
  (:meth:`Accumulator.reenqueue`), so records keep their order;
* with idempotence, :meth:`Accumulator.drain` has each batch stamped (producer id, epoch, base
  sequence) as it takes it for the first time, takes at most ``max_batches`` of a partition,
  and sends a retried group of stamped batches again alone and whole (see :meth:`drain`).

Everything here is synchronous. Batches are stamped with the injected ``clock`` (monotonic
seconds) when they open, and :meth:`Accumulator.drain` and :meth:`Accumulator.expire` take
``now`` as an argument: tests drive time instead of sleeping.

The batches themselves, and the records' futures, are in :mod:`.batch` (importable from
here too).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, Protocol

from tidelog.wire.compression import Compression
from tidelog.wire.layouts import BATCH_HEADER_SIZE
from tidelog.wire.records import Buffer, HeadersInput, RecordBatchBuilder

from .backoff import earlier
from .batch import RECORD_OVERHEAD, ProducerBatch, RecordFuture, record_size
from .types import TopicPartition

__all__ = [
    "RECORD_OVERHEAD",
    "UNBOUNDED",
    "Accumulator",
    "MemoryBudget",
    "ProducerBatch",
    "RecordFuture",
    "record_size",
]

UNBOUNDED: Final = 2**31 - 1
"""``max_batches`` without a limit."""
MAX_GROWTH: Final = 4
"""A batch grows (see :meth:`Accumulator._grown`) to at most this many times ``batch_size``:
``batch_size`` stays the order of a batch's size (and ``batch_size=1`` still means one record
a batch)."""


def _take_group(
    dq: deque[ProducerBatch], taken: list[ProducerBatch], total: int, max_request_size: int
) -> int:
    """Move the retried group at the front of ``dq`` (the stamped batches one earlier request
    carried) to ``taken``, all of them or, if they do not fit beside what ``taken`` holds,
    none; returns the new total."""
    group: list[ProducerBatch] = []
    size = 0
    first = dq[0].group
    for batch in dq:
        if batch.sequence < 0 or batch.group != first:
            break
        group.append(batch)
        size += batch.size
    if taken and total + size > max_request_size:
        return total
    for batch in group:
        dq.popleft()
        batch.in_flight = True
        batch.attempts += 1
        taken.append(batch)
    return total + size


class PartitionGate(Protocol):
    """What the sender tells :meth:`Accumulator.drain` about each partition (its
    :class:`~.inflight.PartitionFlights`)."""

    def limit(self, tp: TopicPartition, first: ProducerBatch) -> int:
        """Batches of ``tp`` that may be taken now, ``first`` at the front of its queue (0:
        none; a retried group is taken whole when it is not 0)."""
        ...

    def in_flight(self, tp: TopicPartition) -> int:
        """Batches of ``tp`` in flight."""
        ...


class MemoryBudget:
    """``buffer_memory`` as a count of bytes: reservations wait, first come first served,
    until completed batches release enough."""

    __slots__ = ("_waiters", "limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("buffer_memory must be positive")
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> bool:
        """Whether someone waits for room (then every batch is sent without lingering)."""
        return bool(self._waiters)

    def try_reserve(self, size: int) -> bool:
        if not self._waiters and self.used + size <= self.limit:
            self.used += size
            return True
        return False

    async def reserve(self, size: int) -> None:
        """Wait until ``size`` bytes fit, behind every earlier waiter."""
        if size > self.limit:
            raise ValueError(f"a record of {size} bytes can never fit in {self.limit} bytes")
        if self.try_reserve(size):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(size)  # granted, but the waiter gave up
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, size: int) -> None:
        self.used -= size
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.used + waiters[0][0] <= self.limit:
            size, fut = waiters.popleft()
            if not fut.done():
                self.used += size
                fut.set_result(None)

    def fail_waiters(self, exc_factory: Callable[[], BaseException]) -> None:
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc_factory())


class Accumulator:
    """Per-partition batches, their readiness, and the memory they hold.

    ``on_ready`` is called whenever a batch may have become ready to send (a batch opened or
    filled, a flush began, the accumulator is closing): the sender passes its wake-up here.
    """

    def __init__(
        self,
        *,
        batch_size: int = 64 * 1024,
        linger: float = 0.005,
        compression: Compression = Compression.NONE,
        buffer_memory: int = 32 * 1024 * 1024,
        delivery_timeout: float = 120.0,
        on_ready: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if linger < 0:
            raise ValueError("linger cannot be negative")
        self.batch_size = batch_size
        self.linger = linger
        self.compression = Compression(compression)
        self.delivery_timeout = delivery_timeout
        self.memory = MemoryBudget(buffer_memory)
        self._on_ready = on_ready
        self.clock = clock
        self._flushes = 0
        self._closing = False
        self._queues: dict[TopicPartition, deque[ProducerBatch]] = {}
        self._open: dict[TopicPartition, ProducerBatch] = {}  # the last batch, if still open
        self._room = batch_size - BATCH_HEADER_SIZE
        self._incomplete: set[ProducerBatch] = set()
        self._drain_start = 0
        self._next_group = 0
        self.grow: Callable[[TopicPartition, int], int] | None = None
        """How many bytes of records a partition's open batch may hold now, given the closed
        batches queued before it (0: close it at ``batch_size``); set by an idempotent
        producer's sender (:mod:`.growth`). ``None``: batches never grow."""

    # --- adding records ----------------------------------------------------------------------

    def append(
        self,
        tp: TopicPartition,
        value: bytes | None,
        key: bytes | None,
        headers: HeadersInput | None,
        timestamp: int,
        size: int,
    ) -> tuple[RecordFuture, bool]:
        """Add a record whose ``size`` bytes are already reserved in :attr:`memory`. Returns
        its future and whether this record filled its batch: another record of its size would
        not fit, so the batch is closed and ready, or it took one more step of growth (see
        :meth:`_grown`); either way the caller should let the sender run."""
        batch = self._open.get(tp)
        if batch is not None:
            # The hot path. ``reserved`` counts what the builder counts (header aside), so
            # the size check needs no call into the builder.
            reserved = batch.reserved + size
            if reserved <= batch.room or self._grown(batch, reserved):
                if headers:
                    index = batch.builder.append(value, key, headers, timestamp)
                else:  # the producer checked the types and counted the size
                    index = batch.builder.append_sized(value, key, timestamp, size)
                batch.reserved = reserved
                if reserved + size > batch.room:  # full, or one more step of growth
                    if not self._grown(batch, reserved + size):
                        self._seal(batch)
                    return RecordFuture(batch, index, timestamp), True
                return RecordFuture(batch, index, timestamp), False
            self._seal(batch)
        batch = self._new_batch(tp)
        future = batch.append(value, key, headers, timestamp, size)
        if batch.reserved + size > batch.room:
            if not self._grown(batch, batch.reserved + size):
                self._seal(batch)
            return future, True
        self._open[tp] = batch
        self._on_ready()  # a new batch: the sender arms its linger timer
        return future, False

    @property
    def batch_room(self) -> int:
        """Bytes of records an empty batch takes (``batch_size`` less the batch header)."""
        return self._room

    def room(self, tp: TopicPartition) -> int:
        """Bytes of records ``tp``'s open batch takes still (a new batch's room if it has
        none): :meth:`extend` with at most this many bytes adds to the open batch."""
        batch = self._open.get(tp)
        return self._room if batch is None else batch.room - batch.reserved

    def extend(
        self,
        tp: TopicPartition,
        values: Sequence[Buffer | None],
        keys: Sequence[Buffer | None] | None,
        timestamp: int,
        size: int,
    ) -> tuple[ProducerBatch, int, bool]:
        """Add records without headers whose ``size`` bytes are already reserved in
        :attr:`memory` (``send_many()``), all to one batch: the open one if they fit in it,
        else a new one (which takes them whatever their size). Returns the batch, the first
        record's index in it, and whether the batch is now full (closed and ready)."""
        batch = self._open.get(tp)
        if (
            batch is not None
            and batch.reserved + size > batch.room
            and not self._grown(batch, batch.reserved + size)
        ):
            self._seal(batch)
            batch = None
        if batch is None:
            batch = self._new_batch(tp)
            self._open[tp] = batch
            self._on_ready()  # a new batch: the sender arms its linger timer
        index = batch.builder.extend(values, keys, timestamp, size)
        batch.reserved += size
        # Full once a record of the average size of these would not fit.
        average = batch.reserved + size // len(values)
        full = average > batch.room  # full, or one more step of growth
        if full and not self._grown(batch, average):
            self._seal(batch)
        return batch, index, full

    def _new_batch(self, tp: TopicPartition) -> ProducerBatch:
        now = self.clock()
        batch = ProducerBatch(
            tp, RecordBatchBuilder(self.compression), now, now + self.delivery_timeout
        )
        batch.room = self._room
        dq = self._queues.get(tp)
        if dq is None:
            dq = self._queues[tp] = deque()
        dq.append(batch)
        self._incomplete.add(batch)
        return batch

    def _grown(self, batch: ProducerBatch, need: int) -> bool:
        """Whether the open ``batch`` may grow to hold ``need`` bytes of records (the
        :attr:`grow` hook says how far; see :mod:`.growth`); if so its room grows by one
        ``batch_size`` step (at least to ``need``), so that the caller still yields to the
        sender once per step and the hook is asked again at the next."""
        grow = self.grow
        if grow is None:
            return False
        room = min(grow(batch.tp, len(self._queues[batch.tp]) - 1), MAX_GROWTH * self._room)
        if room < need:
            return False
        batch.room = min(room, max(need, batch.room + self._room))
        return True

    def _seal(self, batch: ProducerBatch, *, notify: bool = True) -> None:
        """No more records for ``batch``: it is ready to be sent."""
        batch.closed = True
        if self._open.get(batch.tp) is batch:
            del self._open[batch.tp]
        if notify:
            self._on_ready()

    # --- taking batches out ------------------------------------------------------------------

    def drain(
        self,
        now: float,
        leader_of: Callable[[TopicPartition], int | None],
        *,
        muted: Container[TopicPartition] = (),
        node_ready: Callable[[int], bool] = lambda node: True,
        max_request_size: int = 1024 * 1024,
        max_batches: int = UNBOUNDED,
        stamp: Callable[[ProducerBatch], bool] | None = None,
        gate: PartitionGate | None = None,
    ) -> tuple[dict[int, list[ProducerBatch]], float | None, bool]:
        """Take the ready batches of partitions that are not ``muted`` (a request for them is
        in flight) and whose leader can take a request (``node_ready``).

        Returns the batches per leader (in partition order, each partition's batches in
        order, at most ``max_request_size`` bytes per leader but at least one batch, at most
        ``max_batches`` per partition), the seconds until the next batch may become ready by
        time alone (``None``: none will), and whether some partition has no known leader
        (refresh the metadata).

        With idempotence, ``stamp`` gives each batch its producer id, epoch and sequence as
        it is taken for the first time (it returns ``False`` while the producer has no usable
        epoch: nothing new is taken then). A partition whose front batches are stamped (a
        retry) sends exactly those again, alone and whole: the broker then finds all of them
        or none of them among the producer's last batches, so the response's one base offset
        is right for each; and no batch of a newer epoch reaches the partition before them.
        Each take of a partition's new batches is a *group* (numbered in send order: see
        :attr:`ProducerBatch.group`); a retry sends one group, whole.

        ``gate``, when given, replaces ``muted`` and ``max_batches``: ``gate.limit(tp, first)``
        batches of ``tp`` may be taken now. A partition with batches in flight (``gate``) is
        not hurried by a ``send()`` waiting for memory: its answers will free memory, and
        sending its open batch early would only make more, smaller batches (with
        idempotence, the in-flight bound counts batches).
        """
        out: dict[int, list[ProducerBatch]] = {}
        sizes: dict[int, int] = {}
        wake: float | None = None
        no_leader = False
        rush = bool(self._flushes) or self._closing
        short = self.memory.waiting
        linger = self.linger
        room = self._room
        queues = [(tp, dq) for tp, dq in self._queues.items() if dq]
        if not queues:
            return out, None, False
        start = self._drain_start % len(queues)
        self._drain_start = start + 1
        for tp, dq in queues[start:] + queues[:start]:
            if tp in muted:
                continue
            first = dq[0]
            cap = max_batches if gate is None else gate.limit(tp, first)
            if cap <= 0:
                continue
            hurry = rush or (short and (gate is None or not gate.in_flight(tp)))
            if first.retry_at > now:
                wake = earlier(wake, first.retry_at - now)
                continue
            # A grown batch (see _grown) is past batch_size: ready, whatever the linger.
            if not (first.closed or hurry or len(dq) > 1 or first.room > room):
                due = first.created + linger
                if due > now:
                    wake = earlier(wake, due - now)
                    continue
            leader = leader_of(tp)
            if leader is None:
                no_leader = True
                continue
            if not node_ready(leader):
                continue
            taken = out.setdefault(leader, [])
            total = sizes.get(leader, 0)
            if first.sequence >= 0:  # an idempotent retry
                total = _take_group(dq, taken, total, max_request_size)
                count = cap
            else:
                count = 0
            group = self._next_group
            while dq and count < cap:
                batch = dq[0]
                if not (
                    batch.closed or hurry or batch.room > room or batch.created + linger <= now
                ):
                    wake = earlier(wake, batch.created + linger - now)
                    break
                size = batch.size
                if taken and total + size > max_request_size:
                    break
                if stamp is not None and not stamp(batch):
                    break
                count += 1
                dq.popleft()
                if not batch.closed:
                    self._seal(batch, notify=False)
                batch.close()
                batch.in_flight = True
                batch.attempts += 1
                batch.group = group
                taken.append(batch)
                total += len(batch.buffer or b"")
            self._next_group = group + 1
            sizes[leader] = total
            if not taken:
                del out[leader]
        return out, wake, no_leader

    def expire(self, now: float) -> list[ProducerBatch]:
        """Remove and return queued (not in-flight) batches whose delivery deadline passed."""
        expired: list[ProducerBatch] = []
        for dq in self._queues.values():
            while dq and dq[0].deadline <= now:
                batch = dq.popleft()
                self._seal(batch, notify=False)
                expired.append(batch)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest delivery deadline of a queued batch."""
        fronts = [dq[0].deadline for dq in self._queues.values() if dq]
        return min(fronts) if fronts else None

    def reenqueue(
        self,
        batches: Iterable[ProducerBatch],
        retry_at: float,
        error: BaseException | None = None,
    ) -> None:
        """Put one partition's group of batches (those one request carried), in their order,
        back in its deque: before every batch of a later group and every batch never sent, so
        groups that fail in any order go out again in the order they were first sent. The
        first one waits until ``retry_at``. ``error``, the retriable failure, is kept as each
        batch's ``last_error`` (the cause of a later delivery timeout)."""
        batches = list(batches)
        if not batches:
            return
        tp = batches[0].tp
        dq = self._queues.setdefault(tp, deque())
        for batch in batches:
            batch.in_flight = False
            if error is not None:
                batch.last_error = error
        batches[0].retry_at = retry_at
        group = batches[0].group
        at = 0
        for queued in dq:  # only earlier groups waiting for a retry are passed: a few
            if not 0 <= queued.group < group:
                break
            at += 1
        if at == 0:
            dq.extendleft(reversed(batches))
        else:
            for offset, batch in enumerate(batches):
                dq.insert(at + offset, batch)

    def take_retries_after(self, batch: ProducerBatch) -> list[ProducerBatch]:
        """Remove and return the batches of ``batch``'s partition waiting for a retry that are
        stamped with its producer id and epoch and were sent with it or after it (they are doomed:
        see :mod:`.inflight`)."""
        dq = self._queues.get(batch.tp)
        out: list[ProducerBatch] = []
        if not dq:
            return out
        keep: list[ProducerBatch] = []
        while dq and dq[0].group >= 0:  # the retries lead the deque
            queued = dq.popleft()
            same = (queued.producer_id, queued.producer_epoch) == (
                batch.producer_id,
                batch.producer_epoch,
            )
            (out if same and queued.group >= batch.group else keep).append(queued)
        dq.extendleft(reversed(keep))
        return out

    def complete(self, batch: ProducerBatch) -> None:
        """The batch is acknowledged or failed for good: give its memory back."""
        if batch in self._incomplete:
            self._incomplete.discard(batch)
            self.memory.release(batch.reserved)

    def abort_queued(
        self, error_factory: Callable[[], BaseException], *, unstamped: bool = False
    ) -> list[ProducerBatch]:
        """Fail every batch that is not in flight (closing without draining); with
        ``unstamped``, only those never sent (no idempotence stamp yet)."""
        failed: list[ProducerBatch] = []
        for dq in self._queues.values():
            keep = 0  # the stamped batches, which lead the deque
            while unstamped and keep < len(dq) and dq[keep].sequence >= 0:
                keep += 1
            while len(dq) > keep:
                batch = dq[keep]
                del dq[keep]
                self._seal(batch, notify=False)
                batch.fail(error_factory())
                self.complete(batch)
                failed.append(batch)
        return failed

    # --- flushing and closing -----------------------------------------------------------------

    @contextmanager
    def flushing(self) -> Iterator[None]:
        """While inside, every queued batch is ready at once (no linger): a ``flush()``.
        Flushes may overlap; each lasts until its own ``with`` block ends."""
        self._flushes += 1
        self._on_ready()
        try:
            yield
        finally:
            self._flushes -= 1

    def close(self) -> None:
        """No linger from now on: every queued batch is ready, for the sender's last turns."""
        self._closing = True
        self._on_ready()

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    # --- state -----------------------------------------------------------------------------

    @property
    def has_queued(self) -> bool:
        """Whether some batch waits to be sent."""
        return any(self._queues.values())

    @property
    def incomplete(self) -> int:
        """Batches created and not yet acknowledged or failed."""
        return len(self._incomplete)

    def incomplete_batches(self) -> list[ProducerBatch]:
        return list(self._incomplete)

    def queued(self, tp: TopicPartition) -> list[ProducerBatch]:
        """The batches waiting for ``tp``, front first (tests, introspection)."""
        return list(self._queues.get(tp, ()))
