"""One share-partition: the state of a group's records in one topic partition (KIP-932's
SharePartition). Pure: no I/O, time passed in (``now``: the coordinator's monotonic ms clock;
``wall``: ms since the epoch, for the dead-letter headers).

The in-flight window runs from the *start offset* (SPSO: every record below it is settled) to
the *end offset* (SPEO: the next record never acquired). Only unsettled records of the window
have an entry; an offset of the window without one is settled (acked, dead-lettered, or no
record at all: a compacted or aborted gap). States (docs/QUEUES.md, "States of a record"):

* AVAILABLE: released, acquirable again once ``available_at`` passed;
* ACQUIRED: locked for ``member`` until ``lock_until``;
* ARCHIVING: bound for the dead-letter topic (rejected, or out of delivery attempts); it is
  archived (its entry dropped) only once the dead-letter record is durable.

Every offset whose stored state changed is kept in :attr:`SharePartition.dirty` until the
coordinator stores it (:meth:`SharePartition.take_dirty`): share state is stored as deltas,
one record per changed offset, not the whole window per change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from tidelog.wire.errors import InvalidRecordStateError

from .settings import ShareSettings

NEVER: Final = 2**63
"""A time no lock or delay reaches: the bound of an empty set of entries."""
ADVANCE_SCAN: Final = 64
"""Offsets :meth:`SharePartition._advance` steps over one by one before it takes the minimum
of the window's entries (settling in offset order costs O(1), a gap costs one O(n) pass)."""


class RecordState(IntEnum):
    """KIP-932's values (ACKNOWLEDGED and ARCHIVED records have no entry)."""

    AVAILABLE = 0
    ACQUIRED = 1
    ARCHIVING = 3


class Reason:
    """Why a record is dead-lettered (the ``reason`` header)."""

    REJECTED: Final = "rejected"
    MAX_ATTEMPTS: Final = "max_attempts"
    LOCK_EXPIRED: Final = "lock_expired"


@dataclass(slots=True)
class InFlight:
    state: RecordState
    delivery_count: int = 0
    member: str = ""
    """ACQUIRED: the holder; otherwise the last holder (to explain a late ack)."""
    lock_until: int = 0
    available_at: int = 0
    first_delivery: int = -1
    last_delivery: int = -1
    last_error: str = ""
    reason: str = ""
    expired: bool = False
    """The last lock expired (or the broker restarted) rather than being settled."""
    lost_by: str = ""
    """The last member whose lock expired (to explain its late ack)."""


