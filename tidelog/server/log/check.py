"""Checking a segment batch by batch: what recovery, the scrubber and a client's report run.

:func:`check_segment` reads a byte range of a segment file and sorts it into batches that pass
every check (CRC, sizes, counts) and *damaged* byte ranges that do not. It never stops at the
first bad batch: it looks for the next good one -- where the bad batch's own length says, then
at every later byte whose header is plausible and whose CRC holds -- and goes on, so damage
stays local to the bytes it hit.

The fields the broker frames and stamps a batch with sit outside its CRC (base offset, length,
leader epoch, magic). When the CRC proves a batch intact, damage to them is undone, not cut:

* a batch whose length or magic is damaged is found by its CRC over the bytes up to the next
  good batch;
* base offsets follow from the known offset where the check starts and the record counts
  (which the CRC covers); after a damaged range, from a majority of the stamped base offsets
  of the good batches that follow (one damaged stamp is outvoted);
* a leader epoch that goes down, or is above the next batch's, takes the previous one. (A rise
  on the last batch looks like a new leader: it cannot be told from damage.)

The result is a plan, :class:`SegmentCheck`: the segment writes the repairs and records the
damage (:meth:`~.segment.LogSegment.apply_check`). Reads go through the ``read`` callable
only, so a check can run in a worker thread on a descriptor of its own. No asyncio.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

from tidelog.wire.batch_format import CODEC_MASK
from tidelog.wire.errors import CorruptBatchError
from tidelog.wire.layouts import (
    BATCH_CRC_OFFSET,
    BATCH_HEADER,
    BATCH_HEADER_SIZE,
    BATCH_LENGTH_OFFSET,
    BATCH_LENGTH_STRUCT,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
    BATCH_MAGIC_OFFSET,
    BATCH_STAMP_STRUCT,
    BATCH_STAMPED_SIZE,
)
from tidelog.wire.records import RecordBatch

from .damage import Damage
from .files import READ_ONLY, Files
from .scan import RECOVERY_CHUNK, BatchInfo

if TYPE_CHECKING:
    from .segment import LogSegment

logger = logging.getLogger("tidelog.server.log")

Reader = Callable[[int, int], bytes]
"""``read(size, position)``: up to ``size`` bytes of the file at ``position`` (``pread``)."""

MAX_REFRAME_BYTES: Final = 64 * 1024 * 1024
"""Largest damaged range tried as one batch whose length or magic was hit."""
_MAGIC: Final = bytes([BATCH_MAGIC])
_RECORDS_SIZE_OFFSET: Final = BATCH_HEADER_SIZE - BATCH_LENGTH_STRUCT.size
"""``records_size``, the header's last field, an int32 like ``length``."""
_RECORD_COUNT_OFFSET: Final = _RECORDS_SIZE_OFFSET - BATCH_LENGTH_STRUCT.size
_ATTRIBUTES_OFFSET: Final = BATCH_CRC_OFFSET + 4
_ATTRIBUTES_STRUCT: Final = struct.Struct(">H")
_LAST_DELTA_OFFSET: Final = _ATTRIBUTES_OFFSET + _ATTRIBUTES_STRUCT.size
"""``last_offset_delta``: after the CRC (4 bytes) and the attributes (2)."""
_MIN_RECORD: Final = 16
"""Fewest bytes an uncompressed record takes (timestamp delta, key and value lengths)."""
assert [f.name for f in BATCH_HEADER.subcons[-2:]] == ["record_count", "records_size"]
assert [f.name for f in BATCH_HEADER.subcons[5:7]] == ["attributes", "last_offset_delta"]
assert BATCH_STAMPED_SIZE == BATCH_MAGIC_OFFSET and BATCH_MAGIC_OFFSET + 1 == BATCH_CRC_OFFSET


@dataclass(frozen=True, slots=True)
class Repair:
    """Write ``prefix`` (base offset, length, leader epoch, magic: the bytes before the CRC)
    over the batch at ``position``; ``what`` says what it restores."""

    position: int
    prefix: bytes
    what: str


