"""The idempotent producer's state: its producer id and epoch, each partition's next sequence.

Kafka's KIP-98, without transactions. The producer asks the broker for an id once
(``InitProducerId``, before its first batch); :meth:`Idempotence.stamp` then gives every batch
the id, the epoch and the partition's next sequence when the accumulator first takes it. The
sequence is per batch (its first record's), so the per-record path does not change. A retry
resends the same bytes: the broker, which remembers each producer's last
:data:`MAX_IN_FLIGHT_PER_PARTITION` batches per partition, answers a batch it already has with
its original offsets instead of appending it again.

A partition may have several requests in flight, :data:`MAX_IN_FLIGHT_PER_PARTITION` batches in
all; :mod:`.inflight` has the rules that keep them in order (a retried request goes again whole
and alone, ``OUT_OF_ORDER_SEQUENCE`` behind an earlier request of ours is retried, ...).

Recovery, as KIP-360 does it for the idempotent producer: once a stamped batch fails for good
(``OUT_OF_ORDER_SEQUENCE`` with no earlier request of ours to explain it, a delivery timeout,
retries exhausted, any non-retriable error), its partition's sequence no longer says what the
broker holds. The later batches of that partition stamped with the same epoch can then never be
accepted (the broker wants the failed batch's sequence first): as Kafka does, they are not
retried. Those waiting for a retry fail at once (a :class:`~.errors.ClientError` whose cause is
the first failure); those still in flight keep an acknowledgement if one comes (the broker has
them) and otherwise fail with the error they get. The producer stamps nothing new until it has
bumped its epoch (``InitProducerId`` with its id and epoch); under the new epoch every partition
starts again at sequence 0. Batches of *other* partitions stamped with the old epoch are still
resent as they are (the broker knows that epoch on their partition until a batch of the new
epoch arrives there, which goes only once the partition has nothing in flight). A failed batch
is never restamped: its records may be in the log, and a new sequence would write them twice.

``INVALID_PRODUCER_EPOCH`` (another producer holds a newer epoch of this id: fenced) is fatal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from tidelog.wire import messages as m
from tidelog.wire.records import NO_PRODUCER_ID

if TYPE_CHECKING:
    from .batch import ProducerBatch
    from .types import TopicPartition

MAX_IN_FLIGHT_PER_PARTITION: Final = 5
"""Batches of one partition in flight at most with idempotence: what the broker remembers."""
SEQUENCE_WRAP: Final = 2**31
"""Sequences wrap to 0 after 2**31 - 1, as in Kafka."""


class Idempotence:
    """The producer id, epoch and per-partition sequences of one producer session."""

    __slots__ = (
        "_sequences",
        "bump_needed",
        "fatal",
        "last_error",
        "producer_epoch",
        "producer_id",
    )

    def __init__(self) -> None:
        self.producer_id = NO_PRODUCER_ID
        self.producer_epoch = -1
        self.bump_needed = False
        """A batch stamped with the current epoch failed for good: bump before stamping."""
        self.fatal: BaseException | None = None
        """Why this producer can send nothing more (fenced, or the broker refused an id)."""
        self.last_error: BaseException | None = None
        """The last retriable failure of InitProducerId (the cause of a delivery timeout)."""
        self._sequences: dict[TopicPartition, int] = {}

    @property
    def ready(self) -> bool:
        """Whether new batches can be stamped now."""
        return self.producer_id >= 0 and not self.bump_needed and self.fatal is None

    def stamp(self, batch: ProducerBatch) -> bool:
        """Stamp ``batch`` with the id, the epoch and its partition's next sequence; ``False``
        (nothing done) while not :attr:`ready`."""
        if self.producer_id < 0 or self.bump_needed or self.fatal is not None:
            return False
        sequences = self._sequences
        tp = batch.tp
        sequence = sequences.get(tp, 0)
        count = batch.stamp(self.producer_id, self.producer_epoch, sequence)
        sequences[tp] = (sequence + count) % SEQUENCE_WRAP
        return True

    def next_sequence(self, tp: TopicPartition) -> int:
        """The sequence the next new batch of ``tp`` gets."""
        return self._sequences.get(tp, 0)

    def failed(self, batch: ProducerBatch) -> None:
        """``batch`` failed for good: if it carries the current epoch, its partition's sequence
        is broken and the epoch must be bumped before anything new is stamped."""
        if (
            batch.sequence >= 0
            and batch.producer_id == self.producer_id
            and batch.producer_epoch == self.producer_epoch
        ):
            self.bump_needed = True

    def request(self) -> m.InitProducerIdRequest:
        """A new producer id, or (KIP-360) the next epoch of this one."""
        if self.producer_id < 0:
            return m.InitProducerIdRequest()
        return m.InitProducerIdRequest(
            producer_id=self.producer_id, producer_epoch=self.producer_epoch
        )

    def update(self, response: m.InitProducerIdResponse) -> None:
        """Take the id and epoch the broker gave: every partition starts at sequence 0."""
        if response.producer_id < 0 or response.producer_epoch < 0:
            raise ValueError(
                f"InitProducerId answered id {response.producer_id} epoch {response.producer_epoch}"
            )
        self.producer_id = response.producer_id
        self.producer_epoch = response.producer_epoch
        self._sequences.clear()
        self.bump_needed = False
        self.last_error = None
