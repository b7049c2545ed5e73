"""Internal topics (``__consumer_offsets``) as clients see them: hidden from listings unless
asked, described on request, never created, deleted or produced to by a client."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidelog.client import AdminClient, Producer
from tidelog.server.groups import OFFSETS_TOPIC
from tidelog.wire.errors import (
    InvalidTopicNameError,
    PolicyViolationError,
    UnknownTopicOrPartitionError,
)

from .helpers import broker, create_topic, run


def test_internal_topics_are_hidden_unless_asked_and_described(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path, offsets_topic_partitions=3) as b:
            await create_topic(b.address, "a")
            async with AdminClient(b.address) as admin:
                assert await admin.list_topics() == ["a"]
                assert await admin.list_topics(internal=True) == [OFFSETS_TOPIC, "a"]
                assert [t.name for t in await admin.describe_topics()] == ["a"]
                (offsets,) = await admin.describe_topics([OFFSETS_TOPIC])
                assert offsets.internal and len(offsets.partitions) == 3
                (a,) = await admin.describe_topics(["a"])
                assert not a.internal

    run(main())


def test_clients_cannot_create_delete_or_produce_to_internal_topics(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            with pytest.raises(PolicyViolationError, match="internal topic"):
                await admin.delete_topics([OFFSETS_TOPIC])
            for name in (OFFSETS_TOPIC, "__mine"):
                with pytest.raises(InvalidTopicNameError, match="reserved"):
                    await admin.create_topic(name)
            async with Producer(b.address, retries=0) as producer:
                with pytest.raises(PolicyViolationError, match="cannot produce to it"):
                    await producer.send_and_wait(OFFSETS_TOPIC, b"x", partition=0)
                with pytest.raises((InvalidTopicNameError, UnknownTopicOrPartitionError)):
                    await producer.send_and_wait("__auto", b"x")  # not auto-created either
            assert "__auto" not in await admin.list_topics(internal=True)

    run(main())
