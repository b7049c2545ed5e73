"""The gateway's connections to the brokers: one admin client and one producer per ack level,
shared by every request, started on first use (so the gateway starts, and ``/ready`` says
503, while the brokers are down), and the one-shot partition fetch of ``GET .../records``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from tidelog.client import AdminClient, Cluster, Producer, TopicPartition
from tidelog.client.errors import broker_error
from tidelog.wire import messages as m
from tidelog.wire.api import split_data
from tidelog.wire.errors import ErrorCode
from tidelog.wire.records import Record, iter_batches

from .errors import GatewayError
from .settings import GatewaySettings

AckLevel = Literal["none", "leader", "all"]
CLIENT_ID: Final = "tidelog-gateway"


@dataclass(frozen=True, slots=True)
class PartitionRead:
    """What one fetch of one partition returned: whole records from the offset asked for."""

    records: list[Record]
    high_watermark: int
    log_start_offset: int


class Clients:
    """The shared clients. Methods raise the client's typed errors; :meth:`close` closes all."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._admin: AdminClient | None = None
        self._cluster: Cluster | None = None
        self._producers: dict[str, Producer] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def _new_cluster(self) -> Cluster:
        s = self.settings
        return Cluster(
            s.bootstrap,
            client_id=CLIENT_ID,
            connect_timeout=s.request_timeout_s,
            request_timeout=s.request_timeout_s,
        )

    async def admin(self) -> AdminClient:
        """The shared admin client, (re)started if needed."""
        if self._admin is not None:
            return self._admin
        async with self._lock:
            if self._admin is None:
                self._check_open()
                cluster = self._new_cluster()
                admin = AdminClient(
                    cluster=cluster, request_timeout=self.settings.request_timeout_s
                )
                try:
                    await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin, self._cluster = admin, cluster
        return self._admin

    async def producer(self, acks: AckLevel) -> Producer:
        """The shared producer of this ack level (``all`` is idempotent)."""
        producer = self._producers.get(acks)
        if producer is not None:
            return producer
        async with self._lock:
            producer = self._producers.get(acks)
            if producer is None:
                self._check_open()
                s = self.settings
                producer = Producer(
                    s.bootstrap,
                    client_id=f"{CLIENT_ID}-{acks}",
                    acks=acks,
                    linger=0.0,
                    request_timeout=s.request_timeout_s,
                    connect_timeout=s.request_timeout_s,
                    delivery_timeout=max(s.request_timeout_s * 2, 1.0),
                    max_block=s.request_timeout_s,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.close()
                    raise
                self._producers[acks] = producer
        return producer

    async def fetch(
        self, tp: TopicPartition, offset: int, max_bytes: int, wait_ms: int
    ) -> PartitionRead:
        """Records of ``tp`` from ``offset`` (at least one whole batch if there is one, else
        up to ``max_bytes``), waiting up to ``wait_ms`` for some to arrive."""
        await self.admin()
        cluster = self._cluster
        assert cluster is not None
        parts = await cluster.partitions_for(tp.topic)
        if tp.partition not in parts:
            raise broker_error(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, where=f"{tp.topic}[{tp.partition}]"
            )
        leader = cluster.metadata.leader_for(tp)
        if leader is None:
            cluster.request_refresh()
            raise broker_error(ErrorCode.LEADER_NOT_AVAILABLE, where=f"{tp.topic}[{tp.partition}]")
        conn = await cluster.connection(leader)
        request = m.FetchRequest(
            (m.FetchPartition(tp.topic, tp.partition, offset, max_bytes),),
            max_wait_ms=wait_ms,
            min_bytes=1,
            max_bytes=max_bytes,
        )
        response, data = await conn.request(
            request, timeout=self.settings.request_timeout_s + wait_ms / 1000
        )
        if not isinstance(response, m.FetchResponse) or len(response.partitions) != 1:
            raise GatewayError(502, "bad_broker_answer", "the broker answered a fetch oddly")
        result = response.partitions[0]
        if result.error_code:
            if result.error_code in (ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE):
                cluster.request_refresh()
            raise broker_error(
                result.error_code, result.error_message, where=f"{tp.topic}[{tp.partition}]"
            )
        (piece,) = split_data([result.size], data)
        records: list[Record] = []
        for batch in iter_batches(piece, verify_crc=True):
            if batch.next_offset <= offset:
                continue
            rows = batch.records()
            skip = offset - batch.base_offset
            records.extend(rows[skip:] if skip > 0 else rows)
        return PartitionRead(records, result.high_watermark, result.log_start_offset)

    async def ready(self) -> int:
        """The number of brokers the cluster has (raises if it cannot be reached)."""
        admin = await self.admin()
        return len((await admin.describe_cluster()).brokers)

    def _check_open(self) -> None:
        if self._closed:
            raise GatewayError(503, "shutting_down", "the gateway is shutting down")

    async def close(self) -> None:
        self._closed = True
        closing: Sequence[Producer | AdminClient] = [
            *self._producers.values(),
            *([self._admin] if self._admin is not None else []),
        ]
        self._producers.clear()
        self._admin = None
        await asyncio.gather(*(c.close() for c in closing), return_exceptions=True)
