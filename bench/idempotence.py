"""Idempotence on against off, interleaved in one broker process, with where the time goes.

    python bench/idempotence.py [--runs 5] [--records 600000] [--size 100] [--variants on,off]
                                [--pin]

Each round produces ``--records`` records with idempotence on, then off (acks=all, batch_size
256 KiB, linger 5 ms, max_request_size 4 MiB, as bench/produce.py's throughput run), each to a
new one-partition topic. Per variant: the median records/s over the rounds, every round's
figure, the client's and the broker's CPU per record, and the client's idle share (1 - its CPU
time over the wall time: time it waited for the broker); then each round's on / off ratio and
their median and range. Interleaving makes a noisy, shared machine hit both variants alike, and
a ratio per round compares runs a few seconds apart. ``--variants on`` (or ``off``) runs one
side only, to profile it (``py-spy record --subprocesses -- python bench/idempotence.py ...``).
``--pin`` puts the client and the broker on a CPU each (:func:`harness.pin_apart`).
"""

from __future__ import annotations

import argparse
import os
import statistics

import uvloop
from harness import Meter, broker_process, machine, pin_apart

from tidelog.client import AdminClient, Producer

VARIANTS = {"on": True, "off": False}


async def one_run(
    address: str, topic: str, n: int, size: int, idempotence: bool, broker_pid: int
) -> tuple[float, float, float, float]:
    """records/s, client CPU us/record, broker CPU us/record, client idle share."""
    value = os.urandom(size)
    async with Producer(
        address,
        acks="all",
        batch_size=256 * 1024,
        linger=0.005,
        max_request_size=4 << 20,
        enable_idempotence=idempotence,
    ) as producer:
        await producer.send_and_wait(topic, value)
        send = producer.send
        with Meter(broker_pid, n) as meter:
            for _ in range(n):
                await send(topic, value)
            await producer.flush()
    return meter.figures()


async def main(args: argparse.Namespace) -> None:
    variants = {name: VARIANTS[name] for name in args.variants}
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in variants}
    with broker_process() as broker:
        pinned = args.pin and pin_apart(broker.proc.pid)
        async with AdminClient(broker.address) as admin:
            for run in range(args.runs):
                for name, idempotence in variants.items():
                    topic = f"idem-{name}-{run}"
                    await admin.create_topic(topic, 1)
                    results[name].append(
                        await one_run(
                            broker.address,
                            topic,
                            args.records,
                            args.size,
                            idempotence,
                            broker.proc.pid,
                        )
                    )
    where = ", client and broker on a CPU each" if pinned else ""
    print(f"idempotence on vs off, {args.runs} interleaved runs{where}, {machine()}")
    for name, rows in results.items():
        rate, client, brk, idle = (statistics.median(column) for column in zip(*rows, strict=True))
        runs = ", ".join(f"{r[0] / 1000:,.0f}k" for r in rows)
        print(
            f"{name:>3}: median {rate:,.0f} records/s ({runs}); client {client:.2f} us/record, "
            f"broker {brk:.2f} us/record, client idle {idle:.0%}"
        )
    if len(results) < 2:
        return
    on = statistics.median(r[0] for r in results["on"])
    off = statistics.median(r[0] for r in results["off"])
    ratios = [a[0] / b[0] for a, b in zip(results["on"], results["off"], strict=True)]
    print(
        f"on / off = {on / off:.2f} (medians); per round {', '.join(f'{r:.2f}' for r in ratios)}: "
        f"median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument(
        "--variants", type=lambda s: s.split(","), default=list(VARIANTS), help="on,off"
    )
    parser.add_argument(
        "--pin", action="store_true", help="the client on one CPU, the broker on another"
    )
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
