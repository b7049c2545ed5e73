"""A WebSocket client that stops reading does not grow the gateway's memory beyond its bound.

The gateway runs as a subprocess (``tidelog gateway``) so its RSS is its own. A raw socket with
a small receive buffer subscribes to a topic holding ~40 MB and never reads. The gateway's
pump must stall on the socket's full send queue (``ws_send_queue_bytes``), its consumer's
prefetch stays within ``ws_prefetch_bytes``, and its RSS grows by a few MB, not by the topic.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from tidelog.client import Producer

from .conftest import TIMEOUT_S, eventually

RECORDS = 10_000
RECORD_BYTES = 4096
QUEUE_BYTES = 256 * 1024
GROWTH_BOUND = 24 * 1024 * 1024  # the topic is 40 MB, 55 MB as base64 frames
TIDELOG = Path(sys.executable).parent / "tidelog"


async def _fill(address: str) -> None:
    async with Producer(address, linger=0.01) as producer:
        payload = os.urandom(RECORD_BYTES)
        for _ in range(RECORDS):
            await producer.send("big", payload, partition=0)
        await producer.flush()


def _subscribe_and_stall(url: str) -> socket.socket:
    """A WebSocket handshake and one subscribe message by hand, then nothing is read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    message = b'{"op":"subscribe","id":"s","topics":["big"],"start":"earliest","format":"base64"}'
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
    sock.sendall(bytes([0x81, 0x80 | len(message)]) + mask + masked)
    return sock


def test_a_client_that_stops_reading_is_bounded(tidelog_broker: Any, tmp_path: Path) -> None:
    asyncio.run(_create_and_fill(tidelog_broker.address))
    proc = subprocess.Popen(
        [
            str(TIDELOG),
            "gateway",
            "--broker",
            tidelog_broker.address,
            "--http-port",
            "0",
            "--ws-send-queue-bytes",
            str(QUEUE_BYTES),
            "--ws-prefetch-bytes",
            str(QUEUE_BYTES),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    sock = None
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        url = match.group(1)
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as http:
            assert http.get("/ready").status_code == 200
            before = psutil.Process(proc.pid).memory_info().rss
            sock = _subscribe_and_stall(url)

            def stalled_or_overflowing() -> bool:
                stats = http.get("/v1/gateway").json()
                return bool(
                    stats["ws_stalled"] >= 1 or stats["ws_buffered_bytes"] > 2 * QUEUE_BYTES
                )

            eventually(stalled_or_overflowing, "the subscription stalls on the full queue")
            stats = http.get("/v1/gateway").json()
            grown = psutil.Process(proc.pid).memory_info().rss - before
        assert stats["ws_stalled"] == 1
        assert stats["ws_buffered_bytes"] <= 2 * QUEUE_BYTES  # one frame may pass the bound
        assert grown < GROWTH_BOUND, f"the gateway grew by {grown / 1e6:.1f} MB"
    finally:
        if sock is not None:
            sock.close()
        proc.terminate()
        proc.wait(TIMEOUT_S)
        if proc.stderr is not None:
            proc.stderr.close()


async def _create_and_fill(address: str) -> None:
    from tidelog.client import AdminClient

    async with AdminClient(address) as admin:
        # Batches of the producer's batch_size (64 KiB): a frame is a batch, and one may pass
        # the queue's bound. max_message_bytes keeps the idempotent producer's batches from
        # growing past that while its window is full (client/growth.py).
        await admin.create_topic("big", partitions=1, configs={"max_message_bytes": "66560"})
    await _fill(address)
