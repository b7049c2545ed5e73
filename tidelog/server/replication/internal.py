"""Internal topics written through the partition leader's replication path.

The group coordinator appends its records to ``__consumer_offsets`` itself. On a single broker
an fsync makes them durable; in a cluster that is not enough: a record only the coordinator
has is lost with it when it dies, and the next leader of the partition resumes the group
without it (members rejoin a group of one, commits go backwards). :class:`ReplicatedAppends`
gives the coordinator what a produce with acks=all gets: the leader epoch stamped in the batch
(so followers truncate by epoch, never by high watermark), the followers woken, and an answer
only once the high watermark -- every in-sync replica, fsynced -- has passed the records.
Errors come as the coordinator errors a client acts on, as Kafka maps them: a leadership lost
or still being set up is NOT_COORDINATOR (find it again), too few in-sync replicas is
COORDINATOR_NOT_AVAILABLE (retry).
"""

from __future__ import annotations

from tidelog.wire.errors import (
    BrokerError,
    CoordinatorNotAvailableError,
    ErrorCode,
    NotCoordinatorError,
)
from tidelog.wire.messages import Acks

from ..core.durability import WritePath
from ..log import TopicPartition
from .manager import ReplicaManager

_MOVED = (ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.FENCED_LEADER_EPOCH)


class ReplicatedAppends:
    """Appends of an internal topic's batches that answer once replicated (see the module)."""

    def __init__(self, writes: WritePath, replicas: ReplicaManager) -> None:
        self._writes = writes
        self._replicas = replicas

    def append(self, tp: TopicPartition, batch: bytes) -> int:
        """Append ``batch`` as the leader of ``tp`` (now, synchronously); the offset after it,
        for :meth:`until`."""
        try:
            return self._writes.append(tp, [batch], Acks.ALL).next_offset
        except BrokerError as exc:
            raise _as_coordinator_error(tp, exc) from exc

    async def until(self, tp: TopicPartition, end: int) -> None:
        """Return once the high watermark of ``tp`` has reached ``end``."""
        leader = self._replicas.leader(tp)
        if leader is None:
            raise NotCoordinatorError(f"{tp}: this broker does not lead it any more")
        try:
            await leader.wait_for(end)
        except BrokerError as exc:
            raise _as_coordinator_error(tp, exc) from exc


def _as_coordinator_error(tp: TopicPartition, exc: BrokerError) -> BrokerError:
    if exc.code in _MOVED:
        return NotCoordinatorError(f"{tp} moved: {exc.message}")
    if exc.code in (ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND):
        return CoordinatorNotAvailableError(f"{tp}: {exc.message}")
    return exc
