"""One subscription served by this gateway: a member of the subscription's consumer group,
one delivery worker per partition it owns (in order within a partition, partitions in
parallel), and the committed position.

The group decides which gateway owns which partition, so two gateways never deliver a
partition at once: a revoked partition's worker finishes its attempt in flight (it starts no
other), its acknowledged position is committed, and only then does the group hand the
partition on. Memory is bounded: at most ``webhook_max_in_flight`` records are held fetched
and undelivered (fetching pauses above it), plus the consumer's prefetch per partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from tidelog.client import Consumer, OffsetSpec, TopicPartition
from tidelog.client.types import AnyRecord
from tidelog.wire.errors import TidelogError

from .clients import Clients
from .settings import GatewaySettings
from .webhooks_delivery import Deliverer, Result
from .webhooks_model import Definition, Position

logger = logging.getLogger("tidelog.gateway.webhooks")
PAUSED_POLL_S: Final = 0.05
"""getmany's wait while fetching is paused for memory, so room made by acks is seen soon."""
ERROR_RETRY_S: Final = 1.0

OnGone = Callable[[str, str], Coroutine[Any, Any, None]]


async def join(task: asyncio.Task[None]) -> None:
    """Wait for a task told to stop; its own cancellation is swallowed, but not the caller's
    (suppressing both would leave e.g. the reconcile loop running after its close())."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


@dataclass(slots=True)
class Worker:
    """One owned partition: its queue of fetched records and its acknowledged position."""

    tp: TopicPartition
    queue: deque[AnyRecord] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    acked: int | None = None
    """The next offset to deliver once everything before is done (what a commit writes)."""
    committed: int | None = None
    task: asyncio.Task[None] | None = None


class Runner:
    """Serves one subscription until :meth:`close`."""

    def __init__(
        self,
        definition: Definition,
        settings: GatewaySettings,
        clients: Clients,
        http: httpx.AsyncClient,
        host_limit: asyncio.Semaphore,
        on_gone: OnGone,
    ) -> None:
        self.definition = definition
        self.settings = settings
        self.clients = clients
        self.deliverer = Deliverer(definition, settings, clients, http, host_limit)
        self.on_gone = on_gone
        self.workers: dict[TopicPartition, Worker] = {}
        self.held = 0
        self._paused = False
        self._closing = False
        self._last_commit = 0.0
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def stats(self) -> object:
        return self.deliverer.stats

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Finish the attempts in flight, commit what was acknowledged, leave the group."""
        self._closing = True
        if self._task is not None:
            for w in self.workers.values():
                w.stop.set()
                w.wake.set()
            await join(self._task)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # brokers down, group errors: start over
                logger.warning("subscription %r: %s; restarting", self.definition.name, exc)
                self.deliverer._failed(f"consumer: {exc}")
                await asyncio.sleep(ERROR_RETRY_S)

    def _consumer(self) -> Consumer:
        s, d = self.settings, self.definition
        return Consumer(
            s.bootstrap,
            client_id=f"tidelog-gateway-webhook-{d.name}",
            group_id=d.group_id,
            auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout=s.webhook_session_timeout_s,
            request_timeout=s.request_timeout_s,
            connect_timeout=s.request_timeout_s,
            prefetch_bytes=s.ws_prefetch_bytes,
            max_partition_fetch_bytes=s.ws_prefetch_bytes,
        )

    async def _serve(self) -> None:
        d = self.definition
        consumer = self._consumer()
        try:
            await consumer.start()

            async def assigned(tps: frozenset[TopicPartition]) -> None:
                await self._assigned(consumer, tps)

            async def revoked(tps: frozenset[TopicPartition]) -> None:
                await self._release(consumer, tps)

            consumer.subscribe(
                d.topics, pattern=d.consumer_pattern, on_assigned=assigned, on_revoked=revoked
            )
            while not self._closing:
                await self._turn(consumer)
        finally:
            try:
                await self._release(consumer, list(self.workers))
            finally:
                await consumer.close()

    async def _turn(self, consumer: Consumer) -> None:
        """One poll: take what fits in memory, hand it to the workers, commit if due."""
        s = self.settings
        room = s.webhook_max_in_flight - self.held
        owned = consumer.assignment()
        if room <= 0 and not self._paused:
            consumer.pause(*owned)
            self._paused = True
        elif room > 0 and self._paused:
            consumer.resume(*owned)
            self._paused = False
        wait = PAUSED_POLL_S if self._paused else s.webhook_commit_interval_s
        batch = await consumer.getmany(timeout=wait, max_records=max(room, 1))
        for tp, records in batch.items():
            worker = self.workers.get(tp)
            if worker is None:  # not ours any more
                continue
            worker.queue.extend(records)
            self.held += len(records)
            worker.wake.set()
        await self._commit_due(consumer)

    async def _commit_due(self, consumer: Consumer, force: bool = False) -> None:
        now = self.settings.clock()
        if not force and now - self._last_commit < self.settings.webhook_commit_interval_s:
            return
        self._last_commit = now
        await self._commit(consumer, self.workers.values())

    async def _commit(self, consumer: Consumer, workers: Iterable[Worker]) -> None:
        due = {w.tp: w.acked for w in workers if w.acked is not None and w.acked != w.committed}
        if not due:
            return
        try:
            await consumer.commit(due, metadata=self.definition.tag)
        except (TidelogError, ConnectionError, TimeoutError) as exc:
            logger.warning("subscription %r: commit failed: %s", self.definition.name, exc)
            return
        for w in workers:
            if w.tp in due:
                w.committed = due[w.tp]

    async def _assigned(self, consumer: Consumer, tps: frozenset[TopicPartition]) -> None:
        """Start the new partitions, first moving those whose committed offset is of an older
        generation (or missing) to where the definition says."""
        d = self.definition
        admin = await self.clients.admin()
        committed = await admin.list_committed(d.group_id)
        moves: dict[TopicPartition, Position] = {}
        keep: dict[TopicPartition, int] = {}
        for tp in tps:
            found = committed.get(tp)
            if found is not None and found.metadata == d.tag:
                continue
            if d.replay is not None and d.generation > 0 and d.replay.covers(*tp):
                moves[tp] = d.replay.to
            elif found is not None:
                keep[tp] = found.offset
            else:
                moves[tp] = d.start
        targets = {**keep, **await self._resolve(moves)}
        for tp, offset in targets.items():
            if tp in moves:
                consumer.seek(tp, offset)
        for tp in tps:
            worker = Worker(tp, acked=targets.get(tp))
            self.workers[tp] = worker
            worker.task = asyncio.get_running_loop().create_task(self._work(consumer, worker))
        if targets:
            await self._commit(consumer, [self.workers[tp] for tp in targets])

    async def _resolve(self, moves: dict[TopicPartition, Position]) -> dict[TopicPartition, int]:
        if not moves:
            return {}
        admin = await self.clients.admin()
        first = await admin.list_offsets(dict.fromkeys(moves, OffsetSpec.EARLIEST))
        end = await admin.list_offsets(dict.fromkeys(moves, OffsetSpec.LATEST))
        times = {tp: p.value for tp, p in moves.items() if p.kind == "time"}
        found = await admin.list_offsets(times) if times else {}
        out: dict[TopicPartition, int] = {}
        for tp, pos in moves.items():
            lo, hi = first[tp].offset, end[tp].offset
            if pos.kind == "earliest":
                out[tp] = lo
            elif pos.kind == "offset":
                out[tp] = min(max(pos.value, lo), hi)
            else:
                at = found[tp].offset
                out[tp] = hi if at < 0 else at
        return out

    async def _release(self, consumer: Consumer, tps: Iterable[TopicPartition]) -> None:
        """Stop the partitions' workers (each finishes its attempt in flight) and commit what
        they acknowledged; their undelivered records are dropped (the next owner fetches them
        again from the committed position)."""
        gone = [w for tp in list(tps) if (w := self.workers.pop(tp, None)) is not None]
        for w in gone:
            w.stop.set()
            w.wake.set()
        for w in gone:
            if w.task is not None:
                await join(w.task)
            self.held -= len(w.queue)
            w.queue.clear()
        await self._commit(consumer, gone)

    async def _work(self, consumer: Consumer, w: Worker) -> None:
        while True:
            while not w.queue:
                if w.stop.is_set():
                    return
                w.wake.clear()
                await w.wake.wait()
            if w.stop.is_set():
                return
            record = w.queue[0]
            result = await self.deliverer.deliver(record, w.stop)
            if result is Result.STOPPED:
                return
            w.queue.popleft()
            self.held -= 1
            w.acked = record.offset + 1
            if result is Result.GONE:
                w.acked = record.offset  # not delivered: the subscription ends here
                reason = f"{self.definition.url} answered 410 Gone"
                task = asyncio.get_running_loop().create_task(
                    self.on_gone(self.definition.name, reason)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return
