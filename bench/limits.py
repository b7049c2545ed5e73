"""The machine's own limits, measured in the same run as the systems under test.

* loopback TCP: one process sends 1 MiB chunks to another over 127.0.0.1 (MB/s);
* sequential disk write: 1 MiB ``os.write`` calls then one fsync, in the bench's temp dir;
* fsync latency: 4 KiB appended then ``fsync`` per round, p50 / p99 / max in ms.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from harness import percentile

CHUNK = 1 << 20

_SENDER = """
import socket, sys
port, total = int(sys.argv[1]), int(sys.argv[2])
chunk = bytes(1 << 20)
with socket.create_connection(("127.0.0.1", port)) as s:
    for _ in range(total):
        s.sendall(chunk)
"""


def loopback_mb_s(mib: int = 512) -> float:
    """MB/s from one process to another over loopback TCP."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(port), str(mib)])
        try:
            conn, _ = server.accept()
            with conn:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                want = mib * CHUNK
                got = 0
                start = time.perf_counter()
                while got < want:
                    n = conn.recv_into(view)
                    if n == 0:
                        break
                    got += n
                elapsed = time.perf_counter() - start
        finally:
            sender.wait(30)
    return got / elapsed / 1e6


def disk_write_mb_s(mib: int = 256, directory: str | None = None) -> float:
    """Sequential write of ``mib`` MiB in 1 MiB chunks, including the final fsync."""
    chunk = os.urandom(CHUNK)
    with tempfile.TemporaryDirectory(dir=directory, prefix="tidelog-bench-disk-") as d:
        path = os.path.join(d, "seq")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            start = time.perf_counter()
            for _ in range(mib):
                os.write(fd, chunk)
            os.fsync(fd)
            elapsed = time.perf_counter() - start
        finally:
            os.close(fd)
    return mib * CHUNK / elapsed / 1e6


def fsync_latency_ms(rounds: int = 200, directory: str | None = None) -> dict[str, float]:
    """4 KiB append + fsync, ``rounds`` times: p50, p99, max in ms."""
    block = os.urandom(4096)
    samples: list[float] = []
    with tempfile.TemporaryDirectory(dir=directory, prefix="tidelog-bench-fsync-") as d:
        fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(rounds):
                os.write(fd, block)
                t = time.perf_counter()
                os.fsync(fd)
                samples.append((time.perf_counter() - t) * 1000)
        finally:
            os.close(fd)
    samples.sort()
    return {
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": samples[-1],
        "mean": statistics.fmean(samples),
    }
