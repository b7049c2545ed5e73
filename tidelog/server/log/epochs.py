"""A partition's leader epochs: which epoch wrote from which offset on (Kafka's
``LeaderEpochFileCache``, KIP-101).

Every leadership change bumps a partition's leader epoch; the leader stamps it into each batch
it appends, and each replica keeps here, per epoch, the offset its first batch starts at. A
follower that starts following a new leader asks it where the follower's latest epoch ends
(OffsetsForLeaderEpoch) and cuts its log there, never at its own high watermark: what a
deposed leader wrote and nobody replicated goes, and nothing the cluster acknowledged does.

The file ``leader-epoch-checkpoint`` in the partition's directory is Kafka's text format (a
version line, a count line, ``epoch start_offset`` lines) plus a ``crc32c`` line, replaced
atomically on every change (write, fsync, rename, fsync the directory), as the other
checkpoints are. Changes are rare (one per leadership change or truncation), so each costs an
fsync. A missing or damaged file reads as empty: the follower then refetches the whole log.
"""

from __future__ import annotations

import logging
import os
from typing import Final, NamedTuple

from crc32c import crc32c

from .checkpoint import CHECKPOINT_VERSION, CRC_PREFIX
from .files import Files

logger = logging.getLogger("tidelog.server.log")

LEADER_EPOCH_FILE: Final = "leader-epoch-checkpoint"
UNDEFINED: Final = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class EpochEnd(NamedTuple):
    epoch: int
    end_offset: int


class LeaderEpochCache:
    """The epochs of one partition's log, oldest first; starts strictly increase."""

    def __init__(self, files: Files, directory: str, entries: list[EpochEntry]) -> None:
        """Use :meth:`open`."""
        self._files = files
        self._path = os.path.join(directory, LEADER_EPOCH_FILE)
        self._entries = entries

    @classmethod
    def open(cls, files: Files, directory: str, log_end: int) -> LeaderEpochCache:
        """The checkpoint in ``directory``, less the epochs that start past ``log_end`` (a
        crash cut the log's tail after they were written)."""
        entries = _read(files, os.path.join(directory, LEADER_EPOCH_FILE))
        cache = cls(files, directory, entries)
        cache.truncate_from_end(log_end + 1)
        return cache

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED

    def start_of(self, epoch: int) -> int:
        """Where ``epoch`` starts; :data:`UNDEFINED` when this log has no batch of it."""
        for entry in self._entries:
            if entry.epoch == epoch:
                return entry.start_offset
        return UNDEFINED

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` starts at ``start_offset`` (no-op if it is known already).
        An entry starting at or after ``start_offset`` is replaced: that range was cut."""
        if epoch < 0 or (self._entries and epoch <= self._entries[-1].epoch):
            return
        kept = [e for e in self._entries if e.start_offset < start_offset]
        kept.append(EpochEntry(epoch, start_offset))
        self._entries = kept
        self._write()

    def end_offset_for(self, epoch: int, log_end: int) -> EpochEnd:
        """KIP-279: the largest epoch at or below ``epoch`` that this log has, and where it
        ends (the start of the next epoch; ``log_end`` for the latest). ``(UNDEFINED,
        UNDEFINED)`` when every epoch here is newer than ``epoch``, or there are none."""
        found = UNDEFINED
        for index, entry in enumerate(self._entries):
            if entry.epoch > epoch:
                break
            found = index
        if found == UNDEFINED:
            return EpochEnd(UNDEFINED, UNDEFINED)
        following = self._entries[found + 1 : found + 2]
        end = following[0].start_offset if following else log_end
        return EpochEnd(self._entries[found].epoch, end)

    def truncate_from_end(self, offset: int) -> None:
        """The log was cut to end at ``offset``: forget the epochs starting at or past it."""
        kept = [e for e in self._entries if e.start_offset < offset]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._write()

    def clear(self) -> None:
        """The log was emptied (restarted at another offset)."""
        if self._entries:
            self._entries = []
            self._write()

    def _write(self) -> None:
        lines = [str(CHECKPOINT_VERSION), str(len(self._entries))]
        lines.extend(f"{e.epoch} {e.start_offset}" for e in self._entries)
        body = ("\n".join(lines) + "\n").encode()
        self._files.write_atomically(
            self._path, body + f"{CRC_PREFIX}{crc32c(body):08x}\n".encode()
        )


def _read(files: Files, path: str) -> list[EpochEntry]:
    data = files.read_file(path)
    if data is None:
        return []
    try:
        body, _, last = data.rstrip(b"\n").rpartition(b"\n")
        if not last.startswith(CRC_PREFIX.encode()):
            raise ValueError("it has no checksum line")
        body += b"\n"
        if int(last[len(CRC_PREFIX) :], 16) != crc32c(body):
            raise ValueError("its checksum does not match its content")
        lines = body.decode().splitlines()
        if int(lines[0]) != CHECKPOINT_VERSION:
            raise ValueError(f"unknown version {lines[0]}")
        count = int(lines[1])
        entries = []
        for line in lines[2 : 2 + count]:
            epoch, start = line.split(" ")
            entries.append(EpochEntry(int(epoch), int(start)))
        if len(entries) != count:
            raise ValueError(f"{len(entries)} entries where the header says {count}")
        return entries
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        logger.warning("ignoring damaged leader epoch checkpoint %s: %s", path, exc)
        return []
