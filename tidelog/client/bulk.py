"""The bulk half of the producer: :meth:`~.producer.Producer.send_many`'s column work.

``send()`` pays for one coroutine, one partition choice, one memory reservation, one append and
one future per record. ``send_many(topic, values, keys)`` takes whole lists: the records are
serialized, checked and measured with C-level passes over the lists (``map``, ``set``,
``accumulate``), split by partition once, and appended to the partitions' batches a batch at a
time (:meth:`~.accumulator.Accumulator.extend`). The caller gets one :class:`BulkFuture` for
the call, never one per record.

Everything here is synchronous and pure: the producer does the waiting (metadata, memory).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Callable, Generator, Sequence
from itertools import accumulate, repeat
from operator import add, and_, mod
from typing import Any, NamedTuple, TypeAlias

from crc32c import crc32c

from tidelog.wire.records import BYTES_LIKE, Buffer

from .batch import RECORD_OVERHEAD, ProducerBatch
from .partitioner import Partitioner, check_partition
from .serializers import Serializer
from .types import RecordMetadata

_MASK = 0x7FFFFFFF

Column: TypeAlias = Sequence[Buffer | None]
"""Keys or values, checked: bytes-like or None each."""
Groups: TypeAlias = dict[int, tuple[Sequence[int], Column, Column | None]]
"""Per partition: the records' positions in the call, their values and their keys."""


class OffsetRange(NamedTuple):
    """Where a run of records of one ``send_many()`` call was stored: ``count`` records from
    ``offset`` on (-1 with ``acks="none"``) in one partition, in the order they were given."""

    topic: str
    partition: int
    offset: int
    records: int


class BulkFuture:
    """The answer to one ``send_many()`` call: await it for the :class:`OffsetRange` of every
    run of records (one per batch piece, in the order they were appended), or for the first
    error if some batch failed (the other runs may still have been written: see
    :meth:`exception`). One future per call, never one per record; :meth:`metadata` gives
    each record's :class:`~.types.RecordMetadata` when asked."""

    __slots__ = ("_count", "_pieces", "_timestamp")

    def __init__(self, count: int = 0, timestamp: int = -1) -> None:
        self._count = count
        self._timestamp = timestamp
        self._pieces: list[tuple[ProducerBatch, int, Sequence[int]]] = []

    def add(self, batch: ProducerBatch, index: int, positions: Sequence[int]) -> None:
        """Records ``positions`` of the call (in the order given) are records ``index``... of
        ``batch``."""
        self._pieces.append((batch, index, positions))

    def __len__(self) -> int:
        """Records in the call."""
        return self._count

    def done(self) -> bool:
        return all(b.error is not None or b.acknowledged for b, _, _ in self._pieces)

    def exception(self) -> BaseException | None:
        """The first failed batch's error (``None``: every record is acknowledged, or some
        is still pending)."""
        for batch, _, _ in self._pieces:
            if batch.error is not None:
                return batch.error
        return None

    def _check(self) -> None:
        error = self.exception()
        if error is not None:
            raise error
        if not self.done():
            raise asyncio.InvalidStateError("some records are not acknowledged yet")

    def result(self) -> list[OffsetRange]:
        """Every run's :class:`OffsetRange`; raises the first error, or InvalidStateError
        while some record is pending."""
        self._check()
        out: list[OffsetRange] = []
        for batch, index, positions in self._pieces:
            tp = batch.tp
            base = batch.base_offset
            offset = base + index if base >= 0 else -1
            out.append(OffsetRange(tp.topic, tp.partition, offset, len(positions)))
        return out

    def metadata(self) -> list[RecordMetadata]:
        """Each record's :class:`~.types.RecordMetadata`, in the order the call was given them
        (built now: a cost per record that only a caller who wants it pays)."""
        self._check()
        out: list[RecordMetadata | None] = [None] * self._count
        for batch, index, positions in self._pieces:
            tp = batch.tp
            base = batch.base_offset
            ts = batch.log_append_time if batch.log_append_time >= 0 else self._timestamp
            for j, at in enumerate(positions):
                offset = base + index + j if base >= 0 else -1
                out[at] = RecordMetadata(tp.topic, tp.partition, offset, ts)
        return out  # type: ignore[return-value]  # every position is set once

    def __await__(self) -> Generator[Any, None, list[OffsetRange]]:
        seen: set[int] = set()
        for batch, _, _ in self._pieces:
            if id(batch) in seen:
                continue
            seen.add(id(batch))
            if batch.error is None and not batch.acknowledged:
                yield from batch.future.__await__()
        return self.result()

    def __repr__(self) -> str:
        return f"<BulkFuture {self._count} records {'done' if self.done() else 'pending'}>"


