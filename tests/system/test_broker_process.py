"""The broker as a process: graceful shutdown on SIGTERM during traffic."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.integration.rawclient import RawClient
from tidelog.wire import messages as m
from tidelog.wire.errors import TidelogError
from tidelog.wire.records import build_batch, read_records

from .procs import BrokerProcess

DEADLINE_S = 60.0


def produce_until_stopped(
    address: str, acked: list[int], stop: threading.Event, errors: list[BaseException]
) -> None:
    """acks=leader produce in a loop; records each acknowledged base offset. The broker going
    away ends it; anything else is recorded for the test to fail on."""
    batch = build_batch([(b"k", b"v" * 100)] * 10)
    request = m.ProduceRequest((m.ProducePartition("events", 0, len(batch)),), acks=1)
    try:
        with RawClient(address) as client:
            client.handshake()
            while not stop.is_set():
                response = client.call(request, [batch])
                if not isinstance(response, m.ProduceResponse):
                    raise AssertionError(f"unexpected response {response!r}")
                result = response.partitions[0]
                if result.error_code:
                    return  # e.g. BROKER_SHUTTING_DOWN
                acked.append(result.base_offset)
    except (OSError, TidelogError):
        return  # the broker went away: expected at shutdown
    except BaseException as exc:
        errors.append(exc)


def fetch_everything(address: str) -> int:
    with RawClient(address) as client:
        client.handshake()
        offset = 0
        while True:
            request = m.FetchRequest((m.FetchPartition("events", 0, offset),), max_wait_ms=0)
            response, data = client.call_with_data(request)
            assert isinstance(response, m.FetchResponse)
            records = read_records(data)
            if not records:
                return offset
            assert records[0].offset <= offset
            offset = records[-1].offset + 1


def test_sigterm_during_traffic_shuts_down_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acked: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with BrokerProcess(data_dir) as broker:
        producer = threading.Thread(
            target=produce_until_stopped, args=(broker.address, acked, stop, errors)
        )
        producer.start()
        deadline = time.monotonic() + DEADLINE_S
        while len(acked) < 50:
            assert time.monotonic() < deadline, "no traffic reached the broker"
            time.sleep(0.01)  # polling a condition with a deadline
        assert broker.terminate() == 0
        stop.set()
        producer.join(DEADLINE_S)
        assert not producer.is_alive()
        assert not errors, errors
        assert (data_dir / ".tidelog_clean_shutdown").exists()
        assert "stopped cleanly" in "".join(broker.stderr_lines)

    with BrokerProcess(data_dir) as again:
        end = fetch_everything(again.address)
        # Every acknowledged batch (10 records each) is there.
        assert end >= acked[-1] + 10
        assert not any("recovered" in line for line in again.stderr_lines), again.stderr_lines
