"""Codec throughput on one core: record batches and frames.

    python bench/codec.py [--records 1000] [--size 100] [--rounds 7] [--seconds 1.0]

Prints records/s to build and to read back a batch of N records of S bytes for each codec,
beside a peer in the same run (the same records as one msgpack array of [ts, key, value]
tuples: what a Python team would write by hand), and MB/s to encode and decode 1 MiB frames.
Each figure is the median of ``--rounds`` timed rounds, with the min-max range.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import msgpack
from rich.console import Console
from rich.table import Table

from tidelog.wire import (
    ApiKey,
    Compression,
    FrameDecoder,
    RecordBatch,
    RecordBatchBuilder,
    encode_frame,
)

TIMESTAMP = 1_700_000_000_000


def measure(fn: Callable[[], object], seconds: float, rounds: int) -> list[float]:
    """Calls per second of ``fn`` for each round (each round lasts about ``seconds``)."""
    fn()
    rates: list[float] = []
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            fn()
            calls += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(calls / (now - start))
    return rates


def fmt(rates: list[float], scale: float, unit: str) -> str:
    med = statistics.median(rates) * scale
    return f"{med:,.0f} {unit} ({min(rates) * scale:,.0f}-{max(rates) * scale:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="records per batch")
    parser.add_argument("--size", type=int, default=100, help="value bytes per record")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per figure")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    args = parser.parse_args()
    n, size = args.records, args.size
    # Values half random, half repeated: compressible like real payloads, not trivially so.
    values = [os.urandom(size // 2) + bytes(size - size // 2) for _ in range(n)]

    console = Console()
    table = Table(title=f"codec: batches of {n:,} records x {size} B, one core")
    table.add_column("what")
    table.add_column("build / encode (median, min-max)", justify="right")
    table.add_column("read / decode (median, min-max)", justify="right")
    table.add_column("batch bytes", justify="right")

    for codec in Compression:

        def build(codec: Compression = codec) -> bytes:
            builder = RecordBatchBuilder(codec)
            append = builder.append
            for v in values:
                append(v, timestamp=TIMESTAMP)
            return builder.build()

        batch = build()

        def read(batch: bytes = batch) -> object:
            return RecordBatch.parse(batch).records()

        assert len(RecordBatch.parse(batch).records()) == n
        built = measure(build, args.seconds, args.rounds)
        readback = measure(read, args.seconds, args.rounds)
        table.add_row(
            f"tidelog batch, {codec.name.lower()}",
            fmt(built, n, "rec/s"),
            fmt(readback, n, "rec/s"),
            f"{len(batch):,}",
        )

    def peer_build() -> bytes:
        return msgpack.packb([(TIMESTAMP, None, v) for v in values])  # type: ignore[no-any-return]

    packed = peer_build()
    table.add_row(
        "peer: msgpack array of (ts, key, value)",
        fmt(measure(peer_build, args.seconds, args.rounds), n, "rec/s"),
        fmt(measure(lambda: msgpack.unpackb(packed), args.seconds, args.rounds), n, "rec/s"),
        f"{len(packed):,}",
    )

    payload = os.urandom(1 << 20)
    frame = encode_frame(
        api_key=ApiKey.FETCH, api_version=0, flags=1, correlation_id=1, meta=b"\x80", data=[payload]
    )

    def encode() -> bytes:
        return encode_frame(
            api_key=ApiKey.FETCH,
            api_version=0,
            flags=1,
            correlation_id=1,
            meta=b"\x80",
            data=[payload],
        )

    decoder = FrameDecoder()
    chunk = 256 * 1024
    view = memoryview(frame)

    def decode() -> object:
        # As off a socket: the frame arrives in 256 KiB reads (views, so that what is timed
        # is the decoder, not the allocation of the test's read buffers).
        for i in range(0, len(frame), chunk):
            decoder.feed(view[i : i + chunk])
        return decoder.next_frame()

    def decode_fresh_reads() -> object:
        # Each read a freshly allocated bytes object, as a socket hands them out: adds the
        # allocation (and page faults) of 1 MiB of read buffers per frame.
        for i in range(0, len(frame), chunk):
            decoder.feed(frame[i : i + chunk])
        return decoder.next_frame()

    mib = len(frame) / 1e6
    table.add_row(
        "1 MiB frame (data section)",
        fmt(measure(encode, args.seconds, args.rounds), mib, "MB/s"),
        fmt(measure(decode, args.seconds, args.rounds), mib, "MB/s"),
        f"{len(frame):,}",
    )
    table.add_row(
        "  same, decoded from fresh 256 KiB reads",
        "",
        fmt(measure(decode_fresh_reads, args.seconds, args.rounds), mib, "MB/s"),
        "",
    )
    console.print(table)
    console.print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d')}"
    )


if __name__ == "__main__":
    main()
