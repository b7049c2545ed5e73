"""What a partition's log knows to be unreadable: damaged byte ranges of its segments.

A :class:`Damage` is a byte range of one segment file that holds no batch passing its checks,
and the offsets that range stood for (``[first_offset, next_offset)``; empty if the bytes held
no records). Recovery, the scrubber and a client's report find them (:mod:`.check`); a segment
keeps its own sorted by position, reads stop before them and a fetch inside one gets
``DAMAGED_RANGE``. They never shrink the log: the bytes stay where they are.

Each partition directory keeps the list in ``damaged-ranges.json`` (written atomically when it
changes, which is rare), so ``tidelog topic describe`` reports the same damage after a restart.
A file that cannot be read is ignored with a warning: the scrubber finds the damage again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Final

from tidelog.wire.errors import MissingRangeError

from .files import Files
from .results import Unreadable

if TYPE_CHECKING:
    from .segment import LogSegment

logger = logging.getLogger("tidelog.server.log")

DAMAGE_FILE: Final = "damaged-ranges.json"
DAMAGE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[position, end)`` of a segment hold no readable batch; they stood for offsets
    ``[first_offset, next_offset)``."""

    position: int
    end: int
    first_offset: int
    next_offset: int
    reason: str

    def holds(self, offset: int) -> bool:
        return self.first_offset <= offset < self.next_offset

    def describe(self, segment: str) -> str:
        return (
            f"offsets [{self.first_offset}, {self.next_offset}) in bytes "
            f"[{self.position}, {self.end}) of {segment}: {self.reason}"
        )


def damage_at(regions: Sequence[Damage], offset: int) -> Damage | None:
    """The region whose offsets hold ``offset``, if any (lists are short: damage is rare)."""
    for region in regions:
        if region.holds(offset):
            return region
    return None


def next_damage(regions: Sequence[Damage], position: int) -> Damage | None:
    """The first region that starts at or after byte ``position``."""
    for region in regions:
        if region.position >= position:
            return region
    return None


def merge_damage(
    old: Sequence[Damage], found: Iterable[Damage], start: int, end: int
) -> list[Damage]:
    """``old`` with what a check of bytes ``[start, end)`` found replacing what it knew there."""
    kept = [r for r in old if r.end <= start or r.position >= end]
    return sorted([*kept, *found], key=lambda r: r.position)


def unreadable_ranges(segments: Iterable[LogSegment]) -> list[Unreadable]:
    """The offset ranges of a log's ``segments`` that a read refuses: their damaged ranges
    and the gaps between them."""
    out: list[Unreadable] = []
    ordered = list(segments)
    for older, newer in pairwise(ordered):
        if older.next_offset < newer.base_offset:
            out.append(Unreadable(older.next_offset, newer.base_offset, "missing", "no segment"))
    for segment in ordered:
        for region in segment.damage:
            if region.first_offset < region.next_offset:
                detail = region.describe(os.path.basename(segment.log_path))
                out.append(Unreadable(region.first_offset, region.next_offset, "damaged", detail))
    return sorted(out, key=lambda u: u.start_offset)


def missing_range(name: str, start: int, end: int, offset: int) -> MissingRangeError:
    """The error of a read at ``offset``, in the gap ``[start, end)`` of log ``name``."""
    return MissingRangeError(
        f"{name}: offsets [{start}, {end}) are missing from the broker's disk (no segment "
        f"holds offset {offset}); the next data starts at offset {end}",
        start_offset=start,
        next_offset=end,
    )


def read_damage(files: Files, directory: str, name: str) -> dict[int, list[Damage]]:
    """The damaged ranges recorded in ``directory``, per segment base offset; ``{}`` if there
    is no file or it cannot be read (logged)."""
    path = os.path.join(directory, DAMAGE_FILE)
    data = files.read_file(path)
    if data is None:
        return {}
    try:
        doc = json.loads(data)
        if doc["version"] != DAMAGE_VERSION:
            raise ValueError(f"unknown version {doc['version']}")
        out: dict[int, list[Damage]] = {}
        for base, rows in doc["segments"].items():
            regions = [Damage(int(p), int(e), int(f), int(n), str(r)) for p, e, f, n, r in rows]
            for r in regions:
                if not 0 <= r.position < r.end or r.first_offset > r.next_offset:
                    raise ValueError(f"impossible range {r}")
            out[int(base)] = sorted(regions, key=lambda r: r.position)
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning(
            "%s: ignoring unreadable %s (%s); the scrubber finds the damage again",
            name,
            path,
            exc,
        )
        return {}


def write_damage(files: Files, directory: str, regions: Mapping[int, Sequence[Damage]]) -> None:
    """Replace ``directory``'s record of damaged ranges (removed when there are none)."""
    path = os.path.join(directory, DAMAGE_FILE)
    segments = {
        str(base): [[r.position, r.end, r.first_offset, r.next_offset, r.reason] for r in found]
        for base, found in sorted(regions.items())
        if found
    }
    if not segments:
        files.remove(path, missing_ok=True)
        return
    doc = {"version": DAMAGE_VERSION, "segments": segments}
    files.write_atomically(path, json.dumps(doc, indent=1).encode())
