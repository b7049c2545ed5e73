"""The leader side of replication: the FETCH of a follower (``replica_id`` >= 0) and
OffsetsForLeaderEpoch.

A follower's fetch is checked against the leader epoch it names (KIP-320: an older one is
FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH), records the follower's position (its
fsynced log end: the fetch offset), which may move the high watermark or let it back into the
ISR, and reads up to the log end, not the high watermark. It waits for appends, not for the
high watermark, within ``max_wait_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidelog.wire import messages as m
from tidelog.wire import replica_messages as rm
from tidelog.wire.errors import (
    BrokerError,
    FencedLeaderEpochError,
    NotLeaderError,
    OffsetOutOfRangeError,
    UnknownLeaderEpochError,
)
from tidelog.wire.records import Buffer

from ..core.data import fetch_result
from ..core.types import DeadlineClock, Reply
from ..log import TopicPartition
from .leader import PartitionLeader
from .manager import ReplicaManager


class LeaderApis:
    """Serves followers from the partitions this broker leads."""

    def __init__(self, replicas: ReplicaManager, clock: DeadlineClock, max_wait_ms: int) -> None:
        self._replicas = replicas
        self._clock = clock
        self._max_wait_ms = max_wait_ms

    def _leader(self, topic: str, partition: int, epoch: int) -> PartitionLeader:
        tp = TopicPartition(topic, partition)
        leader = self._replicas.leader(tp)
        if leader is None:
            raise NotLeaderError(f"{tp} is not led by this broker")
        if epoch < leader.epoch:
            raise FencedLeaderEpochError(
                f"{tp}: epoch {epoch} is older than this leader's {leader.epoch}"
            )
        if epoch > leader.epoch:
            raise UnknownLeaderEpochError(
                f"{tp}: epoch {epoch} is newer than this leader's {leader.epoch}"
            )
        return leader

    async def fetch(self, request: m.FetchRequest, max_bytes: int) -> Reply:
        clock = self._clock
        wait = min(max(request.max_wait_ms, 0), self._max_wait_ms) / 1000
        deadline = clock.monotonic() + wait
        replica = request.replica_id
        now = self._replicas.now_ms()
        for p in request.partitions:  # the positions count once, on arrival
            try:
                leader = self._leader(p.topic, p.partition, p.current_leader_epoch)
            except BrokerError:
                continue
            if leader.plog.log_start_offset <= p.offset <= leader.plog.log_end_offset:
                tp = TopicPartition(p.topic, p.partition)
                if leader.follower_fetched(replica, p.offset, now):
                    self._replicas.propose(tp, leader, (*leader.isr, replica))
        while True:
            results, chunks, total = self._read(request.partitions, max_bytes)
            remaining = deadline - clock.monotonic()
            if (
                total >= max(request.min_bytes, 0)
                or remaining <= 0
                or any(r.error_code for r in results)
            ):
                return m.FetchResponse(tuple(results)), chunks
            notifier = self._replicas.replica_notifier
            with notifier.watch((p.topic, p.partition) for p in request.partitions) as woken:
                await clock.wait(woken, remaining)

    def _read(
        self, partitions: Sequence[m.FetchPartition], max_bytes: int
    ) -> tuple[list[m.FetchPartitionResult], list[Buffer], int]:
        results: list[m.FetchPartitionResult] = []
        chunks: list[Buffer] = []
        total = 0
        for p in partitions:
            try:
                leader = self._leader(p.topic, p.partition, p.current_leader_epoch)
                plog = leader.plog
                if not plog.log_start_offset <= p.offset <= plog.log_end_offset:
                    raise OffsetOutOfRangeError(
                        f"{plog.name}: offset {p.offset} is outside [{plog.log_start_offset}, "
                        f"{plog.log_end_offset}]: truncate by epoch first"
                    )
                budget = min(max(p.max_bytes, 0), max_bytes - total)
                payload = b""
                if total == 0 or budget > 0:
                    payload = plog.read(p.offset, budget, min_one_batch=total == 0).records
            except OffsetOutOfRangeError as exc:  # the follower must truncate or restart
                results.append(fetch_result(p, plog, 0, exc))
                continue
            except BrokerError as exc:
                results.append(m.FetchPartitionResult(p.topic, p.partition, exc.code, exc.message))
                continue
            chunks.append(payload)
            total += len(payload)
            results.append(fetch_result(p, plog, len(payload)))
        return results, chunks, total

    def offsets_for_leader_epoch(
        self, request: rm.OffsetsForLeaderEpochRequest
    ) -> rm.OffsetsForLeaderEpochResponse:
        out = []
        for p in request.partitions:
            try:
                tp = TopicPartition(p.topic, p.partition)
                if p.current_leader_epoch >= 0:
                    leader = self._leader(p.topic, p.partition, p.current_leader_epoch)
                else:
                    found = self._replicas.leader(tp)
                    if found is None:
                        raise NotLeaderError(f"{tp} is not led by this broker")
                    leader = found
                end = self._replicas.epochs(tp).end_offset_for(
                    p.leader_epoch, leader.plog.log_end_offset
                )
            except BrokerError as exc:
                out.append(rm.EpochEndOffset(p.topic, p.partition, exc.code, exc.message))
                continue
            out.append(
                rm.EpochEndOffset(
                    p.topic, p.partition, leader_epoch=end.epoch, end_offset=end.end_offset
                )
            )
        return rm.OffsetsForLeaderEpochResponse(tuple(out))
