"""The producer's per-partition in-flight rules: how many batches of a partition may go now.

The per-broker bound is the sender's ``max_in_flight`` requests; this is the per-partition one.

Without idempotence a partition has at most one request in flight, carrying up to
``max_batches`` batches: a retried batch can then never be overtaken, which is what keeps order.

With idempotence (Kafka's ``max.in.flight.requests.per.connection`` up to 5 under
``enable.idempotence``) a partition may have several requests in flight at once, as long as
they carry at most ``max_batches`` batches in all (at most 5: what the broker remembers per
producer and partition), each at most ``per_request``: while the broker appends and fsyncs
one, the next is already on its way. The sequences keep the order, with these rules (after
Kafka's ``RecordAccumulator.shouldStopDrainBatchesForPartition`` and
``TransactionManager.canRetry``):

* The bound counts batches from the oldest one not yet answered: a batch answered while an
  earlier one is still out does not free its slot until that earlier one is answered too. The
  broker may answer one connection's requests out of order (an acks=all append waits for its
  fsync while a later one finishes), and it remembers only the producer's last
  ``max_batches`` batches: were slots freed out of order, later batches could push the
  unanswered one out of that window, and its retry after a lost connection would be refused
  as ``OUT_OF_ORDER_SEQUENCE`` although the broker has it.
* A partition pipelines only once a batch of the producer's current id and epoch has been
  acknowledged on it: the broker accepts the first batch of a producer it does not know (and
  of a new epoch) without checking it follows anything, so a later request must not be able to
  arrive before it. So the first batch of a new epoch goes only when the partition is quiet,
  and no batch of a new epoch can meet batches of the old one in flight (the broker would
  fence those).
* A retried *group* (a partition's batches of one earlier request, which the broker appended
  all or none) is resent whole and alone, only once nothing else of its partition is in
  flight; while it is in flight nothing else of the partition goes. Once the partition's
  retries are done, pipelining resumes.
* A group answered ``OUT_OF_ORDER_SEQUENCE`` that was sent while an earlier group of its
  partition was in flight *raced* it (the earlier one failed, or the broker took them out of
  order): the gap is ours and the group is retried, alone, so it cannot race again. A group
  sent alone that gets ``OUT_OF_ORDER_SEQUENCE`` met a real gap: it fails for good.
* Once a stamped batch has failed for good, the later batches of its partition stamped with the
  same producer id and epoch can never be accepted under that epoch: they are *doomed*. Each
  fails at its next error instead of being retried (an acknowledgement still counts: the broker
  has the batch); the sender fails those waiting for a retry at once.

Everything here is synchronous and per batch group, never per record.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from .batch import ProducerBatch
from .idempotence import Idempotence
from .types import TopicPartition

UNLIMITED: Final = 2**31 - 1
"""A limit that never binds (a retried group is taken whole whatever its size)."""


@dataclass(slots=True)
class _Partition:
    batches: int = 0
    """Batches of the partition counted in flight: those of :attr:`groups`."""
    groups: deque[list[int]] = field(default_factory=deque)
    """``[group, batches, answered]`` per group sent, oldest first, from the oldest one not
    answered yet (the answered ones before it are dropped)."""
    retry_group: int = -1
    """The retried group in flight, if any (-1: none): nothing else goes beside it."""
    acked_id: int = -1
    acked_epoch: int = -1
    """The producer id and epoch of the last batch acknowledged on the partition."""
    broken: tuple[int, int, int] | None = None
    """(producer id, epoch, group) of the first stamped batch that failed for good."""


class PartitionFlights:
    """What is in flight per partition, and the rules above: the accumulator's ``gate``.
    ``idempotence`` (``None``: off) picks the rules; ``max_batches`` is the per-partition
    bound, ``per_request`` the batches of a partition one request takes at most (idempotent
    only)."""

    __slots__ = ("_idempotence", "_parts", "_racing", "idempotent", "max_batches", "per_request")

    def __init__(
        self, idempotence: Idempotence | None, *, max_batches: int, per_request: int
    ) -> None:
        if max_batches < 1 or per_request < 1:
            raise ValueError("max_batches and per_request must be at least 1")
        self._idempotence = idempotence
        self.idempotent = idempotence is not None
        self.max_batches = max_batches
        self.per_request = per_request
        self._parts: dict[TopicPartition, _Partition] = {}
        self._racing: set[int] = set()

    def _part(self, tp: TopicPartition) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        return part

    def in_flight(self, tp: TopicPartition) -> int:
        """Batches of ``tp`` in flight."""
        part = self._parts.get(tp)
        return 0 if part is None else part.batches

    def limit(self, tp: TopicPartition, first: ProducerBatch) -> int:
        """How many batches of ``tp`` may be taken now, ``first`` at the front of its queue
        (0: none)."""
        part = self._parts.get(tp)
        flying = 0 if part is None else part.batches
        idem = self._idempotence
        if idem is None:
            return 0 if flying else self.max_batches
        if first.sequence >= 0:  # a retried group: alone, once its partition is quiet
            return UNLIMITED if not flying else 0
        if not flying or part is None:
            return min(self.per_request, self.max_batches)
        if part.retry_group >= 0 or (part.acked_id, part.acked_epoch) != (
            idem.producer_id,
            idem.producer_epoch,
        ):
            return 0
        return min(self.per_request, self.max_batches - flying)

    def sent(self, tp: TopicPartition, group: list[ProducerBatch]) -> None:
        """``group``, the batches of ``tp`` in one request, is on its way."""
        part = self._part(tp)
        first = group[0]
        if self.idempotent:
            if part.batches:
                self._racing.add(first.group)
            if first.attempts > 1:
                part.retry_group = first.group
        part.groups.append([first.group, len(group), 0])
        part.batches += len(group)

    def raced(self, group: list[ProducerBatch]) -> bool:
        """Whether ``group`` (in flight) was sent while an earlier group of its partition was in
        flight: an OUT_OF_ORDER_SEQUENCE answer to it is then a gap of our own, retriable."""
        return group[0].group in self._racing

    def landed(self, tp: TopicPartition, group: list[ProducerBatch]) -> None:
        """``group`` is back: acknowledged, failed, or queued for a retry."""
        part = self._part(tp)
        first = group[0].group
        groups = part.groups
        for entry in groups:
            if entry[0] == first:
                entry[2] = 1
                break
        while groups and groups[0][2]:
            part.batches -= groups.popleft()[1]
        if part.retry_group == first:
            part.retry_group = -1
        self._racing.discard(first)

    def acknowledged(self, tp: TopicPartition, batch: ProducerBatch) -> None:
        """``batch`` of ``tp`` is acknowledged: the broker knows its producer id and epoch."""
        part = self._part(tp)
        part.acked_id = batch.producer_id
        part.acked_epoch = batch.producer_epoch

    def broke(self, batch: ProducerBatch) -> bool:
        """The stamped ``batch`` failed for good; ``True`` if that dooms the later batches of
        its partition and epoch (``False``: an earlier batch already did)."""
        part = self._part(batch.tp)
        broken = part.broken
        if (
            broken is not None
            and broken[:2] == (batch.producer_id, batch.producer_epoch)
            and broken[2] <= batch.group
        ):
            return False  # already doomed
        part.broken = (batch.producer_id, batch.producer_epoch, batch.group)
        return True

    def doomed(self, batch: ProducerBatch) -> bool:
        """Whether a batch of ``batch``'s partition, id and epoch, of its group or an earlier one,
        failed for good."""
        part = self._parts.get(batch.tp)
        broken = None if part is None else part.broken
        return (
            broken is not None
            and batch.sequence >= 0
            and broken[:2] == (batch.producer_id, batch.producer_epoch)
            and broken[2] <= batch.group
        )
