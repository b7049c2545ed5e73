"""This broker's replicas: which partitions it leads (a :class:`~.leader.PartitionLeader`
each), which it follows (a :class:`~.fetcher.ReplicaFetcher` per leader broker), their leader
epoch caches, and the ISR upkeep of what it leads.

:meth:`ReplicaManager.apply` brings the roles in line with the cluster's view after each
change: a partition whose state names this broker leader at a new epoch gets a new leader
state (its epoch recorded at the log end, its idempotent-producer table rebuilt from the log,
its high watermark no higher than what this broker knew was replicated); one led by another
broker is fetched from it. An ISR change this broker proposes is a compare-and-set on the
partition state's revision (``propose_isr``, etcd); the leader uses it only once that has
succeeded. The loop here shrinks the ISR of followers lagging for ``replica_lag_time_max_ms``;
expansions are proposed by the fetch path as soon as a follower has caught up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from tidelog.wire import replica_messages as rm
from tidelog.wire.errors import BrokerError, InvalidRecordError, NotLeaderError
from tidelog.wire.layouts import BATCH_STAMP_STRUCT
from tidelog.wire.records import batch_size_at

from ..core.idempotence import ProducerStates
from ..core.notifier import AppendNotifier
from ..log import LogManager, PartitionLog, TopicPartition
from ..log.epochs import LeaderEpochCache
from .fetcher import ReplicaFetcher
from .leader import PartitionLeader

logger = logging.getLogger("tidelog.server.replication")

ISR_CHECK_MAX_S: Final = 1.0
ProposeIsr = Callable[[TopicPartition, PartitionLeader, tuple[int, ...]], Awaitable[int]]
"""Write a partition's new ISR with a compare-and-set; the etcd revision, 0 if refused."""


class Assignment:
    """One partition's state as the cluster's view has it (what :meth:`apply` takes)."""

    __slots__ = ("epoch", "isr", "leader", "leader_address", "replicas", "revision")

    def __init__(
        self,
        leader: int,
        epoch: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
        revision: int,
        leader_address: tuple[str, int] | None,
    ) -> None:
        self.leader = leader
        self.epoch = epoch
        self.replicas = replicas
        self.isr = isr
        self.revision = revision
        self.leader_address = leader_address
        """Where the leader listens, when it is another live broker."""


