"""Produce-to-consume latency at a fixed rate against two brokers, interleaved (issue 24, goal 2).

Runs ``drive_tidelog.latency`` (acks=leader, linger 0, one partition, a consumer long-polling)
at ``--rate`` records/s against a broker from this tree and, in turn, one from ``--broker-src``
(PYTHONPATH for the broker process alone), ``--runs`` times each, with Redis in the same run:
what a broker-side change does to the latency, on a noisy machine, with the client the same.
"""

from __future__ import annotations

import argparse
import os
import statistics

import drive_redis
import drive_tidelog
import uvloop
from harness import broker_process, machine
from peers import available, redis_server


async def main(args: argparse.Namespace) -> None:
    print(f"# latency at {args.rate:,} records/s, {args.seconds:g} s per run; {machine()}")
    figures: dict[str, list[dict[str, float]]] = {"this tree": [], "--broker-src": [], "redis": []}
    for _ in range(args.runs):
        for label, src in (("this tree", None), ("--broker-src", args.broker_src)):
            if label == "--broker-src" and not src:
                continue
            env = None if src is None else {**os.environ, "PYTHONPATH": src}
            with broker_process("--admin-port", "-1", env=env) as broker:
                rec = await drive_tidelog.latency(broker.address, args.rate, args.seconds)
            figures[label].append(rec.summary())
            print(f"{label:13} {rec.summary()}", flush=True)
        if available("redis") is None:
            with redis_server("everysec") as peer:
                rec = await drive_redis.latency(peer.port, args.rate, args.seconds)
            figures["redis"].append(rec.summary())
            print(f"{'redis':13} {rec.summary()}", flush=True)
    print("\nmedian (min-max) of the runs, ms:")
    for label, runs in figures.items():
        if runs:
            cells = []
            for q in ("p50", "p99", "p99.9"):
                values = [r[q] for r in runs]
                cells.append(
                    f"{q} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                )
            print(f"  {label:13} " + "  ".join(cells))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broker-src", metavar="DIR", help="PYTHONPATH of the other broker")
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
