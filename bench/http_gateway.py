"""The HTTP gateway against the Python client, side by side in one run: produce and consume
throughput of 100 B records through the same broker.

    python bench/http_gateway.py [--records 200000] [--size 100] [--runs 3] [--batch 1000]
                                 [--concurrency 4] [--acks all] [--gateway beside|alone]

One broker: ``tidelog serve`` with its data in a temporary dir and the gateway beside it (in
the broker's process, the default deployment), or with ``--gateway alone`` a ``tidelog
gateway`` process in front of it. Four ways to move ``--records`` records of ``--size`` bytes,
each run once per round, the rounds interleaved so a slow spell of the machine hits every way
alike; each figure is the median of ``--runs`` rounds (min-max):

* produce, Python client: one ``Producer`` (batch_size 256 KiB, linger 5 ms) sends every record
  to a new topic, then flushes (``drive_tidelog.produce``, as in the side-by-side bench);
* produce, HTTP batches: ``POST /v1/topics/{topic}/records`` with ``--batch`` records per request
  (format ``text``: a value of ``--size`` characters is ``--size`` bytes in the log),
  ``--concurrency`` requests in flight on keep-alive connections (httpx);
* consume, Python client: a ``Consumer`` reads the filled topic from the beginning
  (``getmany``; bench/consume.py's reader); the topic is filled through the gateway first;
* consume, WebSocket: one ``/v1/ws`` subscription from ``earliest`` reads the same topic
  (``records`` frames of up to 500 records), checking offsets are consecutive.

Both produce ways use the same ``acks`` (``all``: the gateway's default, an idempotent
producer). The machine's cores are shared by the broker, the gateway and this client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import consume as consume_bench
import drive_tidelog
import httpx
import msgspec
import uvloop
import websockets
from harness import machine, spread, stop_process
from rich.console import Console
from rich.table import Table

from tidelog.client import AdminClient

TIDELOG = Path(sys.executable).parent / "tidelog"
START_TIMEOUT_S = 60.0
DEADLINE_S = 300.0


@contextlib.contextmanager
def tidelog_serve(alone: bool) -> Iterator[tuple[str, str]]:
    """``(broker address, gateway URL)``: ``tidelog serve`` (and ``tidelog gateway`` when
    ``alone``) on ephemeral loopback ports, read from the banners; stopped by PID."""
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-http-") as data_dir:
        serve = ["serve", "--port", "0", "--data-dir", data_dir, "--log-level", "WARNING"]
        procs = [Banner([*serve, *(["--no-http"] if alone else ["--http-port", "0"])])]
        try:
            address = procs[0].wait_for(r"listening on (\S+:\d+)")
            if alone:
                procs.append(Banner(["gateway", "--broker", address, "--http-port", "0"]))
                url = procs[1].wait_for(r"listening on (http://\S+)")
            else:
                url = procs[0].wait_for(r"^\s*http\s+(http://\S+)")
            yield address, url
        finally:
            for banner in reversed(procs):
                stop_process(banner.proc, grace=30)


class Banner:
    """A ``tidelog`` process whose stderr lines are kept, to find what its banner says."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [str(TIDELOG), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        self.proc.stderr.close()

    def wait_for(self, pattern: str) -> str:
        """The first match of ``pattern`` in a line of the banner."""

        def found() -> re.Match[str] | None:
            return next(filter(None, (re.search(pattern, line) for line in self.lines)), None)

        with self.changed:
            if not self.changed.wait_for(found, START_TIMEOUT_S):
                raise RuntimeError(f"no {pattern!r} from {self.proc.args}: {self.lines}")
            match = found()
            assert match is not None
            return match.group(1)


async def produce_http(url: str, topic: str, n: int, size: int, acks: str, args: Args) -> float:
    record = {"value": "x" * size}
    body = msgspec.json.encode({"format": "text", "records": [record] * args.batch})
    requests = n // args.batch
    headers = {"content-type": "application/json"}
    path = f"/v1/topics/{topic}/records?acks={acks}"
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=DEADLINE_S) as http:
        (await http.post(path, content=body, headers=headers)).raise_for_status()  # warm
        left = requests

        async def sender() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = await http.post(path, content=body, headers=headers)
                answer.raise_for_status()
                if answer.json()["failed"]:
                    raise RuntimeError(answer.text[:500])

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(args.concurrency)))
        return requests * args.batch / (time.perf_counter() - start)


async def consume_ws(url: str, topic: str, n: int) -> float:
    decode = msgspec.json.Decoder().decode
    subscribe = {
        "op": "subscribe",
        "id": "s",
        "topics": [topic],
        "start": "earliest",
        "format": "text",
    }
    async with websockets.connect(url.replace("http", "ws", 1) + "/v1/ws", max_size=None) as ws:
        start = time.perf_counter()
        await ws.send(msgspec.json.encode(subscribe).decode())
        got = expected = 0
        while got < n:
            frame = decode(await ws.recv())
            if frame["type"] == "error":
                raise RuntimeError(frame)
            if frame["type"] != "records":
                continue
            records = frame["records"]
            if records[0]["offset"] != expected:
                raise AssertionError(f"offset {records[0]['offset']}, expected {expected}")
            expected = records[-1]["offset"] + 1
            got += len(records)
        return n / (time.perf_counter() - start)


async def _first(run: Awaitable[tuple[float, object, object]]) -> float:
    return (await run)[0]


class Args(argparse.Namespace):
    records: int
    size: int
    runs: int
    batch: int
    concurrency: int
    acks: str
    gateway: str


async def main(args: Args) -> None:
    n, size = args.records, args.size
    with tidelog_serve(args.gateway == "alone") as (address, url):
        async with AdminClient(address) as admin:
            for topic in ("filled", "http"):
                await admin.create_topic(topic, 1)
        # filled through the gateway: text values, which a WebSocket streams as they are
        await produce_http(url, "filled", n, size, "leader", args)
        ways: dict[str, Callable[[], Awaitable[float]]] = {
            "produce: Python client": lambda: drive_tidelog.produce(address, n, size, args.acks),
            "produce: HTTP batches": lambda: produce_http(url, "http", n, size, args.acks, args),
            "consume: Python client": lambda: _first(
                consume_bench.consume(address, "filled", n, "getmany")
            ),
            "consume: WebSocket": lambda: consume_ws(url, "filled", n),
        }
        rates: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.runs):
            for way, run in ways.items():
                rates[way].append(await run())
    title = (
        f"HTTP gateway ({args.gateway}) and Python client, {n:,} records of {size} B, "
        f"acks={args.acks}, batches of {args.batch} x {args.concurrency} in flight ({machine()})"
    )
    table = Table(title=title)
    for column in ("way", "records/s", "MB/s", "vs Python client"):
        table.add_column(column, justify="right")
    for way, values in rates.items():
        peer = rates[way.split(":")[0] + ": Python client"]
        ratio = statistics.median(values) / statistics.median(peer)
        table.add_row(
            way, spread(values), spread([v * size / 1e6 for v in values], ",.1f"), f"{ratio:.2f}x"
        )
    Console(width=160).print(table)


def parse() -> Args:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="records per HTTP request")
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP requests in flight")
    parser.add_argument("--acks", choices=["none", "leader", "all"], default="all")
    parser.add_argument("--gateway", choices=["beside", "alone"], default="beside")
    return parser.parse_args(namespace=Args())


if __name__ == "__main__":
    uvloop.run(main(parse()))