@dataclass(frozen=True, slots=True)
class SegmentCheck:
    """What a check of bytes ``[start, end)`` found."""

    start: int
    end: int
    batches: list[BatchInfo]
    """The good batches, with the offsets they hold (after repairs)."""
    damage: list[Damage]
    """Damaged ranges whose offsets are known."""
    repairs: list[Repair]
    next_offset: int
    """The offset after the last batch (or after the last damaged range with known offsets)."""
    tail: Damage | None = None
    """Damaged bytes at the end with no good batch after them and no known end offset
    (``next_offset`` -1): a torn write at the end of the newest segment."""

    @property
    def checked_bytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class CheckJob:
    """A check of bytes ``[start, end)`` of a segment file, prepared on the event loop and
    run anywhere (:meth:`run` opens its own descriptor); ``generation`` tells the log whether
    it changed under the check."""

    segment: LogSegment
    path: str
    start: int
    end: int
    start_offset: int
    end_offset: int | None
    generation: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def run(self, files: Files, pace: Callable[[int], None] | None = None) -> SegmentCheck:
        """Check; ``pace(n)`` is told of every ``n`` bytes read (the scrubber's rate bound)."""
        handle = files.open(self.path, READ_ONLY)

        def read(size: int, position: int) -> bytes:
            data = handle.pread(size, position)
            if pace is not None:
                pace(len(data))
            return data

        try:
            return check_segment(
                read,
                start=self.start,
                end=self.end,
                start_offset=self.start_offset,
                end_offset=self.end_offset,
            )
        finally:
            handle.close_quietly()


class _Good(NamedTuple):
    position: int
    size: int
    stamp: int
    epoch: int
    records: int
    max_timestamp: int
    reframed: bool  # its length or magic had to be restored


class _Bad(NamedTuple):
    position: int
    end: int
    reason: str
    held: _Held


class _Window:
    """Buffered reads of ``[0, end)`` through ``read``."""

    def __init__(self, read: Reader, end: int, chunk: int) -> None:
        self._read = read
        self.end = end
        self._chunk = chunk
        self._buf = b""
        self._at = 0

    def get(self, pos: int, size: int) -> memoryview | None:
        """Exactly ``size`` bytes at ``pos``, or ``None`` if the range ends first."""
        if pos < 0 or pos + size > self.end:
            return None
        rel = pos - self._at
        if rel < 0 or rel + size > len(self._buf):
            self._buf = self._read(min(max(self._chunk, size), self.end - pos), pos)
            self._at, rel = pos, 0
            if len(self._buf) < size:
                return None
        return memoryview(self._buf)[rel : rel + size]

    def candidates(self, start: int) -> Iterator[int]:
        """Positions from ``start`` on where a batch could begin: the magic byte in place (its
        length may be what is damaged)."""
        pos = start
        while pos + BATCH_HEADER_SIZE <= self.end:
            buf = self._read(min(self._chunk, self.end - pos), pos)
            if len(buf) < BATCH_HEADER_SIZE:
                return
            i = buf.find(_MAGIC, BATCH_MAGIC_OFFSET)
            while i >= 0:
                at = pos + i - BATCH_MAGIC_OFFSET
                if at + BATCH_HEADER_SIZE <= self.end:
                    yield at
                i = buf.find(_MAGIC, i + 1)
            pos += len(buf) - BATCH_MAGIC_OFFSET


