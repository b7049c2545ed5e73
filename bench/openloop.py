"""Open-loop pacing and latency recording shared by every system in the side-by-side bench.

Records are *scheduled* at fixed times (``rate`` per second); each one carries its scheduled
time (a ``perf_counter`` float, producer and consumer share the process) in its first 8 bytes,
and its latency is taken when the consumer receives it, from that scheduled time. A stall of
the producer or the server therefore counts against every record it delayed: the figures are
corrected for coordinated omission by construction. Whatever is due when the pacer wakes is
handed to the system in one call, so every system gets the same chance to batch.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable

STAMP = struct.Struct("<d")
HIGHEST_US = 120_000_000  # 2 minutes: anything slower is recorded as this

try:
    from hdrh.histogram import HdrHistogram
except ImportError:  # the bench extra is not installed: exact sorted samples instead
    HdrHistogram = None


class Recorder:
    """Latencies in microseconds: an HDR histogram (3 significant digits) when available."""

    def __init__(self) -> None:
        self.count = 0
        self._hdr = HdrHistogram(1, HIGHEST_US, 3) if HdrHistogram is not None else None
        self._values: list[int] = []

    def record(self, micros: float) -> None:
        value = max(1, min(HIGHEST_US, int(micros)))
        self.count += 1
        if self._hdr is not None:
            self._hdr.record_value(value)
        else:
            self._values.append(value)

    def percentile_ms(self, q: float) -> float:
        if self._hdr is not None:
            return float(self._hdr.get_value_at_percentile(q)) / 1000
        if not self._values:
            return float("nan")
        values = sorted(self._values)
        rank = max(0, min(len(values) - 1, round(q / 100 * len(values) + 0.5) - 1))
        return values[rank] / 1000

    def max_ms(self) -> float:
        if self._hdr is not None:
            return float(self._hdr.get_max_value()) / 1000
        return max(self._values, default=0) / 1000

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.percentile_ms(50),
            "p99": self.percentile_ms(99),
            "p99.9": self.percentile_ms(99.9),
            "max": self.max_ms(),
        }


def stamped(due: float, size: int) -> bytes:
    """A ``size``-byte value carrying its scheduled time."""
    return STAMP.pack(due) + bytes(max(0, size - STAMP.size))


def observe(recorder: Recorder, value: bytes, now: float) -> None:
    recorder.record((now - STAMP.unpack_from(value)[0]) * 1e6)


async def pace(
    rate: int, seconds: float, send_due: Callable[[list[float]], Awaitable[None]]
) -> int:
    """Call ``send_due(scheduled_times)`` for ``rate * seconds`` records; returns the count."""
    total = max(1, int(rate * seconds))
    clock = time.perf_counter
    start = clock() + 0.01
    sent = 0
    while sent < total:
        now = clock()
        due = min(total, int((now - start) * rate) + 1)
        if due > sent:
            await send_due([start + k / rate for k in range(sent, due)])
            sent = due
        else:
            # Pacing, not synchronisation. uvloop's timers round to whole milliseconds (a
            # 0.6 ms sleep takes 1.1 ms), which would be charged to the system as latency:
            # sleep coarsely while the next record is far off, then yield until it is due.
            delay = start + sent / rate - now
            await asyncio.sleep(delay - 0.001 if delay > 0.002 else 0)
    return total


async def run_open_loop(
    rate: int,
    seconds: float,
    send_due: Callable[[list[float]], Awaitable[None]],
    receive: Callable[[Recorder, int], Awaitable[None]],
) -> Recorder:
    """Pace the producer while ``receive(recorder, total)`` consumes until it has ``total``."""
    recorder = Recorder()
    total = max(1, int(rate * seconds))
    consumer = asyncio.ensure_future(receive(recorder, total))
    try:
        await pace(rate, seconds, send_due)
        async with asyncio.timeout(seconds + 60):
            await consumer
    finally:
        if not consumer.done():
            consumer.cancel()
    return recorder
