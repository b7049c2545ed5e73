"""The connection soak (issue 13): rounds of hostile and careless clients against one broker
process -- oversized frames before a handshake, large frames cut off by a reset, readers that
stall and then reset, clients that trickle bytes or stall inside a frame -- while honest
clients send large frames and produce. After every round each connection has ended, the
broker still serves, and its peak RSS has stayed within its budgets plus a fixed allowance.

``make test`` runs a few rounds; ``make soak`` many (TIDELOG_CONN_SOAK_ROUNDS).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tests.integration.rawclient import RawClient
from tests.integration.rawload import fill, trickle
from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey, decode_response, encode_request, supported_versions
from tidelog.wire.layouts import FRAME_HEADER_STRUCT, FRAME_MAGIC
from tidelog.wire.records import RecordBatchBuilder, read_records

from .connload import (
    FIXED_ALLOWANCE,
    MIB,
    UNREAD_PER_CONNECTION,
    connect,
    in_threads,
    logged,
    memory,
    produce_frame,
)
from .procs import BrokerProcess

ROUNDS = int(os.environ.get("TIDELOG_CONN_SOAK_ROUNDS", "3"))
DEADLINE_S = 120.0

BUDGET = 32 * MIB  # max_queued_request_bytes
MAX_FRAME = 8 * MIB
CONNECTION_BUFFER = 4 * MIB
FETCH_BYTES = 1 * MIB
FRAME = 6 * MIB  # the large frames clients send
OPTIONS = (
    "--max-queued-request-bytes", str(BUDGET),
    "--max-frame-size", str(MAX_FRAME),
    "--max-connection-buffer", str(CONNECTION_BUFFER),
    "--max-fetch-bytes", str(FETCH_BYTES),
    "--handshake-timeout-s", "1",
    "--idle-timeout-s", "2",
)  # fmt: skip

# Clients of each kind in a round.
OVERSIZED, CUT_OFF, STALLED_READERS, TRICKLERS, HONEST, STALLED_IN_FRAME = 8, 12, 8, 4, 12, 4
CONNECTIONS = OVERSIZED + CUT_OFF + STALLED_READERS + TRICKLERS + HONEST + STALLED_IN_FRAME
# Requests are in the broker-wide budget (plus one frame over it); only the stalled readers
# hold a connection buffer of responses; every connection may hold some unread input.
BOUND = (
    BUDGET
    + MAX_FRAME
    + STALLED_READERS * CONNECTION_BUFFER
    + CONNECTIONS * UNREAD_PER_CONNECTION
    + FIXED_ALLOWANCE
)
PAYLOAD = bytes(FRAME)


def one_round(broker: BrokerProcess, round_no: int) -> None:
    """Every kind of client at once; returns when each has done its part."""
    address = broker.address
    fetch = m.FetchRequest((m.FetchPartition("filled", 0, 0, FETCH_BYTES),), max_wait_ms=0)
    pipelined = b"".join(b"".join(encode_request(fetch, i)) for i in range(2, 302))
    oversized = FRAME_HEADER_STRUCT.pack(FRAME_MAGIC, 1, ApiKey.PRODUCE, 0, 0, 1, 0, FRAME, 0)
    handshake = b"".join(encode_request(m.HandshakeRequest(api_versions=supported_versions()), 1))
    readers_ready = threading.Barrier(STALLED_READERS + 1)
    others_done = threading.Event()

    def client(i: int) -> None:
        if i < OVERSIZED:  # a large frame before any handshake: closed at its header
            with RawClient(address) as c:
                c.send_raw(oversized)
                assert c.is_closed_by_peer()
            return
        i -= OVERSIZED
        if i < CUT_OFF:  # half a large frame, then a reset
            (c,) = connect(address, 1)
            prefix, body = produce_frame(PAYLOAD, 7)
            c.sock.sendall(prefix)
            c.sock.sendall(body[: len(body) // 2])
            c.reset()
            return
        i -= CUT_OFF
        if i < STALLED_READERS:  # pipelined fetches, never read; a reset at the end
            (c,) = connect(address, 1, rcvbuf=32 * 1024)
            c.send_raw(pipelined)
            readers_ready.wait(DEADLINE_S)
            others_done.wait(DEADLINE_S)
            c.reset()
            return
        i -= STALLED_READERS
        if i < TRICKLERS:  # a handshake a byte at a time: cut at the handshake deadline
            with RawClient(address) as c:
                assert trickle(c.sock, handshake) < len(handshake)
            return
        i -= TRICKLERS
        if i < HONEST:  # a whole large frame, answered
            (c,) = connect(address, 1)
            with c:
                prefix, body = produce_frame(PAYLOAD, 9)
                c.sock.sendall(prefix)
                c.sock.sendall(body)
                frame = c.read_frame()
                assert frame is not None and frame.header.correlation_id == 9
                assert isinstance(decode_response(frame), m.ProduceResponse)
            return
        # Stalled inside a large frame: cut when the frame is not done within the idle timeout.
        (c,) = connect(address, 1)
        with c:
            prefix, body = produce_frame(PAYLOAD, 11)
            c.sock.sendall(prefix)
            c.sock.sendall(body[:MIB])
            assert c.is_closed_by_peer()

    # The stalled readers first, so they hold their buffers while the others come and go.
    first = OVERSIZED + CUT_OFF
    join_readers = in_threads(lambda i: client(first + i), STALLED_READERS)
    readers_ready.wait(DEADLINE_S)
    others = [*range(first), *range(first + STALLED_READERS, CONNECTIONS)]
    errors = in_threads(lambda i: client(others[i]), len(others))()
    others_done.set()
    errors += join_readers()
    assert not errors, f"round {round_no}: {errors!r}"


def assert_serves(broker: BrokerProcess, batch: bytes) -> None:
    with RawClient(broker.address) as c:
        c.handshake()
        produced = c.call(m.ProduceRequest((m.ProducePartition("honest", 0, len(batch)),)), [batch])
        assert isinstance(produced, m.ProduceResponse)
        assert produced.partitions[0].error_code == 0
        offset = produced.partitions[0].base_offset
        fetched, data = c.call_with_data(
            m.FetchRequest((m.FetchPartition("honest", 0, offset),), max_wait_ms=0)
        )
        assert isinstance(fetched, m.FetchResponse) and read_records(data)


def test_connection_soak(tmp_path: Path) -> None:
    builder = RecordBatchBuilder()
    for _ in range(32):
        builder.append(b"s" * 4096)
    batch = builder.build()
    with BrokerProcess(tmp_path / "data", *OPTIONS) as broker:
        fill(broker.address, "filled", 4 * MIB, batch)
        baseline, _ = memory(broker.pid)
        settled: list[int] = []  # RSS once each round's connections are gone
        for round_no in range(ROUNDS):
            one_round(broker, round_no)
            deadline = time.monotonic() + DEADLINE_S
            while logged(broker, "client connected from") != logged(broker, " disconnected ("):
                assert memory(broker.pid)[1] - baseline <= BOUND, f"round {round_no}: over"
                assert time.monotonic() < deadline, f"round {round_no}: connections linger"
                time.sleep(0.01)  # polling a condition with a deadline
            rss, peak = memory(broker.pid)
            settled.append(rss)
            assert peak - baseline <= BOUND, (
                f"round {round_no}: peak {peak / MIB:.0f} MiB over a baseline of "
                f"{baseline / MIB:.0f} MiB; the budgets allow {BOUND / MIB:.0f} MiB"
            )
            assert_serves(broker, batch)
        log = "".join(broker.stderr_lines)
    trouble = max(log.find("Traceback"), log.find(" ERROR "))
    assert trouble < 0, log[max(trouble - 1000, 0) : trouble + 4000]
    print(
        f"\nconnection soak: {ROUNDS} rounds x {CONNECTIONS} connections; peak RSS "
        f"{(peak - baseline) / MIB:.0f} MiB over a baseline of {baseline / MIB:.0f} MiB "
        f"(bound {BOUND / MIB:.0f} MiB: budget {BUDGET // MIB} + frame {MAX_FRAME // MIB} + "
        f"{STALLED_READERS} x {CONNECTION_BUFFER // MIB} + {CONNECTIONS} x "
        f"{UNREAD_PER_CONNECTION / MIB:.2f} + {FIXED_ALLOWANCE // MIB}); RSS after round 1 "
        f"{settled[0] / MIB:.0f} MiB, after the last {settled[-1] / MIB:.0f} MiB"
    )
