"""``tidelog top``: a live view of one broker or several (``--admin a,b,c``), read from their
``/metrics`` every second; a broker that stops answering shows as such while the others go on.

Rates are the change of the counters between two scrapes; latencies the mean and the p99 of the
requests of the last interval (from the histogram buckets). Keys: ``q`` quits, ``s`` cycles the
topics' sort order, ``/`` starts a filter on topic and group names (Enter ends it, Esc clears
it). It draws on the terminal's alternate screen, which it leaves (with the terminal's modes
restored) on ``q``, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Final

import httpx
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import context, render, scrape
from .errors import CliError, command
from .stopping import Stopped

SORTS: Final = ("name", "in", "out")
ESC: Final = "\x1b"


@dataclass(slots=True)
class Keys:
    """What the keys asked for so far."""

    sort: int = 0
    filter: str = ""
    typing: bool = False
    quit: bool = False

    def press(self, key: str) -> None:
        if self.typing:
            if key in ("\r", "\n"):
                self.typing = False
            elif key == ESC:
                self.typing, self.filter = False, ""
            elif key in ("\x7f", "\b"):
                self.filter = self.filter[:-1]
            elif key.isprintable():
                self.filter += key
            return
        match key:
            case "q" | "Q":
                self.quit = True
            case "s":
                self.sort = (self.sort + 1) % len(SORTS)
            case "/":
                self.typing, self.filter = True, ""
            case "\x1b":
                self.filter = ""


def _rate(now: float, before: float | None, dt: float) -> float:
    return 0.0 if before is None or dt <= 0 else max(now - before, 0.0) / dt


@dataclass(slots=True)
class BrokerScrapes:
    """One broker's last two scrapes (``None``: it did not answer)."""

    admin: str
    now: scrape.Scrape | None
    before: scrape.Scrape | None = None


