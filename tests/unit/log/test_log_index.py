"""OffsetIndex and TimeIndex: lookups, truncation, the file format, and refusing damage."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tidelog.server.log import Files, OffsetIndex, TimeIndex

BASE = 1000


def test_offset_index_lookups(tmp_path: Path) -> None:
    index = OffsetIndex(str(tmp_path / "x.index"), BASE)
    assert index.lookup(BASE + 5) == (BASE, 0)  # empty: the segment start
    for offset, position in ((1010, 400), (1020, 800), (1035, 1300)):
        index.append(offset, position)
    assert index.lookup(1009) == (BASE, 0)
    assert index.lookup(1010) == (1010, 400)
    assert index.lookup(1034) == (1020, 800)
    assert index.lookup(10**6) == (1035, 1300)
    assert index.lookup_position(799) == (1010, 400)
    assert index.lookup_position(800) == (1020, 800)
    assert index.lookup_position(10) == (BASE, 0)
    assert index.last() == (1035, 1300)
    index.truncate_to(1020)
    assert index.entries() == [(10, 400)]


def test_time_index_lookups(tmp_path: Path) -> None:
    index = TimeIndex(str(tmp_path / "x.timeindex"), BASE)
    assert index.last() is None
    index.maybe_append(50, 1003)
    index.maybe_append(50, 1005)  # not above the last timestamp: ignored
    index.maybe_append(80, 1010)
    assert index.entries() == [(50, 3), (80, 10)]
    assert index.lookup_below(50) is None  # strictly below
    assert index.lookup_below(51) == (50, 1003)
    assert index.lookup_below(10**9) == (80, 1010)
    assert index.last() == (80, 1010)
    index.truncate_to(1010)
    assert index.entries() == [(50, 3)]


def test_files_are_big_endian_fixed_size_entries_written_incrementally(tmp_path: Path) -> None:
    files = Files()
    offsets = OffsetIndex(str(tmp_path / "x.index"), BASE)
    times = TimeIndex(str(tmp_path / "x.timeindex"), BASE)
    offsets.append(1007, 4096)
    times.maybe_append(1_700_000_000_123, 1007)
    offsets.persist(files)
    times.persist(files)
    offsets.append(1009, 9000)
    offsets.persist(files)
    assert (tmp_path / "x.index").read_bytes() == struct.pack(">iIiI", 7, 4096, 9, 9000)
    assert (tmp_path / "x.timeindex").read_bytes() == struct.pack(">qi", 1_700_000_000_123, 7)
    again = OffsetIndex(offsets.path, BASE)
    assert again.load(files, log_size=10_000, max_relative_offset=100)
    assert again.entries() == offsets.entries()
    again.truncate_to(1008, files)
    assert os.path.getsize(offsets.path) == 8


@pytest.mark.parametrize(
    ("data", "log_size"),
    [
        (None, 100),  # missing
        (b"\x00" * 7, 100),  # not whole entries
        (struct.pack(">iIiI", 5, 10, 5, 20), 100),  # offsets not increasing
        (struct.pack(">iIiI", 5, 20, 6, 10), 100),  # positions not increasing
        (struct.pack(">iI", 5, 100), 100),  # a position past the log
        (struct.pack(">iI", 500, 10), 100),  # an offset past the segment
    ],
)
def test_damaged_offset_index_is_refused(tmp_path: Path, data: bytes | None, log_size: int) -> None:
    path = tmp_path / "x.index"
    if data is not None:
        path.write_bytes(data)
    index = OffsetIndex(str(path), BASE)
    assert not index.load(Files(), log_size=log_size, max_relative_offset=99)
    assert len(index) == 0


def test_damaged_time_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.timeindex"
    path.write_bytes(struct.pack(">qiqi", 50, 3, 40, 7))  # timestamps going down
    assert not TimeIndex(str(path), BASE).load(Files(), log_size=100, max_relative_offset=99)
    path.write_bytes(struct.pack(">qi", 50, 300))  # an offset past the segment
    assert not TimeIndex(str(path), BASE).load(Files(), log_size=100, max_relative_offset=99)