def check_segment(
    read: Reader,
    *,
    start: int,
    end: int,
    start_offset: int,
    end_offset: int | None = None,
    epoch: int = -1,
    chunk: int = RECOVERY_CHUNK,
) -> SegmentCheck:
    """Check bytes ``[start, end)`` of a segment file. ``start`` is a batch boundary where
    offset ``start_offset`` begins; ``end_offset`` is the offset the range ends at if known
    (the next segment's base offset); ``epoch`` the leader epoch before ``start``."""
    window = _Window(read, end, chunk)
    items: list[_Good | _Bad] = []
    pos = start
    while pos < end:
        good = _good_batch(window, pos)
        if good is not None:
            items.append(good)
            pos += good.size
            continue
        reason = _why(window, pos)
        reframed = _reframe(window, pos, _own_end(window, pos))
        if reframed is not None:
            items.append(reframed)
            pos += reframed.size
            continue
        after = _resync(window, pos)
        reframed = _reframe(window, pos, after)
        if reframed is None:
            items.append(_Bad(pos, after, reason, _held(window, pos, after)))
        else:
            items.append(reframed)
        pos = after
    return _place(items, start, end, start_offset, end_offset, epoch)


def _good_batch(window: _Window, pos: int) -> _Good | None:
    header = window.get(pos, BATCH_HEADER_SIZE)
    if header is None or header[BATCH_MAGIC_OFFSET] != BATCH_MAGIC:
        return None
    (length,) = BATCH_LENGTH_STRUCT.unpack_from(header, BATCH_LENGTH_OFFSET)
    size = length + BATCH_LOG_OVERHEAD
    if size < BATCH_HEADER_SIZE:
        return None
    data = window.get(pos, size)
    if data is None:
        return None
    try:
        batch = RecordBatch.parse(data)
    except CorruptBatchError:
        return None
    return _Good(
        pos,
        size,
        batch.base_offset,
        batch.leader_epoch,
        batch.last_offset_delta + 1,
        batch.max_timestamp,
        False,
    )


def _why(window: _Window, pos: int) -> str:
    """Why the batch at ``pos`` is not good, for people (recovery's log line)."""
    left = window.end - pos
    header = window.get(pos, BATCH_LOG_OVERHEAD)
    if header is None:
        return "the file ends inside a batch header"
    (length,) = BATCH_LENGTH_STRUCT.unpack_from(header, BATCH_LENGTH_OFFSET)
    size = length + BATCH_LOG_OVERHEAD
    if size < BATCH_HEADER_SIZE:
        return f"impossible batch length {size}"
    if size > left:
        return f"the file ends inside a batch of {size} bytes (torn write)"
    data = window.get(pos, size)
    if data is None:
        return "short read"
    try:
        RecordBatch.parse(data)
    except CorruptBatchError as exc:
        return f"corrupt batch: {exc}"
    return "damaged batch"


def _intact_at(window: _Window, pos: int) -> _Good | None:
    """The batch at ``pos`` if it is good, or intact but for its length or magic."""
    return _good_batch(window, pos) or _reframe(window, pos, _own_end(window, pos))


def _own_end(window: _Window, pos: int) -> int:
    """Where the batch at ``pos`` ends by its own ``records_size`` (inside the CRC): exact
    for an uncompressed batch, whatever its length field says; -1 if it cannot be read."""
    header = window.get(pos, BATCH_HEADER_SIZE)
    if header is None:
        return -1
    (records_size,) = BATCH_LENGTH_STRUCT.unpack_from(header, _RECORDS_SIZE_OFFSET)
    end: int = pos + BATCH_HEADER_SIZE + records_size
    return end


def _resync(window: _Window, pos: int) -> int:
    """Where the next good batch after the bad one at ``pos`` starts (``end`` if none): along
    the damaged batches' own lengths first, then at any byte where a batch could start."""
    at = pos
    while (header := window.get(at, BATCH_LOG_OVERHEAD)) is not None:
        (length,) = BATCH_LENGTH_STRUCT.unpack_from(header, BATCH_LENGTH_OFFSET)
        size: int = length + BATCH_LOG_OVERHEAD
        if size < BATCH_HEADER_SIZE or at + size > window.end:
            break
        at += size
        if at == window.end or _intact_at(window, at) is not None:
            return at
    for candidate in window.candidates(pos + 1):
        if _intact_at(window, candidate) is not None:
            return candidate
    return window.end


