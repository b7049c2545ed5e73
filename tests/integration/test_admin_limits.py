"""Admin work never stalls other clients, names use what the files allow, and connections
beyond the broker's capacity are refused at accept (issue 13, points 4-6)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tidelog.client import AdminClient, Consumer, Producer
from tidelog.client.admin import NewTopic
from tidelog.server import Broker, BrokerConfig
from tidelog.server.log import OsFileSystem
from tidelog.testing import BrokerThread
from tidelog.wire import messages as m
from tidelog.wire.api import MAX_TOPIC_NAME_LENGTH
from tidelog.wire.errors import ErrorCode, InvalidTopicNameError

from .rawclient import RawClient

GATE_TIMEOUT_S = 180.0  # a bound against a hang (a loaded machine is slow), never a sync device
BIG = 10_000


class GatedFileSystem(OsFileSystem):
    """Holds the creation of one topic's directories half-way until the test opens the gate."""

    def __init__(self, topic: str, after: int) -> None:
        self._prefix = topic + "-"
        self._after = after
        self._made = 0
        self.held = threading.Event()
        self.gate = threading.Event()

    def mkdir(self, path: str) -> None:
        if Path(path).name.startswith(self._prefix):
            self._made += 1
            if self._made == self._after:
                self.held.set()
                self.gate.wait(GATE_TIMEOUT_S)
        super().mkdir(path)


async def wait_for(condition: threading.Event) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not condition.is_set():  # poll a condition, bounded by a deadline
        assert time.monotonic() < deadline, "the creation never reached the gate"
        await asyncio.sleep(0.01)


@pytest.mark.storage_bound
def test_produce_goes_on_while_a_10000_partition_create_is_outstanding(tmp_path: Path) -> None:
    fs = GatedFileSystem("big", after=BIG // 2)

    async def main() -> None:
        config = BrokerConfig(host="127.0.0.1", port=0, data_dir=tmp_path)
        async with (
            Broker(config, fs=fs) as broker,
            AdminClient(broker.address, request_timeout=GATE_TIMEOUT_S) as admin,
            Producer(broker.address, linger=0) as producer,
        ):
            await admin.create_topics([NewTopic("small", 1)])
            creating = asyncio.ensure_future(admin.create_topics([NewTopic("big", BIG)]))
            await wait_for(fs.held)
            for i in range(100):
                await producer.send_and_wait("small", b"%d" % i)
            assert not creating.done(), "the create finished before the produces: not a test"
            fs.gate.set()
            await creating
            described = await admin.describe_topics(["big"])
            assert len(described[0].partitions) == BIG

    try:
        asyncio.run(main())
    finally:
        fs.gate.set()


def test_one_request_auto_creates_at_most_the_cap(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(max_auto_create_per_request=3)
    names = tuple(f"auto-{i}" for i in range(8))
    with RawClient(broker.address) as raw:
        raw.handshake()
        response = raw.call(m.MetadataRequest(names, allow_auto_create=True))
    assert isinstance(response, m.MetadataResponse)
    codes = [t.error_code for t in response.topics]
    assert codes == [0, 0, 0] + [ErrorCode.POLICY_VIOLATION] * 5


@pytest.mark.storage_bound
def test_the_longest_legal_topic_name_works_end_to_end(tmp_path: Path) -> None:
    name = "n" * MAX_TOPIC_NAME_LENGTH

    async def main() -> None:
        config = BrokerConfig(host="127.0.0.1", port=0, data_dir=tmp_path)
        async with Broker(config) as broker, AdminClient(broker.address) as admin:
            await admin.create_topics([NewTopic(name, 2)])
            async with Producer(broker.address) as producer:
                await producer.send_and_wait(name, b"v", partition=1)
            await admin.alter_configs(name, {"retention_ms": "60000"})
            with pytest.raises(InvalidTopicNameError, match=str(MAX_TOPIC_NAME_LENGTH)):
                await admin.create_topic(name + "n", 1)
        async with Broker(config) as broker, AdminClient(broker.address) as admin:
            async with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([(name, 1)])
                record = await consumer.getone()
                assert record.value == b"v"
            await admin.delete_topics([name])
            assert name not in await admin.list_topics()

    asyncio.run(main())


def test_connections_beyond_max_connections_are_closed_at_accept(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(max_connections=2, handshake_timeout_s=600)
    with RawClient(broker.address) as first, RawClient(broker.address) as second:
        first.handshake()
        second.handshake()
        with RawClient(broker.address) as third:
            assert third.is_closed_by_peer()
        response = first.call(m.MetadataRequest(()))
        assert isinstance(response, m.MetadataResponse)
    assert broker.broker.refused_connections == 1