def column(
    items: Sequence[Any], serializer: Serializer, raw: bool, what: str
) -> Sequence[Buffer | None]:
    """``items`` serialized (``None`` stays ``None``), each checked to be bytes-like: a
    ``TypeError`` names the first bad item's index and type. The common case, a list of
    ``bytes`` with the default serializer, costs one C-level pass and no copy."""
    if isinstance(items, str | bytes | bytearray | memoryview) or not isinstance(items, Sequence):
        raise TypeError(
            f"send_many() takes a sequence of {what}s (a list or tuple), not {type(items).__name__}"
        )
    kinds = set(map(type, items))
    if raw and kinds <= {bytes}:
        return items
    if not raw or not kinds <= {bytes, type(None)}:
        items = [None if x is None else serializer(x) for x in items]
        if set(map(type, items)) <= {bytes, type(None)}:
            return items
        for i, x in enumerate(items):
            if x is not None and not isinstance(x, BYTES_LIKE):
                raise TypeError(
                    f"the {what} serializer returned {type(x).__name__} for {what} {i}: "
                    "serializers return bytes or None"
                )
    return items


def sizes(values: Sequence[Buffer | None], keys: Sequence[Buffer | None] | None) -> list[int]:
    """The running total of the records' accounted sizes (as :func:`~.batch.record_size`
    counts them, headers aside): ``ends[i]`` is the size of records ``0..i``."""
    lengths: Any
    columns: tuple[Any, ...] = (values, keys)
    try:
        lengths = map(len, columns[0])
        if keys is not None:
            lengths = map(add, lengths, map(len, columns[1]))
        return list(accumulate(map(add, lengths, repeat(RECORD_OVERHEAD))))
    except TypeError:  # a None among them
        pass
    vl = [0 if v is None else len(v) for v in values]
    if keys is not None:
        vl = [n + (0 if k is None else len(k)) for n, k in zip(vl, keys, strict=True)]
    return list(accumulate(map(add, vl, repeat(RECORD_OVERHEAD))))


def largest(ends: Sequence[int]) -> tuple[int, int]:
    """(index, size) of the largest record, from the running totals."""
    best, at, before = -1, 0, 0
    for i, end in enumerate(ends):
        if end - before > best:
            best, at = end - before, i
        before = end
    return at, best


def cut(ends: Sequence[int], start: int, room: int) -> int:
    """The end of the longest run of records from ``start`` whose sizes add up to at most
    ``room`` (at least one record: a record larger than a batch goes alone)."""
    before = ends[start - 1] if start else 0
    stop = bisect_right(ends, before + room, lo=start)
    return max(stop, start + 1)


def partitions_of(
    topic: str,
    keys: Sequence[Buffer | None] | None,
    count: int,
    partition: int | None,
    all_partitions: Sequence[int],
    available: Sequence[int],
    partitioner: Partitioner | None,
    sticky: Callable[[], int],
) -> list[int] | int:
    """Each record's partition, as ``send()`` chooses it (see :mod:`.partitioner`), or one
    partition for all of them. Keyless records without a partitioner go to the topic's
    sticky partition (``sticky()``): the returned ``-1`` says "sticky, moving on as batches
    fill"."""
    if partition is not None:
        return check_partition(topic, partition, all_partitions)
    if partitioner is not None:
        if keys is None:
            keys = [None] * count
        return [
            check_partition(topic, partitioner(k, all_partitions, available), all_partitions)  # type: ignore[arg-type]
            for k in keys
        ]
    if keys is None:
        return -1
    n = len(all_partitions)
    try:
        if n == 1:
            if None in keys:
                raise TypeError
            return 0
        hashed: Sequence[Any] = keys
        return list(map(mod, map(and_, map(crc32c, hashed), repeat(_MASK)), repeat(n)))
    except TypeError:  # some keys are None: those go to the sticky partition
        current = sticky()
        return [current if k is None else (crc32c(k) & _MASK) % n for k in keys]


def split(
    chosen: list[int],
    values: Sequence[Buffer | None],
    keys: Sequence[Buffer | None] | None,
) -> Groups:
    """The records grouped by partition: per partition, their positions in the call, values
    and keys, each group in the order given."""
    indices: dict[int, list[int]] = {}
    for i, p in enumerate(chosen):
        group = indices.get(p)
        if group is None:
            indices[p] = [i]
        else:
            group.append(i)
    out: dict[
        int, tuple[Sequence[int], Sequence[Buffer | None], Sequence[Buffer | None] | None]
    ] = {}
    for p, idx in indices.items():
        vs = list(map(values.__getitem__, idx))
        ks = None if keys is None else list(map(keys.__getitem__, idx))
        out[p] = (idx, vs, ks)
    return out
