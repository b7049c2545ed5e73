"""Raw-socket client behaviours for the connection-limit tests: a client that trickles bytes,
a check for the broker's close that does not block, filling a partition."""

from __future__ import annotations

import select
import socket
import time

from tidelog.wire import messages as m

from .rawclient import RawClient

TRICKLE_PAUSE_S = 0.02  # between two bytes of a trickled frame: the client's pace, no sync


def closed_by_peer_now(sock: socket.socket) -> bool:
    """Whether the broker has closed the connection (EOF or reset), without blocking. Only
    for connections with nothing unread: any readable byte here means the end."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return not sock.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        return True


def trickle(sock: socket.socket, data: bytes) -> int:
    """Send ``data`` one byte at a time; the bytes sent before the broker closed the
    connection (``len(data)`` if it never did)."""
    for sent in range(len(data)):
        if closed_by_peer_now(sock):
            return sent
        try:
            sock.send(data[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            return sent
        time.sleep(TRICKLE_PAUSE_S)
    return len(data)


def fill(address: str, topic: str, nbytes: int, batch: bytes) -> None:
    """Append at least ``nbytes`` of records to partition 0 of ``topic``."""
    request = m.ProduceRequest((m.ProducePartition(topic, 0, len(batch)),))
    with RawClient(address) as producer:
        producer.handshake()
        for _ in range(-(-nbytes // len(batch))):
            response = producer.call(request, [batch])
            assert isinstance(response, m.ProduceResponse)
            assert response.partitions[0].error_code == 0
