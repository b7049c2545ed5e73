"""Choosing a record's partition.

The key hash (stable: every tidelog client must compute the same)
----------------------------------------------------------------
A record with a key (after serialization) goes to partition::

    (crc32c(key) & 0x7FFFFFFF) % partition_count

where ``crc32c`` is CRC-32C (Castagnoli: reflected polynomial 0x82F63B78, initial value
0xFFFFFFFF, final XOR 0xFFFFFFFF; the same checksum frames and batches use), computed over the
serialized key bytes exactly as they are sent, and the result indexes the topic's partitions
numbered 0 to ``partition_count - 1``. The mask makes the hash a non-negative 31-bit integer
in every language. Check values: ``crc32c(b"123456789") == 0xE3069283``, so the key
``b"123456789"`` lands on partition 1661375107 % n (7 of 12); the empty key hashes to 0.

A key keeps its partition as long as the partition count does not change.

Keyless records
---------------
Keyless records stick to one partition until the batch being filled for it is full, then move
to the next partition with a leader, round robin (the "sticky" partitioner of Kafka 2.4+): large
batches, and an even spread over time.

Custom partitioners
-------------------
Any callable ``partitioner(key, all_partitions, available) -> partition``, where ``key`` is the
serialized key (or ``None``), ``all_partitions`` every partition id of the topic and
``available`` the ones with a leader right now (may be empty).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from crc32c import crc32c

_MASK: Final = 0x7FFFFFFF


class Partitioner(Protocol):
    """A user-supplied partitioner; see the module documentation."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int: ...


def key_hash(key: bytes) -> int:
    """The stable 31-bit hash of a serialized key: ``crc32c(key) & 0x7FFFFFFF``."""
    return int(crc32c(key)) & _MASK


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition a keyed record goes to (see the module documentation)."""
    if partition_count < 1:
        raise ValueError("a topic has at least one partition")
    return (int(crc32c(key)) & _MASK) % partition_count


class StickyPartitioner:
    """Per topic, the partition keyless records go to now; :meth:`next` moves on when the
    batch being filled there is full. ``rand`` picks each topic's starting point so that
    producers started together do not all begin on partition 0."""

    __slots__ = ("_current", "_rand")

    def __init__(self, rand: Callable[[int], int] | None = None) -> None:
        self._current: dict[str, int] = {}
        self._rand = rand or random.randrange

    @property
    def current(self) -> Mapping[str, int]:
        """Each topic's sticky partition (read-only view; the producer's hot path reads it)."""
        return self._current

    def partition(self, topic: str, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        """The sticky partition of ``topic`` (chosen now if it has none). Cheap: a dict
        lookup; call :meth:`forget` when the metadata changes so a choice is re-checked."""
        current = self._current.get(topic)
        if current is not None:
            return current
        return self._pick(topic, all_partitions, available, None)

    def forget(self) -> None:
        """Drop every topic's choice (the metadata changed: partitions may have gone)."""
        self._current.clear()

    def next(self, topic: str, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        """Move ``topic`` on to the next partition (its batch filled) and return it."""
        return self._pick(topic, all_partitions, available, self._current.get(topic))

    def _pick(
        self,
        topic: str,
        all_partitions: Sequence[int],
        available: Sequence[int],
        current: int | None,
    ) -> int:
        pool = available or all_partitions
        if not pool:
            raise ValueError(f"topic {topic!r} has no partitions")
        if current is None:
            choice = pool[self._rand(len(pool))]
        else:
            # The first partition after the current one, wrapping round.
            after = [p for p in pool if p > current]
            choice = after[0] if after else pool[0]
        self._current[topic] = choice
        return choice


def choose_partition(
    topic: str,
    key: bytes | None,
    partition: int | None,
    all_partitions: Sequence[int],
    available: Sequence[int],
    partitioner: Partitioner | None,
    sticky: StickyPartitioner,
) -> tuple[int, bool]:
    """The partition of a record: ``partition`` if given (checked), else the user's
    ``partitioner``, else the key hash, else the sticky choice. Returns it and whether it is
    the sticky one (the producer moves the topic on when that batch fills)."""
    if partition is not None:
        return check_partition(topic, partition, all_partitions), False
    if partitioner is not None:
        chosen = partitioner(key, all_partitions, available)
        return check_partition(topic, chosen, all_partitions), False
    if key is not None:
        return (int(crc32c(key)) & _MASK) % len(all_partitions), False
    return sticky.partition(topic, all_partitions, available), True


def check_partition(topic: str, partition: int, all_partitions: Sequence[int]) -> int:
    """``partition`` if ``topic`` has it, else ValueError naming the valid range."""
    if type(partition) is not int or not 0 <= partition < len(all_partitions):
        raise ValueError(
            f"topic {topic!r} has no partition {partition} "
            f"(it has {len(all_partitions)}: 0..{len(all_partitions) - 1})"
        )
    return partition