class SharePartition:
    """A group's records of one partition. Every mutator returns nothing or raises
    :class:`InvalidRecordStateError` with nothing changed."""

    def __init__(self, start: int, end: int | None = None) -> None:
        self.start = start
        self.end = start if end is None else end
        self.records: dict[int, InFlight] = {}
        self.acked = 0
        self.dead_lettered = 0
        self.dirty: set[int] = set()
        """Offsets whose stored state (entry or its absence) changed since the last store."""
        self._archiving: set[int] = set()
        # Lower bounds of the ACQUIRED entries' lock_until and of the AVAILABLE entries'
        # available_at: a fetch scans the window for expired locks and released records only
        # once one may be due, not on every fetch (the window holds up to max_partition_locks).
        # An entry leaving the state keeps a bound valid; each scan makes it exact again.
        self._next_expiry = NEVER
        self._next_available = NEVER

    def load(self, offset: int, entry: InFlight) -> None:
        """Put a stored entry back (at start-up); it is not dirty."""
        self.records[offset] = entry
        if entry.state is RecordState.ARCHIVING:
            self._archiving.add(offset)
        elif entry.state is RecordState.AVAILABLE:
            self._next_available = min(self._next_available, entry.available_at)
        else:
            self._next_expiry = min(self._next_expiry, entry.lock_until)

    def take_dirty(self) -> list[int]:
        """The offsets to store (oldest first); none are dirty after."""
        out = sorted(self.dirty)
        self.dirty.clear()
        return out

    # --- acquiring --------------------------------------------------------------------------

    def room(self, settings: ShareSettings) -> int:
        """How many records past :attr:`end` may still be acquired (the window cap)."""
        return max(settings.max_partition_locks - (self.end - self.start), 0)

    def redeliverable(self, now: int, limit: int) -> list[int]:
        """Up to ``limit`` released records that may be acquired now, oldest first."""
        if now < self._next_available:
            return []
        out = []
        bound = NEVER
        for o, r in self.records.items():
            if r.state is RecordState.AVAILABLE:
                bound = min(bound, r.available_at)
                if r.available_at <= now:
                    out.append(o)
        self._next_available = bound
        out.sort()
        return out[:limit]

    def acquire(self, offset: int, member: str, now: int, wall: int, lock_ms: int) -> InFlight:
        """Lock ``offset`` (a released record, or the record at :attr:`end`: the window grows
        past it) for ``member``; its delivery count goes up."""
        entry = self.records.get(offset)
        if entry is None:
            if offset < self.end:
                raise InvalidRecordStateError(f"offset {offset} is settled")
            entry = InFlight(RecordState.AVAILABLE, first_delivery=wall)
            self.records[offset] = entry
            self.end = offset + 1
        elif entry.state is not RecordState.AVAILABLE:
            raise InvalidRecordStateError(f"offset {offset} is not available")
        entry.state = RecordState.ACQUIRED
        entry.delivery_count += 1
        entry.member = member
        entry.lock_until = now + lock_ms
        self._next_expiry = min(self._next_expiry, entry.lock_until)
        entry.last_delivery = wall
        entry.expired = False
        if entry.first_delivery < 0:
            entry.first_delivery = wall
        self.dirty.add(offset)
        return entry

    def extend_to(self, offset: int) -> None:
        """No record of the log between :attr:`end` and ``offset`` is left to acquire (a
        compacted gap, a control batch, a damaged range): the window's end moves there.
        Records already in the window keep their state."""
        if offset > self.end:
            self.end = offset
            self._advance()

    def skip_to(self, offset: int) -> None:
        """The log starts at ``offset`` now (retention deleted what was below): the window
        starts there, and a record below it that is not held is settled."""
        if offset > self.end:
            self.end = offset
        if offset > self.start:
            for o in [o for o in self.records if o < offset]:
                if self.records[o].state is not RecordState.ACQUIRED:
                    del self.records[o]
                    self._archiving.discard(o)
                    self.dirty.add(o)
        self._advance()

    # --- settling ---------------------------------------------------------------------------

    def held(self, offset: int, member: str, now: int) -> InFlight:
        """The entry of ``offset`` if ``member`` holds it under a valid lock; raises with the
        reason otherwise (an expired lock is released here first)."""
        entry = self.records.get(offset)
        if entry is None:
            what = "never acquired" if offset >= self.end else "already settled"
            raise InvalidRecordStateError(f"offset {offset} is {what}")
        if (
            entry.state is RecordState.ACQUIRED
            and entry.lock_until <= now
            and entry.member == member
        ):
            raise InvalidRecordStateError(f"the lock on offset {offset} expired")
        if (entry.lost_by == member and entry.member != member) or (
            entry.state is not RecordState.ACQUIRED and entry.expired and entry.member == member
        ):
            raise InvalidRecordStateError(f"the lock on offset {offset} expired: it is redelivered")
        if entry.state is not RecordState.ACQUIRED:
            raise InvalidRecordStateError(f"offset {offset} is not held by {member!r}")
        if entry.member != member:
            raise InvalidRecordStateError(f"offset {offset} is held by another member")
        return entry

    def accept(self, offset: int, member: str, now: int) -> InFlight:
        entry = self.held(offset, member, now)
        del self.records[offset]
        self.dirty.add(offset)
        self.acked += 1
        self._advance()
        return entry

    def release(
        self, offset: int, member: str, now: int, settings: ShareSettings, delay_ms: int, error: str
    ) -> None:
        """Available again after ``delay_ms`` (-1: the backoff policy), or bound for the
        dead-letter topic if it used its last delivery attempt."""
        entry = self.held(offset, member, now)
        if error:
            entry.last_error = error
        delay = settings.backoff_ms(entry.delivery_count) if delay_ms < 0 else delay_ms
        self._released(offset, entry, now + delay, settings, Reason.MAX_ATTEMPTS)

    def reject(self, offset: int, member: str, now: int, reason: str) -> None:
        entry = self.held(offset, member, now)
        if reason:
            entry.last_error = reason
        entry.state = RecordState.ARCHIVING
        entry.reason = Reason.REJECTED
        self._archiving.add(offset)
        self.dirty.add(offset)

    def renew(self, offset: int, member: str, now: int, lock_ms: int) -> None:
        """Extend the lock (not stored: a restart releases every lock anyway)."""
        entry = self.held(offset, member, now)
        entry.lock_until = now + lock_ms  # earlier than before if the lock duration shrank
        self._next_expiry = min(self._next_expiry, entry.lock_until)

    def _released(
        self,
        offset: int,
        entry: InFlight,
        available_at: int,
        settings: ShareSettings,
        reason: str,
    ) -> None:
        if entry.delivery_count >= settings.max_delivery_attempts:
            entry.state = RecordState.ARCHIVING
            entry.reason = reason
            self._archiving.add(offset)
        else:
            entry.state = RecordState.AVAILABLE
            entry.available_at = available_at
            self._next_available = min(self._next_available, available_at)
        self.dirty.add(offset)

    def expire(self, now: int, settings: ShareSettings) -> int:
        """Release every record whose lock expired (available at once); how many."""
        if now < self._next_expiry:
            return 0
        count = 0
        bound = NEVER
        for offset, entry in self.records.items():
            if entry.state is RecordState.ACQUIRED:
                if entry.lock_until > now:
                    bound = min(bound, entry.lock_until)
                    continue
                entry.expired = True
                entry.lost_by = entry.member
                self._released(offset, entry, now, settings, Reason.LOCK_EXPIRED)
                count += 1
        self._next_expiry = bound
        return count

    def release_member(self, member: str, now: int, settings: ShareSettings) -> int:
        """Release everything ``member`` holds (it left or its connection closed)."""
        count = 0
        for offset, entry in self.records.items():
            if entry.state is RecordState.ACQUIRED and entry.member == member:
                entry.expired = True
                entry.lost_by = member
                self._released(offset, entry, now, settings, Reason.LOCK_EXPIRED)
                count += 1
        return count

    def dead_lettering(self) -> list[int]:
        """The offsets bound for the dead-letter topic, oldest first (O(1) when none is)."""
        return sorted(self._archiving) if self._archiving else []

    def archived(self, offset: int) -> None:
        """The dead-letter record of ``offset`` is durable: the record is settled."""
        entry = self.records.get(offset)
        if entry is not None and entry.state is RecordState.ARCHIVING:
            del self.records[offset]
            self._archiving.discard(offset)
            self.dirty.add(offset)
            self.dead_lettered += 1
            self._advance()

    def forget(self, offset: int) -> None:
        """The record at ``offset`` is gone from the log (retention, compaction): settled."""
        if self.records.pop(offset, None) is not None:
            self._archiving.discard(offset)
            self.dirty.add(offset)
            self._advance()

    def _advance(self) -> None:
        """The start moves to the first unsettled record (or the end). It never moves back and
        every entry is at or past it, so stepping forward finds it."""
        records, start = self.records, self.start
        for _ in range(ADVANCE_SCAN):
            if start >= self.end:
                self.start = self.end
                return
            if start in records:
                self.start = start
                return
            start += 1
        self.start = min(records, default=self.end)

    # --- reporting --------------------------------------------------------------------------

    def counts(self, now: int) -> tuple[int, int, int, int]:
        """``(in_flight, delayed, redeliverable, dead_lettering)``."""
        in_flight = delayed = ready = dlq = 0
        for r in self.records.values():
            if r.state is RecordState.ACQUIRED:
                in_flight += 1
            elif r.state is RecordState.ARCHIVING:
                dlq += 1
            elif r.available_at > now:
                delayed += 1
            else:
                ready += 1
        return in_flight, delayed, ready, dlq

    def delivery_stats(self) -> tuple[int, int]:
        """``(redelivered, max_delivery_count)`` of the unsettled records: how many were
        delivered more than once, and the most deliveries any of them had."""
        counts = [r.delivery_count for r in self.records.values()]
        return sum(c > 1 for c in counts), max(counts, default=0)

    def oldest_delivery(self) -> int:
        times = [r.first_delivery for r in self.records.values() if r.first_delivery >= 0]
        return min(times, default=-1)
