"""Shared helpers of the log storage tests: a movable clock, batch builders and brute-force
references that read segment files directly."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec

from hypothesis import settings

from tidelog.server.log import PartitionLog
from tidelog.wire.errors import UnreadableRangeError
from tidelog.wire.records import RecordBatch, RecordBatchBuilder, iter_batches

# Hypothesis' default deadline is a timing assertion; the machine is small and shared.
PROPERTY = settings(deadline=None, max_examples=100)

P = ParamSpec("P")

START_MS = 1_700_000_000_000
DAY = 24 * 60 * 60 * 1000


class FakeClock:
    """A clock tests move by hand: ``clock()`` returns ``clock.now`` (milliseconds)."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def make_batch(
    n: int = 1, *, size: int = 10, timestamp: int = START_MS, tag: int = 0, ts_step: int = 0
) -> bytes:
    """A batch of ``n`` records of ``size``-byte values whose bytes depend on ``tag``."""
    builder = RecordBatchBuilder()
    for i in range(n):
        value = (f"{tag}:{i}:".encode() * (size // 4 + 1))[:size]
        builder.append(value, key=str(i).encode(), timestamp=timestamp + i * ts_step)
    return builder.build()


@dataclass
class Written:
    """What a test appended: the batch bytes as stored (base offset stamped) and offsets."""

    base_offset: int
    next_offset: int
    data: bytes
    max_timestamp: int


def append_all(log: PartitionLog, batches: list[bytes]) -> list[Written]:
    out = []
    for raw in batches:
        info = log.append(raw)
        stored = bytearray(raw)
        stored[0:8] = info.base_offset.to_bytes(8, "big", signed=True)
        stored[12:16] = (-1).to_bytes(4, "big", signed=True)
        out.append(Written(info.base_offset, info.next_offset, bytes(stored), info.max_timestamp))
    return out


def segment_files(directory: str) -> list[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".log"))


def disk_batches(directory: str) -> list[list[RecordBatch]]:
    """Every batch on disk, per segment file, parsed with CRC checks (raises if a file does
    not end on a batch boundary)."""
    out = []
    for path in segment_files(directory):
        with open(path, "rb") as f:
            data = f.read()
        out.append([RecordBatch.parse(bytes(b.buffer)) for b in iter_batches(data)])
    return out


def read_all(log: PartitionLog, max_bytes: int = 1 << 20) -> bytes:
    """The whole log through ``read``, from the start to the end."""
    chunks = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        result = log.read(offset, max_bytes)
        chunks.append(result.records)
        assert result.next_offset > offset
        offset = result.next_offset
    return b"".join(chunks)


def read_around_damage(
    log: PartitionLog, max_bytes: int = 1 << 20
) -> tuple[bytes, list[tuple[int, int, str]]]:
    """The whole log through ``read``, stepping over every range it refuses: the batches
    read, and each refused range as (start, next offset, error class name). Every refused
    range holds the offset that was asked for, or this never ends."""
    chunks: list[bytes] = []
    refused: list[tuple[int, int, str]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        try:
            result = log.read(offset, max_bytes)
        except UnreadableRangeError as exc:
            refused.append((exc.start_offset, exc.next_offset, type(exc).__name__))
            offset = exc.next_offset
            continue
        chunks.append(result.records)
        assert result.next_offset > offset
        offset = result.next_offset
    return b"".join(chunks), refused


def snapshot(directory: str) -> dict[str, bytes]:
    """Every file of a directory and its bytes."""
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def async_test(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test (with its fixtures) in a fresh event loop."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run
