"""The follower side: one fetcher task per leader broker, fetching every partition this broker
follows there in one request.

For each partition the fetcher first cuts the local log's divergent tail by leader epoch
(OffsetsForLeaderEpoch, KIP-101/279), never at its own high watermark; then it fetches from its
log end with its replica id and the epoch it follows, appends the leader's batches verbatim
(their offsets and epochs), and fsyncs them before the next fetch reports the new log end as
its position. A partition whose leader refuses the epoch waits for the cluster's view to name
the next leader (:meth:`ReplicaFetcher.follow` is called again then).

**Damaged ranges** (storage integrity: the scrubber, recovery or a read found bytes that fail
their checks) are fetched again from the leader: every ``REPAIR_CHECK_S`` the fetcher looks for
damage in the partitions it follows and asks the leader for those offsets with a plain
consumer fetch (below the high watermark; not a replica fetch, which would report a position),
and the log writes them over the damage if they fit it exactly (``PartitionLog.restore_range``).
A range that cannot be restored is asked for again after ``REPAIR_RETRY_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Final, Protocol

from tidelog.wire import messages as m
from tidelog.wire import replica_messages as rm
from tidelog.wire.errors import (
    BrokerError,
    ErrorCode,
    TidelogError,
)

from ..log import TopicPartition
from .peer import PeerConnection

logger = logging.getLogger("tidelog.server.replication")

FETCH_MAX_WAIT_MS: Final = 500
FETCH_MAX_BYTES: Final = 8 * 1024 * 1024
PARTITION_MAX_BYTES: Final = 1024 * 1024
RETRY_DELAY_S: Final = 0.2
REQUEST_TIMEOUT_S: Final = 10.0
REPAIR_CHECK_S: Final = 1.0
"""How often the fetcher looks for damaged ranges in what it follows (a scan of the segments'
damage lists: cheap, but not for every fetch)."""
REPAIR_RETRY_S: Final = 30.0


class FollowerLogs(Protocol):
    """What a fetcher needs of the broker's logs (the replica manager)."""

    def log_end(self, tp: TopicPartition) -> int: ...
    def latest_epoch(self, tp: TopicPartition) -> int: ...
    def truncate_by_epoch(self, tp: TopicPartition, answer: rm.EpochEndOffset) -> bool: ...
    def restart_at(self, tp: TopicPartition, offset: int) -> None: ...
    def append_replica(
        self, tp: TopicPartition, data: memoryview, high_watermark: int
    ) -> asyncio.Future[None] | None: ...
    def damaged_ranges(self, tp: TopicPartition) -> list[tuple[int, int]]: ...
    def restore_range(self, tp: TopicPartition, first: int, end: int, data: memoryview) -> bool: ...


@dataclass(slots=True)
class Following:
    epoch: int
    truncated: bool = False
    retry_at: float = 0.0
    """The leader refused this partition (an epoch it does not share yet, a log it is still
    setting up): ask again from this loop time on, or when the view names a new leader."""