def _reframe(window: _Window, pos: int, after: int) -> _Good | None:
    """The bytes ``[pos, after)`` as one batch whose length or magic was damaged, if its CRC
    proves the rest intact."""
    size = after - pos
    if not BATCH_HEADER_SIZE <= size <= MAX_REFRAME_BYTES:
        return None
    data = window.get(pos, size)
    if data is None:
        return None
    fixed = bytearray(data)
    BATCH_LENGTH_STRUCT.pack_into(fixed, BATCH_LENGTH_OFFSET, size - BATCH_LOG_OVERHEAD)
    fixed[BATCH_MAGIC_OFFSET] = BATCH_MAGIC
    try:
        batch = RecordBatch.parse(fixed)
    except CorruptBatchError:
        return None
    count = batch.last_offset_delta + 1
    return _Good(pos, size, batch.base_offset, batch.leader_epoch, count, batch.max_timestamp, True)


class _Held(NamedTuple):
    """What a damaged range's batch headers say it held, when their lengths tile it."""

    totals: tuple[int, ...]
    """One record count when each header's count and last offset delta agree, two when one
    header's disagree (one of them took the damage); none when they cannot tell."""
    capacity: int | None
    """The most records it can hold: an uncompressed record takes at least 16 bytes
    (``None``: no bound, a header says compressed or the lengths do not tile it)."""


_UNKNOWN: Final = _Held((), None)


def _held(window: _Window, pos: int, end: int) -> _Held:
    """What the batch headers of the damaged bytes ``[pos, end)`` say they held."""
    totals: tuple[int, ...] = (0,)
    capacity: int | None = 0
    while pos < end:
        header = window.get(pos, BATCH_HEADER_SIZE)
        if header is None:
            return _UNKNOWN
        (length,) = BATCH_LENGTH_STRUCT.unpack_from(header, BATCH_LENGTH_OFFSET)
        (attributes,) = _ATTRIBUTES_STRUCT.unpack_from(header, _ATTRIBUTES_OFFSET)
        (delta,) = BATCH_LENGTH_STRUCT.unpack_from(header, _LAST_DELTA_OFFSET)
        (count,) = BATCH_LENGTH_STRUCT.unpack_from(header, _RECORD_COUNT_OFFSET)
        size = length + BATCH_LOG_OVERHEAD
        if not BATCH_HEADER_SIZE <= size <= end - pos:  # its length took the damage?
            size = _own_end(window, pos) - pos
            if not BATCH_HEADER_SIZE <= size <= end - pos:
                return _UNKNOWN
        pos += size
        room = None if attributes & CODEC_MASK else (size - BATCH_HEADER_SIZE) // _MIN_RECORD
        options = sorted({n for n in (count, delta + 1) if 1 <= n <= (room or n)})
        capacity = None if capacity is None or room is None else capacity + room
        totals = tuple(t + n for t in totals for n in options)
        if len(totals) > 2:
            totals = ()
    return _Held(totals, capacity) if pos == end else _UNKNOWN


def _vote(
    run: list[_Good], low: int, high: int | None, ends_at_end: bool, held: _Held
) -> int | None:
    """The base offset of a run of good batches after a damaged range, at or above ``low``
    and leaving the run below ``high`` (the offset the range ends at, if known). Each stamp
    votes 2; what the damaged range's own headers say it held (``held``) votes 3 -- it takes
    two agreeing stamps to outvote it -- or 1 per answer when they give two; ``high`` votes 1
    for a run that reaches it. A tie goes to the smaller offset: a flipped bit more often
    sets a bit of an offset than clears one. A candidate that would put more records in the
    damaged range than fit there is out. ``None`` if no candidate is possible."""
    total = sum(g.records for g in run)
    votes: Counter[int] = Counter()
    for n in held.totals:
        votes[low + n] += 3 if len(held.totals) == 1 else 1
    before = 0
    for good in run:
        votes[good.stamp - before] += 2
        before += good.records
    if ends_at_end and high is not None:
        votes[high - total] += 1
    most = None if held.capacity is None else low + held.capacity
    for base in list(votes):
        if base < low or (high is not None and base + total > high) or base > (most or base):
            del votes[base]
    if not votes:
        return None
    best: int = max(votes, key=lambda base: (votes[base], -base))
    return best


