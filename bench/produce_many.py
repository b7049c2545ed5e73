"""Records/s of one producer process: ``send()`` against ``send_many()`` (issue 24, goal 1).

    python bench/produce_many.py [--records 500000] [--runs 3] [--partitions 1,16]
                                 [--acks leader,all] [--apis send,send_many] [--chunk 1000]

100 B records with distinct keys (``key-00000001``...) and distinct random values, generated
before the clock starts; keyed, so over 16 partitions the key hash spreads them. ``send()``
awaits each record's ``send()`` (its future is dropped); ``send_many()`` hands the records in
lists of ``--chunk``. Both end with ``flush()``. acks=all is the default producer: idempotent.
Per case, every run's records/s (the median and min-max), and the client's and the broker's
CPU per record, and the client's idle share (1 - its CPU time over the wall time: time it waited
for the broker). The cases of one run follow each other in one broker process and the runs are
interleaved (case 1, case 2, ..., case 1, case 2, ...), so a noisy machine hits them alike.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics

import uvloop
from harness import Meter, broker_process, machine, spread
from rich.console import Console
from rich.table import Table

from tidelog.client import AdminClient, Producer

SIZE = 100


def records(n: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` distinct keys and ``n`` distinct 100 B values (made before timing)."""
    blob = os.urandom(n * SIZE)
    values = [blob[i : i + SIZE] for i in range(0, n * SIZE, SIZE)]
    keys = [b"key-%08d" % i for i in range(n)]
    return keys, values


async def one_run(
    address: str,
    topic: str,
    api: str,
    acks: str,
    keys: list[bytes],
    values: list[bytes],
    chunk: int,
    broker_pid: int,
) -> tuple[float, float, float, float]:
    """records/s, client CPU us/record, broker CPU us/record, client idle share."""
    n = len(values)
    async with Producer(
        address, acks=acks, batch_size=256 * 1024, linger=0.005, max_request_size=4 << 20
    ) as producer:
        await producer.send_and_wait(topic, b"warm-up", key=b"warm-up")
        with Meter(broker_pid, n) as meter:
            if api == "send":
                send = producer.send
                for key, value in zip(keys, values, strict=True):
                    await send(topic, value, key)
            else:
                send_many = producer.send_many
                for at in range(0, n, chunk):
                    await send_many(topic, values[at : at + chunk], keys[at : at + chunk])
            await producer.flush()
    return meter.figures()


async def main(args: argparse.Namespace) -> None:
    keys, values = records(args.records)
    cases = list(itertools.product(args.apis, args.acks, args.partitions))
    results: dict[tuple[str, str, int], list[tuple[float, float, float, float]]] = {
        c: [] for c in cases
    }
    with broker_process() as broker:
        async with AdminClient(broker.address) as admin:
            for run in range(args.runs):
                for api, acks, partitions in cases:
                    topic = f"many-{api}-{acks}-{partitions}-{run}"
                    await admin.create_topic(topic, partitions)
                    results[api, acks, partitions].append(
                        await one_run(
                            broker.address,
                            topic,
                            api,
                            acks,
                            keys,
                            values,
                            args.chunk,
                            broker.proc.pid,
                        )
                    )
    table = Table(
        title=f"produce, one client process, {SIZE} B distinct keyed records, "
        f"{args.records:,} per run, {args.runs} interleaved runs ({machine()})"
    )
    for column in (
        "api",
        "acks",
        "partitions",
        "records/s: median (min-max)",
        "client us/rec",
        "broker us/rec",
        "client idle",
    ):
        table.add_column(column, justify="right")
    for (api, acks, partitions), rows in results.items():
        client = statistics.median(r[1] for r in rows)
        brk = statistics.median(r[2] for r in rows)
        idle = statistics.median(r[3] for r in rows)
        table.add_row(
            api,
            acks,
            str(partitions),
            spread([r[0] for r in rows]),
            f"{client:.2f}",
            f"{brk:.2f}",
            f"{idle:.0%}",
        )
    Console(width=160).print(table)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--partitions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16]
    )
    parser.add_argument("--acks", type=lambda s: s.split(","), default=["leader", "all"])
    parser.add_argument("--apis", type=lambda s: s.split(","), default=["send", "send_many"])
    parser.add_argument("--chunk", type=int, default=1000)
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