class ReplicaFetcher:
    """Fetches the partitions this broker follows from the broker at ``host:port``."""

    def __init__(
        self, leader: int, host: str, port: int, me: int, logs: FollowerLogs, max_frame: int
    ) -> None:
        self.leader = leader
        self.address = (host, port)
        self._me = me
        self._logs = logs
        self._max_frame = max_frame
        self.partitions: dict[TopicPartition, Following] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._repair_check_at = 0.0
        self._repair_tried: dict[tuple[TopicPartition, int], float] = {}
        """Damaged ranges asked for (by first offset), and when: asked again after a while."""

    def start(self) -> ReplicaFetcher:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"replica-fetcher-{self.leader}"
        )
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def follow(self, tp: TopicPartition, epoch: int) -> None:
        """Fetch ``tp`` in leader epoch ``epoch`` (a new epoch: cut the tail by epoch first)."""
        current = self.partitions.get(tp)
        if current is None or current.epoch != epoch:
            self.partitions[tp] = Following(epoch)
        else:
            current.retry_at = 0.0
        self._wake.set()

    def unfollow(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp, None)

    def is_following(self, tp: TopicPartition, epoch: int) -> bool:
        current = self.partitions.get(tp)
        return current is not None and current.epoch == epoch and current.truncated

    async def _run(self) -> None:
        while True:
            if not self._active():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_retry()):
                        await self._wake.wait()
                continue
            peer = None
            try:
                peer = await PeerConnection.open(
                    *self.address, f"replica-{self._me}", self._max_frame
                )
                while self._active():
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        await self._truncate(peer)
                        await self._fetch(peer)
                        await self._repair(peer)
            except (TidelogError, OSError, TimeoutError) as exc:
                logger.info("replica fetcher from broker %d: %s; retrying", self.leader, exc)
                await asyncio.sleep(RETRY_DELAY_S)
            finally:
                if peer is not None:
                    peer.close()

    def _active(self) -> dict[TopicPartition, Following]:
        now = asyncio.get_running_loop().time()
        return {tp: f for tp, f in self.partitions.items() if f.retry_at <= now}

    def _next_retry(self) -> float | None:
        """Seconds until a refused partition may be asked again (``None``: none is)."""
        if not self.partitions:
            return None
        now = asyncio.get_running_loop().time()
        return max(0.0, min(f.retry_at for f in self.partitions.values()) - now)

    async def _truncate(self, peer: PeerConnection) -> None:
        asked = {tp: f for tp, f in self._active().items() if not f.truncated}
        if not asked:
            return
        request = rm.OffsetsForLeaderEpochRequest(
            tuple(
                rm.EpochPartition(tp.topic, tp.partition, self._logs.latest_epoch(tp), f.epoch)
                for tp, f in asked.items()
            ),
            replica_id=self._me,
        )
        response, _ = await peer.request(request)
        assert isinstance(response, rm.OffsetsForLeaderEpochResponse)
        for answer in response.partitions:
            tp = TopicPartition(answer.topic, answer.partition)
            following = self.partitions.get(tp)
            if following is None or following is not asked.get(tp):
                continue  # unfollowed or another epoch meanwhile
            if answer.error_code:
                self._refused(tp, following, answer.error_code, answer.error_message)
                continue
            try:
                following.truncated = self._logs.truncate_by_epoch(tp, answer)
            except BrokerError as exc:
                logger.warning("%s: cannot truncate by epoch: %s", tp, exc)
                self._park(following)

    async def _fetch(self, peer: PeerConnection) -> None:
        fetching = {tp: f for tp, f in self._active().items() if f.truncated}
        if not fetching:
            return
        request = m.FetchRequest(
            tuple(
                m.FetchPartition(
                    tp.topic,
                    tp.partition,
                    self._logs.log_end(tp),
                    PARTITION_MAX_BYTES,
                    current_leader_epoch=f.epoch,
                )
                for tp, f in fetching.items()
            ),
            max_wait_ms=FETCH_MAX_WAIT_MS,
            min_bytes=1,
            max_bytes=FETCH_MAX_BYTES,
            replica_id=self._me,
        )
        response, data = await peer.request(request)
        assert isinstance(response, m.FetchResponse)
        view = memoryview(data)
        position = 0
        flushes = []
        for result in response.partitions:
            chunk = view[position : position + result.size]
            position += result.size
            tp = TopicPartition(result.topic, result.partition)
            following = self.partitions.get(tp)
            if following is None or following is not fetching.get(tp):
                continue  # unfollowed, or a new epoch, while the fetch was out
            if result.error_code == ErrorCode.OFFSET_OUT_OF_RANGE:
                self._out_of_range(tp, following, result)
                continue
            if result.error_code:
                self._refused(tp, following, result.error_code, result.error_message)
                continue
            try:
                flushed = self._logs.append_replica(tp, chunk, result.high_watermark)
            except BrokerError as exc:
                logger.warning("%s: cannot append the leader's batches: %s", tp, exc)
                following.truncated = False  # ask again where the epochs part
                continue
            if flushed is not None:
                flushes.append(flushed)
        if flushes:
            # fsynced before the next fetch reports the new log end as this replica's position
            await asyncio.gather(*flushes)

    async def _repair(self, peer: PeerConnection) -> None:
        """Fetch the damaged ranges of the followed partitions again (see the module)."""
        now = asyncio.get_running_loop().time()
        if now < self._repair_check_at:
            return
        self._repair_check_at = now + REPAIR_CHECK_S
        for tp, following in list(self.partitions.items()):
            if not following.truncated:
                continue
            for first, end in self._logs.damaged_ranges(tp):
                if self._repair_tried.get((tp, first), -REPAIR_RETRY_S) + REPAIR_RETRY_S > now:
                    continue
                self._repair_tried[(tp, first)] = now
                request = m.FetchRequest(
                    (m.FetchPartition(tp.topic, tp.partition, first, FETCH_MAX_BYTES,
                                      current_leader_epoch=following.epoch),),
                    max_wait_ms=0,
                    max_bytes=FETCH_MAX_BYTES,
                )  # fmt: skip
                response, data = await peer.request(request)
                assert isinstance(response, m.FetchResponse)
                (result,) = response.partitions
                if result.error_code:
                    logger.info("%s: damaged offsets [%d, %d) not fetched again: %s",
                                tp, first, end, result.error_message)  # fmt: skip
                    continue
                try:
                    if self._logs.restore_range(tp, first, end, memoryview(data)[: result.size]):
                        del self._repair_tried[(tp, first)]
                except BrokerError as exc:
                    logger.warning("%s: cannot restore damaged offsets [%d, %d): %s",
                                   tp, first, end, exc)  # fmt: skip

    def _out_of_range(
        self, tp: TopicPartition, following: Following, result: m.FetchPartitionResult
    ) -> None:
        end = self._logs.log_end(tp)
        if 0 <= end < result.log_start_offset:
            logger.info("%s: behind the leader's log start %d", tp, result.log_start_offset)
            self._logs.restart_at(tp, result.log_start_offset)
        else:
            following.truncated = False  # diverged past the leader's end: by epoch again

    def _refused(
        self, tp: TopicPartition, following: Following, code: int, message: str | None
    ) -> None:
        logger.info(
            "%s: broker %d refused epoch %d (error %d: %s): asking again shortly",
            tp, self.leader, following.epoch, code, message,
        )  # fmt: skip
        self._park(following)

    @staticmethod
    def _park(following: Following) -> None:
        following.retry_at = asyncio.get_running_loop().time() + RETRY_DELAY_S
