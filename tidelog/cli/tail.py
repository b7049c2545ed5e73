"""``tidelog tail``: a live view of every partition of a topic."""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Final

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.rule import Rule
from rich.text import Text

from tidelog.client import AdminClient, Consumer

from . import context
from .consume import StartAt, position, select_partitions
from .errors import CliUsageError, command
from .render import Record, format_timestamp, preview, print_json, record_json
from .stopping import Stopped

RATE_WINDOW_S: Final = 5.0
"""records/s is measured over this many seconds."""
POLL_WAIT_S: Final = 0.25
"""How long one poll waits for records: the view refreshes at least this often."""
MIN_REFRESH_S: Final = 0.1
KEPT_LINES: Final = 500


@dataclass(slots=True)
class RateMeter:
    """Records per second per partition over the last ``RATE_WINDOW_S`` seconds."""

    partitions: Sequence[int]
    counts: dict[int, int] = field(default_factory=dict)
    history: deque[tuple[float, dict[int, int]]] = field(default_factory=deque)

    def add(self, partition: int, n: int) -> None:
        self.counts[partition] = self.counts.get(partition, 0) + n

    def rates(self, now: float) -> dict[int, float]:
        history = self.history
        history.append((now, dict(self.counts)))
        while len(history) > 2 and now - history[1][0] >= RATE_WINDOW_S:
            history.popleft()
        then, old = history[0]
        span = now - then
        if span <= 0:
            return dict.fromkeys(self.partitions, 0.0)
        return {p: (self.counts.get(p, 0) - old.get(p, 0)) / span for p in self.partitions}


def record_line(record: Record) -> Text:
    """One record on one line: time, partition, offset, key, value."""
    when = format_timestamp(record.timestamp)[11:]  # the time of day
    line = Text.assemble(
        (when, "dim"),
        " ",
        (f"p{record.partition}", "cyan"),
        " ",
        (f"#{record.offset}", "magenta"),
        " ",
    )
    if record.key is not None:
        line.append(preview(record.key, 40), "bold yellow")
        line.append(" ")
    line.append(preview(record.value, 2000).replace("\n", " "))
    line.no_wrap = True
    line.overflow = "ellipsis"
    return line


@dataclass(slots=True)
class Filter:
    key: bytes | None = None
    pattern: re.Pattern[str] | None = None

    def __call__(self, records: Iterable[Record]) -> list[Record]:
        out = []
        for r in records:
            if self.key is not None and r.key != self.key:
                continue
            if self.pattern is not None and not self.pattern.search(preview(r.value)):
                continue
            out.append(r)
        return out


@dataclass(slots=True)
class TailView:
    """What the live view shows: the latest records, then a status line."""

    topic: str
    partitions: Sequence[int]
    meter: RateMeter
    lines: deque[Text] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    shown: int = 0
    skipped: int = 0
    status: Text = field(default_factory=Text)

    def add(self, records: list[Record], skipped: int) -> None:
        self.lines.extend(record_line(r) for r in records)
        self.shown += len(records)
        self.skipped += skipped

    def update_status(self, now: float) -> None:
        rates = self.meter.rates(now)
        status = Text.assemble(("● ", "bold green"), "following ", (self.topic, "bold"), " · ")
        for i, p in enumerate(self.partitions):
            if i:
                status.append("  ")
            status.append(f"p{p} ", "cyan")
            status.append(f"{rates[p]:.1f}/s")
        status.append(f" · {self.shown:,} records")
        if self.skipped:
            status.append(f" ({self.skipped:,} filtered out)", "dim")
        status.append(" · Ctrl-C to stop", "dim")
        status.no_wrap = True
        status.overflow = "ellipsis"
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        room = max(console.size.height - 2, 1)
        if not self.lines:
            yield Text("waiting for records…", style="dim")
        else:
            yield from list(self.lines)[-room:]
        yield Rule(style="dim")
        yield self.status


