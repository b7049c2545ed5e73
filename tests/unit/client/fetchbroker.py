"""A broker on loopback that speaks tidelog.wire and serves one partition from memory, with
scripted fetch faults: an error code (and where data resumes) for fetches at an offset, a
batch that fails its CRC on the way, and what a ``verify`` fetch finds. The real consumer
connects to it over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from tidelog.wire import FrameDecoder, decode_request, encode_response
from tidelog.wire import messages as m
from tidelog.wire.api import supported_versions
from tidelog.wire.records import RecordBatchBuilder, stamp_batch

TOPIC = "t"
BATCH = 10
"""Records per batch of the partition."""


@dataclass
class Fault:
    """Answer fetches at ``offset`` with ``code`` (``next_offset`` where data resumes) for the
    next ``times`` of them."""

    code: int
    next_offset: int = -1
    times: int = 1


@dataclass
class FetchBroker:
    """Offsets ``[start, end)`` of partition ``t``/0 in batches of :data:`BATCH` records."""

    start: int = 0
    end: int = 100
    faults: dict[int, Fault] = field(default_factory=dict)
    corrupt: dict[int, int] = field(default_factory=dict)
    """Offset -> how many plain fetches there get its batch with a flipped bit."""
    misnumbered: dict[int, int] = field(default_factory=dict)
    """Offset -> how many plain fetches there also get the next batch, its base offset
    stamped wrong (outside the CRC: only where it lies tells)."""
    on_verify: str = "intact"
    """What a fetch with ``verify`` finds: "intact", "damaged" (DAMAGED_RANGE) or "corrupt"."""
    fetched: list[tuple[int, bool]] = field(default_factory=list)
    """(offset, verify) of every partition fetch."""
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def batch_at(self, offset: int) -> bytes:
        base = offset - offset % BATCH
        builder = RecordBatchBuilder()
        for o in range(base, min(base + BATCH, self.end)):
            builder.append(f"value-{o}".encode(), key=str(o).encode(), timestamp=1_000 + o)
        data = bytearray(builder.build())
        stamp_batch(data, base)
        return bytes(data)

    def answer(self, request: m.Request) -> tuple[m.Response, bytes]:
        match request:
            case m.HandshakeRequest():
                return m.HandshakeResponse(
                    api_versions=supported_versions(), broker_id=1, cluster_id="fake"
                ), b""
            case m.MetadataRequest():
                partition = m.PartitionMetadata(0, leader=1, replicas=(1,), isr=(1,))
                return m.MetadataResponse(
                    brokers=(m.BrokerInfo(1, "127.0.0.1", self.port),),
                    controller_id=1,
                    cluster_id="fake",
                    topics=(m.TopicMetadata(TOPIC, partitions=(partition,)),),
                ), b""
            case m.ListOffsetsRequest():
                results = tuple(
                    m.ListOffsetsPartitionResult(
                        p.topic,
                        p.partition,
                        offset=self.start if p.timestamp == m.OffsetSpec.EARLIEST else self.end,
                    )
                    for p in request.partitions
                )
                return m.ListOffsetsResponse(results), b""
            case m.FetchRequest():
                return self._fetch(request)
        raise AssertionError(f"unexpected {request}")

    def _fetch(self, request: m.FetchRequest) -> tuple[m.Response, bytes]:
        (p,) = request.partitions
        self.fetched.append((p.offset, p.verify))
        fault = self.faults.get(p.offset)
        if fault is not None and fault.times > 0:
            fault.times -= 1
            return self._result(p, code=fault.code, next_offset=fault.next_offset), b""
        if p.offset >= self.end:
            return self._result(p), b""
        data = self.batch_at(p.offset)
        if p.verify and self.on_verify == "damaged":
            base = p.offset - p.offset % BATCH
            return self._result(p, code=60, next_offset=base + BATCH), b""
        wrong = self.misnumbered.get(p.offset, 0)
        if wrong and not p.verify and p.offset + BATCH < self.end:
            self.misnumbered[p.offset] = wrong - 1
            following = bytearray(self.batch_at(p.offset + BATCH))
            stamp_batch(following, p.offset + BATCH + 1000)
            data += bytes(following)
        flips = self.corrupt.get(p.offset, 0)
        if (flips and not p.verify) or (p.verify and self.on_verify == "corrupt"):
            self.corrupt[p.offset] = max(flips - 1, 0)
            damaged = bytearray(data)
            damaged[-3] ^= 0x04
            data = bytes(damaged)
        return self._result(p, size=len(data)), data

    def _result(
        self, p: m.FetchPartition, *, code: int = 0, next_offset: int = -1, size: int = 0
    ) -> m.FetchResponse:
        return m.FetchResponse(
            (
                m.FetchPartitionResult(
                    p.topic,
                    p.partition,
                    code,
                    f"scripted error {code}" if code else None,
                    high_watermark=self.end,
                    last_stable_offset=self.end,
                    log_start_offset=self.start,
                    size=size,
                    next_offset=next_offset,
                ),
            )
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        with suppress(ConnectionError):
            while chunk := await reader.read(65536):
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    response, data = self.answer(decode_request(frame))
                    writer.writelines(
                        encode_response(response, frame.header, data=[data] if data else [])
                    )
                await writer.drain()
        writer.close()


@asynccontextmanager
async def serving(broker: FetchBroker) -> AsyncIterator[FetchBroker]:
    server = await asyncio.start_server(broker._serve, "127.0.0.1", 0)
    broker.port = server.sockets[0].getsockname()[1]
    try:
        yield broker
    finally:
        server.close()
        await server.wait_closed()