@dataclass(slots=True)
class Frame:
    """Two scrapes of every broker and the seconds between them: what one screen shows. The
    tables below the brokers' read the brokers' scrapes added up (:func:`scrape.merge`)."""

    brokers: list[BrokerScrapes]
    dt: float
    keys: Keys = field(default_factory=Keys)
    now: scrape.Scrape = field(init=False)
    before: scrape.Scrape | None = field(init=False)
    _rate_now: scrape.Scrape = field(init=False)

    def __post_init__(self) -> None:
        # Rates compare like with like: only brokers that answered both times (a broker that
        # comes back would add its lifetime counters as one interval's worth; one that stops
        # answering would hide the others' increases).
        both = [b for b in self.brokers if b.now is not None and b.before is not None]
        answered = [b.now for b in self.brokers if b.now is not None]
        self.now = scrape.merge(answered)
        self._rate_now = scrape.merge([b.now for b in both if b.now is not None])
        befores = [b.before for b in both if b.before is not None]
        self.before = scrape.merge(befores) if befores else None

    def _rates(
        self,
        name: str,
        *keys: str,
        now: scrape.Scrape | None = None,
        before: scrape.Scrape | None = None,
    ) -> dict[tuple[str, ...], float]:
        if now is None:
            now, before = self._rate_now, self.before
        cur = now.by(name, *keys)
        old = before.by(name, *keys) if before is not None else {}
        return {k: _rate(v, old.get(k) if before else None, self.dt) for k, v in cur.items()}

    def _shown(self, name: str) -> bool:
        return self.keys.filter.lower() in name.lower()

    def broker(self) -> Table:
        m = self.now
        # Each broker counts the brokers it sees: the largest count, not their sum.
        alive = max((b.now.value("brokers_alive") for b in self.brokers if b.now), default=0)
        leaderless = m.value("partitions_leaderless")
        title = f"brokers ({alive:.0f} alive, {leaderless:.0f} leaderless partitions)"
        table = Table(title=title, title_justify="left", expand=True)
        columns = ("admin", "id", "version", "uptime", "connections", "in flight",
                   "requests/s", "leads", "under-replicated")  # fmt: skip
        for col in columns:
            table.add_column(col, justify="left" if col in ("admin", "version") else "right")
        for b in self.brokers:
            if b.now is None:
                table.add_row(b.admin, "", Text("no answer", "bold red"))
                continue
            one = b.now
            info = next((labels for labels, _ in one.series("build_info")), {})
            started = one.value("start_time_seconds")
            requests = sum(self._rates("requests", now=one, before=b.before).values())
            controller = "*" if one.value("controller_active") else ""
            table.add_row(
                b.admin,
                info.get("broker_id", "?") + controller,
                info.get("version", "?"),
                f"{max(time.time() - started, 0):.0f}s" if started else "?",
                f"{one.value('connections'):.0f}",
                f"{one.value('inflight_requests'):.0f}",
                f"{requests:.1f}",
                f"{one.value('partitions_led'):.0f}",
                f"{one.value('partitions_under_replicated'):.0f}",
            )
        return table

    def topics(self) -> Table:
        rin, bin_ = self._rates("records_in_total", "topic"), self._rates("bytes_in_total", "topic")
        rout = self._rates("records_out_total", "topic")
        bout = self._rates("bytes_out_total", "topic")
        size = self.now.by("log_size_bytes", "topic")
        partitions = {(lb["topic"], lb["partition"]) for lb, _ in self.now.series("log_end_offset")}
        counts: dict[tuple[str, ...], int] = {}
        for topic, _ in partitions:  # one per partition, however many replicas
            counts[(topic,)] = counts.get((topic,), 0) + 1
        names = sorted({k for k in (*rin, *rout, *size)}, key=lambda k: k[0])
        sort = SORTS[self.keys.sort]
        if sort == "in":
            names.sort(key=lambda k: -rin.get(k, 0.0))
        elif sort == "out":
            names.sort(key=lambda k: -rout.get(k, 0.0))
        table = Table(title=f"topics (sorted by {sort})", title_justify="left", expand=True)
        for col in (
            "topic",
            "partitions",
            "records/s in",
            "bytes/s in",
            "records/s out",
            "bytes/s out",
            "size",
        ):
            table.add_column(col, justify="left" if col == "topic" else "right")
        for k in names:
            if not self._shown(k[0]):
                continue
            table.add_row(
                k[0],
                str(counts.get(k, 0)),
                f"{rin.get(k, 0.0):.1f}",
                render.human_bytes(int(bin_.get(k, 0.0))),
                f"{rout.get(k, 0.0):.1f}",
                render.human_bytes(int(bout.get(k, 0.0))),
                render.human_bytes(int(size.get(k, 0.0))),
            )
        return table

    def groups(self) -> Table:
        lag = self.now.by("consumer_group_lag", "group")
        members = self.now.by("consumer_group_members", "group")
        states = {
            labels["group"]: labels["state"]
            for labels, v in self.now.series("consumer_group_state")
            if v == 1
        }
        table = Table(title="groups", title_justify="left", expand=True)
        for col in ("group", "state", "members", "lag"):
            table.add_column(col, justify="left" if col in ("group", "state") else "right")
        for (group,), count in sorted(members.items()):
            if self._shown(group):
                table.add_row(
                    group, states.get(group, "?"), f"{count:.0f}", f"{lag.get((group,), 0):.0f}"
                )
        return table

    def queues(self) -> Table:
        """Share groups: depth (records available now), in flight, lag, dead letters."""
        members = self.now.by("share_group_members", "group")
        depth = self.now.by("share_group_available", "group")
        inflight = self.now.by("share_group_inflight", "group")
        lag = self.now.by("share_group_lag", "group")
        dead = self.now.by("share_group_dead_lettered_total", "group")
        dead_rate = self._rates("share_group_dead_lettered_total", "group")
        table = Table(title="queues", title_justify="left", expand=True)
        for col in ("queue", "members", "depth", "in flight", "lag", "dead letters", "dead/s"):
            table.add_column(col, justify="left" if col == "queue" else "right")
        for (group,), count in sorted(members.items()):
            if self._shown(group):
                k = (group,)
                table.add_row(
                    group,
                    f"{count:.0f}",
                    f"{depth.get(k, 0):.0f}",
                    f"{inflight.get(k, 0):.0f}",
                    f"{lag.get(k, 0):.0f}",
                    f"{dead.get(k, 0):.0f}",
                    f"{dead_rate.get(k, 0.0):.1f}",
                )
        return table

    def latencies(self) -> Table:
        table = Table(title="request latency (last interval)", title_justify="left", expand=True)
        for col in ("api", "requests/s", "mean ms", "p99 ms", "errors/s"):
            table.add_column(col, justify="left" if col == "api" else "right")
        counts = self._rates("request_duration_seconds_count", "api")
        sums = self._rates("request_duration_seconds_sum", "api")
        errors = {
            k: v for k, v in self._rates("requests_total", "api", "error").items() if k[1] != "none"
        }
        for (api,), rate in sorted(counts.items(), key=lambda kv: -kv[1]):
            buckets = self._bucket_deltas(api)
            p99 = scrape.histogram_quantile(buckets, 0.99)
            mean = sums.get((api,), 0.0) / rate if rate else None
            failed = sum(v for (a, _), v in errors.items() if a == api)
            table.add_row(
                api,
                f"{rate:.1f}",
                "-" if mean is None else f"{mean * 1000:.2f}",
                "-" if p99 is None else f"{p99 * 1000:.2f}",
                f"{failed:.1f}",
            )
        return table

    def _bucket_deltas(self, api: str) -> dict[str, float]:
        def buckets(s: scrape.Scrape | None) -> dict[str, float]:
            if s is None:
                return {}
            return {
                labels["le"]: v
                for labels, v in s.series("request_duration_seconds_bucket")
                if labels.get("api") == api
            }

        now, old = buckets(self._rate_now), buckets(self.before)
        return {le: v - old.get(le, 0.0) for le, v in now.items()}

    def render(self) -> RenderableType:
        keys = self.keys
        hint = (
            f"filter: {keys.filter}{'_' if keys.typing else ''}"
            if keys.typing or keys.filter
            else ""
        )
        footer = Text(f"q quit · s sort · / filter · Esc clear   {hint}", style="dim")
        return Group(
            self.broker(), self.topics(), self.groups(), self.queues(), self.latencies(), footer
        )