async def _tail(
    settings: context.Settings,
    topic: str,
    partitions: Sequence[int] | None,
    last: int,
    keep: Filter,
    count: int | None,
    view_holder: list[TailView],
) -> None:
    options = settings.client_options()
    live_view = context.stdout.is_terminal and not settings.json
    async with (
        AdminClient(settings.broker, client_id="tidelog-cli", **options) as admin,
        Consumer(
            settings.broker,
            client_id="tidelog-cli",
            auto_offset_reset="latest",
            fetch_max_wait=POLL_WAIT_S,
            **options,
        ) as consumer,
    ):
        tps = await select_partitions(consumer, topic, partitions)
        consumer.assign(tps)
        await position(consumer, admin, tps, StartAt(offset=-last) if last else StartAt())
        ids = [tp.partition for tp in tps]
        view = TailView(topic, ids, RateMeter(ids))
        view_holder.append(view)
        view.update_status(time.monotonic())
        if live_view:
            with Live(view, console=context.stdout, auto_refresh=False) as live:
                live.refresh()
                await _follow(consumer, keep, count, view, live)
        else:
            context.stderr.print(
                f"following {topic} ({len(tps)} partitions) — Ctrl-C to stop", soft_wrap=True
            )
            await _follow(consumer, keep, count, view, None, settings.json)


async def _follow(
    consumer: Consumer,
    keep: Filter,
    count: int | None,
    view: TailView,
    live: Live | None,
    as_json: bool = False,
) -> None:
    refreshed = 0.0
    while count is None or view.shown < count:
        batch = await consumer.getmany(timeout=POLL_WAIT_S)
        for tp, records in batch.items():
            view.meter.add(tp.partition, len(records))
            kept = keep(records)
            if count is not None:
                kept = kept[: count - view.shown]
            view.add(kept, len(records) - len(kept))
            if live is None:
                for r in kept:
                    if as_json:
                        print_json(record_json(r))
                    else:
                        context.stdout.print(record_line(r), soft_wrap=True)
        now = time.monotonic()
        if live is not None and (now - refreshed >= MIN_REFRESH_S or not batch):
            view.update_status(now)
            live.refresh()
            refreshed = now
    if live is not None:
        view.update_status(time.monotonic())
        live.refresh()


@command
def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to follow. Example: events")],
    last: Annotated[
        int,
        typer.Option(
            "--last",
            "-l",
            min=0,
            help="Start with the last N records of each partition. Example: --last 10",
        ),
    ] = 0,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            "-k",
            help="Show only records with this key. Example: --key user-42",
            show_default=False,
        ),
    ] = None,
    grep: Annotated[
        str | None,
        typer.Option(
            "--grep",
            "-e",
            help="Show only records whose value matches this regular expression. "
            "Example: --grep 'error|timeout'",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        list[int] | None,
        typer.Option(
            "--partition",
            "-p",
            help="Follow only this partition; repeat for more (default: all). "
            "Example: --partition 0",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "-n",
            min=1,
            help="Exit after showing this many records (for scripts). Example: --count 100",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Follow a topic live: new records of every partition, and records/s per partition.

    The view shows records as they arrive and a status line with the rate of each partition.
    It starts at the end (or --last N records back); Ctrl-C or SIGTERM exits (status 0).

    When standard output is not a terminal it prints one line per record instead (one JSON
    object per line with --json).

    Examples:

    * `tidelog tail events`
    * `tidelog tail events --last 10 --grep error`
    * `tidelog tail events --key user-42`
    """
    settings = context.settings(ctx)
    try:
        pattern = re.compile(grep) if grep is not None else None
    except re.error as exc:
        raise CliUsageError(f"--grep {grep!r} is not a regular expression: {exc}") from None
    keep = Filter(None if key is None else key.encode(), pattern)
    holder: list[TailView] = []
    with contextlib.suppress(Stopped, KeyboardInterrupt):  # how tail ends: exit 0
        context.run(_tail(settings, topic, partition, last, keep, count, holder))
    if holder and not settings.json:
        view = holder[0]
        context.stderr.print(
            f"tail stopped after {view.shown:,} record{'s' if view.shown != 1 else ''}",
            style="dim",
            soft_wrap=True,
        )
