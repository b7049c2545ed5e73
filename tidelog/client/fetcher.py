"""The consumer's fetcher: one background loop that keeps every assigned partition's prefetch
queue topped up.

Per partition (:class:`PartitionState`) it keeps the user's *position* (the next offset
``getmany()`` returns), the *fetch offset* (where the next fetch starts; ahead of the position
by what is prefetched) and a queue of fetched, CRC-checked batches bounded by
``prefetch_bytes``. Each turn of the loop:

1. resolves partitions without a position through ``auto_offset_reset`` (a ListOffsets
   request; ``"none"`` leaves an error for ``getmany()`` to raise);
2. sends one FetchRequest per leader broker (at most one in flight per broker) for the
   partitions that are not paused, not full and not waiting for a reset;
3. sleeps until a fetch returns, the user consumes or seeks, or the metadata changes.

A seek bumps the partition's *epoch*: data fetched for an older epoch is dropped on arrival.

A fetch error never moves a position backwards and never hands a record out twice:

* ``OFFSET_OUT_OF_RANGE`` resolves the position per ``auto_offset_reset``, but never below
  the records handed out since the last seek: a reset that would go back there -- the
  broker's log now ends below them -- is an ``OffsetOutOfRangeError`` for ``getmany()``
  instead, until the application seeks.
* ``DAMAGED_RANGE`` and ``MISSING_RANGE`` (:class:`UnreadableRangeError`, carrying where data
  resumes) are raised by ``getmany()`` after the records before them; skipping is the
  application's choice: ``seek(tp, error.next_offset)``, or ``skip_unreadable=True``, which
  skips and logs a warning.
* A batch that fails its CRC on arrival (or whose base offset, outside the CRC, does not
  follow on) is fetched once more with ``verify``: the broker checks its copy, restores or
  isolates damage it finds (then ``DAMAGED_RANGE``); if its copy is intact and the batch
  fails again, ``getmany()`` raises ``CorruptBatchError``. No corrupt record is ever handed
  out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Container, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tidelog.wire import messages as m
from tidelog.wire.api import split_data
from tidelog.wire.errors import (
    CorruptBatchError,
    ErrorCode,
    OffsetOutOfRangeError,
    UnreadableRangeError,
)
from tidelog.wire.records import RecordBatch, iter_batches

from .backoff import Backoff, earlier
from .cluster import METADATA_ERRORS, Cluster
from .errors import NoOffsetForPartitionError, TidelogConnectionError, broker_error, is_retriable
from .types import TopicPartition
from .wakeup import Wakeup

logger = logging.getLogger("tidelog.client")

ResetPolicy = Literal["earliest", "latest", "none"]
_RESET_SPECS: Final[dict[str, int]] = {
    "earliest": m.OffsetSpec.EARLIEST,
    "latest": m.OffsetSpec.LATEST,
}


class PartitionState:
    """What the consumer knows about one assigned partition."""

    __slots__ = (
        "batches",
        "buffered",
        "epoch",
        "error",
        "fetch_offset",
        "floor",
        "high_watermark",
        "log_start_offset",
        "paused",
        "pending",
        "pending_batch",
        "position",
        "reset_to",
        "retry_at",
        "sought",
        "tp",
        "verify_at",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.position: int | None = None
        self.fetch_offset = -1
        self.reset_to: int | None = None  # a ListOffsets spec to resolve the position with
        self.paused = False
        self.batches: deque[RecordBatch] = deque()
        self.buffered = 0
        self.pending: deque[Any] = deque()  # records decoded, not yet returned (the consumer's)
        self.pending_batch: RecordBatch | None = None  # the batch ``pending`` came from
        self.epoch = 0
        self.error: BaseException | None = None
        self.high_watermark = -1
        self.log_start_offset = -1
        self.retry_at = 0.0
        self.floor: int | None = None
        """A reset after a fetch error must not go below this: what was handed out."""
        self.sought = -1
        """Where the last seek put the position: records were handed out if it moved on."""
        self.verify_at = -1
        """The offset of a batch that failed its CRC: the next fetch asks the broker to check."""

    def seek(self, offset: int) -> None:
        """Set the position; drop what was prefetched from elsewhere."""
        self.position = offset
        self.sought = offset
        self.fetch_offset = offset
        self.reset_to = None
        self.error = None
        self.floor = None
        self.verify_at = -1
        self.epoch += 1
        self.batches.clear()
        self.buffered = 0
        self.pending = deque()
        self.pending_batch = None

    def need_reset(self, spec: int | None) -> None:
        """Forget the position; the fetcher resolves it with ``spec`` (or fails for none)."""
        self.seek(-1)
        self.position = None
        self.reset_to = spec

    def take_batch(self) -> RecordBatch:
        batch = self.batches.popleft()
        self.buffered -= len(batch.buffer)
        return batch

    def unpend(self) -> None:
        """Put the batch the decoded ``pending`` records came from back in front of the
        queue, and forget them: it is read again from the position on."""
        batch = self.pending_batch
        if batch is not None:
            self.batches.appendleft(batch)
            self.buffered += len(batch.buffer)
        self.pending = deque()
        self.pending_batch = None


@dataclass(slots=True)
class FetchPlan:
    """What one turn of the fetch loop does (see :func:`plan_fetches`)."""

    by_node: dict[int, list[PartitionState]] = field(default_factory=dict)
    to_reset: list[PartitionState] = field(default_factory=list)
    no_position: list[PartitionState] = field(default_factory=list)
    wake: float | None = None
    no_leader: bool = False


def plan_fetches(
    states: Iterable[PartitionState],
    now: float,
    leader_of: Callable[[TopicPartition], int | None],
    *,
    busy: Container[int] = (),
    prefetch_bytes: int,
) -> FetchPlan:
    """Which partitions to fetch, per leader, now. A partition is left out while it has an
    error for the user, is paused, holds ``prefetch_bytes`` or more of unconsumed batches (the
    prefetch bound), backs off after a failure, or its leader is unknown or ``busy`` (one fetch
    in flight per broker). Partitions without a position go to ``to_reset`` (or
    ``no_position`` when no reset policy applies)."""
    plan = FetchPlan()
    for st in states:
        if st.error is not None:
            continue
        if st.position is None:
            if st.reset_to is None:
                plan.no_position.append(st)
            elif st.retry_at > now:
                plan.wake = earlier(plan.wake, st.retry_at - now)
            else:
                plan.to_reset.append(st)
            continue
        if st.paused or st.buffered >= prefetch_bytes:
            continue
        if st.retry_at > now:
            plan.wake = earlier(plan.wake, st.retry_at - now)
            continue
        leader = leader_of(st.tp)
        if leader is None:
            plan.no_leader = True
        elif leader not in busy:
            plan.by_node.setdefault(leader, []).append(st)
    return plan


class Fetcher:
    """Prefetches the partitions in ``states`` (owned by the consumer); see the module doc."""

    def __init__(
        self,
        cluster: Cluster,
        states: dict[TopicPartition, PartitionState],
        *,
        auto_offset_reset: ResetPolicy = "latest",
        max_wait: float = 0.5,
        min_bytes: int = 1,
        max_bytes: int = 50 * 1024 * 1024,
        max_partition_bytes: int = 1024 * 1024,
        prefetch_bytes: int = 4 * 1024 * 1024,
        request_timeout: float = 30.0,
        retry_backoff: Backoff | None = None,
        check_crcs: bool = True,
        skip_unreadable: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'none'")
        self.cluster = cluster
        self.states = states
        self.auto_offset_reset = auto_offset_reset
        self.max_wait = max_wait
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.max_partition_bytes = max_partition_bytes
        self.prefetch_bytes = prefetch_bytes
        self.request_timeout = request_timeout
        self.backoff = retry_backoff or Backoff(0.1, 1.0)
        self.check_crcs = check_crcs
        self.skip_unreadable = skip_unreadable
        self.clock = clock
        self.data_ready = Wakeup()
        """Set whenever records or an error become available to ``getmany()``."""
        self._wakeup = Wakeup()
        self._fetching: set[int] = set()  # nodes with a fetch in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._resetting = False
        self._rotation = 0
        self._failures = 0
        self._last_refresh = float("-inf")
        self._task: asyncio.Task[None] | None = None
        cluster.add_update_listener(self.wake)

    @property
    def default_reset(self) -> int | None:
        return _RESET_SPECS.get(self.auto_offset_reset)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            now = self.clock()
            plan = plan_fetches(
                self.states.values(),
                now,
                self.cluster.metadata.leader_for,
                busy=self._fetching,
                prefetch_bytes=self.prefetch_bytes,
            )
            for st in plan.no_position:
                self._no_position(st)
            if plan.to_reset and not self._resetting:
                self._spawn(self._reset(plan.to_reset))
            for node, states in plan.by_node.items():
                self._fetching.add(node)
                # Rotate the order: the broker fills max_bytes front to back, and a partition
                # always listed last could starve behind busier ones.
                self._rotation += 1
                k = self._rotation % len(states)
                states = states[k:] + states[:k]
                self._spawn(self._fetch(node, [(st, st.epoch, st.fetch_offset) for st in states]))
            wake = plan.wake
            if plan.no_leader:
                wake = earlier(wake, self._refresh_metadata(now))
            await self._wakeup.wait(wake)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in a fetch: report it to getmany() rather than stall silently.
            exc = task.exception()
            for st in self.states.values():
                if st.error is None:
                    st.error = exc
            self.data_ready.set()
        self.wake()

    def _no_position(self, st: PartitionState) -> None:
        st.error = NoOffsetForPartitionError(
            f"{st.tp.topic}[{st.tp.partition}] has no position and auto_offset_reset='none': "
            "call seek(), seek_to_beginning() or seek_to_end() first"
        )
        self.data_ready.set()

    def _refresh_metadata(self, now: float) -> float:
        due = self._last_refresh + self.backoff.initial
        if now < due:
            return due - now
        self._last_refresh = now
        self.cluster.request_refresh().add_done_callback(lambda _: self.wake())
        return self.backoff.initial

    # --- resets ------------------------------------------------------------------------------

    async def _reset(self, states: list[PartitionState]) -> None:
        self._resetting = True
        try:
            specs: dict[TopicPartition, int] = {}
            for st in states:
                if st.reset_to is not None:
                    specs[st.tp] = st.reset_to
            epochs = {st.tp: st.epoch for st in states}
            try:
                offsets = await self.cluster.list_offsets(specs)
            except Exception as exc:
                if is_retriable(exc):
                    # Try again after a backoff, not on the loop's next turn.
                    self._failures += 1
                    retry_at = self.clock() + self.backoff.delay(self._failures)
                    for st in states:
                        st.retry_at = retry_at
                    return
                for st in states:
                    if self.states.get(st.tp) is st and st.epoch == epochs[st.tp]:
                        st.error = exc
                self.data_ready.set()
                return
            for tp, found in offsets.items():
                state = self.states.get(tp)
                if state is None or state.epoch != epochs[tp] or state.position is not None:
                    continue  # unassigned or sought meanwhile
                self._settle(state, found.offset)
        finally:
            self._resetting = False

    def _settle(self, st: PartitionState, offset: int) -> None:
        """Take a reset's ``offset`` as the position -- unless it is below what was handed
        out before the fetch error that asked for the reset: that is an error instead."""
        floor = st.floor
        if floor is None or offset >= floor:
            st.seek(offset)
            return
        st.error = OffsetOutOfRangeError(
            f"{st.tp.topic}[{st.tp.partition}]: offset {floor} is out of range and "
            f"auto_offset_reset='{self.auto_offset_reset}' would move this consumer back to "
            f"{offset}, handing out records again: the broker's log no longer reaches the "
            "records it handed out. seek() to choose where to go on"
        )
        self.data_ready.set()

    async def reset_now(self, states: Iterable[PartitionState], spec: int) -> None:
        """Resolve the positions of ``states`` with ``spec`` now (seek_to_beginning/end)."""
        states = list(states)
        offsets = await self.cluster.list_offsets({st.tp: spec for st in states})
        for st in states:
            st.seek(offsets[st.tp].offset)
        self.wake()

    async def resolve_now(self, st: PartitionState, spec: int) -> None:
        """Resolve a missing position per ``spec`` now (``position()``), never backwards from
        what was handed out: raises the error a backward reset is."""
        offsets = await self.cluster.list_offsets({st.tp: spec})
        if st.position is None:
            self._settle(st, offsets[st.tp].offset)
        if st.error is not None:
            raise st.error
        self.wake()

    # --- fetches -----------------------------------------------------------------------------

    async def _fetch(self, node: int, wanted: list[tuple[PartitionState, int, int]]) -> None:
        try:
            request = m.FetchRequest(
                partitions=tuple(
                    m.FetchPartition(
                        st.tp.topic,
                        st.tp.partition,
                        offset,
                        self.max_partition_bytes,
                        verify=st.verify_at == offset,
                    )
                    for st, _, offset in wanted
                ),
                max_wait_ms=int(self.max_wait * 1000),
                min_bytes=self.min_bytes,
                max_bytes=self.max_bytes,
            )
            try:
                conn = self.cluster.ready_connection(node) or await self.cluster.connection(node)
                response, data = await conn.request(
                    request, timeout=self.request_timeout + self.max_wait
                )
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                self._back_off([st for st, _, _ in wanted], exc)
                return
            if not isinstance(response, m.FetchResponse):
                raise TypeError(f"expected a FetchResponse, got {type(response).__name__}")
            self._failures = 0
            if response.throttle_ms > 0:  # the broker asks us to wait before fetching again
                until = self.clock() + response.throttle_ms / 1000
                for st, _, _ in wanted:
                    st.retry_at = max(st.retry_at, until)
            pieces = split_data([p.size for p in response.partitions], data)
            expected = {st.tp: (st, epoch, offset) for st, epoch, offset in wanted}
            for result, piece in zip(response.partitions, pieces, strict=True):
                self._handle(result, piece, expected)
        finally:
            self._fetching.discard(node)

    def _handle(
        self,
        result: m.FetchPartitionResult,
        piece: memoryview,
        expected: dict[TopicPartition, tuple[PartitionState, int, int]],
    ) -> None:
        tp = TopicPartition(result.topic, result.partition)
        st = self.states.get(tp)
        sent = expected.get(tp)
        if st is None or sent is None or sent != (st, st.epoch, st.fetch_offset):
            return  # unassigned or sought while the fetch was in flight
        if result.error_code:
            self._partition_error(st, result)
            return
        st.high_watermark = result.high_watermark
        st.log_start_offset = result.log_start_offset
        if not piece:
            return
        fetch_offset = st.fetch_offset
        verified = st.verify_at == fetch_offset
        added = False
        follows = -1
        try:
            for batch in iter_batches(piece, verify_crc=self.check_crcs):
                # Base offsets sit outside the CRC: they must follow on from the first batch,
                # which holds the offset asked for.
                base = batch.base_offset
                if base != follows and (follows >= 0 or base > fetch_offset):
                    raise CorruptBatchError(f"a batch says offset {base} where it cannot be")
                follows = batch.next_offset
                if follows <= fetch_offset:
                    continue  # wholly before the requested offset
                st.batches.append(batch)
                st.buffered += len(batch.buffer)
                st.fetch_offset = batch.next_offset
                added = True
            st.verify_at = -1
        except CorruptBatchError as exc:
            # Hand over the good batches before it; then ask the broker to check its copy.
            self._corrupt(st, exc, verified and st.fetch_offset == fetch_offset)
            added = True
        if added:
            self.data_ready.set()

    def _corrupt(self, st: PartitionState, exc: CorruptBatchError, verified: bool) -> None:
        """A batch at ``st.fetch_offset`` failed its CRC on arrival. The first time, fetch it
        again with ``verify``; if the broker found its copy intact and it fails again, the
        error is the application's (no corrupt record is handed out)."""
        where = f"{st.tp.topic}[{st.tp.partition}] at offset {st.fetch_offset}"
        if not verified:
            logger.warning(
                "%s: a batch failed its CRC (%s); asking the broker to check it", where, exc
            )
            st.verify_at = st.fetch_offset
            return
        st.error = CorruptBatchError(
            f"{where}: {exc}; the broker checked its copy and found it intact, so it was "
            "damaged on the way (seek() past it to skip it)"
        )

    def _partition_error(self, st: PartitionState, result: m.FetchPartitionResult) -> None:
        code = result.error_code
        where = f"{st.tp.topic}[{st.tp.partition}] at offset {st.fetch_offset}"
        error = broker_error(code, result.error_message, where=where)
        if isinstance(error, UnreadableRangeError):
            self._unreadable(st, error, result.next_offset)
        elif code == ErrorCode.OFFSET_OUT_OF_RANGE and self.default_reset is not None:
            # The reset must not hand out again what was handed out since the last seek.
            floor = st.position if st.position != st.sought else None
            st.need_reset(self.default_reset)
            st.floor = floor
        elif code in METADATA_ERRORS or error.retriable:
            self._back_off([st], error)
        else:
            st.error = error
            self.data_ready.set()

    def _unreadable(self, st: PartitionState, error: UnreadableRangeError, resume: int) -> None:
        """A damaged or missing range at ``st.fetch_offset``: skip it if the application
        chose to (``skip_unreadable``, logged), else hand it the error, which says where data
        resumes."""
        error.topic, error.partition = st.tp.topic, st.tp.partition
        error.start_offset, error.next_offset = st.fetch_offset, resume
        st.verify_at = -1
        if self.skip_unreadable and resume > st.fetch_offset:
            logger.warning("skipping offsets [%d, %d): %s", st.fetch_offset, resume, error)
            st.fetch_offset = resume
            self.wake()
            return
        st.error = error
        self.data_ready.set()

    def _back_off(self, states: list[PartitionState], error: BaseException) -> None:
        now = self.clock()
        delay = self.backoff.delay(self._failures)
        self._failures += 1
        for st in states:
            st.retry_at = now + delay
        if isinstance(error, TidelogConnectionError) or getattr(error, "code", None) in (
            METADATA_ERRORS
        ):
            self._refresh_metadata(now)