@contextlib.contextmanager
def _cbreak(keys: Keys, wake: asyncio.Event, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Keys as they are typed (no echo, no Enter needed) when stdin is a terminal; the
    terminal's modes are restored on the way out, however it is left."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> None:
        data = os.read(fd, 64).decode(errors="replace")
        for ch in data:
            keys.press(ch)
        wake.set()  # redraw now

    loop.add_reader(fd, read)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _scrape_all(
    http: httpx.AsyncClient, admins: list[str], previous: list[BrokerScrapes] | None
) -> list[BrokerScrapes]:
    """Every broker's scrape now. The first round fails (:class:`CliError`) if a broker does
    not answer; later a broker that stops answering shows as such and the others go on."""
    results = await asyncio.gather(
        *(scrape.fetch(http, a) for a in admins), return_exceptions=previous is not None
    )
    out = []
    for i, (admin, result) in enumerate(zip(admins, results, strict=True)):
        now = None if isinstance(result, BaseException) else result
        if isinstance(result, BaseException) and not isinstance(result, CliError):
            raise result
        out.append(BrokerScrapes(admin, now, None if previous is None else previous[i].now))
    return out


async def run_top(
    admins: list[str],
    interval: float,
    http_timeout: float,
    stop: asyncio.Event,
    wake: asyncio.Event,
) -> None:
    """Redraw every ``interval`` seconds and at each key, until ``q`` or ``stop`` (whoever
    sets ``stop`` sets ``wake`` too)."""
    loop = asyncio.get_running_loop()
    keys = Keys()
    then = time.monotonic()
    async with httpx.AsyncClient(timeout=http_timeout) as http:
        current = await _scrape_all(http, admins, None)  # fails before the screen is switched
        with (
            _cbreak(keys, wake, loop),
            Live(console=context.stdout, screen=True, auto_refresh=False) as live,
        ):
            dt = 0.0
            while not keys.quit and not stop.is_set():
                now = time.monotonic()
                live.update(Frame(current, dt, keys).render(), refresh=True)
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await wake.wait()
                if keys.quit or stop.is_set():
                    break
                if time.monotonic() - now >= interval:
                    dt, then = time.monotonic() - then, time.monotonic()
                    current = await _scrape_all(http, admins, current)


@command
def top(
    ctx: typer.Context,
    admin: scrape.AdminOption = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.1, help="Seconds between refreshes. Example: --interval 2"
        ),
    ] = 1.0,
) -> None:
    """A live view of the brokers: each broker's requests, leaderships and under-replicated
    partitions; topics' records/s and bytes/s in and out; groups with their lag; queues with
    their depth and dead letters; request latencies. Keys: q quit, s sort, / filter, Esc
    clear the filter.

    Example: `tidelog top` (`--admin h1:9644,h2:9644,h3:9644` for the brokers of a cluster)
    """
    settings = context.settings(ctx)
    stop, wake = asyncio.Event(), asyncio.Event()

    def on_stop() -> None:
        stop.set()
        wake.set()

    admins = [a.strip() for a in admin.split(",") if a.strip()] if admin else []
    addresses = admins or [scrape.admin_address(None, settings.broker)]
    with contextlib.suppress(Stopped):  # Ctrl-C is one way top ends, like tail: exit 0
        context.run(run_top(addresses, interval, settings.timeout, stop, wake), on_stop=on_stop)
