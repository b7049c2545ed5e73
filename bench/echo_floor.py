"""The floor under bench/small_requests.py: what a Python asyncio server on uvloop costs per
request when it does nothing but echo each message back.

Closed-loop clients (one per connection, 150-byte messages, the next sent when the echo is
back) against a server subprocess that is an ``asyncio.Protocol`` writing back what it receives
(``--server protocol``) or an ``asyncio.start_server`` stream loop (``--server streams``);
requests/s and the server's CPU microseconds per request (utime + stime from /proc). Whatever
tidelog's broker spends above this is its own work: decoding, the log, the response.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

import uvloop
from harness import machine
from small_requests import cpu_seconds

WARMUP_S = 1.0
SERVER = r"""
import asyncio, sys, uvloop

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

async def stream(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()

async def main():
    if sys.argv[1] == "protocol":
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(stream, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def start(kind: str) -> tuple[subprocess.Popen[str], int]:
    """The echo server subprocess and its port."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, int(server.stdout.readline())


async def run(kind: str, connections: int, seconds: float, size: int) -> tuple[float, float]:
    server, port = start(kind)
    try:
        pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
        message = bytes(size)
        done = [0]
        stop = False

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while not stop:
                writer.write(message)
                await reader.readexactly(size)
                done[0] += 1

        tasks = [asyncio.create_task(client(r, w)) for r, w in pairs]
        await asyncio.sleep(WARMUP_S)  # a warm-up of fixed length, not a synchronisation
        n0, c0 = done[0], sum(cpu_seconds(server.pid))
        await asyncio.sleep(seconds)  # the measured window
        n1, c1 = done[0], sum(cpu_seconds(server.pid))
        stop = True
        await asyncio.gather(*tasks)
        for _, writer in pairs:
            writer.close()
        return (n1 - n0) / seconds, (c1 - c0) / max(n1 - n0, 1) * 1e6
    finally:
        server.kill()  # by PID: the process this function started
        server.wait()


async def main(args: argparse.Namespace) -> None:
    print(f"# echo floor, {args.seconds:g} s windows, {args.size} B messages; {machine()}")
    print("| server | connections | requests/s | server CPU us/req |")
    print("|---|---|---|---|")
    for kind in ("protocol", "streams"):
        for n in (int(c) for c in args.connections.split(",")):
            rate, us = await run(kind, n, args.seconds, args.size)
            print(f"| {kind} | {n} | {rate:,.0f} | {us:.1f} |", flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", default="1,64")
    parser.add_argument("--size", type=int, default=150)
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