class ReplicaManager:
    """Leads and follows this broker's partitions; see the module docstring."""

    def __init__(
        self,
        me: int,
        logs: Callable[[], LogManager],
        producers: Callable[[], ProducerStates | None],
        on_visible: Callable[[TopicPartition], None],
        propose_isr: ProposeIsr,
        *,
        min_insync_replicas: int,
        replica_lag_time_max_ms: int,
        max_frame_size: int,
        monotonic: Callable[[], float],
    ) -> None:
        self.me = me
        self._logs = logs
        self._producers = producers
        self._on_visible = on_visible
        self._propose_isr = propose_isr
        self.min_insync_replicas = min_insync_replicas
        self.lag_ms = replica_lag_time_max_ms
        self._max_frame = max_frame_size
        self._monotonic = monotonic
        self.leaders: dict[TopicPartition, PartitionLeader] = {}
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self.replica_notifier = AppendNotifier()
        """Wakes replica fetches waiting on a partition when its leader appends."""
        self._epochs: dict[TopicPartition, LeaderEpochCache] = {}
        self._known_hw: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._proposals: set[asyncio.Task[None]] = set()
        self.isr_shrinks = 0
        """ISR changes of partitions led here that dropped a member (Kafka's IsrShrinksPerSec):
        this leader's shrinks, and the controller's removal of a dead follower."""
        self.isr_expands = 0
        """ISR changes of partitions led here that added a member (IsrExpandsPerSec)."""

    def now_ms(self) -> int:
        return int(self._monotonic() * 1000)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._check_isr(), name="isr-check")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._proposals) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fetcher in self.fetchers.values():
            await fetcher.stop()
        self.fetchers.clear()
        for tp in list(self.leaders):
            self._resign(tp, NotLeaderError("the broker is stopping"))

    # --- following the view ----------------------------------------------------------------

    def apply(self, assignments: dict[TopicPartition, Assignment]) -> None:
        """Lead, follow or drop each partition as ``assignments`` (the partitions with a
        replica on this broker and a local log) say; partitions left out are dropped."""
        for tp in [tp for tp in self.leaders if tp not in assignments]:
            self._resign(tp, NotLeaderError(f"{tp} is no longer on this broker"))
        for fetcher in self.fetchers.values():
            for tp in [tp for tp in fetcher.partitions if tp not in assignments]:
                fetcher.unfollow(tp)
        for tp in [tp for tp in self._epochs if tp not in assignments]:
            del self._epochs[tp]
            self._known_hw.pop(tp, None)
        for tp, a in assignments.items():
            if a.leader == self.me:
                self._lead(tp, a)
                continue
            self._resign(tp, NotLeaderError(f"{tp} is led by broker {a.leader} now"))
            for broker, fetcher in self.fetchers.items():
                if broker != a.leader:
                    fetcher.unfollow(tp)
            if a.leader_address is not None:
                self._fetcher(a.leader, a.leader_address).follow(tp, a.epoch)

    def _fetcher(self, leader: int, address: tuple[str, int]) -> ReplicaFetcher:
        fetcher = self.fetchers.get(leader)
        if fetcher is not None and fetcher.address != address:  # it came back elsewhere
            asyncio.get_running_loop().create_task(fetcher.stop())
            fetcher = None
        if fetcher is None:
            fetcher = ReplicaFetcher(leader, *address, self.me, self, self._max_frame).start()
            self.fetchers[leader] = fetcher
        return fetcher

    def _lead(self, tp: TopicPartition, a: Assignment) -> None:
        current = self.leaders.get(tp)
        if current is not None and current.epoch == a.epoch:
            if a.revision >= current.isr_revision:
                current.set_replicas(a.replicas, self.now_ms())
            self._count_isr(current.set_isr(a.isr, a.revision))
            return
        if current is not None:
            self._resign(tp, NotLeaderError(f"{tp} has a new leader epoch {a.epoch}"))
        for fetcher in self.fetchers.values():
            fetcher.unfollow(tp)
        plog = self._logs().get_log(tp)
        self.epochs(tp).assign(a.epoch, plog.log_end_offset)
        producers = self._producers()
        if producers is not None:
            producers.forget(tp)  # rebuilt from the replicated log on first use
        # Only what this broker knew was replicated is visible until the ISR confirms more.
        known = self._known_hw.get(tp, plog.log_start_offset)
        plog.update_high_watermark(min(plog.high_watermark, known))
        replicas = a.replicas
        leader = PartitionLeader(
            plog,
            me=self.me,
            epoch=a.epoch,
            replicas=replicas,
            isr=a.isr,
            isr_revision=a.revision,
            min_isr=self._min_isr(plog, len(replicas)),
            now_ms=self.now_ms(),
            on_visible=lambda: self._on_visible(tp),
        )
        self.leaders[tp] = leader
        logger.info(
            "%s: leading at epoch %d from offset %d (replicas %s, ISR %s)",
            tp, a.epoch, plog.log_end_offset, list(replicas), list(a.isr),
        )  # fmt: skip
        leader.update_high_watermark()
        self.replica_notifier.notify(tp)

    def _min_isr(self, plog: PartitionLog, replicas: int) -> int:
        wanted = plog.config.min_insync_replicas
        if wanted < 0:
            wanted = self.min_insync_replicas
        return max(1, min(wanted, replicas))

    def _resign(self, tp: TopicPartition, why: BrokerError) -> None:
        leader = self.leaders.pop(tp, None)
        if leader is not None:
            self._known_hw[tp] = leader.plog.high_watermark
            leader.close(why)
            self.replica_notifier.notify(tp)

    def leader(self, tp: TopicPartition) -> PartitionLeader | None:
        return self.leaders.get(tp)

    def epochs(self, tp: TopicPartition) -> LeaderEpochCache:
        cache = self._epochs.get(tp)
        if cache is None:
            manager = self._logs()
            plog = manager.get_log(tp)
            cache = LeaderEpochCache.open(manager.files, plog.directory, plog.log_end_offset)
            self._epochs[tp] = cache
        return cache

    # --- the follower's log (the fetchers call these) --------------------------------------

    def log_end(self, tp: TopicPartition) -> int:
        return self._logs().get_log(tp).log_end_offset

    def latest_epoch(self, tp: TopicPartition) -> int:
        return self.epochs(tp).latest_epoch

    def truncate_by_epoch(self, tp: TopicPartition, answer: rm.EpochEndOffset) -> bool:
        """Cut the divergent tail the leader's answer shows (KIP-279): at the end of the
        largest epoch at or below the leader's answer that this log has, and no further than
        where the leader's epoch ends. No epoch in common: everything goes (fetched again).
        Whether the logs now agree (otherwise ask again with the new latest epoch)."""
        plog = self._logs().get_log(tp)
        cache = self.epochs(tp)
        leo = plog.log_end_offset
        agreed = True
        if answer.leader_epoch == rm.UNDEFINED_EPOCH:
            target = 0
        else:
            mine = cache.end_offset_for(answer.leader_epoch, leo)
            if mine.epoch == rm.UNDEFINED_EPOCH:
                target = 0
            else:
                target = min(answer.end_offset, mine.end_offset)
                agreed = mine.epoch == answer.leader_epoch
        if target < leo:
            logger.info(
                "%s: cutting the divergent tail [%d, %d) (the leader's epoch %d ends at %d)",
                tp, target, leo, answer.leader_epoch, answer.end_offset,
            )  # fmt: skip
            self._truncate(tp, plog, cache, target)
            return agreed
        return True

    def _truncate(
        self, tp: TopicPartition, plog: PartitionLog, cache: LeaderEpochCache, offset: int
    ) -> None:
        plog.truncate_to(offset)
        cache.truncate_from_end(plog.log_end_offset)
        producers = self._producers()
        if producers is not None:
            producers.forget(tp)
        self._known_hw[tp] = min(self._known_hw.get(tp, 0), plog.log_end_offset)

    def restart_at(self, tp: TopicPartition, offset: int) -> None:
        plog = self._logs().get_log(tp)
        plog.truncate_fully_and_start_at(offset)
        self.epochs(tp).clear()
        producers = self._producers()
        if producers is not None:
            producers.forget(tp)

    def discard(self, tp: TopicPartition) -> None:
        """This broker holds no replica of ``tp`` any more (a reassignment dropped it): empty
        its log (the segments are removed) and its leader epoch checkpoint. Nothing is done
        while it still leads or follows ``tp``."""
        if tp in self.leaders or any(tp in f.partitions for f in self.fetchers.values()):
            return
        plog = self._logs().get_log(tp)
        if plog.log_end_offset == 0 and plog.log_start_offset == 0:
            return
        logger.info("%s: no replica here any more: removing its log [%d, %d)",
                    tp, plog.log_start_offset, plog.log_end_offset)  # fmt: skip
        self.restart_at(tp, 0)
        self._epochs.pop(tp, None)
        self._known_hw.pop(tp, None)

    def damaged_ranges(self, tp: TopicPartition) -> list[tuple[int, int]]:
        return self._logs().get_log(tp).damaged_ranges()

    def restore_range(self, tp: TopicPartition, first: int, end: int, data: memoryview) -> bool:
        return self._logs().get_log(tp).restore_range(first, end, data)

    def append_replica(
        self, tp: TopicPartition, data: memoryview, high_watermark: int
    ) -> asyncio.Future[None] | None:
        """Append the leader's batches as they are (offsets and epochs kept); the flush that
        makes them durable (``None``: nothing to flush)."""
        manager = self._logs()
        plog = manager.get_log(tp)
        cache = self.epochs(tp)
        position, end = 0, len(data)
        while position < end:
            size = batch_size_at(data, position)
            if size is None or position + size > end:
                raise InvalidRecordError(f"{tp}: the leader sent a cut batch at {position}")
            batch = data[position : position + size]
            base, _, epoch = BATCH_STAMP_STRUCT.unpack_from(batch)
            if epoch > cache.latest_epoch:
                cache.assign(epoch, base)
            plog.append(batch, assign_offsets=False)
            position += size
        leo = plog.log_end_offset
        known = min(high_watermark, leo)
        if known > self._known_hw.get(tp, -1):
            self._known_hw[tp] = known
            plog.update_high_watermark(max(plog.high_watermark, known))
        return manager.committer(tp).until(leo) if end else None

    # --- ISR upkeep ------------------------------------------------------------------------

    def propose(self, tp: TopicPartition, leader: PartitionLeader, isr: tuple[int, ...]) -> None:
        """Propose ``isr`` for ``tp`` in the background (one proposal at a time)."""
        if leader.proposing or leader.closed is not None:
            return
        leader.proposing = True
        leader.joining = tuple(b for b in isr if b not in leader.isr)
        task = asyncio.get_running_loop().create_task(self._proposal(tp, leader, isr))
        self._proposals.add(task)
        task.add_done_callback(self._proposals.discard)

    async def _proposal(
        self, tp: TopicPartition, leader: PartitionLeader, isr: tuple[int, ...]
    ) -> None:
        try:
            revision = await self._propose_isr(tp, leader, isr)
        except Exception as exc:  # etcd unreachable: the next check proposes again
            logger.warning("%s: could not write the ISR %s: %s", tp, list(isr), exc)
            revision = 0
        finally:
            leader.proposing = False
            leader.joining = ()
        if revision and leader.closed is None:
            logger.info("%s: ISR %s -> %s", tp, list(leader.isr), list(isr))
            self._count_isr(leader.set_isr(isr, revision))
        elif leader.closed is None:
            leader.update_high_watermark()  # refused: no longer held back by the joiners

    def abandoned(self, silence_ms: int) -> list[TopicPartition]:
        """The partitions led here whose in-sync followers have all been silent for
        ``silence_ms`` (see :meth:`PartitionLeader.abandoned`)."""
        now = self.now_ms()
        return [tp for tp, leader in self.leaders.items() if leader.abandoned(now, silence_ms)]

    def _count_isr(self, change: tuple[bool, bool]) -> None:
        shrunk, expanded = change
        self.isr_shrinks += shrunk
        self.isr_expands += expanded

    async def _check_isr(self) -> None:
        interval = min(ISR_CHECK_MAX_S, self.lag_ms / 2000)
        while True:
            await asyncio.sleep(interval)
            now = self.now_ms()
            for tp, leader in list(self.leaders.items()):
                lagging = leader.lagging(now, self.lag_ms)
                if lagging:
                    isr = tuple(b for b in leader.isr if b not in lagging)
                    self.propose(tp, leader, isr)