def _add(a: _Held, b: _Held) -> _Held:
    """What two adjacent damaged ranges held together."""
    totals = tuple(x + y for x in a.totals for y in b.totals)
    capacity = None if a.capacity is None or b.capacity is None else a.capacity + b.capacity
    return _Held(totals if len(totals) <= 2 else (), capacity)


def _place(
    items: list[_Good | _Bad],
    start: int,
    end: int,
    start_offset: int,
    end_offset: int | None,
    epoch: int,
) -> SegmentCheck:
    """Give every good batch its offsets and epoch (noting repairs) and every damaged range
    the offsets between its neighbours."""
    batches: list[BatchInfo] = []
    damage: list[Damage] = []
    repairs: list[Repair] = []
    low = start_offset
    epoch = max(epoch, -1)
    bad_from: int | None = None
    bad_reason = ""
    held = _UNKNOWN
    k = 0
    while k < len(items):
        item = items[k]
        if isinstance(item, _Bad):
            if bad_from is None:
                bad_from, bad_reason, held = item.position, item.reason, _Held((0,), 0)
            held = _add(held, item.held)
            k += 1
            continue
        j = k
        while j < len(items) and isinstance(items[j], _Good):
            j += 1
        run: list[_Good] = items[k:j]  # type: ignore[assignment]
        k = j
        run_end = run[-1].position + run[-1].size
        base = (
            start_offset
            if run[0].position == start
            else _vote(run, low, end_offset, run_end == end, held)
        )
        if base is None:
            if bad_from is None:
                bad_from, bad_reason = run[0].position, "batches whose offsets cannot be told"
            held = _UNKNOWN
            continue
        if bad_from is not None:
            damage.append(Damage(bad_from, run[0].position, low, base, bad_reason))
            bad_from = None
        for i, good in enumerate(run):
            after = run[i + 1].epoch if i + 1 < len(run) else None
            fixed = good.epoch
            if fixed < epoch or (after is not None and fixed > after >= epoch):
                fixed = epoch
            what = []
            if good.stamp != base:
                what.append(f"base offset {good.stamp} -> {base}")
            if fixed != good.epoch:
                what.append(f"leader epoch {good.epoch} -> {fixed}")
            if good.reframed:
                what.append(f"length and magic of a {good.size}-byte batch")
            if what:
                prefix = BATCH_STAMP_STRUCT.pack(base, good.size - BATCH_LOG_OVERHEAD, fixed)
                repairs.append(Repair(good.position, prefix + _MAGIC, ", ".join(what)))
            batches.append(
                BatchInfo(good.position, good.size, base, base + good.records, good.max_timestamp)
            )
            epoch = fixed
            base += good.records
        low = base
    tail = None
    if bad_from is not None:
        if end_offset is not None and end_offset >= low:
            damage.append(Damage(bad_from, end, low, end_offset, bad_reason))
            low = end_offset
        else:
            tail = Damage(bad_from, end, low, -1, bad_reason)
    return SegmentCheck(start, end, batches, damage, repairs, low, tail)


def report_check(name: str, path: str, result: SegmentCheck, new: list[Damage]) -> None:
    """Say, loudly, what a check of ``path`` restored and which damage it isolated."""
    for repair in result.repairs:
        logger.warning(
            "%s: restored %s of the batch at byte %d of %s (its CRC proves it intact)",
            name,
            repair.what,
            repair.position,
            os.path.basename(path),
        )
    for region in new:
        logger.error("%s: isolated damaged %s", name, region.describe(path))
