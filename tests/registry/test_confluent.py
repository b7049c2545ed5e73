"""The acceptance test of the issue: confluent-kafka's own SchemaRegistryClient and its Avro
and JSON Schema serializers, unchanged, against tidelog's registry; the bytes they make are
validated by the broker on produce (binary protocol and HTTP) and read back by their
deserializers."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition
from tidelog.wire.errors import InvalidRecordError

ORDER_AVRO = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "fields": [{"name": "id", "type": "long"}, {"name": "item", "type": "string"}],
    }
)
ORDER_JSON = json.dumps(
    {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "item": {"type": "string"}},
        "required": ["id", "item"],
    }
)


@pytest.fixture
def client(registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry_url}) as c:
        yield c


def create_topic(address: str, name: str, mode: str) -> None:
    async def main() -> None:
        async with AdminClient(address) as admin:
            await admin.create_topic(name, 1, configs={"schema_validation": mode})

    asyncio.run(main())


def produce(address: str, topic: str, value: bytes) -> int:
    async def main() -> int:
        async with Producer(address, linger=0) as producer:
            return (await producer.send_and_wait(topic, value)).offset

    return asyncio.run(main())


def consume(address: str, topic: str, count: int) -> list[bytes]:
    async def main() -> list[bytes]:
        async with Consumer(address, auto_offset_reset="earliest") as consumer:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            out: list[bytes] = []
            while len(out) < count:
                batch = await consumer.getmany(timeout=5)
                out += [bytes(r.value) for r in batch.get(tp, []) if r.value is not None]
            return out

    return asyncio.run(main())


def test_client_calls(client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema("orders-value", Schema(ORDER_AVRO, "AVRO"))
    assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(ORDER_AVRO)
    found = client.lookup_schema("orders-value", Schema(ORDER_AVRO, "AVRO"))
    assert (found.schema_id, found.version) == (schema_id, 1)
    assert client.get_latest_version("orders-value").schema_id == schema_id
    assert client.get_subjects() == ["orders-value"]
    assert client.get_versions("orders-value") == [1]
    breaking = json.dumps(
        {"type": "record", "name": "Order", "fields": [{"name": "n", "type": "int"}]}
    )
    assert not client.test_compatibility("orders-value", Schema(breaking, "AVRO"))
    assert client.set_compatibility("orders-value", "FULL") == {"compatibility": "FULL"}
    assert client.get_compatibility("orders-value") == "FULL"
    assert client.delete_subject("orders-value") == [1]
    assert client.get_subjects() == []


@pytest.mark.parametrize("mode", ["id", "full"])
def test_avro_serializer_through_the_broker(
    client: SchemaRegistryClient, tidelog_broker: Any, mode: str
) -> None:
    topic = f"avro-{mode}"
    create_topic(tidelog_broker.address, topic, mode)
    ctx = SerializationContext(topic, MessageField.VALUE)
    serialize = AvroSerializer(client, ORDER_AVRO)
    good = serialize({"id": 7, "item": "tea"}, ctx)
    assert good is not None
    assert produce(tidelog_broker.address, topic, good) == 0
    with pytest.raises(InvalidRecordError, match="no schema id"):
        produce(tidelog_broker.address, topic, b"plain bytes")
    with pytest.raises(InvalidRecordError, match="not a live version"):
        produce(tidelog_broker.address, topic, b"\x00\x00\x00\x03\xe7" + good[5:])
    truncated = good[:-2]
    if mode == "full":
        with pytest.raises(InvalidRecordError, match="does not fit schema id"):
            produce(tidelog_broker.address, topic, truncated)
    else:  # id mode reads the framing only
        assert produce(tidelog_broker.address, topic, truncated) == 1
    (stored, *_) = consume(tidelog_broker.address, topic, 1)
    assert AvroDeserializer(client)(stored, ctx) == {"id": 7, "item": "tea"}


def test_json_serializer_through_the_broker_and_http(
    client: SchemaRegistryClient, tidelog_broker: Any, tidelog_gateway: str
) -> None:
    topic = "json-full"
    create_topic(tidelog_broker.address, topic, "full")
    ctx = SerializationContext(topic, MessageField.VALUE)
    serialize = JSONSerializer(ORDER_JSON, client)
    good = serialize({"id": 1, "item": "cake"}, ctx)
    assert good is not None
    assert produce(tidelog_broker.address, topic, good) == 0
    with pytest.raises(InvalidRecordError, match="'item' is a required property"):
        produce(tidelog_broker.address, topic, good[:5] + b'{"id": 2}')
    with httpx.Client(base_url=tidelog_gateway, timeout=30) as http:  # the HTTP produce path
        body = {
            "format": "base64",
            "records": [
                {"value": base64.b64encode(good).decode()},
                {"value": base64.b64encode(good[:5] + b'{"id": "x"}').decode()},
            ],
        }
        results = http.post(f"/v1/topics/{topic}/records", json=body).json()["results"]
        # one batch: refused whole, the message names the bad record
        assert [r["error_code"] for r in results] == ["invalid_record"] * 2
        assert "record 1 of batch 0 refused by schema_validation=full" in results[1]["message"]
        body["records"] = body["records"][:1]
        ok = http.post(f"/v1/topics/{topic}/records", json=body).json()["results"]
        assert ok[0]["error_code"] is None
        # a plain JSON value is checked against the subject's latest JSON Schema
        plain = http.post(
            f"/v1/topics/{topic}/records", json={"records": [{"value": {"id": 3, "item": "pie"}}]}
        ).json()["results"]
        assert plain[0]["error_code"] is None
    values = consume(tidelog_broker.address, topic, 3)
    deserialize = JSONDeserializer(ORDER_JSON, schema_registry_client=client)
    assert [deserialize(v, ctx) for v in values[:2]] == [{"id": 1, "item": "cake"}] * 2
    assert json.loads(values[2]) == {"id": 3, "item": "pie"}
