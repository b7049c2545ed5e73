"""tidelog side by side with Redis Streams and NATS JetStream, plus the machine's own limits.

    python bench/sidebyside.py --plan quick|full|tiny [--write docs/BENCHMARKS.md]
                               [--charts docs] [--no-peers]

One run starts a fresh tidelog broker process (temporary data dir, 127.0.0.1, ephemeral port),
and each peer that is installed (``redis-server`` twice: ``appendfsync everysec`` and
``always``; ``nats-server -js``), each on a loopback port of its own with its data under a
temporary dir, stopped by PID at the end. One Python client process (this one) drives every
system. Every figure is the median of ``runs`` runs with the min-max range. The scenario matrix
is in ``scenarios.py``; the table, the Markdown section and the charts in ``report.py`` and
``charts.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import drive_tidelog as T
import limits
import peers
import uvloop
from harness import BrokerProc, broker_process, process_usage
from report import Result, judge, render_markdown, render_table, write_section
from rich.console import Console
from scenarios import DURABILITY, PLANS, Plan

import tidelog

console = Console(width=160)


class Bench:
    def __init__(self, plan: Plan, use_peers: bool) -> None:
        self.plan = plan
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.versions = {"tidelog": tidelog.__version__}
        self.skip: dict[str, str] = {}
        for peer in plan.peers:
            reason = peers.available(peer) if use_peers else "--no-peers given"
            if reason is None:
                self.versions[peer] = peers.version(peer)
            else:
                self.skip[peer] = reason
                self.notes.append(f"{peer} skipped: {reason}")

    def add(self, result: Result) -> None:
        self.results.append(result)
        console.log(result.line())

    async def repeat(self, fn: Callable[..., Awaitable[float]], *args: Any) -> list[float]:
        return [await fn(*args) for _ in range(self.plan.runs)]

    async def repeat_latency(
        self, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> list[dict[str, float]]:
        return [(await fn(*args)).summary() for _ in range(self.plan.runs)]

    # -- the machine -------------------------------------------------------------------------

    def machine_limits(self) -> None:
        mib = self.plan.limits_mib
        runs = range(self.plan.runs)
        self.add(
            Result("limits", "machine", "loopback TCP, two processes, 1 MiB sends", "",
                   "MB/s", [limits.loopback_mb_s(mib) for _ in runs])
        )  # fmt: skip
        self.add(
            Result("limits", "machine", f"sequential write {mib} MiB + fsync, 1 MiB writes",
                   "", "MB/s", [limits.disk_write_mb_s(mib) for _ in runs])
        )  # fmt: skip
        fs = [limits.fsync_latency_ms(max(20, mib // 2)) for _ in runs]
        self.add(Result("limits", "machine", "fsync of a 4 KiB append", "", "ms", [], fs))

    # -- tidelog -----------------------------------------------------------------------------

    async def tidelog(self, broker: BrokerProc) -> None:
        p, a = self.plan, broker.address
        for size in p.sizes:
            for acks in p.tidelog_acks:
                self.add(
                    Result("produce", "tidelog", f"{size} B, acks={acks}, 1 partition",
                           DURABILITY.get(acks, {}).get("tidelog", "no acknowledgement"),
                           "records/s",
                           await self.repeat(T.produce, a, p.records, size, acks),
                           key=f"produce-{acks}-{size}", size=size)
                )  # fmt: skip
            for codec in p.codecs:
                if codec is None:
                    continue
                self.add(
                    Result("produce", "tidelog", f"{size} B, acks=leader, {codec}",
                           DURABILITY["leader"]["tidelog"], "records/s",
                           await self.repeat(T.produce, a, p.records, size, "leader", codec))
                )  # fmt: skip
        for parts in p.partitions:
            if parts == 1:
                continue
            self.add(
                Result("produce", "tidelog", f"100 B, acks=leader, {parts} partitions",
                       DURABILITY["leader"]["tidelog"], "records/s",
                       await self.repeat(T.produce, a, p.records, 100, "leader", None, parts))
            )  # fmt: skip
        for size in p.sizes:
            self.add(
                Result("consume", "tidelog", f"{size} B, 1 partition, from the beginning", "",
                       "records/s", await self.repeat(T.consume, a, p.records, size),
                       key=f"consume-{size}", size=size)
            )  # fmt: skip
        if p.group_members:
            m = p.group_members
            self.add(
                Result("consume", "tidelog", f"100 B, group of {m}, {m} partitions (incl. join)",
                       "", "records/s",
                       await self.repeat(T.consume_group, a, p.records, 100, m))
            )  # fmt: skip
        for rate in p.latency_rates:
            self.add(
                Result("latency", "tidelog", f"{rate:,} records/s of 100 B, acks=leader, "
                       "linger 0", DURABILITY["leader"]["tidelog"], "ms", [],
                       await self.repeat_latency(T.latency, a, rate, p.latency_seconds),
                       key=f"latency-{rate}")
            )  # fmt: skip
        if p.many_clients:
            c, r = p.many_clients, p.many_clients_rate
            self.add(
                Result("clients", "tidelog", f"{c} producers + {c} consumers, {r} records/s "
                       f"each ({c * r:,}/s), 100 B", DURABILITY["leader"]["tidelog"], "ms", [],
                       await self.repeat_latency(T.many_clients, a, c, r, p.many_clients_seconds))
            )  # fmt: skip
        if p.soak_seconds:
            await self.soak(broker)

    async def soak(self, broker: BrokerProc) -> None:
        p = self.plan
        rss0, fds0 = process_usage(broker.proc.pid)
        rec = await T.latency(broker.address, p.soak_rate, p.soak_seconds)
        rss1, fds1 = process_usage(broker.proc.pid)
        self.add(
            Result("soak", "tidelog", f"{p.soak_seconds:,.0f} s produce + consume at "
                   f"{p.soak_rate:,} records/s", "", "ms", [], [rec.summary()],
                   note=f"broker RSS {rss0:.0f} -> {rss1:.0f} MiB, "
                   f"open fds {fds0} -> {fds1}, {rec.count:,} records")
        )  # fmt: skip

    # -- peers -------------------------------------------------------------------------------

    async def redis(self) -> None:
        if "redis" not in self.plan.peers or "redis" in self.skip:
            return
        import drive_redis as R

        p = self.plan
        for level, fsync in (("leader", "everysec"), ("all", "always")):
            with peers.redis_server(fsync) as srv:
                sizes = p.sizes if level == "leader" else [100]
                for size in sizes:
                    self.add(
                        Result("produce", "redis", f"{size} B, appendfsync {fsync}, "
                               f"pipelines of {R.PIPELINE}", DURABILITY[level]["redis"],
                               "records/s",
                               await self.repeat(R.produce, srv.port, p.records, size),
                               key=f"produce-{level}-{size}", size=size)
                    )  # fmt: skip
                if level != "leader":
                    continue
                for size in p.sizes:
                    self.add(
                        Result("consume", "redis", f"{size} B, XREADGROUP COUNT "
                               f"{R.READ_COUNT} + XACK", "", "records/s",
                               await self.repeat(R.consume, srv.port, p.records, size),
                               key=f"consume-{size}", size=size)
                    )  # fmt: skip
                for rate in p.latency_rates:
                    self.add(
                        Result("latency", "redis", f"{rate:,} records/s of 100 B, everysec",
                               DURABILITY["leader"]["redis"], "ms", [],
                               await self.repeat_latency(
                                   R.latency, srv.port, rate, p.latency_seconds),
                               key=f"latency-{rate}")
                    )  # fmt: skip

    async def nats(self) -> None:
        if "nats" not in self.plan.peers or "nats" in self.skip:
            return
        import drive_nats as N

        p = self.plan
        with peers.nats_server() as srv:
            for size in p.sizes:
                runs = await self.repeat(N.produce, srv.port, p.records, size)
                self.add(
                    Result("produce", "nats", f"{size} B, publish_async, "
                           f"{N.MAX_PENDING} in flight", DURABILITY["leader"]["nats"],
                           "records/s", runs, key=f"produce-leader-{size}", size=size)
                )  # fmt: skip
                if size == 100 and peers.nats_syncs_always():
                    with peers.nats_server(sync_always=True) as synced:
                        synced_runs = await self.repeat(N.produce, synced.port, p.records, size)
                    self.add(
                        Result("produce", "nats", f"100 B, publish_async, {N.MAX_PENDING} in "
                               "flight, sync_interval always", DURABILITY["all"]["nats"],
                               "records/s", synced_runs, key="produce-all-100", size=size)
                    )  # fmt: skip
            for size in p.sizes:
                self.add(
                    Result("consume", "nats", f"{size} B, pull fetch({N.FETCH}), AckAll", "",
                           "records/s",
                           await self.repeat(N.consume, srv.port, p.records, size),
                           key=f"consume-{size}", size=size)
                )  # fmt: skip
            for rate in p.latency_rates:
                self.add(
                    Result("latency", "nats", f"{rate:,} records/s of 100 B, fetch batch "
                           f"{max(1, rate // N.LATENCY_FETCH_DIVISOR)}",
                           DURABILITY["leader"]["nats"], "ms", [],
                           await self.repeat_latency(N.latency, srv.port, rate, p.latency_seconds),
                           key=f"latency-{rate}")
                )  # fmt: skip


async def run(plan: Plan, use_peers: bool) -> Bench:
    bench = Bench(plan, use_peers)
    bench.machine_limits()
    with broker_process() as broker:
        await bench.tidelog(broker)
    await bench.redis()
    await bench.nats()
    if not plan.group_members:
        bench.notes.append("not run in this plan: consumer group of 4 (make bench-full)")
    if not plan.many_clients:
        bench.notes.append("not run in this plan: 100 producers + 100 consumers")
    if not plan.soak_seconds:
        bench.notes.append("not run in this plan: 10-minute soak")
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=sorted(PLANS), default="quick")
    parser.add_argument("--runs", type=int, help="override the plan's runs per figure")
    parser.add_argument("--write", metavar="MARKDOWN", help="replace the section in this file")
    parser.add_argument("--charts", metavar="DIR", help="write the PNG charts into DIR")
    parser.add_argument("--command", default="", help="the command line to print in the doc")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    plan = PLANS[args.plan]
    if args.runs:
        plan.runs = args.runs
    bench = uvloop.run(run(plan, not args.no_peers))
    verdicts = judge(bench.results)
    console.print(render_table(bench, verdicts))
    for v in verdicts:
        console.print(v)
    for n in bench.notes:
        console.print(f"note: {n}")
    charts: list[str] = []
    if args.charts:
        try:
            import charts as charts_module
        except ImportError as exc:  # matplotlib is in the bench extra only
            bench.notes.append(f"charts skipped: {exc}")
        else:
            charts = charts_module.write(bench.results, args.charts)
    if args.write:
        command = args.command or " ".join(["python", *sys.argv])
        write_section(args.write, render_markdown(bench, verdicts, command, charts))
        console.print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
