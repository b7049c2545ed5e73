"""Graceful shutdown in-process: requests in flight are answered, late ones are not read,
and nothing is left half-done."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tidelog.server import Broker, BrokerConfig
from tidelog.wire import messages as m
from tidelog.wire.api import decode_response, encode_request, supported_versions
from tidelog.wire.frame import FrameDecoder
from tidelog.wire.records import build_batch

DEADLINE_S = 30.0


async def read_response(reader: asyncio.StreamReader, decoder: FrameDecoder) -> m.Response | None:
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return decode_response(frame)
        try:
            chunk = await reader.read(65536)
        except ConnectionResetError:  # closed with our late request unread: a reset
            return None
        if not chunk:
            return None
        decoder.feed(chunk)


@pytest.mark.storage_bound  # it checks the clean-shutdown marker on disk
def test_stop_answers_in_flight_requests_and_ignores_late_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        broker = Broker(BrokerConfig(port=0, data_dir=tmp_path))
        await broker.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        decoder = FrameDecoder()
        hello = m.HandshakeRequest(api_versions=supported_versions())
        writer.writelines(encode_request(hello, 1))
        assert isinstance(await read_response(reader, decoder), m.HandshakeResponse)
        batch = build_batch([(None, b"x")])
        produce = m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),), acks=1)
        writer.writelines(encode_request(produce, 2, data=[batch]))
        assert isinstance(await read_response(reader, decoder), m.ProduceResponse)
        # A long-polling fetch at the end of the log is in flight when the broker stops.
        fetch = m.FetchRequest((m.FetchPartition("t", 0, 1),), max_wait_ms=60_000)
        writer.writelines(encode_request(fetch, 3))
        await writer.drain()
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while broker.core.notifier.waiting == 0:
            assert asyncio.get_running_loop().time() < deadline, "the fetch never parked"
            await asyncio.sleep(0.001)
        stopping = asyncio.ensure_future(broker.stop())
        await asyncio.sleep(0)  # stop() has begun: the broker no longer reads
        writer.writelines(encode_request(m.MetadataRequest(), 4))  # a late request
        answer = await asyncio.wait_for(read_response(reader, decoder), DEADLINE_S)
        assert isinstance(answer, m.FetchResponse)
        assert answer.partitions[0].error_code == 0
        # The late request is never answered: the connection closes after the fetch.
        assert await asyncio.wait_for(read_response(reader, decoder), DEADLINE_S) is None
        await asyncio.wait_for(stopping, DEADLINE_S)
        writer.close()
        assert (tmp_path / ".tidelog_clean_shutdown").exists()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
