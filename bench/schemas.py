"""Produce throughput to a topic validated by the schema registry, against an unvalidated one.

    python bench/schemas.py [--runs 3] [--records 200000]

One broker; an Avro schema is registered for ``<topic>-value`` (``tidelog.registry``, state in
``_schemas``). Each round produces ``--records`` Confluent-framed Avro records (magic byte 0, the
4-byte schema id, then a fastavro-encoded record of about 60 B, each record different) to three
one-partition topics in turn: ``schema_validation=none``, ``id`` (framing and a live id are
checked) and ``full`` (the payload is also decoded against the schema). acks=all, idempotent,
batch_size 256 KiB, linger 5 ms. Per mode: the median records/s and the broker's CPU per record.
Interleaved rounds make a noisy, shared machine hit every mode alike.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import time

import fastavro
import uvloop
from harness import broker_process, cpu_seconds, machine

from tidelog.client import AdminClient, NewTopic, Producer
from tidelog.registry.service import Registry, SchemaInput
from tidelog.registry.store import SchemaStore

MODES = ("none", "id", "full")
SCHEMA = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": "string"},
    ],
}


def payloads(schema_id: int, n: int) -> list[bytes]:
    """``n`` distinct framed records (encoded before timing: the bench measures the broker)."""
    parsed = fastavro.parse_schema(SCHEMA)
    prefix = b"\0" + struct.pack(">I", schema_id)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        record = {"id": i, "customer": f"c-{i % 977}", "amount": i * 0.01, "note": "x" * (i % 32)}
        fastavro.schemaless_writer(buf, parsed, record)
        out.append(prefix + buf.getvalue())
    return out


async def one_run(address: str, topic: str, values: list[bytes], pid: int) -> tuple[float, float]:
    async with Producer(
        address, acks="all", batch_size=256 * 1024, linger=0.005, max_request_size=4 << 20
    ) as producer:
        await producer.send_and_wait(topic, values[0])
        broker, wall = cpu_seconds(pid), time.perf_counter()
        for value in values:
            await producer.send(topic, value)
        await producer.flush()
        wall = time.perf_counter() - wall
        broker = cpu_seconds(pid) - broker
    return len(values) / wall, broker / len(values) * 1e6


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    with broker_process() as broker:
        store = SchemaStore(broker.address, request_timeout=30.0)
        try:
            values = []
            async with AdminClient(broker.address) as admin:
                for run in range(args.runs):
                    for mode in MODES:
                        topic = f"orders-{mode}-{run}"
                        version = await Registry(store).register(
                            f"{topic}-value", SchemaInput(json.dumps(SCHEMA))
                        )
                        values = values or payloads(version.id, args.records)
                        config = {"schema_validation": mode}
                        await admin.create_topics([NewTopic(topic, 1, -1, config)])
                        results[mode].append(
                            await one_run(broker.address, topic, values, broker.proc.pid)
                        )
        finally:
            await store.close()
    print(f"schema validation on produce, {args.runs} interleaved runs, {machine()}")
    base = statistics.median(r for r, _ in results["none"])
    for mode, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        runs = ", ".join(f"{r:,.0f}" for r, _ in rows)
        print(
            f"{mode:>5}: {rate:>10,.0f} records/s ({rate / base:.2f} of none), "
            f"broker {cpu:.2f} us/record; runs: {runs}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000)
    uvloop.run(main(parser.parse_args()))
