"""The producer's sender: one background loop that moves ready batches to brokers.

Shape after aiokafka's ``producer/sender.py``. Each turn of the loop:

1. fails queued batches whose ``delivery_timeout`` has passed;
2. drains the accumulator's ready batches, grouped by leader, as many of each partition as
   :class:`~.inflight.PartitionFlights` allows (without idempotence: none while the partition
   has a request in flight, so a retried batch can never be overtaken; with it: several
   requests per partition, at most ``max_batches_per_partition`` batches in all), skipping
   brokers with ``max_in_flight`` requests outstanding;
3. sends one ProduceRequest per broker (a task each), whose outcome completes the batches,
   or puts them back in their partition's queue, in send order, after a retriable error, with
   exponential backoff and jitter, until ``retries`` or ``delivery_timeout`` run out;
4. sleeps until woken (a batch filled, a request finished, the metadata changed) or until the
   next linger, backoff or deadline expires.

With idempotence (:mod:`.idempotence`) it first gets a producer id (InitProducerId, in a task
of its own, once, before the first batch; again to bump the epoch after a stamped batch failed
for good), pipelines each partition's requests (at most ``batches_per_request`` batches of a
partition each) under the rules of :mod:`.inflight` (OUT_OF_ORDER_SEQUENCE is retriable for a
request that raced an earlier one; the later batches of a batch that failed for good fail at
their next error), and treats INVALID_PRODUCER_EPOCH as fatal: every pending record fails with
:class:`~.errors.ProducerFencedError`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Final

from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode

from .accumulator import UNBOUNDED, Accumulator, ProducerBatch
from .backoff import Backoff, earlier
from .cluster import METADATA_ERRORS, Cluster
from .errors import (
    BrokerError,
    ClientClosedError,
    ClientError,
    DeliveryTimeoutError,
    ProducerFencedError,
    TidelogConnectionError,
    broker_error,
    is_retriable,
)
from .growth import BatchGrowth
from .idempotence import Idempotence
from .inflight import PartitionFlights
from .types import TopicPartition
from .wakeup import Wakeup

METADATA_REFRESH_BACKOFF: Final = 0.1
"""Seconds between metadata refreshes asked for by partitions without a leader."""
BATCHES_PER_REQUEST: Final = 1
"""With idempotence, batches of one partition per request (Kafka's: one), so that the
partition's in-flight batches travel in several requests, pipelined."""


class Sender:
    """Drains ``accumulator`` to the brokers of ``cluster``; see the module documentation.

    ``wakeup`` is what the loop sleeps on: the accumulator's ``on_ready`` must set it (build
    both with the same :class:`Wakeup`), so a batch that becomes ready is sent at once.
    """

    def __init__(
        self,
        accumulator: Accumulator,
        cluster: Cluster,
        *,
        wakeup: Wakeup,
        acks: int = m.Acks.LEADER,
        max_in_flight: int = 5,
        request_timeout: float = 30.0,
        retries: int = 2**31 - 1,
        retry_backoff: Backoff | None = None,
        max_request_size: int = 1024 * 1024,
        max_batches_per_partition: int = UNBOUNDED,
        batches_per_request: int = BATCHES_PER_REQUEST,
        idempotence: Idempotence | None = None,
        on_fatal: Callable[[BaseException], None] = lambda error: None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.accumulator = accumulator
        self.cluster = cluster
        self.acks = int(acks)
        self.max_in_flight = max_in_flight
        self.request_timeout = request_timeout
        self.retries = retries
        self.backoff = retry_backoff or Backoff(0.1, 1.0)
        self.max_request_size = max_request_size
        self.max_batches_per_partition = max_batches_per_partition
        self.idempotence = idempotence
        self._on_fatal = on_fatal
        self._identity: asyncio.Task[None] | None = None
        self.clock = clock
        self.rand = rand
        self._in_flight: dict[int, int] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self.flights = PartitionFlights(
            idempotence,
            max_batches=max_batches_per_partition,
            per_request=batches_per_request,
        )
        self.growth: BatchGrowth | None = None
        if idempotence is not None:
            self.growth = BatchGrowth(
                cluster,
                self.flights,
                max_batches=max_batches_per_partition,
                max_request_size=max_request_size,
                timeout=request_timeout,
            )
            accumulator.grow = self.growth.room
        self._wakeup = wakeup
        self._last_refresh = float("-inf")
        self._aborting = False
        self._task: asyncio.Task[None] | None = None
        cluster.add_update_listener(self.wake)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Make the loop take another turn now."""
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        acc = self.accumulator
        idem = self.idempotence
        try:
            while True:
                self._wakeup.clear()
                now = self.clock()
                for batch in acc.expire(now):
                    self._finish(batch, self._timeout_error(batch))
                if acc.closing and not acc.has_queued and not self._requests:
                    return
                if idem is not None:
                    self._check_identity(idem)
                by_node, wake, no_leader = self._drain(now)
                while by_node:  # with idempotence a partition may fill several requests
                    for node, batches in by_node.items():
                        self._dispatch(node, batches)
                    by_node, wake, more = self._drain(now)
                    no_leader |= more
                if no_leader or self.cluster.metadata_stale:
                    wake = earlier(wake, self._refresh_metadata(now))
                deadline = acc.next_deadline()
                if deadline is not None:
                    wake = earlier(wake, max(deadline - now, 0.0))
                await self._wakeup.wait(wake)
        except Exception as exc:
            # A bug in this loop must not leave send() futures hanging for ever.
            for batch in acc.incomplete_batches():
                self._finish(batch, exc)
            raise
        finally:
            if self._identity is not None:
                self._identity.cancel()
            if self.growth is not None:
                self.growth.close()

    def _drain(self, now: float) -> tuple[dict[int, list[ProducerBatch]], float | None, bool]:
        idem = self.idempotence
        return self.accumulator.drain(
            now,
            self.cluster.metadata.leader_for,
            node_ready=self._node_ready,
            max_request_size=self.max_request_size,
            stamp=None if idem is None else idem.stamp,
            gate=self.flights,
        )

    # --- the idempotent producer's id and epoch ----------------------------------------------

    def _check_identity(self, idem: Idempotence) -> None:
        """Fail what waits once the producer is fenced; ask for an id (or a bumped epoch) when
        a batch waits for one."""
        if idem.fatal is not None:
            if self.accumulator.has_queued:
                self._fail_queued(idem.fatal)
        elif (
            not idem.ready
            and self._identity is None
            and not self._aborting
            and self.accumulator.has_queued
        ):
            task = asyncio.get_running_loop().create_task(self._init_producer_id(idem))
            self._identity = task

    async def _init_producer_id(self, idem: Idempotence) -> None:
        """InitProducerId until it succeeds, with backoff on retriable errors; any other error
        is fatal (an old broker, say: the records fail, naming ``enable_idempotence``)."""
        attempt = 0
        try:
            while True:
                try:
                    conn = await self.cluster.any_connection()
                    response, _ = await conn.request(idem.request(), timeout=self.request_timeout)
                    if not isinstance(response, m.InitProducerIdResponse):
                        raise TypeError(
                            f"expected an InitProducerIdResponse, got {type(response).__name__}"
                        )
                    if response.error_code:
                        raise broker_error(response.error_code, response.error_message)
                    idem.update(response)
                    return
                except Exception as exc:
                    if not is_retriable(exc):
                        self._fatal(_init_failed(exc))
                        return
                    idem.last_error = exc
                    if attempt >= self.retries:  # the records waiting fail, as a send would
                        self._fail_queued(exc, unstamped=True)
                        return
                await asyncio.sleep(self.backoff.delay(attempt, self.rand))
                attempt += 1
        finally:
            self._identity = None
            self.wake()

    def _fatal(self, error: BaseException) -> None:
        """Nothing more can be sent: fail every queued batch (and, as they come back, the ones
        in flight) with ``error``, and tell the producer."""
        idem = self.idempotence
        if idem is None or idem.fatal is not None:
            return
        idem.fatal = error
        self._fail_queued(error)
        self._on_fatal(error)

    def _fail_queued(self, error: BaseException, *, unstamped: bool = False) -> None:
        self.accumulator.abort_queued(lambda: error, unstamped=unstamped)

    def _node_ready(self, node: int) -> bool:
        return self._in_flight.get(node, 0) < self.max_in_flight

    def _refresh_metadata(self, now: float) -> float:
        """Ask for fresh metadata unless it was asked for very recently; return the seconds
        until the loop should look again."""
        due = self._last_refresh + METADATA_REFRESH_BACKOFF
        if self._aborting:
            return METADATA_REFRESH_BACKOFF
        if now < due:
            return due - now
        self._last_refresh = now
        self.cluster.request_refresh().add_done_callback(lambda _: self.wake())
        return METADATA_REFRESH_BACKOFF

    # --- requests ----------------------------------------------------------------------------

    def _dispatch(self, node: int, batches: list[ProducerBatch]) -> None:
        self._in_flight[node] = self._in_flight.get(node, 0) + 1
        groups = _group(batches)
        for tp, group in groups.items():
            self.flights.sent(tp, group)
        task = asyncio.get_running_loop().create_task(self._send(node, groups))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _send(self, node: int, groups: dict[TopicPartition, list[ProducerBatch]]) -> None:
        try:
            conn = self.cluster.ready_connection(node) or await self.cluster.connection(node)
            request = m.ProduceRequest(
                partitions=tuple(
                    m.ProducePartition(tp.topic, tp.partition, sum(len(b.buffer or b"") for b in g))
                    for tp, g in groups.items()
                ),
                acks=self.acks,
                timeout_ms=int(self.request_timeout * 1000),
            )
            data = [b.buffer or b"" for g in groups.values() for b in g]
            if self.acks == m.Acks.NONE:
                await conn.send_no_response(request, data=data)
                for group in groups.values():
                    for batch in group:
                        batch.succeed(-1)
                        self._finish(batch, None)
            else:
                response, _ = await conn.request(request, data=data, timeout=self.request_timeout)
                if not isinstance(response, m.ProduceResponse):
                    raise TypeError(f"expected a ProduceResponse, got {type(response).__name__}")
                self._handle_response(groups, response)
        except asyncio.CancelledError:
            error = ClientClosedError("the producer closed before this batch was acknowledged")
            for group in groups.values():
                for batch in group:
                    self._finish(batch, error)
            raise
        except Exception as exc:
            if isinstance(exc, TidelogConnectionError) or getattr(exc, "code", None) in (
                METADATA_ERRORS
            ):
                self._refresh_metadata(self.clock())
            for group in groups.values():
                self._retry_or_fail(group, exc)
        finally:
            self._in_flight[node] -= 1
            for tp, group in groups.items():
                self.flights.landed(tp, group)
            # Leave the set now, not in a done callback that runs after the loop's next turn.
            current = asyncio.current_task()
            if current is not None:
                self._requests.discard(current)
            self.wake()

    def _handle_response(
        self, groups: dict[TopicPartition, list[ProducerBatch]], response: m.ProduceResponse
    ) -> None:
        results = {(r.topic, r.partition): r for r in response.partitions}
        refresh = False
        for tp, group in groups.items():
            result = results.get(tp)
            if result is None:
                error = broker_error(
                    ErrorCode.UNKNOWN_SERVER_ERROR,
                    "the broker's response left this partition out",
                    where=f"{tp.topic}[{tp.partition}]",
                )
                self._retry_or_fail(group, error)
                continue
            if result.error_code:
                refresh |= result.error_code in METADATA_ERRORS
                ours = result.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE and self.flights.raced(
                    group
                )
                self._retry_or_fail(group, self._partition_error(tp, result), ours=ours)
                continue
            offset = result.base_offset
            self.flights.acknowledged(tp, group[0])
            for batch in group:
                batch.succeed(offset, result.log_append_time)
                offset += batch.record_count
                self._finish(batch, None)
        if refresh:
            self._refresh_metadata(self.clock())

    def _partition_error(self, tp: TopicPartition, result: m.ProducePartitionResult) -> BrokerError:
        """The error of a partition's result; INVALID_PRODUCER_EPOCH makes the producer fatal."""
        where = f"{tp.topic}[{tp.partition}]"
        error = broker_error(result.error_code, result.error_message, where=where)
        if result.error_code == ErrorCode.MESSAGE_TOO_LARGE and self.growth is not None:
            self.growth.forget(tp.topic)  # its max_message_bytes may have been lowered
        if result.error_code == ErrorCode.INVALID_PRODUCER_EPOCH:
            fenced = ProducerFencedError(
                f"{where}: this producer is fenced ({error}); its pending records fail: close "
                "it and create a new producer"
            )
            fenced.__cause__ = error
            self._fatal(fenced)
        return error

    def _retry_or_fail(
        self, group: list[ProducerBatch], error: BaseException, *, ours: bool = False
    ) -> None:
        """Back in the partition's queue, or failed for good. ``ours``: an OUT_OF_ORDER_SEQUENCE
        whose gap is an earlier request of ours (see :mod:`.inflight`), retriable."""
        now = self.clock()
        first = group[0]
        idem = self.idempotence
        fatal = None if idem is None else idem.fatal
        if fatal is not None:
            error = fatal
        retriable = (
            (is_retriable(error) or ours)
            and not self._aborting
            and fatal is None
            and not (idem is not None and self.flights.doomed(first))
        )
        if retriable and first.attempts <= self.retries and now < first.deadline:
            delay = self.backoff.delay(first.attempts - 1, self.rand)
            self.accumulator.reenqueue(group, now + delay, error)
            return
        for batch in group:
            if retriable and now >= batch.deadline:
                self._finish(batch, self._timeout_error(batch, error))
            else:
                self._finish(batch, error)

    def _finish(self, batch: ProducerBatch, error: BaseException | None) -> None:
        if error is None:
            self.accumulator.complete(batch)
            return
        doomed = False
        if self.idempotence is not None and batch.sequence >= 0:
            self.idempotence.failed(batch)
            doomed = self.flights.broke(batch)
        batch.fail(error)
        self.accumulator.complete(batch)
        if doomed:  # the later batches of its epoch waiting for a retry can never go
            for later in self.accumulator.take_retries_after(batch):
                self._finish(later, _doomed_error(later, error))

    def _timeout_error(
        self, batch: ProducerBatch, last: BaseException | None = None
    ) -> DeliveryTimeoutError:
        """The error of a batch out of ``delivery_timeout``, caused by ``last`` (default: the
        batch's last retriable error)."""
        tp = batch.tp
        last = batch.last_error if last is None else last
        if last is None and self.idempotence is not None:
            last = self.idempotence.last_error  # waiting for a producer id
        if last is not None:
            why = f"; last error: {last}"
        elif self.cluster.metadata.leader_for(tp) is None:
            why = "; the partition has no leader now (is its broker down?)"
        else:
            why = ""
        exc = DeliveryTimeoutError(
            f"{batch.record_count} records for {tp.topic}[{tp.partition}] were not acknowledged "
            f"within delivery_timeout ({self.accumulator.delivery_timeout:g}s, "
            f"{batch.attempts} attempts){why}"
        )
        exc.__cause__ = last
        return exc

    # --- stopping ----------------------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send everything queued and wait for the answers, for at most ``timeout`` seconds;
        then fail what is left with :class:`ClientClosedError`."""
        task = self._task
        self.accumulator.close()  # wakes the loop through on_ready
        if task is None:
            self.abort()
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            pass
        finally:
            self.abort()
            task.cancel()
            requests = [*self._requests]
            for r in requests:
                r.cancel()
            await asyncio.gather(task, *requests, return_exceptions=True)

    def abort(self) -> None:
        """Fail every queued batch now and stop retrying (closing without draining)."""
        self._aborting = True
        self.accumulator.abort_queued(
            lambda: ClientClosedError("the producer closed before this batch was sent")
        )


def _doomed_error(batch: ProducerBatch, cause: BaseException) -> ClientError:
    """The error of a batch waiting for a retry when an earlier batch of its partition and
    epoch failed for good (``cause``): the broker can never accept it under that epoch."""
    tp = batch.tp
    last = f"; its last attempt failed with: {batch.last_error}" if batch.last_error else ""
    error = ClientError(
        f"{batch.record_count} records for {tp.topic}[{tp.partition}] were not retried: an "
        f"earlier batch of the partition failed for good ({cause}), so its sequence has a gap "
        f"under this producer epoch; they may or may not be in the log{last}"
    )
    error.__cause__ = cause
    return error


def _init_failed(exc: Exception) -> Exception:
    """The error records fail with when the broker will not give a producer id."""
    text = (
        f"the broker gave no producer id for the idempotent producer ({exc}); "
        "pass enable_idempotence=False to produce without idempotence"
    )
    error = broker_error(exc.code, text) if isinstance(exc, BrokerError) else ClientError(text)
    error.__cause__ = exc
    return error


def _group(batches: list[ProducerBatch]) -> dict[TopicPartition, list[ProducerBatch]]:
    groups: dict[TopicPartition, list[ProducerBatch]] = {}
    for batch in batches:
        groups.setdefault(batch.tp, []).append(batch)
    return groups
