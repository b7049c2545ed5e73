"""``tidelog produce`` is an idempotent producer by default (acks=all); ``--acks leader`` or
``--acks none`` turn idempotence off. Seen in the batches the broker stored."""

from __future__ import annotations

from typing import Any

import pytest

from tidelog.server import Broker
from tidelog.server.log import TopicPartition
from tidelog.testing import BrokerThread
from tidelog.wire.records import iter_batches

from .helpers import cli
from .test_produce_consume import create


def stored_producer_ids(broker: BrokerThread, topic: str) -> list[int]:
    def read(b: Broker) -> bytes:
        return bytes(b.core.manager.get_log(TopicPartition(topic, 0)).read(0, 1 << 20).records)

    return [batch.producer_id for batch in iter_batches(broker.call(read))]


@pytest.mark.parametrize(
    ("options", "idempotent"),
    [((), True), (("--acks", "all"), True), (("--acks", "leader"), False)],
)
def test_produce_is_idempotent_unless_acks_say_otherwise(
    tidelog_broker: BrokerThread, options: Any, idempotent: bool
) -> None:
    address = tidelog_broker.address
    create(address, "t")
    result = cli(address, "produce", "t", "a", "b", *options)
    assert result.exit_code == 0, result.output
    ids = stored_producer_ids(tidelog_broker, "t")
    assert ids
    assert all((pid >= 0) == idempotent for pid in ids), ids
