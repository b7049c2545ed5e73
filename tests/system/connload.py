"""Load on a broker process's connections, and what the process holds, read from /proc.

The memory tests assert on the *peak* (``VmHWM``): a bound must hold at every moment, not
just once the clients are gone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from tests.integration.rawclient import RawClient
from tidelog.server.broker import STREAM_LIMIT
from tidelog.server.connection import READ_CHUNK
from tidelog.wire import messages as m
from tidelog.wire.api import encode_request

from .procs import BrokerProcess

MIB = 1024 * 1024
UNREAD_PER_CONNECTION = 2 * STREAM_LIMIT * 9 // 8 + 2 * READ_CHUNK
"""What a connection may hold outside every budget: asyncio's stream buffer (it stops reading
the socket above twice the broker's STREAM_LIMIT; a bytearray over-allocates by an eighth),
the read being decoded and the next one."""
FIXED_ALLOWANCE = 64 * MIB
"""Allocator and interpreter slack over the baseline: glibc keeps up to twice its mmap
threshold (which rises to the largest block freed, at most 32 MiB) of freed heap before it
gives it back, besides free lists and a few responses in the making."""


def memory(pid: int) -> tuple[int, int]:
    """The process's resident bytes now (VmRSS) and at its peak so far (VmHWM)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def sockets(pid: int) -> int:
    """Open sockets of the process: its listener and its connections."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            continue  # closed while listing
    return count


def connect(address: str, count: int, *, rcvbuf: int | None = None) -> list[RawClient]:
    clients = [RawClient(address, rcvbuf=rcvbuf) for _ in range(count)]
    for client in clients:
        client.handshake()
    return clients


def logged(broker: BrokerProcess, text: str) -> int:
    """How many lines of the broker's log hold ``text``."""
    return sum(text in line for line in broker.stderr_lines)


def warned(broker: BrokerProcess) -> bool:
    """Whether the broker said its request budget is spent."""
    return logged(broker, "max_queued_request_bytes=") > 0


def produce_frame(payload: bytes, correlation_id: int) -> list[bytes | memoryview]:
    """A produce of ``payload`` as one partition's data: its prefix, then the payload itself
    (shared by every sender, never copied)."""
    request = m.ProduceRequest((m.ProducePartition("big", 0, len(payload)),))
    prefix, *_ = encode_request(request, correlation_id, data=[payload])
    return [bytes(prefix), memoryview(payload)]


def in_threads(work: Callable[[int], None], count: int) -> Callable[[], list[BaseException]]:
    """Run ``work(i)`` for i < count, each in a thread; returns a join() that gives the
    exceptions raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # the test fails on it after join()
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()

    def join() -> list[BaseException]:
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive(), "a client thread hangs"
        return errors

    return join
