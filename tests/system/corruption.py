"""What the corruption soak does to a stopped broker's files, and what it may cost.

Before each round of faults, :func:`layout` reads every segment file independently of the
broker: the byte range and the offsets of each batch that passes its CRC, and of each *hole*
between them (damage the broker keeps in place, or framing it has not restored yet).
:class:`Damager` then flips bits, truncates and deletes files at random, and records which
offsets each fault may cost:

* a flipped bit in what a batch's CRC covers (or in the CRC), or anywhere in a hole: the
  records there;
* a flipped bit in the framing before the CRC (base offset, length, leader epoch, magic):
  nothing -- the CRC proves the batch intact, so the broker must restore it;
* a truncated segment file: the batches from the cut on; a deleted one: all of its batches;
* an index file flipped, truncated or deleted, a checkpoint or the topic file flipped (with
  the copies of the topic file intact): nothing.

The soak checks that no acknowledged record outside those offsets is ever lost.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from tidelog.wire.errors import CorruptBatchError
from tidelog.wire.layouts import BATCH_CRC_OFFSET
from tidelog.wire.records import RecordBatch, batch_size_at


@dataclass(frozen=True, slots=True)
class Stored:
    """Bytes ``[position, position + size)`` of a segment file holding offsets
    ``[base_offset, next_offset)``: a batch, or a hole (``intact`` false)."""

    position: int
    size: int
    base_offset: int
    next_offset: int
    intact: bool = True


@dataclass
class Counts:
    flips: int = 0
    framing_flips: int = 0
    truncations: int = 0
    deleted_segments: int = 0
    index_faults: int = 0
    metadata_faults: int = 0


def _batch(raw: bytes, pos: int) -> RecordBatch | None:
    try:
        size = batch_size_at(raw, pos)
    except CorruptBatchError:
        return None
    if size is None or pos + size > len(raw):
        return None
    try:
        return RecordBatch.parse(raw[pos : pos + size])
    except CorruptBatchError:
        return None


def layout(path: Path, end_offset: int) -> list[Stored]:
    """The batches and holes of a segment file; ``end_offset`` is where its offsets end (the
    next segment's base, or the log's end)."""
    raw = path.read_bytes()
    out: list[Stored] = []
    expected: int | None = int(path.name[:20])
    pos = 0
    while pos < len(raw):
        batch = _batch(raw, pos)
        if batch is not None:
            base = batch.base_offset if expected is None else expected
            count = batch.last_offset_delta + 1
            out.append(Stored(pos, batch.size, base, base + count))
            expected = base + count
            pos += batch.size
            continue
        after = pos + 1
        while after < len(raw) and _batch(raw, after) is None:
            after += 1
        following = _batch(raw, after) if after < len(raw) else None
        first = out[-1].next_offset if out else int(path.name[:20])
        last = following.base_offset if following is not None else end_offset
        out.append(Stored(pos, after - pos, first, max(first, last), intact=False))
        expected = None
        pos = after
    return out


class Shadow:
    """The layout of every segment file of a data directory, read by the test."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files: dict[Path, list[Stored]] = {}

    def learn(self, log_ends: dict[int, int]) -> None:
        """Read every segment file again; ``log_ends`` gives each partition's end offset."""
        self.files = {}
        by_partition: dict[int, list[Path]] = {}
        for path in sorted(self.data_dir.glob("[!_]*-[0-9]*/*.log")):  # not internal topics
            by_partition.setdefault(partition_of(path), []).append(path)
        for partition, paths in by_partition.items():
            for i, path in enumerate(paths):
                end = int(paths[i + 1].name[:20]) if i + 1 < len(paths) else log_ends[partition]
                self.files[path] = layout(path, end)

    def batch_at(self, path: Path, position: int) -> Stored | None:
        for batch in self.files.get(path, []):
            if batch.position <= position < batch.position + batch.size:
                return batch
        return None


def partition_of(path: Path) -> int:
    return int(path.parent.name.rsplit("-", 1)[1])


