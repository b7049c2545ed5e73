"""Cheap small requests (issue 24, goal 3): broker CPU per small produce and per small fetch.

Closed-loop clients, each on a connection of its own, send one request at a time and the next
as soon as the answer arrives:

* produce: one 100 B record per produce request (one batch of one record), acks=leader, to a
  one-partition topic;
* fetch: one batch per fetch request (the partition's ``max_bytes`` is below a batch, so the
  broker returns exactly the first whole batch), each connection reading its own stretch of
  the records the produce run wrote, so every fetch has data and none long-polls.

Each run measures a window of ``--seconds`` after a warm-up: the requests answered in it and
the broker process's CPU time in it (utime + stime of every thread, from /proc/<pid>/stat),
hence **broker CPU microseconds per request**, with 1 connection and with many. The broker is
``python -m tidelog.server`` in a subprocess, as in production, with its metrics on (an
admin port), as in production. The peer is Redis in the same run: closed-loop unpipelined
XADD of a 100 B value and XREAD COUNT 1, redis-server's CPU per command measured the same way.

``--profile DIR`` also records each tidelog window with ``py-spy record -r 200 --pid`` (raw
collapsed stacks, plus the top functions by own time printed), the profile the optimisations
in docs/BENCHMARKS.md come from. ``--broker-src DIR`` runs the broker from another source tree
(PYTHONPATH), so a before/after comparison can alternate both in one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvloop
from harness import broker_process, machine
from peers import available, redis_server, version

from tidelog.client import AdminClient
from tidelog.client.connection import Connection
from tidelog.wire import messages as m
from tidelog.wire.batch_builder import RecordBatchBuilder

TICKS: float = os.sysconf("SC_CLK_TCK")
WARMUP_S = 1.0
VALUES = 256
"""Distinct prebuilt batches cycled by the producers (distinct values, not one repeated)."""


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


@dataclass
class Window:
    requests: int
    seconds: float
    server_cpu: float
    server_sys: float
    """The part of ``server_cpu`` spent in the kernel (stime)."""
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def server_us(self) -> float:
        return self.server_cpu / max(self.requests, 1) * 1e6

    @property
    def sys_share(self) -> float:
        return self.server_sys / max(self.server_cpu, 1e-9)

    @property
    def client_us(self) -> float:
        return self.client_cpu / max(self.requests, 1) * 1e6


async def closed_loop(
    pid: int,
    workers: list[Callable[[], Awaitable[None]]],
    seconds: float,
    profile: str | None = None,
) -> Window:
    """Run each worker (one request per call) in a loop of its own; measure a window of
    ``seconds`` after :data:`WARMUP_S`."""
    done = [0]
    stop = False

    async def loop(one: Callable[[], Awaitable[None]]) -> None:
        while not stop:
            await one()
            done[0] += 1

    tasks = [asyncio.create_task(loop(w)) for w in workers]
    spy: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.sleep(WARMUP_S)  # a warm-up of fixed length, not a synchronisation
        if profile is not None:
            spy = start_profile(pid, profile, seconds)
        n0, t0, s0, c0 = done[0], time.perf_counter(), cpu_seconds(pid), time.process_time()
        await asyncio.sleep(seconds)  # the measured window
        n1, t1, s1, c1 = done[0], time.perf_counter(), cpu_seconds(pid), time.process_time()
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    if spy is not None:
        await asyncio.to_thread(spy.wait, seconds + 30)
    user, system = s1[0] - s0[0], s1[1] - s0[1]
    return Window(n1 - n0, t1 - t0, user + system, system, c1 - c0)


# --- tidelog --------------------------------------------------------------------------------


def batches(size: int) -> list[bytes]:
    out = []
    for i in range(VALUES):
        builder = RecordBatchBuilder()
        builder.append(i.to_bytes(4, "big") + os.urandom(size - 4), key=None)
        out.append(builder.build())
    return out


async def connections(address: str, n: int) -> list[Connection]:
    host, port = address.rsplit(":", 1)
    return list(await asyncio.gather(*(Connection.open(host, int(port)) for _ in range(n))))


async def tidelog_produce(
    address: str, pid: int, conns: list[Connection], topic: str, args: argparse.Namespace, tag: str
) -> Window:
    data = batches(args.size)

    def worker(conn: Connection, start: int) -> Callable[[], Awaitable[None]]:
        i = start

        async def one() -> None:
            nonlocal i
            batch = data[i % VALUES]
            i += 1
            request = m.ProduceRequest((m.ProducePartition(topic, 0, len(batch)),), m.Acks.LEADER)
            response, _ = await conn.send(request, data=(batch,))
            assert isinstance(response, m.ProduceResponse)
            if response.partitions[0].error_code:
                raise RuntimeError(f"produce failed: {response.partitions[0]}")

        return one

    workers = [worker(c, k) for k, c in enumerate(conns)]
    return await closed_loop(pid, workers, args.seconds, profile_path(args, f"{tag}-produce"))


async def tidelog_fetch(
    address: str, pid: int, conns: list[Connection], topic: str, end: int, args: argparse.Namespace,
    tag: str,
) -> Window:  # fmt: skip
    stretch = max(1, end // len(conns))

    def worker(conn: Connection, first: int) -> Callable[[], Awaitable[None]]:
        offset = first

        async def one() -> None:
            nonlocal offset
            request = m.FetchRequest(
                (m.FetchPartition(topic, 0, offset, max_bytes=1),), max_wait_ms=500, min_bytes=1
            )
            response, section = await conn.send(request)
            assert isinstance(response, m.FetchResponse)
            if response.partitions[0].error_code or not section:
                raise RuntimeError(f"fetch at {offset} failed: {response.partitions[0]}")
            offset += 1  # every batch holds one record
            if offset >= first + stretch:
                offset = first

        return one

    workers = [worker(c, k * stretch) for k, c in enumerate(conns)]
    return await closed_loop(pid, workers, args.seconds, profile_path(args, f"{tag}-fetch"))


async def run_tidelog(args: argparse.Namespace, n: int, tag: str) -> dict[str, Window]:
    env = None
    if args.broker_src:
        env = {**os.environ, "PYTHONPATH": args.broker_src}
    with broker_process("--admin-port", "-1", env=env) as broker:
        pid = broker.proc.pid
        topic = f"small-{n}"
        async with AdminClient(broker.address) as admin:
            await admin.create_topic(topic, 1)
        conns = await connections(broker.address, n)
        try:
            produce = await tidelog_produce(broker.address, pid, conns, topic, args, tag)
            end = produce.requests  # at least this many one-record batches are in the log
            fetch = await tidelog_fetch(broker.address, pid, conns, topic, end, args, tag)
        finally:
            await asyncio.gather(*(c.close() for c in conns))
    return {"produce": produce, "fetch": fetch}


# --- the Redis peer -------------------------------------------------------------------------


async def run_redis(args: argparse.Namespace, n: int) -> dict[str, Window]:
    from redis.asyncio import Redis

    with redis_server("everysec") as peer:
        pid = peer.proc.pid
        clients = [
            Redis(host=peer.host, port=peer.port, single_connection_client=True) for _ in range(n)
        ]
        values = [i.to_bytes(4, "big") + os.urandom(args.size - 4) for i in range(VALUES)]
        try:

            def adder(r: Redis, start: int) -> Callable[[], Awaitable[None]]:  # fmt: skip
                i = start

                async def one() -> None:
                    nonlocal i
                    await r.xadd("s", {b"v": values[i % VALUES]})
                    i += 1

                return one

            adders = [adder(r, k) for k, r in enumerate(clients)]
            xadd = await closed_loop(pid, adders, args.seconds)
            ids = [entry[0] for entry in await clients[0].xrange("s")]
            stretch = max(1, len(ids) // n)

            def reader(r: Redis, first: int) -> Callable[[], Awaitable[None]]:
                pos = first

                async def one() -> None:
                    nonlocal pos
                    got = await r.xread({"s": ids[pos]}, count=1)
                    if not got:
                        raise RuntimeError("XREAD returned nothing")
                    pos += 1
                    if pos >= first + stretch - 1:
                        pos = first

                return one

            xread = await closed_loop(
                pid, [reader(r, k * stretch) for k, r in enumerate(clients)], args.seconds
            )
        finally:
            await asyncio.gather(*(r.aclose() for r in clients))
    return {"produce": xadd, "fetch": xread}


# --- profiles -------------------------------------------------------------------------------


def profile_path(args: argparse.Namespace, name: str) -> str | None:
    if args.profile is None:
        return None
    os.makedirs(args.profile, exist_ok=True)
    return os.path.join(args.profile, f"{name}.txt")


def start_profile(pid: int, path: str, seconds: float) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        raise SystemExit("--profile needs py-spy (pip install -e '.[bench]')")
    argv = [spy, "record", "-r", "200", "--pid", str(pid), "-d", str(int(seconds)), "-f", "raw"]
    return subprocess.Popen(
        [*argv, "-o", path, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def top_functions(path: str, count: int = 15) -> list[tuple[str, float, float]]:
    """``(function, own %, total %)`` of a raw py-spy profile, by own time."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            k = int(n)
            samples += k
            frames = stack.split(";")
            own[frames[-1]] += k
            for frame in set(frames):
                total[frame] += k
    if not samples:
        return []
    return [(f, 100 * c / samples, 100 * total[f] / samples) for f, c in own.most_common(count)]


