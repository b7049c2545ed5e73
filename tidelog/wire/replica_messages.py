"""Messages between the replicas of a partition: OffsetsForLeaderEpoch (docs/PROTOCOL.md,
"OFFSETS_FOR_LEADER_EPOCH"; Kafka's KIP-101 and KIP-279).

A follower that starts following a new leader asks it where the follower's latest leader epoch
ends in the leader's log, and cuts its own log there: the divergent tail a deposed leader wrote
but never replicated goes, and nothing the new leader has is lost. Followers fetch with the
ordinary FETCH request (``replica_id`` and each partition's ``current_leader_epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

UNDEFINED_EPOCH: Final = -1
UNDEFINED_OFFSET: Final = -1


@dataclass(frozen=True, slots=True)
class EpochPartition:
    """Where does ``leader_epoch`` end in ``topic``/``partition``? ``current_leader_epoch``
    is the epoch of the leader the asker follows (checked like a replica fetch's; -1: none)."""

    topic: str
    partition: int
    leader_epoch: int
    current_leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class OffsetsForLeaderEpochRequest:
    partitions: tuple[EpochPartition, ...]
    replica_id: int = -1  # the asking broker; -1 for a client


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    """The largest epoch at or below the one asked that the leader has, and the offset where
    it ends (the start of the next epoch, or the log end for the latest). Both
    :data:`UNDEFINED_EPOCH` / :data:`UNDEFINED_OFFSET` when the leader has no such epoch."""

    topic: str
    partition: int
    error_code: int = 0
    error_message: str | None = None
    leader_epoch: int = UNDEFINED_EPOCH
    end_offset: int = UNDEFINED_OFFSET


@dataclass(frozen=True, slots=True)
class OffsetsForLeaderEpochResponse:
    partitions: tuple[EpochEndOffset, ...] = ()