@dataclass
class Damager:
    """Random faults on a stopped broker's files; ``lost`` gathers the (partition, offset)s
    they may cost."""

    shadow: Shadow
    rng: random.Random
    lost: set[tuple[int, int]] = field(default_factory=set)
    counts: Counts = field(default_factory=Counts)

    def _cost(self, path: Path, batches: list[Stored]) -> None:
        partition = partition_of(path)
        for batch in batches:
            self.lost.update((partition, o) for o in range(batch.base_offset, batch.next_offset))

    def segments(self) -> list[Path]:
        return [p for p in sorted(self.shadow.files) if p.exists() and p.stat().st_size > 0]

    def flip(self) -> None:
        """One bit of a random byte of a random segment (weighted by size)."""
        paths = self.segments()
        if not paths:
            return
        path = self.rng.choices(paths, weights=[p.stat().st_size for p in paths])[0]
        raw = bytearray(path.read_bytes())
        position = self.rng.randrange(len(raw))
        raw[position] ^= 1 << self.rng.randrange(8)
        path.write_bytes(bytes(raw))
        self.counts.flips += 1
        batch = self.shadow.batch_at(path, position)
        assert batch is not None, (path, position)
        if not batch.intact or position - batch.position >= BATCH_CRC_OFFSET:
            self._cost(path, [batch])
        else:
            self.counts.framing_flips += 1

    def flip_framing(self) -> None:
        """One bit of the framing of a random intact batch (base offset, length, leader
        epoch, magic): the broker must restore it and lose nothing."""
        batches = [
            (p, b)
            for p, bs in self.shadow.files.items()
            if p.exists()
            for b in bs
            if b.intact and b.position + b.size <= p.stat().st_size  # not cut this round
        ]
        if not batches:
            return
        path, batch = self.rng.choice(batches)
        raw = bytearray(path.read_bytes())
        raw[batch.position + self.rng.randrange(BATCH_CRC_OFFSET)] ^= 1 << self.rng.randrange(8)
        path.write_bytes(bytes(raw))
        self.counts.flips += 1
        self.counts.framing_flips += 1

    def truncate(self) -> None:
        paths = self.segments()
        if not paths:
            return
        path = self.rng.choice(paths)
        size = path.stat().st_size
        cut = self.rng.randrange(size)
        os.truncate(path, cut)
        self.counts.truncations += 1
        self._cost(path, [b for b in self.shadow.files[path] if b.position + b.size > cut])

    def delete_segment(self) -> None:
        paths = self.segments()
        if not paths:
            return
        path = self.rng.choice(paths)
        path.unlink()
        self.counts.deleted_segments += 1
        self._cost(path, self.shadow.files[path])

    def index_fault(self) -> None:
        """Flip, truncate or delete a random offset or time index file."""
        paths = sorted(self.shadow.data_dir.glob("[!_]*-[0-9]*/*.*index"))
        paths = [p for p in paths if p.stat().st_size > 0]
        if not paths:
            return
        path = self.rng.choice(paths)
        kind = self.rng.choice(["flip", "truncate", "delete"])
        if kind == "delete":
            path.unlink()
        elif kind == "truncate":
            os.truncate(path, self.rng.randrange(path.stat().st_size))
        else:
            raw = bytearray(path.read_bytes())
            raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(8)
            path.write_bytes(bytes(raw))
        self.counts.index_faults += 1

    def metadata_fault(self, topic_file: Path) -> None:
        """A flipped bit in the topic file or a checkpoint (their copies and checksums
        cover it)."""
        candidates = [topic_file, *self.shadow.data_dir.glob("*-offset-checkpoint")]
        path = self.rng.choice([p for p in candidates if p.exists()])
        raw = bytearray(path.read_bytes())
        raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(8)
        path.write_bytes(bytes(raw))
        self.counts.metadata_faults += 1

    def random_fault(self, topic_file: Path) -> None:
        roll = self.rng.random()
        if roll < 0.50:
            self.flip()
        elif roll < 0.70:
            self.flip_framing()
        elif roll < 0.78:
            self.truncate()
        elif roll < 0.84:
            self.delete_segment()
        elif roll < 0.96:
            self.index_fault()
        else:
            self.metadata_fault(topic_file)
