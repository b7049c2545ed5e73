"""Webhook deliveries per second to a local receiver, with 1 and 8 partitions.

A `tidelog serve` process (in-memory storage, its HTTP gateway on) delivers every record of a
topic to a receiver in this process (a Starlette app on uvicorn that answers 204 and counts).
The records are produced first, then a subscription from `earliest` is created and the clock
runs until the receiver has every record. Each partition is delivered in order, one record in
flight at a time (the delivery contract in docs/HTTP.md), so partitions are the parallelism.

    python bench/webhooks.py --records 5000 --partitions 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx
import uvicorn
from harness import free_port, machine, stop_process
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidelog.client import AdminClient, Producer

START_TIMEOUT_S = 60.0


class Receiver:
    """Counts deliveries; sets ``done`` once ``expected`` have arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.done = asyncio.Event()

    async def hook(self, request: Request) -> Response:
        await request.body()
        self.count += 1
        if self.count >= self.expected:
            self.done.set()
        return Response(status_code=204)


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{url}/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway at {url} was not ready")
            await asyncio.sleep(0.1)  # polling with a deadline


async def one_run(
    broker: str, gateway: str, hook: str, receiver: Receiver, partitions: int, records: int
) -> float:
    """Deliveries per second for ``records`` records over ``partitions`` partitions."""
    topic = f"hooks-{partitions}-{time.monotonic_ns()}"
    async with AdminClient(broker) as admin:
        await admin.create_topic(topic, partitions)
    value = os.urandom(50).hex().encode()  # 100 B of text
    async with Producer(broker, linger=0.005) as producer:
        for i in range(records):
            await producer.send(topic, value, key=b"%d" % i)
    receiver.count, receiver.expected = 0, records
    receiver.done.clear()
    name = topic.replace(".", "-")
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        start = time.perf_counter()
        response = await http.post(
            "/v1/subscriptions",
            json={"name": name, "url": hook, "topic": topic, "start": "earliest", "format": "text"},
        )
        response.raise_for_status()
        await asyncio.wait_for(receiver.done.wait(), 600)
        elapsed = time.perf_counter() - start
        await http.delete(f"/v1/subscriptions/{name}")
    return records / elapsed


def serve(port: int, http_port: int) -> subprocess.Popen[bytes]:
    """``tidelog serve`` with in-memory storage and its gateway on ``http_port``."""
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "tidelog"),
            "serve", "--storage", "memory", "--port", str(port), "--http-port", str(http_port),
            "--admin-port", "0", "--log-level", "WARNING",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    hook_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=hook_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    port, http_port = free_port(), free_port()
    proc = serve(port, http_port)
    try:
        gateway = f"http://127.0.0.1:{http_port}"
        await wait_ready(gateway)
        hook = f"http://127.0.0.1:{hook_port}/hook"
        print(f"webhook deliveries to a local receiver, {args.records:,} records ({machine()})")
        for partitions in args.partitions:
            rates = [
                await one_run(
                    f"127.0.0.1:{port}", gateway, hook, receiver, partitions, args.records
                )
                for _ in range(args.runs)
            ]
            rates.sort()
            print(
                f"  {partitions} partition(s): median {rates[len(rates) // 2]:,.0f} deliveries/s"
                f" ({', '.join(f'{r:,.0f}' for r in rates)})"
            )
    finally:
        stop_process(proc)
        server.should_exit = True
        await serving


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--partitions",
        type=lambda text: [int(p) for p in text.split(",")],
        default=[1, 8],
        help="comma separated, e.g. 1,8",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
