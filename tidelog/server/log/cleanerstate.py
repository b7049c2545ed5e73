"""A partition's cleaner checkpoint, ``cleaner-checkpoint`` in its directory: how far the log is
cleaned, and when each cleaning passed which offsets (when a tombstone's
``delete_retention_ms`` started).

Kafka keeps the first (a data directory's ``cleaner-offset-checkpoint``) and, since KIP-534,
stamps the second into each batch; this format has no room for the stamp, so the passes are
kept here: ``(end_offset, time_ms)`` per cleaning, oldest first. A tombstone at offset ``o``
was first passed by the first pass whose end is above ``o``. The list is bounded: past
:data:`MAX_PASSES`, the two oldest merge into the later one's end *and time*, which can only
make a tombstone live longer, never shorter. Written atomically after a swap; a missing or
damaged file only means the whole log counts as dirty (and tombstones start over).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Final

import msgspec

from .files import Files

logger = logging.getLogger("tidelog.server.log")

CLEANER_CHECKPOINT_FILE: Final = "cleaner-checkpoint"
MAX_PASSES: Final = 256
_VERSION: Final = 1


class _Stored(msgspec.Struct, array_like=True):
    version: int
    cleaned_to: int
    passes: list[tuple[int, int]]


@dataclass(slots=True)
class CleanerState:
    """What the cleaner knows of one log (see the module docstring)."""

    cleaned_to: int = 0
    """Offsets below this were in the dirty part of some cleaning: the log's clean part."""
    passes: list[tuple[int, int]] = field(default_factory=list)

    def passed_at(self, offset: int) -> int | None:
        """When the first cleaning that covered ``offset`` ran; ``None`` if none did."""
        i = bisect_right([end for end, _ in self.passes], offset)
        return self.passes[i][1] if i < len(self.passes) else None

    def deletable_below(self, now: int, retention_ms: int) -> int:
        """Tombstones below this offset were passed at least ``retention_ms`` ago."""
        below = 0
        for end, time_ms in self.passes:
            if now - time_ms < retention_ms:
                break
            below = end
        return below

    def record_pass(self, end_offset: int, now: int) -> None:
        if end_offset <= self.cleaned_to:
            return
        self.cleaned_to = end_offset
        self.passes.append((end_offset, now))
        while len(self.passes) > MAX_PASSES:
            (_, _), (end, time_ms) = self.passes[0], self.passes[1]
            self.passes[0:2] = [(end, time_ms)]

    def clamp(self, log_end: int) -> None:
        """A log cut back below what was cleaned (truncation) forgets the passes above."""
        if self.cleaned_to > log_end:
            self.cleaned_to = log_end
            self.passes = [(min(e, log_end), t) for e, t in self.passes if e <= log_end] or []

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(_Stored(_VERSION, self.cleaned_to, self.passes))


def read_cleaner_state(files: Files, directory: str) -> CleanerState:
    data = files.read_file(os.path.join(directory, CLEANER_CHECKPOINT_FILE))
    if data is None:
        return CleanerState()
    try:
        stored = msgspec.msgpack.decode(data, type=_Stored)
        if stored.version != _VERSION:
            raise ValueError(f"unknown version {stored.version}")
    except (msgspec.DecodeError, ValueError) as exc:
        logger.warning("%s: ignoring a damaged cleaner checkpoint: %s", directory, exc)
        return CleanerState()
    return CleanerState(stored.cleaned_to, [tuple(p) for p in stored.passes])  # type: ignore[misc]


def write_cleaner_state(files: Files, directory: str, state: CleanerState) -> None:
    files.write_atomically(os.path.join(directory, CLEANER_CHECKPOINT_FILE), state.to_bytes())
