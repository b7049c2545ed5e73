"""A broker process's memory under many connections (issue 13, points 1 and 3): its peak RSS
stays within its configured budgets plus a fixed allowance, however many clients hold large
partial frames at once, and when clients that never read go away."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.integration.rawclient import RawClient
from tests.integration.rawload import fill
from tests.integration.test_backpressure import DEADLINE_S, wait_for
from tidelog.wire import messages as m
from tidelog.wire.api import decode_response, encode_request
from tidelog.wire.records import RecordBatchBuilder

from .connload import (
    FIXED_ALLOWANCE,
    MIB,
    UNREAD_PER_CONNECTION,
    connect,
    in_threads,
    logged,
    memory,
    produce_frame,
    sockets,
    warned,
)
from .procs import BrokerProcess

DISCONNECTED = " disconnected ("  # a connection's last log line, once its work is done


# --- point 1: a broker-wide budget ----------------------------------------------------------------

FRAME = 24 * MIB
BUDGET = 64 * MIB
SENDERS = 16


def test_many_connections_sending_large_frames_hold_at_most_the_budget(tmp_path: Path) -> None:
    options = ("--max-frame-size", str(32 * MIB), "--max-queued-request-bytes", str(BUDGET))
    with BrokerProcess(tmp_path / "data", *options) as broker:
        clients = connect(broker.address, SENDERS)
        baseline, _ = memory(broker.pid)
        payload = bytes(FRAME)
        started = threading.Semaphore(0)
        go = threading.Event()

        def send(i: int) -> None:
            prefix, body = produce_frame(payload, 100 + i)
            sock = clients[i].sock
            sock.sendall(prefix)
            sock.sendall(body[:-1])  # every frame but its last byte, all at once
            started.release()
            go.wait(DEADLINE_S)
            sock.sendall(body[-1:])
            frame = clients[i].read_frame()
            assert frame is not None and frame.header.correlation_id == 100 + i
            assert isinstance(decode_response(frame), m.ProduceResponse)

        join = in_threads(send, SENDERS)
        # Until every sender is stuck or done: with no budget, all of them are held at once.
        done = 0
        while done < SENDERS and not warned(broker):
            done += started.acquire(timeout=0.01)
        go.set()
        assert not join()
        _, peak = memory(broker.pid)
        for client in clients:
            client.close()
    bound = BUDGET + FRAME + SENDERS * UNREAD_PER_CONNECTION + FIXED_ALLOWANCE
    assert peak - baseline <= bound, (
        f"peak {peak / MIB:.0f} MiB over a baseline of {baseline / MIB:.0f} MiB: more than "
        f"the budget allows ({bound / MIB:.0f} MiB)"
    )


# --- point 3: clients that never read, then go away ---------------------------------------------

CONNECTION_BUFFER = 8 * MIB
FETCH_BYTES = 4 * MIB
READERS = 10
PIPELINED = 1000


def test_clients_that_pipeline_fetches_never_read_and_reset_are_dropped_at_once(
    tmp_path: Path,
) -> None:
    options = (
        "--max-connection-buffer", str(CONNECTION_BUFFER),
        "--max-fetch-bytes", str(FETCH_BYTES),
    )  # fmt: skip
    builder = RecordBatchBuilder()
    for _ in range(64):
        builder.append(b"v" * 8192)
    batch = builder.build()
    with BrokerProcess(tmp_path / "data", *options) as broker:
        fill(broker.address, "filled", 16 * MIB, batch)
        wait_for(lambda: logged(broker, DISCONNECTED) == 1, "the filling client to be gone")
        idle_sockets = sockets(broker.pid)
        baseline, _ = memory(broker.pid)
        fetch = m.FetchRequest((m.FetchPartition("filled", 0, 0, FETCH_BYTES),), max_wait_ms=0)
        pipelined = b"".join(b"".join(encode_request(fetch, i)) for i in range(2, PIPELINED + 2))
        readers = connect(broker.address, READERS, rcvbuf=64 * 1024)
        for reader in readers:
            reader.send_raw(pipelined)  # and never read a response
        # The broker fills their sockets and then holds up to a connection buffer for each.
        held = READERS * CONNECTION_BUFFER // 2
        wait_for(lambda: memory(broker.pid)[0] - baseline >= held, "the responses to be held")
        before, _ = memory(broker.pid)
        for reader in readers:
            reader.reset()
        # Each connection's task logs its end once its last request is done. (Stop early if
        # the bound is broken: serving dead fetches once took gigabytes.)
        bound = READERS * (CONNECTION_BUFFER + UNREAD_PER_CONNECTION) + FIXED_ALLOWANCE

        def ended_or_over() -> bool:
            over = memory(broker.pid)[1] - baseline > bound
            return over or logged(broker, DISCONNECTED) == 1 + READERS

        wait_for(ended_or_over, "the connections to end")
        _, peak = memory(broker.pid)
        assert peak - baseline <= bound, (
            f"peak {peak / MIB:.0f} MiB ({before / MIB:.0f} MiB before the resets) over a "
            f"baseline of {baseline / MIB:.0f} MiB: more than the budgets allow "
            f"({bound / MIB:.0f} MiB)"
        )
        assert sockets(broker.pid) == idle_sockets
        with RawClient(broker.address) as other:  # the broker still serves
            other.handshake()
            response = other.call(
                m.ProduceRequest((m.ProducePartition("other", 0, len(batch)),)), [batch]
            )
            assert isinstance(response, m.ProduceResponse)
            assert response.partitions[0].error_code == 0