# --- main -----------------------------------------------------------------------------------


def row(system: str, n: int, kind: str, w: Window) -> str:
    return (
        f"| {system} | {n} | {kind} | {w.rate:,.0f} | {w.server_us:.1f} | {w.sys_share:.0%} "
        f"| {w.client_us:.1f} |"
    )


async def main(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.connections.split(",")]
    redis_note = available("redis") if not args.no_redis else "--no-redis"
    print(f"# small requests, {args.seconds:g} s windows, {args.size} B records; {machine()}")
    if redis_note is None:
        print(f"# peer: redis-server {version('redis')}")
    else:
        print(f"# peer: Redis skipped ({redis_note})")
    results: dict[tuple[str, int, str], list[Window]] = collections.defaultdict(list)
    print(
        "| system | connections | request | requests/s | server CPU us/req | of it in kernel "
        "| client CPU us/req |"
    )
    print("|---|---|---|---|---|---|---|")
    for run in range(args.runs):
        for n in counts:
            tag = f"run{run}-c{n}"
            for kind, w in (await run_tidelog(args, n, tag)).items():
                results["tidelog", n, kind].append(w)
                print(row("tidelog", n, kind, w), flush=True)
            if redis_note is None:
                for kind, w in (await run_redis(args, n)).items():
                    name = {"produce": "XADD", "fetch": "XREAD COUNT 1"}[kind]
                    results["redis", n, name].append(w)
                    print(row("redis", n, name, w), flush=True)
    if args.runs > 1:
        print(f"\nmedians of {args.runs} runs (min-max):")
        for (system, n, kind), ws in results.items():
            us = [w.server_us for w in ws]
            rates = [w.rate for w in ws]
            print(
                f"  {system:8} {n:4} conns {kind:14} {statistics.median(rates):>9,.0f} req/s"
                f"  server {statistics.median(us):6.1f} us/req ({min(us):.1f}-{max(us):.1f})"
            )
    if args.profile is not None:
        print_profiles(args.profile)


def print_profiles(directory: str) -> None:
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(".txt") and os.path.getsize(path):
            print(f"\n{name}: top functions by own time (own %, total %)")
            for func, self_pct, total_pct in top_functions(path):
                print(f"  {self_pct:5.1f} {total_pct:5.1f}  {func}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--connections", default="1,64", help="comma-separated client counts")
    parser.add_argument("--size", type=int, default=100, help="record value bytes")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis peer")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each tidelog window into DIR")
    parser.add_argument("--broker-src", metavar="DIR", help="PYTHONPATH for the broker process")
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
